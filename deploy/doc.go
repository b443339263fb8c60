// Package deploy holds the operations kit: systemd units and their
// environment file, a Grafana dashboard, and Prometheus alerting rules with
// their unit tests. It has no code; its test checks the kit against the
// binaries it deploys: that every metric the dashboard and the rules name
// is one the binaries export, with the label values they select, that the
// rules pass promtool, and that the units pass systemd-analyze and give
// each binary its shutdown budget.
package deploy

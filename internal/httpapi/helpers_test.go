package httpapi_test

import (
	"testing"
	"time"

	"github.com/presence/presence/internal/httpapi"
)

func httpapiConfig(pingInterval, pingTimeout time.Duration) httpapi.Config {
	return httpapi.Config{PingInterval: pingInterval, PingTimeout: pingTimeout}
}

// metricValue reads the value of a registered counter or gauge without
// labels.
func metricValue(t *testing.T, a *app, name string) float64 {
	t.Helper()
	return labeledValue(t, a, name, "", "")
}

// labeledValue reads the value of a counter or gauge whose label has the
// given value; an empty label takes the metric's only series.
func labeledValue(t *testing.T, a *app, name, label, value string) float64 {
	t.Helper()
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			match := label == "" && len(mf.Metric) == 1
			for _, l := range m.Label {
				match = match || l.GetName() == label && l.GetValue() == value
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s{%s=%q} not registered", name, label, value)
	return 0
}

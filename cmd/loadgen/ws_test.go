package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/presence/presence/internal/appserver"
	"github.com/presence/presence/internal/apptest"
	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/redistest"
)

// startServer runs an app server on srv's Redis and returns its address.
func startServer(t *testing.T, srv *redistest.Server, prefix string) string {
	t.Helper()
	_, url := apptest.Serve(t, appserver.Options{
		Config: config.Config{RedisURL: srv.URL(), KeyPrefix: prefix, Coalesce: 50 * time.Millisecond},
	})
	return strings.TrimPrefix(url, "http://")
}

// TestWSRunAcrossServers runs the WebSocket mode with every phase against
// two app servers on one Redis: all clients connect, the churn's closes
// and the probe's join reach every watcher and viewer, and every count is
// right at the end.
func TestWSRunAcrossServers(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix()
	a, b := startServer(t, srv, prefix), startServer(t, srv, prefix)
	o, err := parse([]string{"-server", a + "," + b, "-conns", "60", "-posts", "4", "-ramp", "500",
		"-hold", "200ms", "-churn", "20", "-churn-for", "1s", "-probe", "-redis", srv.Addr, "-timeout", "60s"})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := runWS(t.Context(), o, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.connected != 60 || len(res.errs) > 0 {
		t.Errorf("connected %d of 60, errors %v", res.connected, res.errs)
	}
	if res.churnClosed != 20 || res.churnMissed != 0 {
		t.Errorf("churn closed %d of 20, %d drops not seen", res.churnClosed, res.churnMissed)
	}
	if res.probeMissed != 0 {
		t.Errorf("%d viewers never got the probe's count", res.probeMissed)
	}
	if len(res.wrong) > 0 {
		t.Errorf("counts wrong at the end: %v", res.wrong)
	}
	for _, want := range []string{"phase ramp", "servers' cpu per join", "phase churn", "phase probe", "redis " + srv.Addr + ": cpu", "counts: all 24 posts right"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output has no %q", want)
		}
	}
}

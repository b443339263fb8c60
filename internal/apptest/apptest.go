// Package apptest runs an assembled app server inside a test, behind the
// http.Server that cmd/presence runs, and stops it when the test ends: the
// HTTP API's tests, the load generator's and the real-WordPress test share
// it.
package apptest

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/appserver"
)

// Serve assembles an app server from opts, serves it on a loopback port
// with the timeouts of cmd/presence's listener, and runs it. The test's
// cleanup shuts it down in cmd/presence's order: sessions, then sockets,
// then the listener and the store. A nil Registry or Log gets a fresh
// registry and the test's logger. It returns the app and its base URL.
func Serve(tb testing.TB, opts appserver.Options) (*appserver.App, string) {
	tb.Helper()
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(tb)
	}
	as, err := appserver.New(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(as.API)
	srv.Config = as.API.HTTPServer()
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = as.Run(ctx) }()
	tb.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = as.Hub.Shutdown(sctx)
		_ = as.API.Shutdown(sctx)
		srv.Close()
		cancel()
		<-done
		as.Close()
	})
	return as, srv.URL
}

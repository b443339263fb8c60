// Package health serves /healthz, /readyz and /metrics for both binaries,
// and Go's profiles under /debug/pprof/ on their internal listeners.
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether one dependency can serve; nil means ready.
type Check func(ctx context.Context) error

// Handler serves the health and metrics endpoints.
type Handler struct {
	checks  map[string]Check
	metrics http.Handler
}

// New returns a Handler whose /readyz runs checks and whose /metrics serves
// gatherer.
func New(checks map[string]Check, gatherer prometheus.Gatherer) *Handler {
	return &Handler{
		checks:  checks,
		metrics: promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}),
	}
}

// Healthz answers 200 while the process runs: liveness, not readiness, so an
// orchestrator does not restart a server only because Redis is away.
func (h *Handler) Healthz(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyTimeout bounds all checks of one request together, so /readyz
// answers well inside Kubernetes' default probe timeout of 1s whatever a
// dependency does: a check that has not answered by then has failed.
const readyTimeout = 500 * time.Millisecond

// Readyz answers 200 when every check passes and 503 with the failures
// otherwise. The failures name addresses and error text: serve it only where
// operators alone can reach it.
func (h *Handler) Readyz(w http.ResponseWriter, r *http.Request) {
	failed := h.run(r.Context())
	if len(failed) > 0 {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "failed": failed})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Ready is Readyz for a public listener: 200 {"status":"ready"} or 503
// {"status":"unavailable"}, and nothing about why.
func (h *Handler) Ready(w http.ResponseWriter, r *http.Request) {
	if len(h.run(r.Context())) > 0 {
		WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// run runs every check at once and returns the failures by name. A check
// that outlasts readyTimeout counts as failed without being waited for: a
// client's dial can take longer than its context allows (go-redis answers
// an unreachable Redis after about 1.7s). Its goroutine ends when the
// check returns, which the cancelled context hastens.
func (h *Handler) run(ctx context.Context) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	// The checks get a fifth less, so that one that heeds its context
	// answers with its own error, which says more than a timeout.
	checkCtx, cancelChecks := context.WithTimeout(ctx, readyTimeout*4/5)
	defer cancelChecks()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(h.checks)) // room for all: no sender waits
	pending := make(map[string]bool, len(h.checks))
	for name, check := range h.checks {
		pending[name] = true
		go func() { results <- result{name, check(checkCtx)} }()
	}
	failed := map[string]string{}
	for len(pending) > 0 {
		select {
		case r := <-results:
			delete(pending, r.name)
			if r.err != nil {
				failed[r.name] = r.err.Error()
			}
		case <-ctx.Done():
			names := make([]string, 0, len(pending))
			for name := range pending {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				failed[name] = fmt.Sprintf("no answer within %s", readyTimeout)
			}
			return failed
		}
	}
	return failed
}

// Metrics serves the Prometheus text format.
func (h *Handler) Metrics(w http.ResponseWriter, r *http.Request) { h.metrics.ServeHTTP(w, r) }

// ServeMux returns a mux with the three endpoints and Go's profiles under
// /debug/pprof/, for listeners that serve nothing else and are internal:
// gc's, and the app server's admin listener (the public listener never has
// the profiles). Every other request gets a JSON error, as on the app
// server's public listener.
func (h *Handler) ServeMux() *http.ServeMux {
	mux := http.NewServeMux()
	routes := map[string]http.HandlerFunc{"/healthz": h.Healthz, "/readyz": h.Readyz, "/metrics": h.Metrics}
	for path, fn := range routes {
		// GET patterns take HEAD too.
		mux.HandleFunc("GET "+path, fn)
	}
	// pprof.Index serves the named profiles (heap, goroutine, allocs...)
	// below its path; the other four are handlers of their own.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	// The catch-all also sees other methods on the three paths: ServeMux
	// answers 405 itself only when no pattern matches at all.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := routes[r.URL.Path]; ok || strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
			return
		}
		writeError(w, http.StatusNotFound, "not_found", "no route for "+r.Method+" "+r.URL.Path+"; this listener serves /healthz, /readyz, /metrics and /debug/pprof/")
	})
	return mux
}

// Server returns an http.Server for ServeMux with the timeouts of an
// internal listener: gc's, and the app server's admin listener. Its write
// timeout leaves room for a CPU profile or trace of up to a minute (pprof
// refuses one that would outlast it; its default is 30 s).
func (h *Handler) Server() *http.Server {
	return &http.Server{
		Handler:           h.ServeMux(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      65 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// writeError writes the error body of the app server's API.
func writeError(w http.ResponseWriter, status int, code, message string) {
	WriteJSON(w, status, map[string]map[string]string{"error": {"code": code, "message": message}})
}

// WriteJSON writes v as a JSON body with the headers every endpoint of the
// service sends: never cached (counts and readiness change by the second),
// never sniffed as anything but JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// The status is out already; a client that went away mid-body has
	// nothing left to be told.
	_ = json.NewEncoder(w).Encode(v)
}

// Package health serves /healthz, /readyz and /metrics for both binaries.
package health

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
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
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyTimeout bounds all checks of one request together, so /readyz
// answers even when a dependency hangs.
const readyTimeout = 2 * time.Second

// Readyz answers 200 when every check passes and 503 with the failures
// otherwise.
func (h *Handler) Readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	names := make([]string, 0, len(h.checks))
	for name := range h.checks {
		names = append(names, name)
	}
	sort.Strings(names)
	failed := map[string]string{}
	for _, name := range names {
		if err := h.checks[name](ctx); err != nil {
			failed[name] = err.Error()
		}
	}
	if len(failed) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "failed": failed})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Metrics serves the Prometheus text format.
func (h *Handler) Metrics(w http.ResponseWriter, r *http.Request) { h.metrics.ServeHTTP(w, r) }

// ServeMux returns a mux with the three endpoints, for processes that serve
// nothing else (cmd/gc).
func (h *Handler) ServeMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", h.Healthz)
	mux.HandleFunc("GET /readyz", h.Readyz)
	mux.HandleFunc("GET /metrics", h.Metrics)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

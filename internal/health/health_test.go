package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestServeMux_EveryAnswerIsJSON checks gc's listener and the app server's
// admin listener: unknown paths and methods get the API's JSON errors, HEAD
// works wherever GET does.
func TestServeMux_EveryAnswerIsJSON(t *testing.T) {
	h := New(map[string]Check{"redis": func(context.Context) error { return errors.New("dial tcp 10.0.0.5:6379: refused") }}, prometheus.NewRegistry())
	srv := httptest.NewServer(h.ServeMux())
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/nope", 404, "not_found"},
		{"POST", "/healthz", 405, "method_not_allowed"},
		{"DELETE", "/metrics", 405, "method_not_allowed"},
		{"GET", "/healthz", 200, ""},
		{"HEAD", "/healthz", 200, ""},
		{"HEAD", "/metrics", 200, ""},
		{"GET", "/readyz", 503, ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error  struct{ Code string }
			Failed map[string]string
		}
		if tc.method != "HEAD" && (tc.path != "/metrics" || tc.status != 200) {
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s %s: Content-Type %q, want JSON", tc.method, tc.path, ct)
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Errorf("%s %s: body is not JSON: %v", tc.method, tc.path, err)
			}
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || body.Error.Code != tc.code {
			t.Errorf("%s %s = %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body.Error.Code, tc.status, tc.code)
		}
		// The detailed readiness is for this internal listener only.
		if tc.path == "/readyz" && !strings.Contains(body.Failed["redis"], "10.0.0.5") {
			t.Errorf("/readyz failures = %v, want the check's error", body.Failed)
		}
	}
}

func TestReady_SaysNothingOfWhy(t *testing.T) {
	h := New(map[string]Check{"redis": func(context.Context) error { return errors.New("dial tcp 10.0.0.5:6379: refused") }}, prometheus.NewRegistry())
	rec := httptest.NewRecorder()
	h.Ready(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || strings.TrimSpace(rec.Body.String()) != `{"status":"unavailable"}` {
		t.Errorf("Ready = %d %s, want 503 {\"status\":\"unavailable\"}", rec.Code, rec.Body)
	}
}

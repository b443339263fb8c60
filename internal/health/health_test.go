package health

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// TestReadyz_AnswersInTime: a check that hangs past its context (a dial
// that ignores it) fails /readyz within readyTimeout instead of holding it,
// and the other checks still report.
func TestReadyz_AnswersInTime(t *testing.T) {
	release := make(chan struct{})
	// Released after 3s all the same, so that a /readyz that waits for it
	// fails the test rather than hanging it.
	time.AfterFunc(3*time.Second, func() { close(release) })
	h := New(map[string]Check{
		"hung": func(context.Context) error { <-release; return nil },
		"ok":   func(context.Context) error { return nil },
		"down": func(context.Context) error { return errors.New("refused") },
	}, prometheus.NewRegistry())
	rec := httptest.NewRecorder()
	start := time.Now()
	h.Readyz(rec, httptest.NewRequest("GET", "/readyz", nil))
	took := time.Since(start)
	var body struct {
		Failed map[string]string `json:"failed"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 503 || body.Failed["hung"] != "no answer within 500ms" || body.Failed["down"] != "refused" || len(body.Failed) != 2 {
		t.Errorf("Readyz = %d %s, want 503 with hung and down failed", rec.Code, rec.Body)
	}
	t.Logf("answered in %s", took.Round(time.Millisecond))
}

func TestReady_SaysNothingOfWhy(t *testing.T) {
	h := New(map[string]Check{"redis": func(context.Context) error { return errors.New("dial tcp 10.0.0.5:6379: refused") }}, prometheus.NewRegistry())
	rec := httptest.NewRecorder()
	h.Ready(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || strings.TrimSpace(rec.Body.String()) != `{"status":"unavailable"}` {
		t.Errorf("Ready = %d %s, want 503 {\"status\":\"unavailable\"}", rec.Code, rec.Body)
	}
}

// TestServeMux_Profiles: Go's profiles are served on the internal
// listeners, read-only, and a CPU profile fits the write timeout.
func TestServeMux_Profiles(t *testing.T) {
	h := New(nil, prometheus.NewRegistry())
	srv := httptest.NewUnstartedServer(h.ServeMux())
	srv.Config = h.Server()
	srv.Start()
	defer srv.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/debug/pprof/", 200, "goroutine"},
		{"GET", "/debug/pprof/heap?debug=1", 200, "heap profile"},
		{"GET", "/debug/pprof/goroutine?debug=1", 200, "goroutine profile"},
		{"GET", "/debug/pprof/profile?seconds=1", 200, ""},
		{"POST", "/debug/pprof/heap", 405, "method_not_allowed"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
			t.Errorf("%s %s = %d %.80q, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.body)
		}
	}
	if timeout := h.Server().WriteTimeout; timeout <= 60*time.Second {
		t.Errorf("write timeout %s: a 60 s CPU profile would be refused", timeout)
	}
}

package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presence/presence/internal/redistest"
)

// get does a GET and decodes a JSON body; it fails the test on transport
// errors and on a body that is not JSON.
func get(t *testing.T, rawURL string, hdr http.Header) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("GET %s: body %q is not JSON: %v", rawURL, body, err)
		}
	}
	return resp.StatusCode, resp.Header, m
}

func TestREST_Counts(t *testing.T) {
	a := newApp(t, appOpts{})
	viewer(t, a, "13", 1)
	viewer(t, a, "13", 2)

	status, _, body := get(t, a.URL+"/v1/posts/13", nil)
	if status != 200 || body["post"] != "13" || body["viewers"] != float64(2) || body["views"] != float64(2) {
		t.Errorf("GET /v1/posts/13 = %d %v, want 200 post 13 viewers 2 views 2", status, body)
	}
	status, _, body = get(t, a.URL+"/v1/viewers?post=13&post=14&post=13", nil)
	counts, _ := body["counts"].(map[string]any)
	if status != 200 || counts["13"] != float64(2) || counts["14"] != float64(0) || len(counts) != 2 {
		t.Errorf("GET /v1/viewers = %d %v, want counts 13:2 14:0", status, body)
	}
}

func TestREST_Errors(t *testing.T) {
	a := newApp(t, appOpts{})
	many := url.Values{}
	for i := range 101 {
		many.Add("post", fmt.Sprint(i))
	}
	cases := []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/posts/bad%20id", 400, "invalid_post"},
		{"/v1/posts/" + strings.Repeat("x", 65), 400, "invalid_post"},
		{"/v1/viewers", 400, "bad_request"},
		{"/v1/viewers?post=ok&post=no!", 400, "invalid_post"},
		{"/v1/viewers?post=", 400, "invalid_post"},
		{"/v1/viewers?" + many.Encode(), 400, "too_many"},
		{"/nothing/here", 404, "not_found"},
	}
	for _, tc := range cases {
		status, hdr, body := get(t, a.URL+tc.path, nil)
		errObj, _ := body["error"].(map[string]any)
		if status != tc.status || errObj["code"] != tc.code || errObj["message"] == "" {
			t.Errorf("GET %s = %d %v, want %d with error code %s and a message", tc.path, status, body, tc.status, tc.code)
		}
		if ct := hdr.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s Content-Type=%q, want application/json", tc.path, ct)
		}
	}
	resp, err := http.Post(a.URL+"/v1/posts/13", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/posts/13 = %d, want 405", resp.StatusCode)
	}
}

func TestREST_CORS(t *testing.T) {
	a := newApp(t, appOpts{origins: []string{"*.example.com"}})
	_, hdr, _ := get(t, a.URL+"/v1/posts/1", http.Header{"Origin": {"https://blog.example.com"}})
	if got := hdr.Get("Access-Control-Allow-Origin"); got != "https://blog.example.com" {
		t.Errorf("allowed origin: Access-Control-Allow-Origin=%q", got)
	}
	_, hdr, _ = get(t, a.URL+"/v1/posts/1", http.Header{"Origin": {"https://evil.example.net"}})
	if got := hdr.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("foreign origin: Access-Control-Allow-Origin=%q, want none", got)
	}
}

func TestREST_HealthAndReadiness(t *testing.T) {
	// Its own Redis, so it can be killed.
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	a := newApp(t, appOpts{rdb: rdb})
	if status, _, body := get(t, a.URL+"/readyz", nil); status != 200 || body["status"] != "ready" {
		t.Errorf("/readyz = %d %v, want 200 ready", status, body)
	}
	if status, _, body := get(t, a.URL+"/healthz", nil); status != 200 || body["status"] != "ok" {
		t.Errorf("/healthz = %d %v, want 200 ok", status, body)
	}
	v := viewer(t, a, "m", 1)

	r.Kill()
	status, _, body := get(t, a.URL+"/readyz", nil)
	if status != 503 || body["status"] != "unavailable" {
		t.Errorf("/readyz with Redis down = %d %v, want 503 unavailable", status, body)
	}
	if status, _, _ := get(t, a.URL+"/healthz", nil); status != 200 {
		t.Errorf("/healthz with Redis down = %d, want 200 (the process lives)", status)
	}
	status, _, body = get(t, a.URL+"/v1/posts/m", nil)
	if errObj, _ := body["error"].(map[string]any); status != 503 || errObj["code"] != "unavailable" {
		t.Errorf("GET /v1/posts/m with Redis down = %d %v, want 503 unavailable", status, body)
	}
	// A WebSocket client gets an error frame and stays connected.
	v.send(`{"type":"view","post":"n"}`)
	if m := v.waitFor("error", func(m map[string]any) bool { return m["type"] == "error" }); m["code"] != "unavailable" {
		t.Errorf("view with Redis down: %v, want unavailable error", m)
	}

	resp, err := http.Get(a.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		"presence_connections_open 1", "presence_views_total 1", "presence_leaves_total 1", // the move from m to n
		"presence_frames_dropped_total 0", `presence_redis_errors_total{op="ping"}`,
	} {
		if !strings.Contains(string(metrics), line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	// hello, the count of m and the error frame at least. The writer counts
	// a frame once its write returned, which can be after the client read
	// it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		sent := metricValue(t, a, "presence_frames_sent_total")
		if sent >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("presence_frames_sent_total=%v, want >= 3", sent)
			break
		}
		time.Sleep(10 * time.Millisecond) // polls a counter: nothing to await
	}
}

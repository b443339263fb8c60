package httpapi_test

import (
	"context"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/presence/presence/internal/httpapi"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// TestOpenAPI_EveryDocumentedStatus checks api/openapi.yaml against a real
// server: every documented path, method and status is provoked and must
// come back as documented, and every provocation must be documented.
func TestOpenAPI_EveryDocumentedStatus(t *testing.T) {
	raw, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		OpenAPI string `yaml:"openapi"`
		Paths   map[string]map[string]struct {
			Responses map[string]any `yaml:"responses"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.") {
		t.Errorf("openapi version %q, want 3.x", spec.OpenAPI)
	}
	var documented []string
	for path, ops := range spec.Paths {
		for method, op := range ops {
			for status := range op.Responses {
				documented = append(documented, strings.ToUpper(method)+" "+path+" "+status)
			}
		}
	}

	up := newApp(t, withKeys(appOpts{}))
	off := newApp(t, appOpts{})
	signedApp := newApp(t, signed(appOpts{memory: true}))
	full := newApp(t, appOpts{memory: true, api: httpapi.Config{MaxConns: 1}})
	dial(t, full, nil)
	crowded := newApp(t, appOpts{memory: true, api: httpapi.Config{MaxConnsPerIP: 1}})
	dial(t, crowded, nil)
	// A key of the wrong type makes the counts script fail inside Redis:
	// a real internal error, not a mock.
	if err := up.rdb.Set(context.Background(), redisstore.NewKeys(up.prefix).PostViewers("broken"), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	down := newApp(t, withKeys(appOpts{rdb: rdb}))
	r.Kill()

	get := func(a *app, path string, hdr http.Header) func(t *testing.T) int {
		return func(t *testing.T) int {
			req, _ := http.NewRequest(http.MethodGet, a.URL+path, nil)
			for k, v := range hdr {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
	}
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-WebSocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	badVersion := upgrade.Clone()
	badVersion.Set("Sec-WebSocket-Version", "8")
	foreign := upgrade.Clone()
	foreign.Set("Sec-WebSocket-Version", "13")
	foreign.Set("Origin", "https://evil.example")
	valid := upgrade.Clone()
	valid.Set("Sec-WebSocket-Version", "13")
	publish := func(a *app, path, auth, ctype, body string) func(t *testing.T) int {
		return func(t *testing.T) int {
			status, _, _ := post(t, a, path, auth, ctype, strings.NewReader(body))
			return status
		}
	}
	const events = "/v1/posts/13/events"
	big := `{"name":"x","data":"` + strings.Repeat("x", 17<<10) + `"}`
	provoke := map[string]func(t *testing.T) int{
		"POST /v1/posts/{post}/events 202": publish(up, events, "Bearer "+key1, "application/json", `{"name":"x"}`),
		"POST /v1/posts/{post}/events 400": publish(up, events, "Bearer "+key1, "application/json", `{"name":"a b"}`),
		"POST /v1/posts/{post}/events 401": publish(up, events, "", "application/json", `{"name":"x"}`),
		"POST /v1/posts/{post}/events 403": publish(up, events, "Bearer wrong-key-0123456789", "application/json", `{"name":"x"}`),
		"POST /v1/posts/{post}/events 404": publish(off, events, "Bearer "+key1, "application/json", `{"name":"x"}`),
		"POST /v1/posts/{post}/events 413": publish(up, events, "Bearer "+key1, "application/json", big),
		"POST /v1/posts/{post}/events 415": publish(up, events, "Bearer "+key1, "text/plain", `{"name":"x"}`),
		"POST /v1/posts/{post}/events 503": publish(down, events, "Bearer "+key1, "application/json", `{"name":"x"}`),
		"GET /v1/posts/{post} 200":         get(up, "/v1/posts/13", nil),
		"GET /v1/posts/{post} 400":         get(up, "/v1/posts/bad!", nil),
		"GET /v1/posts/{post} 403":         get(signedApp, "/v1/posts/13", nil),
		"GET /v1/viewers 403":              get(signedApp, "/v1/viewers?post=13", nil),
		"GET /widget.js 206":               get(up, "/widget.js", http.Header{"Range": {"bytes=0-9"}}),
		"GET /v1/ws 429":                   get(crowded, "/v1/ws", valid),
		"GET /v1/ws 503":                   get(full, "/v1/ws", valid),
		"GET /v1/posts/{post} 500":         get(up, "/v1/posts/broken", nil),
		"GET /v1/posts/{post} 503":         get(down, "/v1/posts/13", nil),
		"GET /v1/viewers 200":              get(up, "/v1/viewers?post=1&post=2", nil),
		"GET /v1/viewers 400":              get(up, "/v1/viewers", nil),
		"GET /v1/viewers 500":              get(up, "/v1/viewers?post=1&post=broken", nil),
		"GET /v1/viewers 503":              get(down, "/v1/viewers?post=1", nil),
		"GET /healthz 200":                 get(down, "/healthz", nil),
		"GET /readyz 200":                  get(up, "/readyz", nil),
		"GET /readyz 503":                  get(down, "/readyz", nil),
		"GET /metrics 200":                 get(up, "/metrics", nil),
		"GET / 200":                        get(up, "/?post=13", nil),
		"GET /widget.js 200":               get(up, "/widget.js", nil),
		"GET /widget.js 304": func(t *testing.T) int {
			resp, err := http.Get(up.URL + "/widget.js")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return get(up, "/widget.js", http.Header{"If-None-Match": {resp.Header.Get("ETag")}})(t)
		},
		"GET /v1/ws 101": func(t *testing.T) int {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(up.URL, "http")+"/v1/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			conn.CloseNow()
			return resp.StatusCode
		},
		"GET /v1/ws 400": get(up, "/v1/ws", badVersion),
		"GET /v1/ws 403": get(up, "/v1/ws", foreign),
		"GET /v1/ws 426": get(up, "/v1/ws", nil),
	}
	for _, d := range documented {
		if provoke[d] == nil {
			t.Errorf("api/openapi.yaml documents %q, which this test cannot provoke: add it here or remove it there", d)
		}
	}
	for key, f := range provoke {
		if !slices.Contains(documented, key) {
			t.Errorf("the server answers %q, which api/openapi.yaml does not document", key)
			continue
		}
		want := key[strings.LastIndexByte(key, ' ')+1:]
		if got := f(t); strconv.Itoa(got) != want {
			t.Errorf("%s: server answered %d", key, got)
		}
	}
}

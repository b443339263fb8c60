package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/presence/presence/internal/redisstore"
)

const (
	key1 = "k1-0123456789abcdef"
	key2 = "k2-fedcba9876543210"
)

func withKeys(o appOpts) appOpts {
	o.api.PublishKeys = []string{key1, key2}
	return o
}

// post sends a publish request and returns the status and decoded body.
func post(t *testing.T, a *app, path, auth, contentType string, body io.Reader) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("POST %s: body %q is not JSON", path, raw)
	}
	return resp.StatusCode, resp.Header, m
}

func publishEvent(t *testing.T, a *app, postID, body string) map[string]any {
	t.Helper()
	status, _, m := post(t, a, "/v1/posts/"+postID+"/events", "Bearer "+key1, "application/json", strings.NewReader(body))
	if status != http.StatusAccepted {
		t.Fatalf("publish %s = %d %v, want 202", body, status, m)
	}
	return m
}

func TestPublish_Errors(t *testing.T) {
	off := newApp(t, appOpts{})
	status, _, body := post(t, off, "/v1/posts/13/events", "Bearer "+key1, "application/json", strings.NewReader(`{"name":"x"}`))
	if e, _ := body["error"].(map[string]any); status != 404 || !strings.Contains(fmt.Sprint(e["message"]), "PRESENCE_PUBLISH_KEYS") {
		t.Errorf("publishing off = %d %v, want 404 naming PRESENCE_PUBLISH_KEYS", status, body)
	}

	a := newApp(t, withKeys(appOpts{}))
	big := `{"name":"big","data":"` + strings.Repeat("x", 16<<10) + `"}`
	cases := []struct {
		name, path, auth, ctype string
		body                    io.Reader
		status                  int
		code                    string
	}{
		{"no key", "/v1/posts/13/events", "", "application/json", strings.NewReader(`{"name":"x"}`), 401, "unauthorized"},
		{"basic auth", "/v1/posts/13/events", "Basic a2V5Og==", "application/json", strings.NewReader(`{"name":"x"}`), 401, "unauthorized"},
		{"empty bearer", "/v1/posts/13/events", "Bearer ", "application/json", strings.NewReader(`{"name":"x"}`), 401, "unauthorized"},
		{"wrong key", "/v1/posts/13/events", "Bearer " + key1 + "x", "application/json", strings.NewReader(`{"name":"x"}`), 403, "forbidden"},
		{"bad post", "/v1/posts/no!/events", "Bearer " + key1, "application/json", strings.NewReader(`{"name":"x"}`), 400, "invalid_post"},
		{"no content type", "/v1/posts/13/events", "Bearer " + key1, "", strings.NewReader(`{"name":"x"}`), 415, "unsupported"},
		{"form", "/v1/posts/13/events", "Bearer " + key1, "application/x-www-form-urlencoded", strings.NewReader(`name=x`), 415, "unsupported"},
		{"too large", "/v1/posts/13/events", "Bearer " + key1, "application/json", strings.NewReader(big), 413, "too_large"},
		// No Content-Length: the limit must hold while reading.
		{"too large, chunked", "/v1/posts/13/events", "Bearer " + key1, "application/json", io.MultiReader(strings.NewReader(big)), 413, "too_large"},
		{"not JSON", "/v1/posts/13/events", "Bearer " + key1, "application/json", strings.NewReader(`{"name":`), 400, "bad_request"},
		{"unknown field", "/v1/posts/13/events", "Bearer " + key1, "application/json", strings.NewReader(`{"nmae":"x"}`), 400, "bad_request"},
		{"no name", "/v1/posts/13/events", "Bearer " + key1, "application/json", strings.NewReader(`{"data":1}`), 400, "bad_request"},
		{"bad name", "/v1/posts/13/events", "Bearer " + key1, "application/json", strings.NewReader(`{"name":"a b"}`), 400, "bad_request"},
		{"two values", "/v1/posts/13/events", "Bearer " + key1, "application/json", strings.NewReader(`{"name":"a"}{"name":"b"}`), 400, "bad_request"},
	}
	for _, tc := range cases {
		status, hdr, body := post(t, a, tc.path, tc.auth, tc.ctype, tc.body)
		e, _ := body["error"].(map[string]any)
		if status != tc.status || e["code"] != tc.code || e["message"] == "" {
			t.Errorf("%s: %d %v, want %d %s with a message", tc.name, status, body, tc.status, tc.code)
		}
		if tc.status == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
	}
	// Both keys work (rotation); nobody listens yet, so no server took it.
	for _, k := range []string{key1, key2} {
		status, _, body := post(t, a, "/v1/posts/13/events", "Bearer "+k, "application/json; charset=utf-8", strings.NewReader(`{"name":"ping"}`))
		if status != 202 || body["servers"] != float64(0) || body["post"] != "13" || body["name"] != "ping" {
			t.Errorf("publish with a valid key = %d %v, want 202 with servers 0", status, body)
		}
	}
}

func TestPublish_ReachesViewersAndWatchers(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, withKeys(o))
		v := viewer(t, a, "13", 1)
		w := watcher(t, a, "13", 1)
		other := viewer(t, a, "14", 1)
		// Subscribing follows a view or watch, and does not hold up its
		// answer: publish once the app server listens, or the event may
		// find nobody (as CI once saw: servers 0).
		waitSubscribed(t, a, "13")

		reply := publishEvent(t, a, "13", `{"name":"comment","data":{"id":7,"author":"Ana"}}`)
		if reply["servers"] != float64(1) {
			t.Errorf("reply %v, want servers 1", reply)
		}
		want := `{"type":"event","post":"13","name":"comment","data":{"id":7,"author":"Ana"}}`
		for _, c := range []*client{v, w} {
			got := c.waitFor("event", func(m map[string]any) bool { return m["type"] == "event" })
			if !sameJSON(got, want) {
				t.Errorf("received %v, want %s", got, want)
			}
		}
		// Data left out arrives as null; the client on another post gets nothing.
		publishEvent(t, a, "13", `{"name":"bare"}`)
		if got := v.waitFor("event", func(m map[string]any) bool { return m["type"] == "event" }); got["data"] != nil || got["name"] != "bare" {
			t.Errorf("event without data = %v, want data null", got)
		}
		other.send(`{"type":"watch","posts":["sentinel"]}`)
		if m := other.next(); m["post"] != "sentinel" {
			t.Errorf("client of another post received %v", m)
		}
	})
}

// TestPublish_OrderAcrossServers publishes on one app server; clients on
// both get every event, in publish order.
func TestPublish_OrderAcrossServers(t *testing.T) {
	prefix := fmt.Sprintf("order%d:", time.Now().UnixNano())
	one := newApp(t, withKeys(appOpts{prefix: prefix}))
	two := newApp(t, withKeys(appOpts{prefix: prefix}))
	c1 := dial(t, one, nil)
	c1.send(`{"type":"view","post":"live"}`)
	c2 := watcher(t, two, "live", 1)
	// Both servers are subscribed once the publish reaches both.
	deadline := time.Now().Add(5 * time.Second)
	for publishEvent(t, one, "live", `{"name":"probe"}`)["servers"] != float64(2) {
		if time.Now().After(deadline) {
			t.Fatal("the post's channel never had both servers subscribed")
		}
		time.Sleep(10 * time.Millisecond) // subscriptions are confirmed asynchronously
	}
	const n = 200
	for i := range n {
		publishEvent(t, one, "live", fmt.Sprintf(`{"name":"tick","data":%d}`, i))
	}
	for _, c := range []*client{c1, c2} {
		next := 0
		c.waitFor(fmt.Sprintf("tick %d", n-1), func(m map[string]any) bool {
			if m["type"] != "event" || m["name"] != "tick" {
				return false
			}
			if got := int(m["data"].(float64)); got != next {
				t.Fatalf("event %d arrived when %d was due", got, next)
			}
			next++
			return next == n
		})
	}
}

// TestPublish_SlowConsumerIsClosed floods a post with events while one
// client does not read: it is closed with 1008, the others get everything.
func TestPublish_SlowConsumerIsClosed(t *testing.T) {
	a := newApp(t, withKeys(appOpts{queue: 16}))
	fast := viewer(t, a, "flood", 1)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.URL, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	if err := slow.Write(ctx, websocket.MessageText, []byte(`{"type":"watch","posts":["flood"]}`)); err != nil {
		t.Fatal(err)
	}
	// Until its socket buffers and its queue are full, the slow client is
	// merely behind; publish until the server gives up on it, from when
	// the app server listens on the post's channel.
	waitSubscribed(t, a, "flood")
	payload := strings.Repeat("x", 15<<10)
	sent := 0
	for ; sent < 3000 && metricValue(t, a, "presence_slow_clients_total") == 0; sent++ {
		publishEvent(t, a, "flood", fmt.Sprintf(`{"name":"big","data":{"i":%d,"pad":%q}}`, sent, payload))
	}
	if metricValue(t, a, "presence_slow_clients_total") != 1 {
		t.Fatalf("no client closed as slow after %d events", sent)
	}
	t.Logf("the slow client was closed after %d events of 15 KiB", sent)

	// Reading again, it gets what was already on its way, then 1008.
	var closeErr error
	for {
		if _, _, err := slow.Read(ctx); err != nil {
			closeErr = err
			break
		}
	}
	if websocket.CloseStatus(closeErr) != websocket.StatusPolicyViolation {
		t.Errorf("slow client closed with %v, want 1008", closeErr)
	}
	// The fast client got every event, in order, and is still connected.
	next := 0
	fast.waitFor("all events", func(m map[string]any) bool {
		if m["type"] != "event" {
			return false
		}
		data := m["data"].(map[string]any)
		if int(data["i"].(float64)) != next {
			t.Fatalf("fast client got event %v when %d was due", data["i"], next)
		}
		next++
		return next == sent
	})
	publishEvent(t, a, "flood", `{"name":"after"}`)
	fast.waitFor("event after", func(m map[string]any) bool { return m["name"] == "after" })
}

// TestPublish_StalledWriteIsClosed is a client that stops reading while
// its queue still has room: once the socket's buffers are full a write
// blocks, and the write timeout, not the queue, ends the connection; its
// session stays for the tab to resume.
func TestPublish_StalledWriteIsClosed(t *testing.T) {
	o := withKeys(appOpts{queue: 100000})
	o.api.WriteTimeout = 300 * time.Millisecond
	a := newApp(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stalled, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.URL, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.CloseNow()
	if err := stalled.Write(ctx, websocket.MessageText, []byte(`{"type":"view","post":"stall"}`)); err != nil {
		t.Fatal(err)
	}
	viewer(t, a, "stall", 2)

	payload := strings.Repeat("x", 15<<10)
	sent := 0
	for ; sent < 3000 && metricValue(t, a, "presence_connections_open") == 2; sent++ {
		publishEvent(t, a, "stall", fmt.Sprintf(`{"name":"big","data":{"i":%d,"pad":%q}}`, sent, payload))
	}
	if n := metricValue(t, a, "presence_connections_open"); n != 1 {
		t.Fatalf("%v connections open after %d events of 15 KiB to a client that reads nothing, want 1", n, sent)
	}
	t.Logf("the stalled client was closed after %d events", sent)
	if n := metricValue(t, a, "presence_slow_clients_total"); n != 0 {
		t.Errorf("presence_slow_clients_total=%v: the queue, not the write timeout, closed it", n)
	}
	// What reached its buffers is readable; then the socket ends without
	// a close frame.
	for {
		if _, _, err = stalled.Read(ctx); err != nil {
			break
		}
	}
	if st := websocket.CloseStatus(err); st != -1 {
		t.Errorf("stalled client got close code %d, want the socket cut", st)
	}
}

// TestPublish_FromRedisCLI is what PHP's $redis->publish() does: a PUBLISH on
// the post's channel, here by redis-cli itself.
func TestPublish_FromRedisCLI(t *testing.T) {
	a := newApp(t, appOpts{})
	c := viewer(t, a, "42", 1)
	msg := `{"type":"event","post":"42","name":"comment","data":{"id":9}}`
	host, port, _ := strings.Cut(redisSrv.Addr, ":")
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := exec.Command("redis-cli", "-h", host, "-p", port, "PUBLISH", redisstore.NewKeys(a.prefix).Channel("42"), msg).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli: %v: %s", err, out)
		}
		if strings.TrimSpace(string(out)) == "1" {
			break // one app server took it
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-cli PUBLISH reached %s subscribers, want 1", bytes.TrimSpace(out))
		}
		time.Sleep(10 * time.Millisecond) // the subscription is confirmed asynchronously
	}
	got := c.waitFor("event", func(m map[string]any) bool { return m["type"] == "event" })
	if !sameJSON(got, msg) {
		t.Errorf("received %v, want %s", got, msg)
	}
}

// sameJSON reports whether a decoded frame equals the JSON text want.
func sameJSON(got map[string]any, want string) bool {
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		return false
	}
	return reflect.DeepEqual(got, w)
}

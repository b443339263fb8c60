package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/presence/presence/internal/httpapi"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
)

// These tests are the attacks a hostile page or client can make on a public
// app server, each refused.

const testSecret = "test-secret-0123456789-0123456789"

var testSigner = presence.NewSigner([]string{testSecret})

func signed(o appOpts) appOpts {
	o.api.Signer = testSigner
	return o
}

// token is a valid token of post for the next hour.
func token(post string) string {
	return testSigner.Token(presence.PostID(post), time.Now().Add(time.Hour))
}

// keysLeft lists the store's keys, or for the memory store names one per
// post it keeps anything of.
func keysLeft(t *testing.T, a *app) []string {
	t.Helper()
	if a.memory != nil {
		return slices.Repeat([]string{"post"}, a.memory.Posts())
	}
	keys, err := a.rdb.Keys(context.Background(), a.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	// The resume key is the deployment's, one for all posts and sessions.
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == redisstore.NewKeys(a.prefix).ResumeKey() })
	slices.Sort(keys)
	return keys
}

// upgrade is a valid WebSocket handshake's headers.
func upgrade() http.Header {
	return http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
}

// refused makes a handshake that must be refused and returns the answer.
func refused(t *testing.T, a *app, hdr http.Header) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.URL+"/v1/ws", nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("handshake accepted, want it refused")
	}
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(raw, &m) != nil {
		t.Fatalf("refusal %d is %q %q, want a JSON error", resp.StatusCode, ct, raw)
	}
	return resp.StatusCode, resp.Header, m
}

// waitSubscribed waits until the app server's subscription to the post's
// channel is in place: a watch is answered from a read, and the bus
// subscribes on its own time, so an event published at once could find
// nobody listening. The memory store needs no wait.
func waitSubscribed(t *testing.T, a *app, post string) {
	t.Helper()
	if a.rdb == nil {
		return
	}
	channel := redisstore.NewKeys(a.prefix).Channel(presence.PostID(post))
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := a.rdb.PubSubNumSub(context.Background(), channel).Result()
		if err == nil && n[channel] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody subscribed to %s within 5s (%v)", channel, err)
		}
		time.Sleep(5 * time.Millisecond) // the subscription sends no event to await
	}
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func errMessage(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
}

func refusedCount(t *testing.T, a *app, cause string) float64 {
	t.Helper()
	return labeledValue(t, a, "presence_connections_refused_total", "cause", cause)
}

func TestEdge_SignedPosts(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		o.api.FrameRate, o.api.FrameBurst = 10000, 10000
		a := newApp(t, signed(o))
		c := dial(t, a, nil)
		expired := testSigner.Token("13", time.Now().Add(-time.Second))
		other := presence.NewSigner([]string{"another-secret-0123456789-0123456"}).Token("13", time.Now().Add(time.Hour))
		cases := []struct {
			name, frame, code string
		}{
			{"view without token", `{"type":"view","post":"13"}`, "invalid_token"},
			{"view with another post's token", `{"type":"view","post":"13","token":"` + token("14") + `"}`, "invalid_token"},
			{"view with another secret's token", `{"type":"view","post":"13","token":"` + other + `"}`, "invalid_token"},
			{"view with a garbled token", `{"type":"view","post":"13","token":"1.x"}`, "invalid_token"},
			{"view with an expired token", `{"type":"view","post":"13","token":"` + expired + `"}`, "token_expired"},
			{"token not a string", `{"type":"view","post":"13","token":7}`, "bad_request"},
			{"watch without tokens", `{"type":"watch","posts":["1","2"]}`, "invalid_token"},
			{"watch with one token short", `{"type":"watch","posts":["1","2"],"tokens":["` + token("1") + `"]}`, "bad_request"},
			{"watch with one bad token", `{"type":"watch","posts":["1","2"],"tokens":["` + token("1") + `","` + token("3") + `"]}`, "invalid_token"},
		}
		for _, tc := range cases {
			c.send(tc.frame)
			if m := c.next(); m["type"] != "error" || m["code"] != tc.code {
				t.Errorf("%s: got %v, want error %s", tc.name, m, tc.code)
			}
		}
		// A client naming made-up posts leaves nothing behind.
		for i := range 200 {
			c.send(fmt.Sprintf(`{"type":"view","post":"made-up-%d"}`, i))
			if m := c.next(); m["code"] != "invalid_token" {
				t.Fatalf("view of a made-up post: %v, want invalid_token", m)
			}
		}
		if left := keysLeft(t, a); len(left) != 0 {
			t.Errorf("refused frames left %v in the store, want nothing", left)
		}

		// REST refuses the same way, with 403.
		for _, tc := range []struct {
			path   string
			status int
			code   string
		}{
			{"/v1/posts/13", 403, "invalid_token"},
			{"/v1/posts/13?token=" + token("14"), 403, "invalid_token"},
			{"/v1/posts/13?token=" + expired, 403, "token_expired"},
			{"/v1/viewers?post=1&post=2", 403, "invalid_token"},
			{"/v1/viewers?post=1&post=2&token=" + token("1"), 400, "bad_request"},
			{"/v1/viewers?post=1&token=" + token("1") + "&post=2&token=" + token("1"), 403, "invalid_token"},
			{"/v1/viewers?post=1&token=" + token("1") + "&post=a.b&token=" + token("1"), 400, "invalid_post"},
		} {
			if st, _, m := get(t, a.URL+tc.path, nil); st != tc.status || errCode(m) != tc.code {
				t.Errorf("GET %s = %d %v, want %d %s", tc.path, st, m, tc.status, tc.code)
			}
		}

		// With their tokens, posts work as always.
		c.send(`{"type":"view","post":"13","token":"` + token("13") + `"}`)
		c.waitCount("13", 1)
		c.send(`{"type":"watch","posts":["1","2"],"tokens":["` + token("1") + `","` + token("2") + `"]}`)
		c.waitCounts(map[string]int{"1": 0, "2": 0})
		if st, _, m := get(t, a.URL+"/v1/posts/13?token="+token("13"), nil); st != 200 || m["viewers"] != float64(1) {
			t.Errorf("GET /v1/posts/13 with its token = %d %v, want 200 and 1 viewer", st, m)
		}
		path := "/v1/viewers?post=13&token=" + token("13") + "&post=2&token=" + token("2")
		if st, _, m := get(t, a.URL+path, nil); st != 200 || m["counts"].(map[string]any)["13"] != float64(1) {
			t.Errorf("GET %s = %d %v, want 200 and 13:1", path, st, m)
		}
	})
}

func TestEdge_WithoutSecretTokensAreIgnored(t *testing.T) {
	a := newApp(t, appOpts{memory: true})
	c := dial(t, a, nil)
	c.send(`{"type":"view","post":"13","token":"anything"}`)
	c.waitCount("13", 1)
	c.send(`{"type":"watch","posts":["1"],"tokens":["x"]}`)
	c.waitCount("1", 0)
	c.send(`{"type":"watch","posts":["2","3"],"tokens":["x"]}`)
	c.waitCounts(map[string]int{"2": 0, "3": 0})
	if st, _, _ := get(t, a.URL+"/v1/posts/13?token=x", nil); st != 200 {
		t.Errorf("GET with a token and no secret = %d, want 200", st)
	}
}

// TestEdge_MadeUpPostsExpire drives thousands of made-up post ids through
// a server without a secret and checks that their views totals go after
// the views TTL, leaving nothing but the seq counter.
func TestEdge_MadeUpPostsExpire(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		o.viewsTTL = time.Second
		const clients, each = 4, 500
		o.api.FrameRate, o.api.FrameBurst = 10000, 10000
		// Room for every answer: a client closed as too slow keeps its
		// session for a resume, and its last post would outlive the TTL.
		o.queue = 4 * each
		a := newApp(t, o)
		done := make(chan error, clients)
		var conns []*client
		for i := range clients {
			c := dial(t, a, nil)
			conns = append(conns, c)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				for j := range each {
					post := fmt.Sprintf("made-up-%d-%d", i, j)
					if err := c.conn.Write(ctx, websocket.MessageText, []byte(`{"type":"view","post":"`+post+`"}`)); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			// Drain the answers, so no send queue fills.
			go func() {
				for range c.frames {
				}
			}()
		}
		for range clients {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		// Wait until the last views are in, then see them carry a TTL.
		deadline := time.Now().Add(10 * time.Second)
		for a.memory == nil {
			last := fmt.Sprintf("%sviews:made-up-%d-%d", a.prefix, clients-1, each-1)
			n, err := a.rdb.Exists(context.Background(), last).Result()
			if err == nil && n == 1 {
				ttl, _ := a.rdb.PTTL(context.Background(), last).Result()
				if ttl <= 0 || ttl > time.Second {
					t.Errorf("views key TTL = %s, want at most the views TTL of 1s", ttl)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("views of the last made-up post not written within 10s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, c := range conns {
			c.conn.Close(websocket.StatusNormalClosure, "")
		}
		// Every count of a made-up post goes, and nothing else is left.
		want := []string{}
		if a.memory == nil {
			want = []string{redisstore.NewKeys(a.prefix).Seq("")}
		}
		deadline = time.Now().Add(15 * time.Second)
		for {
			left := keysLeft(t, a)
			if slices.Equal(left, want) {
				break
			}
			if time.Now().After(deadline) {
				if len(left) > 5 {
					left = append(left[:5], fmt.Sprintf("... (%d in all)", len(left)))
				}
				t.Fatalf("left in the store after the views TTL: %v, want %v", left, want)
			}
			time.Sleep(50 * time.Millisecond) // expiry sends no event to await
		}
	})
}

func TestEdge_ConnectionLimit(t *testing.T) {
	a := newApp(t, appOpts{memory: true, api: httpapi.Config{MaxConns: 3}})
	var held []*client
	for range 3 {
		held = append(held, dial(t, a, nil))
	}
	st, hdr, m := refused(t, a, upgrade())
	if st != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || errCode(m) != "server_full" {
		t.Errorf("handshake over PRESENCE_MAX_CONNS = %d %v %v, want 503, Retry-After and server_full", st, hdr, m)
	}
	// The rest of the API still answers while the sockets are taken.
	for _, path := range []string{"/healthz", "/readyz", "/v1/posts/13", "/v1/viewers?post=1", "/widget.js"} {
		if st, _, _ := get(t, a.URL+path, nil); st != 200 {
			t.Errorf("GET %s at the connection limit = %d, want 200", path, st)
		}
	}
	if n := refusedCount(t, a, "server_full"); n != 1 {
		t.Errorf("refused{server_full} = %v, want 1", n)
	}
	if n := metricValue(t, a, "presence_connections_open"); n != 3 {
		t.Errorf("connections open = %v, want 3: a refused handshake made no client", n)
	}
	// A slot frees when a client goes.
	held[0].conn.Close(websocket.StatusNormalClosure, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := tryDial(t, a, nil); err == nil {
			c.conn.CloseNow()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no slot free 5s after a client left")
		}
		time.Sleep(20 * time.Millisecond) // the slot frees when the handler returns
	}
}

func TestEdge_ConnectionLimitPerIP(t *testing.T) {
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	t.Run("behind a trusted proxy", func(t *testing.T) {
		a := newApp(t, appOpts{memory: true, api: httpapi.Config{
			MaxConnsPerIP: 2, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		}})
		dial(t, a, xff("203.0.113.7"))
		dial(t, a, xff("198.51.100.1, 203.0.113.7")) // a forged left entry changes nothing
		hdr := upgrade()
		hdr.Set("X-Forwarded-For", "203.0.113.7, 127.0.0.1")
		st, h, m := refused(t, a, hdr)
		if st != http.StatusTooManyRequests || h.Get("Retry-After") == "" || errCode(m) != "too_many_connections" {
			t.Errorf("third connection of one client = %d %v %v, want 429, Retry-After and too_many_connections", st, h, m)
		}
		if n := refusedCount(t, a, "per_ip"); n != 1 {
			t.Errorf("refused{per_ip} = %v, want 1", n)
		}
		// Other clients behind the same proxy are their own.
		dial(t, a, xff("203.0.113.8"))
		// IPv6 clients count by their /64.
		dial(t, a, xff("2001:db8:1:2::1"))
		dial(t, a, xff("2001:db8:1:2::2"))
		hdr = upgrade()
		hdr.Set("X-Forwarded-For", "2001:db8:1:2:ffff::3")
		if st, _, _ := refused(t, a, hdr); st != http.StatusTooManyRequests {
			t.Errorf("third connection of one IPv6 /64 = %d, want 429", st)
		}
		dial(t, a, xff("2001:db8:1:3::1"))
	})
	t.Run("addresses with a port", func(t *testing.T) {
		a := newApp(t, appOpts{memory: true, api: httpapi.Config{
			MaxConnsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		}})
		// Some load balancers write the client's port too; each client
		// must still count as itself, not as the proxy.
		dial(t, a, xff("203.0.113.7:5678"))
		dial(t, a, xff("[2001:db8::1]:443"))
		dial(t, a, http.Header{"X-Forwarded-For": {"198.51.100.1", "203.0.113.9:1"}})
		hdr := upgrade()
		hdr.Set("X-Forwarded-For", "203.0.113.7:9999")
		if st, _, _ := refused(t, a, hdr); st != http.StatusTooManyRequests {
			t.Errorf("second connection of 203.0.113.7 = %d, want 429", st)
		}
	})
	t.Run("untrusted X-Forwarded-For is ignored", func(t *testing.T) {
		a := newApp(t, appOpts{memory: true, api: httpapi.Config{MaxConnsPerIP: 2}})
		dial(t, a, xff("203.0.113.1"))
		dial(t, a, xff("203.0.113.2"))
		hdr := upgrade()
		hdr.Set("X-Forwarded-For", "203.0.113.3")
		if st, _, m := refused(t, a, hdr); st != http.StatusTooManyRequests {
			t.Errorf("third connection from one peer with a made-up X-Forwarded-For = %d %v, want 429", st, m)
		}
	})
	t.Run("0 turns the limit off", func(t *testing.T) {
		a := newApp(t, appOpts{memory: true})
		for range 70 {
			dial(t, a, nil)
		}
	})
}

// TestEdge_ReconnectRateIsLimited closes and reopens connections from one
// address: each new connection brings a fresh frame allowance, so an
// address may open only PRESENCE_MAX_CONNS_PER_IP of them a minute.
func TestEdge_ReconnectRateIsLimited(t *testing.T) {
	a := newApp(t, appOpts{memory: true, api: httpapi.Config{
		MaxConnsPerIP: 3, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}})
	hdr := http.Header{"X-Forwarded-For": {"203.0.113.7"}}
	for range 3 {
		c := dial(t, a, hdr)
		c.conn.Close(websocket.StatusNormalClosure, "")
		c.closed()
	}
	refusedHdr := upgrade()
	refusedHdr.Set("X-Forwarded-For", "203.0.113.7")
	st, h, m := refused(t, a, refusedHdr)
	if st != http.StatusTooManyRequests || errCode(m) != "too_many_connections" || h.Get("Retry-After") == "" || h.Get("Retry-After") == "0" {
		t.Errorf("fourth connection within a minute = %d %v %v, want 429 too_many_connections with Retry-After", st, h, m)
	}
	if n := refusedCount(t, a, "per_ip_rate"); n != 1 {
		t.Errorf("refused{per_ip_rate} = %v, want 1", n)
	}
	// Another address is not held back.
	dial(t, a, http.Header{"X-Forwarded-For": {"203.0.113.8"}})
}

// TestEdge_HalfSentHandshakeIsDropped holds a connection with a request
// whose headers never end: the server must close it, not keep its file.
func TestEdge_HalfSentHandshakeIsDropped(t *testing.T) {
	a := newApp(t, appOpts{memory: true, api: httpapi.Config{HandshakeTimeout: 300 * time.Millisecond}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a half-sent handshake was still open after 5s")
	}
}

// TestEdge_LargestLegalFrame sends the protocol's largest legal frame: a
// watch of 100 posts of 64 characters, each with its token.
func TestEdge_LargestLegalFrame(t *testing.T) {
	a := newApp(t, signed(appOpts{memory: true}))
	c := dial(t, a, nil)
	posts := make([]string, 100)
	tokens := make([]string, 100)
	for i := range posts {
		posts[i] = fmt.Sprintf("%03d", i) + strings.Repeat("p", presence.MaxPostIDLen-3)
		// A 12-digit expiry makes the longest token.
		tokens[i] = testSigner.Token(presence.PostID(posts[i]), time.Unix(999_999_999_999, 0))
		if len(tokens[i]) != presence.MaxTokenLen {
			t.Fatalf("token is %d characters, want the longest, %d", len(tokens[i]), presence.MaxTokenLen)
		}
	}
	frame, _ := json.Marshal(map[string]any{"type": "watch", "posts": posts, "tokens": tokens})
	// protocol.md states this figure.
	if len(frame) != 14737 || len(frame) > httpapi.MaxFrame {
		t.Fatalf("largest legal frame is %d bytes, want 14737, under the read limit %d", len(frame), httpapi.MaxFrame)
	}
	c.send(string(frame))
	want := map[string]int{}
	for _, p := range posts {
		want[p] = 0
	}
	c.waitCounts(want)

	// Up to the limit is read; one byte more closes with 1009.
	pad := func(n int) string {
		f := `{"type":"unview"}`
		return f[:len(f)-1] + strings.Repeat(" ", n-len(f)) + "}"
	}
	c.send(pad(httpapi.MaxFrame))
	c.send(`{"type":"watch","posts":["after"]}`)
	c.waitFor("an answer after a frame of exactly the limit", func(m map[string]any) bool { return m["type"] == "error" })
	c.send(pad(httpapi.MaxFrame + 1))
	if err := c.closed(); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("frame one byte over the limit: close %v, want 1009", err)
	}
}

// TestEdge_EventWithInvalidUTF8 is refused over HTTP and dropped from Redis,
// so no browser on the post gets a frame it must fail the connection for.
func TestEdge_EventWithInvalidUTF8(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, withKeys(o))
		w := watcher(t, a, "13", 0)
		waitSubscribed(t, a, "13")
		st, _, m := post(t, a, "/v1/posts/13/events", "Bearer "+key1, "application/json",
			strings.NewReader("{\"name\":\"x\",\"data\":\"caf\xe9\"}"))
		if st != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m), "UTF-8") {
			t.Errorf("event with invalid UTF-8 = %d %v, want 400 naming UTF-8", st, m)
		}
		if a.rdb != nil {
			bad := "{\"type\":\"event\",\"name\":\"x\",\"data\":\"caf\xe9\"}"
			if err := a.rdb.Publish(context.Background(), redisstore.NewKeys(a.prefix).Channel("13"), bad).Err(); err != nil {
				t.Fatal(err)
			}
		}
		publishEvent(t, a, "13", `{"name":"after","data":"café"}`)
		got := w.waitFor("the next event", func(m map[string]any) bool { return m["type"] == "event" })
		if got["name"] != "after" || got["data"] != "café" {
			t.Errorf("first event = %v, want the valid one after the bad ones", got)
		}
		if a.rdb != nil {
			if n := metricValue(t, a, "presence_pubsub_bad_messages_total"); n != 1 {
				t.Errorf("bad messages = %v, want 1", n)
			}
		}
	})
}

// TestEdge_EscapableEventIsDelivered publishes an event at the size limit
// made of characters that HTML escaping would grow sixfold: accepted means
// delivered, byte for byte.
func TestEdge_EscapableEventIsDelivered(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, withKeys(o))
		w := watcher(t, a, "13", 0)
		waitSubscribed(t, a, "13")
		data := strings.Repeat("<a&b>", (httpapi.MaxEventBody-40)/5)
		body := `{"name":"html","data":"` + data + `"}`
		if len(body) > httpapi.MaxEventBody {
			t.Fatalf("body is %d bytes, over the limit", len(body))
		}
		publishEvent(t, a, "13", body)
		got := w.waitFor("the event", func(m map[string]any) bool { return m["type"] == "event" })
		if got["data"] != data {
			t.Errorf("event data arrived changed or cut (%d bytes of %d)", len(fmt.Sprint(got["data"])), len(data))
		}
	})
}

func TestEdge_HTTPSurface(t *testing.T) {
	a := newApp(t, appOpts{memory: true})
	t.Run("HEAD wherever GET", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/widget.js", "/", "/v1/posts/13", "/v1/viewers?post=1", "/v1/ws", "/nope"} {
			getResp, err := http.Get(a.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			getResp.Body.Close()
			req, _ := http.NewRequest(http.MethodHead, a.URL+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != getResp.StatusCode || len(body) != 0 {
				t.Errorf("HEAD %s = %d with %d bytes, want GET's %d and no body", path, resp.StatusCode, len(body), getResp.StatusCode)
			}
		}
	})
	t.Run("handshake refusals are JSON", func(t *testing.T) {
		foreign := upgrade()
		foreign.Set("Origin", "https://evil.example")
		badVersion := upgrade()
		badVersion.Set("Sec-Websocket-Version", "8")
		for _, tc := range []struct {
			name   string
			hdr    http.Header
			status int
			code   string
		}{
			{"plain GET", nil, http.StatusUpgradeRequired, "upgrade_required"},
			{"foreign origin", foreign, http.StatusForbidden, "forbidden"},
			{"bad version", badVersion, http.StatusBadRequest, "bad_request"},
		} {
			st, _, m := refused(t, a, tc.hdr)
			if st != tc.status || errCode(m) != tc.code {
				t.Errorf("%s: %d %v, want %d %s", tc.name, st, m, tc.status, tc.code)
			}
		}
		if n := refusedCount(t, a, "origin"); n != 1 {
			t.Errorf("refused{origin} = %v, want 1", n)
		}
	})
	t.Run("405 says what is allowed", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, a.URL+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST /healthz = %d, Allow %q; want 405 and GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
		}
		req, _ = http.NewRequest(http.MethodHead, a.URL+"/v1/ws", nil)
		req.Header = upgrade()
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
			t.Errorf("HEAD /v1/ws with upgrade headers = %d, Allow %q; want 405 and GET", resp.StatusCode, resp.Header.Get("Allow"))
		}
	})
	t.Run("readyz says ready and nothing else", func(t *testing.T) {
		resp, err := http.Get(a.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != `{"status":"ready"}` {
			t.Errorf("/readyz = %s", body)
		}
	})
	t.Run("widget.js: one range at most, gzip when asked", func(t *testing.T) {
		full := fetch(t, a.URL+"/widget.js", nil)
		// One byte each, 4,000 bytes in all: under the script's size, so
		// net/http alone would answer 206 with 4,000 parts (600 KB).
		ranges := make([]string, 4000)
		for i := range ranges {
			ranges[i] = fmt.Sprintf("%d-%d", i, i)
		}
		resp := fetch(t, a.URL+"/widget.js", http.Header{"Range": {"bytes=" + strings.Join(ranges, ",")}})
		if resp.status != 200 || !bytes.Equal(resp.body, full.body) {
			t.Errorf("4,000 ranges = %d with %d bytes, want 200 and the %d-byte script once", resp.status, len(resp.body), len(full.body))
		}
		if resp := fetch(t, a.URL+"/widget.js", http.Header{"Range": {"bytes=0-9"}}); resp.status != http.StatusPartialContent || len(resp.body) != 10 {
			t.Errorf("one range = %d with %d bytes, want 206 and 10", resp.status, len(resp.body))
		}
		gz := fetch(t, a.URL+"/widget.js", http.Header{"Accept-Encoding": {"gzip, deflate, br"}})
		if gz.header.Get("Content-Encoding") != "gzip" || !strings.Contains(gz.header.Get("Vary"), "Accept-Encoding") ||
			gz.header.Get("ETag") == full.header.Get("ETag") {
			t.Fatalf("gzip headers %v, want Content-Encoding gzip, Vary and an ETag of its own", gz.header)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz.body))
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := io.ReadAll(zr)
		if !bytes.Equal(plain, full.body) || len(gz.body) >= len(full.body)/2 {
			t.Errorf("gzipped body is %d bytes and unzips to %d, want under half of %d and the script", len(gz.body), len(plain), len(full.body))
		}
		if r := fetch(t, a.URL+"/widget.js", http.Header{"Accept-Encoding": {"gzip;q=0"}}); r.header.Get("Content-Encoding") != "" {
			t.Errorf("gzip;q=0 got Content-Encoding %q", r.header.Get("Content-Encoding"))
		}
	})
	t.Run("metrics hidden for an admin listener", func(t *testing.T) {
		b := newApp(t, appOpts{memory: true, api: httpapi.Config{HideMetrics: true}})
		if st, _, m := get(t, b.URL+"/metrics", nil); st != http.StatusNotFound || errCode(m) != "not_found" {
			t.Errorf("/metrics with HideMetrics = %d %v, want a JSON 404", st, m)
		}
	})
	t.Run("no profiles on the public listener", func(t *testing.T) {
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
			if st, _, m := get(t, a.URL+path, nil); st != http.StatusNotFound || errCode(m) != "not_found" {
				t.Errorf("%s = %d %v, want a JSON 404", path, st, m)
			}
		}
	})
}

type fetched struct {
	status int
	header http.Header
	body   []byte
}

// fetch GETs url with hdr as it is: no transparent gzip.
func fetch(t *testing.T, url string, hdr http.Header) fetched {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return fetched{resp.StatusCode, resp.Header, body}
}

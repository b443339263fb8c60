package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence/presence/internal/httpapi"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

func TestWS_HelloFirst(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		o.ttl = 30 * time.Second
		a := newApp(t, o)
		c := dial(t, a, nil)
		if sid, _ := c.hello["session"].(string); len(sid) < 16 {
			t.Errorf("hello session=%v, want a random id", c.hello["session"])
		}
		if c.hello["ttl"] != float64(30) {
			t.Errorf("hello ttl=%v, want 30", c.hello["ttl"])
		}
		d := dial(t, a, nil)
		if d.hello["session"] == c.hello["session"] {
			t.Errorf("two connections share session %v", c.hello["session"])
		}
	})
}

// TestWS_FrameSentWithTheHandshake is a client whose first frame reaches
// the server in the same packet as its upgrade request, so net/http has
// read it before the upgrade: the frame must still be handled.
func TestWS_FrameSentWithTheHandshake(t *testing.T) {
	a := newApp(t, appOpts{memory: true})
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	payload := []byte(`{"type":"view","post":"early"}`)
	mask := []byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(payload))}, mask...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + strings.TrimPrefix(a.URL, "http://") + "\r\n" +
		"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake answered %s", resp.Status)
	}
	// Server frames are unmasked text frames under 126 bytes here.
	readFrame := func() string {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatalf("read a frame: %v", err)
		}
		body := make([]byte, hdr[1]&0x7f)
		if _, err := io.ReadFull(br, body); err != nil {
			t.Fatalf("read a frame: %v", err)
		}
		return string(body)
	}
	if f := readFrame(); !strings.Contains(f, `"type":"hello"`) {
		t.Fatalf("first frame %s, want hello", f)
	}
	if f := readFrame(); !strings.Contains(f, `"type":"count","post":"early","viewers":1`) {
		t.Fatalf("second frame %s, want the count of the view sent with the handshake", f)
	}
}

func TestWS_ViewMoveUnview(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		w := dial(t, a, nil)
		w.send(`{"type":"watch","posts":["a","b"]}`)
		w.waitCounts(map[string]int{"a": 0, "b": 0})

		v := dial(t, a, nil)
		v.send(`{"type":"view","post":"a"}`)
		m := v.waitCount("a", 1)
		if m["views"] != float64(1) {
			t.Errorf("views=%v, want 1", m["views"])
		}
		w.waitCount("a", 1)

		// A second view moves the session.
		v.send(`{"type":"view","post":"b"}`)
		v.waitCount("b", 1)
		// Counts of different posts may arrive in either order.
		w.waitCounts(map[string]int{"a": 0, "b": 1})

		// Back to a: the session saw a before, so its views stay at 1.
		v.send(`{"type":"view","post":"a"}`)
		m = v.waitCount("a", 1)
		if m["views"] != float64(1) {
			t.Errorf("views after a return=%v, want 1 (once per session and post)", m["views"])
		}
		// Waited for: a watcher is sent what changed since its last frame,
		// and an a=1 coalesced away would leave a=0 nothing to change.
		w.waitCounts(map[string]int{"a": 1, "b": 0})

		v.send(`{"type":"unview"}`)
		w.waitCount("a", 0)
		// Still connected and usable after unview.
		v.send(`{"type":"view","post":"b"}`)
		v.waitCount("b", 1)
	})
}

func TestWS_DisconnectDropsCount(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		w := watcher(t, a, "13", 0)
		v := dial(t, a, nil)
		v.send(`{"type":"view","post":"13"}`)
		w.waitCount("13", 1)
		v.conn.Close(websocket.StatusNormalClosure, "bye")
		w.waitCount("13", 0)
		// A connection lost without a close frame keeps its session for the
		// tab to resume: the next viewer makes 2, with no 0 between.
		v2 := dial(t, a, nil)
		v2.send(`{"type":"view","post":"13"}`)
		w.waitCount("13", 1)
		v2.conn.CloseNow()
		viewer(t, a, "13", 2)
		w.waitCount("13", 2)
	})
}

func TestWS_UnwatchStopsFrames(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		w := dial(t, a, nil)
		w.send(`{"type":"watch","posts":["x","y"]}`)
		w.waitCounts(map[string]int{"x": 0, "y": 0})
		w.send(`{"type":"unwatch","posts":["x","never-watched"]}`)
		v := dial(t, a, nil)
		// The unwatch frame is handled before this client's view, but on another
		// connection; wait until the server has applied it by a round trip.
		w.send(`{"type":"watch","posts":["y"]}`)
		w.waitCount("y", 0)
		v.send(`{"type":"view","post":"x"}`)
		v.waitCount("x", 1)
		v.send(`{"type":"view","post":"y"}`)
		// The next frame w gets must be about y, not x.
		m := w.next()
		if m["post"] != "y" {
			t.Fatalf("after unwatch got %v, want only frames about y", m)
		}
	})
}

func TestWS_WatchLimit(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		c := dial(t, a, nil)
		posts := make([]string, 101)
		for i := range posts {
			posts[i] = fmt.Sprintf(`"p%d"`, i)
		}
		c.send(`{"type":"watch","posts":[` + strings.Join(posts, ",") + `]}`)
		if m := c.next(); m["type"] != "error" || m["code"] != "too_many" {
			t.Fatalf("watch of 101 = %v, want too_many error", m)
		}
		c.send(`{"type":"watch","posts":[` + strings.Join(posts[:60], ",") + `]}`)
		for range 60 {
			if m := c.next(); m["type"] != "count" {
				t.Fatalf("got %v, want count frames", m)
			}
		}
		// 60 + 41 new ones is over 100 in total: refused whole.
		c.send(`{"type":"watch","posts":[` + strings.Join(posts[60:], ",") + `]}`)
		if m := c.next(); m["type"] != "error" || m["code"] != "too_many" {
			t.Fatalf("watch over the total = %v, want too_many error", m)
		}
		// Re-watching ones already watched does not count twice.
		c.send(`{"type":"watch","posts":[` + strings.Join(posts[:40], ",") + `]}`)
		for range 40 {
			if m := c.next(); m["type"] != "count" {
				t.Fatalf("got %v, want count frames for a re-watch", m)
			}
		}
	})
}

func TestWS_BadInput(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		c := dial(t, a, nil)
		long := strings.Repeat("x", 65)
		cases := []struct {
			name, frame, code, says string
		}{
			{"malformed JSON", `{"type":}`, "bad_request", "not valid JSON: invalid character"},
			{"not an object", `[1,2]`, "bad_request", "must be a JSON object, not a JSON array"},
			{"no type", `{"post":"1"}`, "bad_request", "no type"},
			{"unknown type", `{"type":"dance"}`, "bad_request", `unknown type "dance"`},
			{"view without post", `{"type":"view"}`, "bad_request", "needs a post"},
			{"post not a string", `{"type":"view","post":13}`, "bad_request", `field "post" must be a string, not a JSON number`},
			{"posts not strings", `{"type":"watch","posts":[1]}`, "bad_request", `field "posts" must be a list of strings`},
			{"truncated", `{"type":"view"`, "bad_request", "not valid JSON"},
			{"empty post", `{"type":"view","post":""}`, "invalid_post", "empty"},
			{"post too long", `{"type":"view","post":"` + long + `"}`, "invalid_post", "65 characters"},
			{"post with slash", `{"type":"view","post":"a/b"}`, "invalid_post", "[A-Za-z0-9_-]"},
			{"post with space", `{"type":"view","post":"a b"}`, "invalid_post", "[A-Za-z0-9_-]"},
			{"post with unicode", `{"type":"view","post":"café"}`, "invalid_post", "[A-Za-z0-9_-]"},
			{"watch without posts", `{"type":"watch"}`, "bad_request", "non-empty posts"},
			{"watch empty list", `{"type":"watch","posts":[]}`, "bad_request", "non-empty posts"},
			{"watch bad id", `{"type":"watch","posts":["ok","no!"]}`, "invalid_post", "no!"},
			{"unwatch bad id", `{"type":"unwatch","posts":["*"]}`, "invalid_post", "[A-Za-z0-9_-]"},
		}
		for _, tc := range cases {
			c.send(tc.frame)
			m := c.next()
			if m["type"] != "error" || m["code"] != tc.code {
				t.Errorf("%s: got %v, want error %s", tc.name, m, tc.code)
				continue
			}
			if msg, _ := m["message"].(string); !strings.Contains(msg, tc.says) {
				t.Errorf("%s: message %q does not say %q", tc.name, msg, tc.says)
			}
		}
		// A binary frame gets an error frame too.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.conn.Write(ctx, websocket.MessageBinary, []byte(`{"type":"view","post":"1"}`)); err != nil {
			t.Fatal(err)
		}
		if m := c.next(); m["code"] != "bad_request" || !strings.Contains(m["message"].(string), "binary") {
			t.Errorf("binary frame: got %v, want bad_request about binary frames", m)
		}
		// Nothing of the bad frames reached Redis: the watch with one bad id
		// did not watch "ok", and no session was written.
		if cs, err := a.store.Counts(ctx, []presence.PostID{"ok", "1"}); err != nil || cs[0].Viewers+cs[1].Viewers != 0 {
			t.Errorf("counts after bad frames = %v, %v; want nothing written", cs, err)
		}
		if a.rdb != nil {
			if n, err := a.rdb.HLen(ctx, redisstore.NewKeys(a.prefix).Viewers("")).Result(); err != nil || n != 0 {
				t.Errorf("viewers hash has %d entries (%v), want 0", n, err)
			}
		}
		// The connection still works.
		c.send(`{"type":"view","post":"fine"}`)
		c.waitCount("fine", 1)
	})
}

func TestWS_OversizeFrameCloses1009(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		w := watcher(t, a, "big", 0)
		c := dial(t, a, nil)
		c.send(`{"type":"view","post":"big"}`)
		w.waitCount("big", 1)
		c.send(`{"type":"view","post":"big","pad":"` + strings.Repeat("x", httpapi.MaxFrame) + `"}`)
		if err := c.closed(); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
			t.Fatalf("close = %v, want 1009", err)
		}
		// Its session stays for the tab to resume, as after any close by the
		// server; other clients are unaffected.
		w.send(`{"type":"watch","posts":["big"]}`)
		w.waitCount("big", 1)
	})
}

// TestWS_Origins: PRESENCE_ALLOWED_ORIGINS decides which pages may connect
// (and read REST counts: the same rules). A host without a port allows
// every port of it; a refused page gets 403 JSON it can read, saying what
// to add, and the operator one log line per 10 s, not one per handshake.
func TestWS_Origins(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	a := newApp(t, appOpts{origins: []string{"blog.example.com", "https://*.example.org", "127.0.0.1", "shop.example.com:8443"}, log: zap.New(core)})
	ok := []string{"http://blog.example.com", "https://blog.example.com", "https://www.example.org",
		"http://127.0.0.1:18100", "http://127.0.0.1", "https://shop.example.com:8443"}
	for _, o := range ok {
		if _, err := tryDial(t, a, http.Header{"Origin": {o}}); err != nil {
			t.Errorf("origin %s refused: %v", o, err)
		}
		if st, h := getWithOrigin(t, a.URL+"/v1/posts/p", o); st != http.StatusOK || h.Get("Access-Control-Allow-Origin") != o {
			t.Errorf("REST from %s: %d, Access-Control-Allow-Origin %q; want 200 and the origin", o, st, h.Get("Access-Control-Allow-Origin"))
		}
	}
	bad := []string{"https://evil.example.net", "http://www.example.org", "https://shop.example.com", "http://127.0.0.2:18100", "null"}
	for _, o := range bad {
		if _, err := tryDial(t, a, http.Header{"Origin": {o}}); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("origin %s: err=%v, want a 403 refusal", o, err)
		}
		if _, h := getWithOrigin(t, a.URL+"/v1/posts/p", o); h.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("REST from %s allowed by CORS", o)
		}
	}
	// What the page reads, as the widget does after its socket failed.
	hdr := upgrade()
	hdr.Set("Origin", "http://localhost:5173")
	st, h, m := refused(t, a, hdr)
	wantMsg := `the origin "http://localhost:5173" is not allowed to connect; to allow it, add "localhost" (any port) or "http://localhost:5173" to PRESENCE_ALLOWED_ORIGINS`
	if st != http.StatusForbidden || errCode(m) != "forbidden" || errMessage(m) != wantMsg || h.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("refused origin = %d %v %v, want 403 forbidden %q readable by any page", st, h, m, wantMsg)
	}
	if got := refusedCount(t, a, "origin"); got != float64(len(bad)+1) {
		t.Errorf("refusals of cause origin = %v, want %d", got, len(bad)+1)
	}
	// One line per origin, naming it and the setting.
	lines := logs.FilterMessageSnippet("refused a WebSocket handshake").All()
	if len(lines) != len(bad)+1 || lines[0].ContextMap()["origin"] != bad[0] || !strings.Contains(lines[0].Message, "PRESENCE_ALLOWED_ORIGINS") {
		t.Errorf("log lines for %d refused origins: %v, want one each, naming the origin and the setting", len(bad)+1, lines)
	}
	// The same origin again within 10 s: no line. Made-up origins by the
	// dozen: at most 10 lines in 10 s, whatever their number.
	refused(t, a, hdr)
	for i := range 30 {
		h := upgrade()
		h.Set("Origin", fmt.Sprintf("https://made-up-%d.example", i))
		refused(t, a, h)
	}
	if n := logs.FilterMessageSnippet("refused a WebSocket handshake").Len(); n != 10 {
		t.Errorf("%d log lines after 37 refusals of 37 origins and a repeat in 10 s, want 10", n)
	}
	// An Origin that is no origin is not repeated: the answer stays short
	// however long the header (64 KiB of headers at most).
	huge := upgrade()
	huge.Set("Origin", strings.Repeat("\x80", 60<<10))
	st, _, m = refused(t, a, huge)
	if st != http.StatusForbidden || len(errMessage(m)) > 300 || strings.Contains(errMessage(m), "\x80") {
		t.Errorf("refusal of a 60 KiB Origin = %d %.200q, want 403 and a short message", st, errMessage(m))
	}
	if st, _ := getWithOrigin(t, a.URL+"/v1/ws", strings.Repeat("a", 100<<10)); st != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 100 KiB Origin = %d, want 431", st)
	}

	// Same host is always allowed, without configuration.
	b := newApp(t, appOpts{})
	if _, err := tryDial(t, b, http.Header{"Origin": {b.URL}}); err != nil {
		t.Errorf("same-host origin refused: %v", err)
	}
	if _, err := tryDial(t, b, http.Header{"Origin": {"https://other.example.com"}}); err == nil {
		t.Errorf("foreign origin accepted with no origins configured")
	}
	// A plain GET from an allowed page learns that the origin was not the
	// cause: 426, readable.
	if st, h := getWithOrigin(t, b.URL+"/v1/ws", b.URL); st != http.StatusUpgradeRequired || h.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("plain GET /v1/ws from an allowed page = %d %v, want 426 readable by the page", st, h)
	}
}

// getWithOrigin makes a GET with an Origin header, as a page's fetch does,
// and returns the status and headers.
func getWithOrigin(t *testing.T, url, origin string) (int, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Origin", origin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestWS_UnansweredPingsDrop: a client that does not answer pings is
// disconnected, and its session, kept for a resume nobody makes, expires
// after its TTL (gc runs in-process in embedded mode).
func TestWS_UnansweredPingsDrop(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		o.api = httpapiConfig(50*time.Millisecond, 100*time.Millisecond)
		o.ttl = time.Second
		a := newApp(t, o)
		w := watcher(t, a, "p", 0)

		// A raw client that never reads never answers pings.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.URL, "http")+"/v1/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"view","post":"p"}`)); err != nil {
			t.Fatal(err)
		}
		w.waitCount("p", 1)
		// Reading would answer the pings: the gauge tells when it is gone.
		for deadline := time.Now().Add(5 * time.Second); metricValue(t, a, "presence_connections_open") != 1; {
			if time.Now().After(deadline) {
				t.Fatal("a client that answers no pings is still connected 5s later")
			}
			time.Sleep(20 * time.Millisecond) // polls a gauge: nothing to await
		}
		if o.memory {
			w.waitCount("p", 0)
		}
	})
}

func TestWS_TwoServersShareCounts(t *testing.T) {
	prefix := "two:" + fmt.Sprint(time.Now().UnixNano()) + ":"
	one := newApp(t, appOpts{prefix: prefix, coalesce: 100 * time.Millisecond})
	two := newApp(t, appOpts{prefix: prefix, coalesce: 100 * time.Millisecond})
	w := watcher(t, two, "shared", 0)
	// The watcher's server subscribes asynchronously; a viewer that joins
	// right away must still be seen, thanks to the re-read after subscribing.
	v1 := dial(t, one, nil)
	v1.send(`{"type":"view","post":"shared"}`)
	w.waitCount("shared", 1)
	v2 := dial(t, one, nil)
	v2.send(`{"type":"view","post":"shared"}`)
	start := time.Now()
	w.waitCount("shared", 2)
	t.Logf("server two saw server one's viewer after %s", time.Since(start))
	v1.conn.Close(websocket.StatusGoingAway, "")
	w.waitCount("shared", 1)
}

func TestWS_CoalescesBursts(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		o.coalesce = 300 * time.Millisecond
		a := newApp(t, o)
		w := watcher(t, a, "hot", 0)
		const n = 20
		for range n {
			v := dial(t, a, nil)
			v.send(`{"type":"view","post":"hot"}`)
		}
		frames := 0
		w.waitFor("count hot=20", func(m map[string]any) bool {
			if m["post"] == "hot" {
				frames++
			}
			return m["post"] == "hot" && m["viewers"] == float64(n)
		})
		if frames >= n {
			t.Errorf("watcher got %d count frames for %d changes, want them coalesced", frames, n)
		}
		t.Logf("%d changes reached the watcher as %d frames", n, frames)
	})
}

func TestWS_LostSessionIsReregistered(t *testing.T) {
	a := newApp(t, appOpts{})
	w := watcher(t, a, "r", 0)
	v := dial(t, a, nil)
	v.send(`{"type":"view","post":"r"}`)
	w.waitCount("r", 1)

	// The session's key vanishes (an outage longer than the TTL) and gc
	// prunes it: the count drops although the browser is still there.
	ctx := context.Background()
	sid := v.hello["session"].(string)
	if err := a.rdb.Del(ctx, a.prefix+"session:"+sid).Err(); err != nil {
		t.Fatal(err)
	}
	if lags, err := a.redis.Prune(ctx, []presence.Session{{ID: presence.SessionID(sid)}}); err != nil || len(lags) != 1 {
		t.Fatalf("Prune = %v, %v; want the session pruned", lags, err)
	}
	w.waitCount("r", 0)

	// The next refresh finds it gone and registers it again, without
	// counting a second view.
	a.hub.Refresh(ctx)
	m := w.waitCount("r", 1)
	if m["views"] != float64(1) {
		t.Errorf("views after re-registration=%v, want 1", m["views"])
	}
	if got := metricValue(t, a, "presence_reregistrations_total"); got != 1 {
		t.Errorf("presence_reregistrations_total=%v, want 1", got)
	}
}

// TestWS_RedisLosesEverything is a Redis restart without persistence: every
// key is gone and the subscriber reconnects. Counts must follow the new
// state, although the app server saw higher seqs before.
func TestWS_RedisLosesEverything(t *testing.T) {
	r := redistest.Start(t)
	a := newApp(t, appOpts{rdb: r.Client(t)})
	w := watcher(t, a, "r", 0)
	v := dial(t, a, nil)
	v.send(`{"type":"view","post":"r"}`)
	w.waitCount("r", 1)
	for range 20 { // push seq well past where a fresh counter would start
		x := viewer(t, a, "other", 1)
		x.conn.Close(websocket.StatusGoingAway, "")
	}

	ctx := context.Background()
	if err := a.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// The re-read after resubscribing shows what Redis has now...
	w.waitCount("r", 0)
	// ...the next refresh registers the live session again...
	a.hub.Refresh(ctx)
	w.waitCount("r", 1)
	// ...and new changes keep flowing.
	v2 := dial(t, a, nil)
	v2.send(`{"type":"view","post":"r"}`)
	w.waitCount("r", 2)
}

func TestWS_FrameFloodIsClosed(t *testing.T) {
	a := newApp(t, appOpts{})
	calm := viewer(t, a, "f", 1)
	flood := dial(t, a, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 200 {
		if err := flood.conn.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"view","post":"x%d"}`, i))); err != nil {
			break // closed by the server meanwhile
		}
	}
	if err := flood.closed(); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("flooding client closed with %v, want 1008", err)
	}
	// The calm client still works.
	calm.send(`{"type":"watch","posts":["g"]}`)
	calm.waitCount("g", 0)
}

func TestWS_SilentSubscriptionIsReplaced(t *testing.T) {
	hole := redistest.NewBlackhole(t, redisSrv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: hole.Addr(), ReadTimeout: time.Second, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	prefix := redistest.Prefix()
	a := newApp(t, appOpts{rdb: rdb, prefix: prefix, probe: 200 * time.Millisecond})
	b := newApp(t, appOpts{prefix: prefix})

	w := watcher(t, a, "s", 0)
	hole.Swallow()
	viewer(t, b, "s", 1)
	// The message of that change went into the hole. (A re-read still
	// pending from subscribing may bring it over a new pool connection.)
	w.waitCount("s", 1)
	// The probe notices the dead subscription and makes a new one...
	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, a, "presence_pubsub_stale_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("presence_pubsub_stale_total still 0 after 5s with a dead subscription")
		}
		time.Sleep(20 * time.Millisecond) // the probe runs on its own timer
	}
	// ...which delivers the next change.
	viewer(t, b, "s", 2)
	w.waitCount("s", 2)
}

// TestWS_HiddenTabViewsWithoutReading: a tab that says it is hidden counts
// among the viewers and not among the readers; saying so again changes
// nothing else, counts no view, and reaches watchers like any change.
func TestWS_HiddenTabViewsWithoutReading(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		w := watcher(t, a, "r", 0)
		reading := func(viewers, views, reading int) {
			t.Helper()
			w.waitFor(fmt.Sprintf("r with %d viewers, %d views, %d reading", viewers, views, reading), func(m map[string]any) bool {
				return m["type"] == "count" && m["post"] == "r" && m["viewers"] == float64(viewers) &&
					m["views"] == float64(views) && m["reading"] == float64(reading)
			})
		}
		v1 := viewer(t, a, "r", 1)
		reading(1, 1, 1)
		v2 := dial(t, a, nil)
		v2.send(`{"type":"view","post":"r","hidden":true}`)
		reading(2, 2, 1)
		v2.send(`{"type":"view","post":"r"}`)
		reading(2, 2, 2)
		v1.send(`{"type":"view","post":"r","hidden":true}`)
		reading(2, 2, 1)
		if st, _, body := get(t, a.URL+"/v1/posts/r", nil); st != 200 || body["reading"] != float64(1) || body["viewers"] != float64(2) {
			t.Errorf("GET /v1/posts/r = %d %v, want 2 viewers and 1 reading", st, body)
		}
		// hidden must be a boolean: anything else is refused whole, and the
		// tab stays as it was.
		v2.send(`{"type":"view","post":"r","hidden":"yes"}`)
		if m := v2.waitFor("an error", func(m map[string]any) bool { return m["type"] == "error" }); m["code"] != "bad_request" {
			t.Errorf("view with hidden \"yes\": %v, want a bad_request error", m)
		}
		if st, _, body := get(t, a.URL+"/v1/posts/r", nil); body["reading"] != float64(1) || body["viewers"] != float64(2) {
			t.Errorf("GET /v1/posts/r after a refused view = %d %v, want 2 viewers and 1 reading still", st, body)
		}
		// The hidden tab closes: both numbers drop with it.
		v1.conn.Close(websocket.StatusGoingAway, "")
		reading(1, 2, 1)
	})
}

// TestWS_TabsOfOneVisitorAreOnePerson: viewers count tabs, people count
// the visitor ids the tabs send; a bad visitor id is refused whole.
func TestWS_TabsOfOneVisitorAreOnePerson(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		w := watcher(t, a, "p", 0)
		want := func(viewers, people int) {
			t.Helper()
			w.waitFor(fmt.Sprintf("p with %d viewers and %d people", viewers, people), func(m map[string]any) bool {
				return m["type"] == "count" && m["post"] == "p" && m["viewers"] == float64(viewers) && m["people"] == float64(people)
			})
		}
		a1 := dial(t, a, nil)
		a1.send(`{"type":"view","post":"p","visitor":"visitor-a-0123"}`)
		want(1, 1)
		a2 := dial(t, a, nil)
		a2.send(`{"type":"view","post":"p","visitor":"visitor-a-0123"}`)
		want(2, 1)
		b := dial(t, a, nil)
		b.send(`{"type":"view","post":"p","visitor":"visitor-b-0123"}`)
		want(3, 2)
		x := dial(t, a, nil)
		x.send(`{"type":"view","post":"p"}`) // no id: a person of its own
		want(4, 3)
		if st, _, body := get(t, a.URL+"/v1/posts/p", nil); st != 200 || body["people"] != float64(3) || body["viewers"] != float64(4) {
			t.Errorf("GET /v1/posts/p = %d %v, want 4 viewers and 3 people", st, body)
		}
		a1.conn.Close(websocket.StatusGoingAway, "")
		want(3, 3)
		a2.conn.Close(websocket.StatusGoingAway, "")
		want(2, 2)
		for _, bad := range []string{`"short"`, `"has space in it"`, `12345678`} {
			x.send(`{"type":"view","post":"p","visitor":` + bad + `}`)
			if m := x.waitFor("an error", func(m map[string]any) bool { return m["type"] == "error" }); m["code"] != "bad_request" {
				t.Errorf("view with visitor %s: %v, want a bad_request error", bad, m)
			}
		}
	})
}

// TestWS_ResumeTakesOverAnOpenConnection: a tab that resumes its session
// while its old connection is still open here (a dial it gave up, a socket
// not yet seen to be dead) gets the session, the old connection is ended,
// and the count never moves.
func TestWS_ResumeTakesOverAnOpenConnection(t *testing.T) {
	bothStores(t, func(t *testing.T, o appOpts) {
		a := newApp(t, o)
		w := watcher(t, a, "t", 0)
		old := viewer(t, a, "t", 1)
		w.waitCount("t", 1)
		tok, _ := old.hello["resume"].(string)
		if tok == "" {
			t.Fatalf("hello %v has no resume token", old.hello)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.URL, "http")+"/v1/ws?resume="+url.QueryEscape(tok), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseNow()
		var hello, cnt map[string]any
		if err := wsjson.Read(ctx, conn, &hello); err != nil || hello["session"] != old.hello["session"] {
			t.Fatalf("hello of the resume = %v, %v; want session %v", hello, err, old.hello["session"])
		}
		if err := wsjson.Write(ctx, conn, map[string]any{"type": "view", "post": "t"}); err != nil {
			t.Fatal(err)
		}
		if err := wsjson.Read(ctx, conn, &cnt); err != nil || cnt["viewers"] != float64(1) || cnt["views"] != float64(1) {
			t.Fatalf("count after the resume = %v, %v; want 1 viewer and 1 view", cnt, err)
		}
		if err := old.closed(); err == nil {
			t.Error("the old connection ended without an error")
		}
		viewer(t, a, "t", 2)
		w.waitFor("2 viewers, with no count below 1 before it", func(m map[string]any) bool {
			if m["type"] == "count" && m["post"] == "t" && m["viewers"].(float64) < 1 {
				t.Fatalf("the watcher saw %v: the session left", m)
			}
			return m["type"] == "count" && m["post"] == "t" && m["viewers"] == float64(2)
		})
	})
}

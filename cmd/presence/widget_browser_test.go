package main

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/presence/presence/internal/presence"
)

// These tests load widget.js into real pages of another origin, as a site
// embeds it, and check what a reader sees.

// widgetSecret signs post tokens in the tests of signed posts.
const widgetSecret = "widget-browser-test-secret-0123456789abcdef"

// pageRecorder runs before the widget. The widget loads async, and frames may
// arrive before any script of the test could install handlers from outside;
// the script's load event fires right after it ran, before any WebSocket
// event, so presenceHook hears every status and error. Frame sizes are recorded by
// wrapping send, so a test can tell which frames the widget really sent.
const pageRecorder = `<script>
var presenceStatuses = [], presenceErrors = [], presenceSent = [], presenceWarnings = [];
var presenceWarn = console.warn;
console.warn = function () {
  presenceWarnings.push(Array.prototype.join.call(arguments, " "));
  return presenceWarn.apply(console, arguments);
};
var presenceSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  presenceSent.push(String(data).length);
  return presenceSend.apply(this, arguments);
};
function presenceHook() {
  Presence.on("status", function (s) { presenceStatuses.push(s); });
  Presence.on("error", function (e) { presenceErrors.push(e); });
}
</script>
`

// widgetPage is a page with body and, after it, the widget from src with
// the script attributes attrs (name -> value). The script comes last, so
// its first scan finds every counter and its first watch holds them all.
func widgetPage(src string, attrs map[string]string, body string) string {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>widget test</title>\n")
	b.WriteString(pageRecorder)
	b.WriteString("</head><body>\n")
	b.WriteString(body)
	fmt.Fprintf(&b, "\n<script src=\"%s\"", html.EscapeString(src))
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=\"%s\"", k, html.EscapeString(attrs[k]))
	}
	b.WriteString(" async onload=\"presenceHook()\"></script>\n</body></html>\n")
	return b.String()
}

// counterSpan is a viewers counter of post, with its token if not empty.
func counterSpan(post, token string) string {
	s := fmt.Sprintf(`<span data-presence-viewers="%s"`, html.EscapeString(post))
	if token != "" {
		s += fmt.Sprintf(` data-presence-token="%s"`, html.EscapeString(token))
	}
	return s + "></span>\n"
}

// pageServer serves pages (path -> HTML) on a loopback origin other than the
// presence server's, as the site that embeds the widget.
func pageServer(t *testing.T, pages map[string]string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// startWidgetApp starts an embedded presence server that accepts pages of
// any port on 127.0.0.1, with env added, and returns its address.
func startWidgetApp(t *testing.T, env ...string) string {
	t.Helper()
	env = append([]string{"PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_ALLOWED_ORIGINS=127.0.0.1:*"}, env...)
	return runApp(t, "app", env...).addr(t)
}

// postToken is the token a site signing with secret gives post.
func postToken(secret, post string, expires time.Time) string {
	return presence.NewSigner([]string{secret}).Token(presence.PostID(post), expires)
}

// evalJS evaluates expr in tab.
func evalJS[T any](t *testing.T, tab context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// pageState is what the page's recorder heard, for failure messages.
func pageState(t *testing.T, tab context.Context) string {
	t.Helper()
	return evalJS[string](t, tab, `JSON.stringify({statuses: presenceStatuses, errors: presenceErrors, sent: presenceSent})`)
}

// waitJS polls the boolean expression cond until it holds.
func waitJS(t *testing.T, tab context.Context, cond, what string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !evalJS[bool](t, tab, cond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so after %s; page recorded %s", what, limit, pageState(t, tab))
		}
		time.Sleep(50 * time.Millisecond) // the page gives no event to await from here
	}
}

// waitCounter waits until the viewers counter of post shows want.
func waitCounter(t *testing.T, tab context.Context, post, want string) {
	t.Helper()
	sel := fmt.Sprintf(`[data-presence-viewers=%q]`, post)
	js := fmt.Sprintf(`(function(){var e=document.querySelector(%q);return e?e.textContent:"<missing>"})()`, sel)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := evalJS[string](t, tab, js)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter of %q shows %q, want %q; page recorded %s", post, got, want, pageState(t, tab))
		}
		time.Sleep(50 * time.Millisecond) // the page gives no event to await from here
	}
}

// statuses is every status the page's widget has been in, in order.
func statuses(t *testing.T, tab context.Context) []string {
	t.Helper()
	return evalJS[[]string](t, tab, `presenceStatuses`)
}

// Guards against maps with a prototype: "toString", "__proto__" and the
// like are legal ids, and an object literal already "has" them, so such
// counters were never watched or got "undefined"; a count of "__proto__"
// replaced the map's prototype. Also guards against one malformed id on a
// page making the server refuse the whole watch, and every counter with it.
func TestBrowser_WidgetOddPostIDs(t *testing.T) {
	addr := startWidgetApp(t)
	src := "http://" + addr + "/widget.js"
	odd := []string{"toString", "__proto__", "hasOwnProperty", "valueOf", "constructor"}
	var body strings.Builder
	// First, so that they share the frame of the valid counters.
	body.WriteString(counterSpan(`a"b`, ""))
	body.WriteString(counterSpan("x y", ""))
	for _, p := range odd {
		body.WriteString(counterSpan(p, ""))
	}
	site := pageServer(t, map[string]string{
		"/constructor": widgetPage(src, map[string]string{"data-post": "constructor"}, body.String()),
		"/proto":       widgetPage(src, map[string]string{"data-post": "__proto__"}, counterSpan("__proto__", "")),
	})
	browser := newBrowser(t)

	tab1, _ := newTab(t, browser, site+"/constructor")
	waitCounter(t, tab1, "constructor", "1")
	for _, p := range odd[:4] {
		waitCounter(t, tab1, p, "0")
	}

	tab2, _ := newTab(t, browser, site+"/proto")
	waitCounter(t, tab2, "__proto__", "1")
	waitCounter(t, tab1, "__proto__", "1")
	waitCounter(t, tab1, "constructor", "1")
	waitCounter(t, tab1, "toString", "0")

	bad := evalJS[map[string]string](t, tab1, `(function () {
		var els = document.querySelectorAll("[data-presence-viewers]"), bad = {};
		for (var i = 0; i < els.length; i++) {
			var p = els[i].getAttribute("data-presence-viewers");
			if (!/^[A-Za-z0-9_-]+$/.test(p)) bad[p] = els[i].textContent;
		}
		return bad;
	})()`)
	if want := map[string]string{`a"b`: "", "x y": ""}; !maps.Equal(bad, want) {
		t.Errorf("counters of malformed ids show %q, want %q: left empty", bad, want)
	}
	for _, tab := range []context.Context{tab1, tab2} {
		if errs := evalJS[[]map[string]any](t, tab, `presenceErrors`); len(errs) > 0 {
			t.Errorf("widget reported errors %v, want none: malformed ids are not sent", errs)
		}
	}
}

// Guards against a widget that sends no tokens: on a server that signs
// posts its counters stay empty. And against a refused token costing more
// than an error event: the connection, and the page's other counters, stay.
func TestBrowser_WidgetSignedPosts(t *testing.T) {
	addr := startWidgetApp(t, "PRESENCE_POST_SECRET="+widgetSecret)
	src := "http://" + addr + "/widget.js"
	expires := time.Now().Add(time.Hour)
	tokA, tokB := postToken(widgetSecret, "signed-a", expires), postToken(widgetSecret, "signed-b", expires)
	site := pageServer(t, map[string]string{
		// A counter the site printed without a token is left out, rather
		// than making the server refuse its neighbours' watch.
		"/a": widgetPage(src, map[string]string{"data-post": "signed-a", "data-token": tokA},
			counterSpan("signed-a", tokA)+counterSpan("unsigned", "")+counterSpan("signed-b", tokB)),
		"/b": widgetPage(src, map[string]string{"data-post": "signed-b", "data-token": tokB},
			counterSpan("signed-b", tokB)+counterSpan("signed-a", tokA)),
		// A token of another post: well-formed and signed, but not for this one.
		"/wrong": widgetPage(src, map[string]string{"data-post": "signed-c", "data-token": tokA},
			counterSpan("signed-c", "")),
	})
	browser := newBrowser(t)

	tab1, _ := newTab(t, browser, site+"/a")
	waitCounter(t, tab1, "signed-a", "1")
	waitCounter(t, tab1, "signed-b", "0")
	tab2, _ := newTab(t, browser, site+"/a")
	waitCounter(t, tab2, "signed-a", "2")
	waitCounter(t, tab1, "signed-a", "2")
	tab3, _ := newTab(t, browser, site+"/b")
	waitCounter(t, tab3, "signed-b", "1")
	waitCounter(t, tab3, "signed-a", "2")
	waitCounter(t, tab1, "signed-b", "1")
	for i, tab := range []context.Context{tab1, tab2, tab3} {
		if errs := evalJS[[]map[string]any](t, tab, `presenceErrors`); len(errs) > 0 {
			t.Errorf("tab %d: widget reported errors %v, want none", i+1, errs)
		}
	}
	// The counter left out for want of a token is watched once the page
	// hands its token over.
	tokU := postToken(widgetSecret, "unsigned", expires)
	evalJS[any](t, tab1, fmt.Sprintf(`Presence.watch(["unsigned"], {"unsigned": %q}), null`, tokU))
	waitCounter(t, tab1, "unsigned", "0")

	wrong, _ := newTab(t, browser, site+"/wrong")
	waitJS(t, wrong, `presenceErrors.some(function (e) { return e.code === "invalid_token"; })`,
		"an error event with code invalid_token", 10*time.Second)
	// Any reconnect would show as a status change; the window is what is
	// measured, so it is waited out, failing as soon as one shows.
	window := 3 * time.Second
	deadline := time.Now().Add(window)
	for {
		st := statuses(t, wrong)
		if !slices.Equal(st, []string{"connecting", "connected"}) {
			t.Fatalf("statuses %q within %s of a refused token, want only [connecting connected]; page recorded %s", st, window, pageState(t, wrong))
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := evalJS[string](t, wrong, `document.querySelector('[data-presence-viewers="signed-c"]').textContent`); got != "" {
		t.Errorf("counter of the refused post shows %q, want it left empty", got)
	}
	waitCounter(t, tab1, "signed-a", "2") // the refused view counted nowhere
}

// Guards against a read limit below the protocol's largest legal frame: the
// old server's 4096 bytes closed the connection on the watch of a page with
// 100 signed counters, and the widget reconnected and sent it again, forever.
func TestBrowser_WidgetLargestWatch(t *testing.T) {
	addr := startWidgetApp(t, "PRESENCE_POST_SECRET="+widgetSecret)
	expires := time.Unix(999_999_999_999, 0) // 12 digits, the longest expiry a token holds
	posts := make([]string, 100)
	tokens := make([]string, 100)
	var body strings.Builder
	for i := range posts {
		posts[i] = fmt.Sprintf("%03d-", i) + strings.Repeat("Az_9", 15)
		tokens[i] = postToken(widgetSecret, posts[i], expires)
		body.WriteString(counterSpan(posts[i], tokens[i]))
	}
	largest, _ := json.Marshal(struct {
		Type   string   `json:"type"`
		Posts  []string `json:"posts"`
		Tokens []string `json:"tokens"`
	}{"watch", posts, tokens})
	if len(posts[0]) != 64 || len(tokens[0]) != presence.MaxTokenLen || len(largest) != 14737 {
		t.Fatalf("ids of %d, tokens of %d and a frame of %d bytes; want 64, %d and 14737, the largest legal frame",
			len(posts[0]), len(tokens[0]), len(largest), presence.MaxTokenLen)
	}
	site := pageServer(t, map[string]string{"/": widgetPage("http://"+addr+"/widget.js", nil, body.String())})
	browser := newBrowser(t)

	tab, _ := newTab(t, browser, site+"/")
	waitJS(t, tab, `Array.prototype.every.call(document.querySelectorAll("[data-presence-viewers]"), function (e) { return e.textContent === "0"; })`,
		"all 100 counters show 0", 15*time.Second)
	if st := statuses(t, tab); !slices.Equal(st, []string{"connecting", "connected"}) {
		t.Errorf("statuses %q, want one connection: [connecting connected]", st)
	}
	if sent := evalJS[[]int](t, tab, `presenceSent`); !slices.Equal(sent, []int{len(largest)}) {
		t.Errorf("widget sent frames of %v bytes, want one watch of %d", sent, len(largest))
	}
	if errs := evalJS[[]map[string]any](t, tab, `presenceErrors`); len(errs) > 0 {
		t.Errorf("widget reported errors %v, want none", errs)
	}
}

// Guards against resetting the backoff on every hello: a server that
// accepts each connection and closes it at once (a proxy, a server shutting
// down) was hit by every open tab about four times a second.
func TestBrowser_WidgetBackoff(t *testing.T) {
	script, err := os.ReadFile("../../internal/widget/widget.js")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	first := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/widget.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(script)
	})
	mux.HandleFunc("/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		conns.Add(1)
		once.Do(func() { close(first) })
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"hello","session":"x","ttl":90}`)); err != nil {
			c.CloseNow()
			return
		}
		c.Close(websocket.StatusGoingAway, "closing at once")
	})
	page := widgetPage("/widget.js", map[string]string{"data-post": "13"}, counterSpan("13", ""))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, page)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	browser := newBrowser(t)

	tab, _ := newTab(t, browser, srv.URL+"/")
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatalf("widget did not connect within 10 s; page recorded %s", pageState(t, tab))
	}
	// The window is the thing measured: nothing to await but its end.
	window := 8 * time.Second
	time.Sleep(window)
	n := conns.Load()
	t.Logf("%d connections in %s to a server that closes each at once", n, window)
	if n > 12 {
		t.Errorf("widget opened %d connections in %s, want at most 12: its backoff starts over on every hello", n, window)
	}
	if n < 2 {
		t.Errorf("widget opened %d connections in %s, want it to reconnect; page recorded %s", n, window, pageState(t, tab))
	}
}

// TestBrowser_WidgetRefusedOrigin: a page of a site the server does not
// list gets no counts, and its console one line that says what to add to
// PRESENCE_ALLOWED_ORIGINS, however often the widget retries; a page that
// connects gets none.
func TestBrowser_WidgetRefusedOrigin(t *testing.T) {
	p := runApp(t, "app", "PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_ALLOWED_ORIGINS=example.com")
	addr := p.addr(t)
	src := "http://" + addr + "/widget.js"
	site := pageServer(t, map[string]string{"/post": widgetPage(src, map[string]string{"data-post": "13"}, counterSpan("13", ""))})
	browser := newBrowser(t)
	tab, _ := newTab(t, browser, site+"/post")
	// Three refused sockets and the one plain GET that asks why.
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, "http://"+addr+"/metrics", `presence_connections_refused_total{cause="origin"}`) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 4 refused handshakes within 20s; page recorded %s", pageState(t, tab))
		}
		time.Sleep(100 * time.Millisecond) // the server gives no event to await
	}
	warnings := evalJS[[]string](t, tab, `presenceWarnings`)
	want := `Presence: the origin "` + site + `" is not allowed to connect; to allow it, add "127.0.0.1" (any port) or "` + site + `" to PRESENCE_ALLOWED_ORIGINS`
	if len(warnings) != 1 || warnings[0] != want {
		t.Errorf("console warnings %q, want exactly [%q]", warnings, want)
	}
	if got := evalJS[string](t, tab, `document.querySelector("[data-presence-viewers]").textContent`); got != "" {
		t.Errorf("counter of a refused page shows %q, want nothing", got)
	}

	ok := startWidgetApp(t)
	okSite := pageServer(t, map[string]string{"/post": widgetPage("http://"+ok+"/widget.js", map[string]string{"data-post": "13"}, counterSpan("13", ""))})
	okTab, _ := newTab(t, browser, okSite+"/post")
	waitCounter(t, okTab, "13", "1")
	if w := evalJS[[]string](t, okTab, `presenceWarnings`); len(w) != 0 {
		t.Errorf("console warnings of a page that connects: %q, want none", w)
	}
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presence/presence/internal/browsertest"
	"github.com/presence/presence/internal/redistest"
)

// newBrowser starts the headless Chromium of the browser tests.
func newBrowser(t *testing.T) context.Context { return browsertest.New(t) }

// newTab opens a tab on url; cancel closes it.
func newTab(t *testing.T, browser context.Context, url string) (context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		cancel()
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(cancel)
	return ctx, cancel
}

// waitText waits until the element's text is want.
func waitText(t *testing.T, tab context.Context, sel, want string, limit time.Duration) {
	t.Helper()
	waitPage(t, tab, sel, fmt.Sprintf("%q", want), func(s string) bool { return s == want }, limit)
}

// waitContains waits until the element's text contains want.
func waitContains(t *testing.T, tab context.Context, sel, want string, limit time.Duration) {
	t.Helper()
	waitPage(t, tab, sel, fmt.Sprintf("text containing %q", want), func(s string) bool { return strings.Contains(s, want) }, limit)
}

// waitPage polls an element's text until ok accepts it.
func waitPage(t *testing.T, tab context.Context, sel, what string, ok func(string) bool, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	js := fmt.Sprintf(`(function(){var e=document.querySelector(%q);return e?e.textContent:"<missing>"})()`, sel)
	for {
		got, err := chromedp.Run(tab, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		if ok(got) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s shows %q after %s, want %s", sel, got, limit, what)
		}
		time.Sleep(50 * time.Millisecond) // the page gives no event to await from here
	}
}

func TestBrowser_DemoPage(t *testing.T) {
	const key = "browser-test-publish-key"
	p := runApp(t, "app", "PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_SESSION_TTL=5s", "PRESENCE_PUBLISH_KEYS="+key)
	addr := p.addr(t)
	page := "http://" + addr + "/?post=hello-world"
	counter := `#counter [data-presence-viewers="hello-world"]`
	browser := newBrowser(t)

	// Two tabs on one post both show 2.
	tab1, _ := newTab(t, browser, page)
	waitText(t, tab1, counter, "1", 5*time.Second)
	tab2, close2 := newTab(t, browser, page)
	waitText(t, tab2, counter, "2", 5*time.Second)
	waitText(t, tab1, counter, "2", 5*time.Second)
	waitText(t, tab1, `#counter [data-presence-views="hello-world"]`, "2", 5*time.Second)

	// The archive list shows counts too, of the viewed post and of others.
	waitText(t, tab1, `#archive [data-presence-viewers="hello-world"]`, "2", 5*time.Second)
	waitText(t, tab1, `#archive [data-presence-viewers="13"]`, "0", 5*time.Second)
	tab3, _ := newTab(t, browser, "http://"+addr+"/?post=13")
	waitText(t, tab3, `#counter [data-presence-viewers="13"]`, "1", 5*time.Second)
	waitText(t, tab1, `#archive [data-presence-viewers="13"]`, "1", 5*time.Second)

	// The embed snippet names this server.
	snippet, err := chromedp.Run(tab1, chromedp.Evaluate[string](`document.querySelector("pre").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(snippet, `src="http://`+addr+`/widget.js"`) {
		t.Errorf("embed snippet %q does not name this server", snippet)
	}

	// An event published over HTTP, as PHP or curl would, shows up live.
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/posts/hello-world/events",
		strings.NewReader(`{"name":"comment","data":{"author":"Ana","text":"Nice post!"}}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish = %d, want 202", resp.StatusCode)
	}
	for _, tab := range []context.Context{tab1, tab2} {
		waitContains(t, tab, "#events", `hello-world comment {"author":"Ana","text":"Nice post!"}`, 2*time.Second)
	}

	// Two tabs of one browser are one person; a tab in another profile
	// (its own localStorage, so its own visitor id) is a second.
	people := `#counter [data-presence-people="hello-world"]`
	waitText(t, tab1, people, "1", 5*time.Second)
	other, cancelOther := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	defer cancelOther()
	if err := chromedp.Do(other, chromedp.Navigate(page)); err != nil {
		t.Fatal(err)
	}
	waitText(t, tab1, people, "2", 5*time.Second)
	waitText(t, tab1, counter, "3", 5*time.Second)
	cancelOther()
	waitText(t, tab1, people, "1", 5*time.Second)
	waitText(t, tab1, counter, "2", 5*time.Second)
	id1 := evalJS[string](t, tab1, `localStorage.getItem("presence-visitor")`)
	id2 := evalJS[string](t, tab2, `localStorage.getItem("presence-visitor")`)
	if id1 == "" || id1 != id2 {
		t.Errorf("visitor ids of two tabs of one browser: %q and %q, want one", id1, id2)
	}
	if cookies := evalJS[string](t, tab1, `document.cookie`); cookies != "" {
		t.Errorf("the page has cookies %q, want none", cookies)
	}

	// A tab in the background is open but not reading: reading drops, the
	// viewers (open tabs) and views do not, and it comes back when the tab
	// is shown again.
	reading := `#counter [data-presence-reading="hello-world"]`
	waitText(t, tab1, reading, "2", 5*time.Second)
	setHidden(t, tab2, true)
	waitText(t, tab1, reading, "1", 5*time.Second)
	waitText(t, tab1, counter, "2", time.Second)
	waitText(t, tab1, `#counter [data-presence-views="hello-world"]`, "3", time.Second) // the other profile's tab counted one
	setHidden(t, tab2, false)
	waitText(t, tab1, reading, "2", 5*time.Second)
	setHidden(t, tab2, true)
	waitText(t, tab1, reading, "1", 5*time.Second)

	// Screenshot of the demo page, for README (quality 100 makes a PNG):
	// 1 reading now, 2 open.
	png, err := chromedp.Run(tab1, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "demo.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(png) < 10_000 {
		t.Errorf("screenshot is only %d bytes", len(png))
	}
	if dst := os.Getenv("PRESENCE_SCREENSHOT"); dst != "" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// Closing a tab drops the count in the other within 2 s.
	close2()
	waitText(t, tab1, counter, "1", 2*time.Second)
	waitText(t, tab1, reading, "1", 2*time.Second)

	// Stop the server: the widget keeps the last value while it is away,
	// and recovers by itself once a server listens on the address again.
	p.Stop()
	if code := p.exited(t, 10*time.Second); code != 0 {
		t.Fatalf("presence exited %d when stopped: %v", code, p.Err())
	}
	waitText(t, tab1, "#status", "disconnected", 5*time.Second)
	waitText(t, tab1, counter, "1", time.Second)
	restarted := runApp(t, "app-restarted", "PRESENCE_ADDR="+addr, "PRESENCE_SESSION_TTL=5s")
	restarted.addr(t)
	// The widget retries with backoff (0.5 s doubling, with jitter).
	waitText(t, tab1, "#status", "connected", 15*time.Second)
	// The new server knows nothing of the old sessions: both open tabs
	// register again, tab1 on hello-world and tab3 on 13.
	waitText(t, tab1, counter, "1", 5*time.Second)
	waitText(t, tab1, `#archive [data-presence-viewers="13"]`, "1", 5*time.Second)
}

// setHidden puts tab in the background, or brings it back, as far as the
// page can tell: headless Chromium shows every tab, so document.hidden and
// the visibilitychange event that the Page Visibility API gives are set
// here as a browser sets them when the tab's window hides it.
func setHidden(t *testing.T, tab context.Context, hidden bool) {
	t.Helper()
	js := fmt.Sprintf(`(function (h) {
		Object.defineProperty(document, "hidden", {configurable: true, get: function () { return h; }});
		Object.defineProperty(document, "visibilityState", {configurable: true, get: function () { return h ? "hidden" : "visible"; }});
		document.dispatchEvent(new Event("visibilitychange"));
		return true;
	})(%v)`, hidden)
	if _, err := chromedp.Run(tab, chromedp.Evaluate[bool](js)); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser_DemoPageRedisOutage: while the app server cannot reach Redis,
// the demo page says so rather than "connected" beside stale counts, and
// it recovers by itself when Redis is back.
func TestBrowser_DemoPageRedisOutage(t *testing.T) {
	rs := redistest.Start(t)
	p := runApp(t, "app", "PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_REDIS_URL="+rs.URL(),
		"PRESENCE_KEY_PREFIX="+redistest.Prefix(), "PRESENCE_SESSION_TTL=3s")
	addr := p.addr(t)
	counter := `#counter [data-presence-viewers="hello-world"]`
	tab, _ := newTab(t, newBrowser(t), "http://"+addr+"/?post=hello-world")
	waitText(t, tab, counter, "1", 5*time.Second)
	waitText(t, tab, "#status", "connected", 5*time.Second)

	rs.Kill()
	waitContains(t, tab, "#status", "degraded", 5*time.Second)
	if err := rs.Restart(); err != nil {
		t.Fatal(err)
	}
	waitText(t, tab, "#status", "connected", 5*time.Second)
	// Redis came back empty: the app server registers the tab again.
	waitText(t, tab, counter, "1", 5*time.Second)
}

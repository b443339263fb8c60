package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/semaphore"

	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// tab is a browser tab that reads everything it is sent, on its own
// goroutine, and remembers the last count of its post and how it ended.
type tab struct {
	conn   *websocket.Conn
	post   string
	mu     sync.Mutex
	last   int64 // viewers of the last count of post; -1 before any
	closed time.Time
	status websocket.StatusCode
	done   chan struct{}
}

func openTab(ctx context.Context, addr, post string) (*tab, error) {
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/ws", nil)
	if err != nil {
		return nil, err
	}
	tb := &tab{conn: conn, post: post, last: -1, done: make(chan struct{})}
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"view","post":"`+post+`"}`)); err != nil {
		conn.CloseNow()
		return nil, err
	}
	go func() {
		defer close(tb.done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				tb.mu.Lock()
				tb.closed, tb.status = time.Now(), websocket.CloseStatus(err)
				tb.mu.Unlock()
				return
			}
			var f frame
			if json.Unmarshal(b, &f) == nil && f.Type == "count" && f.Post == post {
				tb.mu.Lock()
				tb.last = f.Viewers
				tb.mu.Unlock()
			}
		}
	}()
	return tb, nil
}

// openTabs opens n tabs, eight at a time; where(i) gives the i-th tab's
// server address and post. They are closed when the test ends.
func openTabs(t *testing.T, n int, where func(i int) (addr, post string)) []*tab {
	t.Helper()
	all := make([]*tab, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				addr, post := where(i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				tb, err := openTab(ctx, addr, post)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				all[i] = tb
			}
		}()
	}
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, tb := range all {
			if tb != nil {
				tb.conn.CloseNow()
			}
		}
	})
	for err := range errs {
		t.Fatalf("open a tab: %v", err)
	}
	return all
}

// fileBudget is how many files the tests that hold thousands of sockets in
// this process may have open together: the machine allows 20,000 a
// process, and the rest is kept for Redis clients, pipes and the light
// tests that run beside them. Two heavy tests that would pass the limit
// together (a rolling deploy and a drain, say) take turns instead of
// failing with "too many open files".
var fileBudget = semaphore.NewWeighted(fileBudgetSize)

const fileBudgetSize = 14000

// reserveFiles holds n files of the budget (all of it, for a test that
// needs more) until the test ends.
func reserveFiles(t *testing.T, n int64) {
	t.Helper()
	n = min(n, fileBudgetSize)
	if err := fileBudget.Acquire(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fileBudget.Release(n) })
}

// TestE2E_ShutdownDrains stops an app server that holds 5,000 sessions, a
// tab that reads nothing while its buffers are full, a half-sent HTTP
// request and an idle keep-alive connection. None of them may hold the
// drain: the half-sent request is cut at once, every tab is closed with 1012, still showing
// its post's count from before (its own server's removal is no news to a
// tab that is about to register again), Redis holds no session of the
// server afterwards, and the process exits within the 9s budget.
func TestE2E_ShutdownDrains(t *testing.T) {
	t.Parallel()
	const tabs, posts = 5000, 50
	reserveFiles(t, tabs)
	prefix := redistest.Prefix()
	app := startProc(t, "drained", presenceBin,
		"PRESENCE_ADDR=127.0.0.1:0",
		"PRESENCE_REDIS_URL="+redisSrv.URL(),
		"PRESENCE_KEY_PREFIX="+prefix,
		"PRESENCE_SESSION_TTL=60s", // no expiry during the test: only the drain removes sessions
		"PRESENCE_HANDOFF_GRACE=0", // removed at once, not kept for their tabs to resume
		"PRESENCE_COALESCE=100ms",
		"PRESENCE_MAX_CONNS=0",
		"PRESENCE_MAX_CONNS_PER_IP=0",
		"PRESENCE_PUBLISH_KEYS=shutdown-test-publish-key",
	)
	addr := app.addr(t)
	rdb := redisSrv.Client(t)
	ctx := context.Background()

	all := openTabs(t, tabs, func(i int) (string, string) { return addr, fmt.Sprintf("p%d", i%posts) })
	waitUntil(t, 30*time.Second, "5,000 sessions in Redis", func() bool {
		return rdb.HLen(ctx, redisstore.NewKeys(prefix).Viewers("")).Val() == tabs
	})

	// The slow tab views a post of its own and reads nothing, while events
	// fill its socket buffers and its writer blocks.
	slow, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	if err := slow.Write(ctx, websocket.MessageText, []byte(`{"type":"view","post":"slow"}`)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the slow tab's session", func() bool {
		return rdb.SCard(ctx, redisstore.NewKeys(prefix).PostViewers("slow")).Val() == 1
	})
	big := `{"name":"big","data":"` + strings.Repeat("x", 15<<10) + `"}`
	for range 100 {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/posts/slow/events", strings.NewReader(big))
		req.Header.Set("Authorization", "Bearer shutdown-test-publish-key")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %d", resp.StatusCode)
		}
	}

	// A request that never finishes its headers, and an idle keep-alive.
	half, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	if _, err := half.Write([]byte("GET /readyz HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	idle := &http.Client{Transport: &http.Transport{}}
	defer idle.CloseIdleConnections()
	if resp, err := idle.Get("http://" + addr + "/healthz"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	if err := app.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// The server closes the half-sent request's connection; when is what
	// tells the drain apart from http.Server.Shutdown's, which waits until
	// it is 5s old.
	halfClosed := make(chan time.Time, 1)
	go func() {
		_, _ = io.Copy(io.Discard, half)
		halfClosed <- time.Now()
	}()
	for _, tb := range all {
		select {
		case <-tb.done:
		case <-time.After(time.Until(stopped.Add(15 * time.Second))):
			t.Fatalf("a tab of %s is still open 15s after SIGTERM", tb.post)
		}
	}
	var latest time.Time
	wrong := 0
	for _, tb := range all {
		tb.mu.Lock()
		if tb.closed.After(latest) {
			latest = tb.closed
		}
		if tb.last < 1 || tb.status != websocket.StatusServiceRestart {
			if wrong++; wrong <= 3 {
				t.Errorf("tab of %s: last count %d, closed with %v; want its count from before the drain, then 1012", tb.post, tb.last, tb.status)
			}
		}
		tb.mu.Unlock()
	}
	if wrong > 0 {
		t.Errorf("%d of %d tabs were not closed with 1012 showing their count from before", wrong, tabs)
	}
	select {
	case at := <-halfClosed:
		d := at.Sub(stopped)
		t.Logf("half-sent request's connection closed %s after SIGTERM", d.Round(time.Millisecond))
		if d > 2500*time.Millisecond {
			t.Errorf("the half-sent request's connection was closed %s after SIGTERM, want at once (well within 2.5s)", d.Round(time.Millisecond))
		}
	case <-time.After(time.Until(stopped.Add(10 * time.Second))):
		t.Error("the half-sent request's connection still open 10s after SIGTERM")
	}
	code := app.exited(t, 12*time.Second)
	took := time.Since(stopped)
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if took > 10*time.Second {
		t.Errorf("exited %s after SIGTERM, want within the 9s budget", took.Round(time.Millisecond))
	}
	if n := rdb.HLen(ctx, redisstore.NewKeys(prefix).Viewers("")).Val(); n != 0 {
		t.Errorf("%d sessions left in Redis after the drain, want 0", n)
	}
	t.Logf("tabs closed within %s, process exited %s after SIGTERM", latest.Sub(stopped).Round(time.Millisecond), took.Round(time.Millisecond))
}

// waitUntil polls cond, which reads state the test cannot await, until it
// holds or limit passes.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("no %s within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

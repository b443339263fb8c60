package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/presence/presence/internal/proctest"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// These tests run the app server against a real redis-server and drive it
// over real sockets as browsers and PHP code would. Most run it in the
// test's own process through run, the function main calls, so the race
// detector covers the wiring (runApp); those about signals, crashes, exit
// codes and a process's own output run the binaries, built once per test
// run without -race (startProc).

var (
	// redisSrv is shared by every test; each test uses its own key prefix.
	redisSrv *redistest.Server
	// presenceBin and gcBin are the binaries under test.
	presenceBin, gcBin string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "presence-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := proctest.Build(dir, nil, ".", "../gc"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	presenceBin, gcBin = filepath.Join(dir, "presence"), filepath.Join(dir, "gc")
	s, stop, err := redistest.StartMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer stop()
	redisSrv = s
	return m.Run()
}

// proc is an app server or gc, binary or in-process, with the waits these
// tests share.
type proc struct{ *proctest.Proc }

// runApp runs an app server in the test's own process, through the same
// run function main calls, so that the race detector covers the wiring; it
// is stopped (as by SIGTERM) and waited for when the test ends. Tests of
// signals, crashes, exit codes and a process's own stderr start the binary
// with startProc instead.
func runApp(t *testing.T, name string, env ...string) *proc {
	t.Helper()
	return &proc{proctest.Run(t, name, func(ctx context.Context, out io.Writer) error {
		return run(ctx, nil, env, out) // later entries win over earlier ones
	})}
}

// startProc starts bin, killed and reaped when the test ends.
func startProc(t *testing.T, name, bin string, env ...string) *proc {
	t.Helper()
	return &proc{proctest.Start(t, name, bin, env...)}
}

// addr waits for the process's first line, which gives the address it
// listens on and its URL, and returns the address.
func (p *proc) addr(t *testing.T) string {
	t.Helper()
	line := p.WaitLog(t, 10*time.Second, `{"url":...}`, func(l map[string]any) bool { return l["url"] != nil })
	addr, _ := line["addr"].(string)
	if addr == "" {
		t.Fatalf("%s: first line without addr: %v", p.Name, line)
	}
	return addr
}

// startLine waits for the line that says how the app server starts: its
// store, what it accepts as a post, and the effective settings.
func (p *proc) startLine(t *testing.T) string {
	t.Helper()
	const prefix = "starting presence "
	line := p.WaitLog(t, 10*time.Second, prefix+"...", func(l map[string]any) bool {
		msg, _ := l["msg"].(string)
		return strings.HasPrefix(msg, prefix)
	})
	b, _ := json.Marshal(line)
	return string(b)
}

// adminAddr waits for the process's admin listener line and returns its
// address.
func (p *proc) adminAddr(t *testing.T) string {
	t.Helper()
	line := p.WaitLog(t, 10*time.Second, "the admin listener line", func(l map[string]any) bool { return l["admin_addr"] != nil })
	return line["admin_addr"].(string)
}

// exited waits for the process to exit and returns its exit code.
func (p *proc) exited(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.Done():
		if p.Cmd == nil {
			if p.Err() != nil {
				return 1 // what main exits with when run fails
			}
			return 0
		}
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		t.Fatalf("%s still running %s later", p.Name, limit)
		return 0
	}
}

// startApp starts an app server on prefix and returns it with its address.
func startApp(t *testing.T, name, prefix string, env ...string) (*proc, string) {
	t.Helper()
	p := startProc(t, name, presenceBin, append([]string{
		"PRESENCE_ADDR=127.0.0.1:0",
		"PRESENCE_REDIS_URL=" + redisSrv.URL(),
		"PRESENCE_KEY_PREFIX=" + prefix,
		"PRESENCE_SESSION_TTL=2s",
		"PRESENCE_COALESCE=100ms",
	}, env...)...)
	return p, p.addr(t)
}

// frame is any server frame.
type frame struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	TTL     int64  `json:"ttl"`
	Resume  string `json:"resume"`
	Post    string `json:"post"`
	Viewers int64  `json:"viewers"`
	Views   int64  `json:"views"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Store   string `json:"store"`
}

// client is one browser tab.
type client struct {
	name  string
	conn  *websocket.Conn
	hello frame
}

// dial connects a client and checks that hello comes first.
func dial(t *testing.T, name, addr string) *client {
	t.Helper()
	return dialResume(t, name, addr, "")
}

// dialResume opens a tab that presents a resume token ("" for none).
func dialResume(t *testing.T, name, addr, resume string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := "ws://" + addr + "/v1/ws"
	if resume != "" {
		u += "?resume=" + url.QueryEscape(resume)
	}
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, addr, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &client{name: name, conn: conn}
	hello := c.read(t, 5*time.Second)
	if hello.Type != "hello" || hello.Session == "" || hello.TTL <= 0 || hello.Resume == "" {
		t.Fatalf("%s: first frame %+v, want hello with a session, a ttl and a resume token", name, hello)
	}
	c.hello = hello
	return c
}

func (c *client) send(t *testing.T, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wsjson.Write(ctx, c.conn, v); err != nil {
		t.Fatalf("%s: write %v: %v", c.name, v, err)
	}
}

func (c *client) read(t *testing.T, limit time.Duration) frame {
	t.Helper()
	f, err := c.tryRead(limit)
	if err != nil {
		t.Fatalf("%s: read: %v", c.name, err)
	}
	return f
}

// tryRead reads one frame. A timeout closes the connection (coder/websocket
// closes on a cancelled read), which only matters to a failing test.
func (c *client) tryRead(limit time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, fmt.Errorf("frame %q is not JSON: %w", b, err)
	}
	return f, nil
}

// waitFor skips frames until one matches ok, within limit.
func (c *client) waitFor(t *testing.T, limit time.Duration, what string, ok func(frame) bool) frame {
	t.Helper()
	end := time.Now().Add(limit)
	var seen []frame
	for {
		f, err := c.tryRead(time.Until(end))
		if err != nil {
			t.Fatalf("%s: no frame with %s within %s (%v); saw %+v", c.name, what, limit, err, seen)
		}
		if ok(f) {
			return f
		}
		seen = append(seen, f)
	}
}

func viewers(post string, n int64) (string, func(frame) bool) {
	return fmt.Sprintf("count of %s with viewers %d", post, n), func(f frame) bool {
		return f.Type == "count" && f.Post == post && f.Viewers == n
	}
}

func (c *client) waitViewers(t *testing.T, limit time.Duration, post string, n int64) frame {
	t.Helper()
	what, ok := viewers(post, n)
	return c.waitFor(t, limit, what, ok)
}

// get GETs url and returns the status and body.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

// getJSON GETs url and decodes the body into v, returning the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	status, body := get(t, url)
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: decode body %q: %v", url, body, err)
		}
	}
	return status
}

// metric reads one unlabelled sample from a Prometheus text endpoint.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	_, body := get(t, url)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: bad sample %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("%s has no sample %s", url, name)
	return 0
}

// TestE2E_CrashedServerIsPruned: an app server dies without a word (kill
// -9); gc prunes its sessions once their TTL passes and viewers on another
// app server see the count drop.
func TestE2E_CrashedServerIsPruned(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix()
	app1, addr1 := startApp(t, "app1", prefix)
	_, addr2 := startApp(t, "app2", prefix)
	gcp := startProc(t, "gc", gcBin,
		"PRESENCE_GC_ADDR=127.0.0.1:0",
		"PRESENCE_REDIS_URL="+redisSrv.URL(),
		"PRESENCE_KEY_PREFIX="+prefix,
		"PRESENCE_SESSION_TTL=2s",
		"PRESENCE_GC_POLL=200ms",
	)
	gcAddr := gcp.addr(t)
	if code, out := runHealthcheck(t, gcBin, nil, "PRESENCE_GC_ADDR="+gcAddr, "PRESENCE_REDIS_URL="+redisSrv.URL()); code != 0 || !strings.Contains(out, "gc healthcheck: http://"+gcAddr+"/readyz answered 200") {
		t.Errorf("gc healthcheck = %d %q, want 0", code, out)
	}

	a := dial(t, "A", addr1)
	a.send(t, map[string]any{"type": "view", "post": "e2e"})
	a.waitViewers(t, 5*time.Second, "e2e", 1)

	w := dial(t, "W", addr2)
	w.send(t, map[string]any{"type": "watch", "posts": []string{"e2e"}})
	w.waitViewers(t, 5*time.Second, "e2e", 1)

	b := dial(t, "B", addr1)
	b.send(t, map[string]any{"type": "view", "post": "e2e"})
	if f := b.waitViewers(t, 5*time.Second, "e2e", 2); f.Views != 2 {
		t.Errorf("B's count %+v, want views 2", f)
	}
	w.waitViewers(t, 5*time.Second, "e2e", 2)

	// TTL 2s + gc poll 200ms + coalesce 100ms, plus margin.
	if err := app1.Cmd.Process.Kill(); err != nil {
		t.Fatalf("kill app1: %v", err)
	}
	killed := time.Now()
	<-app1.Done()
	f := w.waitViewers(t, 5*time.Second, "e2e", 0)
	t.Logf("W saw viewers 0 %s after app1 was killed", time.Since(killed).Round(time.Millisecond))
	if f.Views != 2 {
		t.Errorf("W's count %+v, want views 2", f)
	}

	var got struct {
		Post    string `json:"post"`
		Viewers int64  `json:"viewers"`
		Views   int64  `json:"views"`
	}
	if st := getJSON(t, "http://"+addr2+"/v1/posts/e2e", &got); st != http.StatusOK {
		t.Fatalf("GET /v1/posts/e2e status %d, want 200", st)
	}
	if got.Post != "e2e" || got.Viewers != 0 || got.Views != 2 {
		t.Errorf("GET /v1/posts/e2e = %+v, want post e2e, viewers 0, views 2", got)
	}
	// gc, not anything else, removed both sessions.
	if n := metric(t, "http://"+gcAddr+"/metrics", "presence_prunes_total"); n != 2 {
		t.Errorf("gc presence_prunes_total=%v, want 2", n)
	}
}

// TestE2E_SigtermWithoutGraceRemovesSessions: with PRESENCE_HANDOFF_GRACE=0
// a graceful stop closes browsers with 1012 and removes their sessions at
// once; no gc runs, so only the shutdown can bring the count down.
func TestE2E_SigtermWithoutGraceRemovesSessions(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix()
	app1, addr1 := startApp(t, "app1", prefix, "PRESENCE_HANDOFF_GRACE=0")
	_, addr2 := startApp(t, "app2", prefix)

	v, w := viewedAndWatched(t, "term", addr1, addr2)

	stopped := sigterm(t, app1, v)
	if code := app1.exited(t, 10*time.Second); code != 0 {
		t.Errorf("app1 exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("app1 exited %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	// TTL 2s with no gc: if the session stayed in Redis (neither the batch
	// leave at shutdown nor the connection's own leave ran), this never comes.
	w.waitViewers(t, 5*time.Second, "term", 0)
	app1.WaitLog(t, time.Second, `{"msg":"stopped"}`, func(l map[string]any) bool { return l["msg"] == "stopped" })
}

// sigterm stops app and reads v until the server closes it, which must be
// with 1012 service restart.
func sigterm(t *testing.T, app *proc, v *client) time.Time {
	t.Helper()
	if err := app.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", app.Name, err)
	}
	stopped := time.Now()
	var err error
	for err == nil {
		_, err = v.tryRead(10 * time.Second)
	}
	if st := websocket.CloseStatus(err); st != websocket.StatusServiceRestart {
		t.Errorf("%s's connection ended with %v (status %v), want close status 1012 service restart", v.name, err, st)
	}
	return stopped
}

// TestE2E_SigtermHandsSessionsOff: by default a graceful stop keeps the
// sessions, and a tab that reconnects to the other app server with its
// resume token continues its session: the watcher never sees the count
// drop, and the view is not counted again. The stopped server held the
// session for the default 30s grace, far past its 6s TTL: its deadline in
// Redis says so, read rather than waited for.
func TestE2E_SigtermHandsSessionsOff(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix()
	// 6s, not 2s: refreshes come every 2s, so a suite that starves the
	// processes of CPU does not expire the session before the stop.
	app1, addr1 := startApp(t, "app1", prefix, "PRESENCE_SESSION_TTL=6s")
	_, addr2 := startApp(t, "app2", prefix, "PRESENCE_SESSION_TTL=6s")

	v, w := viewedAndWatched(t, "handoff", addr1, addr2)

	sigterm(t, app1, v)
	if code := app1.exited(t, 10*time.Second); code != 0 {
		t.Errorf("app1 exit code %d after SIGTERM, want 0", code)
	}
	rdb := redisSrv.Client(t)
	ctx := context.Background()
	deadline, err := rdb.ZScore(ctx, redisstore.NewKeys(prefix).Deadlines(""), v.hello.Session).Result()
	if err != nil {
		t.Fatalf("the session's deadline after the stop: %v", err)
	}
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Duration(deadline)*time.Millisecond - time.Duration(now.UnixMilli())*time.Millisecond; left < 20*time.Second {
		t.Errorf("the session's deadline is %s away after the stop, want the 30s grace (more than 20s left)", left)
	}
	resumes(t, v, w, addr2, "handoff")
}

// viewedAndWatched opens V, viewing post on addrV, and W, watching it on
// addrW, each once it has the count of 1.
func viewedAndWatched(t *testing.T, post, addrV, addrW string) (v, w *client) {
	t.Helper()
	v = dial(t, "V", addrV)
	v.send(t, map[string]any{"type": "view", "post": post})
	v.waitViewers(t, 5*time.Second, post, 1)
	w = dial(t, "W", addrW)
	w.send(t, map[string]any{"type": "watch", "posts": []string{post}})
	w.waitViewers(t, 5*time.Second, post, 1)
	return v, w
}

// resumes reconnects v to addr with its resume token and views post again:
// the session must be v's, its view not counted a second time, and w,
// watching post, must never have seen the count drop.
func resumes(t *testing.T, v, w *client, addr, post string) {
	t.Helper()
	again := dialResume(t, "V again", addr, v.hello.Resume)
	if again.hello.Session != v.hello.Session {
		t.Fatalf("resumed as session %s, want %s", again.hello.Session, v.hello.Session)
	}
	again.send(t, map[string]any{"type": "view", "post": post})
	got := again.waitFor(t, 5*time.Second, "the count of "+post, func(f frame) bool { return f.Type == "count" && f.Post == post })
	if got.Viewers != 1 || got.Views != 1 {
		t.Errorf("after the resume: %d viewers, %d views; want 1 and 1 (no second view)", got.Viewers, got.Views)
	}
	noDip(t, w, addr, post)
}

// noDip makes one more tab view post and checks that w, watching it, saw
// no count below 1 before the count of 2 that tab brings.
func noDip(t *testing.T, w *client, addr, post string) {
	t.Helper()
	x := dial(t, "X", addr)
	x.send(t, map[string]any{"type": "view", "post": post})
	w.waitFor(t, 5*time.Second, "2 viewers, with no count below 1 before it", func(f frame) bool {
		if f.Type == "count" && f.Post == post && f.Viewers < 1 {
			t.Fatalf("%s saw %s at %d viewers: the session left before it was resumed", w.name, post, f.Viewers)
		}
		return f.Type == "count" && f.Post == post && f.Viewers == 2
	})
}

// TestE2E_ResumeAfterLostConnection: a tab whose TCP connection is cut (no
// close frame) reconnects to the other app server with its resume token and
// continues its session: no leave, no second view.
func TestE2E_ResumeAfterLostConnection(t *testing.T) {
	t.Parallel()
	prefix := redistest.Prefix()
	_, addr1 := startApp(t, "app1", prefix)
	_, addr2 := startApp(t, "app2", prefix)
	v, w := viewedAndWatched(t, "cut", addr1, addr2)

	v.conn.CloseNow() // the socket closes without a close frame, as a lost network does
	resumes(t, v, w, addr2, "cut")

	// A token that is not one gets a fresh session, and no error.
	odd := dialResume(t, "odd", addr1, v.hello.Session+".not-a-signature")
	if odd.hello.Session == v.hello.Session {
		t.Error("a forged token resumed the session")
	}
}

func TestE2E_BadRedisURL(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, presenceBin)
	cmd.Env = append(proctest.Env(), "PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_REDIS_URL=notaurl")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("presence with PRESENCE_REDIS_URL=notaurl: %v, want a non-zero exit; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "PRESENCE_REDIS_URL") {
		t.Errorf("stderr does not name PRESENCE_REDIS_URL:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), `"url"`) {
		t.Errorf("presence started listening with a bad URL:\n%s", stderr.String())
	}
}

func TestE2E_UnreachableRedis(t *testing.T) {
	t.Parallel()
	p := startProc(t, "app", presenceBin,
		"PRESENCE_ADDR=127.0.0.1:0",
		"PRESENCE_ADMIN_ADDR=127.0.0.1:0",
		"PRESENCE_REDIS_URL=redis://127.0.0.1:1/0",
	)
	addr, admin := p.addr(t), p.adminAddr(t)
	p.WaitLog(t, 5*time.Second, "an error mentioning Redis", func(l map[string]any) bool {
		msg, _ := l["msg"].(string)
		return l["level"] == "error" && strings.Contains(msg, "Redis")
	})

	type readiness struct {
		Status string            `json:"status"`
		Failed map[string]string `json:"failed"`
	}
	// The admin listener says what failed; the public one only that
	// something did, never the Redis address or the error text.
	var detailed, public readiness
	if st := getJSON(t, "http://"+admin+"/readyz", &detailed); st != http.StatusServiceUnavailable {
		t.Errorf("admin /readyz status %d, want 503", st)
	}
	if detailed.Status != "unavailable" || !strings.Contains(detailed.Failed["redis"], "127.0.0.1:1") {
		t.Errorf("admin /readyz body %+v, want status unavailable and the failed check", detailed)
	}
	if st := getJSON(t, "http://"+addr+"/readyz", &public); st != http.StatusServiceUnavailable {
		t.Errorf("public /readyz status %d, want 503", st)
	}
	if st, body := get(t, "http://"+addr+"/readyz"); st != http.StatusServiceUnavailable || strings.TrimSpace(string(body)) != `{"status":"unavailable"}` {
		t.Errorf("public /readyz = %d %s, want 503 {\"status\":\"unavailable\"} and nothing else", st, body)
	}
	// Metrics moved to the admin listener with it.
	if st, _ := get(t, "http://"+addr+"/metrics"); st != http.StatusNotFound {
		t.Errorf("public /metrics = %d, want 404 with PRESENCE_ADMIN_ADDR set", st)
	}
	if st, body := get(t, "http://"+admin+"/metrics"); st != http.StatusOK || !strings.Contains(string(body), "presence_connections_open") {
		t.Errorf("admin /metrics = %d, want 200 with presence metrics", st)
	}
	for _, a := range []string{addr, admin} {
		if st := getJSON(t, "http://"+a+"/healthz", nil); st != http.StatusOK {
			t.Errorf("%s/healthz status %d, want 200", a, st)
		}
	}
	// The healthcheck subcommand asks the admin listener: not ready, with
	// the failed check, but alive.
	env := []string{"PRESENCE_ADDR=" + addr, "PRESENCE_ADMIN_ADDR=" + admin}
	if code, out := runHealthcheck(t, presenceBin, nil, env...); code != 1 || !strings.Contains(out, "503") || !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("presence healthcheck with Redis away = %d %q, want 1 and the failed check", code, out)
	}
	if code, out := runHealthcheck(t, presenceBin, []string{"-live"}, env...); code != 0 {
		t.Errorf("presence healthcheck -live with Redis away = %d %q, want 0", code, out)
	}
	// go-redis's own complaints about the refused dials are JSON lines too,
	// so log collectors can parse every line.
	out := strings.TrimSpace(p.Log.String())
	for _, line := range strings.Split(out, "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("stderr line is not JSON: %s", line)
		}
	}
	if !strings.Contains(out, `"logger":"go-redis"`) {
		t.Errorf("no go-redis line routed through the logger in:\n%s", out)
	}
}

package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/proctest"
	"github.com/presence/presence/internal/version"
)

// TestE2E_EmbeddedMode runs the app server as a new user does, with no Redis
// configured: two tabs count each other, the first log line says which mode
// runs, and the server is ready.
func TestE2E_EmbeddedMode(t *testing.T) {
	p := runApp(t, "embedded", "PRESENCE_ADDR=127.0.0.1:0")
	addr := p.addr(t)

	// The first line: version, mode and the URL to open.
	first := p.Log.String()
	first = first[:strings.IndexByte(first, '\n')]
	v := version.Get().Version
	for _, want := range []string{"presence " + v + " in embedded mode: open http://" + addr + "/", `"mode":"embedded"`, `"version":"` + v + `"`} {
		if !strings.Contains(first, want) {
			t.Errorf("first log line %s does not say %q", first, want)
		}
	}
	start := p.startLine(t)
	for _, want := range []string{`"mode":"embedded"`, "not shared", "PRESENCE_REDIS_URL", "any post id is accepted"} {
		if !strings.Contains(start, want) {
			t.Errorf("start-up line %s does not say %q", start, want)
		}
	}

	a := dial(t, "a", addr)
	a.send(t, map[string]any{"type": "view", "post": "13"})
	a.waitViewers(t, 5*time.Second, "13", 1)
	b := dial(t, "b", addr)
	b.send(t, map[string]any{"type": "view", "post": "13"})
	b.waitViewers(t, 5*time.Second, "13", 2)
	a.waitViewers(t, 5*time.Second, "13", 2)
	b.conn.Close(websocket.StatusGoingAway, "") // a tab that closes, not one that is lost
	a.waitViewers(t, 5*time.Second, "13", 1)

	var ready map[string]any
	if status := getJSON(t, "http://"+addr+"/readyz", &ready); status != http.StatusOK {
		t.Errorf("/readyz in embedded mode = %d %v, want 200", status, ready)
	}
	if st, body := get(t, "http://"+addr+"/metrics"); st != http.StatusOK || !strings.Contains(string(body), `presence_build_info{goversion="`+runtime.Version()+`",revision="`+version.Get().Revision+`",version="`+v+`"} 1`) {
		t.Errorf("/metrics = %d without presence_build_info of this build:\n%s", st, body)
	}
}

// TestE2E_SignedPosts runs the app server with PRESENCE_POST_SECRET: the first
// log line says so, made-up posts are refused and a token made the way
// README's PHP makes one is accepted.
func TestE2E_SignedPosts(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	p := runApp(t, "signed", "PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_POST_SECRET="+secret)
	addr := p.addr(t)
	if start := p.startLine(t); !strings.Contains(start, "only posts with a token") || strings.Contains(p.Log.String(), secret) {
		t.Errorf("start-up line %s does not say that posts are signed, or the log shows the secret", start)
	}
	a := dial(t, "a", addr)
	a.send(t, map[string]any{"type": "view", "post": "made-up"})
	if f := a.read(t, 5*time.Second); f.Type != "error" || f.Code != "invalid_token" {
		t.Errorf("view of a made-up post = %+v, want error invalid_token", f)
	}
	tok := presence.NewSigner([]string{secret}).Token("13", time.Now().Add(time.Hour))
	a.send(t, map[string]any{"type": "view", "post": "13", "token": tok})
	a.waitViewers(t, 5*time.Second, "13", 1)
}

// TestUnknownVariablesAreReported: a misspelt setting, which would
// otherwise leave publishing off without a word, is named at start-up
// with the setting it most likely meant.
func TestUnknownVariablesAreReported(t *testing.T) {
	p := runApp(t, "app", "PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_PUBLISH_KEY=0123456789abcdef-key")
	p.addr(t)
	p.WaitLog(t, 5*time.Second, "a warning that names PRESENCE_PUBLISH_KEYS", func(l map[string]any) bool {
		msg, _ := l["msg"].(string)
		return l["level"] == "warn" && msg == "PRESENCE_PUBLISH_KEY is not a setting and is ignored; did you mean PRESENCE_PUBLISH_KEYS?"
	})
}

// TestFirstLineOnATerminal starts the binary as a person does, on a
// terminal (script(1) gives it one): the first line is for people, with
// the URL to open, and the lines are not JSON.
func TestFirstLineOnATerminal(t *testing.T) {
	t.Parallel()
	script, err := exec.LookPath("script")
	if err != nil {
		t.Fatal("script(1), from util-linux, is needed to give the binary a terminal:", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// -e: script exits with the command's status; -f: flush as it goes.
	cmd := exec.CommandContext(ctx, script, "-qefc", presenceBin, "/dev/null")
	cmd.Env = append(proctest.Env(), "PRESENCE_ADDR=127.0.0.1:0")
	logs := proctest.NewLog()
	cmd.Stdout = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var first string
	for {
		// The channel first, then the output: a line that arrives between
		// the two still wakes the wait.
		_, more := logs.Find(func(map[string]any) bool { return false })
		if out := logs.String(); strings.Contains(out, "\n") {
			first = strings.TrimSuffix(out[:strings.IndexByte(out, '\n')], "\r")
			break
		}
		select {
		case <-more:
		case <-ctx.Done():
			t.Fatalf("no line within 30s; output:\n%s", logs.String())
		}
	}
	if strings.HasPrefix(first, "{") || !strings.Contains(first, "INFO") ||
		!regexp.MustCompile(`presence \S+ in embedded mode: open http://127\.0\.0\.1:\d+/`).MatchString(first) {
		t.Errorf("first line on a terminal = %q, want a line for people with the URL to open", first)
	}
}

// TestVersionFlag: -version prints the build on standard output and exits
// 0; a version stamped at link time, as the Dockerfile does, is the one it
// prints, and so is the one git gives go build.
func TestVersionFlag(t *testing.T) {
	t.Parallel()
	for _, bin := range []string{presenceBin, gcBin} {
		out, err := exec.Command(bin, "-version").Output()
		name := filepath.Base(bin)
		if err != nil || !strings.HasPrefix(string(out), name+" ") || !strings.Contains(string(out), runtime.Version()) {
			t.Errorf("%s -version = %q, %v; want %q and the Go version", name, out, err, name+" <version>")
		}
	}
	dir := t.TempDir()
	for _, b := range []struct {
		flags []string
		want  *regexp.Regexp
	}{
		{[]string{"-ldflags", "-X github.com/presence/presence/internal/version.stamped=v9.9.9"}, regexp.MustCompile(`^presence v9\.9\.9 \(`)},
		// From this checkout: a pseudo-version and the commit.
		{[]string{"-buildvcs=true"}, regexp.MustCompile(`^presence v\d+\.\d+\.\d+-\S+ \([0-9a-f]{12}(-dirty)?, go`)},
	} {
		bin := filepath.Join(dir, "presence")
		if err := proctest.Build(dir, b.flags, "."); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(bin, "-version").Output(); err != nil || !b.want.Match(out) {
			t.Errorf("built with %v, -version = %q, %v; want %s", b.flags, out, err, b.want)
		}
	}
}

// TestHealthcheck: the subcommand that Docker runs inside an image with no
// shell finds the server from the same variables, and exits 0 only when
// it answers 200.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	p := startProc(t, "app", presenceBin, "PRESENCE_ADDR=127.0.0.1:0")
	addr := p.addr(t)
	if code, out := runHealthcheck(t, presenceBin, nil, "PRESENCE_ADDR="+addr); code != 0 || !strings.Contains(out, "http://"+addr+"/readyz answered 200") {
		t.Errorf("presence healthcheck of a ready server = %d %q, want 0", code, out)
	}
	// A port where nothing listens: 1, and words that say why.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if code, out := runHealthcheck(t, presenceBin, nil, "PRESENCE_ADDR="+closed); code != 1 || !strings.Contains(out, "connection refused") {
		t.Errorf("presence healthcheck with no server = %d %q, want 1 and the refusal", code, out)
	}
}

// runHealthcheck runs "bin healthcheck args..." with env and returns its
// exit status and output.
func runHealthcheck(t *testing.T, bin string, args []string, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"healthcheck"}, args...)...)
	cmd.Env = append(proctest.Env(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%s healthcheck: %v", bin, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

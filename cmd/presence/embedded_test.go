package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/presence/presence/internal/presence"
)

// TestE2E_EmbeddedMode runs the app server as a new user does, with no Redis
// configured: two tabs count each other, the first log line says which mode
// runs, and the server is ready.
func TestE2E_EmbeddedMode(t *testing.T) {
	p := runApp(t, "embedded", "PRESENCE_ADDR=127.0.0.1:0")
	addr := p.addr(t)

	first := p.logs.String()
	first = first[:strings.IndexByte(first, '\n')]
	for _, want := range []string{`"mode":"embedded"`, "not shared", "PRESENCE_REDIS_URL", "any post id is accepted"} {
		if !strings.Contains(first, want) {
			t.Errorf("first log line %s does not say %q", first, want)
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
}

// TestE2E_SignedPosts runs the app server with PRESENCE_POST_SECRET: the first
// log line says so, made-up posts are refused and a token made the way
// README's PHP makes one is accepted.
func TestE2E_SignedPosts(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	p := runApp(t, "signed", "PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_POST_SECRET="+secret)
	addr := p.addr(t)
	first := p.logs.String()
	if first = first[:strings.IndexByte(first, '\n')]; !strings.Contains(first, "only posts with a token") || strings.Contains(first, secret) {
		t.Errorf("first log line %s does not say that posts are signed, or shows the secret", first)
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
	p.waitLog(t, 5*time.Second, "a warning that names PRESENCE_PUBLISH_KEYS", func(l map[string]any) bool {
		msg, _ := l["msg"].(string)
		return l["level"] == "warn" && msg == "PRESENCE_PUBLISH_KEY is not a setting and is ignored; did you mean PRESENCE_PUBLISH_KEYS?"
	})
}

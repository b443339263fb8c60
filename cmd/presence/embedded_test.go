package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestE2E_EmbeddedMode runs the binary as a new user does, with no Redis
// configured: two tabs count each other, the first log line says which mode
// runs, and the server is ready.
func TestE2E_EmbeddedMode(t *testing.T) {
	p := startProc(t, "embedded", presenceBin, "PRESENCE_ADDR=127.0.0.1:0")
	addr := p.addr(t)

	first := p.logs.String()
	first = first[:strings.IndexByte(first, '\n')]
	for _, want := range []string{`"mode":"embedded"`, "not shared", "PRESENCE_REDIS_URL"} {
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
	b.conn.CloseNow()
	a.waitViewers(t, 5*time.Second, "13", 1)

	var ready map[string]any
	if status := getJSON(t, "http://"+addr+"/readyz", &ready); status != http.StatusOK {
		t.Errorf("/readyz in embedded mode = %d %v, want 200", status, ready)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// TestCheck runs "gc check" as an operator would, against a real Redis:
// its exit status, its JSON and its one line, clean, with drift, repaired,
// and with Redis away.
func TestCheck(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix()
	keys := redisstore.NewKeys(prefix)
	env := map[string]string{"PRESENCE_REDIS_URL": srv.URL(), "PRESENCE_KEY_PREFIX": prefix}
	run := func(args ...string) (int, map[string]any, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := check(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
		var report map[string]any
		if out.Len() > 0 {
			if err := json.Unmarshal(out.Bytes(), &report); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, out.String())
			}
		}
		return code, report, errOut.String()
	}

	ctx := context.Background()
	rdb := srv.Client(t)
	store := redisstore.New(rdb, redisstore.Config{Prefix: prefix, TTL: time.Minute}, zaptest.NewLogger(t))
	for _, sid := range []presence.SessionID{"a", "b", "c"} {
		if _, err := store.View(ctx, presence.Session{ID: sid, Post: "13"}, "", true); err != nil {
			t.Fatal(err)
		}
	}
	code, report, line := run()
	if code != 0 || report["sessions"] != float64(3) || !strings.HasPrefix(line, "gc check: clean; 3 sessions") {
		t.Fatalf("clean store: exit %d, report %v, line %q; want 0, 3 sessions, clean", code, report, line)
	}

	// A session whose key is gone long past its deadline: a ghost viewer.
	rdb.Del(ctx, keys.Session("", "a"))
	rdb.ZAdd(ctx, keys.Deadlines(""), redis.Z{Score: float64(time.Now().Add(-time.Minute).UnixMilli()), Member: "a"})
	code, report, line = run()
	if code != 1 || !strings.Contains(line, "drift: 1 dead") {
		t.Fatalf("ghost viewer: exit %d, line %q; want 1 and 1 dead", code, line)
	}
	if kinds, _ := report["by_kind"].(map[string]any); kinds["dead"] != float64(1) {
		t.Errorf("by_kind = %v, want dead: 1", report["by_kind"])
	}
	code, report, line = run("-repair")
	if code != 0 || report["repaired"] != float64(1) || !strings.Contains(line, "after repairing 1 sessions") {
		t.Fatalf("-repair: exit %d, report %v, line %q; want 0 after repairing 1", code, report, line)
	}
	if n := rdb.SCard(ctx, keys.PostViewers("13")).Val(); n != 2 {
		t.Errorf("SCARD after -repair = %d, want 2", n)
	}

	// A live session that lost its viewers entry: its deadline and set
	// member are orphans that the prune script cannot mend (the key is
	// alive; its app server's refresh registers it again). -repair must
	// say so and stop, not go round.
	rdb.HDel(ctx, keys.Viewers(""), "b")
	code, report, line = run("-repair")
	if code != 1 || report["repaired"] != nil || !strings.Contains(line, "1 orphan_deadline, 1 orphan_member") {
		t.Fatalf("-repair of what gc cannot mend: exit %d, report %v, line %q; want 1 and both orphans left", code, report, line)
	}

	if code, _, _ := run("-nope"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	srv.Kill()
	if code, _, line := run(); code != 2 || !strings.Contains(line, "could not check") {
		t.Errorf("Redis away: exit %d, line %q; want 2 and could not check", code, line)
	}
}

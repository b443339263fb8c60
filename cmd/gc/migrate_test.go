package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// TestMigrate moves the views totals of a one-node deployment into a
// cluster, as an operator switching to Redis Cluster would: totals add to
// what the cluster counted since the switch, and a second run moves only
// what the old node counted meanwhile.
func TestMigrate(t *testing.T) {
	old := redistest.Start(t)
	c := redistest.StartCluster(t, 3, false)
	prefix := redistest.Prefix()
	ctx := context.Background()
	env := map[string]string{"PRESENCE_REDIS_CLUSTER": strings.Join(c.Addrs(), ","), "PRESENCE_KEY_PREFIX": prefix}
	run := func(args ...string) (int, string) {
		t.Helper()
		var errOut bytes.Buffer
		code := migrate(ctx, args, func(k string) string { return env[k] }, &errOut)
		return code, errOut.String()
	}

	// The old deployment counted views of 30 posts, one view per session.
	src := old.Client(t)
	oldStore := redisstore.New(src, redisstore.Config{Prefix: prefix, TTL: time.Minute}, zaptest.NewLogger(t))
	for i := range 90 {
		s := presence.Session{ID: presence.SessionID(fmt.Sprint("s", i)), Post: presence.PostID(fmt.Sprint("p", i%30))}
		if _, err := oldStore.View(ctx, s, "", true); err != nil {
			t.Fatal(err)
		}
	}
	// The cluster has counted a view of p0 since the switch.
	rdb, err := redisstore.Connect(redisstore.Connection{Cluster: c.Addrs()}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	store := redisstore.New(rdb, redisstore.Config{Prefix: prefix, TTL: time.Minute}, zaptest.NewLogger(t))
	if _, err := store.View(ctx, presence.Session{ID: "new", Post: "p0"}, "", true); err != nil {
		t.Fatal(err)
	}

	code, line := run("-from", old.URL())
	if code != 0 || !strings.Contains(line, "moved 90 views of 30 posts") {
		t.Fatalf("gc migrate: exit %d, %q; want 0 and 90 views of 30 posts", code, line)
	}
	posts := make([]presence.PostID, 30)
	for i := range posts {
		posts[i] = presence.PostID(fmt.Sprint("p", i))
	}
	counts, err := store.Counts(ctx, posts)
	if err != nil {
		t.Fatal(err)
	}
	for _, cnt := range counts {
		want := int64(3)
		if cnt.Post == "p0" {
			want = 4
		}
		if cnt.Views != want {
			t.Errorf("post %s: %d views after the move, want %d", cnt.Post, cnt.Views, want)
		}
	}
	if n := len(src.Keys(ctx, redisstore.NewKeys(prefix).Views("*")).Val()); n != 0 {
		t.Errorf("%d views counters left on the old node, want 0", n)
	}

	// An old app server still running counts one more view there.
	if _, err := oldStore.View(ctx, presence.Session{ID: "late", Post: "p1"}, "", true); err != nil {
		t.Fatal(err)
	}
	if code, line := run("-from", old.URL()); code != 0 || !strings.Contains(line, "moved 1 views of 1 posts") {
		t.Fatalf("second gc migrate: exit %d, %q; want the 1 view counted since", code, line)
	}
	if cnt, _ := store.Counts(ctx, []presence.PostID{"p1"}); len(cnt) != 1 || cnt[0].Views != 4 {
		t.Errorf("p1 after the second run: %+v, want 4 views", cnt)
	}

	// A target of one node has the source's layout: nothing to move.
	env = map[string]string{"PRESENCE_REDIS_URL": old.URL(), "PRESENCE_KEY_PREFIX": prefix}
	if code, line := run("-from", old.URL()); code != 1 || !strings.Contains(line, "nothing to move") {
		t.Errorf("one-node target: exit %d, %q; want 1 and nothing to move", code, line)
	}
	if code, _ := run(); code != 2 {
		t.Errorf("no -from: exit %d, want 2", code)
	}
	if code, line := run("-from", "redis://[::1"); code != 2 || !strings.Contains(line, "-from") {
		t.Errorf("malformed -from: exit %d, %q; want 2 naming -from", code, line)
	}

	// A counter on the source that is not a number is named, and nothing
	// is added for it.
	env = map[string]string{"PRESENCE_REDIS_CLUSTER": strings.Join(c.Addrs(), ","), "PRESENCE_KEY_PREFIX": prefix}
	src.Set(ctx, redisstore.NewKeys(prefix).Views("bad"), "x", 0)
	if code, line := run("-from", old.URL()); code != 1 || !strings.Contains(line, "views:bad") {
		t.Errorf("a counter that is not a number: exit %d, %q; want 1 naming it", code, line)
	}
	if cnt, _ := store.Counts(ctx, []presence.PostID{"bad"}); len(cnt) != 1 || cnt[0].Views != 0 {
		t.Errorf("post bad after the refused move: %+v, want 0 views", cnt)
	}
}

package httpapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/presence/presence/internal/redistest"
)

// These tests take Redis away from under running app servers in the ways a
// real deployment loses it, each on a redis-server of its own.

// restCount reads post's viewers through a's REST API.
func restCount(t *testing.T, a *app, post string) int64 {
	t.Helper()
	status, _, body := get(t, a.URL+"/v1/posts/"+post, nil)
	if status != 200 {
		t.Fatalf("GET count of %s: %d %v", post, status, body)
	}
	return int64(body["viewers"].(float64))
}

// A Redis restored from an older snapshot comes back with a seq below the
// one app servers have seen. Counts numbered from it must still reach
// watchers, not be dropped as older than what they show.
func TestFaults_OlderSnapshotDoesNotFreezeCounts(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix()
	ttl := time.Minute // no refresh runs during the test: only the restore changes Redis
	a := newApp(t, appOpts{rdb: srv.Client(t), prefix: prefix, ttl: ttl})
	b := newApp(t, appOpts{rdb: srv.Client(t), prefix: prefix, ttl: ttl})
	w := watcher(t, b, "p", 0)
	viewer(t, a, "p", 1)
	w.waitCount("p", 1)
	snapshot := srv.Snapshot(t)
	// Three more viewers after the snapshot: seq moves on.
	for n := 2; n <= 4; n++ {
		viewer(t, a, "p", n)
	}
	w.waitCount("p", 4)

	srv.RestartFrom(t, snapshot)
	// Redis now holds the snapshot's one viewer. The next change is one
	// more viewer: 2, and the watcher on the other app server must see it.
	c := dial(t, a, nil)
	c.send(`{"type":"view","post":"p"}`)
	c.waitCount("p", 2)
	changed := time.Now()
	w.waitCount("p", 2)
	d := time.Since(changed)
	if d > time.Second {
		t.Errorf("the watcher saw the change %s after it was made, want within 1s", d)
	}
	t.Logf("the watcher on the other app server saw the change %s after it was made", d)
	if n := restCount(t, b, "p"); n != 2 {
		t.Errorf("REST viewers = %d, want 2", n)
	}
}

// Redis takes subscriptions while it loads its data but answers scripts
// with LOADING; the count re-read after the resubscription must be tried
// again until it works.
func TestFaults_CountsRightAfterRedisLoads(t *testing.T) {
	// Loading answers other clients every 1 KiB of the dump rather than
	// every 2 MiB, so a small dump shows the LOADING state.
	srv := redistest.Start(t, "--loading-process-events-interval-bytes", "1024")
	rdb := srv.Client(t)
	ctx := context.Background()
	// Filler keys make the load last: with a delay of 50µs a key, about 2s.
	if err := rdb.Eval(ctx, `for i = 1, 20000 do redis.call('SET', 'filler:' .. i, i) end return 1`, nil).Err(); err != nil {
		t.Fatal(err)
	}
	prefix := redistest.Prefix()
	ttl := time.Minute
	a := newApp(t, appOpts{rdb: srv.Client(t), prefix: prefix, ttl: ttl})
	b := newApp(t, appOpts{rdb: srv.Client(t), prefix: prefix, ttl: ttl})
	w := watcher(t, b, "p", 0)
	viewer(t, a, "p", 1)
	viewer(t, a, "p", 2)
	w.waitCount("p", 2)
	snapshot := srv.Snapshot(t)
	viewer(t, a, "p", 3)
	w.waitCount("p", 3)

	srv.RestartFrom(t, snapshot, "--key-load-delay", "50")
	if err := rdb.Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "LOADING") {
		t.Fatalf("PING right after the restart = %v, want LOADING (the test needs a load that lasts)", err)
	}
	// The load's length depends on the machine's load: wait for its end.
	for deadline := time.Now().Add(30 * time.Second); rdb.Ping(ctx).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("Redis still loading 30s after the restart")
		}
		time.Sleep(20 * time.Millisecond) // polling a process we cannot await
	}
	// Nothing changes after the restart: only a re-read that is retried
	// once Redis has loaded brings the watcher to the snapshot's 2.
	w.waitFor("count p=2 after the load", func(m map[string]any) bool {
		return m["type"] == "count" && m["post"] == "p" && m["viewers"] == float64(2)
	})
	if n := restCount(t, b, "p"); n != 2 {
		t.Errorf("REST viewers = %d, want 2", n)
	}
}

// While Redis is away, every client is told that counts are paused, a
// client that connects meanwhile too; when Redis is back they are told
// counts are live, and the counts are right again without anyone acting.
func TestFaults_OutageIsVisible(t *testing.T) {
	srv := redistest.Start(t)
	a := newApp(t, appOpts{rdb: srv.Client(t), ttl: 3 * time.Second, check: 100 * time.Millisecond})
	viewer(t, a, "p", 1)
	w := watcher(t, a, "p", 1)
	isStatus := func(store string) func(map[string]any) bool {
		return func(m map[string]any) bool { return m["type"] == "status" && m["store"] == store }
	}

	srv.Kill()
	w.waitFor("status down", isStatus("down"))
	late := dial(t, a, nil) // hello, then at once the news
	if m := late.next(); !isStatus("down")(m) {
		t.Errorf("first frame after hello while Redis is away = %v, want status down", m)
	}

	// Back without data: the refresh (every TTL/3) registers the viewer
	// again, which publishes its count.
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	w.waitFor("status up", isStatus("up"))
	late.waitFor("status up", isStatus("up"))
	deadline := time.Now().Add(5 * time.Second)
	for restCount(t, a, "p") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("REST viewers not back at 1 within 5s of Redis's return")
		}
		time.Sleep(50 * time.Millisecond) // the refresh is a timer the test cannot await
	}
	// And watchers hear changes again.
	viewer(t, a, "p", 2)
	w.waitCount("p", 2)
}

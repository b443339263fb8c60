package gc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence/presence/internal/gc"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// srv is the package's shared redis-server; every test uses its own prefix.
// Tests that change server-wide state (CONFIG, CLIENT KILL) or load many
// keys start their own.
var srv *redistest.Server

func TestMain(m *testing.M) { redistest.Main(m, &srv) }

// shortTTL is the shortest TTL redisstore accepts; it keeps dead sessions
// due soon.
const shortTTL = time.Second

// env is one test's view of Redis: a client, a store with its own prefix,
// and the key names the scripts write (spelled here because redisstore keeps
// its key builder unexported).
type env struct {
	rdb    *redis.Client
	store  *redisstore.Store
	prefix string
}

func newEnv(t *testing.T, s *redistest.Server, ttl time.Duration) env {
	t.Helper()
	rdb := s.Client(t)
	prefix := redistest.Prefix()
	store := redisstore.New(rdb, redisstore.Config{Prefix: prefix, TTL: ttl}, zaptest.NewLogger(t))
	return env{rdb: rdb, store: store, prefix: prefix}
}

func (e env) viewersKey() string               { return redisstore.NewKeys(e.prefix).Viewers("") }
func (e env) deadlinesKey() string             { return redisstore.NewKeys(e.prefix).Deadlines("") }
func (e env) postKey(p presence.PostID) string { return redisstore.NewKeys(e.prefix).PostViewers(p) }
func (e env) sessionKey(s presence.SessionID) string {
	return redisstore.NewKeys(e.prefix).Session("", s)
}
func (e env) channel(p presence.PostID) string { return redisstore.NewKeys(e.prefix).Channel(p) }

// view registers a session through the store and returns its deadline as
// Redis recorded it (ms since the epoch by Redis TIME, the machine's clock).
func (e env) view(t *testing.T, sid presence.SessionID, post presence.PostID) time.Time {
	t.Helper()
	ctx := context.Background()
	if _, err := e.store.View(ctx, presence.Session{ID: sid, Post: post}, "", true); err != nil {
		t.Fatalf("View(%s, %s): %v", sid, post, err)
	}
	ms, err := e.rdb.ZScore(ctx, e.deadlinesKey(), string(sid)).Result()
	if err != nil {
		t.Fatalf("ZSCORE deadlines %s: %v", sid, err)
	}
	return time.UnixMilli(int64(ms))
}

// counted reports whether sid is in the viewers hash and in its post's set.
func (e env) counted(t *testing.T, sid presence.SessionID, post presence.PostID) (inHash, inSet bool) {
	t.Helper()
	ctx := context.Background()
	inHash, err := e.rdb.HExists(ctx, e.viewersKey(), string(sid)).Result()
	if err != nil {
		t.Fatal(err)
	}
	inSet, err = e.rdb.SIsMember(ctx, e.postKey(post), string(sid)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return inHash, inSet
}

// wantGone asserts that no trace of the sessions is left: viewers hash,
// post set and deadlines index.
func (e env) wantGone(t *testing.T, post presence.PostID, sids ...presence.SessionID) {
	t.Helper()
	ctx := context.Background()
	for _, sid := range sids {
		if inHash, inSet := e.counted(t, sid, post); inHash || inSet {
			t.Errorf("%s: HEXISTS viewers=%v, SISMEMBER viewers:%s=%v; want both false", sid, inHash, post, inSet)
		}
		if err := e.rdb.ZScore(ctx, e.deadlinesKey(), string(sid)).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("%s: ZSCORE deadlines err=%v, want redis.Nil", sid, err)
		}
	}
	if n, err := e.rdb.SCard(ctx, e.postKey(post)).Result(); err != nil || n != 0 {
		t.Errorf("SCARD viewers:%s=%d (err %v), want 0", post, n, err)
	}
}

// waitExpired waits until Redis has expired the session keys; EXISTS also
// makes Redis expire a due key at once.
func (e env) waitExpired(t *testing.T, sids ...presence.SessionID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, sid := range sids {
		for {
			n, err := e.rdb.Exists(context.Background(), e.sessionKey(sid)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("session:%s still exists after 5s", sid)
			}
			time.Sleep(10 * time.Millisecond) // a TTL must pass: nothing to await
		}
	}
}

// countMsg is a count published on a post channel, with its arrival time.
type countMsg struct {
	Type    string `json:"type"`
	Post    string `json:"post"`
	Viewers int64  `json:"viewers"`
	Views   int64  `json:"views"`
	Seq     int64  `json:"seq"`
	at      time.Time
}

func (c countMsg) String() string {
	return fmt.Sprintf("{post %s viewers %d views %d seq %d at %s}", c.Post, c.Viewers, c.Views, c.Seq, c.at.Format(time.StampMilli))
}

// watch subscribes to the posts' channels and waits for Redis to confirm, so
// nothing published after it returns is missed.
func (e env) watch(t *testing.T, posts ...presence.PostID) <-chan countMsg {
	t.Helper()
	ctx := context.Background()
	chans := make([]string, len(posts))
	for i, p := range posts {
		chans[i] = e.channel(p)
	}
	ps := e.rdb.Subscribe(ctx, chans...)
	for range chans {
		if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
			ps.Close()
			t.Fatalf("subscribe: %v", err)
		}
	}
	out := make(chan countMsg, 1000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m := range ps.Channel() {
			c := countMsg{at: time.Now()}
			if err := json.Unmarshal([]byte(m.Payload), &c); err != nil || c.Type != "count" {
				t.Errorf("channel %s: unexpected message %q (%v)", m.Channel, m.Payload, err)
				continue
			}
			select {
			case out <- c:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		ps.Close()
		wg.Wait()
	})
	return out
}

// waitCount returns the first count from ch that matches ok, failing the
// test if none comes within limit.
func waitCount(t *testing.T, ch <-chan countMsg, limit time.Duration, what string, ok func(countMsg) bool) countMsg {
	t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	var seen []countMsg
	for {
		select {
		case c := <-ch:
			if ok(c) {
				return c
			}
			seen = append(seen, c)
		case <-timer.C:
			t.Fatalf("no count with %s within %s; saw %+v", what, limit, seen)
		}
	}
}

func zeroOn(post presence.PostID) func(countMsg) bool {
	return func(c countMsg) bool { return c.Post == string(post) && c.Viewers == 0 }
}

// start runs c until the test ends and checks that Run returns nil then.
func start(t *testing.T, c *gc.Collector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Collector.Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Collector.Run did not return within 5s of cancel")
		}
	})
}

// counter sums the values of a counter family in a registry; 0 when the
// family has no sample yet.
func counter(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// histogram returns the sample count and sum of a histogram family.
func histogram(t *testing.T, g prometheus.Gatherer, name string) (uint64, float64) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}

func TestCollector_PrunesVanishedSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, srv, shortTTL)
	counts := e.watch(t, "13")
	// The app server views and then vanishes: no refresh, no leave.
	deadline := e.view(t, "s1", "13")
	waitCount(t, counts, 2*time.Second, "viewers 1", func(c countMsg) bool { return c.Viewers == 1 })

	// Started after the view, so its first poll finds the session not yet
	// due and must come back for it at the deadline.
	start(t, gc.New(e.store, gc.Config{Poll: 200 * time.Millisecond}, zaptest.NewLogger(t)))

	got := waitCount(t, counts, 5*time.Second, "viewers 0", zeroOn("13"))
	if got.Views != 1 {
		t.Errorf("views=%d after prune, want 1: a prune does not undo a view", got.Views)
	}
	// Redis expires a key only once its deadline has passed, and prune
	// checks the key, so the count cannot come early.
	if got.at.Before(deadline) {
		t.Errorf("pruned at %s, before the deadline %s", got.at.Format(time.StampMilli), deadline.Format(time.StampMilli))
	}
	e.wantGone(t, "13", "s1")
	if n, err := e.rdb.HLen(context.Background(), e.viewersKey()).Result(); err != nil || n != 0 {
		t.Errorf("HLEN viewers=%d (err %v), want 0", n, err)
	}
}

func TestCollector_PrunesWhatDiedWhileStopped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, srv, shortTTL)
	ctx := context.Background()
	posts := []presence.PostID{"a", "b"}
	counts := e.watch(t, posts...)
	bySession := map[presence.SessionID]presence.PostID{}
	for i := range 6 {
		sid := presence.SessionID(fmt.Sprintf("s%d", i))
		bySession[sid] = posts[i%2]
		e.view(t, sid, posts[i%2])
	}
	for sid := range bySession {
		e.waitExpired(t, sid)
	}
	// Expired keys alone change nothing: the counts still hold the dead.
	if n, err := e.rdb.HLen(ctx, e.viewersKey()).Result(); err != nil || n != 6 {
		t.Fatalf("before gc: HLEN viewers=%d (err %v), want 6", n, err)
	}

	// A poll interval far beyond the test: the prune must come from the
	// first poll at start, not from a later tick.
	started := time.Now()
	start(t, gc.New(e.store, gc.Config{Poll: time.Minute}, zaptest.NewLogger(t)))
	pending := map[string]bool{"a": true, "b": true}
	for len(pending) > 0 {
		c := waitCount(t, counts, 1500*time.Millisecond-time.Since(started), "viewers 0 on a and b",
			func(c countMsg) bool { return c.Viewers == 0 && pending[c.Post] })
		delete(pending, c.Post)
	}
	t.Logf("pruned 6 sessions %s after the collector started", time.Since(started).Round(time.Millisecond))
	for _, p := range posts {
		var sids []presence.SessionID
		for sid, sp := range bySession {
			if sp == p {
				sids = append(sids, sid)
			}
		}
		e.wantGone(t, p, sids...)
	}
	if n, err := e.rdb.ZCard(ctx, e.deadlinesKey()).Result(); err != nil || n != 0 {
		t.Errorf("ZCARD deadlines=%d (err %v), want 0", n, err)
	}
}

// raceSource is the real store with a hook between Due and Prune: it runs
// an app server's re-registration in the window where a collector has read
// a session as due but not yet pruned it.
type raceSource struct {
	*redisstore.Store
	between func()
}

func (r raceSource) Due(ctx context.Context, limit int) ([]presence.Session, time.Duration, error) {
	sids, next, err := r.Store.Due(ctx, limit)
	if len(sids) > 0 && r.between != nil {
		r.between()
	}
	return sids, next, err
}

func TestCollector_LeavesReregisteredSession(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// reregisterAfterDue re-registers between Due and Prune rather
		// than before the poll.
		reregisterAfterDue bool
	}{
		{"re-registered before the poll", false},
		{"re-registered between due and prune", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, srv, shortTTL)
			ctx := context.Background()
			e.view(t, "s1", "13")
			e.waitExpired(t, "s1")
			// Subscribed only now: any count from here on would be a
			// wrong prune (viewers 0) or a spurious change.
			counts := e.watch(t, "13")

			reregister := func() {
				if _, err := e.store.View(ctx, presence.Session{ID: "s1", Post: "13"}, "", false); err != nil {
					t.Errorf("View again: %v", err)
				}
			}
			var src presence.Pruner = e.store
			if tc.reregisterAfterDue {
				once := sync.Once{}
				src = raceSource{Store: e.store, between: func() { once.Do(reregister) }}
			} else {
				reregister()
			}
			reg := prometheus.NewRegistry()
			c := gc.New(src, gc.Config{Registerer: reg}, zaptest.NewLogger(t))
			if _, err := c.Poll(ctx); err != nil {
				t.Fatalf("Poll: %v", err)
			}

			if inHash, inSet := e.counted(t, "s1", "13"); !inHash || !inSet {
				t.Errorf("HEXISTS viewers=%v, SISMEMBER viewers:13=%v; want both true", inHash, inSet)
			}
			if n, err := e.rdb.SCard(ctx, e.postKey("13")).Result(); err != nil || n != 1 {
				t.Errorf("SCARD viewers:13=%d (err %v), want 1", n, err)
			}
			if got := counter(t, reg, "presence_prunes_total"); got != 0 {
				t.Errorf("presence_prunes_total=%v, want 0", got)
			}
			// The live session's deadline is in the future again, so the
			// next poll does not find it due either.
			ms, err := e.rdb.ZScore(ctx, e.deadlinesKey(), "s1").Result()
			if err != nil {
				t.Fatalf("ZSCORE deadlines s1: %v", err)
			}
			if d := time.UnixMilli(int64(ms)); !d.After(time.Now()) {
				t.Errorf("deadline %s is not in the future", d.Format(time.StampMilli))
			}
			select {
			case m := <-counts:
				if m.Viewers != 1 {
					t.Errorf("published %+v, want no change from 1 viewer", m)
				}
			default:
			}
		})
	}
}

// TestCollector_PrunesOnTimeUnderLoad checks the promise that replaced the
// seed's 11 minutes: with many live sessions holding a TTL, Redis's own
// expired events come many seconds late, but the deadlines index makes a
// dead session go within one poll.
func TestCollector_PrunesOnTimeUnderLoad(t *testing.T) {
	t.Parallel()
	const live = 20000
	s := redistest.Start(t) // 20k keys would slow the shared server's tests
	e := newEnv(t, s, shortTTL)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	// Running before the load and the dead session, as in production: its
	// schedule is whatever the index says, not aligned with the test.
	start(t, gc.New(e.store, gc.Config{Registerer: reg}, zaptest.NewLogger(t))) // default poll, 1s

	// The live sessions, written as the view script writes them, in a few
	// big pipelines rather than 20k script calls.
	now, err := e.rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	longTTL := 10 * time.Minute
	until := float64(now.Add(longTTL).UnixMilli())
	const batch = 2500
	for i := 0; i < live; i += batch {
		_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := i; j < min(i+batch, live); j++ {
				sid := fmt.Sprintf("live%d", j)
				post := presence.PostID(fmt.Sprintf("p%d", j%100))
				p.Set(ctx, e.sessionKey(presence.SessionID(sid)), string(post), longTTL)
				p.HSet(ctx, e.viewersKey(), sid, string(post))
				p.SAdd(ctx, e.postKey(post), sid)
				p.ZAdd(ctx, e.deadlinesKey(), redis.Z{Score: until, Member: sid})
			}
			return nil
		})
		if err != nil {
			t.Fatalf("load live sessions: %v", err)
		}
	}

	counts := e.watch(t, "dead")
	deadline := e.view(t, "dead1", "dead")
	got := waitCount(t, counts, deadline.Add(3*time.Second).Sub(time.Now()), "viewers 0", zeroOn("dead"))
	// The watcher's arrival time is what a browser would see, so it, not
	// the script's own figure, is held to the promise.
	lag := got.at.Sub(deadline)
	// The count goes out from inside the prune script; the collector counts
	// the prune once the script's reply is back, a moment later.
	waitUntil := time.Now().Add(5 * time.Second)
	for counter(t, reg, "presence_prunes_total") == 0 && time.Now().Before(waitUntil) {
		time.Sleep(5 * time.Millisecond)
	}
	n, sum := histogram(t, reg, "presence_gc_expiry_lag_seconds")
	t.Logf("with %d live sessions: pruned %s after the deadline (seen by a watcher); collector measured %d prune(s), lag sum %.3fs",
		live, lag.Round(time.Millisecond), n, sum)
	if lag > time.Second {
		t.Errorf("pruned %s after the deadline, want at most 1s", lag)
	}
	if lag < 0 {
		t.Errorf("pruned %s before the deadline", -lag)
	}
	e.wantGone(t, "dead", "dead1")
	// Nobody else was touched.
	if n, err := e.rdb.HLen(ctx, e.viewersKey()).Result(); err != nil || n != live {
		t.Errorf("HLEN viewers=%d (err %v), want %d", n, err, live)
	}
	if got := counter(t, reg, "presence_prunes_total"); got != 1 {
		t.Errorf("presence_prunes_total=%v, want 1", got)
	}
}

func TestCollector_TwoCollectorsPruneOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, srv, shortTTL)
	const n = 10
	posts := make([]presence.PostID, n)
	for i := range posts {
		posts[i] = presence.PostID(fmt.Sprintf("p%d", i))
	}
	counts := e.watch(t, posts...)
	var last time.Time
	for i, p := range posts {
		last = e.view(t, presence.SessionID(fmt.Sprintf("s%d", i)), p)
	}
	for range posts {
		waitCount(t, counts, 2*time.Second, "viewers 1", func(c countMsg) bool { return c.Viewers == 1 })
	}

	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	for _, reg := range regs {
		// Both wake at the same deadlines and take one session per round
		// trip, so they race for every session rather than one taking all.
		start(t, gc.New(e.store, gc.Config{Poll: 50 * time.Millisecond, Batch: 1, Registerer: reg}, zaptest.NewLogger(t)))
	}

	// Collect every message until well after the last deadline: several
	// polls of both collectors.
	zeros := map[string]int{}
	window := time.NewTimer(time.Until(last) + 1500*time.Millisecond)
	defer window.Stop()
collect:
	for {
		select {
		case c := <-counts:
			if c.Viewers != 0 {
				t.Errorf("unexpected count %+v", c)
				continue
			}
			zeros[c.Post]++
		case <-window.C:
			break collect
		}
	}
	for _, p := range posts {
		if zeros[string(p)] != 1 {
			t.Errorf("post %s: %d counts with viewers 0, want exactly 1", p, zeros[string(p)])
		}
	}
	total := counter(t, regs[0], "presence_prunes_total") + counter(t, regs[1], "presence_prunes_total")
	if total != n {
		t.Errorf("presence_prunes_total summed over both collectors=%v, want %d", total, n)
	}
	t.Logf("prunes per collector: %v and %v",
		counter(t, regs[0], "presence_prunes_total"), counter(t, regs[1], "presence_prunes_total"))
}

// expiryEnv runs an Expiry on its own redis-server, because its tests change
// server-wide settings and kill pub/sub clients.
type expiryEnv struct {
	env
	expiry *redisstore.Expiry
	reg    *prometheus.Registry
}

func startExpiry(t *testing.T, redisArgs ...string) expiryEnv {
	t.Helper()
	s := redistest.Start(t, redisArgs...)
	e := newEnv(t, s, shortTTL)
	reg := prometheus.NewRegistry()
	x := redisstore.NewExpiry(e.store, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Expiry.Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Expiry.Run did not return within 5s of cancel")
		}
	})
	return expiryEnv{env: e, expiry: x, reg: reg}
}

// flags returns the server's notify-keyspace-events.
func (e expiryEnv) flags(t *testing.T) string {
	t.Helper()
	cur, err := e.rdb.ConfigGet(context.Background(), "notify-keyspace-events").Result()
	if err != nil {
		t.Fatalf("CONFIG GET: %v", err)
	}
	return cur["notify-keyspace-events"]
}

// waitFlags waits until the flags contain every letter of want.
func (e expiryEnv) waitFlags(t *testing.T, want string, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		have := e.flags(t)
		if containsAll(have, want) {
			return have
		}
		if time.Now().After(deadline) {
			t.Fatalf("notify-keyspace-events=%q after %s, want it to contain %q", have, limit, want)
		}
		time.Sleep(10 * time.Millisecond) // CONFIG has no change feed to await
	}
}

func containsAll(s, letters string) bool {
	for _, r := range letters {
		if !strings.ContainsRune(s, r) {
			return false
		}
	}
	return true
}

// waitSubscribed waits until the expired-event channel has a subscriber.
func (e expiryEnv) waitSubscribed(t *testing.T) {
	t.Helper()
	channel := "__keyevent@0__:expired"
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := e.rdb.PubSubNumSub(context.Background(), channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n[channel] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no subscriber on %s after 5s", channel)
		}
		time.Sleep(10 * time.Millisecond) // the subscriber is in another goroutine's connection
	}
}

func (e expiryEnv) drain() {
	for {
		select {
		case <-e.expiry.Wakeups():
		default:
			return
		}
	}
}

func (e expiryEnv) wantWake(t *testing.T, limit time.Duration, why string) {
	t.Helper()
	select {
	case <-e.expiry.Wakeups():
	case <-time.After(limit):
		t.Fatalf("no wake-up within %s after %s", limit, why)
	}
}

func TestExpiry_Flags(t *testing.T) {
	t.Parallel()
	t.Run("adds E and x, and never g, to empty flags", func(t *testing.T) {
		t.Parallel()
		e := startExpiry(t)
		have := e.waitFlags(t, "Ex", 5*time.Second)
		// g (or A, which includes it) would publish an event for every
		// refresh of every live session.
		if strings.ContainsAny(have, "gAK") {
			t.Errorf("notify-keyspace-events=%q, want only E and x added", have)
		}
	})
	t.Run("keeps flags already set", func(t *testing.T) {
		t.Parallel()
		e := startExpiry(t, "--notify-keyspace-events", "Kg")
		if have := e.waitFlags(t, "KgEx", 5*time.Second); !containsAll(have, "Kg") {
			t.Errorf("notify-keyspace-events=%q, want K and g kept", have)
		}
	})
}

func TestExpiry_Wakeups(t *testing.T) {
	t.Parallel()
	e := startExpiry(t)
	ctx := context.Background()
	e.waitFlags(t, "Ex", 5*time.Second)
	// Events published before the subscription is in place are lost, and
	// the first flag check may have left a wake-up behind.
	e.waitSubscribed(t)
	e.drain()

	// A key outside the store's session keys expires: no wake-up.
	other := e.prefix + "other"
	if err := e.rdb.Set(ctx, other, "x", 50*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for e.rdb.Exists(ctx, other).Val() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // a TTL must pass
	}
	select {
	case <-e.expiry.Wakeups():
		t.Errorf("woke up for %s, which is not a session key", other)
	case <-time.After(200 * time.Millisecond):
	}

	// A session key expires: wake-up.
	e.view(t, "s1", "13")
	e.wantWake(t, 3*time.Second, "a session key's TTL")
	if got := counter(t, e.reg, "presence_gc_expired_events_total"); got != 1 {
		t.Errorf("presence_gc_expired_events_total=%v, want 1", got)
	}

	// Someone clears the flags and the subscription drops: the resubscribe
	// wakes gc (events were lost meanwhile) and puts the flags back.
	if err := e.rdb.ConfigSet(ctx, "notify-keyspace-events", "").Err(); err != nil {
		t.Fatal(err)
	}
	e.drain()
	killed, err := e.rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
	if err != nil || killed != 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v; want 1 killed", killed, err)
	}
	e.wantWake(t, 5*time.Second, "a pub/sub reconnect")
	have := e.waitFlags(t, "Ex", 5*time.Second)
	t.Logf("flags after reconnect: %q", have)
	if got := counter(t, e.reg, "presence_gc_pubsub_reconnects_total"); got != 1 {
		t.Errorf("presence_gc_pubsub_reconnects_total=%v, want 1", got)
	}

	// And expired events flow again on the new connection.
	e.waitSubscribed(t)
	e.drain()
	e.view(t, "s2", "13")
	e.wantWake(t, 3*time.Second, "a session key's TTL after the reconnect")
	if got := counter(t, e.reg, "presence_gc_expired_events_total"); got != 2 {
		t.Errorf("presence_gc_expired_events_total=%v, want 2", got)
	}
}

// TestExpiry_ConfigRefused runs gc against a Redis that refuses CONFIG, as
// managed services do: it says so once, clearly, and dead sessions are still
// pruned on time through the deadlines index.
func TestExpiry_ConfigRefused(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, "--rename-command", "CONFIG", "")
	core, logs := observer.New(zapcore.InfoLevel)
	rdb := s.Client(t)
	prefix := redistest.Prefix()
	store := redisstore.New(rdb, redisstore.Config{Prefix: prefix, TTL: shortTTL}, zap.New(core))
	e := env{rdb: rdb, store: store, prefix: prefix}

	x := redisstore.NewExpiry(store, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	start(t, gc.New(store, gc.Config{Wake: x.Wakeups()}, zaptest.NewLogger(t)))

	watch := e.watch(t, "managed")
	deadline := e.view(t, "dead", "managed")
	got := waitCount(t, watch, 5*time.Second, "viewers 0 on managed", zeroOn("managed"))
	lag := got.at.Sub(deadline)
	t.Logf("pruned %s after the deadline with CONFIG refused", lag.Round(time.Millisecond))
	if lag > time.Second+100*time.Millisecond {
		t.Errorf("pruned %s after the deadline, want within about one poll (1s)", lag)
	}
	refusals := logs.FilterMessageSnippet("refused CONFIG").All()
	if len(refusals) != 1 || refusals[0].Level != zapcore.WarnLevel {
		t.Errorf("logged %d CONFIG refusals (%v), want exactly one warning", len(refusals), refusals)
	}
}

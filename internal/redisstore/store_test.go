package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redistest"
	"github.com/presence/presence/internal/storetest"
)

// srv is the package's shared redis-server; every test uses its own prefix.
var srv *redistest.Server

func TestMain(m *testing.M) { redistest.Main(m, &srv) }

func newStore(t *testing.T, ttl time.Duration) (*Store, *redis.Client) {
	t.Helper()
	return newStoreConfig(t, Config{TTL: ttl})
}

func newStoreConfig(t *testing.T, cfg Config) (*Store, *redis.Client) {
	t.Helper()
	rdb := srv.Client(t)
	cfg.Prefix = redistest.Prefix()
	return New(rdb, cfg, zaptest.NewLogger(t)), rdb
}

// feed subscribes to the posts' channels and waits for Redis to confirm, so
// nothing published after it returns is missed.
// On a cluster each partition's channels need a subscription of their own.
func feed(t *testing.T, s *Store, rdb redis.UniversalClient, posts ...presence.PostID) <-chan presence.Message {
	t.Helper()
	byPart := make(map[int][]string)
	for _, p := range posts {
		n := s.keys.Partition(p)
		byPart[n] = append(byPart[n], s.keys.Channel(p))
	}
	ctx := context.Background()
	b := NewBus(s, BusConfig{})
	out := make(chan presence.Message, 100)
	for _, chans := range byPart {
		var ps *redis.PubSub
		if s.keys.sharded() {
			ps = rdb.SSubscribe(ctx, chans...)
		} else {
			ps = rdb.Subscribe(ctx, chans...)
		}
		t.Cleanup(func() { ps.Close() })
		for range chans {
			if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
				t.Fatalf("subscribe: %v", err)
			}
		}
		go func() {
			for m := range ps.Channel() {
				msg, err := b.parse(m.Channel, m.Payload)
				if err != nil {
					t.Errorf("bad message %q: %v", m.Payload, err)
					continue
				}
				out <- msg
			}
		}()
	}
	return out
}

func TestStore_Conformance(t *testing.T) {
	storetest.Run(t, harness(func(t *testing.T) redis.UniversalClient { return srv.Client(t) }))
}

// TestStore_ConformanceSentinel runs the same suite through go-redis's
// failover client, as Sentinel mode does.
func TestStore_ConformanceSentinel(t *testing.T) {
	topo := redistest.StartSentinel(t)
	storetest.Run(t, harness(func(t *testing.T) redis.UniversalClient {
		rdb, err := Connect(Connection{Sentinels: topo.Addrs, Master: topo.Master}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		return rdb
	}))
}

// harness makes the store suite's Factory on clients from client, each
// store with a key prefix of its own.
func harness(client func(t *testing.T) redis.UniversalClient) storetest.Factory {
	return func(t *testing.T, ttl, viewsTTL time.Duration) storetest.Harness {
		rdb := client(t)
		s := New(rdb, Config{Prefix: redistest.Prefix(), TTL: ttl, ViewsTTL: viewsTTL}, zaptest.NewLogger(t))
		return storetest.Harness{
			Store:  s,
			Source: s,
			Feed: func(t *testing.T, posts ...presence.PostID) <-chan presence.Message {
				return feed(t, s, rdb, posts...)
			},
			Consistent: func(t *testing.T, want map[presence.SessionID]presence.PostID, posts []presence.PostID) {
				checkInvariants(t, s, rdb, want, posts)
			},
		}
	}
}

// checkInvariants compares every key of the schema with the sessions that
// should be live: viewers hash, per-post sets, session keys and deadlines.
// The sessions of the run view only posts, so the partitions of posts hold
// every key there is.
func checkInvariants(t *testing.T, s *Store, rdb redis.UniversalClient, want map[presence.SessionID]presence.PostID, posts []presence.PostID) {
	t.Helper()
	ctx := context.Background()
	hashes := make(map[int]map[string]string)
	total, deadlines := 0, int64(0)
	for _, p := range posts {
		n := s.keys.Partition(p)
		if _, ok := hashes[n]; ok {
			continue
		}
		hash, err := rdb.HGetAll(ctx, s.keys.Viewers(p)).Result()
		if err != nil {
			t.Fatal(err)
		}
		hashes[n] = hash
		total += len(hash)
		c, _ := rdb.ZCard(ctx, s.keys.Deadlines(p)).Result()
		deadlines += c
	}
	if total != len(want) {
		t.Errorf("viewers hashes have %d sessions, want %d", total, len(want))
	}
	for sid, post := range want {
		if got := hashes[s.keys.Partition(post)][string(sid)]; got != string(post) {
			t.Errorf("viewers[%s]=%q, want %q", sid, got, post)
		}
		if v, _ := rdb.Get(ctx, s.keys.Session(post, sid)).Result(); v != string(post) {
			t.Errorf("session:%s=%q, want %q", sid, v, post)
		}
	}
	for _, p := range posts {
		members, err := rdb.SMembers(ctx, s.keys.PostViewers(p)).Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, post := range want {
			if post == p {
				n++
			}
		}
		if len(members) != n {
			t.Errorf("SCARD viewers:%s=%d, want %d", p, len(members), n)
		}
		for _, m := range members {
			if want[presence.SessionID(m)] != p {
				t.Errorf("viewers:%s holds %s, which views %q", p, m, want[presence.SessionID(m)])
			}
		}
	}
	if deadlines != int64(len(want)) {
		t.Errorf("deadlines hold %d sessions, want %d", deadlines, len(want))
	}
}

func TestStore_PruneRacingReregistration(t *testing.T) {
	s, rdb := newStore(t, time.Second)
	ctx := context.Background()
	if _, err := s.View(ctx, presence.Session{ID: "s1", Post: "13"}, "", true); err != nil {
		t.Fatal(err)
	}
	// The key expires; before gc prunes, the app server registers it again.
	waitGone(t, rdb, s.keys.Session("", "s1"))
	if _, err := s.View(ctx, presence.Session{ID: "s1", Post: "13"}, "", false); err != nil {
		t.Fatal(err)
	}
	lags, err := s.Prune(ctx, []presence.Session{{ID: "s1"}})
	if err != nil || len(lags) != 0 {
		t.Fatalf("Prune = %v, %v; want the live session left alone", lags, err)
	}
	checkInvariants(t, s, rdb, map[presence.SessionID]presence.PostID{"s1": "13"}, []presence.PostID{"13"})
	// Its deadline is back in the future, so gc does not see it as due.
	due, _, err := s.Due(ctx, 10)
	if err != nil || len(due) != 0 {
		t.Fatalf("Due = %v, %v; want nothing due", due, err)
	}
}

func TestStore_SweepRepairsIndex(t *testing.T) {
	s, rdb := newStore(t, time.Minute)
	ctx := context.Background()
	for _, sid := range []presence.SessionID{"live", "dead"} {
		if _, err := s.View(ctx, presence.Session{ID: sid, Post: "13"}, "", true); err != nil {
			t.Fatal(err)
		}
	}
	// Lose the whole index and one session's key, as a failover might.
	rdb.Del(ctx, s.keys.Deadlines(""), s.keys.Session("", "dead"))
	n, err := s.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 pruned", n, err)
	}
	checkInvariants(t, s, rdb, map[presence.SessionID]presence.PostID{"live": "13"}, []presence.PostID{"13"})
}

func TestStore_UnreachableIsUnavailable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	s := New(rdb, Config{}, zaptest.NewLogger(t))
	_, err := s.View(context.Background(), presence.Session{ID: "s1", Post: "13"}, "", true)
	if got := presence.ErrorCode(err); got != presence.CodeUnavailable {
		t.Fatalf("ErrorCode(%v)=%s, want unavailable", err, got)
	}
}

func waitGone(t *testing.T, rdb *redis.Client, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// EXISTS also makes Redis expire the key when it is due.
		n, err := rdb.Exists(context.Background(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists after 5s", key)
		}
		time.Sleep(20 * time.Millisecond) // a TTL must pass: nothing to await
	}
}

// BenchmarkStore_ViewLeave measures one view script and, every third time, a
// leave, against the shared redis-server over loopback.
func BenchmarkStore_ViewLeave(b *testing.B) {
	rdb := srv.Client(b)
	s := New(rdb, Config{Prefix: redistest.Prefix(), TTL: time.Minute}, zap.NewNop())
	ctx := context.Background()
	// Where each session is, as the hub tells the store; a store told
	// wrong runs its script again.
	at := make(map[presence.SessionID]presence.PostID, 1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		sid := presence.SessionID(fmt.Sprint(i % 1024))
		post := presence.PostID(fmt.Sprint(i % 64))
		if _, err := s.View(ctx, presence.Session{ID: sid, Post: post}, at[sid], true); err != nil {
			b.Fatal(err)
		}
		at[sid] = post
		if i%3 == 0 {
			if err := s.Leave(ctx, presence.Session{ID: sid, Post: post}); err != nil {
				b.Fatal(err)
			}
			delete(at, sid)
		}
	}
}

// BenchmarkStore_Refresh500 measures one refresh batch of 500 live sessions,
// the unit an app server repeats every TTL/3.
func BenchmarkStore_Refresh500(b *testing.B) {
	rdb := srv.Client(b)
	s := New(rdb, Config{Prefix: redistest.Prefix(), TTL: time.Minute}, zap.NewNop())
	ctx := context.Background()
	sessions := make([]presence.Session, 500)
	for i := range sessions {
		sessions[i] = presence.Session{ID: presence.SessionID(fmt.Sprint("s", i)), Post: presence.PostID(fmt.Sprint(i % 50))}
		if _, err := s.View(ctx, presence.Session{ID: sessions[i].ID, Post: sessions[i].Post}, "", false); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if missing, err := s.Refresh(ctx, sessions); err != nil || len(missing) != 0 {
			b.Fatalf("Refresh = %v, %v", missing, err)
		}
	}
}

// TestStore_SeqSurvivesLoss: a Redis that comes back with seq lower than
// app servers saw (restarted without persistence, restored from an older
// snapshot, failed over to a replica that lagged) or with seq damaged still
// numbers every later count after every one handed out before.
func TestStore_SeqSurvivesLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(ctx context.Context, rdb *redis.Client, seq int64) error
	}{
		{"FLUSHALL", func(ctx context.Context, rdb *redis.Client, _ int64) error { return rdb.FlushAll(ctx).Err() }},
		{"older seq", func(ctx context.Context, rdb *redis.Client, seq int64) error {
			return rdb.Set(ctx, NewKeys("").Seq(""), seq-1000, 0).Err()
		}},
		{"seq not a number", func(ctx context.Context, rdb *redis.Client, _ int64) error {
			return rdb.Set(ctx, NewKeys("").Seq(""), "x", 0).Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := redistest.Start(t)
			rdb := r.Client(t)
			s := New(rdb, Config{TTL: time.Minute}, zaptest.NewLogger(t))
			ctx := context.Background()
			var last int64
			for i := range 50 {
				c, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint(i)), Post: "p"}, "", true)
				if err != nil {
					t.Fatal(err)
				}
				last = c.Seq
			}
			if err := tc.lose(ctx, rdb, last); err != nil {
				t.Fatal(err)
			}
			counts, err := s.Counts(ctx, []presence.PostID{"p"})
			if err != nil || counts[0].Seq <= last {
				t.Fatalf("Counts after the loss = %+v, %v; want Seq > %d", counts, err, last)
			}
			c, err := s.View(ctx, presence.Session{ID: "new", Post: "p"}, "", true)
			if err != nil || c.Seq <= counts[0].Seq {
				t.Fatalf("View after the loss = %+v, %v; want Seq > %d", c, err, counts[0].Seq)
			}
		})
	}
}

// TestStore_ViewsLifetime covers counters the view script does not renew:
// those written before views expired (or by an older release during a
// rolling deploy) get the TTL from ExpireViews, and a store that keeps
// views forever takes a TTL away on the next view.
func TestStore_ViewsLifetime(t *testing.T) {
	ctx := context.Background()
	rdb := srv.Client(t)
	prefix := "t[1]*" + redistest.Prefix() // glob characters must not widen the scan
	s := New(rdb, Config{Prefix: prefix, TTL: time.Minute, ViewsTTL: time.Hour}, zaptest.NewLogger(t))
	other := "t1x" + prefix[5:]
	for _, k := range []string{NewKeys(prefix).Views("old-1"), NewKeys(prefix).Views("old-2"), NewKeys(other).Views("not-mine")} {
		if err := rdb.Incr(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.Set(ctx, NewKeys(prefix).Views("has-ttl"), 5, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := s.ExpireViews(ctx)
	if err != nil || n != 2 {
		t.Fatalf("ExpireViews = %d, %v; want the 2 counters without a TTL", n, err)
	}
	for k, want := range map[string][2]time.Duration{
		NewKeys(prefix).Views("old-1"):   {59 * time.Minute, time.Hour},
		NewKeys(prefix).Views("old-2"):   {59 * time.Minute, time.Hour},
		NewKeys(prefix).Views("has-ttl"): {50 * time.Second, time.Minute},
		NewKeys(other).Views("not-mine"): {-1, -1},
	} {
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil || ttl < want[0] || ttl > want[1] {
			t.Errorf("PTTL %s = %s (%v), want %s to %s", k, ttl, err, want[0], want[1])
		}
	}
	rdb.Del(ctx, NewKeys(other).Views("not-mine"))

	// Kept forever: the next view takes the TTL away.
	forever := New(rdb, Config{Prefix: prefix, TTL: time.Minute, ViewsTTL: -1}, zaptest.NewLogger(t))
	if _, err := forever.View(ctx, presence.Session{ID: "s1", Post: "old-1"}, "", true); err != nil {
		t.Fatal(err)
	}
	if ttl, err := rdb.PTTL(ctx, NewKeys(prefix).Views("old-1")).Result(); err != nil || ttl != -1 {
		t.Errorf("PTTL after a view by a store keeping views forever = %s (%v), want none", ttl, err)
	}
	if n, err := forever.ExpireViews(ctx); err != nil || n != 0 {
		t.Errorf("ExpireViews keeping views forever = %d, %v; want 0", n, err)
	}
}

// TestStore_ReadsWorkAtMaxmemory: a read may move seq to the clock, a
// write, but a Redis at maxmemory with noeviction, which refuses views,
// must still answer reads, as it did when reads wrote nothing.
func TestStore_ReadsWorkAtMaxmemory(t *testing.T) {
	r := redistest.Start(t)
	rdb := r.Client(t)
	s := New(rdb, Config{TTL: time.Minute}, zaptest.NewLogger(t))
	ctx := context.Background()
	if _, err := s.View(ctx, presence.Session{ID: "a", Post: "p"}, "", true); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, presence.Session{ID: "b", Post: "p"}, "", true); err == nil {
		t.Fatal("a view at maxmemory worked; the test needs Redis to refuse writes")
	}
	counts, err := s.Counts(ctx, []presence.PostID{"p"})
	if err != nil || counts[0].Viewers != 1 {
		t.Fatalf("Counts at maxmemory = %+v, %v; want 1 viewer", counts, err)
	}
}

// TestStore_RefreshFindsHalfState: a live session that lost its viewers
// entry or its place in the post's set (a failover or restore that kept
// only part of a script's writes, a hand edit) is reported missing by
// Refresh, and the app server's view of it puts everything back; gc check
// is clean afterwards.
func TestStore_RefreshFindsHalfState(t *testing.T) {
	s, rdb := newStore(t, time.Minute)
	ctx := context.Background()
	for _, sid := range []presence.SessionID{"a", "b", "c"} {
		if _, err := s.View(ctx, presence.Session{ID: sid, Post: "p"}, "", true); err != nil {
			t.Fatal(err)
		}
	}
	rdb.HDel(ctx, s.keys.Viewers(""), "a")
	rdb.SRem(ctx, s.keys.PostViewers("p"), "b")
	missing, err := s.Refresh(ctx, []presence.Session{{ID: "a", Post: "p"}, {ID: "b", Post: "p"}, {ID: "c", Post: "p"}})
	if err != nil || len(missing) != 2 || missing[0] != "a" || missing[1] != "b" {
		t.Fatalf("Refresh = %v, %v; want a and b missing", missing, err)
	}
	for _, sid := range missing {
		if _, err := s.View(ctx, presence.Session{ID: sid, Post: "p"}, "", false); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := s.Check(ctx, time.Second); err != nil || !r.Clean() || r.Members != 3 {
		t.Errorf("after the views again: %s, %v; want clean with 3 viewers", r.Summary(), err)
	}
}

// TestStore_ScriptsPublishTheWireFormat: the Lua scripts build the count
// message themselves (the numbers exist only inside Redis); it must be
// byte for byte what presence.Count.Message makes, the one Go definition.
func TestStore_ScriptsPublishTheWireFormat(t *testing.T) {
	s, rdb := newStore(t, time.Minute)
	ctx := context.Background()
	ps := rdb.Subscribe(ctx, s.keys.Channel("13"))
	defer ps.Close()
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, sid := range []presence.SessionID{"a", "b"} {
		c, err := s.View(ctx, presence.Session{ID: sid, Post: "13"}, "", true)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := msg.(*redis.Message).Payload
		if want := string(c.Message()); got != want {
			t.Errorf("the view script published\n%s\nthe Go wire format is\n%s", got, want)
		}
	}
	if err := s.Leave(ctx, presence.Session{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := msg.(*redis.Message).Payload
	m, err := presence.ParseMessage("13", []byte(got))
	if err != nil || m.Count == nil || got != string(m.Count.Message()) {
		t.Errorf("the leave script published %s; parsed %+v, %v; the Go wire format differs", got, m.Count, err)
	}
}

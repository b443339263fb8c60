package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redistest"
	"github.com/presence/presence/internal/storetest"
)

// TestCluster runs the store on a real Redis Cluster of three primaries:
// the conformance suite, the feed over shard channels, expiry events from
// every primary, and last, because it changes the cluster, a slot
// migration under traffic.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3, false)
	client := func(t *testing.T) redis.UniversalClient {
		rdb, err := Connect(Connection{Cluster: c.Addrs()}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		return rdb
	}
	newStore := func(t *testing.T, ttl time.Duration) *Store {
		return New(client(t), Config{Prefix: redistest.Prefix(), TTL: ttl}, zaptest.NewLogger(t))
	}
	t.Run("group", func(t *testing.T) {
		t.Run("conformance", func(t *testing.T) {
			t.Parallel()
			storetest.Run(t, harness(client))
		})
		t.Run("layout", func(t *testing.T) {
			t.Parallel()
			testClusterLayout(t, newStore(t, time.Minute), c)
		})
		t.Run("feed", func(t *testing.T) {
			t.Parallel()
			testClusterFeed(t, newStore(t, time.Minute))
		})
		t.Run("expiry on every primary", func(t *testing.T) {
			t.Parallel()
			testClusterExpiry(t, newStore(t, time.Second), c)
		})
		t.Run("check", func(t *testing.T) {
			t.Parallel()
			s := newStore(t, time.Minute)
			ctx := context.Background()
			for i := range 200 {
				if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint("s", i)), Post: presence.PostID(fmt.Sprint("p", i%40))}, "", true); err != nil {
					t.Fatal(err)
				}
			}
			r, err := s.Check(ctx, time.Second)
			if err != nil || !r.Clean() || r.Sessions != 200 || r.Members != 200 || r.Posts != 40 {
				t.Fatalf("Check = %+v, %v; want clean with 200 sessions on 40 posts", r, err)
			}
			// Counters left without a lifetime (by an older release) get one,
			// on whichever primary holds them.
			for i := range 40 {
				s.rdb.Persist(ctx, s.keys.Views(presence.PostID(fmt.Sprint("p", i))))
			}
			if n, err := s.ExpireViews(ctx); err != nil || n != 40 {
				t.Errorf("ExpireViews = %d, %v; want the 40 counters", n, err)
			}
		})
	})
	t.Run("feed follows a moved slot", func(t *testing.T) {
		testClusterFeedMoved(t, newStore(t, time.Minute), c)
	})
	t.Run("scripts on a migrating slot", func(t *testing.T) {
		testClusterMigratingSlot(t, newStore(t, time.Minute), c)
	})
	t.Run("slot migration under traffic", func(t *testing.T) {
		rdb := client(t).(*redis.ClusterClient)
		red := &redirects{}
		// Each node's client sees every attempt, redirected ones too.
		rdb.OnNewNode(func(n *redis.Client) { n.AddHook(red) })
		s := New(rdb, Config{Prefix: redistest.Prefix(), TTL: time.Minute}, zaptest.NewLogger(t))
		testClusterMigration(t, s, c)
		t.Logf("replies while slots moved: %d MOVED, %d ASK, %d TRYAGAIN", red.moved.Load(), red.ask.Load(), red.tryagain.Load())
		if red.moved.Load() == 0 || red.ask.Load()+red.tryagain.Load() == 0 {
			t.Error("the traffic never met a moved slot (MOVED) or one split between two nodes (ASK, TRYAGAIN)")
		}
	})
}

// redirects counts the redirections Redis answered, which go-redis follows
// without telling its caller.
type redirects struct{ moved, ask, tryagain atomic.Int64 }

func (r *redirects) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *redirects) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil {
			msg := err.Error()
			switch {
			case strings.HasPrefix(msg, "MOVED "):
				r.moved.Add(1)
			case strings.HasPrefix(msg, "ASK "):
				r.ask.Add(1)
			case strings.HasPrefix(msg, "TRYAGAIN"):
				r.tryagain.Add(1)
			}
		}
		return err
	}
}

func (r *redirects) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// testClusterLayout checks that the partitions are spread over every
// primary and that a post's keys and channel share its partition's slot.
func testClusterLayout(t *testing.T, s *Store, c *redistest.Cluster) {
	ctx := context.Background()
	owners := make(map[*redistest.Server]int)
	for n := range Partitions {
		node, err := c.PrimaryOf(ctx, s.keys.viewersAt(n))
		if err != nil {
			t.Fatal(err)
		}
		owners[node]++
	}
	if len(owners) != 3 {
		t.Errorf("partitions on %d primaries, want all 3: %v", len(owners), owners)
	}
	for _, n := range owners {
		if n < 16 {
			t.Errorf("a primary holds %d of %d partitions, want at least 16: %v", n, Partitions, owners)
		}
	}
	rdb := s.rdb.(*redis.ClusterClient)
	for _, p := range []presence.PostID{"13", "a", "made-up-7"} {
		want, _ := rdb.ClusterKeySlot(ctx, s.keys.Viewers(p)).Result()
		for _, name := range []string{s.keys.PostViewers(p), s.keys.Views(p), s.keys.Channel(p), s.keys.Session(p, "x"), s.keys.Deadlines(p), s.keys.Seq(p)} {
			if got, _ := rdb.ClusterKeySlot(ctx, name).Result(); got != want {
				t.Errorf("%s on slot %d, want %d (its partition's)", name, got, want)
			}
		}
	}
}

// testClusterFeed: counts and events reach a Bus over shard channels, from
// posts in many partitions.
func testClusterFeed(t *testing.T, s *Store) {
	ctx := context.Background()
	b, out := runBus(t, s)
	posts := make([]presence.PostID, 20)
	want := make(map[presence.PostID]int64)
	for i := range posts {
		posts[i] = presence.PostID(fmt.Sprint("f", i))
		want[posts[i]] = 0
	}
	b.Subscribe(posts...)
	waitAll(t, out, "re-reads of 20 posts after subscribing", want)
	for i, p := range posts {
		if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint("v", i)), Post: p}, "", true); err != nil {
			t.Fatal(err)
		}
		want[p] = 1
	}
	waitAll(t, out, "a count of every post after a view", want)
	// A move between partitions publishes on both.
	from, to := posts[0], posts[1]
	for _, p := range posts[2:] {
		if s.keys.Partition(p) != s.keys.Partition(from) {
			to = p
			break
		}
	}
	if _, err := s.View(ctx, presence.Session{ID: "v0", Post: to}, from, false); err != nil {
		t.Fatal(err)
	}
	waitAll(t, out, "counts of both posts of a move across partitions", map[presence.PostID]int64{from: 0, to: 2})
	ev, err := presence.NewEvent(posts[5], "comment", []byte(`{"id":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Publish(ctx, ev); err != nil || n != 1 {
		t.Fatalf("Publish = %d, %v; want 1 subscriber", n, err)
	}
	waitMsg(t, out, "the event", func(m presence.Message) bool { return m.Event != nil && m.Event.Post == posts[5] })
	if got := testutil.ToFloat64(b.bad); got != 0 {
		t.Errorf("bad messages: %v", got)
	}
}

// testClusterExpiry: expired events from the session keys on every primary
// reach Expiry.
func testClusterExpiry(t *testing.T, s *Store, c *redistest.Cluster) {
	ctx := context.Background()
	x := NewExpiry(s, prometheus.NewRegistry())
	ectx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- x.Run(ectx) }()
	t.Cleanup(func() { cancel(); <-done })
	// One session on a post of each primary.
	byNode := make(map[*redistest.Server]presence.PostID)
	for i := 0; len(byNode) < 3 && i < 1000; i++ {
		p := presence.PostID(fmt.Sprint("e", i))
		node, err := c.PrimaryOf(ctx, s.keys.Viewers(p))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := byNode[node]; !ok {
			byNode[node] = p
		}
	}
	// The listeners subscribe asynchronously: wait for one per primary.
	deadline := time.Now().Add(10 * time.Second)
	for {
		subs := 0
		for node := range byNode {
			rdb := redis.NewClient(&redis.Options{Addr: node.Addr})
			n, _ := rdb.PubSubNumSub(ctx, "__keyevent@0__:expired").Result()
			rdb.Close()
			subs += int(n["__keyevent@0__:expired"])
		}
		if subs >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d expired-event subscriptions on the primaries after 10s, want 3", subs)
		}
		time.Sleep(50 * time.Millisecond) // subscriptions cannot be awaited from here
	}
	i := 0
	for _, p := range byNode {
		if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint("x", i)), Post: p}, "", false); err != nil {
			t.Fatal(err)
		}
		i++
	}
	deadline = time.Now().Add(15 * time.Second)
	for testutil.ToFloat64(x.events) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%v expired events after 15s, want one from each of 3 primaries", testutil.ToFloat64(x.events))
		}
		time.Sleep(50 * time.Millisecond) // expiry is Redis's, on its own clock
	}
}

// testClusterMigration moves partitions to a fourth primary, key by key, while
// sessions view, move between posts and leave. Operations that fail while a
// slot moves are retried, as an app server's refresh does; at the end the
// counts are exactly the sessions' posts and the check is clean: nothing
// lost, nothing counted twice.
func testClusterMigration(t *testing.T, s *Store, c *redistest.Cluster) {
	ctx := context.Background()
	posts := make([]presence.PostID, 64)
	for i := range posts {
		posts[i] = presence.PostID(fmt.Sprint("m", i))
	}
	const workers = 8
	var (
		mu     sync.Mutex
		final  = make(map[presence.SessionID]presence.PostID)
		failed int
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 11))
			at := make(map[presence.SessionID]presence.PostID)
			// try repeats an operation until it works: whatever half of a
			// move ran before a failure, the retry completes it.
			try := func(op func() error) {
				for range 200 {
					err := op()
					if err == nil {
						return
					}
					mu.Lock()
					failed++
					mu.Unlock()
					if !errors.Is(err, presence.ErrUnavailable) {
						t.Errorf("not a transient error: %v", err)
						return
					}
					time.Sleep(20 * time.Millisecond) // a slot is moving: back off as a refresh would
				}
				t.Error("an operation failed 200 times")
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					mu.Lock()
					for sid, p := range at {
						final[sid] = p
					}
					mu.Unlock()
					return
				default:
				}
				sid := presence.SessionID(fmt.Sprintf("w%d-%d", w, r.IntN(20)))
				if r.IntN(6) == 0 {
					from := at[sid]
					try(func() error { return s.Leave(ctx, presence.Session{ID: sid, Post: from}) })
					delete(at, sid)
					continue
				}
				p := posts[r.IntN(len(posts))]
				from := at[sid]
				try(func() error {
					_, err := s.View(ctx, presence.Session{ID: sid, Post: p}, from, r.IntN(2) == 0)
					return err
				})
				at[sid] = p
			}
		}()
	}
	// Some partitions move key by key, with a pause between keys, so the
	// traffic meets their slots split between two nodes.
	added := c.AddPrimary(t)
	for n := range 8 {
		c.MigrateSlot(t, s.keys.viewersAt(n*Partitions/8), added, 2*time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	owned := 0
	for n := range Partitions {
		if node, err := c.PrimaryOf(ctx, s.keys.viewersAt(n)); err == nil && node == added {
			owned++
		}
	}
	t.Logf("%d operations failed and were retried while %d of %d partitions moved", failed, owned, Partitions)
	if owned != 8 {
		t.Fatalf("%d partitions on the new primary, want the 8 moved", owned)
	}
	want := make(map[presence.PostID]int64)
	for _, p := range final {
		want[p]++
	}
	counts, err := s.Counts(ctx, posts)
	if err != nil {
		t.Fatal(err)
	}
	for _, cnt := range counts {
		if cnt.Viewers != want[cnt.Post] {
			t.Errorf("post %s: %d viewers, want %d", cnt.Post, cnt.Viewers, want[cnt.Post])
		}
	}
	r, err := s.Check(ctx, time.Second)
	if err != nil || !r.Clean() || r.Sessions != len(final) {
		t.Errorf("Check = %s, %v; want clean with %d sessions", r.Summary(), err, len(final))
	}
}

// testClusterMigratingSlot holds a partition's slot in the migrating state,
// every key still on its old node, and runs the scripts that empty a set:
// a leave of a post's last viewer and a move of another post's last viewer.
// Redis deletes an emptied set and, in a migrating slot, refuses any later
// command on it; a script that read the set after emptying it stopped there
// with half its writes done. They must work whole, and the state be right
// once the slot has moved.
func testClusterMigratingSlot(t *testing.T, s *Store, c *redistest.Cluster) {
	ctx := context.Background()
	// Three posts of one partition.
	var posts []presence.PostID
	for i := 0; len(posts) < 3; i++ {
		p := presence.PostID(fmt.Sprint("g", i))
		if len(posts) == 0 || s.keys.Partition(p) == s.keys.Partition(posts[0]) {
			posts = append(posts, p)
		}
	}
	p, q, r := posts[0], posts[1], posts[2]
	for sid, post := range map[presence.SessionID]presence.PostID{"last-of-p": p, "last-of-q": q, "on-r": r} {
		if _, err := s.View(ctx, presence.Session{ID: sid, Post: post}, "", true); err != nil {
			t.Fatal(err)
		}
	}
	to := otherPrimary(t, c, s.keys.Viewers(p))
	finish := c.BeginMigration(t, s.keys.Viewers(p), to)
	if err := s.Leave(ctx, presence.Session{ID: "last-of-p", Post: p}); err != nil {
		t.Errorf("leave of a post's last viewer on a migrating slot: %v", err)
	}
	if _, err := s.View(ctx, presence.Session{ID: "last-of-q", Post: r}, q, false); err != nil {
		t.Errorf("move of a post's last viewer on a migrating slot: %v", err)
	}
	finish(0)
	counts, err := s.Counts(ctx, posts)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{0, 0, 2} {
		if counts[i].Viewers != want {
			t.Errorf("post %s: %d viewers, want %d", counts[i].Post, counts[i].Viewers, want)
		}
	}
	if rep, err := s.Check(ctx, time.Second); err != nil || !rep.Clean() || rep.Sessions != 2 {
		t.Errorf("Check = %s, %v; want clean with 2 sessions", rep.Summary(), err)
	}
}

// TestCluster_PruneWithAPrimaryDown: with one primary gone (no replica, and
// the cluster told to serve the slots it still has), Due and Prune still
// find and prune the dead sessions of the partitions on the others, and
// say that the rest did not answer.
func TestCluster_PruneWithAPrimaryDown(t *testing.T) {
	c := redistest.StartCluster(t, 3, false, "--cluster-require-full-coverage", "no")
	rdb, err := Connect(Connection{Cluster: c.Addrs()}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s := New(rdb, Config{Prefix: redistest.Prefix(), TTL: time.Second}, zaptest.NewLogger(t))
	ctx := context.Background()
	// Sessions on posts of every partition, left to expire.
	var posts []presence.PostID
	for i := range 200 {
		p := presence.PostID(fmt.Sprint("d", i))
		posts = append(posts, p)
		if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint("s", i)), Post: p}, "", false); err != nil {
			t.Fatal(err)
		}
	}
	down, err := c.PrimaryOf(ctx, s.keys.Viewers(posts[0]))
	if err != nil {
		t.Fatal(err)
	}
	alive := make(map[presence.PostID]bool)
	for _, p := range posts {
		if node, err := c.PrimaryOf(ctx, s.keys.Viewers(p)); err == nil && node != down {
			alive[p] = true
		}
	}
	down.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		due, _, err := s.Due(ctx, 1000)
		if err == nil {
			t.Fatal("Due reported no error with a primary down")
		}
		// Errors are expected from the partitions on the dead primary.
		_, _ = s.Prune(ctx, due)
		left := 0
		for p := range alive {
			if cnt, err := s.Counts(ctx, []presence.PostID{p}); err != nil || cnt[0].Viewers != 0 {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d posts on the primaries still up keep their dead viewer 20s after a 1s TTL", left, len(alive))
		}
		time.Sleep(100 * time.Millisecond) // the TTL must pass: nothing to await
	}
}

// testClusterFeedMoved: when a post's slot moves to another primary, Redis
// drops the shard subscription; the Bus subscribes on the new node and the
// next change arrives, without waiting for a probe to find the lane dead.
func testClusterFeedMoved(t *testing.T, s *Store, c *redistest.Cluster) {
	ctx := context.Background()
	b, out := runBus(t, s)
	p := presence.PostID("moving")
	b.Subscribe(p)
	waitAll(t, out, "the re-read after subscribing", map[presence.PostID]int64{p: 0})
	to := otherPrimary(t, c, s.keys.Viewers(p))
	c.MigrateSlot(t, s.keys.Viewers(p), to, 0)
	if _, err := s.View(ctx, presence.Session{ID: "s1", Post: p}, "", true); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, out, "the count after the slot moved", isCount(p, 1))
	if got := testutil.ToFloat64(b.stale); got != 0 {
		t.Errorf("%v subscriptions found stale: the lane waited for its probe", got)
	}
}

// otherPrimary returns a primary that does not hold key's slot.
func otherPrimary(t *testing.T, c *redistest.Cluster, key string) *redistest.Server {
	t.Helper()
	owner, err := c.PrimaryOf(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if c.Primaries[0] != owner {
		return c.Primaries[0]
	}
	return c.Primaries[1]
}

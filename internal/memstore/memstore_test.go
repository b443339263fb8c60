package memstore

import (
	"container/heap"
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/storetest"
)

func TestStore_Conformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, ttl, viewsTTL time.Duration) storetest.Harness {
		s := New(Config{TTL: ttl, ViewsTTL: viewsTTL})
		return storetest.Harness{
			Store:  s,
			Source: s,
			Feed: func(t *testing.T, posts ...presence.PostID) <-chan presence.Message {
				return feed(t, s, posts...)
			},
		}
	})
}

// feed registers a sink before returning, so no later change is missed.
func feed(t *testing.T, s *Store, posts ...presence.PostID) <-chan presence.Message {
	t.Helper()
	want := map[presence.PostID]bool{}
	for _, p := range posts {
		want[p] = true
	}
	out := make(chan presence.Message, 100)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = s.Run(ctx, func(m presence.Message) {
			if m.Count != nil && want[m.Count.Post] {
				out <- m
			}
		})
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	// Run registers its sink under the lock; wait until it is there.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.sinks)
		s.mu.Unlock()
		if n > 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatal("sink not registered within 5s")
		}
		time.Sleep(time.Millisecond) // a goroutine's start cannot be awaited otherwise
	}
}

func TestStore_MemoryFollowsLivePosts(t *testing.T) {
	s := New(Config{TTL: time.Minute})
	ctx := context.Background()
	for i := range 100 {
		if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint(i)), Post: presence.PostID(fmt.Sprint("p", i%10))}, "", true); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if err := s.Leave(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.sessions) != 0 || len(s.viewers) != 0 || len(s.deadlines) != 0 {
		t.Errorf("after everyone left: %d sessions, %d viewer sets, %d deadlines; want 0", len(s.sessions), len(s.viewers), len(s.deadlines))
	}
	// Views are totals and stay, as views:<post> does in Redis.
	if len(s.views) != 10 {
		t.Errorf("views of %d posts kept, want 10", len(s.views))
	}
}

func TestStore_DueVisitsOnlyDueSessions(t *testing.T) {
	s := New(Config{TTL: time.Minute})
	ctx := context.Background()
	for i := range 1000 {
		if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint(i)), Post: "p"}, "", false); err != nil {
			t.Fatal(err)
		}
	}
	// Make three sessions due by moving their deadlines into the past.
	s.mu.Lock()
	for _, sid := range []presence.SessionID{"5", "500", "999"} {
		ss := s.sessions[sid]
		ss.deadline = time.Now().Add(-time.Second)
		heap.Fix(&s.deadlines, ss.index)
	}
	s.mu.Unlock()
	due, _, err := s.Due(ctx, 100)
	if err != nil || len(due) != 3 {
		t.Fatalf("Due = %v, %v; want 3 sessions", due, err)
	}
	lags, err := s.Prune(ctx, due)
	if err != nil || len(lags) != 3 {
		t.Fatalf("Prune = %v, %v; want 3 pruned", lags, err)
	}
	if c, _ := s.Counts(ctx, []presence.PostID{"p"}); c[0].Viewers != 997 {
		t.Errorf("viewers=%d, want 997", c[0].Viewers)
	}
	due, next, err := s.Due(ctx, 100)
	if err != nil || len(due) != 0 || next <= 50*time.Second {
		t.Errorf("Due after prune = %v, %v, %v; want none and the next deadline about a minute away", due, next, err)
	}
}

func BenchmarkStore_ViewLeave(b *testing.B) {
	s := New(Config{TTL: time.Minute})
	ctx := context.Background()
	sids := make([]presence.SessionID, 1024)
	for i := range sids {
		sids[i] = presence.SessionID(fmt.Sprint(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		sid := sids[i%len(sids)]
		_, _ = s.View(ctx, presence.Session{ID: sid, Post: presence.PostID(fmt.Sprint(i % 64))}, "", true)
		if i%3 == 0 {
			_ = s.Leave(ctx, presence.Session{ID: sid})
		}
	}
}

// BenchmarkStore_MadeUpPosts measures what a client naming made-up posts
// leaves in memory: heap per post right after the views, and after the
// views TTL has passed and the collector's poll (Due) ran.
func BenchmarkStore_MadeUpPosts(b *testing.B) {
	const viewsTTL = 100 * time.Millisecond
	ctx := context.Background()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		s := New(Config{TTL: time.Minute, ViewsTTL: viewsTTL})
		const posts = 200_000
		before := heap()
		for i := range posts {
			_, _ = s.View(ctx, presence.Session{ID: "attacker", Post: presence.PostID(fmt.Sprintf("made-up-%d", i))}, "", true)
		}
		_ = s.Leave(ctx, presence.Session{ID: "attacker"})
		after := heap()
		time.Sleep(viewsTTL) // the passing of the TTL is what is measured
		_, _, _ = s.Due(ctx, 1)
		expired := heap()
		b.ReportMetric(float64(after-before)/posts, "B/post-kept")
		b.ReportMetric(float64(int64(expired)-int64(before))/posts, "B/post-after-ttl")
		runtime.KeepAlive(s)
	}
}

// TestStore_ChangesBeforeRunReachIt: the app server takes connections before
// the goroutine that runs the hub's feed has started; a change made then
// (a tab that views and leaves at once) must still reach the feed, in
// order, or watchers keep the wrong count.
func TestStore_ChangesBeforeRunReachIt(t *testing.T) {
	s := New(Config{})
	ctx, cancel := context.WithCancel(context.Background())
	for _, sid := range []presence.SessionID{"a", "b"} {
		if _, err := s.View(ctx, presence.Session{ID: sid, Post: "13"}, "", true); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Leave(ctx, presence.Session{ID: "a", Post: "13"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan presence.Message, 10)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(m presence.Message) { got <- m }) }()
	var viewers []int64
	for range 3 {
		select {
		case m := <-got:
			viewers = append(viewers, m.Count.Viewers)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %v reached the feed", viewers)
		}
	}
	if fmt.Sprint(viewers) != "[1 2 1]" {
		t.Errorf("the feed got counts %v, want [1 2 1]", viewers)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

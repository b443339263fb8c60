package hub_test

import (
	"context"
	"fmt"
	"testing"

	"go.uber.org/zap"

	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/memstore"
	"github.com/presence/presence/internal/presence"
)

// Benchmarks of the hot paths, so that a change in their cost shows as a
// number (docs/benchmarks.md records them). They run on the memory store,
// which keeps Redis out of the figure: BenchmarkStore_ViewLeave in
// redisstore measures the view script.

// benchHub is a hub on a memory store whose changes reach it as the app
// server's feed delivers them, without coalescing, so each change is one
// fan-out.
func benchHub(b *testing.B) (*hub.Hub, *memstore.Store) {
	b.Helper()
	store := memstore.New(memstore.Config{})
	h := hub.New(store, store, hub.Config{Coalesce: -1, QueueSize: 1 << 16}, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = store.Run(ctx, h.Deliver) }()
	b.Cleanup(func() { cancel(); <-done })
	return h, store
}

// BenchmarkHub_FanOut1000 is one count change reaching 1,000 local clients
// that watch its post: the hub queues a frame for each.
func BenchmarkHub_FanOut1000(b *testing.B) {
	h, _ := benchHub(b)
	ctx := context.Background()
	watchers := make([]*hub.Client, 1000)
	for i := range watchers {
		c, err := h.Join(nil, "")
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Watch(ctx, []presence.PostID{"hot"}); err != nil {
			b.Fatal(err)
		}
		watchers[i] = c
	}
	viewer, err := h.Join(nil, "")
	if err != nil {
		b.Fatal(err)
	}
	taken := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// Each view or unview changes the count: one fan-out each.
		if i%2 == 0 {
			err = viewer.View(ctx, "hot", false)
		} else {
			err = viewer.Unview(ctx)
		}
		if err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			b.StopTimer()
			for _, c := range watchers {
				taken += len(take(c))
			}
			b.StartTimer()
		}
	}
	for _, c := range watchers {
		taken += len(take(c))
	}
	// Every change reached every watcher; a count not yet taken is
	// replaced in place by the next, so each gets one frame per Take.
	if want := b.N / 64 * len(watchers); taken < want {
		b.Fatalf("the watchers took %d frames for %d changes, want at least %d", taken, b.N, want)
	}
}

// BenchmarkHub_Join is one tab's life through the hub: join, view a post,
// leave.
func BenchmarkHub_Join(b *testing.B) {
	h, _ := benchHub(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c, err := h.Join(nil, "")
		if err != nil {
			b.Fatal(err)
		}
		if err := c.View(ctx, presence.PostID(fmt.Sprint("p", i%100)), false); err != nil {
			b.Fatal(err)
		}
		if err := c.Leave(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

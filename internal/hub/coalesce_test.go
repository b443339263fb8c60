package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/memstore"
	"github.com/presence/presence/internal/presence"
)

// TestHub_CoalescesPerPost checks the coalescing rule on a fake clock: a
// watcher gets at most one count frame of a post per window, the first
// change after a quiet window goes out at once, and the last frame carries
// the newest value.
func TestHub_CoalescesPerPost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const window = 250 * time.Millisecond
		store := memstore.New(memstore.Config{TTL: time.Hour})
		h := hub.New(store, store, hub.Config{Coalesce: window}, zaptest.NewLogger(t))
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = store.Run(ctx, h.Deliver) }()
		synctest.Wait() // the store's sink is registered

		ready := make(chan struct{}, 1)
		w, err := h.Join(func() {
			select {
			case ready <- struct{}{}:
			default:
			}
		}, "")
		if err != nil {
			t.Fatal(err)
		}
		take(w) // the first writer's Next: from now on frames wake it
		if err := w.Watch(ctx, []presence.PostID{"hot"}); err != nil {
			t.Fatal(err)
		}
		type frame struct {
			at      time.Time
			viewers int
		}
		// A reader takes frames the moment they are queued, as the
		// transport's writer does, so their times are the flush times.
		var (
			mu     sync.Mutex
			frames []frame
			done   = make(chan struct{})
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-ready:
				}
				for _, f := range drain(w) {
					var m struct{ Viewers int }
					if err := json.Unmarshal(f, &m); err != nil {
						t.Error(err)
					}
					mu.Lock()
					frames = append(frames, frame{time.Now(), m.Viewers})
					mu.Unlock()
				}
			}
		}()
		synctest.Wait() // the watch's own answer is taken
		start := time.Now()

		// 40 viewers join, one every 10 ms: 400 ms of changes.
		for range 40 {
			c, err := h.Join(nil, "")
			if err != nil {
				t.Fatal(err)
			}
			if err := c.View(ctx, presence.PostID("hot"), false); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second) // let the last window close
		close(done)
		cancel()
		wg.Wait() // the reader and the store's sink are done: frames is settled

		changes := frames[1:]
		for _, f := range changes {
			t.Logf("+%s: %d viewers", f.at.Sub(start), f.viewers)
		}
		if len(changes) == 0 || changes[0].at.Sub(start) != 0 {
			t.Fatalf("first change went out at %v, want at once", changes)
		}
		for i := 1; i < len(changes); i++ {
			if gap := changes[i].at.Sub(changes[i-1].at); gap < window {
				t.Errorf("frames %d and %d only %s apart, want >= %s", i-1, i, gap, window)
			}
		}
		if last := changes[len(changes)-1].viewers; last != 40 {
			t.Errorf("last frame says %d viewers, want 40", last)
		}
		if len(changes) > 3 {
			t.Errorf("%d frames for 400 ms of changes, want at most 3 with a %s window: %v", len(changes), window, fmt.Sprint(changes))
		}
	})
}

// drain is a writer's run after a wake: Next until it reports nothing.
func drain(c *hub.Client) [][]byte {
	var out [][]byte
	for {
		frames, ok := c.Next()
		if !ok {
			return out
		}
		out = append(out, frames...)
	}
}

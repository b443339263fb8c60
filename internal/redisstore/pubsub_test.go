package redisstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/presence/presence/internal/presence"
)

func runBus(t *testing.T, s *Store) (*Bus, <-chan presence.Message) {
	t.Helper()
	b := NewBus(s, prometheus.NewRegistry())
	out := make(chan presence.Message, 100)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = b.Run(ctx, func(m presence.Message) { out <- m })
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return b, out
}

// waitMsg returns the first message matching, within 5s.
func waitMsg(t *testing.T, ch <-chan presence.Message, desc string, match func(presence.Message) bool) presence.Message {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-ch:
			if match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s within 5s", desc)
		}
	}
}

func isCount(post presence.PostID, viewers int64) func(presence.Message) bool {
	return func(m presence.Message) bool {
		return m.Count != nil && m.Count.Post == post && m.Count.Viewers == viewers
	}
}

func TestBus_SubscribeRereadAndReconnect(t *testing.T) {
	s, rdb := newStore(t, time.Minute)
	ctx := context.Background()
	if _, err := s.View(ctx, "before", "p", true); err != nil {
		t.Fatal(err)
	}
	b, out := runBus(t, s)
	b.Subscribe("p")
	// The change made before subscribing arrives through the re-read.
	waitMsg(t, out, "re-read count p=1", isCount("p", 1))

	if _, err := s.View(ctx, "after", "p", true); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, out, "published count p=2", isCount("p", 2))

	// Kill the subscriber's connection; go-redis resubscribes, Bus notices
	// the replayed subscription, re-reads, and counts the reconnect.
	if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, out, "re-read after reconnect", isCount("p", 2))
	if got := testutil.ToFloat64(b.reconnects); got < 1 {
		t.Errorf("reconnects=%v, want >= 1", got)
	}

	// After Unsubscribe, changes of p no longer arrive; those of q do.
	b.Unsubscribe("p")
	b.Subscribe("q")
	waitMsg(t, out, "re-read q=0", isCount("q", 0))
	if _, err := s.View(ctx, "x", "p", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, "y", "q", true); err != nil {
		t.Fatal(err)
	}
	m := waitMsg(t, out, "any count", func(m presence.Message) bool { return m.Count != nil && m.Count.Viewers > 0 })
	if m.Count.Post != "q" {
		t.Errorf("after Unsubscribe(p) got %+v, want only q", *m.Count)
	}
}

func TestBus_BadMessagesAreDropped(t *testing.T) {
	s, rdb := newStore(t, time.Minute)
	ctx := context.Background()
	b, out := runBus(t, s)
	b.Subscribe("13")
	waitMsg(t, out, "re-read", isCount("13", 0))
	ch := s.keys.channel("13")
	for _, payload := range []string{
		`not json`,
		`{"type":"count","post":"13"}`,
		`{"type":"count","post":"14","viewers":1,"views":1}`,
		`{"type":"count","post":"13","viewers":-1,"views":1}`,
		`{"type":"shout","post":"13"}`,
		`{"type":"event","post":"13","name":"bad name!"}`,
	} {
		if err := rdb.Publish(ctx, ch, payload).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// PHP's publish format reaches the bus as an event.
	if err := rdb.Publish(ctx, ch, `{"type":"event","post":"13","name":"comment","data":{"id":7}}`).Err(); err != nil {
		t.Fatal(err)
	}
	m := waitMsg(t, out, "event", func(m presence.Message) bool { return true })
	if m.Event == nil || m.Event.Name != "comment" || string(m.Event.Data) != `{"id":7}` {
		t.Fatalf("first message after the bad ones = %+v, want the comment event", m)
	}
	if got := testutil.ToFloat64(b.bad); got != 6 {
		t.Errorf("bad messages counted=%v, want 6", got)
	}
}

package redisstore

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/presence/presence/internal/presence"
)

func runBus(t *testing.T, s *Store) (*Bus, <-chan presence.Message) {
	t.Helper()
	b := NewBus(s, BusConfig{Registerer: prometheus.NewRegistry()})
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

// waitAll waits until a count of each post with the given viewers arrived,
// in any order, within 5s.
func waitAll(t *testing.T, ch <-chan presence.Message, desc string, want map[presence.PostID]int64) {
	t.Helper()
	seen := map[presence.PostID]bool{}
	waitMsg(t, ch, desc, func(m presence.Message) bool {
		if m.Count != nil && want[m.Count.Post] == m.Count.Viewers {
			if _, ok := want[m.Count.Post]; ok {
				seen[m.Count.Post] = true
			}
		}
		return len(seen) == len(want)
	})
}

func isCount(post presence.PostID, viewers int64) func(presence.Message) bool {
	return func(m presence.Message) bool {
		return m.Count != nil && m.Count.Post == post && m.Count.Viewers == viewers
	}
}

func TestBus_SubscribeRereadAndReconnect(t *testing.T) {
	s, rdb := newStore(t, time.Minute)
	ctx := context.Background()
	if _, err := s.View(ctx, presence.Session{ID: "before", Post: "p"}, "", true); err != nil {
		t.Fatal(err)
	}
	b, out := runBus(t, s)
	b.Subscribe("p", "p2", "p3", "p4")
	// The change made before subscribing arrives through the re-read.
	rereads := map[presence.PostID]int64{"p": 1, "p2": 0, "p3": 0, "p4": 0}
	waitAll(t, out, "re-reads after subscribing", rereads)

	if _, err := s.View(ctx, presence.Session{ID: "after", Post: "p"}, "", true); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, out, "published count p=2", isCount("p", 2))

	// Kill the subscriber's connection; go-redis resubscribes, Bus notices
	// the replayed subscription, re-reads, and counts the reconnect.
	if err := rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	rereads["p"] = 2
	waitAll(t, out, "re-reads after the reconnect", rereads)
	// One reconnect, however many channels it replayed.
	if got := testutil.ToFloat64(b.reconnects); got != 1 {
		t.Errorf("reconnects=%v, want 1", got)
	}

	// After Unsubscribe, changes of p no longer arrive; those of q do.
	b.Unsubscribe("p")
	b.Subscribe("q")
	waitMsg(t, out, "re-read q=0", isCount("q", 0))
	if _, err := s.View(ctx, presence.Session{ID: "x", Post: "p"}, "", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.View(ctx, presence.Session{ID: "y", Post: "q"}, "", true); err != nil {
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
	ch := s.keys.Channel("13")
	for _, payload := range []string{
		`not json`,
		`{"type":"count","post":"13"}`,
		`{"type":"count","post":"14","viewers":1,"views":1}`,
		`{"type":"count","post":"13","viewers":-1,"views":1}`,
		`{"type":"shout","post":"13"}`,
		`{"type":"event","post":"13","name":"bad name!"}`,
		`{"type":"event","post":"13","name":"huge","data":"` + strings.Repeat("x", MaxMessage) + `"}`,
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
	if got := testutil.ToFloat64(b.bad); got != 7 {
		t.Errorf("bad messages counted=%v, want 7", got)
	}
}

package hub_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/redisstore"
)

// newHub returns a hub whose store is never reached by these tests: the
// queue logic does not touch it.
func newHub(t *testing.T, cfg hub.Config) *hub.Hub {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	store := redisstore.New(rdb, redisstore.Config{}, zaptest.NewLogger(t))
	return hub.New(store, redisstore.NewBus(store, nil), cfg, zaptest.NewLogger(t))
}

func TestClient_SlowConsumerIsClosed(t *testing.T) {
	h := newHub(t, hub.Config{QueueSize: 8})
	slow, err := h.Join()
	if err != nil {
		t.Fatal(err)
	}
	fine, err := h.Join()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		slow.Send([]byte(fmt.Sprint(i)))
		fine.Send([]byte(fmt.Sprint(i)))
	}
	select {
	case <-slow.Done():
		t.Fatal("closed with a full but not overflowing queue")
	default:
	}
	if got := len(fine.Take()); got != 8 {
		t.Fatalf("Take returned %d frames, want 8", got)
	}
	slow.Send([]byte("one too many"))
	fine.Send([]byte("8"))
	select {
	case <-slow.Done():
	default:
		t.Fatal("not closed after its queue overflowed")
	}
	if !errors.Is(slow.Err(), hub.ErrSlow) {
		t.Errorf("Err=%v, want ErrSlow", slow.Err())
	}
	if got := slow.Take(); len(got) != 0 {
		t.Errorf("closed client still has %d frames queued", len(got))
	}
	select {
	case <-fine.Done():
		t.Fatal("a client that keeps up was closed too")
	default:
	}
	if got := fine.Take(); len(got) != 1 || string(got[0]) != "8" {
		t.Errorf("fine client Take=%q, want [8]", got)
	}
}

func TestClient_FramesKeepOrder(t *testing.T) {
	h := newHub(t, hub.Config{})
	c, err := h.Join()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		c.Send([]byte(fmt.Sprint(i)))
	}
	<-c.Ready()
	got := c.Take()
	if fmt.Sprintf("%s", got) != "[0 1 2 3 4]" {
		t.Errorf("Take=%s, want [0 1 2 3 4]", got)
	}
}

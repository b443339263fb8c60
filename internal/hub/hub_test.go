package hub_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/memstore"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// newHub returns a hub whose store is never reached by these tests: the
// queue logic does not touch it.
func newHub(t *testing.T, cfg hub.Config) *hub.Hub {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	store := redisstore.New(rdb, redisstore.Config{}, zaptest.NewLogger(t))
	return hub.New(store, redisstore.NewBus(store, redisstore.BusConfig{}), cfg, zaptest.NewLogger(t))
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

func TestHub_ShutdownCountsEachLeaveOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	store := memstore.New(memstore.Config{})
	h := hub.New(store, store, hub.Config{Registerer: reg}, zaptest.NewLogger(t))
	ctx := context.Background()
	var clients []*hub.Client
	for i := range 3 {
		c, err := h.Join()
		if err != nil {
			t.Fatal(err)
		}
		if i < 2 { // the third only connects
			if err := c.View(ctx, "p"); err != nil {
				t.Fatal(err)
			}
		}
		clients = append(clients, c)
	}
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The transport then ends every connection.
	for _, c := range clients {
		if err := c.Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := gathered(t, reg, "presence_leaves_total"); got != 2 {
		t.Errorf("presence_leaves_total=%v, want 2", got)
	}
	if c, _ := store.Counts(ctx, []presence.PostID{"p"}); c[0].Viewers != 0 {
		t.Errorf("viewers after shutdown=%d, want 0", c[0].Viewers)
	}
	if _, err := h.Join(); err == nil {
		t.Error("Join after Shutdown succeeded")
	}
}

// gathered reads a counter's value from a registry.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}

// nopBus is a Bus for tests that deliver messages themselves.
type nopBus struct{}

func (nopBus) Subscribe(...presence.PostID)   {}
func (nopBus) Unsubscribe(...presence.PostID) {}

// failCounts is a store whose next Counts fails, as during a Redis outage.
type failCounts struct {
	presence.Store
	fail atomic.Bool
}

func (s *failCounts) Counts(ctx context.Context, posts []presence.PostID) ([]presence.Count, error) {
	if s.fail.CompareAndSwap(true, false) {
		return nil, presence.ErrUnavailable
	}
	return s.Store.Counts(ctx, posts)
}

// A count that a re-read brings, newer but with the numbers the room
// already sent, must still reach a member whose own watch failed; members
// that have it get nothing.
func TestHub_RereadReachesClientWithoutCount(t *testing.T) {
	store := &failCounts{Store: memstore.New(memstore.Config{})}
	h := hub.New(store, nopBus{}, hub.Config{Coalesce: -1}, zaptest.NewLogger(t))
	ctx := context.Background()
	viewer, _ := h.Join()
	if err := viewer.View(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	had, _ := h.Join()
	if err := had.Watch(ctx, []presence.PostID{"p"}); err != nil {
		t.Fatal(err)
	}
	if n := len(had.Take()); n != 1 {
		t.Fatalf("the first watcher got %d frames, want its count", n)
	}
	store.fail.Store(true)
	missed, _ := h.Join()
	if err := missed.Watch(ctx, []presence.PostID{"p"}); err == nil {
		t.Fatal("the second watch worked; the test needs it to fail")
	}
	missed.Take() // nothing, or nothing but what the failure queued
	counts, err := store.Counts(ctx, []presence.PostID{"p"})
	if err != nil {
		t.Fatal(err)
	}
	reread := counts[0]
	reread.Seq += 100 // newer, same numbers
	h.Deliver(presence.Message{Count: &reread})
	if n := len(missed.Take()); n != 1 {
		t.Errorf("the watcher whose watch failed got %d frames from the re-read, want 1", n)
	}
	if n := len(had.Take()); n != 0 {
		t.Errorf("the watcher that had the count got %d frames, want none", n)
	}
}

// lostReply is a real store whose chosen calls take effect but report an
// error, as when the reply is lost: the one fault of a real Redis that a
// test cannot place on a given call. It records where Leave was told to
// look.
type lostReply struct {
	*memstore.Store
	failView presence.PostID
	left     []presence.Session
}

func (s *lostReply) View(ctx context.Context, vs presence.Session, from presence.PostID, countView bool) (presence.Count, error) {
	c, err := s.Store.View(ctx, vs, from, countView)
	if err == nil && vs.Post == s.failView {
		return presence.Count{}, presence.ErrUnavailable
	}
	return c, err
}

func (s *lostReply) Leave(ctx context.Context, sessions ...presence.Session) error {
	s.left = append(s.left, sessions...)
	return s.Store.Leave(ctx, sessions...)
}

// TestClient_StaleSessionIsLeftWhereItMayBe: after a move whose reply was
// lost, the store may hold the session on either post; a partitioned store
// finds it only where it is told, so the next move and the last leave name
// the post the session may still be on.
func TestClient_StaleSessionIsLeftWhereItMayBe(t *testing.T) {
	ctx := context.Background()
	store := &lostReply{Store: memstore.New(memstore.Config{}), failView: "b"}
	h := hub.New(store, store.Store, hub.Config{}, zaptest.NewLogger(t))
	c, err := h.Join()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.View(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.View(ctx, "b"); err == nil {
		t.Fatal("the view of b reported no error")
	}
	if err := c.View(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(store.left) != fmt.Sprint([]presence.Session{{ID: c.ID, Post: "a"}}) {
		t.Errorf("before moving on, Leave was told %v; want the post a the lost move may have left it on", store.left)
	}
	store.left = nil
	if err := c.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(store.left) != fmt.Sprint([]presence.Session{{ID: c.ID, Post: "c"}}) {
		t.Errorf("the last Leave was told %v, want only c", store.left)
	}
}

// failCrossing is a real cluster store whose first move between two
// partitions fails before writing anything, as when the old partition's
// primary refuses connections.
type failCrossing struct {
	*redisstore.Store
	keys   redisstore.Keys
	failed bool
}

func (s *failCrossing) View(ctx context.Context, vs presence.Session, from presence.PostID, countView bool) (presence.Count, error) {
	if !s.failed && from != "" && s.keys.Partition(from) != s.keys.Partition(vs.Post) {
		s.failed = true
		return presence.Count{}, presence.ErrUnavailable
	}
	return s.Store.View(ctx, vs, from, countView)
}

// TestClient_ReregisterLeavesTheStalePost: a move from a to b (another
// partition) that failed leaves the session on a; the refresh that finds
// it missing on b must take it off a as it registers it on b, or a counts
// it until its key expires.
func TestClient_ReregisterLeavesTheStalePost(t *testing.T) {
	c := redistest.StartCluster(t, 3, false)
	rdb, err := redisstore.Connect(redisstore.Connection{Cluster: c.Addrs()}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	prefix := redistest.Prefix()
	st := redisstore.New(rdb, redisstore.Config{Prefix: prefix, TTL: time.Minute}, zaptest.NewLogger(t))
	store := &failCrossing{Store: st, keys: redisstore.NewClusterKeys(prefix)}
	h := hub.New(store, redisstore.NewBus(st, redisstore.BusConfig{}), hub.Config{}, zaptest.NewLogger(t))
	ctx := context.Background()
	a, b := presence.PostID("a"), presence.PostID("b")
	for i := 0; store.keys.Partition(a) == store.keys.Partition(b); i++ {
		b = presence.PostID(fmt.Sprint("b", i))
	}
	cl, err := h.Join()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.View(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := cl.View(ctx, b); err == nil {
		t.Fatal("the failing move reported no error")
	}
	h.Refresh(ctx) // finds the session missing on b and registers it again
	cs, err := st.Counts(ctx, []presence.PostID{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if cs[0].Viewers != 0 || cs[1].Viewers != 1 {
		t.Errorf("after the refresh %s has %d viewers and %s %d; want 0 and 1", a, cs[0].Viewers, b, cs[1].Viewers)
	}
}

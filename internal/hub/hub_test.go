package hub_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	slow, err := h.Join(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	fine, err := h.Join(nil, "")
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
	if got := len(take(fine)); got != 8 {
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
	if got := take(slow); len(got) != 0 {
		t.Errorf("closed client still has %d frames queued", len(got))
	}
	select {
	case <-fine.Done():
		t.Fatal("a client that keeps up was closed too")
	default:
	}
	if got := take(fine); len(got) != 1 || string(got[0]) != "8" {
		t.Errorf("fine client Take=%q, want [8]", got)
	}
}

func TestClient_FramesKeepOrder(t *testing.T) {
	h := newHub(t, hub.Config{})
	woken := 0
	c, err := h.Join(func() { woken++ }, "") // called under the client's lock
	if err != nil {
		t.Fatal(err)
	}
	if frames, ok := c.Next(); ok || len(frames) != 0 {
		t.Fatalf("a new client's Next=%q, %v; want nothing", frames, ok)
	}
	for i := range 5 {
		c.Send([]byte(fmt.Sprint(i)))
	}
	if woken != 1 {
		t.Fatalf("five frames woke the writer %d times, want once", woken)
	}
	got := drain(c)
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
		c, err := h.Join(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if i < 2 { // the third only connects
			if err := c.View(ctx, "p", false); err != nil {
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
	if _, err := h.Join(nil, ""); err == nil {
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
			if g := mf.Metric[0].GetGauge(); g != nil {
				return g.GetValue()
			}
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
	viewer, _ := h.Join(nil, "")
	if err := viewer.View(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	had, _ := h.Join(nil, "")
	if err := had.Watch(ctx, []presence.PostID{"p"}); err != nil {
		t.Fatal(err)
	}
	if n := len(take(had)); n != 1 {
		t.Fatalf("the first watcher got %d frames, want its count", n)
	}
	store.fail.Store(true)
	missed, _ := h.Join(nil, "")
	if err := missed.Watch(ctx, []presence.PostID{"p"}); err == nil {
		t.Fatal("the second watch worked; the test needs it to fail")
	}
	take(missed) // nothing, or nothing but what the failure queued
	counts, err := store.Counts(ctx, []presence.PostID{"p"})
	if err != nil {
		t.Fatal(err)
	}
	reread := counts[0]
	reread.Seq += 100 // newer, same numbers
	h.Deliver(presence.Message{Count: &reread})
	if n := len(take(missed)); n != 1 {
		t.Errorf("the watcher whose watch failed got %d frames from the re-read, want 1", n)
	}
	if n := len(take(had)); n != 0 {
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
	c, err := h.Join(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.View(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	if err := c.View(ctx, "b", false); err == nil {
		t.Fatal("the view of b reported no error")
	}
	if err := c.View(ctx, "c", false); err != nil {
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
	cl, err := h.Join(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.View(ctx, a, false); err != nil {
		t.Fatal(err)
	}
	if err := cl.View(ctx, b, false); err == nil {
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

// take is a writer's one call of Next: the frames queued for c, if any.
// A client joined with a nil wake function is never woken, so the tests
// call it when they expect frames.
func take(c *hub.Client) [][]byte {
	frames, _ := c.Next()
	return frames
}

// TestClient_WakesOneWriterAtATime is the contract the transport's
// on-demand writers rely on: wake once when frames start waiting, never
// while a writer runs, and again for Wake and for a close.
func TestClient_WakesOneWriterAtATime(t *testing.T) {
	h := newHub(t, hub.Config{QueueSize: 4})
	woken := 0
	c, err := h.Join(func() { woken++ }, "") // called under the client's lock
	if err != nil {
		t.Fatal(err)
	}
	c.Send([]byte("before the first Next"))
	if woken != 0 {
		t.Fatalf("woken %d times while the caller of Join is the writer", woken)
	}
	if frames, ok := c.Next(); !ok || len(frames) != 1 {
		t.Fatalf("first Next=%q, %v; want the frame sent before it", frames, ok)
	}
	if _, ok := c.Next(); ok {
		t.Fatal("Next reported work with an empty queue")
	}
	c.Send([]byte("a"))
	c.Send([]byte("b"))
	if woken != 1 {
		t.Fatalf("two frames woke %d writers, want 1", woken)
	}
	frames, _ := c.Next()
	c.Send([]byte("c")) // while that writer still runs
	if woken != 1 {
		t.Fatalf("a frame queued while a writer runs woke another: %d", woken)
	}
	if more, ok := c.Next(); !ok || fmt.Sprintf("%s%s", frames, more) != "[a b][c]" {
		t.Fatalf("the running writer got %s then %s, %v; want [a b] then [c]", frames, more, ok)
	}
	if _, ok := c.Next(); ok {
		t.Fatal("Next reported work with an empty queue")
	}
	c.Wake()
	if woken != 2 {
		t.Fatalf("Wake woke %d writers in all, want 2", woken)
	}
	if frames, ok := c.Next(); !ok || len(frames) != 0 {
		t.Fatalf("Next after Wake=%q, %v; want one run with nothing", frames, ok)
	}
	if _, ok := c.Next(); ok {
		t.Fatal("Wake made more than one run")
	}
	for i := range 5 { // one more than the queue holds
		c.Send([]byte(fmt.Sprint(i)))
	}
	if woken != 3 || !errors.Is(c.Err(), hub.ErrSlow) {
		t.Fatalf("after an overflow: woken %d, Err=%v; want 3 and ErrSlow", woken, c.Err())
	}
	if _, ok := c.Next(); !ok {
		t.Fatal("Next of a closed client idled its writer, which then would not see Done")
	}
	c.Wake()
	if woken != 3 {
		t.Fatalf("Wake of a closed client woke a writer")
	}
}

// A tab whose connection was lost resumes its session on a new one: the
// count never drops and the view is not counted twice.
func TestHub_ResumeKeepsTheSession(t *testing.T) {
	reg := prometheus.NewRegistry()
	store := memstore.New(memstore.Config{})
	h := hub.New(store, store, hub.Config{Registerer: reg}, zaptest.NewLogger(t))
	ctx := context.Background()
	first, err := h.Join(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := first.View(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	// The tab comes back while its first connection is not yet seen to be
	// dead: the new client takes the session over, the old one is retired
	// and its end touches nothing.
	second, err := h.Join(nil, first.ID)
	if err != nil || second.ID != first.ID {
		t.Fatalf("resume of a session still connected here: %v, %v; want it taken over", second, err)
	}
	if err := first.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := store.Counts(ctx, []presence.PostID{"p"}); c[0].Viewers != 1 {
		t.Fatalf("the retired client's leave removed the session: %d viewers", c[0].Viewers)
	}
	if got := gathered(t, reg, "presence_connections_open"); got != 1 {
		t.Errorf("presence_connections_open=%v, want 1", got)
	}
	if err := second.View(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	first = second
	first.Detach()
	want := func(what string, viewers, views int64) {
		t.Helper()
		c, err := store.Counts(ctx, []presence.PostID{"p"})
		if err != nil || c[0].Viewers != viewers || c[0].Views != views {
			t.Fatalf("%s: %+v, %v; want %d viewers and %d views", what, c, err, viewers, views)
		}
	}
	want("after the connection was lost", 1, 1)
	again, err := h.Join(nil, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID {
		t.Fatalf("resumed as %s, want %s", again.ID, first.ID)
	}
	if err := again.View(ctx, "p", false); err != nil {
		t.Fatal(err)
	}
	want("after the resume", 1, 1)
	if got := gathered(t, reg, "presence_sessions_resumed_total"); got != 2 {
		t.Errorf("presence_sessions_resumed_total=%v, want 2", got)
	}
	if got := gathered(t, reg, "presence_sessions_kept_total"); got != 2 {
		t.Errorf("presence_sessions_kept_total=%v, want 2: the retired client and the lost connection", got)
	}
	if err := again.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	want("after the tab closed", 0, 1)
}

// With a handoff grace, shutdown keeps the sessions for at least that long
// instead of removing them.
func TestHub_ShutdownHandsSessionsOff(t *testing.T) {
	reg := prometheus.NewRegistry()
	store := memstore.New(memstore.Config{TTL: time.Second})
	h := hub.New(store, store, hub.Config{Registerer: reg, HandoffGrace: time.Minute}, zaptest.NewLogger(t))
	ctx := context.Background()
	for range 2 {
		c, err := h.Join(nil, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.View(ctx, "p", false); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := store.Counts(ctx, []presence.PostID{"p"}); c[0].Viewers != 2 {
		t.Errorf("viewers after a handoff=%d, want 2", c[0].Viewers)
	}
	// Held a minute, past their 1s TTL.
	if due, next, err := store.Due(ctx, 10); err != nil || len(due) != 0 || next < 30*time.Second {
		t.Errorf("Due after the handoff = %v, next in %v, %v; want none for more than 30s", due, next, err)
	}
	if got := gathered(t, reg, "presence_sessions_kept_total"); got != 2 {
		t.Errorf("presence_sessions_kept_total=%v, want 2", got)
	}
	if got := gathered(t, reg, "presence_leaves_total"); got != 0 {
		t.Errorf("presence_leaves_total=%v, want 0", got)
	}
}

// fromStore records the post each View names as where the session was.
type fromStore struct {
	*memstore.Store
	mu   sync.Mutex
	from []presence.PostID
}

func (s *fromStore) View(ctx context.Context, vs presence.Session, from presence.PostID, countView bool) (presence.Count, error) {
	s.mu.Lock()
	s.from = append(s.from, from)
	s.mu.Unlock()
	return s.Store.View(ctx, vs, from, countView)
}

// A session taken over from a client here keeps telling the store where it
// was: a partitioned store finds it on its old post only when told.
func TestHub_TakeoverNamesTheOldPost(t *testing.T) {
	ms := memstore.New(memstore.Config{})
	store := &fromStore{Store: ms}
	h := hub.New(store, ms, hub.Config{}, zaptest.NewLogger(t))
	ctx := context.Background()
	first, err := h.Join(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := first.View(ctx, "a", false); err != nil {
		t.Fatal(err)
	}
	second, err := h.Join(nil, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.View(ctx, "b", false); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if got := fmt.Sprint(store.from); got != "[ a]" {
		t.Errorf("views named the posts the session was on as %s, want [ a]", got)
	}
	if c, _ := ms.Counts(ctx, []presence.PostID{"a", "b"}); c[0].Viewers != 0 || c[1].Viewers != 1 {
		t.Errorf("counts after the move %+v, want a at 0 and b at 1", c)
	}
}

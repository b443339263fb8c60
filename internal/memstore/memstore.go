// Package memstore is the embedded presence.Store: everything in this
// process's memory, with the same semantics as the Redis store, for a single
// app server that needs no Redis. Sessions expire through a deadline heap,
// so nothing ever scans all sessions; the in-process gc.Collector prunes
// them, exactly as cmd/gc does for Redis.
package memstore

import (
	"container/heap"
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/presence/presence/internal/presence"
)

// Config configures a Store. The zero value is usable.
type Config struct {
	// TTL is how long a session lives without a refresh. Default: 90s.
	TTL time.Duration
	// ViewsTTL is how long a post's views total is kept after its last
	// view. Default: presence.DefaultViewsTTL; negative: forever.
	ViewsTTL time.Duration
}

// Store keeps presence in memory. It is also its own Feed (every change
// goes to every sink; the hub ignores posts it has no room for), Publisher
// and Pruner.
//
// Two locks, never held together. mu guards the state and is held while
// sinks are called, so that changes reach them in order: a sink (the hub)
// takes its own lock under mu, and so must never call the store while
// holding it. imu guards only the posts subscribed to, because the hub
// subscribes while holding its lock: taking mu there would close a cycle.
type Store struct {
	ttl      time.Duration
	viewsTTL time.Duration // 0: forever

	mu        sync.Mutex
	seq       int64
	sessions  map[presence.SessionID]*session
	viewers   map[presence.PostID]map[presence.SessionID]struct{} // emptied sets are deleted
	hidden    map[presence.PostID]int64                           // viewers whose tab is hidden; no zeros kept
	people    map[presence.PostID]map[string]int                  // visitor -> its sessions on the post; no zeros kept
	views     map[presence.PostID]*list.Element                   // of *views, in viewsLRU
	viewsLRU  *list.List                                          // least recently viewed first
	viewsPeak int                                                 // most entries views held since it was made
	deadlines deadlineHeap
	sinks     map[int]func(presence.Message)
	nextSink  int
	// early holds the changes made while no sink ran, for the first Run:
	// the app server takes connections before the goroutine that runs the
	// hub's feed has started, and a change lost then (a tab that leaves
	// at once) would leave its watchers' count wrong until the next one.
	early []presence.Message

	imu      sync.Mutex               // see Store
	interest map[presence.PostID]bool // posts the hub subscribed to
}

// views is a post's views total and when it expires.
type views struct {
	post    presence.PostID
	n       int64
	expires time.Time
}

type session struct {
	id       presence.SessionID
	post     presence.PostID
	hidden   bool   // counted in the post's hidden viewers
	visitor  string // counted in the post's people under this name; "" while in none
	deadline time.Time
	index    int // in the heap
}

// The roles the embedded store fills (see presence/roles.go): all but
// Sweeper, since its deadlines live in the same structure as its sessions
// and cannot drift apart from them.
var (
	_ presence.Store     = (*Store)(nil)
	_ presence.Feed      = (*Store)(nil)
	_ presence.Publisher = (*Store)(nil)
	_ presence.Pruner    = (*Store)(nil)
)

// New returns an empty Store.
func New(cfg Config) *Store {
	cfg.TTL, cfg.ViewsTTL = presence.StoreTTLs(cfg.TTL, cfg.ViewsTTL)
	return &Store{
		ttl:      cfg.TTL,
		viewsTTL: cfg.ViewsTTL,
		sessions: make(map[presence.SessionID]*session),
		viewers:  make(map[presence.PostID]map[presence.SessionID]struct{}),
		hidden:   make(map[presence.PostID]int64),
		people:   make(map[presence.PostID]map[string]int),
		views:    make(map[presence.PostID]*list.Element),
		viewsLRU: list.New(),
		sinks:    make(map[int]func(presence.Message)),
		interest: make(map[presence.PostID]bool),
	}
}

// TTL implements presence.Store.
func (s *Store) TTL() time.Duration { return s.ttl }

// Ping implements presence.Store; memory is always there.
func (s *Store) Ping(context.Context) error { return nil }

// View implements presence.Store.
func (s *Store) View(_ context.Context, vs presence.Session, _ presence.PostID, countView bool) (presence.Count, error) {
	sid, post := vs.ID, vs.Post
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	// A session past its deadline but not yet pruned is taken over as it
	// is, as the Redis script overwrites a stale viewers entry.
	ss := s.sessions[sid]
	// A session's first view of a post never finds it on that post: a
	// retried view does, and must not count twice (as in view.lua).
	countView = countView && (ss == nil || ss.post != post)
	added := false
	if ss == nil {
		ss = &session{id: sid, post: post, deadline: now.Add(s.ttl)}
		s.sessions[sid] = ss
		heap.Push(&s.deadlines, ss)
		added = s.addViewer(post, sid)
	} else {
		if ss.post != post {
			old := ss.post
			removed := s.removeViewer(old, sid)
			unhidden := s.setHidden(ss, false)
			if s.setVisitor(ss, "") || unhidden || removed {
				s.publish(old)
			}
			ss.post = post
		}
		added = s.addViewer(post, sid)
		ss.deadline = now.Add(s.ttl)
		heap.Fix(&s.deadlines, ss.index)
	}
	turned := s.setHidden(ss, vs.Hidden)
	// A session without a visitor id is a person of its own.
	visitor := string(vs.Visitor)
	if visitor == "" {
		visitor = "s:" + string(sid)
	}
	turned = s.setVisitor(ss, visitor) || turned
	s.expireViews(now)
	if countView {
		s.countView(post, now)
	} else {
		s.touchViews(post, now)
	}
	if added || countView || turned {
		return s.publish(post), nil
	}
	return s.count(post), nil
}

// setVisitor counts the session in its post's people as visitor, or in
// none for "", and says whether that changed. Callers hold mu.
func (s *Store) setVisitor(ss *session, visitor string) bool {
	if ss.visitor == visitor {
		return false
	}
	if ss.visitor != "" {
		m := s.people[ss.post]
		if m[ss.visitor]--; m[ss.visitor] <= 0 {
			delete(m, ss.visitor)
		}
		if len(m) == 0 {
			delete(s.people, ss.post)
		}
	}
	ss.visitor = visitor
	if visitor != "" {
		m := s.people[ss.post]
		if m == nil {
			m = make(map[string]int)
			s.people[ss.post] = m
		}
		m[visitor]++
	}
	return true
}

// setHidden counts the session among its post's hidden viewers, or not,
// and says whether that changed. Callers hold mu.
func (s *Store) setHidden(ss *session, hidden bool) bool {
	if ss.hidden == hidden {
		return false
	}
	ss.hidden = hidden
	if hidden {
		s.hidden[ss.post]++
	} else if s.hidden[ss.post]--; s.hidden[ss.post] <= 0 {
		delete(s.hidden, ss.post)
	}
	return true
}

// Leave implements presence.Store.
func (s *Store) Leave(_ context.Context, sessions ...presence.Session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := make(map[presence.PostID]bool)
	for _, ss := range sessions {
		if post, ok := s.drop(ss.ID); ok {
			changed[post] = true
		}
	}
	for post := range changed {
		s.publish(post)
	}
	return nil
}

// Refresh implements presence.Store.
func (s *Store) Refresh(_ context.Context, sessions []presence.Session) ([]presence.SessionID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var missing []presence.SessionID
	for _, in := range sessions {
		ss := s.sessions[in.ID]
		if ss == nil || ss.post != in.Post || !ss.deadline.After(now) {
			missing = append(missing, in.ID)
			continue
		}
		ss.deadline = now.Add(s.ttl)
		heap.Fix(&s.deadlines, ss.index)
	}
	return missing, nil
}

// Hold implements presence.Store.
func (s *Store) Hold(_ context.Context, sessions []presence.Session, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	until := time.Now().Add(d)
	for _, in := range sessions {
		ss := s.sessions[in.ID]
		if ss == nil || ss.post != in.Post || !ss.deadline.After(time.Now()) || !ss.deadline.Before(until) {
			continue
		}
		ss.deadline = until
		heap.Fix(&s.deadlines, ss.index)
	}
	return nil
}

// Counts implements presence.Store.
func (s *Store) Counts(_ context.Context, posts []presence.PostID) ([]presence.Count, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireViews(time.Now())
	out := make([]presence.Count, len(posts))
	for i, p := range posts {
		out[i] = s.count(p)
	}
	return out, nil
}

// Due returns up to limit sessions whose deadline has passed and, when none
// is due, the time until the next deadline (negative: none).
func (s *Store) Due(_ context.Context, limit int) ([]presence.Session, time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	// The collector polls at least every PRESENCE_GC_POLL, which makes this
	// the memory store's sweep of expired totals too.
	s.expireViews(now)
	if len(s.deadlines) == 0 {
		return nil, -1, nil
	}
	// The heap's order is only partial: walk it breadth-first from the
	// root, descending only below due entries, so the cost is O(due).
	var due []presence.Session
	queue := []int{0}
	for len(queue) > 0 && len(due) < limit {
		i := queue[0]
		queue = queue[1:]
		if i >= len(s.deadlines) || s.deadlines[i].deadline.After(now) {
			continue
		}
		due = append(due, presence.Session{ID: s.deadlines[i].id, Post: s.deadlines[i].post})
		queue = append(queue, 2*i+1, 2*i+2)
	}
	if len(due) > 0 {
		return due, 0, nil
	}
	return nil, s.deadlines[0].deadline.Sub(now), nil
}

// Prune removes the sessions whose deadline has passed and returns how long
// after its deadline each was removed; live and unknown ones are left alone.
func (s *Store) Prune(_ context.Context, sessions []presence.Session) ([]time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var lags []time.Duration
	changed := make(map[presence.PostID]bool)
	for _, due := range sessions {
		sid := due.ID
		ss := s.sessions[sid]
		if ss == nil || ss.deadline.After(now) {
			continue
		}
		lags = append(lags, now.Sub(ss.deadline))
		if post, ok := s.drop(sid); ok {
			changed[post] = true
		}
	}
	for post := range changed {
		s.publish(post)
	}
	return lags, nil
}

// Subscribe implements presence.Subscriber. Every change goes to every sink
// anyway (the hub ignores posts it has no room for); the Store only keeps
// the posts so that Publish can say whether this server took an event.
func (s *Store) Subscribe(posts ...presence.PostID) {
	s.imu.Lock()
	defer s.imu.Unlock()
	for _, p := range posts {
		s.interest[p] = true
	}
}

// Unsubscribe implements presence.Subscriber; see Subscribe.
func (s *Store) Unsubscribe(posts ...presence.PostID) {
	s.imu.Lock()
	defer s.imu.Unlock()
	for _, p := range posts {
		delete(s.interest, p)
	}
}

// Publish delivers an event to the sinks and returns how many app servers
// took it, as the Redis store does: 1 if this one has clients on the post,
// else 0.
func (s *Store) Publish(_ context.Context, ev presence.Event) (int, error) {
	s.imu.Lock()
	took := s.interest[ev.Post]
	s.imu.Unlock()
	if !took {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deliver(presence.Message{Event: &ev})
	return 1, nil
}

// maxEarly bounds the changes kept for a Run that has not started: a
// feed that never starts must not grow the store without end.
const maxEarly = 4096

// deliver hands a change to every sink, or keeps it for the first while
// there is none. Callers hold mu.
func (s *Store) deliver(m presence.Message) {
	if len(s.sinks) == 0 {
		if len(s.early) >= maxEarly {
			s.early = s.early[1:]
		}
		s.early = append(s.early, m)
		return
	}
	for _, deliver := range s.sinks {
		// Each sink gets its own copy, as a Redis subscriber parses its own.
		mm := m
		if m.Count != nil {
			c := *m.Count
			mm.Count = &c
		}
		if m.Event != nil {
			e := *m.Event
			mm.Event = &e
		}
		deliver(mm)
	}
}

// Run delivers every change to deliver until ctx ends, starting with those
// made before any Run started. Several may run. deliver is called with the
// store locked, in change order, so it must not call the store.
func (s *Store) Run(ctx context.Context, deliver func(presence.Message)) error {
	s.mu.Lock()
	id := s.nextSink
	s.nextSink++
	s.sinks[id] = deliver
	for _, m := range s.early {
		deliver(m)
	}
	s.early = nil
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	delete(s.sinks, id)
	s.mu.Unlock()
	return nil
}

// drop removes a session entirely and reports the post it viewed. Callers
// hold mu.
func (s *Store) drop(sid presence.SessionID) (presence.PostID, bool) {
	ss := s.sessions[sid]
	if ss == nil {
		return "", false
	}
	delete(s.sessions, sid)
	heap.Remove(&s.deadlines, ss.index)
	unhidden := s.setHidden(ss, false)
	gone := s.setVisitor(ss, "")
	return ss.post, s.removeViewer(ss.post, sid) || unhidden || gone
}

func (s *Store) addViewer(post presence.PostID, sid presence.SessionID) bool {
	set := s.viewers[post]
	if set == nil {
		set = make(map[presence.SessionID]struct{})
		s.viewers[post] = set
	}
	if _, ok := set[sid]; ok {
		return false
	}
	set[sid] = struct{}{}
	return true
}

// removeViewer deletes an emptied set, so memory follows live posts as
// Redis does when SREM removes a set's last member.
func (s *Store) removeViewer(post presence.PostID, sid presence.SessionID) bool {
	set := s.viewers[post]
	if _, ok := set[sid]; !ok {
		return false
	}
	delete(set, sid)
	if len(set) == 0 {
		delete(s.viewers, post)
	}
	return true
}

func (s *Store) count(post presence.PostID) presence.Count {
	var n int64
	if e := s.views[post]; e != nil {
		n = e.Value.(*views).n
	}
	viewers := int64(len(s.viewers[post]))
	return presence.Count{Post: post, Viewers: viewers, Views: n, Reading: max(0, viewers-s.hidden[post]), People: int64(len(s.people[post])), Seq: s.seq}
}

// countView adds a view to the post's total and pushes its expiry out.
// Callers hold mu.
func (s *Store) countView(post presence.PostID, now time.Time) {
	e := s.views[post]
	if e == nil {
		e = s.viewsLRU.PushBack(&views{post: post})
		s.views[post] = e
		s.viewsPeak = max(s.viewsPeak, len(s.views))
	}
	e.Value.(*views).n++
	s.touchViews(post, now)
}

// touchViews pushes the expiry of the post's total out, as view.lua does
// on every view. Every expiry is now plus the same TTL, so the list stays
// ordered by expiry when the touched entry moves to its back. Callers hold
// mu.
func (s *Store) touchViews(post presence.PostID, now time.Time) {
	e := s.views[post]
	if e == nil {
		return
	}
	e.Value.(*views).expires = now.Add(s.viewsTTL)
	s.viewsLRU.MoveToBack(e)
}

// expireViews drops the totals whose expiry has passed, oldest first, so
// the cost is what expires. Callers hold mu.
func (s *Store) expireViews(now time.Time) {
	if s.viewsTTL == 0 {
		return
	}
	for e := s.viewsLRU.Front(); e != nil; e = s.viewsLRU.Front() {
		v := e.Value.(*views)
		if v.expires.After(now) {
			break
		}
		s.viewsLRU.Remove(e)
		delete(s.views, v.post)
	}
	// A Go map keeps its buckets when entries go: after a burst of made-up
	// posts has expired, a copy made to the size left gives their memory
	// back (maps.Clone would copy the buckets as they are).
	if s.viewsPeak > 4096 && len(s.views) < s.viewsPeak/4 {
		m := make(map[presence.PostID]*list.Element, len(s.views))
		for p, e := range s.views {
			m[p] = e
		}
		s.views, s.viewsPeak = m, len(m)
	}
}

// Posts returns how many posts the store keeps anything of: a views total
// or viewers. It says whether memory follows live and recent posts only.
func (s *Store) Posts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireViews(time.Now())
	n := len(s.views)
	for p := range s.viewers {
		if s.views[p] == nil {
			n++
		}
	}
	return n
}

// publish gives a change the next seq and delivers the new count. Callers
// hold mu.
func (s *Store) publish(post presence.PostID) presence.Count {
	s.seq++
	c := s.count(post)
	cc := c
	s.deliver(presence.Message{Count: &cc})
	return c
}

// deadlineHeap orders sessions by deadline, earliest first.
type deadlineHeap []*session

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *deadlineHeap) Push(x any) {
	ss := x.(*session)
	ss.index = len(*h)
	*h = append(*h, ss)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	n := len(old)
	ss := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return ss
}

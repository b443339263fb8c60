package hub

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/presence"
)

// Config configures a Hub. The zero value is usable.
type Config struct {
	// Coalesce is the per-post window: at most one count frame per window to
	// each client, always the latest value. Default: 250ms; negative: none.
	Coalesce time.Duration
	// MaxWatch is how many posts one client may watch. Default: 100.
	MaxWatch int
	// QueueSize is how many frames may wait for a slow client before it is
	// closed. Count frames replace an unsent count of the same post, so only
	// events and errors can fill it. Default: 256.
	QueueSize int
	// StoreCheck is how often Run pings the store, so that clients are told
	// when counts stop being live and when they are live again. Default: 1s.
	StoreCheck time.Duration
	// HandoffGrace is how long Shutdown keeps the sessions of its clients
	// at least, for their tabs to resume them on another app server; zero
	// removes them at once. Default: zero.
	HandoffGrace time.Duration
	// Registerer receives the hub's metrics. Default: none.
	Registerer prometheus.Registerer
}

// ErrClosed is returned by the hub and its clients once the hub shuts down
// or the client has left.
var ErrClosed = presence.Errorf(presence.CodeUnavailable, "the server is shutting down")

// Hub is the set of an app server's live sessions and the rooms of the posts
// they view or watch.
type Hub struct {
	store presence.Store
	bus   presence.Subscriber
	cfg   Config
	log   *zap.Logger
	m     metrics

	mu        sync.Mutex
	rooms     map[presence.PostID]*room
	sessions  map[presence.SessionID]*Client
	closed    bool
	storeDown bool // the last store check failed; new clients are told so

	reregWarn logging.Throttle // one line per session would flood an outage's log
}

// room is the local interest in one post.
type room struct {
	post    presence.PostID
	members map[*Client]struct{}
	count   presence.Count // newest known; Seq 0 means none yet
	last    time.Time      // when count frames last went out
	timer   *time.Timer    // a pending flush, if any
}

type metrics struct {
	open    prometheus.Gauge
	views   prometheus.Counter
	leaves  prometheus.Counter
	rereg   prometheus.Counter
	kept    prometheus.Counter
	resumed prometheus.Counter
	dropped prometheus.Counter
	slow    prometheus.Counter
	errors  prometheus.Counter
}

// New returns a Hub that keeps its sessions in store and hears of other
// servers' changes through bus.
func New(store presence.Store, bus presence.Subscriber, cfg Config, log *zap.Logger) *Hub {
	if cfg.Coalesce == 0 {
		cfg.Coalesce = 250 * time.Millisecond
	}
	if cfg.MaxWatch <= 0 {
		cfg.MaxWatch = 100
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 256
	}
	if cfg.StoreCheck <= 0 {
		cfg.StoreCheck = time.Second
	}
	h := &Hub{
		store:     store,
		bus:       bus,
		cfg:       cfg,
		log:       log.Named("hub"),
		rooms:     make(map[presence.PostID]*room),
		sessions:  make(map[presence.SessionID]*Client),
		reregWarn: logging.Throttle{Every: 10 * time.Second},
		m: metrics{
			open: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "presence_connections_open", Help: "Clients connected to this app server.",
			}),
			views: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_views_total", Help: "View requests that the store accepted.",
			}),
			leaves: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_leaves_total", Help: "Sessions that stopped viewing: unview, move away, a closed socket, or shutdown without a handoff grace.",
			}),
			rereg: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_reregistrations_total", Help: "Live sessions registered again after their key vanished.",
			}),
			kept: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_sessions_kept_total", Help: "Viewing sessions left in the store for their tabs to resume: connection lost, or handed off at shutdown.",
			}),
			resumed: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_sessions_resumed_total", Help: "Connections that continued a session with its resume token.",
			}),
			dropped: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_frames_dropped_total", Help: "Frames not sent: replaced by a newer count, or queued for a client that was closed.",
			}),
			slow: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_slow_clients_total", Help: "Clients closed because their send queue was full.",
			}),
			errors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "presence_store_errors_total", Help: "Store calls of the hub that failed.",
			}),
		},
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(h.m.open, h.m.views, h.m.leaves, h.m.rereg, h.m.kept, h.m.resumed, h.m.dropped, h.m.slow, h.m.errors)
	}
	return h
}

// Join registers a new client: with the session resume, when the tab
// presented that session's resume token, or with a fresh session id. A
// client here that still has the session (its connection not yet seen to
// be dead: a half-open socket, a dial the tab gave up on) is retired
// without touching the store; the token proves the tab is the same. wake
// is called,
// with the client's queue lock held, whenever the client needs a writer:
// frames wait, Wake was called, or the client was closed. It must only
// start one (a goroutine that calls Next until it reports false) and
// return. The caller is the client's first writer: it may write what comes
// before everything (a hello), then calls Next like any writer, and wake
// is not called until a Next reported false.
func (h *Hub) Join(wake func(), resume presence.SessionID) (*Client, error) {
	c := &Client{
		hub:  h,
		done: make(chan struct{}),
		wake: wake,
		busy: true,
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	var retired *Client
	if resume != "" {
		c.ID = resume
		h.m.resumed.Inc()
		if retired = h.sessions[resume]; retired != nil {
			h.m.open.Dec() // its entry is the new client's now
			// The store holds the session on the post it viewed: a
			// partitioned store finds it there only if told.
			c.stale = retired.view
		}
	} else {
		c.ID = presence.NewSessionID()
	}
	h.sessions[c.ID] = c
	h.m.open.Inc()
	if h.storeDown {
		c.Send(presence.Status(false))
	}
	h.mu.Unlock()
	if retired != nil {
		// Closed with ErrReplaced, for its transport to end the connection;
		// then left, and out of its rooms, with no store call. The map
		// entry is the new client's, which end leaves alone.
		retired.close(ErrReplaced)
		retired.Detach()
	}
	return c, nil
}

// clientsLocked returns the connected clients, for work done on them after
// h.mu is released. Callers hold h.mu.
func (h *Hub) clientsLocked() []*Client {
	return slices.Collect(maps.Values(h.sessions))
}

// WakeAll calls Wake on every client, so that every transport writer runs
// once: a server that shuts down has its idle connections closed that way.
func (h *Hub) WakeAll() {
	h.mu.Lock()
	clients := h.clientsLocked()
	h.mu.Unlock()
	for _, c := range clients {
		c.Wake()
	}
}

// setStore records the outcome of a store check and, when it changed, tells
// every client: while the store is away, counts are not live.
func (h *Hub) setStore(up bool, err error) {
	h.mu.Lock()
	if h.storeDown != up {
		h.mu.Unlock()
		return
	}
	h.storeDown = !up
	clients := h.clientsLocked()
	h.mu.Unlock()
	if up {
		h.log.Info("the store answers again; clients are told counts are live")
	} else {
		h.log.Warn("the store does not answer; clients are told counts are paused", zap.Error(err))
	}
	frame := presence.Status(up)
	for _, c := range clients {
		c.Send(frame)
	}
}

// Deliver takes a message from the store's Feed. It must return at once.
func (h *Hub) Deliver(m presence.Message) {
	if m.Count != nil {
		h.update(*m.Count)
	}
	if m.Event != nil {
		h.event(*m.Event)
	}
}

// update records a count that is newer than the room's and schedules its
// flush: at once if the room sent nothing for a window, else at the end of
// the window, with whatever value is newest then.
func (h *Hub) update(cnt presence.Count) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[cnt.Post]
	if r == nil || cnt.Seq <= r.count.Seq || h.closed {
		// Once the hub shuts down, its tabs keep what they show: the
		// counts that follow are those of their own sessions' removal, and
		// the tabs are about to reconnect and register again.
		return
	}
	// A newer count with the same numbers (a read takes a newer seq even
	// when nothing changed) still goes to the members: one whose own view
	// or watch failed has nothing yet, and the others skip it (enqueueCount).
	r.count = cnt
	if r.timer != nil {
		return
	}
	now := time.Now()
	if wait := r.last.Add(h.cfg.Coalesce).Sub(now); wait > 0 {
		r.timer = time.AfterFunc(wait, func() { h.flush(r) })
		return
	}
	h.flushLocked(r, now)
}

func (h *Hub) flush(r *room) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rooms[r.post] != r {
		return // the room was emptied meanwhile
	}
	r.timer = nil
	h.flushLocked(r, time.Now())
}

func (h *Hub) flushLocked(r *room, now time.Time) {
	r.last = now
	frame := r.count.Frame()
	for c := range r.members {
		c.enqueueCount(r.count, frame)
	}
}

// event sends an event to every local client of its post, in the order the
// hub receives events; events are never coalesced.
func (h *Hub) event(ev presence.Event) {
	frame := ev.Frame()
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[ev.Post]
	if r == nil {
		return
	}
	for c := range r.members {
		c.Send(frame)
	}
}

// join adds c to the post's room, creating the room and subscribing to the
// post when c is its first local member. Callers hold h.mu.
func (h *Hub) join(post presence.PostID, c *Client) {
	r := h.rooms[post]
	if r == nil {
		r = &room{post: post, members: make(map[*Client]struct{})}
		h.rooms[post] = r
		h.bus.Subscribe(post)
	}
	r.members[c] = struct{}{}
}

// part removes c from the post's room unless c still views or watches it,
// and drops the room when it empties, so memory and subscriptions follow
// local interest. Callers hold h.mu.
func (h *Hub) part(post presence.PostID, c *Client) {
	if c.view == post {
		return
	}
	if _, ok := c.watch[post]; ok {
		return
	}
	r := h.rooms[post]
	if r == nil {
		return
	}
	delete(r.members, c)
	c.forget(post)
	if len(r.members) == 0 {
		if r.timer != nil {
			r.timer.Stop()
		}
		delete(h.rooms, post)
		h.bus.Unsubscribe(post)
	}
}

// Run refreshes the hub's sessions every third of the store's TTL, and
// checks the store every StoreCheck, until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	// The check has a loop of its own: a refresh against a Redis that is
	// away takes as long as the dial timeouts, and must not delay the news.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.checkStore(ctx)
	}()
	defer wg.Wait()
	t := time.NewTicker(h.store.TTL() / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			h.Refresh(ctx)
		}
	}
}

func (h *Hub) checkStore(ctx context.Context) {
	t := time.NewTicker(h.cfg.StoreCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, min(h.cfg.StoreCheck, time.Second))
		err := h.store.Ping(cctx)
		cancel()
		if ctx.Err() == nil {
			h.setStore(err == nil, err)
		}
	}
}

// Refresh pushes the deadlines of all viewing sessions forward, in batches,
// and registers again those the store no longer had.
func (h *Hub) Refresh(ctx context.Context) {
	h.mu.Lock()
	sessions := make([]presence.Session, 0, len(h.sessions))
	for _, c := range h.sessions {
		if c.view != "" {
			sessions = append(sessions, presence.Session{ID: c.ID, Post: c.view})
		}
	}
	h.mu.Unlock()
	// The store batches the calls; missing sessions come back together.
	missing, err := h.store.Refresh(ctx, sessions)
	if err != nil {
		h.m.errors.Inc()
		h.log.Warn("refresh failed; sessions may expire unless the next refresh works", zap.Int("sessions", len(sessions)), zap.Error(err))
	}
	for _, sid := range missing {
		h.mu.Lock()
		c := h.sessions[sid]
		h.mu.Unlock()
		if c != nil {
			c.reregister(ctx)
		}
	}
}

// Shutdown refuses new clients and views, and hands every session off: it
// keeps them in the store for at least Config.HandoffGrace, for the tabs to
// resume them on another app server, or with no grace removes them, in
// batches. The transport closes the connections afterwards; their Leave
// calls then find nothing left to do.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closed = true
	clients := h.clientsLocked()
	h.mu.Unlock()
	var sessions []presence.Session
	for _, c := range clients {
		c.opMu.Lock()
		if !c.left {
			c.left = true
			if c.view != "" {
				if h.cfg.HandoffGrace > 0 {
					h.m.kept.Inc()
				} else {
					h.m.leaves.Inc()
				}
			}
			sessions = append(sessions, c.placed(c.view)...)
		}
		c.opMu.Unlock()
	}
	if len(sessions) == 0 {
		return nil
	}
	if h.cfg.HandoffGrace > 0 {
		if err := h.store.Hold(ctx, sessions, h.cfg.HandoffGrace); err != nil {
			h.m.errors.Inc()
			return errors.Join(errors.New("keep sessions for their tabs to resume at shutdown; they live out their TTL instead"), err)
		}
		return nil
	}
	if err := h.store.Leave(ctx, sessions...); err != nil {
		h.m.errors.Inc()
		return errors.Join(errors.New("remove sessions at shutdown; they expire after one TTL"), err)
	}
	return nil
}

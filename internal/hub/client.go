package hub

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/presence/presence/internal/presence"
)

// maxSeen bounds the posts a session remembers having viewed.
const maxSeen = 64

// ErrSlow is the reason a client is closed when its send queue is full.
var ErrSlow = errors.New("send queue full: the client does not read fast enough")

// ErrReplaced is the reason a client is closed when its tab resumed the
// session on another connection: the transport ends this one.
var ErrReplaced = errors.New("the session was resumed on another connection")

// Client is one connected browser tab: a session that views at most one post
// and watches up to Config.MaxWatch others. The transport calls View, Unview,
// Watch and Unwatch as frames arrive, writes what Next returns to the socket
// whenever the hub wakes it, and calls Leave when the connection ends.
type Client struct {
	hub *Hub
	// ID is the client's session id.
	ID presence.SessionID

	// opMu serialises this session's store calls, so a refresh that finds
	// the session gone cannot re-register it over a concurrent move or leave.
	opMu sync.Mutex
	// seen are the posts whose view was counted, guarded by opMu: a slice,
	// as a tab views one post or a few, and a map costs an idle tab 250 B.
	seen []presence.PostID
	left bool // guarded by opMu
	// hidden says the tab is in the background, guarded by opMu: the
	// session views its post without reading it.
	hidden bool
	// visitor names the tab's browser, guarded by opMu: tabs of one
	// visitor on a post count as one person.
	visitor presence.VisitorID
	// stale is a post the store may still hold the session on, though view
	// is not it, after a call whose outcome is unknown; guarded by opMu. A
	// partitioned store finds the session only where it is told to look.
	stale presence.PostID

	// view and watch are guarded by hub.mu: the rooms read them.
	view  presence.PostID
	watch map[presence.PostID]struct{}

	qmu     sync.Mutex
	pending [][]byte
	counts  []sentCount // per post heard: the last count queued
	closed  bool
	err     error
	done    chan struct{}
	// wake starts a writer; busy says one runs (or the transport writes
	// before its first Next), kicked that Wake asked for a run.
	wake   func()
	busy   bool
	kicked bool
}

// View makes the client a viewer of post, moving it off the post it viewed,
// and queues the post's count for it. hidden says its tab is in the
// background: it views the post without reading it. A view of the post
// it views already only changes that.
func (c *Client) View(ctx context.Context, post presence.PostID, hidden bool) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if c.left {
		return ErrClosed
	}
	c.hidden = hidden
	h := c.hub
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	old := c.view
	c.view = post
	h.join(post, c)
	// Forgotten before the store call: a flush that races it then sends a
	// newer count, which the offer below does not undo.
	c.forget(post)
	if old != "" && old != post {
		h.part(old, c)
		h.m.leaves.Inc()
	}
	h.mu.Unlock()

	seen := slices.Contains(c.seen, post)
	if !seen {
		if len(c.seen) >= maxSeen {
			// A tab views one post, and a few if a page moves it around; a
			// client cycling through thousands must not grow this forever,
			// and counting its views again is the cheaper failure.
			c.seen = nil
		}
		// Marked before the call: if the reply is lost the view may have
		// been counted, and a count missed is better than a count doubled.
		c.seen = append(c.seen, post)
	}
	cnt, err := c.storeView(ctx, old, post, !seen)
	if err != nil {
		// The membership stays: the client asked for this post, and the next
		// refresh registers the session once the store is back.
		h.m.errors.Inc()
		return err
	}
	h.m.views.Inc()
	c.offer(cnt)
	return nil
}

// SetVisitor names the browser the client's tab is in, for the views that
// follow: its tabs on a post count as one person there.
func (c *Client) SetVisitor(v presence.VisitorID) {
	c.opMu.Lock()
	c.visitor = v
	c.opMu.Unlock()
}

// Unview stops the client viewing its post; it stays connected and keeps its
// watches.
func (c *Client) Unview(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if c.left {
		return ErrClosed
	}
	h := c.hub
	h.mu.Lock()
	old := c.view
	c.view = ""
	if old != "" {
		h.part(old, c)
	}
	h.mu.Unlock()
	if old == "" {
		return nil
	}
	h.m.leaves.Inc()
	if err := h.store.Leave(ctx, c.placed(old)...); err != nil {
		c.stale = old
		h.m.errors.Inc()
		return err
	}
	c.stale = ""
	return nil
}

// storeView registers the session on post in the store, having last been
// placed on last. It names the post the store may hold the session on (a
// partitioned store looks nowhere else): last, or the stale post when last
// is post or none. A stale post beside those two is left first, as View
// names only one; it stays stale if that fails. After a failed View the
// session may still be on the post it was leaving, which becomes stale
// unless an older one is; after a View that worked, no post it named is.
// opMu must be held.
func (c *Client) storeView(ctx context.Context, last, post presence.PostID, countView bool) (presence.Count, error) {
	h := c.hub
	from := last
	if from == "" || from == post {
		if c.stale != "" && c.stale != post {
			from = c.stale
		}
	} else if c.stale != "" && c.stale != from && c.stale != post {
		if err := h.store.Leave(ctx, presence.Session{ID: c.ID, Post: c.stale}); err == nil {
			c.stale = ""
		}
	}
	cnt, err := h.store.View(ctx, presence.Session{ID: c.ID, Post: post, Hidden: c.hidden, Visitor: c.visitor}, from, countView)
	if err != nil {
		if from != "" && from != post && (c.stale == "" || c.stale == post) {
			c.stale = from
		}
		return cnt, err
	}
	if c.stale == from || c.stale == post {
		c.stale = ""
	}
	return cnt, nil
}

// placed is where the store may hold the session: on view, and on stale
// too after a failed call. opMu must be held.
func (c *Client) placed(view presence.PostID) []presence.Session {
	out := make([]presence.Session, 0, 2)
	if view != "" {
		out = append(out, presence.Session{ID: c.ID, Post: view})
	}
	if c.stale != "" && c.stale != view {
		out = append(out, presence.Session{ID: c.ID, Post: c.stale})
	}
	return out
}

// Watch adds posts to those the client hears counts of, and queues their
// counts. Over MaxWatch posts in all, nothing changes and a too_many error
// is returned.
func (c *Client) Watch(ctx context.Context, posts []presence.PostID) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if c.left {
		return ErrClosed
	}
	h := c.hub
	h.mu.Lock()
	added := make([]presence.PostID, 0, len(posts))
	for _, p := range posts {
		if _, ok := c.watch[p]; !ok && !contains(added, p) {
			added = append(added, p)
		}
	}
	if n := len(c.watch) + len(added); n > h.cfg.MaxWatch {
		h.mu.Unlock()
		return presence.Errorf(presence.CodeTooMany, "watching %d posts would exceed the limit of %d; unwatch some first", n, h.cfg.MaxWatch)
	}
	if c.watch == nil {
		c.watch = make(map[presence.PostID]struct{}, len(added))
	}
	for _, p := range added {
		c.watch[p] = struct{}{}
		h.join(p, c)
	}
	for _, p := range posts {
		c.forget(p)
	}
	h.mu.Unlock()

	counts, err := h.store.Counts(ctx, posts)
	if err != nil {
		h.m.errors.Inc()
		return err
	}
	for _, cnt := range counts {
		c.offer(cnt)
	}
	return nil
}

// Unwatch removes posts from those the client watches; unknown ones are
// ignored.
func (c *Client) Unwatch(posts []presence.PostID) {
	h := c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range posts {
		if _, ok := c.watch[p]; ok {
			delete(c.watch, p)
			h.part(p, c)
		}
	}
}

// Leave ends the session: it leaves every room and is removed from the
// store. The transport calls it once the tab closed the connection; ctx
// should not be the connection's, which is cancelled by then.
func (c *Client) Leave(ctx context.Context) error {
	return c.end(ctx, false)
}

// Detach ends the client but keeps its session in the store until its
// deadline, for the tab to resume it on another connection: the transport
// calls it when the connection was lost rather than closed by the tab, which
// reconnects and presents its resume token. A session nobody resumes
// expires and is pruned like any other.
func (c *Client) Detach() {
	_ = c.end(context.Background(), true)
}

func (c *Client) end(ctx context.Context, keep bool) error {
	c.opMu.Lock()
	h := c.hub
	var inStore []presence.Session
	if !c.left && !keep {
		inStore = c.placed(c.view)
	}
	if !c.left && c.view != "" {
		// Shutdown counted the others already.
		if keep {
			h.m.kept.Inc()
		} else {
			h.m.leaves.Inc()
		}
	}
	c.left = true
	h.mu.Lock()
	posts := make([]presence.PostID, 0, len(c.watch)+1)
	if c.view != "" {
		posts = append(posts, c.view)
	}
	for p := range c.watch {
		posts = append(posts, p)
	}
	c.view, c.watch = "", nil
	for _, p := range posts {
		h.part(p, c)
	}
	if h.sessions[c.ID] == c {
		delete(h.sessions, c.ID)
		h.m.open.Dec()
	}
	h.mu.Unlock()
	c.opMu.Unlock()
	c.close(ErrClosed)
	if len(inStore) == 0 {
		return nil
	}
	if err := h.store.Leave(ctx, inStore...); err != nil {
		h.m.errors.Inc()
		return err
	}
	return nil
}

// reregister writes the session again after the store lost it (it expired
// during an outage, or gc pruned it).
func (c *Client) reregister(ctx context.Context) {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	h := c.hub
	h.mu.Lock()
	post := c.view
	h.mu.Unlock()
	if c.left || post == "" {
		return
	}
	cnt, err := c.storeView(ctx, post, post, false)
	if err != nil {
		h.m.errors.Inc()
		if ok, skipped := h.reregWarn.Allow(time.Now()); ok {
			h.log.Warn("cannot register a session again", zap.String("session", string(c.ID)), zap.Error(err),
				zap.Int("similar_since_last", skipped))
		}
		return
	}
	h.m.rereg.Inc()
	c.offer(cnt)
}

// offer queues a count for this client and lets the room know of it; the
// room's flush skips this client, which already has it.
func (c *Client) offer(cnt presence.Count) {
	c.enqueueCount(cnt, cnt.Frame())
	c.hub.update(cnt)
}

func contains(ps []presence.PostID, p presence.PostID) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

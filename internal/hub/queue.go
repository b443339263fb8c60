package hub

import (
	"slices"

	"github.com/presence/presence/internal/presence"
)

// Done is closed when the client must be disconnected; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client was closed: ErrSlow, or ErrClosed once it left.
func (c *Client) Err() error {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.err
}

// Next is how the client's writer drains the queue. It returns the queued
// frames, oldest first, and empties the queue; ok is false when there was
// nothing to do, and then the writer must stop: the client is idle, and the
// next frame, Wake or close calls the wake function given to Join, which
// starts a writer again. Because the check and the idling happen under one
// lock, no frame is left waiting without a writer. Once the client is
// closed Next always reports ok, so a writer sees Done.
func (c *Client) Next() (frames [][]byte, ok bool) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if len(c.pending) == 0 && !c.closed && !c.kicked {
		c.busy = false
		return nil, false
	}
	c.kicked = false
	frames = c.pending
	c.pending = nil
	// The frames are the writer's now: no count replaces them in place,
	// and a post whose count was forgotten needs no entry any more.
	n := 0
	for _, e := range c.counts {
		e.at = -1
		if e.cnt.Seq != 0 {
			c.counts[n] = e
			n++
		}
	}
	clear(c.counts[n:])
	c.counts = c.counts[:n]
	return frames, true
}

// Wake runs the client's writer once even with nothing queued, so that it
// looks at the transport's own state (a shutdown). It does nothing once the
// client is closed.
func (c *Client) Wake() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closed {
		return
	}
	c.kicked = true
	c.wakeLocked()
}

// wakeLocked starts a writer unless one runs; callers hold qmu.
func (c *Client) wakeLocked() {
	if c.busy || c.wake == nil {
		return
	}
	c.busy = true
	c.wake()
}

// Send queues a frame that no later frame replaces (events, errors). A
// client whose queue is full is closed with ErrSlow.
func (c *Client) Send(frame []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.push(frame)
}

// sentCount is what a client was last given of one post it views or
// watches. A slice of these, not maps: a viewer hears one post, and a map
// costs an idle connection hundreds of bytes.
type sentCount struct {
	cnt presence.Count // the last count queued; Seq 0 once forgotten
	at  int            // index in pending of its unsent frame, or -1
}

// countAt returns the index of post's entry, or -1; callers hold qmu.
func (c *Client) countAt(post presence.PostID) int {
	return slices.IndexFunc(c.counts, func(e sentCount) bool { return e.cnt.Post == post })
}

// enqueueCount queues a count frame unless the client already has this count,
// the same numbers, or a newer one; an unsent count of the same post is replaced in place, so
// counts never fill the queue and never go backwards.
func (c *Client) enqueueCount(cnt presence.Count, frame []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closed {
		return
	}
	i := c.countAt(cnt.Post)
	if i < 0 {
		i = len(c.counts)
		c.counts = append(c.counts, sentCount{at: -1})
	}
	e := &c.counts[i]
	last := e.cnt
	if last.Seq != 0 && cnt.Seq <= last.Seq {
		return
	}
	e.cnt = cnt
	if last.Seq != 0 && cnt.Viewers == last.Viewers && cnt.Views == last.Views && cnt.Reading == last.Reading && cnt.People == last.People {
		// Newer but the same: a read that found nothing new (reads take a
		// newer seq, which follows Redis's clock).
		return
	}
	if e.at >= 0 {
		c.pending[e.at] = frame
		c.hub.m.dropped.Inc()
		return
	}
	e.at = len(c.pending)
	c.push(frame)
}

// push appends a frame; callers hold qmu.
func (c *Client) push(frame []byte) {
	if c.closed {
		return
	}
	if len(c.pending) >= c.hub.cfg.QueueSize {
		c.hub.m.slow.Inc()
		c.closeLocked(ErrSlow)
		return
	}
	c.pending = append(c.pending, frame)
	c.wakeLocked()
}

// forget drops what the client was last sent of a post, so that the next
// count of it is queued whatever its Seq: after a view or watch request the
// client gets a frame even if nothing changed. An unsent frame of the post
// stays where it is, for a newer count to replace.
func (c *Client) forget(post presence.PostID) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	switch i := c.countAt(post); {
	case i < 0:
	case c.counts[i].at >= 0:
		c.counts[i].cnt = presence.Count{Post: post}
	default:
		c.counts = slices.Delete(c.counts, i, i+1)
	}
}

func (c *Client) close(err error) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.closeLocked(err)
}

func (c *Client) closeLocked(err error) {
	if c.closed {
		return
	}
	c.closed = true
	c.err = err
	c.hub.m.dropped.Add(float64(len(c.pending)))
	c.pending = nil
	c.counts = nil
	close(c.done)
	c.wakeLocked()
}

package hub

import "github.com/presence/presence/internal/presence"

// Ready receives a value when frames wait in the queue.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Done is closed when the client must be disconnected; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client was closed: ErrSlow, or ErrClosed once it left.
func (c *Client) Err() error {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.err
}

// Take returns the queued frames, oldest first, and empties the queue.
func (c *Client) Take() [][]byte {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	out := c.pending
	c.pending = nil
	clear(c.countAt)
	return out
}

// Send queues a frame that no later frame replaces (events, errors). A
// client whose queue is full is closed with ErrSlow.
func (c *Client) Send(frame []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.push(frame)
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
	last, ok := c.sent[cnt.Post]
	if ok && cnt.Seq <= last.Seq {
		return
	}
	if c.sent == nil {
		c.sent = make(map[presence.PostID]presence.Count, 1)
	}
	c.sent[cnt.Post] = cnt
	if ok && cnt.Viewers == last.Viewers && cnt.Views == last.Views {
		// Newer but the same: a read that found nothing new (reads take a
		// newer seq, which follows Redis's clock).
		return
	}
	if i, ok := c.countAt[cnt.Post]; ok {
		c.pending[i] = frame
		c.hub.m.dropped.Inc()
		return
	}
	if c.countAt == nil {
		c.countAt = make(map[presence.PostID]int, 1)
	}
	c.countAt[cnt.Post] = len(c.pending)
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
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

// forget drops what the client was last sent of a post, so that the next
// count of it is queued whatever its Seq: after a view or watch request the
// client gets a frame even if nothing changed.
func (c *Client) forget(post presence.PostID) {
	c.qmu.Lock()
	delete(c.sent, post)
	c.qmu.Unlock()
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
	close(c.done)
}

package presence

import (
	"context"
	"time"
)

// The roles of a store beside Store. A store is one thing to the process
// that runs it, but each component needs one part of it; the parts are
// named here, once, and memstore and redisstore assert which they fill:
//
//	role        memstore  redisstore       used by
//	Store       Store     Store            hub, HTTP API
//	Feed        Store     Bus              hub (Subscriber), cmd/presence (Run)
//	Publisher   Store     Store            publish API
//	Pruner      Store     Store            gc
//	Sweeper     -         Store            gc, when the deadlines index can miss sessions
//
// A role that a store may lack (Sweeper) is passed to its user explicitly,
// not discovered by a type assertion.

// Subscriber is told which posts an app server has local interest in. Both
// calls record the wish and return at once: a slow or absent store must
// never block a WebSocket handler.
type Subscriber interface {
	Subscribe(posts ...PostID)
	Unsubscribe(posts ...PostID)
}

// Feed carries the changes of the posts subscribed to, this app server's
// and every other's: count changes and events.
type Feed interface {
	Subscriber
	// Run delivers every message of the subscribed posts until ctx ends.
	// deliver must not block for long.
	Run(ctx context.Context, deliver func(Message)) error
}

// Publisher sends an event to the viewers and watchers of its post on
// every app server, and returns how many app servers took it.
type Publisher interface {
	Publish(ctx context.Context, ev Event) (int, error)
}

// Pruner is what the garbage collector needs: the sessions past their
// deadline, and a way to remove those that are really dead.
type Pruner interface {
	// Due returns up to limit sessions whose deadline has passed, each with
	// the post the store holds it on, and, when none is due, how long until
	// the next deadline (negative: none). A store in parts may return the
	// sessions of the parts that answered together with the error of those
	// that did not.
	Due(ctx context.Context, limit int) ([]Session, time.Duration, error)
	// Prune removes the sessions that are really dead (a live one is left
	// alone) and returns, for each one removed, how long after its
	// deadline that happened. Each session's Post, as Due gave it, tells a
	// partitioned store where to look.
	Prune(ctx context.Context, sessions []Session) ([]time.Duration, error)
}

// Sweeper makes a full pass over all sessions, repairing what a deadlines
// index kept apart from the sessions could miss, and returns how many it
// pruned.
type Sweeper interface {
	Sweep(ctx context.Context) (int, error)
}

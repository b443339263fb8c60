package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Expiry turns Redis's expired-key events for session keys into wake-ups for
// the garbage collector. The events only make gc poll sooner: Redis sends
// them late once many keys carry a TTL, and pub/sub loses them while the
// subscriber is away, so the deadlines index stays the source of truth.
// Events are local to the node that expired the key: on a cluster, Expiry
// subscribes on every primary, and on a primary that joins or is promoted.
type Expiry struct {
	rdb  redis.UniversalClient
	keys Keys
	log  *zap.Logger
	wake chan struct{}

	// refused is set once CONFIG has been refused, so that is logged once.
	refused atomic.Bool

	events     prometheus.Counter
	reconnects prometheus.Counter
}

// NewExpiry returns an Expiry for the session keys of store.
func NewExpiry(store *Store, reg prometheus.Registerer) *Expiry {
	e := &Expiry{
		rdb:  store.rdb,
		keys: store.keys,
		log:  store.log.Named("expiry"),
		wake: make(chan struct{}, 1),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_gc_expired_events_total",
			Help: "Expired-key events for session keys received from Redis.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_gc_pubsub_reconnects_total",
			Help: "Times the expired-event subscription was re-established.",
		}),
	}
	if reg != nil {
		reg.MustRegister(e.events, e.reconnects)
	}
	return e
}

// Wakeups receives a value whenever gc should poll now: a session key
// expired, or the subscription came back after a reconnect.
func (e *Expiry) Wakeups() <-chan struct{} { return e.wake }

// flagCheckInterval is how often the notify-keyspace-events flags are
// checked: CONFIG SET is neither persisted nor replicated, so a restart or a
// failover drops them silently.
const flagCheckInterval = time.Minute

// primariesInterval is how often a cluster's primaries are listed, to
// subscribe on new ones: a failover is seen within it.
const primariesInterval = 2 * time.Second

// Run subscribes to expired events until ctx ends.
func (e *Expiry) Run(ctx context.Context) error {
	switch c := e.rdb.(type) {
	case *redis.Client:
		return e.listen(ctx, c, c.Options().DB)
	case *redis.ClusterClient:
		return e.runCluster(ctx, c)
	default:
		return fmt.Errorf("expiry: unsupported client %T", e.rdb)
	}
}

// runCluster keeps one listener on each primary of the cluster, starting
// one for each primary that appears and stopping those of nodes that are
// primaries no longer.
func (e *Expiry) runCluster(ctx context.Context, c *redis.ClusterClient) error {
	type listener struct{ stop context.CancelFunc }
	var (
		mu        sync.Mutex
		listeners = make(map[string]*listener)
		wg        sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for _, l := range listeners {
			l.stop()
		}
		mu.Unlock()
		wg.Wait()
	}()
	tick := time.NewTicker(primariesInterval)
	defer tick.Stop()
	first := true
	for {
		current := make(map[string]bool)
		// An error here means some primary did not answer; the others
		// are listed all the same, and the next round tries again.
		_ = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			addr := m.Options().Addr
			mu.Lock()
			defer mu.Unlock()
			current[addr] = true
			if _, ok := listeners[addr]; ok {
				return nil
			}
			lctx, stop := context.WithCancel(ctx)
			l := &listener{stop: stop}
			listeners[addr] = l
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := e.listen(lctx, m, 0); err != nil && lctx.Err() == nil {
					e.log.Warn("expired-event listener stopped; starting another at the next listing", zap.String("node", addr), zap.Error(err))
				}
				// Forgotten, so that the next listing of the primaries
				// starts a new one if the node is still one.
				mu.Lock()
				if listeners[addr] == l {
					delete(listeners, addr)
				}
				mu.Unlock()
			}()
			if !first {
				// A new primary (a promoted replica) may hold sessions
				// that expired while nobody listened there.
				e.log.Info("listening for expired events on a new primary", zap.String("node", addr))
				e.poke()
			}
			return nil
		})
		mu.Lock()
		for addr, l := range listeners {
			if !current[addr] && len(current) > 0 {
				l.stop()
				delete(listeners, addr)
			}
		}
		mu.Unlock()
		first = false
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// listen subscribes to one node's expired events until ctx ends.
func (e *Expiry) listen(ctx context.Context, rdb *redis.Client, db int) error {
	e.ensureFlags(ctx, rdb)
	channel := fmt.Sprintf("__keyevent@%d__:expired", db)
	ps := rdb.Subscribe(ctx, channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	tick := time.NewTicker(flagCheckInterval)
	defer tick.Stop()
	subscribed := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			e.ensureFlags(ctx, rdb)
		case m, ok := <-ch:
			if !ok {
				return errors.New("expired-event channel closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				if subscribed {
					// A replayed subscription means events were lost while
					// the connection was down: poll now and check that the
					// server (maybe a new one) still sends them.
					e.reconnects.Inc()
					e.log.Info("expired-event subscription re-established")
					e.ensureFlags(ctx, rdb)
					e.poke()
				}
				subscribed = true
			case *redis.Message:
				if e.keys.isSession(m.Payload) {
					e.events.Inc()
					e.poke()
				}
			}
		}
	}
}

func (e *Expiry) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// ensureFlags adds E (keyevent channel) and x (expired events) to the flags
// already set, and never g: that would publish an event for every TTL
// refresh of every live session.
func (e *Expiry) ensureFlags(ctx context.Context, rdb *redis.Client) {
	cur, err := rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		e.configRefused(err)
		return
	}
	have := cur["notify-keyspace-events"]
	want := mergeFlags(have)
	if want == have {
		return
	}
	if err := rdb.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		e.configRefused(err)
		return
	}
	e.log.Info("enabled expired-key events", zap.String("node", rdb.Options().Addr), zap.String("was", have), zap.String("now", want))
}

func (e *Expiry) configRefused(err error) {
	if isUnavailable(err) {
		return // Redis is away; the next check or reconnect tries again
	}
	if e.refused.Swap(true) {
		return
	}
	e.log.Warn("Redis refused CONFIG for notify-keyspace-events; pruning runs on the deadlines index alone "+
		"(dead sessions are still pruned within one poll interval). To prune sooner, set notify-keyspace-events "+
		"to include \"Ex\" in your Redis provider's settings.", zap.Error(err))
}

// mergeFlags returns flags with E and x added. A (alias for g$lshztxed)
// already includes x.
func mergeFlags(flags string) string {
	out := flags
	if !strings.Contains(out, "E") {
		out += "E"
	}
	if !strings.Contains(out, "x") && !strings.Contains(out, "A") {
		out += "x"
	}
	return out
}

package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/presence"
)

// Bus relays the pub/sub channels of the posts an app server has local
// interest in. Subscribe and Unsubscribe only record the wish and return at
// once; Run's loop brings Redis in line, so a slow or absent Redis never
// blocks a WebSocket handler.
//
// After every confirmed subscription, a first one or one replayed by
// go-redis after a reconnect, Bus re-reads the post's count and delivers it:
// messages published while the subscription was not in place are lost, and
// the re-read closes that gap; a re-read that fails is tried again with
// backoff. Counts carry Seq, so the receiver keeps the newest whatever order
// re-reads and messages arrive in.
//
// Each partition of the key layout has a lane: its own subscription and
// probe. On one node there is one lane. On a cluster, a post's channel is a
// shard channel on its partition's slot, and one SSUBSCRIBE connection
// serves one slot, so each partition that has posts wanted here gets a
// connection to the node that holds it; when the slot moves, Redis drops
// the subscription and the lane makes it anew on the slot's new node.
type Bus struct {
	rdb   redis.UniversalClient
	store *Store
	keys  Keys
	cfg   BusConfig
	log   *zap.Logger

	mu    sync.Mutex
	live  map[presence.PostID]struct{} // posts subscribed or to be: a re-read of any other is moot
	lanes []*lane
	id    string // names this Bus's probe channels

	reconnects prometheus.Counter
	stale      prometheus.Counter
	bad        prometheus.Counter
	badWarn    logging.Throttle
	rereadWarn logging.Throttle
	syncWarn   logging.Throttle
}

// BusConfig configures a Bus. The zero value is usable.
type BusConfig struct {
	// ProbeInterval is how often the Bus publishes a probe to itself to
	// prove its subscription still delivers. Default: 5s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe may take to come back before the
	// subscription is dropped and made anew. Default: 3s.
	ProbeTimeout time.Duration
	// Registerer receives the bus's metrics. Default: none.
	Registerer prometheus.Registerer
}

// NewBus returns a Bus for the posts of store's key prefix.
func NewBus(store *Store, cfg BusConfig) *Bus {
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 5 * time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 3 * time.Second
	}
	b := &Bus{
		rdb:        store.rdb,
		store:      store,
		keys:       store.keys,
		cfg:        cfg,
		log:        store.log.Named("bus"),
		live:       make(map[presence.PostID]struct{}),
		id:         string(presence.NewSessionID()),
		badWarn:    logging.Throttle{Every: 10 * time.Second},
		rereadWarn: logging.Throttle{Every: 10 * time.Second},
		syncWarn:   logging.Throttle{Every: 10 * time.Second},
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_pubsub_reconnects_total",
			Help: "Times the post channels' pub/sub connection was re-established.",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_pubsub_stale_total",
			Help: "Times the post channels' subscription stopped delivering (a probe did not come back) and was made anew.",
		}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_pubsub_bad_messages_total",
			Help: "Messages on post channels that were not valid count or event frames and were dropped.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(b.reconnects, b.stale, b.bad)
	}
	for n := range store.keys.parts {
		b.lanes = append(b.lanes, &lane{
			n:        n,
			want:     make(map[presence.PostID]bool),
			kick:     make(chan struct{}, 1),
			channel:  make(map[string]bool),
			dropping: make(map[string]int),
			probe:    store.keys.probeChannel(n, b.id),
		})
	}
	return b
}

// lane is one partition's subscription.
type lane struct {
	n    int
	want map[presence.PostID]bool // posts to be subscribed (true) or dropped (false), not yet sent; guarded by Bus.mu
	kick chan struct{}

	// channel holds the post channels asked for, owned by the lane's
	// goroutine: a subscription made anew starts with all of them.
	channel map[string]bool
	// dropping counts the SUNSUBSCRIBEs sent per channel and not yet
	// confirmed, owned by the lane's goroutine: Redis's own drops are the
	// others.
	dropping map[string]int
	probe    string // this Bus's own probe channel in the lane's partition
}

// Subscribe asks for the posts' channels.
func (b *Bus) Subscribe(posts ...presence.PostID) { b.set(posts, true) }

// Unsubscribe drops the posts' channels.
func (b *Bus) Unsubscribe(posts ...presence.PostID) { b.set(posts, false) }

func (b *Bus) set(posts []presence.PostID, on bool) {
	kicked := make(map[*lane]bool, 1)
	b.mu.Lock()
	for _, p := range posts {
		l := b.lanes[b.keys.Partition(p)]
		l.want[p] = on
		kicked[l] = true
		if on {
			b.live[p] = struct{}{}
		} else {
			delete(b.live, p)
		}
	}
	b.mu.Unlock()
	for l := range kicked {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// Run delivers every message of the subscribed channels to deliver until ctx
// ends. deliver must not block for long: it runs on the receive loop.
//
// go-redis reconnects a subscription whose connection fails, but it cannot
// see a path that silently stops delivering (its health check only writes):
// measured, a blackholed subscriber lost every message for 31 s without an
// error. So the Bus publishes a probe to a channel of its own every
// ProbeInterval; when one does not come back within ProbeTimeout, it drops
// the subscription and makes a new one, whose confirmations re-read every
// post.
func (b *Bus) Run(ctx context.Context, deliver func(presence.Message)) error {
	// Re-reads run on their own goroutine so that a slow Redis never stops
	// the receive loop; the loop only collects which posts need one.
	var (
		rmu          sync.Mutex
		reread       = make(map[presence.PostID]struct{})
		rkick        = make(chan struct{}, 1)
		wg           sync.WaitGroup
		rctx, cancel = context.WithCancel(ctx)
	)
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.rereadLoop(rctx, &rmu, reread, rkick, deliver)
	}()
	queueReread := func(p presence.PostID) {
		rmu.Lock()
		reread[p] = struct{}{}
		rmu.Unlock()
		select {
		case rkick <- struct{}{}:
		default:
		}
	}
	errs := make(chan error, len(b.lanes))
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	for _, l := range b.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- b.runLane(lctx, l, deliver, queueReread)
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		// A lane stops early only on an error that making its
		// subscription anew cannot mend: the app server must know.
		return err
	}
}

// runLane runs a lane's subscription, made anew whenever it stops
// delivering, until ctx ends. On a cluster a lane subscribes once it has a
// post to carry, so an app server holds connections only for the
// partitions its clients use; the one lane of one node subscribes at once.
func (b *Bus) runLane(ctx context.Context, l *lane, deliver func(presence.Message), queueReread func(presence.PostID)) error {
	var confirmBy time.Duration // after a move: how soon the probe's channel must be confirmed
	for {
		b.mu.Lock()
		idle := b.keys.sharded() && len(l.want) == 0 && len(l.channel) == 0
		b.mu.Unlock()
		if idle {
			select {
			case <-ctx.Done():
				return nil
			case <-l.kick:
				continue
			}
		}
		err := b.subscription(ctx, l, deliver, queueReread, confirmBy)
		if ctx.Err() != nil {
			return nil
		}
		confirmBy = 0
		switch {
		case errors.Is(err, errStale):
			b.stale.Inc()
			b.log.Warn("the post channels' subscription stopped delivering; subscribing anew", zap.Int("partition", l.n))
		case errors.Is(err, errMoved):
			b.log.Info("the post channels' slot moved; subscribing on its new node", zap.Int("partition", l.n))
			// The client's slot map may still name the old node, which would
			// answer the new SSUBSCRIBE with MOVED, and go-redis drops that
			// reply on a pub/sub connection: read the map again, give it a
			// moment, and give up on a subscription not confirmed in time.
			if c, ok := b.rdb.(*redis.ClusterClient); ok {
				c.ReloadState(ctx)
			}
			t := time.NewTimer(movedPause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			confirmBy = b.cfg.ProbeTimeout
		default:
			return err
		}
		b.reconnects.Inc()
	}
}

// movedPause is how long a lane waits after its slot moved before it
// subscribes again: long enough for a reload of the slot map.
const movedPause = 250 * time.Millisecond

var (
	errStale = errors.New("subscription stopped delivering")
	errMoved = errors.New("the slot of the subscription moved")
)

// subscription runs one pub/sub connection until ctx ends, its channel
// closes, a probe does not come back (errStale) or Redis drops the
// subscription because its slot moved (errMoved). With confirmBy, a probe
// channel not confirmed within it is stale too.
func (b *Bus) subscription(ctx context.Context, l *lane, deliver func(presence.Message), queueReread func(presence.PostID), confirmBy time.Duration) error {
	clear(l.dropping) // what a subscription before this one dropped
	// The probe first: on a cluster the first channel picks the node.
	chans := []string{l.probe}
	for c := range l.channel {
		chans = append(chans, c)
	}
	var ps *redis.PubSub
	if b.keys.sharded() {
		ps = b.rdb.SSubscribe(ctx, chans...)
	} else {
		ps = b.rdb.Subscribe(ctx, chans...)
	}
	defer ps.Close()
	// Wishes recorded before the subscription existed are sent now; their
	// kick may have been what woke the lane.
	select {
	case l.kick <- struct{}{}:
	default:
	}
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(4096))
	tick := time.NewTicker(b.cfg.ProbeInterval)
	defer tick.Stop()
	var probeDue <-chan time.Time // set while a probe is out
	if confirmBy > 0 {
		probeDue = time.After(confirmBy)
	}
	confirmed := make(map[string]bool)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.kick:
			if err := b.sync(ctx, l, ps); err != nil {
				// go-redis keeps the channels and subscribes them when its
				// connection is back, and the re-read follows then.
				// Each new local post kicks a sync: one line per 10s.
				if ok, skipped := b.syncWarn.Allow(time.Now()); ok {
					b.log.Warn("cannot update post subscriptions now; they follow on reconnect", zap.Error(err),
						zap.Int("similar_since_last", skipped))
				}
			}
		case <-tick.C:
			if probeDue != nil {
				continue
			}
			// A failed PUBLISH means Redis is away, which go-redis's own
			// reconnect handles; only a probe that went out proves a dead path.
			if err := b.store.publish(ctx, l.probe, "probe").Err(); err == nil {
				probeDue = time.After(b.cfg.ProbeTimeout)
			}
		case <-probeDue:
			return errStale
		case m, ok := <-ch:
			if !ok {
				return errors.New("pub/sub channel closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				switch m.Kind {
				case "subscribe", "ssubscribe":
					// go-redis replays every subscription in one command on a
					// new connection, so the replay starts again at count 1,
					// with any channel first, the probe's too.
					if m.Count == 1 && confirmed[m.Channel] {
						b.reconnects.Inc()
					}
					confirmed[m.Channel] = true
					if post, ok := b.post(m.Channel); ok {
						queueReread(post)
					}
					// The first probe goes out as soon as its channel is
					// confirmed: a path that dies early is found as soon as
					// one that dies later.
					if m.Channel == l.probe {
						if err := b.store.publish(ctx, l.probe, "probe").Err(); err == nil {
							probeDue = time.After(b.cfg.ProbeTimeout)
						}
					}
				case "unsubscribe":
					delete(confirmed, m.Channel)
				case "sunsubscribe":
					delete(confirmed, m.Channel)
					if l.dropping[m.Channel] > 0 {
						l.dropping[m.Channel]--
						continue
					}
					// Redis drops the shard channels of a slot that moved
					// away: a channel dropped that this lane did not drop.
					return errMoved
				}
			case *redis.Message:
				if m.Channel == l.probe {
					probeDue = nil
					continue
				}
				msg, err := b.parse(m.Channel, m.Payload)
				if err != nil {
					// Whoever published it is not told; the log line and the
					// metric are how they find out.
					b.bad.Inc()
					if ok, skipped := b.badWarn.Allow(time.Now()); ok {
						b.log.Warn("dropped a message on a post channel", zap.String("channel", m.Channel),
							zap.Error(err), zap.Int("similar_since_last", skipped))
					}
					continue
				}
				deliver(msg)
			}
		}
	}
}

// sync sends the (S)SUBSCRIBE and (S)UNSUBSCRIBE commands a lane's recorded
// wishes call for. go-redis records the channels even when the write fails
// and replays them on reconnect, so a failed sync needs no retry of its own.
func (b *Bus) sync(ctx context.Context, l *lane, ps *redis.PubSub) error {
	b.mu.Lock()
	var sub, unsub []string
	for p, on := range l.want {
		c := b.keys.Channel(p)
		if on {
			sub = append(sub, c)
			l.channel[c] = true
		} else {
			unsub = append(unsub, c)
			delete(l.channel, c)
		}
	}
	clear(l.want)
	b.mu.Unlock()
	var errs []error
	if len(sub) > 0 {
		if b.keys.sharded() {
			errs = append(errs, ps.SSubscribe(ctx, sub...))
		} else {
			errs = append(errs, ps.Subscribe(ctx, sub...))
		}
	}
	if len(unsub) > 0 {
		if b.keys.sharded() {
			for _, c := range unsub {
				l.dropping[c]++
			}
			errs = append(errs, ps.SUnsubscribe(ctx, unsub...))
		} else {
			errs = append(errs, ps.Unsubscribe(ctx, unsub...))
		}
	}
	return errors.Join(errs...)
}

// rereadLoop reads the counts of the posts queued in pending. A read that
// fails is tried again with backoff until it works or nobody here wants the
// post any more: after a restart Redis takes subscriptions while it still
// loads its data and answers scripts with LOADING, and a re-read given up
// would leave the post's count stale until it next changes.
func (b *Bus) rereadLoop(ctx context.Context, mu *sync.Mutex, pending map[presence.PostID]struct{}, kick <-chan struct{}, deliver func(presence.Message)) {
	var wait time.Duration // backoff after a failure; 0 when the last read worked
	for {
		if wait > 0 {
			// Kicks are not awaited here: a resubscription of thousands of
			// posts must not turn into a read per confirmation.
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		} else {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
		}
		mu.Lock()
		posts := make([]presence.PostID, 0, len(pending))
		for p := range pending {
			posts = append(posts, p)
		}
		clear(pending)
		mu.Unlock()
		failed, err := b.reread(ctx, b.wanted(posts), deliver)
		if len(failed) == 0 || ctx.Err() != nil {
			wait = 0
			continue
		}
		mu.Lock()
		for _, p := range failed {
			pending[p] = struct{}{}
		}
		mu.Unlock()
		wait = rereadBackoff(wait)
		if ok, skipped := b.rereadWarn.Allow(time.Now()); ok {
			b.log.Warn("cannot re-read counts after subscribing; trying again", zap.Int("posts", len(failed)),
				zap.Duration("in", wait), zap.Int("similar_since_last", skipped), zap.Error(err))
		}
	}
}

// reread delivers the counts of posts, a batch at a time, and returns the
// posts it could not read.
func (b *Bus) reread(ctx context.Context, posts []presence.PostID, deliver func(presence.Message)) ([]presence.PostID, error) {
	for len(posts) > 0 {
		n := min(len(posts), batchSize)
		counts, err := b.store.Counts(ctx, posts[:n])
		if err != nil {
			return posts, err
		}
		for i := range counts {
			deliver(presence.Message{Count: &counts[i]})
		}
		posts = posts[n:]
	}
	return nil, nil
}

// wanted keeps the posts that are still subscribed or about to be.
func (b *Bus) wanted(posts []presence.PostID) []presence.PostID {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.DeleteFunc(posts, func(p presence.PostID) bool {
		_, ok := b.live[p]
		return !ok
	})
}

// rereadBackoff doubles the wait from 50ms up to 2s, with jitter so that
// every app server does not come back to a recovering Redis at the same
// instant.
func rereadBackoff(prev time.Duration) time.Duration {
	next := min(max(2*prev, 50*time.Millisecond), 2*time.Second)
	return next/2 + rand.N(next/2+1)
}

func (b *Bus) post(channel string) (presence.PostID, bool) { return b.keys.channelPost(channel) }

// MaxMessage bounds a message on a post's channel: the largest event frame.
// The publish API takes bodies up to 16 KiB, whose frames stay under it;
// anyone else publishing on Redis gets the same room rather than a way to
// push megabytes to every client.
const MaxMessage = presence.MaxEventFrame

// parse checks a message from a post's channel (see presence.ParseMessage).
func (b *Bus) parse(channel, payload string) (presence.Message, error) {
	post, ok := b.post(channel)
	if !ok {
		return presence.Message{}, fmt.Errorf("not a post channel")
	}
	return presence.ParseMessage(post, []byte(payload))
}

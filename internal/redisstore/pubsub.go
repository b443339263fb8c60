package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

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
// the re-read closes that gap. Counts carry Seq, so the receiver keeps the
// newest whatever order re-reads and messages arrive in.
type Bus struct {
	rdb   *redis.Client
	store *Store
	keys  keys
	log   *zap.Logger

	mu   sync.Mutex
	want map[presence.PostID]bool // posts to be subscribed (true) or dropped (false), not yet sent
	kick chan struct{}

	reconnects prometheus.Counter
	bad        prometheus.Counter
}

// NewBus returns a Bus for the posts of store's key prefix.
func NewBus(store *Store, reg prometheus.Registerer) *Bus {
	b := &Bus{
		rdb:   store.rdb,
		store: store,
		keys:  store.keys,
		log:   store.log.Named("bus"),
		want:  make(map[presence.PostID]bool),
		kick:  make(chan struct{}, 1),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_pubsub_reconnects_total",
			Help: "Times the post channels' pub/sub connection was re-established.",
		}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_pubsub_bad_messages_total",
			Help: "Messages on post channels that were not valid count or event frames and were dropped.",
		}),
	}
	if reg != nil {
		reg.MustRegister(b.reconnects, b.bad)
	}
	return b
}

// Subscribe asks for the posts' channels.
func (b *Bus) Subscribe(posts ...presence.PostID) { b.set(posts, true) }

// Unsubscribe drops the posts' channels.
func (b *Bus) Unsubscribe(posts ...presence.PostID) { b.set(posts, false) }

func (b *Bus) set(posts []presence.PostID, on bool) {
	b.mu.Lock()
	for _, p := range posts {
		b.want[p] = on
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Run delivers every message of the subscribed channels to deliver until ctx
// ends. deliver must not block for long: it runs on the receive loop.
func (b *Bus) Run(ctx context.Context, deliver func(presence.Message)) error {
	ps := b.rdb.Subscribe(ctx)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(4096))

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

	confirmed := make(map[string]bool)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.kick:
			if err := b.sync(ctx, ps); err != nil {
				// go-redis keeps the channels and subscribes them when its
				// connection is back, and the re-read follows then.
				b.log.Warn("cannot update post subscriptions now; they follow on reconnect", zap.Error(err))
			}
		case m, ok := <-ch:
			if !ok {
				return errors.New("pub/sub channel closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				post, ok := b.post(m.Channel)
				if !ok {
					continue
				}
				switch m.Kind {
				case "subscribe":
					// go-redis replays every subscription in one command on a
					// new connection, so the replay starts again at count 1.
					if m.Count == 1 && confirmed[m.Channel] {
						b.reconnects.Inc()
					}
					confirmed[m.Channel] = true
					queueReread(post)
				case "unsubscribe":
					delete(confirmed, m.Channel)
				}
			case *redis.Message:
				msg, err := b.parse(m.Channel, m.Payload)
				if err != nil {
					b.bad.Inc()
					b.log.Debug("dropped bad message", zap.String("channel", m.Channel), zap.Error(err))
					continue
				}
				deliver(msg)
			}
		}
	}
}

// sync sends the SUBSCRIBE and UNSUBSCRIBE commands the recorded wishes call
// for. go-redis records the channels even when the write fails and replays
// them on reconnect, so a failed sync needs no retry of its own.
func (b *Bus) sync(ctx context.Context, ps *redis.PubSub) error {
	b.mu.Lock()
	var sub, unsub []string
	for p, on := range b.want {
		if on {
			sub = append(sub, b.keys.channel(p))
		} else {
			unsub = append(unsub, b.keys.channel(p))
		}
	}
	clear(b.want)
	b.mu.Unlock()
	var errs []error
	if len(sub) > 0 {
		errs = append(errs, ps.Subscribe(ctx, sub...))
	}
	if len(unsub) > 0 {
		errs = append(errs, ps.Unsubscribe(ctx, unsub...))
	}
	return errors.Join(errs...)
}

func (b *Bus) rereadLoop(ctx context.Context, mu *sync.Mutex, pending map[presence.PostID]struct{}, kick <-chan struct{}, deliver func(presence.Message)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		mu.Lock()
		posts := make([]presence.PostID, 0, len(pending))
		for p := range pending {
			posts = append(posts, p)
		}
		clear(pending)
		mu.Unlock()
		for len(posts) > 0 {
			n := min(len(posts), batchSize)
			counts, err := b.store.Counts(ctx, posts[:n])
			if err != nil {
				// The next reconnect queues these posts again; until then the
				// next published change corrects them.
				b.log.Warn("cannot re-read counts after subscribing", zap.Int("posts", n), zap.Error(err))
			}
			for i := range counts {
				deliver(presence.Message{Count: &counts[i]})
			}
			posts = posts[n:]
		}
	}
}

func (b *Bus) post(channel string) (presence.PostID, bool) {
	rest, ok := strings.CutPrefix(channel, b.keys.channelPrefix())
	if !ok {
		return "", false
	}
	p, err := presence.ParsePostID(rest)
	return p, err == nil
}

// MaxMessage bounds a message on a post's channel. The publish API takes
// bodies up to 16 KiB; anyone else publishing on Redis gets the same room,
// plus the envelope, rather than a way to push megabytes to every client.
const MaxMessage = 20 << 10

// wireMessage is what travels on a post's channel: the wire protocol's count
// or event frame. PHP code publishes events in the same format.
type wireMessage struct {
	Type    string          `json:"type"`
	Post    string          `json:"post"`
	Viewers *int64          `json:"viewers,omitempty"`
	Views   *int64          `json:"views,omitempty"`
	Seq     int64           `json:"seq,omitempty"`
	Name    string          `json:"name,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// parse checks a channel message as carefully as a browser frame: anything
// on Redis could come from any client of it.
func (b *Bus) parse(channel, payload string) (presence.Message, error) {
	if len(payload) > MaxMessage {
		return presence.Message{}, fmt.Errorf("message of %d bytes, at most %d allowed", len(payload), MaxMessage)
	}
	post, ok := b.post(channel)
	if !ok {
		return presence.Message{}, fmt.Errorf("not a post channel")
	}
	var w wireMessage
	if err := json.Unmarshal([]byte(payload), &w); err != nil {
		return presence.Message{}, fmt.Errorf("not JSON: %w", err)
	}
	if w.Post != "" && w.Post != string(post) {
		return presence.Message{}, fmt.Errorf("post %q does not match channel", w.Post)
	}
	switch w.Type {
	case "count":
		if w.Viewers == nil || w.Views == nil || *w.Viewers < 0 || *w.Views < 0 {
			return presence.Message{}, errors.New("count needs non-negative viewers and views")
		}
		return presence.Message{Count: &presence.Count{Post: post, Viewers: *w.Viewers, Views: *w.Views, Seq: w.Seq}}, nil
	case "event":
		ev, err := presence.NewEvent(post, w.Name, w.Data)
		if err != nil {
			return presence.Message{}, err
		}
		return presence.Message{Event: &ev}, nil
	default:
		return presence.Message{}, fmt.Errorf("unknown type %q", w.Type)
	}
}

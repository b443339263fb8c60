// Package redisstore keeps presence in Redis with the seed's schema plus a
// deadlines index: one Lua script per change, each publishing the new count
// on the post's channel. It also carries the pub/sub side: Bus relays post
// channels to an app server's hub, and Expiry turns keyspace expiry events
// into wake-ups for the garbage collector.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/presence"
)

// Config configures a Store. The zero value is usable.
type Config struct {
	// Prefix is put before every key and channel name. Default: none.
	Prefix string
	// TTL is how long a session lives without a refresh. Default: 90s.
	TTL time.Duration
	// ViewsTTL is how long a post's views counter lives after its last view.
	// Default: presence.DefaultViewsTTL; negative: forever.
	ViewsTTL time.Duration
	// Registerer receives the store's metrics. Default: none registered.
	Registerer prometheus.Registerer
}

// Store is the Redis implementation of presence.Store. It also serves the
// garbage collector (Due, Prune, Sweep).
type Store struct {
	rdb      *redis.Client
	keys     Keys
	ttl      time.Duration
	viewsTTL time.Duration // 0: forever
	log      *zap.Logger
	errors   *prometheus.CounterVec
}

// The roles each type fills (see presence/roles.go).
var (
	_ presence.Store     = (*Store)(nil)
	_ presence.Publisher = (*Store)(nil)
	_ presence.Pruner    = (*Store)(nil)
	_ presence.Sweeper   = (*Store)(nil)
	_ presence.Feed      = (*Bus)(nil)
)

// New returns a Store on rdb. It does not touch Redis: an unreachable Redis
// shows up as errors wrapping presence.ErrUnavailable, and in Ping.
func New(rdb *redis.Client, cfg Config, log *zap.Logger) *Store {
	cfg.TTL, cfg.ViewsTTL = presence.StoreTTLs(cfg.TTL, cfg.ViewsTTL)
	s := &Store{
		rdb:      rdb,
		keys:     NewKeys(cfg.Prefix),
		ttl:      cfg.TTL,
		viewsTTL: cfg.ViewsTTL,
		log:      log.Named("redis"),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_redis_errors_total",
			Help: "Redis commands that failed, by operation.",
		}, []string{"op"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.errors)
	}
	return s
}

var (
	redisLogOnce sync.Once
	redisLog     atomic.Pointer[zap.SugaredLogger]
)

// Connection names the Redis to connect to: one node by URL, or a master
// by the sentinels that monitor it.
type Connection struct {
	// URL is a redis://, rediss:// or unix:// URL. With Sentinels it gives
	// only the credentials, TLS and database; its host is not used.
	URL string
	// Sentinels are the host:port of Sentinels; with Master they select
	// Sentinel mode.
	Sentinels []string
	// Master is the name of the master the sentinels monitor.
	Master string
}

// Connect returns a client for c with timeouts suited to the service; it
// does not connect. In Sentinel mode the client asks the sentinels for the
// master's address and, after a failover, reconnects to the promoted
// replica by itself (go-redis's failover client); callers see a
// *redis.Client either way. go-redis's own log lines (dial failures,
// pub/sub reconnects, failovers) go to log, so that stderr stays one JSON
// object per line.
func Connect(c Connection, log *zap.Logger) (*redis.Client, error) {
	// go-redis has one logger for the whole process, and setting it races
	// with its use: it is set once, to a logger that writes to the newest
	// Connect's. (One process connects once; tests run several servers in
	// one.)
	redisLogOnce.Do(func() { redis.SetLogger(redisLogger{}) })
	redisLog.Store(log.Named("go-redis").Sugar())
	opt := &redis.Options{}
	if c.URL != "" {
		var err error
		if opt, err = redis.ParseURL(c.URL); err != nil {
			return nil, fmt.Errorf("parse redis URL: %w", err)
		}
	}
	// Per-call deadlines matter in HTTP handlers; without this go-redis only
	// applies its own socket timeouts.
	opt.ContextTimeoutEnabled = true
	if len(c.Sentinels) == 0 {
		return redis.NewClient(opt), nil
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            c.Master,
		SentinelAddrs:         c.Sentinels,
		Username:              opt.Username,
		Password:              opt.Password,
		DB:                    opt.DB,
		TLSConfig:             opt.TLSConfig,
		ContextTimeoutEnabled: true,
	}), nil
}

type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if l := redisLog.Load(); l != nil {
		l.Warnf(format, v...)
	}
}

// LoadScripts loads every script into Redis's cache so later calls need no
// EVAL fallback.
func (s *Store) LoadScripts(ctx context.Context) error {
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return s.fail("load_scripts", err)
		}
	}
	return nil
}

// TTL implements presence.Store.
func (s *Store) TTL() time.Duration { return s.ttl }

// Ping implements presence.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// View implements presence.Store.
func (s *Store) View(ctx context.Context, sid presence.SessionID, post presence.PostID, countView bool) (presence.Count, error) {
	count := "0"
	if countView {
		count = "1"
	}
	args := append(s.keys.names(), string(sid), string(post), s.ttl.Milliseconds(), count, s.viewsTTL.Milliseconds())
	res, err := viewScript.Run(ctx, s.rdb, s.countKeys(), args...).Int64Slice()
	if err != nil {
		return presence.Count{}, s.fail("view", err)
	}
	if len(res) != 3 {
		return presence.Count{}, fmt.Errorf("view: script returned %d values, want 3", len(res))
	}
	return presence.Count{Post: post, Viewers: res[0], Views: res[1], Seq: res[2]}, nil
}

// Leave implements presence.Store.
func (s *Store) Leave(ctx context.Context, sids ...presence.SessionID) error {
	for batch := range slices.Chunk(sids, batchSize) {
		if err := leaveScript.Run(ctx, s.rdb, s.countKeys(), s.sidArgs(batch)...).Err(); err != nil {
			return s.fail("leave", err)
		}
	}
	return nil
}

// batchSize bounds the sessions one script call handles, so no script holds
// Redis for long (busy-reply-threshold is 5 s by default).
const batchSize = 500

// Refresh implements presence.Store.
func (s *Store) Refresh(ctx context.Context, sessions []presence.Session) ([]presence.SessionID, error) {
	var missing []presence.SessionID
	var errs []error
	for batch := range slices.Chunk(sessions, batchSize) {
		args := append(make([]any, 0, 2*len(batch)+5), s.keys.names()...)
		args = append(args, s.ttl.Milliseconds())
		for _, ss := range batch {
			args = append(args, string(ss.ID), string(ss.Post))
		}
		res, err := refreshScript.Run(ctx, s.rdb, []string{s.keys.Deadlines(), s.keys.Viewers()}, args...).StringSlice()
		if err != nil {
			errs = append(errs, s.fail("refresh", err))
			if isUnavailable(err) {
				break // the rest would wait out the same timeout, batch by batch
			}
			continue // a script error in one batch says nothing of the others
		}
		for _, sid := range res {
			missing = append(missing, presence.SessionID(sid))
		}
	}
	return missing, errors.Join(errs...)
}

// Counts implements presence.Store in one round trip.
func (s *Store) Counts(ctx context.Context, posts []presence.PostID) ([]presence.Count, error) {
	if len(posts) == 0 {
		return nil, nil
	}
	args := append(make([]any, 0, len(posts)+4), s.keys.names()...)
	for _, p := range posts {
		args = append(args, string(p))
	}
	res, err := countsScript.Run(ctx, s.rdb, s.countKeys(), args...).Int64Slice()
	if err != nil {
		return nil, s.fail("counts", err)
	}
	if len(res) != 1+2*len(posts) {
		return nil, fmt.Errorf("counts: script returned %d values, want %d", len(res), 1+2*len(posts))
	}
	out := make([]presence.Count, len(posts))
	for i, p := range posts {
		out[i] = presence.Count{Post: p, Viewers: res[1+2*i], Views: res[2+2*i], Seq: res[0]}
	}
	return out, nil
}

// Publish sends an event to the viewers and watchers of its post on every
// app server and returns how many app servers took it: PUBLISH's count of
// subscribers, and each app server holds one subscription per post it has
// clients on.
func (s *Store) Publish(ctx context.Context, ev presence.Event) (int, error) {
	n, err := s.rdb.Publish(ctx, s.keys.Channel(ev.Post), ev.Frame()).Result()
	if err != nil {
		return 0, s.fail("publish", err)
	}
	return int(n), nil
}

// Due returns up to limit sessions whose deadline has passed and, when none
// is due, the time until the next deadline (-1 when there is none).
func (s *Store) Due(ctx context.Context, limit int) ([]presence.SessionID, time.Duration, error) {
	res, err := dueScript.Run(ctx, s.rdb, []string{s.keys.Deadlines()}, limit).Slice()
	if err != nil {
		return nil, 0, s.fail("due", err)
	}
	if len(res) == 0 {
		return nil, 0, errors.New("due: script returned nothing")
	}
	next, _ := res[0].(int64)
	sids := make([]presence.SessionID, 0, len(res)-1)
	for _, v := range res[1:] {
		if sid, ok := v.(string); ok {
			sids = append(sids, presence.SessionID(sid))
		}
	}
	wait := time.Duration(next) * time.Millisecond
	if next < 0 {
		wait = -1
	}
	return sids, wait, nil
}

// Prune removes the sessions whose key is gone and returns how late after
// its deadline each pruned session was removed. Live sessions are left alone.
func (s *Store) Prune(ctx context.Context, sids []presence.SessionID) ([]time.Duration, error) {
	var lags []time.Duration
	for batch := range slices.Chunk(sids, batchSize) {
		res, err := pruneScript.Run(ctx, s.rdb, s.countKeys(), s.sidArgs(batch)...).Int64Slice()
		if err != nil {
			return lags, s.fail("prune", err)
		}
		for _, ms := range res {
			lags = append(lags, time.Duration(ms)*time.Millisecond)
		}
	}
	return lags, nil
}

// Sweep walks the whole viewers hash and runs prune over it, a batch at a
// time. It repairs what the deadlines index could miss (an entry lost to a
// failover or a hand edit): a dead session is pruned, a live one gets its
// deadline back. It returns the sessions pruned.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	var cursor uint64
	pruned := 0
	for {
		// HSCAN NOVALUES needs Redis 7.4; fields and values alternate here.
		kv, next, err := s.rdb.HScan(ctx, s.keys.Viewers(), cursor, "*", batchSize).Result()
		if err != nil {
			return pruned, s.fail("sweep", err)
		}
		sids := make([]presence.SessionID, 0, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			sids = append(sids, presence.SessionID(kv[i]))
		}
		lags, err := s.Prune(ctx, sids)
		pruned += len(lags)
		if err != nil {
			return pruned, err
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if n, err := s.ExpireViews(ctx); err != nil {
		return pruned, err
	} else if n > 0 {
		s.log.Info("gave views counters without a lifetime the views TTL", zap.Int("counters", n), zap.Duration("views_ttl", s.viewsTTL))
	}
	return pruned, nil
}

// ExpireViews gives every views counter that has no lifetime the store's
// views TTL, and returns how many it gave one. The view script sets the TTL
// only of posts viewed again: counters written before views expired, or by
// app servers of an older release during a rolling deploy, would otherwise
// stay for good, made-up posts first among them. With views kept forever
// it does nothing.
func (s *Store) ExpireViews(ctx context.Context) (int, error) {
	if s.viewsTTL == 0 {
		return 0, nil
	}
	var cursor uint64
	set := 0
	for {
		keys, next, err := s.rdb.Scan(ctx, cursor, s.keys.viewsPattern(), batchSize).Result()
		if err != nil {
			return set, s.fail("expire_views", err)
		}
		if len(keys) > 0 {
			// EXPIRE NX (Redis 7) leaves every counter that has a TTL as it is.
			cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.ExpireNX(ctx, k, s.viewsTTL)
				}
				return nil
			})
			if err != nil {
				return set, s.fail("expire_views", err)
			}
			for _, c := range cmds {
				if c.(*redis.BoolCmd).Val() {
					set++
				}
			}
		}
		if next == 0 {
			return set, nil
		}
		cursor = next
	}
}

// sidArgs is the ARGV of the leave and prune scripts: names, then sids.
func (s *Store) sidArgs(sids []presence.SessionID) []any {
	args := append(make([]any, 0, len(sids)+4), s.keys.names()...)
	for _, sid := range sids {
		args = append(args, string(sid))
	}
	return args
}

func (s *Store) countKeys() []string {
	return []string{s.keys.Viewers(), s.keys.Deadlines(), s.keys.Seq()}
}

// fail counts a Redis error and wraps it; errors of the connection (refused,
// timed out, closed) also wrap presence.ErrUnavailable so the edge answers
// 503 and "unavailable" rather than "internal".
func (s *Store) fail(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		// The caller gave up (a client went away, shutdown): not Redis's
		// fault, so neither counted nor reported as unavailable.
		return fmt.Errorf("%s: %w", op, err)
	}
	s.errors.WithLabelValues(op).Inc()
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, presence.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isUnavailable(err error) bool {
	var netErr net.Error
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, redis.ErrClosed),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, redis.ErrPoolTimeout):
		return true
	}
	// Redis answers these while it cannot serve: loading a dump, a replica
	// cut off from its master or written to after a failover, a script
	// running too long, or a cluster/failover in progress.
	msg := err.Error()
	for _, p := range []string{"LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "BUSY", "connection refused", "EOF"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

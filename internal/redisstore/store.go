// Package redisstore keeps presence in Redis with the seed's schema plus a
// deadlines index: one Lua script per change, each publishing the new count
// on the post's channel. On one node (or a Sentinel-watched primary) the key
// names are the seed's; on a Redis Cluster they are spread over partitions
// (see Keys), each on one hash slot. It also carries the pub/sub side: Bus
// relays post channels to an app server's hub, and Expiry turns keyspace
// expiry events into wake-ups for the garbage collector.
package redisstore

import (
	"context"
	"encoding/hex"
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
	rdb      redis.UniversalClient
	keys     Keys
	ttl      time.Duration
	viewsTTL time.Duration // 0: forever
	log      *zap.Logger
	errors   *prometheus.CounterVec
	dueFrom  atomic.Uint32 // the partition Due asks first, turning
}

// The roles each type fills (see presence/roles.go).
var (
	_ presence.Store     = (*Store)(nil)
	_ presence.Publisher = (*Store)(nil)
	_ presence.Pruner    = (*Store)(nil)
	_ presence.Sweeper   = (*Store)(nil)
	_ presence.Feed      = (*Bus)(nil)
)

// New returns a Store on rdb. A *redis.ClusterClient gets the cluster's key
// layout (NewClusterKeys), any other client the one node's. It does not
// touch Redis: an unreachable Redis shows up as errors wrapping
// presence.ErrUnavailable, and in Ping.
func New(rdb redis.UniversalClient, cfg Config, log *zap.Logger) *Store {
	cfg.TTL, cfg.ViewsTTL = presence.StoreTTLs(cfg.TTL, cfg.ViewsTTL)
	keys := NewKeys(cfg.Prefix)
	if _, ok := rdb.(*redis.ClusterClient); ok {
		keys = NewClusterKeys(cfg.Prefix)
	}
	s := &Store{
		rdb:      rdb,
		keys:     keys,
		ttl:      cfg.TTL,
		viewsTTL: cfg.ViewsTTL,
		log:      log.Named("redis"),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_redis_errors_total",
			Help: "Redis commands that failed, by operation.",
		}, []string{"op"}),
	}
	for _, op := range ops {
		s.errors.WithLabelValues(op)
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

// Connection names the Redis to connect to: one node by URL, a master by
// the sentinels that monitor it, or a cluster by some of its nodes.
type Connection struct {
	// URL is a redis://, rediss:// or unix:// URL. With Sentinels it gives
	// only the credentials, TLS and database; its host is not used.
	URL string
	// Sentinels are the host:port of Sentinels; with Master they select
	// Sentinel mode.
	Sentinels []string
	// Master is the name of the master the sentinels monitor.
	Master string
	// Cluster are the host:port of some nodes of a Redis Cluster; they
	// select Cluster mode, and the client learns the other nodes from them.
	Cluster []string
}

// Connect returns a client for c with timeouts suited to the service; it
// does not connect. In Sentinel mode the client asks the sentinels for the
// master's address and, after a failover, reconnects to the promoted
// replica by itself (go-redis's failover client, a *redis.Client). In
// Cluster mode it is a *redis.ClusterClient, which follows MOVED and ASK
// and reloads the slot map when it changes. go-redis's own log lines (dial failures,
// pub/sub reconnects, failovers) go to log, so that stderr stays one JSON
// object per line.
func Connect(c Connection, log *zap.Logger) (redis.UniversalClient, error) {
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
	if len(c.Cluster) > 0 {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Cluster,
			// A slot that migrates key by key answers a script with ASK or
			// TRYAGAIN until its keys are on one node; go-redis's default of
			// 3 follows too few of them.
			MaxRedirects: 8,
			// go-redis reloads the slot map on MOVED and ASK, but a dead
			// primary only refuses connections: without this its slots
			// stay mapped to it for the default 60s after a failover.
			// (Store.fail also asks for a reload on such errors.)
			ClusterStateReloadInterval: 5 * time.Second,
			Username:                   opt.Username,
			Password:                   opt.Password,
			TLSConfig:                  opt.TLSConfig,
			ContextTimeoutEnabled:      true,
		}), nil
	}
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

// Addr names the Redis a client talks to, for log lines: the node's
// address, or a cluster's seed nodes.
func Addr(rdb redis.UniversalClient) string {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprintf("%T", rdb)
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
			return s.fail(opLoadScripts, err)
		}
	}
	return nil
}

// TTL implements presence.Store.
func (s *Store) TTL() time.Duration { return s.ttl }

// Ping implements presence.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		// The address too: when the caller's deadline cuts go-redis's
		// retries short, the error left is only the deadline's.
		return fmt.Errorf("redis at %s: %w", Addr(s.rdb), s.fail(opPing, err))
	}
	return nil
}

// View implements presence.Store. A move between posts of two partitions
// takes two scripts, one on each: the session leaves the old partition,
// then views in the new one. In between, or if the second never runs, the
// session is on neither post, a count one too low and never too high; the
// app server's next refresh finds it missing and registers it again. (The
// other order could leave it counted on both posts until its old key
// expired.)
func (s *Store) View(ctx context.Context, vs presence.Session, from presence.PostID, countView bool) (presence.Count, error) {
	n := s.keys.Partition(vs.Post)
	if from != "" && s.keys.Partition(from) != n {
		if err := s.leave(ctx, s.keys.Partition(from), []presence.Session{{ID: vs.ID, Post: from}}); err != nil {
			return presence.Count{}, err
		}
		from = ""
	}
	count := boolArg(countView)
	for range maxElsewhere {
		on := []presence.Session{vs}
		if from != "" && from != vs.Post {
			on = append(on, presence.Session{ID: vs.ID, Post: from})
		}
		args := append(s.keys.names(n, 8), string(vs.ID), string(vs.Post), s.ttl.Milliseconds(), count, s.viewsTTL.Milliseconds(), string(from), boolArg(vs.Hidden), string(vs.Visitor))
		res, err := viewScript.Run(ctx, s.rdb, s.keys.touched(n, on, true), args...).Slice()
		if err != nil {
			return presence.Count{}, s.fail(opView, err)
		}
		if len(res) == 2 {
			// On another post than the caller believed: name that one.
			old, _ := res[1].(string)
			from = presence.PostID(old)
			continue
		}
		if len(res) != 5 {
			return presence.Count{}, fmt.Errorf("view: script returned %d values, want 5", len(res))
		}
		c := presence.Count{Post: vs.Post}
		c.Viewers, _ = res[0].(int64)
		c.Views, _ = res[1].(int64)
		c.Seq, _ = res[2].(int64)
		c.Reading, _ = res[3].(int64)
		c.People, _ = res[4].(int64)
		return c, nil
	}
	return presence.Count{}, fmt.Errorf("view: session %s moved between posts %d times while being registered", vs.ID, maxElsewhere)
}

// maxElsewhere bounds the runs of a script that keeps finding a session on
// another post than it was told: each run names the post the last found,
// so only a session moved concurrently, again and again, exhausts it.
const maxElsewhere = 3

// Leave implements presence.Store.
func (s *Store) Leave(ctx context.Context, sessions ...presence.Session) error {
	return s.byPartition(ctx, sessions, func(n int, part []presence.Session) error {
		return s.leave(ctx, n, part)
	})
}

// leave runs the leave script on partition n, again for the sessions it
// finds on other posts than given.
func (s *Store) leave(ctx context.Context, n int, sessions []presence.Session) error {
	for batch := range slices.Chunk(sessions, batchSize) {
		for range maxElsewhere {
			res, err := leaveScript.Run(ctx, s.rdb, s.keys.touched(n, batch, true), s.sessionArgs(n, batch)...).Slice()
			if err != nil {
				return s.fail(opLeave, err)
			}
			if batch = elsewhere(res[1:]); len(batch) == 0 {
				break
			}
		}
	}
	return nil
}

// elsewhere reads the sessions a script found on other posts than it was
// told: pairs of sid, post.
func elsewhere(res []any) []presence.Session {
	var out []presence.Session
	for i := 0; i+1 < len(res); i += 2 {
		sid, _ := res[i].(string)
		post, _ := res[i+1].(string)
		out = append(out, presence.Session{ID: presence.SessionID(sid), Post: presence.PostID(post)})
	}
	return out
}

// batchSize bounds the sessions one script call handles, so no script holds
// Redis for long (busy-reply-threshold is 5 s by default).
const batchSize = 500

// Refresh implements presence.Store.
func (s *Store) Refresh(ctx context.Context, sessions []presence.Session) ([]presence.SessionID, error) {
	return s.refresh(ctx, sessions, s.ttl, false)
}

// Hold implements presence.Store with the refresh script, which keeps a
// deadline further out than d when it holds.
func (s *Store) Hold(ctx context.Context, sessions []presence.Session, d time.Duration) error {
	_, err := s.refresh(ctx, sessions, d, true)
	return err
}

// ResumeKey returns the key every app server on this Redis signs resume
// tokens with, making it (32 random bytes, hex) if none is stored. It never
// expires: tokens stay good across deploys. Should Redis lose it, the app
// servers started after that make a new one, and tokens signed with the old
// one get fresh sessions there.
func (s *Store) ResumeKey(ctx context.Context) ([]byte, error) {
	key := s.keys.ResumeKey()
	if err := s.rdb.SetNX(ctx, key, hex.EncodeToString(presence.RandomKey()), 0).Err(); err != nil {
		return nil, s.fail(opResumeKey, err)
	}
	v, err := s.rdb.Get(ctx, key).Bytes()
	if err != nil {
		return nil, s.fail(opResumeKey, err)
	}
	return v, nil
}

// boolArg is a flag as the scripts take it.
func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (s *Store) refresh(ctx context.Context, sessions []presence.Session, ttl time.Duration, hold bool) ([]presence.SessionID, error) {
	var missing []presence.SessionID
	err := s.byPartition(ctx, sessions, func(n int, part []presence.Session) error {
		var errs []error
		for batch := range slices.Chunk(part, batchSize) {
			args := s.keys.names(n, 2+2*len(batch))
			args = append(args, ttl.Milliseconds(), boolArg(hold))
			for _, ss := range batch {
				args = append(args, string(ss.ID), string(ss.Post))
			}
			res, err := refreshScript.Run(ctx, s.rdb, s.keys.touched(n, batch, false), args...).StringSlice()
			if err != nil {
				errs = append(errs, s.fail(opRefresh, err))
				if isUnavailable(err) {
					break // the rest would wait out the same timeout, batch by batch
				}
				continue // a script error in one batch says nothing of the others
			}
			for _, sid := range res {
				missing = append(missing, presence.SessionID(sid))
			}
		}
		return errors.Join(errs...)
	})
	return missing, err
}

// byPartition runs fn on the sessions of each partition their posts fall
// in (on one node, on all of them at once). A partition that fails does
// not stop the others, which on a cluster may be on nodes that answer;
// those on a node that did not answer are skipped rather than each waiting
// out go-redis's retries. It returns the errors joined.
func (s *Store) byPartition(ctx context.Context, sessions []presence.Session, fn func(n int, part []presence.Session) error) error {
	if s.keys.parts == 1 {
		return fn(0, sessions)
	}
	parts := make(map[int][]presence.Session, 1)
	for _, ss := range sessions {
		n := s.keys.Partition(ss.Post)
		parts[n] = append(parts[n], ss)
	}
	var errs []error
	var away unreachable
	for n, part := range parts {
		if away.skip(ctx, s, n) {
			continue
		}
		if err := fn(n, part); err != nil {
			errs = append(errs, err)
			away.failed(ctx, s, n, err)
		}
	}
	return errors.Join(errs...)
}

// Counts implements presence.Store: one round trip per partition the posts
// fall in. Counts of one partition are read at one instant; Seq orders each
// against the counts published in its partition, the only ones about the
// same post.
func (s *Store) Counts(ctx context.Context, posts []presence.PostID) ([]presence.Count, error) {
	if len(posts) == 0 {
		return nil, nil
	}
	at := make(map[int][]int, 1) // partition -> indexes in posts
	for i, p := range posts {
		n := s.keys.Partition(p)
		at[n] = append(at[n], i)
	}
	out := make([]presence.Count, len(posts))
	for n, idx := range at {
		args := s.keys.names(n, len(idx))
		keys := s.keys.partKeys(n)
		for _, i := range idx {
			args = append(args, string(posts[i]))
			keys = append(keys, s.keys.PostViewers(posts[i]), s.keys.Views(posts[i]), s.keys.Hidden(posts[i]), s.keys.People(posts[i]))
		}
		res, err := countsScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
		if err != nil {
			return nil, s.fail(opCounts, err)
		}
		if len(res) != 1+4*len(idx) {
			return nil, fmt.Errorf("counts: script returned %d values, want %d", len(res), 1+4*len(idx))
		}
		for j, i := range idx {
			r := res[1+4*j:]
			out[i] = presence.Count{Post: posts[i], Viewers: r[0], Views: r[1], Reading: r[2], People: r[3], Seq: res[0]}
		}
	}
	return out, nil
}

// Publish sends an event to the viewers and watchers of its post on every
// app server and returns how many app servers took it: PUBLISH's (or
// SPUBLISH's) count of subscribers, and each app server holds one
// subscription per post it has clients on.
func (s *Store) Publish(ctx context.Context, ev presence.Event) (int, error) {
	n, err := s.publish(ctx, s.keys.Channel(ev.Post), ev.Frame()).Result()
	if err != nil {
		return 0, s.fail(opPublish, err)
	}
	return int(n), nil
}

// publish sends msg on a channel with the layout's command: PUBLISH, or
// SPUBLISH on a cluster's shard channels.
func (s *Store) publish(ctx context.Context, channel string, msg any) *redis.IntCmd {
	if s.keys.sharded() {
		return s.rdb.SPublish(ctx, channel, msg)
	}
	return s.rdb.Publish(ctx, channel, msg)
}

// Due returns up to limit sessions whose deadline has passed, each with its
// post, and, when none is due, the time until the next deadline (-1 when
// there is none). It asks every partition, one script call each, starting
// one further each time so that no partition waits behind the others'
// backlog. A partition that does not answer (its primary is failing over,
// say) does not stop the others: their sessions come back with the error.
func (s *Store) Due(ctx context.Context, limit int) ([]presence.Session, time.Duration, error) {
	var due []presence.Session
	var errs []error
	next := int64(-1)
	first := int(s.dueFrom.Add(1))
	var away unreachable
	for i := range s.keys.parts {
		if len(due) >= limit {
			next = 0
			break
		}
		n := (first + i) % s.keys.parts
		if away.skip(ctx, s, n) {
			continue
		}
		args := append(s.keys.names(n, 1), limit-len(due))
		res, err := dueScript.Run(ctx, s.rdb, s.keys.partKeys(n), args...).Slice()
		if err != nil {
			errs = append(errs, s.fail(opDue, err))
			away.failed(ctx, s, n, err)
			continue
		}
		if len(res) == 0 || len(res)%2 != 1 {
			errs = append(errs, fmt.Errorf("due: script returned %d values, want an odd number", len(res)))
			continue
		}
		if w, _ := res[0].(int64); w >= 0 && (next < 0 || w < next) {
			next = w
		}
		for i := 1; i+1 < len(res); i += 2 {
			sid, _ := res[i].(string)
			post, _ := res[i+1].(string)
			due = append(due, presence.Session{ID: presence.SessionID(sid), Post: presence.PostID(post)})
		}
	}
	wait := time.Duration(next) * time.Millisecond
	if next < 0 {
		wait = -1
	}
	return due, wait, errors.Join(errs...)
}

// Prune removes the sessions whose key is gone and returns how late after
// its deadline each pruned session was removed. Live sessions are left
// alone. Each session is looked for on its Post.
func (s *Store) Prune(ctx context.Context, sessions []presence.Session) ([]time.Duration, error) {
	var lags []time.Duration
	err := s.byPartition(ctx, sessions, func(n int, part []presence.Session) error {
		l, err := s.prune(ctx, n, part)
		lags = append(lags, l...)
		return err
	})
	return lags, err
}

// prune runs the prune script on partition n, again for the sessions it
// finds on other posts than given.
func (s *Store) prune(ctx context.Context, n int, sessions []presence.Session) ([]time.Duration, error) {
	var lags []time.Duration
	for batch := range slices.Chunk(sessions, batchSize) {
		for range maxElsewhere {
			res, err := pruneScript.Run(ctx, s.rdb, s.keys.touched(n, batch, true), s.sessionArgs(n, batch)...).Slice()
			if err != nil {
				return lags, s.fail(opPrune, err)
			}
			pruned, _ := res[0].(int64)
			if pruned < 0 || int(pruned) >= len(res) {
				return lags, fmt.Errorf("prune: script returned %d values for %d pruned", len(res), pruned)
			}
			for _, v := range res[1 : 1+pruned] {
				ms, _ := v.(int64)
				lags = append(lags, time.Duration(ms)*time.Millisecond)
			}
			if batch = elsewhere(res[1+pruned:]); len(batch) == 0 {
				break
			}
		}
	}
	return lags, nil
}

// Sweep walks every partition's viewers hash and runs prune over it, a
// batch at a time. It repairs what the deadlines index could miss (an entry
// lost to a failover or a hand edit): a dead session is pruned, a live one
// gets its deadline back. It returns the sessions pruned.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	pruned := 0
	var errs []error
	var away unreachable
	for n := range s.keys.parts {
		if away.skip(ctx, s, n) {
			continue
		}
		p, err := s.sweep(ctx, n)
		pruned += p
		if err != nil {
			errs = append(errs, err) // the other partitions may answer
			away.failed(ctx, s, n, err)
		}
	}
	if n, err := s.ExpireViews(ctx); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		s.log.Info("gave views counters without a lifetime the views TTL", zap.Int("counters", n), zap.Duration("views_ttl", s.viewsTTL))
	}
	return pruned, errors.Join(errs...)
}

// sweep runs prune over partition n's viewers hash.
func (s *Store) sweep(ctx context.Context, n int) (int, error) {
	pruned := 0
	var cursor uint64
	for {
		// HSCAN NOVALUES needs Redis 7.4; fields and values alternate here.
		kv, next, err := s.rdb.HScan(ctx, s.keys.viewersAt(n), cursor, "*", batchSize).Result()
		if err != nil {
			return pruned, s.fail(opSweep, err)
		}
		due := make([]presence.Session, 0, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			due = append(due, presence.Session{ID: presence.SessionID(kv[i]), Post: presence.PostID(kv[i+1])})
		}
		lags, err := s.prune(ctx, n, due)
		pruned += len(lags)
		if err != nil {
			return pruned, err
		}
		if next == 0 {
			return pruned, nil
		}
		cursor = next
	}
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
	set := 0
	err := s.scanKeys(ctx, kindViews, "", func(_ int, keys []string) error {
		// EXPIRE NX (Redis 7) leaves every counter that has a TTL as it is.
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.ExpireNX(ctx, k, s.viewsTTL)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, c := range cmds {
			if c.(*redis.BoolCmd).Val() {
				set++
			}
		}
		return nil
	})
	if err != nil {
		return set, s.fail(opExpireViews, err)
	}
	return set, nil
}

// unreachable remembers, over one call that works partition by partition,
// the cluster nodes that did not answer: the other partitions they hold are
// skipped rather than each waiting out go-redis's retries. The zero value
// is ready; on one node it never skips.
type unreachable map[string]bool

// skip reports whether partition n is on a node that did not answer.
func (u *unreachable) skip(ctx context.Context, s *Store, n int) bool {
	return len(*u) > 0 && (*u)[s.nodeOf(ctx, n)]
}

// failed notes partition n's node when err says it did not answer.
func (u *unreachable) failed(ctx context.Context, s *Store, n int, err error) {
	if !isUnavailable(err) {
		return
	}
	if node := s.nodeOf(ctx, n); node != "" {
		if *u == nil {
			*u = make(unreachable)
		}
		(*u)[node] = true
	}
}

// nodeOf names the node that holds partition n, as the client's slot map
// has it; "" on one node.
func (s *Store) nodeOf(ctx context.Context, n int) string {
	c, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return ""
	}
	m, err := c.MasterForKey(ctx, s.keys.viewersAt(n))
	if err != nil {
		return ""
	}
	return m.Options().Addr
}

// scanKeys runs SCAN for the per-post keys of one kind (kindViewers for
// the posts' sets, kindViews for their counters; of type typ unless "") and calls
// each with every batch found, by partition. On a cluster it scans each
// primary once, for every partition it holds: a SCAN walks a node's whole
// keyspace, whatever the pattern.
func (s *Store) scanKeys(ctx context.Context, kind, typ string, each func(n int, keys []string) error) error {
	nodes := []redis.Cmdable{s.rdb}
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		nodes = nil
		err := c.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
			mu.Lock()
			nodes = append(nodes, m)
			mu.Unlock()
			return nil
		})
		if err != nil {
			return err
		}
	}
	pattern := s.keys.kindPattern(kind)
	for _, node := range nodes {
		var cursor uint64
		for {
			var keys []string
			var next uint64
			var err error
			if typ == "" {
				keys, next, err = node.Scan(ctx, cursor, pattern, batchSize).Result()
			} else {
				keys, next, err = node.ScanType(ctx, cursor, pattern, batchSize, typ).Result()
			}
			if err != nil {
				return err
			}
			byPart := make(map[int][]string, 1)
			for _, k := range keys {
				if _, n, ok := s.keys.cutPart(k, kind); ok {
					byPart[n] = append(byPart[n], k)
				}
			}
			for n, ks := range byPart {
				if err := each(n, ks); err != nil {
					return err
				}
			}
			if next == 0 {
				break
			}
			cursor = next
		}
	}
	return nil
}

// sessionArgs is the ARGV of the leave and prune scripts: names, then
// pairs of sid and post.
func (s *Store) sessionArgs(n int, sessions []presence.Session) []any {
	args := s.keys.names(n, 2*len(sessions))
	for _, ss := range sessions {
		args = append(args, string(ss.ID), string(ss.Post))
	}
	return args
}

// The operations that presence_redis_errors_total counts by, each shown
// from the start so that a rate or an alert sees the first error.
const (
	opCheck       = "check"
	opCounts      = "counts"
	opDue         = "due"
	opExpireViews = "expire_views"
	opLeave       = "leave"
	opLoadScripts = "load_scripts"
	opPing        = "ping"
	opPrune       = "prune"
	opPublish     = "publish"
	opRefresh     = "refresh"
	opSweep       = "sweep"
	opView        = "view"
	opResumeKey   = "resume_key"
)

var ops = []string{opCheck, opCounts, opDue, opExpireViews, opLeave, opLoadScripts, opPing, opPrune, opPublish, opRefresh, opSweep, opView, opResumeKey}

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
		if c, ok := s.rdb.(*redis.ClusterClient); ok {
			// A node that refuses or times out may have failed over: read
			// the slot map again (go-redis runs one reload at a time).
			c.ReloadState(context.Background())
		}
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
	// running too long, a cluster/failover in progress, or a slot moving
	// faster than go-redis's redirections follow it (MOVED, ASK).
	msg := err.Error()
	for _, p := range []string{"LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "BUSY", "MOVED", "ASK", "connection refused", "EOF"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

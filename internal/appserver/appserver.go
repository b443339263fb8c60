// Package appserver assembles one app server from its parts: the store that the
// settings pick (memory, or Redis) with its feed and publisher, the
// collector that embedded mode runs in-process, the hub, the health checks
// and the HTTP API. cmd/presence serves what New builds, and the HTTP API's
// tests build their servers with New too, so that they test this wiring
// rather than a copy of it.
package appserver

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/gc"
	"github.com/presence/presence/internal/health"
	"github.com/presence/presence/internal/httpapi"
	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/memstore"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
)

// Options are what New builds from. Config is the app server's settings;
// the rest reaches what the settings do not, and its zero value is what
// cmd/presence runs with.
type Options struct {
	// Config picks the store (Redis when RedisURL is set) and sets the key
	// prefix, the TTLs, the coalescing window and embedded mode's gc poll.
	Config config.Config
	// API configures the HTTP API; APIConfig derives it from the settings.
	// Its Registerer is replaced by Registry.
	API httpapi.Config
	// Hub tunes the hub beyond the settings (queue size, store checks); its
	// Coalesce and Registerer come from Config and Registry.
	Hub hub.Config
	// Bus tunes the Redis feed (probe interval and timeout); its Registerer
	// comes from Registry.
	Bus redisstore.BusConfig
	// Redis, when set, is the client used instead of dialling
	// Config.RedisURL (a test reaches Redis through a proxy with it).
	Redis redis.UniversalClient
	// Registry receives every metric.
	Registry *prometheus.Registry
	// Log receives every log line; the first says the mode.
	Log *zap.Logger
}

// App is one assembled app server, not yet running.
type App struct {
	// Store is the store the settings picked; Redis or Memory is the same
	// store by its own type, and the other is nil.
	Store  presence.Store
	Redis  *redisstore.Store
	Memory *memstore.Store
	// RedisClient is the client of Redis, nil in embedded mode.
	RedisClient redis.UniversalClient
	Hub         *hub.Hub
	Health      *health.Handler
	API         *httpapi.Server

	feed    presence.Feed
	runners []func(context.Context) error
	close   func()
}

// APIConfig is the HTTP API's configuration that the settings give.
func APIConfig(cfg config.Config) httpapi.Config {
	return httpapi.Config{
		AllowedOrigins: cfg.AllowedOrigins,
		PublishKeys:    cfg.PublishKeys,
		Signer:         presence.NewSigner(cfg.PostSecrets),
		MaxConns:       cfg.MaxConns,
		MaxConnsPerIP:  cfg.MaxConnsPerIP,
		TrustedProxies: cfg.TrustedProxies,
		HideMetrics:    cfg.AdminAddr != "",
	}
}

// New builds an app server. With Redis it tries for 5s (or until ctx ends)
// to load the scripts, and serves anyway when it cannot: /readyz says 503
// until Redis answers, and the scripts load themselves on first use.
func New(ctx context.Context, o Options) (*App, error) {
	cfg, log, reg := o.Config, o.Log, o.Registry
	a := &App{close: func() {}}
	// The stores take zero as their default and negative as forever; the
	// settings take zero as forever.
	viewsTTL := cfg.ViewsTTL
	if viewsTTL == 0 {
		viewsTTL = -1
	}
	check := "memory"
	var pub presence.Publisher
	if cfg.Embedded() {
		log.Info("starting presence in embedded mode: counts live in this process only and are not shared "+
			"with other processes; set PRESENCE_REDIS_URL (e.g. redis://127.0.0.1:6379/0) and run cmd/gc to use Redis"+posts(cfg),
			zap.String("mode", "embedded"), zap.Any("config", cfg.Fields()))
		ms := memstore.New(memstore.Config{TTL: cfg.SessionTTL, ViewsTTL: viewsTTL})
		// The same collector cmd/gc runs against Redis, in-process; with no
		// expiry events it sleeps until the next deadline.
		col := gc.New(ms, gc.Config{Poll: cfg.GCPoll, Registerer: reg}, log)
		a.Store, a.Memory, a.feed, pub = ms, ms, ms, ms
		a.runners = append(a.runners, col.Run)
	} else {
		log.Info("starting presence with "+redisName(cfg)+posts(cfg), zap.String("mode", cfg.RedisMode()), zap.Any("config", cfg.Fields()))
		rdb := o.Redis
		if rdb == nil {
			var err error
			if rdb, err = redisstore.Connect(redisstore.Connection{URL: cfg.RedisURL, Sentinels: cfg.RedisSentinels, Master: cfg.RedisMaster, Cluster: cfg.RedisCluster}, log); err != nil {
				return nil, fmt.Errorf("PRESENCE_REDIS_URL: %w", err)
			}
			a.close = func() { rdb.Close() }
		}
		store := redisstore.New(rdb, redisstore.Config{Prefix: cfg.KeyPrefix, TTL: cfg.SessionTTL, ViewsTTL: viewsTTL, Registerer: reg}, log)
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := store.LoadScripts(lctx); err != nil {
			log.Error("Redis is unreachable; serving anyway, /readyz answers 503 until it is back",
				zap.String("redis", redisstore.Addr(rdb)), zap.Error(err))
		}
		bus := o.Bus
		bus.Registerer = reg
		check = "redis"
		a.Store, a.Redis, a.RedisClient, a.feed, pub = store, store, rdb, redisstore.NewBus(store, bus), store
	}

	hc := o.Hub
	// The hub takes zero as its default window and negative as none; the
	// settings take zero as none.
	hc.Coalesce = cfg.Coalesce
	if hc.Coalesce == 0 {
		hc.Coalesce = -1
	}
	hc.Registerer = reg
	hc.HandoffGrace = cfg.HandoffGrace
	a.Hub = hub.New(a.Store, a.feed, hc, log)
	a.Health = health.New(map[string]health.Check{check: a.Store.Ping}, reg)
	api := o.API
	api.Registerer = reg
	api.Resumer = a.resumer(ctx, log)
	a.API = httpapi.New(a.Hub, a.Store, pub, a.Health, api, log)
	return a, nil
}

// resumer makes the signer of resume tokens. In embedded mode its key is
// this process's own: the sessions live here only. With Redis the key is
// the one every app server reads from Redis, so a tab resumes on any of
// them; until Redis has answered, no tokens are issued, and a runner keeps
// asking.
func (a *App) resumer(ctx context.Context, log *zap.Logger) *presence.Resumer {
	if a.Redis == nil {
		return presence.NewResumer(presence.RandomKey())
	}
	r := presence.NewResumer(nil)
	// load asks Redis once, for 2s at most; true once the key is set.
	load := func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		key, err := a.Redis.ResumeKey(ctx)
		if err == nil {
			r.SetKey(key)
		}
		return err == nil
	}
	if load(ctx) {
		return r
	}
	a.runners = append(a.runners, func(ctx context.Context) error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
			if load(ctx) {
				log.Info("resume key loaded from Redis: tabs can resume their sessions again")
				return nil
			}
		}
	})
	return r
}

// Run runs the relay of the store's feed, the hub's refresh and store
// checks, and embedded mode's collector until ctx ends or one fails. The
// HTTP servers are the caller's: it serves API (or Health) on its own
// listeners and drains them before it ends ctx, so that tabs keep getting
// counts while it drains.
func (a *App) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.feed.Run(gctx, a.Hub.Deliver) })
	g.Go(func() error { return a.Hub.Run(gctx) })
	for _, r := range a.runners {
		g.Go(func() error { return r(gctx) })
	}
	return g.Wait()
}

// Close releases what New opened (the Redis client it dialled), once Run
// has returned.
func (a *App) Close() { a.close() }

// redisName says which Redis the first log line is about.
func redisName(cfg config.Config) string {
	switch cfg.RedisMode() {
	case "sentinel":
		return fmt.Sprintf("Redis Sentinel: master %q, sentinels %s", cfg.RedisMaster, strings.Join(cfg.RedisSentinels, ","))
	case "cluster":
		return "Redis Cluster: seed nodes " + strings.Join(cfg.RedisCluster, ",")
	}
	return "Redis"
}

// posts ends the first log line with what the server accepts as a post, so
// that a public server that takes any id is noticed.
func posts(cfg config.Config) string {
	if len(cfg.PostSecrets) == 0 {
		return "; PRESENCE_POST_SECRET is not set, so any post id is accepted: set it before serving a public site"
	}
	return "; only posts with a token signed by PRESENCE_POST_SECRET are accepted"
}

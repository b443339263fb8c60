// Command gc prunes dead sessions from Redis: those whose app server crashed
// or lost them without a leave. It polls the deadlines index and wakes early
// on Redis expiry events. Any number may run against one Redis. Run with -h
// for the settings; "gc check" reports (and with -repair mends) drift of the
// schema in Redis, and "gc migrate" moves views totals from one Redis node
// into a Redis Cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/gc"
	"github.com/presence/presence/internal/health"
	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// "check" is a subcommand rather than a flag: it has its own flags and
	// exit statuses (0 clean, 1 drift, 2 could not check), and it runs
	// where gc runs, with gc's settings.
	if len(os.Args) > 1 && os.Args[1] == "check" {
		code := check(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		code := migrate(ctx, os.Args[2:], os.Getenv, os.Stderr)
		stop()
		os.Exit(code)
	}
	// "healthcheck" is for images with no shell and no curl: Docker and
	// compose run it inside the container.
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		code := health.Command(ctx, "gc healthcheck", os.Args[2:], func() (string, error) {
			cfg, err := config.Load("gc healthcheck", nil, os.Getenv, os.Stderr)
			if err != nil {
				return "", err
			}
			return config.LocalURL(cfg.GCAddr, "127.0.0.1")
		}, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stderr); err != nil {
		// -h is not a failure: Load has printed the usage already.
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if errors.Is(err, config.ErrVersion) {
			fmt.Println("gc", version.Get())
			return
		}
		fmt.Fprintln(os.Stderr, "gc:", err)
		os.Exit(1)
	}
}

// run is the whole of gc: it returns when ctx ends (a signal) or a part
// fails. Arguments, environment and stderr are passed in, so that a test can
// drive it inside the test's own process.
func run(ctx context.Context, args []string, environ []string, stderr io.Writer) error {
	// Configuration and logging.
	cfg, err := config.Load("gc", args, config.Getenv(environ), stderr)
	if err != nil {
		return err
	}
	log := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	defer log.Sync()
	// Embedded mode runs the same collector inside presence; a gc process
	// has nothing to prune without Redis.
	if cfg.Embedded() {
		return errors.New("PRESENCE_REDIS_URL is not set: gc prunes a Redis store, e.g. PRESENCE_REDIS_URL=redis://127.0.0.1:6379/0")
	}
	// Bind first, so a taken port is an error of run, returned at once,
	// and the first line can say where health and metrics are.
	ln, err := net.Listen("tcp", cfg.GCAddr)
	if err != nil {
		return fmt.Errorf("PRESENCE_GC_ADDR: %w", err)
	}
	defer ln.Close() // once served, Shutdown has closed it already
	url, _ := config.LocalURL(ln.Addr().String(), "localhost")
	logging.FirstLine(log, fmt.Sprintf("gc %s in %s mode: /readyz and /metrics on %s", version.Get().Version, cfg.RedisMode(), url),
		cfg.RedisMode(), ln.Addr().String(), url)
	for _, w := range config.UnknownVariables(environ) {
		log.Warn(w)
	}
	// gc must share the app servers' key prefix and views TTL; the line
	// shows what it took, secrets masked.
	log.Info("starting gc", zap.String("mode", cfg.RedisMode()), zap.Any("config", cfg.Fields()))

	// Store, expiry events and collector.
	// A registry of its own, passed to every part; README promises the
	// go_* and process_* series beside gc's.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	version.Register(reg)
	rdb, err := redisstore.Connect(redisConnection(cfg), log)
	if err != nil {
		return fmt.Errorf("PRESENCE_REDIS_URL: %w", err)
	}
	defer rdb.Close()
	viewsTTL := cfg.ViewsTTL
	if viewsTTL == 0 {
		viewsTTL = -1 // store: zero means its default, negative means forever
	}
	// The sweep also gives views counters without a lifetime the views TTL,
	// so gc must run with the app servers' PRESENCE_VIEWS_TTL.
	store := redisstore.New(rdb, redisstore.Config{Prefix: cfg.KeyPrefix, TTL: cfg.SessionTTL, ViewsTTL: viewsTTL, Registerer: reg}, log)
	// Not fatal: start-up order does not matter, so gc starts while Redis
	// is away and the collector retries at every poll.
	// Bounded: the listener is bound already, and its /readyz waits for
	// this to end; a Redis that drops packets would hold it forever.
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = store.Ping(pctx)
	cancel()
	if err != nil {
		log.Error("Redis is unreachable; retrying every poll interval, /readyz answers 503 until it is back",
			zap.String("redis", redisstore.Addr(rdb)), zap.Error(err))
	}
	// Expired-key events only wake the collector early; the deadlines index
	// is what it trusts, as Redis reports expiries late (README: a median of
	// 21 s with 10k live sessions) and pub/sub loses events on reconnect.
	expiry := redisstore.NewExpiry(store, reg)
	sweep := cfg.SweepInterval
	if sweep == 0 {
		sweep = -1 // gc: zero means its default, negative means none
	}
	// The store is also the Sweeper: its sweeps repair index entries lost to
	// a failover or a hand edit, and give views totals without a TTL one.
	col := gc.New(store, gc.Config{Poll: cfg.GCPoll, Sweeper: store, Sweep: sweep, Wake: expiry.Wakeups(), Registerer: reg}, log)

	// Health and metrics on their own port.
	hh := health.New(map[string]health.Check{"redis": store.Ping}, reg)
	srv := hh.Server()

	// Run until a signal or the first failure: the errgroup's context ends
	// with either, and every part returns when it does.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return expiry.Run(gctx) })
	g.Go(func() error { return col.Run(gctx) })
	g.Go(func() error {
		// ErrServerClosed is the Shutdown below, not a failure.
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// A fresh context, as gctx has ended; bounded, so a request in flight
		// cannot keep the process from exiting.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// redisConnection is the Redis the settings name, in whichever mode.
func redisConnection(cfg config.Config) redisstore.Connection {
	return redisstore.Connection{URL: cfg.RedisURL, Sentinels: cfg.RedisSentinels, Master: cfg.RedisMaster, Cluster: cfg.RedisCluster}
}

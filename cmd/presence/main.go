// Command presence is the app server: browsers hold a WebSocket to it and say
// which post they view; it keeps presence in the store and pushes live counts
// back. Run with -h for the settings.
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
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/gc"
	"github.com/presence/presence/internal/health"
	"github.com/presence/presence/internal/httpapi"
	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/memstore"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "presence:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	// Configuration and logging.
	cfg, err := config.Load("presence", args, getenv, stderr)
	if err != nil {
		return err
	}
	log := logging.New(stderr, cfg.LogLevel)
	defer log.Sync()
	// Store, its change feed and metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := openStore(ctx, cfg, reg, log)
	if err != nil {
		return err
	}
	defer st.close()
	store, bus := st.store, st.bus
	if slices.Contains(cfg.AllowedOrigins, "*") {
		log.Warn("PRESENCE_ALLOWED_ORIGINS has *: pages of any site may connect and read counts")
	}

	// Hub and HTTP API.
	coalesce := cfg.Coalesce
	if coalesce == 0 {
		coalesce = -1 // hub: zero means its default, negative means none
	}
	h := hub.New(store, bus, hub.Config{Coalesce: coalesce, Registerer: reg}, log)
	hh := health.New(map[string]health.Check{st.name: store.Ping}, reg)
	api := httpapi.New(h, store, st.pub, hh, httpapi.Config{
		AllowedOrigins: cfg.AllowedOrigins,
		PublishKeys:    cfg.PublishKeys,
		Signer:         presence.NewSigner(cfg.PostSecrets),
		MaxConns:       cfg.MaxConns,
		MaxConnsPerIP:  cfg.MaxConnsPerIP,
		TrustedProxies: cfg.TrustedProxies,
		HideMetrics:    cfg.AdminAddr != "",
		Registerer:     reg,
	}, log)

	// Bind before serving, so a taken port fails here and now.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("PRESENCE_ADDR: %w", err)
	}
	srv := api.HTTPServer()
	servers := []*http.Server{srv}
	listeners := []net.Listener{ln}
	log.Info("listening", zap.String("addr", ln.Addr().String()))
	if cfg.AdminAddr != "" {
		aln, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("PRESENCE_ADMIN_ADDR: %w", err)
		}
		admin := hh.Server()
		admin.ErrorLog = zap.NewStdLog(log.Named("admin"))
		servers = append(servers, admin)
		listeners = append(listeners, aln)
		log.Info("admin listener: /metrics, /readyz with details, /healthz", zap.String("admin_addr", aln.Addr().String()))
	} else {
		log.Info("/metrics is served on PRESENCE_ADDR, to anyone who can reach it; set PRESENCE_ADMIN_ADDR to move it to an internal address")
	}

	// Run until a signal or the first failure, then shut down in order. The
	// relay, the refresh loop and the collector run on their own context,
	// which ends only after the sockets are closed: tabs keep getting
	// counts and events until their sessions are removed.
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	g, gctx := errgroup.WithContext(workCtx)
	g.Go(func() error { return bus.Run(gctx, h.Deliver) })
	g.Go(func() error { return h.Run(gctx) })
	for _, r := range st.runners {
		g.Go(func() error { return r(gctx) })
	}
	for i, srv := range servers {
		g.Go(func() error {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-gctx.Done(): // a failure
		}
		log.Info("shutting down")
		drain(log, srv, servers[1:], api, h)
		stopWork()
		return nil
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// Shutdown budgets. Orchestrators wait 10s by default before SIGKILL: the
// whole drain fits in shutdownTimeout, and plain HTTP requests being handled
// get httpDrainTimeout of it (a REST or publish call needs at most the 2s
// store deadline).
const (
	shutdownTimeout  = 9 * time.Second
	httpDrainTimeout = 3 * time.Second
)

// drain stops the app server within shutdownTimeout: it stops accepting,
// removes every session in batches (one count per post to other servers)
// and closes the sockets, each after the frames queued for it. Plain HTTP
// drains meanwhile, without waiting for idle or half-sent requests; the
// admin listener stops last, so /metrics and /readyz answer throughout.
func drain(log *zap.Logger, public *http.Server, admin []*http.Server, api *httpapi.Server, h *hub.Hub) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		hctx, hcancel := context.WithTimeout(ctx, httpDrainTimeout)
		defer hcancel()
		if err := api.DrainHTTP(hctx, public); err != nil {
			log.Warn("HTTP requests cut short at shutdown", zap.Error(err))
		}
	}()
	if err := h.Shutdown(ctx); err != nil {
		log.Warn("session removal at shutdown", zap.Error(err))
	}
	if err := api.Shutdown(ctx); err != nil {
		log.Warn("WebSocket close at shutdown", zap.Error(err))
	}
	<-httpDone
	for _, srv := range admin {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
			log.Warn("admin HTTP shutdown", zap.Error(err))
		}
	}
}

// posts ends the first log line with what the server accepts as a post, so
// that a public server that takes any id is noticed.
func posts(cfg config.Config) string {
	if len(cfg.PostSecrets) == 0 {
		return "; PRESENCE_POST_SECRET is not set, so any post id is accepted: set it before serving a public site"
	}
	return "; only posts with a token signed by PRESENCE_POST_SECRET are accepted"
}

// storeParts is what run needs of a store: the store, the feed of changes
// that other servers (or the store itself) make, and what else must run.
type storeParts struct {
	name    string // of the /readyz check
	store   presence.Store
	pub     presence.Publisher
	bus     presence.Feed
	runners []func(context.Context) error
	close   func()
}

// openStore picks the store: memory without a Redis URL, Redis with one. The
// first log line says which, so nobody runs embedded mode by accident.
func openStore(ctx context.Context, cfg config.Config, reg *prometheus.Registry, log *zap.Logger) (storeParts, error) {
	viewsTTL := cfg.ViewsTTL
	if viewsTTL == 0 {
		viewsTTL = -1 // stores: zero means their default, negative means forever
	}
	if cfg.Embedded() {
		log.Info("starting presence in embedded mode: counts live in this process only and are not shared "+
			"with other processes; set PRESENCE_REDIS_URL (e.g. redis://127.0.0.1:6379/0) and run cmd/gc to use Redis"+posts(cfg),
			zap.String("mode", "embedded"), zap.Any("config", cfg.Fields()))
		ms := memstore.New(memstore.Config{TTL: cfg.SessionTTL, ViewsTTL: viewsTTL})
		// The same collector cmd/gc runs against Redis, in-process; with no
		// expiry events it sleeps until the next deadline.
		col := gc.New(ms, gc.Config{Poll: cfg.GCPoll, Registerer: reg}, log)
		return storeParts{name: "memory", store: ms, pub: ms, bus: ms, runners: []func(context.Context) error{col.Run}, close: func() {}}, nil
	}

	log.Info("starting presence with Redis"+posts(cfg), zap.String("mode", "redis"), zap.Any("config", cfg.Fields()))
	rdb, err := redisstore.Dial(cfg.RedisURL, log)
	if err != nil {
		return storeParts{}, fmt.Errorf("PRESENCE_REDIS_URL: %w", err)
	}
	store := redisstore.New(rdb, redisstore.Config{Prefix: cfg.KeyPrefix, TTL: cfg.SessionTTL, ViewsTTL: viewsTTL, Registerer: reg}, log)
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := store.LoadScripts(lctx); err != nil {
		// Serve anyway: /readyz says 503 until Redis answers, and the
		// scripts load themselves on first use.
		log.Error("Redis is unreachable; serving anyway, /readyz answers 503 until it is back",
			zap.String("redis", rdb.Options().Addr), zap.Error(err))
	}
	return storeParts{name: "redis", store: store, pub: store, bus: redisstore.NewBus(store, redisstore.BusConfig{Registerer: reg}), close: func() { rdb.Close() }}, nil
}

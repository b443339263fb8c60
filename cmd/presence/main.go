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

	"github.com/presence/presence/internal/appserver"
	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/health"
	"github.com/presence/presence/internal/httpapi"
	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// "healthcheck" is for images with no shell and no curl: Docker and
	// compose run it inside the container.
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		code := healthcheck(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if errors.Is(err, config.ErrVersion) {
			fmt.Println("presence", version.Get())
			return
		}
		fmt.Fprintln(os.Stderr, "presence:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, environ []string, stderr io.Writer) error {
	// Configuration and logging.
	cfg, err := config.Load("presence", args, config.Getenv(environ), stderr)
	if err != nil {
		return err
	}
	log := logging.New(stderr, cfg.LogLevel, cfg.LogFormat)
	defer log.Sync()
	// Bind first, so that a taken port fails here and now, and the first
	// line can give the URL to open (the port may have been :0).
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("PRESENCE_ADDR: %w", err)
	}
	defer ln.Close() // once served, Shutdown has closed it already
	url, _ := config.LocalURL(ln.Addr().String(), "localhost")
	logging.FirstLine(log, fmt.Sprintf("presence %s in %s mode: open %s", version.Get().Version, cfg.RedisMode(), url),
		cfg.RedisMode(), ln.Addr().String(), url)
	for _, w := range config.UnknownVariables(environ) {
		log.Warn(w)
	}
	// The app server: store, feed, hub, health, HTTP API, and metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	version.Register(reg)
	a, err := appserver.New(ctx, appserver.Options{Config: cfg, API: appserver.APIConfig(cfg), Registry: reg, Log: log})
	if err != nil {
		return err
	}
	defer a.Close()
	if slices.Contains(cfg.AllowedOrigins, "*") {
		log.Warn("PRESENCE_ALLOWED_ORIGINS has *: pages of any site may connect and read counts")
	}
	api, hh := a.API, a.Health

	srv := api.HTTPServer()
	servers := []*http.Server{srv}
	listeners := []net.Listener{ln}
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
		log.Info("admin listener: /metrics, /readyz with details, /healthz, /debug/pprof/", zap.String("admin_addr", aln.Addr().String()))
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
	g.Go(func() error { return a.Run(gctx) })
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
		drain(log, srv, servers[1:], api, a.Hub)
		stopWork()
		return nil
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// healthcheck asks this machine's app server whether it is ready: on
// PRESENCE_ADMIN_ADDR when that is set, otherwise on PRESENCE_ADDR.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	const name = "presence healthcheck"
	return health.Command(ctx, name, args, func() (string, error) {
		cfg, err := config.Load(name, nil, getenv, stderr)
		if err != nil {
			return "", err
		}
		addr := cfg.Addr
		if cfg.AdminAddr != "" {
			addr = cfg.AdminAddr
		}
		return config.LocalURL(addr, "127.0.0.1")
	}, stdout, stderr)
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
// hands every session off (kept for PRESENCE_HANDOFF_GRACE for its tab to
// resume elsewhere; with a grace of 0, removed in batches, one count per
// post to other servers) and closes the sockets with 1012, each after the
// frames queued for it. Plain HTTP
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

// Package httpapi is the app server's HTTP face: the WebSocket protocol v1 at
// /v1/ws, the REST counts, health and metrics, and the JSON error format.
package httpapi

import (
	"context"
	"crypto/sha256"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/health"
	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/origin"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/widget"
)

// Config configures a Server. The zero value is usable.
type Config struct {
	// AllowedOrigins are the origin patterns allowed to open WebSockets and
	// read the REST API from a browser: a host ("example.com",
	// "*.example.com") or scheme and host ("https://example.com"), matched
	// with path.Match. Default: the server's own host only. "*" allows any.
	AllowedOrigins []string
	// ReadLimit is the largest frame a client may send, in bytes; a larger
	// one closes the connection with 1009. Default: MaxFrame, which holds
	// the protocol's largest legal frame.
	ReadLimit int64
	// PingInterval is the time between pings to each client. Default: 25s,
	// under the 60s after which common proxies drop a silent connection.
	PingInterval time.Duration
	// PingTimeout is how long a client has to answer a ping before its
	// connection is closed and its session leaves. Default: 10s.
	PingTimeout time.Duration
	// WriteTimeout bounds every frame write; a client that takes longer is
	// closed. Default: 10s.
	WriteTimeout time.Duration
	// FrameRate is how many frames a second a client may send on average,
	// and FrameBurst how many at once; a client over the limit is closed
	// with 1008. Defaults: 10 and 40. A widget sends two or three.
	FrameRate  float64
	FrameBurst int
	// StoreTimeout bounds the store calls of one client frame. Default: 2s.
	StoreTimeout time.Duration
	// PublishKeys are the bearer keys POST /v1/posts/{post}/events accepts;
	// several allow rotation. Default: none, and publishing is off.
	PublishKeys []string
	// Resumer issues the resume token of each hello and checks the one a
	// reconnecting tab presents (GET /v1/ws?resume=...); nil issues none.
	Resumer *presence.Resumer
	// Signer checks the post tokens of view, watch and the REST counts.
	// Default: nil, which accepts any well-formed post id.
	Signer *presence.Signer
	// MaxConns is the most WebSockets this server holds at once; a handshake
	// over it gets 503. Default: 0, no limit.
	MaxConns int
	// MaxConnsPerIP is the most WebSockets one client address holds (IPv6
	// addresses by their /64); a handshake over it gets 429. Default: 0, no
	// limit.
	MaxConnsPerIP int
	// TrustedProxies are the peers whose X-Forwarded-For header names the
	// client. Default: none; the client is the socket's peer.
	TrustedProxies []netip.Prefix
	// HandshakeTimeout bounds the reading of a request's headers, so a
	// handshake that does not complete soon is dropped with its file
	// descriptor. Default: 5s.
	HandshakeTimeout time.Duration
	// HideMetrics leaves /metrics out, for a server whose metrics an admin
	// listener serves.
	HideMetrics bool
	// Registerer receives the server's metrics. Default: none.
	Registerer prometheus.Registerer
}

// Server serves the app server's HTTP API.
type Server struct {
	hub    *hub.Hub
	store  presence.Store
	pub    presence.Publisher
	keys   [][sha256.Size]byte // hashes of the publish keys
	health *health.Handler
	cfg    Config
	log    *zap.Logger
	router chi.Router

	// base is the parent of a connection's store calls and pings: not the
	// request's, which net/http cancels once the handler returns.
	base       context.Context
	cancelBase context.CancelFunc

	// mu guards closing and conns; wg counts the WebSockets for Shutdown,
	// and every wg.Add happens under mu (see track).
	mu      sync.Mutex
	closing bool
	conns   map[*wsConn]struct{}
	drain   chan struct{} // closed by Shutdown: every writer sends its queue, then closes
	wg      sync.WaitGroup

	// fresh holds the plain HTTP connections whose first request has not
	// fully arrived: DrainHTTP closes them rather than wait.
	freshMu sync.Mutex
	fresh   map[net.Conn]struct{}

	// Lines that can fire per connection or per frame: one per 10s each.
	storeWarn logging.Throttle
	leaveWarn logging.Throttle
	slowInfo  logging.Throttle
	originLog originLog
	// origins are the parsed AllowedOrigins.
	origins []origin.Pattern
	limits  *limiter

	// README's metrics table documents each of these by name.
	sent      prometheus.Counter
	rejected  *prometheus.CounterVec
	refused   *prometheus.CounterVec
	published prometheus.Counter
}

// New returns a Server. pub carries published events; both stores are one.
func New(h *hub.Hub, store presence.Store, pub presence.Publisher, hh *health.Handler, cfg Config, log *zap.Logger) *Server {
	if cfg.ReadLimit <= 0 {
		cfg.ReadLimit = MaxFrame
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 25 * time.Second
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.FrameRate <= 0 {
		cfg.FrameRate = 10
	}
	if cfg.FrameBurst <= 0 {
		cfg.FrameBurst = 40
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = 2 * time.Second
	}
	base, cancel := context.WithCancel(context.Background())
	s := &Server{
		hub:        h,
		store:      store,
		pub:        pub,
		health:     hh,
		cfg:        cfg,
		log:        log.Named("http"),
		base:       base,
		cancelBase: cancel,
		drain:      make(chan struct{}),
		conns:      make(map[*wsConn]struct{}),
		fresh:      make(map[net.Conn]struct{}),
		storeWarn:  logging.Throttle{Every: 10 * time.Second},
		leaveWarn:  logging.Throttle{Every: 10 * time.Second},
		slowInfo:   logging.Throttle{Every: 10 * time.Second},
		limits:     newLimiter(cfg.MaxConns, cfg.MaxConnsPerIP, cfg.TrustedProxies, log.Named("http")),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_frames_sent_total", Help: "WebSocket frames written to clients.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_client_errors_total", Help: "Error frames sent and REST requests refused for bad input, by error code.",
		}, []string{"code"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_connections_refused_total", Help: "WebSocket handshakes refused, by cause.",
		}, []string{"cause"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_events_published_total", Help: "Events accepted by the publish API.",
		}),
	}
	// Validate has checked the patterns; one it refuses matches nothing.
	var err error
	if s.origins, err = origin.ParseAll(cfg.AllowedOrigins); err != nil {
		log.Error("PRESENCE_ALLOWED_ORIGINS: patterns left out", zap.Error(err))
	}
	// Every cause shows from the start, so a dashboard can tell "none yet"
	// from "not measured".
	for _, cause := range refusalCauses {
		s.refused.WithLabelValues(cause)
	}
	for _, code := range append(slices.Clip(presence.ErrorCodes), codeTooManyFrames) {
		s.rejected.WithLabelValues(code)
	}
	// Only the keys' hashes are kept: keyAccepted compares fixed-size
	// hashes, so a key's length cannot show in the time a comparison takes.
	for _, k := range cfg.PublishKeys {
		s.keys = append(s.keys, sha256.Sum256([]byte(k)))
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.sent, s.rejected, s.refused, s.published)
	}
	s.logPublishConfig()
	s.router = s.routes()
	return s
}

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	// HEAD works wherever GET does: monitors and caches use it.
	r.Use(middleware.GetHead)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, presence.Errorf(presence.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		// chi leaves Allow to a handler of one's own.
		var allowed []string
		if r.Match(chi.NewRouteContext(), http.MethodGet, req.URL.Path) {
			allowed = append(allowed, http.MethodGet, http.MethodHead) // GetHead
		}
		if r.Match(chi.NewRouteContext(), http.MethodPost, req.URL.Path) {
			allowed = append(allowed, http.MethodPost)
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeErrorStatus(w, http.StatusMethodNotAllowed, "method_not_allowed", req.Method+" is not allowed on "+req.URL.Path)
	})
	r.Get("/healthz", s.health.Healthz)
	// Anyone can reach this listener: /readyz says ready or not, and the
	// failures (addresses, error text) are for the admin listener and logs.
	r.Get("/readyz", s.health.Ready)
	if !s.cfg.HideMetrics {
		r.Get("/metrics", s.health.Metrics)
	}
	// Through GetHead a HEAD reaches serveWS too: the library answers it
	// 426 without upgrade headers, as a GET, and 405 with them.
	r.Get("/v1/ws", s.serveWS)
	r.Get("/widget.js", widget.Script)
	r.Get("/", widget.Demo)
	// CORS only for the REST counts, which pages of the site read.
	r.Group(func(r chi.Router) {
		r.Use(s.cors)
		r.Get("/v1/posts/{post}", s.getPost)
		r.Get("/v1/viewers", s.getViewers)
	})
	// Publishing is for servers (PHP), not pages: no CORS.
	r.Post("/v1/posts/{post}/events", s.publish)
	return r
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// HTTPServer returns an http.Server for s with the timeouts a public
// listener needs. Hijacked WebSockets drop these deadlines; they bound plain
// HTTP, so no client can hold a file descriptor with an idle, half-sent or
// trickling request. net/http's own error lines go through zap, so stderr
// stays one JSON object per line. Stop it with DrainHTTP.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          zap.NewStdLog(s.log),
		ConnState:         s.connState,
	}
}

// maxHeaderBytes bounds a request's headers, below net/http's 1 MB: a
// browser's handshake is a few hundred bytes plus the cookies of the
// server's own host, and a header that is answered (the Origin of a
// refusal, a path in an error) is answered short.
const maxHeaderBytes = 64 << 10

// connState keeps the set of fresh connections for DrainHTTP. Every later
// state means the first request arrived; a hijacked WebSocket in particular
// leaves the set here, so DrainHTTP never closes one under its writer.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.freshMu.Lock()
	defer s.freshMu.Unlock()
	if st == http.StateNew {
		s.fresh[c] = struct{}{}
	} else {
		delete(s.fresh, c)
	}
}

// DrainHTTP stops srv, a server from HTTPServer: it stops accepting, closes
// idle connections and those whose first request has not fully arrived,
// lets requests being handled finish until ctx ends, and then closes every
// connection left. http.Server.Shutdown alone waits up to 5s for a request
// that a client started and never finished.
func (s *Server) DrainHTTP(ctx context.Context, srv *http.Server) error {
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	// Again until Shutdown returns: a connection accepted just before the
	// listener closed may still turn up.
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		s.freshMu.Lock()
		for c := range s.fresh {
			c.Close()
			delete(s.fresh, c)
		}
		s.freshMu.Unlock()
		select {
		case err := <-done:
			// ctx ended with requests still running: cut them, so the
			// drain stays within the caller's budget.
			if err != nil {
				srv.Close()
			}
			return err
		case <-t.C:
		}
	}
}

// Shutdown makes every WebSocket's writer send the frames queued for it,
// then close with 1012 "service restart" (the widget reconnects at once,
// to another server, and resumes its session), and waits for their handlers to
// finish. When ctx ends first it cancels every connection's context, which
// ends the handlers at once, and waits for that. http.Server.Shutdown does
// not do this: WebSockets are hijacked connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.drain)
	}
	s.mu.Unlock()
	// Idle connections have no writer to see drain: wake one for each. A
	// connection that joins after this sees drain in its first flush.
	s.hub.WakeAll()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancelBase()
		return nil
	case <-ctx.Done():
		// Closing every socket ends the connections at once; waiting
		// still, so none outlives Shutdown.
		s.cancelBase()
		s.mu.Lock()
		for wc := range s.conns {
			wc.conn.CloseNow()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// track counts a WebSocket for Shutdown to wait for, unless the server is
// shutting down. The check and wg.Add share mu with Shutdown's closing, so
// a connection is either counted before Shutdown waits or refused: wg.Add
// may not race wg.Wait.
func (s *Server) track(wc *wsConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[wc] = struct{}{}
	s.wg.Add(1)
	return true
}

// untrack ends what track began; call it once per true track.
func (s *Server) untrack(wc *wsConn) {
	s.mu.Lock()
	delete(s.conns, wc)
	s.mu.Unlock()
	s.wg.Done()
}

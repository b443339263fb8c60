package httpapi

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/presence"
)

// MaxFrame is the read limit of a client frame: it holds the protocol's
// largest legal frame, a watch of 100 posts of 64 characters each with its
// token (14,737 bytes written compactly), with room for white space and a
// client's own fields.
const MaxFrame = 16 << 10

// Causes of refused handshakes, the label values of
// presence_connections_refused_total.
const (
	causeServerFull   = "server_full"   // PRESENCE_MAX_CONNS reached
	causePerIP        = "per_ip"        // PRESENCE_MAX_CONNS_PER_IP reached
	causeOrigin       = "origin"        // a page of an origin not allowed
	causeBadHandshake = "bad_handshake" // not a valid WebSocket upgrade
	causeShutdown     = "shutting_down" // the server is stopping
)

var refusalCauses = []string{causeServerFull, causePerIP, causeOrigin, causeBadHandshake, causeShutdown}

// Retry-After of the two limits, in seconds: a full server frees slots as
// tabs close; an address at its limit has opened many tabs already.
const (
	retryServerFull = 5
	retryPerIP      = 30
)

// limiter counts WebSockets in all and per client address, and refuses a
// handshake over either limit before any WebSocket state exists.
type limiter struct {
	max, perIP int
	trusted    []netip.Prefix
	log        *zap.Logger
	xffWarn    logging.Throttle

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

func newLimiter(max, perIP int, trusted []netip.Prefix, log *zap.Logger) *limiter {
	return &limiter{
		max: max, perIP: perIP, trusted: trusted, log: log,
		xffWarn: logging.Throttle{Every: 10 * time.Minute},
		byIP:    make(map[netip.Addr]int),
	}
}

// acquire takes a slot for a connection from ip, or says which limit is
// reached. release gives the slot back; call it exactly once.
func (l *limiter) acquire(ip netip.Addr) (release func(), cause string) {
	key := ipKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return nil, causeServerFull
	}
	if l.perIP > 0 && l.byIP[key] >= l.perIP {
		return nil, causePerIP
	}
	l.total++
	l.byIP[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.byIP[key]--; l.byIP[key] <= 0 {
				delete(l.byIP, key)
			}
		})
	}, ""
}

// ipKey groups IPv6 addresses by their /64: one subscriber usually holds a
// whole /64, and counting its addresses apart would make the limit moot.
func ipKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// clientIP is the address a request comes from: the socket's peer, or, when
// that peer is a trusted proxy, the rightmost address of X-Forwarded-For
// that is not itself a trusted proxy. Proxies append to the header, so the
// entries left of the first untrusted one are the client's to forge.
func (l *limiter) clientIP(r *http.Request) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{} // all such requests share one slot count
	}
	ip := peer.Addr().Unmap()
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return ip
	}
	if !l.isTrusted(ip) {
		if ok, skipped := l.xffWarn.Allow(time.Now()); ok {
			l.log.Warn("X-Forwarded-For ignored: the peer is not in PRESENCE_TRUSTED_PROXIES; if it is your proxy, "+
				"every client behind it counts as its one address for PRESENCE_MAX_CONNS_PER_IP",
				zap.String("peer", ip.String()), zap.Int("similar_since_last", skipped))
		}
		return ip
	}
	hops := strings.Split(strings.Join(xff, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return ip // a garbled entry: the last address we can vouch for
		}
		ip = hop.Unmap()
		if !l.isTrusted(ip) {
			return ip
		}
	}
	return ip
}

func (l *limiter) isTrusted(ip netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// refuse answers a handshake over a limit, before any WebSocket state is
// made, with a JSON error and Retry-After.
func (s *Server) refuse(w http.ResponseWriter, cause string) {
	s.refused.WithLabelValues(cause).Inc()
	switch cause {
	case causeServerFull:
		w.Header().Set("Retry-After", strconv.Itoa(retryServerFull))
		writeErrorStatus(w, http.StatusServiceUnavailable, "server_full",
			fmt.Sprintf("this server holds its limit of %d connections (PRESENCE_MAX_CONNS); try again shortly", s.cfg.MaxConns))
	case causePerIP:
		w.Header().Set("Retry-After", strconv.Itoa(retryPerIP))
		writeErrorStatus(w, http.StatusTooManyRequests, "too_many_connections",
			fmt.Sprintf("this address holds its limit of %d connections (PRESENCE_MAX_CONNS_PER_IP); close some tabs first", s.cfg.MaxConnsPerIP))
	case causeShutdown:
		w.Header().Set("Retry-After", strconv.Itoa(retryServerFull))
		writeError(w, hubClosed)
	}
}

var hubClosed = presence.Errorf(presence.CodeUnavailable, "the server is shutting down; connect again, to another server if there is one")

// handshakeWriter keeps the plain-text error that the WebSocket library
// writes when it refuses a handshake, so that the refusal can go out as the
// API's JSON error instead. A successful handshake passes straight through:
// Unwrap lets the library reach the Hijacker.
type handshakeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *handshakeWriter) WriteHeader(status int) {
	if status == http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.status = status
}

func (w *handshakeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		return w.ResponseWriter.Write(b)
	}
	return w.body.Write(b)
}

func (w *handshakeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// handshakeCodes names the library's refusals in the API's error codes.
var handshakeCodes = map[int]string{
	http.StatusBadRequest:       presence.CodeBadRequest,
	http.StatusForbidden:        presence.CodeForbidden,
	http.StatusMethodNotAllowed: "method_not_allowed",
	http.StatusUpgradeRequired:  "upgrade_required",
}

// flush writes the kept refusal as JSON and returns the cause to count.
func (w *handshakeWriter) flush() string {
	if w.status == 0 {
		return causeBadHandshake // nothing kept; the library wrote it already
	}
	code, ok := handshakeCodes[w.status]
	if !ok {
		code = presence.CodeInternal
	}
	msg := strings.TrimSpace(w.body.String())
	cause := causeBadHandshake
	if w.status == http.StatusForbidden {
		cause = causeOrigin
		msg += "; allow the page's origin with PRESENCE_ALLOWED_ORIGINS"
	}
	// http.Error set these for its text body.
	w.Header().Del("X-Content-Type-Options")
	writeErrorStatus(w.ResponseWriter, w.status, code, msg)
	return cause
}

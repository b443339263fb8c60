package httpapi

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/origin"
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
	causePerIPRate    = "per_ip_rate"   // PRESENCE_MAX_CONNS_PER_IP handshakes in the last minute
	causeOrigin       = "origin"        // a page of an origin not allowed
	causeBadHandshake = "bad_handshake" // not a valid WebSocket upgrade
	causeShutdown     = "shutting_down" // the server is stopping
)

// refusalCauses are created as labels by New, so every cause shows from
// the start; a cause left out here appears only after its first refusal.
var refusalCauses = []string{causeServerFull, causePerIP, causePerIPRate, causeOrigin, causeBadHandshake, causeShutdown}

// Retry-After of the two limits, in seconds: a full server frees slots as
// tabs close; an address at its limit has opened many tabs already.
const (
	retryServerFull = 5
	retryPerIP      = 30
)

// limiter counts WebSockets in all and per client address, and refuses a
// handshake over either limit before any WebSocket state exists.
//
// An address may also open only perIP connections a minute (in bursts of as
// many): every new connection comes with a fresh frame allowance, so without
// this an address could close and reopen one connection thousands of times
// a second and name a new post with each.
type limiter struct {
	max, perIP int
	trusted    []netip.Prefix
	log        *zap.Logger
	xffWarn    logging.Throttle

	// mu guards the counts; it is held only for map and counter updates,
	// never across I/O.
	mu        sync.Mutex
	total     int
	byIP      map[netip.Addr]*addrState // by ipKey
	lastSweep time.Time
}

// addrState is one client address: its open connections, and the bucket of
// connections it may open (perIP of them, refilled at perIP a minute).
type addrState struct {
	conns int
	opens bucket
}

func newLimiter(max, perIP int, trusted []netip.Prefix, log *zap.Logger) *limiter {
	return &limiter{
		max: max, perIP: perIP, trusted: trusted, log: log,
		// api/protocol.md promises this warning at most every 10 minutes.
		xffWarn: logging.Throttle{Every: 10 * time.Minute},
		byIP:    make(map[netip.Addr]*addrState),
	}
}

// acquire takes a slot for a connection from ip, or says which limit is
// reached and how long to wait. release gives the slot back; call it
// exactly once.
func (l *limiter) acquire(ip netip.Addr, now time.Time) (release func(), cause string, retry time.Duration) {
	key := ipKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	if l.max > 0 && l.total >= l.max {
		return nil, causeServerFull, retryServerFull * time.Second
	}
	// A new address starts with a whole allowance: perIP opens at once.
	// It is stored only once accepted, so refusing a new address leaves
	// nothing behind.
	st := l.byIP[key]
	if st == nil {
		st = &addrState{opens: bucket{tokens: float64(l.perIP), last: now}}
	}
	if l.perIP > 0 {
		if st.conns >= l.perIP {
			return nil, causePerIP, retryPerIP * time.Second
		}
		if !st.opens.take(now, l.opensRate(), l.perIP) {
			return nil, causePerIPRate, st.opens.wait(l.opensRate())
		}
	}
	l.byIP[key] = st
	l.total++
	st.conns++
	// once: a second release would free a slot that another connection
	// holds, and the counts would drift below the truth.
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			st.conns--
			// With a per-address limit the entry outlives its last
			// connection: its bucket must remember the opens, or closing
			// and reopening one connection would escape the rate. sweep
			// drops it once the bucket is whole again.
			if l.perIP <= 0 && st.conns == 0 {
				delete(l.byIP, key)
			}
		})
	}, "", 0
}

// opensRate is how many connections a second an address may open: perIP a
// minute.
func (l *limiter) opensRate() float64 { return float64(l.perIP) / 60 }

// sweep drops, once a minute, the addresses with no connection whose
// allowance is whole again, so the map follows the addresses seen lately.
// Callers hold mu.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for key, st := range l.byIP {
		if st.conns > 0 {
			continue
		}
		if st.opens.refill(now, l.opensRate(), l.perIP); st.opens.tokens >= float64(l.perIP) {
			delete(l.byIP, key)
		}
	}
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
	// An untrusted peer's header is ignored, since anyone can send one; the
	// warning is for the operator whose proxy is not listed yet.
	if !l.isTrusted(ip) {
		if ok, skipped := l.xffWarn.Allow(time.Now()); ok {
			l.log.Warn("X-Forwarded-For ignored: the peer is not in PRESENCE_TRUSTED_PROXIES; if it is your proxy, "+
				"every client behind it counts as its one address for PRESENCE_MAX_CONNS_PER_IP",
				zap.String("peer", ip.String()), zap.Int("similar_since_last", skipped))
		}
		return ip
	}
	// Right to left, over every header line, without copying the header.
	for i := len(xff) - 1; i >= 0; i-- {
		rest := xff[i]
		for rest != "" {
			hop := rest
			if c := strings.LastIndexByte(rest, ','); c >= 0 {
				hop, rest = rest[c+1:], rest[:c]
			} else {
				rest = ""
			}
			hop = strings.TrimSpace(hop)
			if hop == "" {
				continue
			}
			a, ok := parseHop(hop)
			if !ok {
				return ip // a garbled entry: the last address we can vouch for
			}
			ip = a
			if !l.isTrusted(ip) {
				return ip
			}
		}
	}
	return ip
}

// parseHop reads one X-Forwarded-For entry: an address, or an address and
// port as some load balancers write it (1.2.3.4:5678, [2001:db8::1]:443).
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
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
func (s *Server) refuse(w http.ResponseWriter, cause string, retry time.Duration) {
	s.refused.WithLabelValues(cause).Inc()
	// Retry-After takes whole seconds: rounded up, so the wait is never
	// shorter than the limiter's, and at least 1, never "retry at once".
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int((retry+time.Second-1)/time.Second))))
	// Readable by the page, as every refusal of a handshake.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	switch cause {
	case causeServerFull:
		writeErrorStatus(w, http.StatusServiceUnavailable, "server_full",
			fmt.Sprintf("this server holds its limit of %d connections (PRESENCE_MAX_CONNS); try again shortly", s.cfg.MaxConns))
	case causePerIP:
		writeErrorStatus(w, http.StatusTooManyRequests, "too_many_connections",
			fmt.Sprintf("this address holds its limit of %d connections (PRESENCE_MAX_CONNS_PER_IP); close some tabs first", s.cfg.MaxConnsPerIP))
	case causePerIPRate:
		writeErrorStatus(w, http.StatusTooManyRequests, "too_many_connections",
			fmt.Sprintf("this address opened %d connections within a minute (PRESENCE_MAX_CONNS_PER_IP); wait before opening more", s.cfg.MaxConnsPerIP))
	case causeShutdown:
		writeError(w, hubClosed)
	}
}

// refuseOrigin answers a handshake from a page of a site that
// PRESENCE_ALLOWED_ORIGINS does not list: 403 with what to add, in JSON
// that the page's script may read (the widget tells the console why its
// socket was refused), and a warning for the operator, rate-limited as any
// page on the web can cause one.
func (s *Server) refuseOrigin(w http.ResponseWriter, o string) {
	s.refused.WithLabelValues(causeOrigin).Inc()
	msg := origin.Refusal(o)
	shown := origin.Plain(o)
	if s.originLog.allow(shown, time.Now()) {
		if shown == "" {
			shown = fmt.Sprintf("(%d bytes, not shown)", len(o))
		}
		s.log.Warn("refused a WebSocket handshake: "+msg, zap.String("origin", shown), zap.Strings("allowed_origins", s.cfg.AllowedOrigins))
	}
	// Only this error: a refusal holds nothing of the server's, and the
	// page learns nothing it did not send.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeErrorStatus(w, http.StatusForbidden, presence.CodeForbidden, msg)
}

// originLog rate-limits the warnings of refused origins: one line per
// origin per window, so the operator's own misconfigured site shows even
// while other sites' pages are refused, and at most originLogBurst lines a
// window in all, so that made-up origins cannot flood the log. Its keys
// are origins as origin.Plain gives them (at most 255 bytes; "" for every
// Origin that is no plain origin), so what it remembers is bounded too.
type originLog struct {
	mu     sync.Mutex
	last   map[string]time.Time
	window time.Time
	lines  int
}

const (
	originLogEvery = 10 * time.Second
	originLogBurst = 10
	originLogKept  = 1024 // origins remembered; beyond, the memory starts over
)

func (l *originLog) allow(o string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= originLogEvery {
		l.window, l.lines = now, 0
	}
	if l.lines >= originLogBurst {
		return false
	}
	if t, ok := l.last[o]; ok && now.Sub(t) < originLogEvery {
		return false
	}
	if l.last == nil || len(l.last) >= originLogKept {
		l.last = make(map[string]time.Time)
	}
	l.last[o] = now
	l.lines++
	return true
}

// hubClosed answers a handshake that arrives while the server stops: 503
// unavailable, with the same advice as the 1012 close of connected tabs.
var hubClosed = presence.Errorf(presence.CodeUnavailable, "the server is shutting down; connect again, to another server if there is one")

// handshakeWriter keeps the plain-text error that the WebSocket library
// writes when it refuses a handshake, so that the refusal can go out as the
// API's JSON error instead. A successful handshake passes through, to
// Hijack.
type handshakeWriter struct {
	http.ResponseWriter
	status   int
	body     bytes.Buffer
	hijacked net.Conn // the socket, once the upgrade succeeded
}

// WriteHeader passes 101 on, since the upgrade must reach the client as the
// library wrote it, and keeps every other status for flush.
func (w *handshakeWriter) WriteHeader(status int) {
	if status == http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.status = status
}

// Write keeps the body of a kept refusal: the library's plain-text reason,
// which flush turns into the JSON message.
func (w *handshakeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		return w.ResponseWriter.Write(b)
	}
	return w.body.Write(b)
}

func (w *handshakeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The socket's buffers once upgraded. A view frame is under 200 bytes and
// a count frame under 100; a larger frame bypasses a bufio buffer that is
// empty, so these cost a long frame a second read or write, not a copy per
// byte, and every idle connection 7.5 KiB less than net/http's pair.
const (
	wsReadBuffer  = 256
	wsWriteBuffer = 256
)

// Hijack hands the WebSocket library buffers of its own, smaller than the
// 4 KiB pair net/http would pass on: the library keeps them for the life
// of the connection, and most connections are idle. Bytes the client sent
// after its handshake, already in net/http's buffer, are read first.
func (w *handshakeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	w.hijacked = conn
	n := brw.Reader.Buffered()
	if n == 0 {
		return conn, bufio.NewReadWriter(bufio.NewReaderSize(conn, wsReadBuffer), bufio.NewWriterSize(conn, wsWriteBuffer)), nil
	}
	// The early bytes must sit in the new reader's buffer, not in a reader
	// behind it: the library keeps what is buffered and resets the reader
	// onto the socket.
	early, _ := brw.Reader.Peek(n)
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(wsReadBuffer, n))
	if _, err := r.Peek(n); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(conn, wsWriteBuffer)), nil
}

// handshakeCodes names the library's refusals in the API's error codes;
// api/protocol.md lists them with their statuses (the origin's 403 is
// refuseOrigin's).
var handshakeCodes = map[int]string{
	http.StatusBadRequest:       presence.CodeBadRequest,
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
	if w.status == http.StatusMethodNotAllowed {
		// A 405 carries Allow, as the router's do; a HEAD with upgrade
		// headers ends here, and only GET upgrades.
		w.Header().Set("Allow", "GET")
	}
	// Readable by any page: the widget asks /v1/ws with a plain GET when
	// its socket fails, and a 426 tells it the origin was not the cause.
	w.Header().Set("Access-Control-Allow-Origin", "*")
	writeErrorStatus(w.ResponseWriter, w.status, code, strings.TrimSpace(w.body.String()))
	return causeBadHandshake
}

package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/origin"
	"github.com/presence/presence/internal/presence"
)

// CloseSlow is the close code of a client whose send queue filled up:
// 1008, policy violation, with the reason "send queue full". Browsers see it
// in CloseEvent.code; the widget reconnects.
const CloseSlow = websocket.StatusPolicyViolation

// CloseTooManyFrames is the close code of a client that sends frames faster
// than Config.FrameRate allows: 1008, policy violation, reason "too many
// frames". It shares its code with CloseSlow; the reason tells them apart.
const CloseTooManyFrames = websocket.StatusPolicyViolation

// CloseRestart is the close code of every connection when the app server
// shuts down: 1012, service restart. The sessions stay in the store for
// the handoff grace, and the widget reconnects at once, to another app
// server or this one restarted, and resumes them.
const CloseRestart = websocket.StatusServiceRestart

// leaveTimeout bounds the store call that removes a closed connection's
// session; if it fails the session expires after one TTL instead.
const leaveTimeout = 5 * time.Second

// inFrame is any client frame as it arrives; fields a type does not use are
// ignored. Post is a pointer so that a missing post (bad_request) differs
// from an empty one (invalid_post).
type inFrame struct {
	Type    string   `json:"type"`
	Post    *string  `json:"post"`
	Posts   []string `json:"posts"`
	Token   *string  `json:"token"`
	Tokens  []string `json:"tokens"`
	Hidden  *bool    `json:"hidden"`
	Visitor *string  `json:"visitor"`
}

// clientFrame is a client frame whose syntax has been checked: ids are valid
// and every list is within its limit. Tokens are checked against the secret
// separately, because that needs the server's clock.
type clientFrame struct {
	Type    string
	Post    presence.PostID    // view
	Posts   []presence.PostID  // watch, unwatch
	Token   string             // view
	Tokens  []string           // watch, as sent: CheckAll pairs them with Posts
	Hidden  bool               // view: the tab is in the background
	Visitor presence.VisitorID // view: the browser's id, "" if none was sent
}

// serveWS serves GET /v1/ws. It upgrades the connection and hands it to a
// goroutine of its own (wsConn.run), then returns: net/http frees the
// request, the response and their buffers only once the handler returns,
// and an idle socket would otherwise keep them for hours.
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.isClosing() {
		s.refuse(w, causeShutdown, retryServerFull*time.Second)
		return
	}
	// The origin, then the limits, before the library or the hub makes
	// any state. A request without Origin comes from no web page (a
	// server-side client), which no origin rule is about.
	if o := r.Header.Get("Origin"); o != "" && !origin.Allowed(s.origins, o, r.Host) {
		s.refuseOrigin(w, o)
		return
	}
	release, cause, retry := s.limits.acquire(s.limits.clientIP(r), time.Now())
	if cause != "" {
		s.refuse(w, cause, retry)
		return
	}
	opts := &websocket.AcceptOptions{
		// The origin is checked above, by the rules of
		// PRESENCE_ALLOWED_ORIGINS that CORS uses too.
		InsecureSkipVerify: true,
		// Count frames are under 100 B and events at most 16 KiB, sent once
		// each: per-connection deflate state would cost more than it saves.
		CompressionMode: websocket.CompressionDisabled,
	}
	hw := &handshakeWriter{ResponseWriter: w}
	conn, err := websocket.Accept(hw, r, opts)
	if err != nil {
		release()
		// The library refused (426 for a plain GET, 400 for a bad
		// upgrade, 405 for another method) in plain text; answer in JSON.
		s.refused.WithLabelValues(hw.flush()).Inc()
		return
	}
	conn.SetReadLimit(s.cfg.ReadLimit)
	// Shutdown began during the upgrade: the socket is open by now, so the
	// refusal is the 1012 close that connected tabs get too.
	wc := &wsConn{s: s, conn: conn, raw: hw.hijacked}
	if !s.track(wc) {
		release()
		conn.Close(CloseRestart, "server shutting down")
		return
	}
	// A token that is not good gets a fresh session, not an error: it may
	// be from before a key change, no fault of the tab's.
	resume, _ := s.cfg.Resumer.Check(r.URL.Query().Get("resume"))
	c, err := s.hub.Join(wc.startWriter, resume)
	if err != nil {
		release()
		s.untrack(wc)
		conn.Close(CloseRestart, "server shutting down")
		return
	}
	wc.c = c
	// A field, not s.log.With: a logger of its own holds an encoder and a
	// pooled buffer for every idle connection (about 1.3 KiB of heap each,
	// measured), for the few lines a connection ever logs.
	wc.session = zap.String("session", string(c.ID))
	// api/protocol.md: nothing comes before hello. The hub made this
	// goroutine, the caller of Join, the client's first writer: hello goes
	// out here, ahead of anything queued since the join (a status frame),
	// without a goroutine of its own.
	if err := wc.write(presence.Hello(c.ID, s.store.TTL(), s.cfg.Resumer.Token(c.ID))); err != nil {
		conn.CloseNow() // the reader sees it at once, and the session leaves
	} else {
		wc.flush()
	}
	go func() {
		defer s.untrack(wc)
		defer release()
		wc.run()
	}()
}

// wsConn is one WebSocket client. A goroutine runs it, reading, until the
// connection ends; frames are written by a goroutine that exists only
// while frames wait (the hub starts it through startWriter), and pings run
// from a timer. Most connections are idle: one goroutine each, not three.
//
// Reads and writes get no context that can end: closing the socket ends
// them (the end of run, or Shutdown out of time), and the write timeout is
// a deadline. The library registers a callback with the context of each
// read and write, and keeps the last write's: a context per connection
// would cost every idle tab that memory, and every frame an allocation.
type wsConn struct {
	s       *Server
	conn    *websocket.Conn
	raw     net.Conn // the socket under conn, for write deadlines
	c       *hub.Client
	session zap.Field
	writers sync.WaitGroup
}

// run serves the connection until it ends, and returns once its writer and
// ping are done and its session has left.
func (wc *wsConn) run() {
	s, conn, c := wc.s, wc.conn, wc.c
	p := s.startPing(conn)

	err := wc.readLoop()
	// A close handshake or the server's own end is a normal end; only
	// other errors are worth a line, at debug.
	if st := websocket.CloseStatus(err); st == -1 && s.base.Err() == nil {
		s.log.Debug("connection ended", wc.session, zap.Error(err))
	}

	if st := websocket.CloseStatus(err); st == websocket.StatusNormalClosure || st == websocket.StatusGoingAway || st == websocket.StatusNoStatusRcvd {
		// The tab closed the connection (browsers say 1001 as a page goes,
		// a close() without a code is 1005): the session leaves. The leave gets a context of its own, as the
		// server's may be cancelled by now (shutdown).
		lctx, lcancel := context.WithTimeout(context.Background(), leaveTimeout)
		if err := c.Leave(lctx); err != nil {
			// Every connection that closes during an outage ends here.
			if ok, skipped := s.leaveWarn.Allow(time.Now()); ok {
				s.log.Warn("cannot remove session; it expires after one TTL", wc.session, zap.Error(err), zap.Int("similar_since_last", skipped))
			}
		}
		lcancel()
	} else {
		// Lost, or closed by this server (a full queue, too many frames,
		// shutdown): the tab reconnects with its resume token, so the
		// session stays until its deadline rather than dip the count and
		// count a second view.
		c.Detach()
	}
	// Leave closed the client, so no writer starts after this; closing
	// the socket ends the writer that may run, and a ping in flight. A
	// close handshake that a writer began is over: the reader saw its end.
	conn.CloseNow()
	p.stop()
	wc.writers.Wait()
}

// startWriter is the hub's wake function: it starts a writer. The hub calls
// it with the client's queue locked and never while a writer runs.
func (wc *wsConn) startWriter() {
	wc.writers.Add(1)
	go func() {
		defer wc.writers.Done()
		wc.flush()
	}()
}

// readLoop is the connection's only reader. It returns when the connection
// ends; a bad frame gets an error frame and the loop goes on, as
// api/protocol.md promises.
func (wc *wsConn) readLoop() error {
	s, conn, c, session := wc.s, wc.conn, wc.c, wc.session
	limit := bucket{tokens: float64(s.cfg.FrameBurst), last: time.Now()}
	for {
		typ, data, err := conn.Read(context.Background()) // see wsConn
		if err != nil {
			return err
		}
		if !limit.take(time.Now(), s.cfg.FrameRate, s.cfg.FrameBurst) {
			s.rejected.WithLabelValues(codeTooManyFrames).Inc()
			conn.Close(CloseTooManyFrames, "too many frames")
			return errTooManyFrames
		}
		if typ != websocket.MessageText {
			s.sendError(c, presence.Errorf(presence.CodeBadRequest, "binary frames are not supported; send JSON text frames"))
			continue
		}
		err = wc.handleApart(data)
		if err != nil {
			// Client mistakes are only counted (sendError); store failures
			// are logged too, one line per 10 s. Once the server stops,
			// failures are its cancellation, not the store's.
			code := presence.ErrorCode(err)
			if (code == presence.CodeInternal || code == presence.CodeUnavailable) && s.base.Err() == nil {
				if ok, skipped := s.storeWarn.Allow(time.Now()); ok {
					s.log.Warn("store call failed", session, zap.Error(err), zap.Int("similar_since_last", skipped))
				}
			}
			s.sendError(c, err)
		}
	}
}

var errTooManyFrames = errors.New("client sent frames faster than allowed")

// codeTooManyFrames counts, in presence_client_errors_total, the clients
// closed for flooding; they get a close code, not an error frame.
const codeTooManyFrames = "too_many_frames"

// handleApart handles a frame on a goroutine of its own and waits for it.
// A store call grows a goroutine's stack to 8-16 KiB (go-redis, the
// scripts), and the reader's stack lasts as long as the connection: an
// idle tab would keep that size for hours. A client sends a frame or two.
func (wc *wsConn) handleApart(data []byte) error {
	s := wc.s
	done := make(chan error, 1)
	go func() {
		// Each frame's store calls get their own deadline: a hung Redis
		// must not stall the read loop, which also reads the pongs.
		// s.base, never the request's: see Server.base.
		fctx, cancel := context.WithTimeout(s.base, s.cfg.StoreTimeout)
		defer cancel()
		done <- s.handle(fctx, wc.c, data)
	}()
	return <-done
}

// bucket is a token bucket: rate tokens a second, at most burst saved up.
type bucket struct {
	tokens float64
	last   time.Time
}

// take spends one token if there is one. The type serves both the frame
// rate and an address's opens; each caller passes its own rate and burst.
func (b *bucket) take(now time.Time, rate float64, burst int) bool {
	b.refill(now, rate, burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refill adds what accrued since last, capped at burst: an idle client
// saves up one burst, not more.
func (b *bucket) refill(now time.Time, rate float64, burst int) {
	b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
}

// wait is how long until a take can succeed, after one failed.
func (b *bucket) wait(rate float64) time.Duration {
	return time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// parseFrame reads a client frame and checks everything about it that does
// not need the store or the clock, so bad input is rejected whole before
// anything changes.
func parseFrame(data []byte) (clientFrame, error) {
	var in inFrame
	if err := json.Unmarshal(data, &in); err != nil {
		return clientFrame{}, presence.Errorf(presence.CodeBadRequest, "%s", describeJSONError(err))
	}
	f := clientFrame{Type: in.Type}
	switch in.Type {
	case "view":
		if in.Post == nil {
			return clientFrame{}, presence.Errorf(presence.CodeBadRequest, `view needs a post: {"type":"view","post":"13"}`)
		}
		post, err := presence.ParsePostID(*in.Post)
		if err != nil {
			return clientFrame{}, err
		}
		f.Post = post
		if in.Token != nil {
			f.Token = *in.Token
		}
		f.Hidden = in.Hidden != nil && *in.Hidden
		if in.Visitor != nil {
			v, err := presence.ParseVisitorID(*in.Visitor)
			if err != nil {
				return clientFrame{}, err
			}
			f.Visitor = v
		}
	case "unview":
	case "watch", "unwatch":
		posts, err := parsePosts(in.Type, in.Posts)
		if err != nil {
			return clientFrame{}, err
		}
		f.Posts = posts
		// Only watch carries tokens: unwatching a post needs no proof.
		if in.Type == "watch" {
			f.Tokens = in.Tokens
		}
	case "":
		return clientFrame{}, presence.Errorf(presence.CodeBadRequest, `frame has no type; expected view, unview, watch or unwatch`)
	default:
		return clientFrame{}, presence.Errorf(presence.CodeBadRequest, "unknown type %q; expected view, unview, watch or unwatch", truncate(in.Type, 32))
	}
	return f, nil
}

// handle applies one client frame. Bad input, a bad token among them, is
// rejected whole before anything changes.
func (s *Server) handle(ctx context.Context, c *hub.Client, data []byte) error {
	f, err := parseFrame(data)
	if err != nil {
		return err
	}
	switch f.Type {
	case "view":
		if err := s.cfg.Signer.Check(f.Post, f.Token, time.Now()); err != nil {
			return err
		}
		if f.Visitor != "" {
			c.SetVisitor(f.Visitor)
		}
		return c.View(ctx, f.Post, f.Hidden)
	case "unview":
		return c.Unview(ctx)
	case "watch":
		if err := s.cfg.Signer.CheckAll(f.Posts, f.Tokens, time.Now()); err != nil {
			return err
		}
		return c.Watch(ctx, f.Posts)
	default: // unwatch: parseFrame knows no other type
		c.Unwatch(f.Posts)
		return nil
	}
}

// fieldTypes names what each known field must hold, for error messages.
var fieldTypes = map[string]string{"type": "a string", "post": "a string", "posts": "a list of strings", "token": "a string", "tokens": "a list of strings"}

// describeJSONError says what is wrong with a frame in the protocol's
// terms; encoding/json's own messages name Go types.
func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr) && fieldTypes[typeErr.Field] != "":
		return fmt.Sprintf("field %q must be %s, not a JSON %s", typeErr.Field, fieldTypes[typeErr.Field], typeErr.Value)
	case errors.As(err, &typeErr):
		return "a frame must be a JSON object, not a JSON " + typeErr.Value
	case errors.As(err, &syntaxErr):
		return "frame is not valid JSON: " + syntaxErr.Error()
	default:
		return "frame is not valid JSON"
	}
}

// parsePosts checks the list of a watch or unwatch: 1 to MaxBatch valid
// ids. One bad id refuses the whole frame. The limit on posts watched in
// all is the hub's, which knows what is watched already.
func parsePosts(typ string, raw []string) ([]presence.PostID, error) {
	if len(raw) == 0 {
		return nil, presence.Errorf(presence.CodeBadRequest, `%s needs a non-empty posts list: {"type":"%s","posts":["1","2"]}`, typ, typ)
	}
	if len(raw) > MaxBatch {
		return nil, presence.Errorf(presence.CodeTooMany, "%s lists %d posts, at most %d allowed", typ, len(raw), MaxBatch)
	}
	posts := make([]presence.PostID, len(raw))
	for i, v := range raw {
		p, err := presence.ParsePostID(v)
		if err != nil {
			return nil, err
		}
		posts[i] = p
	}
	return posts, nil
}

// truncate shortens client input echoed in an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// sendError counts err by code and queues its error frame. Error frames
// fill the client's bounded queue like events: a client that sends bad
// frames and reads nothing is closed as too slow.
func (s *Server) sendError(c *hub.Client, err error) {
	code := presence.ErrorCode(err)
	s.rejected.WithLabelValues(code).Inc()
	c.Send(presence.ErrorFrameOf(err))
}

// flush is a writer's run: it writes what the hub queues until the queue
// is empty, the client is closed, or the server shuts down.
func (wc *wsConn) flush() {
	s, conn, c := wc.s, wc.conn, wc.c
	for {
		select {
		case <-s.drain:
			// Shutting down: send what is queued (events, counts from
			// before the sessions were removed), then say goodbye. No
			// writer runs after this one: it never lets the hub idle it.
			frames, _ := c.Next()
			for _, f := range frames {
				if wc.write(f) != nil {
					break
				}
			}
			conn.Close(CloseRestart, "server shutting down")
			return
		case <-c.Done():
			// Only a full queue is said to the client, with 1008 and a
			// reason. A session resumed on another connection ends this
			// one, whose tab is gone or gave it up: no close handshake to
			// wait for. The other cause, ErrClosed, follows Leave or Detach,
			// which run after the read loop ended; run closes the socket
			// then.
			if errors.Is(c.Err(), hub.ErrSlow) {
				if ok, skipped := s.slowInfo.Allow(time.Now()); ok {
					s.log.Info("closing a client that does not keep up", wc.session, zap.Error(c.Err()), zap.Int("similar_since_last", skipped))
				}
				conn.Close(CloseSlow, "send queue full")
			}
			if errors.Is(c.Err(), hub.ErrReplaced) {
				conn.CloseNow()
			}
			return
		default:
		}
		frames, ok := c.Next()
		if !ok {
			return
		}
		for _, f := range frames {
			if isDone(c.Done()) {
				break // closed meanwhile: say why now, not after the backlog
			}
			if err := wc.write(f); err != nil {
				// A write that times out has closed the connection; the
				// read loop sees that and the session leaves.
				conn.CloseNow()
				return
			}
		}
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// write sends one frame within Config.WriteTimeout, and counts it only once
// it is out: presence_frames_sent_total counts frames written, not queued.
// The timeout is a deadline on the socket rather than a context: the
// library keeps the last write's context, so a timer context per write
// would stay in every idle connection's memory, and cost each frame an
// allocation and a timer. One writer runs at a time; a ping that writes
// meanwhile shares the deadline and has its own timeout as well.
func (wc *wsConn) write(frame []byte) error {
	wc.raw.SetWriteDeadline(time.Now().Add(wc.s.cfg.WriteTimeout))
	err := wc.conn.Write(context.Background(), websocket.MessageText, frame) // see wsConn
	wc.raw.SetWriteDeadline(time.Time{})
	if err != nil {
		return err
	}
	wc.s.sent.Inc()
	return nil
}

// pinger pings a client every interval from a timer callback rather than a
// goroutine of its own: idle connections are most of the load, and each
// goroutine costs a stack.
type pinger struct {
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
	wg      sync.WaitGroup // a ping in flight
}

func (s *Server) startPing(conn *websocket.Conn) *pinger {
	p := &pinger{}
	var tick func()
	tick = func() {
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return
		}
		// Added under mu, which stop takes to set stopped: after stop no
		// ping starts, and wg.Wait sees every ping that did.
		p.wg.Add(1)
		p.mu.Unlock()
		defer p.wg.Done()

		pctx, cancel := context.WithTimeout(s.base, s.cfg.PingTimeout)
		err := conn.Ping(pctx)
		cancel()
		if err != nil {
			// No pong in time: the peer is gone. Closing ends the read loop,
			// and with it the session.
			conn.CloseNow()
			return
		}
		// The next ping is armed only after this one's pong, so pings never
		// overlap on a slow client.
		p.mu.Lock()
		if !p.stopped {
			p.t.Reset(s.cfg.PingInterval)
		}
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.t = time.AfterFunc(s.cfg.PingInterval, tick)
	p.mu.Unlock()
	return p
}

// stop cancels the next ping and waits for one in flight; close the socket
// first so that it returns at once.
func (p *pinger) stop() {
	p.mu.Lock()
	p.stopped = true
	p.t.Stop()
	p.mu.Unlock()
	p.wg.Wait()
}

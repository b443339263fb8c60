package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/proctest"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

var chaosMode = flag.String("chaos", "", `run TestChaos: "short" (one round of every fault, about 2 minutes; CI runs it) or "long" (more clients, several rounds; prints the table for docs/benchmarks.md)`)

// TestChaos runs two app servers, gc and a real Redis under a crowd of
// WebSocket clients that view, move, watch and leave at random, and injects
// one fault after another. After each, with the clients quiet, everything
// must heal within one session TTL plus one gc poll: gc check clean, every
// client's count equal to its post's set in Redis and to REST on both app
// servers, and the app servers' goroutines back to their level before.
func TestChaos(t *testing.T) {
	var clients, rounds int
	switch *chaosMode {
	case "":
		t.Skip("the chaos run needs -chaos short or -chaos long (scripts/test.sh runs short, scripts/chaos.sh long)")
	case "short":
		clients, rounds = 100, 1
	case "long":
		clients, rounds = 300, 3
	default:
		t.Fatalf("-chaos %q: want short or long", *chaosMode)
	}
	rig := newChaosRig(t, clients)
	faults := rig.faults()
	type result struct {
		fault string
		heal  []time.Duration
	}
	results := make([]result, len(faults))
	for i, f := range faults {
		results[i].fault = f.name
	}
	// The baseline: the crowd settled before any fault.
	rig.traffic(3 * time.Second)
	rig.settle("start")
	base := rig.level()
	for round := range rounds {
		for i, f := range faults {
			t.Logf("round %d: %s", round+1, f.name)
			rig.traffic(2 * time.Second)
			f.inject()
			rig.traffic(2 * time.Second)
			if f.after != nil {
				f.after()
			}
			heal := rig.settle(f.name)
			results[i].heal = append(results[i].heal, heal)
			rig.checkLevel(f.name, base)
			if t.Failed() {
				t.FailNow()
			}
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "%d clients, %d app servers, session TTL %s, gc poll %s, %d round(s)\n\n", clients, 2, rig.ttl, rig.poll, rounds)
	fmt.Fprintln(&table, "| fault | injected | heal min | heal median | heal max |")
	fmt.Fprintln(&table, "|---|---|---|---|---|")
	for _, r := range results {
		h := slices.Clone(r.heal)
		slices.Sort(h)
		fmt.Fprintf(&table, "| %s | %d | %s | %s | %s |\n", r.fault, len(h),
			h[0].Round(10*time.Millisecond), h[len(h)/2].Round(10*time.Millisecond), h[len(h)-1].Round(10*time.Millisecond))
	}
	t.Logf("chaos run:\n%s", table.String())
	if out := os.Getenv("CHAOS_TABLE"); out != "" {
		if err := os.WriteFile(out, []byte(table.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// chaosRig is the system under test and the crowd that uses it.
type chaosRig struct {
	t       *testing.T
	redis   *redistest.Server
	rdb     *redis.Client
	prefix  string
	ttl     time.Duration
	poll    time.Duration
	proxy   *redistest.Blackhole
	addrs   [2]string
	apps    [2]*proc
	gc      *proc
	clients []*chaosClient
	active  atomic.Bool // clients act only while set
	ctx     context.Context
	posts   []string
	key     string
}

func newChaosRig(t *testing.T, n int) *chaosRig {
	r := &chaosRig{
		t:      t,
		redis:  redistest.Start(t),
		prefix: redistest.Prefix(),
		ttl:    9 * time.Second, // covers the subscription probe's 5s + 3s
		poll:   time.Second,
		key:    "chaos-test-publish-key",
	}
	r.rdb = r.redis.Client(t)
	for i := range 12 {
		r.posts = append(r.posts, fmt.Sprint("c", i))
	}
	r.proxy = redistest.NewBlackhole(t, r.redis.Addr)
	for i := range r.addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.addrs[i] = l.Addr().String()
		l.Close()
		r.startApp(i)
	}
	r.startGC()
	ctx, cancel := context.WithCancel(context.Background())
	r.ctx = ctx
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range n {
		c := &chaosClient{id: i, rig: r, post: r.posts[rand.IntN(len(r.posts))]}
		if i%4 == 0 {
			c.watch = r.posts[rand.IntN(len(r.posts))]
		}
		r.clients = append(r.clients, c)
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx) }()
	}
	return r
}

// startApp starts app server i on its fixed address; the second one talks
// to Redis through the proxy that can stop delivering.
func (r *chaosRig) startApp(i int) {
	redisAddr := r.redis.Addr
	if i == 1 {
		redisAddr = r.proxy.Addr()
	}
	r.apps[i] = startProc(r.t, fmt.Sprint("app", i), presenceBin,
		"PRESENCE_ADDR="+r.addrs[i],
		"PRESENCE_REDIS_URL=redis://"+redisAddr+"/0",
		"PRESENCE_KEY_PREFIX="+r.prefix,
		"PRESENCE_SESSION_TTL="+r.ttl.String(),
		"PRESENCE_COALESCE=100ms",
		"PRESENCE_MAX_CONNS=0",
		"PRESENCE_MAX_CONNS_PER_IP=0",
		"PRESENCE_PUBLISH_KEYS="+r.key,
		"PRESENCE_LOG_LEVEL=warn",
	)
	r.waitHTTP(r.addrs[i])
}

func (r *chaosRig) startGC() {
	r.gc = startProc(r.t, "gc", gcBin,
		"PRESENCE_GC_ADDR=127.0.0.1:0",
		"PRESENCE_REDIS_URL="+r.redis.URL(),
		"PRESENCE_KEY_PREFIX="+r.prefix,
		"PRESENCE_SESSION_TTL="+r.ttl.String(),
		"PRESENCE_GC_POLL="+r.poll.String(),
		"PRESENCE_LOG_LEVEL=warn",
	)
}

func (r *chaosRig) waitHTTP(addr string) {
	waitUntil(r.t, 10*time.Second, "app server at "+addr, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// traffic lets the clients act for d.
func (r *chaosRig) traffic(d time.Duration) {
	r.active.Store(true)
	time.Sleep(d) // the clients act meanwhile; nothing to await
	r.active.Store(false)
}

type fault struct {
	name   string
	inject func()
	after  func() // once the traffic after the fault has run, if set
}

func (r *chaosRig) faults() []fault {
	ctx := context.Background()
	var slow float64
	return []fault{
		{name: "app server SIGKILL", inject: func() {
			i := rand.IntN(2)
			r.apps[i].Cmd.Process.Kill()
			<-r.apps[i].Done()
		}, after: func() {
			for i, p := range r.apps {
				if isClosed(p.Done()) {
					r.startApp(i)
				}
			}
		}},
		{name: "gc stopped for longer than a TTL", inject: func() {
			r.gc.Cmd.Process.Kill()
			<-r.gc.Done()
			// Meanwhile app server 0 dies, so there are sessions to prune.
			r.apps[0].Cmd.Process.Kill()
			<-r.apps[0].Done()
			r.startApp(0)
			time.Sleep(r.ttl + r.poll) // gc stays away this long by design
		}, after: r.startGC},
		{name: "Redis restart without persistence", inject: func() { r.redis.RestartEmpty(r.t) }},
		{name: "Redis restart from an older snapshot", inject: func() {
			snapshot := r.redis.Snapshot(r.t)
			// The snapshot ages: seq moves on by every change the crowd
			// makes meanwhile, more than the healing makes afterwards.
			r.traffic(5 * time.Second)
			r.redis.RestartFrom(r.t, snapshot)
		}},
		{name: "SCRIPT FLUSH", inject: func() {
			if err := r.rdb.ScriptFlush(ctx).Err(); err != nil {
				r.t.Fatal(err)
			}
		}},
		{name: "CLIENT KILL TYPE pubsub", inject: func() {
			if err := r.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				r.t.Fatal(err)
			}
		}},
		{name: "pub/sub path silently stops delivering", inject: func() {
			// Every connection app server 1 has to Redis goes silent;
			// new ones work, as after a NAT or firewall dropped its state.
			r.proxy.Swallow()
		}},
		{name: "a client stops reading", inject: func() {
			c := r.clients[0]
			waitUntil(r.t, 5*time.Second, "client 0 connected", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return c.live
			})
			// A post of its own: the flood is for it alone, so it comes
			// fast enough to fill the server's queue before a write times
			// out, and does not slow every other client.
			c.mu.Lock()
			c.post = stallPost
			conn := c.conn
			c.mu.Unlock()
			c.send(conn, `{"type":"view","post":"`+stallPost+`"}`)
			waitUntil(r.t, 5*time.Second, "client 0 on its own post", func() bool {
				return r.rdb.SCard(ctx, redisstore.NewKeys(r.prefix).PostViewers(stallPost)).Val() == 1
			})
			c.stallReads(true)
			slow = r.sum("presence_slow_clients_total")
			// Big events on its post fill its socket buffers and then its
			// send queue on the server, which must close it.
			body := `{"name":"flood","data":"` + strings.Repeat("x", 15<<10) + `"}`
			for range 800 {
				req, _ := http.NewRequest(http.MethodPost, "http://"+r.addrs[0]+"/v1/posts/"+c.viewing()+"/events", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+r.key)
				req.Header.Set("Content-Type", "application/json")
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}, after: func() {
			if r.sum("presence_slow_clients_total") <= slow {
				r.t.Error("no app server closed the client that stopped reading")
			}
			r.clients[0].stallReads(false)
		}},
	}
}

// stallPost is where the client that stops reading gets its flood.
const stallPost = "stall"

// settle waits, with the clients quiet, until every invariant holds, and
// returns how long that took; it fails the test if they do not hold
// within one session TTL plus one gc poll.
func (r *chaosRig) settle(what string) time.Duration {
	r.t.Helper()
	start := time.Now()
	limit := r.ttl + r.poll
	var last string
	for {
		problem := r.invariants()
		if problem == "" {
			return time.Since(start)
		}
		if problem != last {
			last = problem
		}
		if time.Since(start) > limit {
			r.t.Errorf("after %s: not healed within %s: %s", what, limit, problem)
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond) // polling state the rig cannot await
	}
}

// invariants returns the first broken invariant, or "".
func (r *chaosRig) invariants() string {
	ctx := context.Background()
	// What the clients want: who views what, counting only connected ones.
	want := make(map[string]int64, len(r.posts))
	for _, c := range r.clients {
		c.mu.Lock()
		if c.live {
			want[c.post]++
		}
		c.mu.Unlock()
	}
	for _, c := range r.clients {
		c.mu.Lock()
		live, down, post, watch, last := c.live, c.down, c.post, c.watch, copyCounts(c.last)
		c.mu.Unlock()
		if !live {
			return fmt.Sprintf("client %d is not connected", c.id)
		}
		if down {
			return fmt.Sprintf("client %d was last told that its server cannot reach Redis", c.id)
		}
		for _, p := range []string{post, watch} {
			if p != "" && last[p] != want[p] {
				return fmt.Sprintf("client %d shows %s=%d, want %d", c.id, p, last[p], want[p])
			}
		}
	}
	for _, p := range append(slices.Clip(r.posts), stallPost) {
		n, err := r.rdb.SCard(ctx, redisstore.NewKeys(r.prefix).PostViewers(presence.PostID(p))).Result()
		if err != nil {
			return fmt.Sprintf("SCARD %s: %v", p, err)
		}
		if n != want[p] {
			return fmt.Sprintf("SCARD viewers:%s = %d, want %d", p, n, want[p])
		}
		for _, addr := range r.addrs {
			var body struct{ Viewers int64 }
			resp, err := http.Get("http://" + addr + "/v1/posts/" + p)
			if err != nil {
				return fmt.Sprintf("REST %s on %s: %v", p, addr, err)
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || body.Viewers != want[p] {
				return fmt.Sprintf("REST %s on %s: %d %d (%v), want %d", p, addr, resp.StatusCode, body.Viewers, err, want[p])
			}
		}
	}
	// gc check, as an operator runs it, with ghosts allowed 1s past their
	// deadline.
	cmd := exec.Command(gcBin, "check", "-grace", "1s")
	cmd.Env = append(proctest.Env(), "PRESENCE_REDIS_URL="+r.redis.URL(), "PRESENCE_KEY_PREFIX="+r.prefix)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("gc check: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return ""
}

// sum adds a metric up over the app servers.
func (r *chaosRig) sum(name string) float64 {
	var n float64
	for _, addr := range r.addrs {
		n += metric(r.t, "http://"+addr+"/metrics", name)
	}
	return n
}

// level is what the app servers hold: goroutines and heap in use.
type level struct{ goroutines, heap float64 }

func (r *chaosRig) level() level {
	return level{r.sum("go_goroutines"), r.sum("go_memstats_heap_inuse_bytes")}
}

// checkLevel fails when the app servers hold clearly more goroutines or
// heap than before any fault, with as many clients: a leak. The heap gets
// more room, since a fault's burst (reconnects, the flood of events) leaves
// garbage that the next collection takes.
func (r *chaosRig) checkLevel(what string, base level) {
	r.t.Helper()
	limit := level{base.goroutines*1.1 + 20, base.heap*1.5 + 32<<20}
	var now level
	// Goroutines of closed connections end a moment after the close.
	for end := time.Now().Add(5 * time.Second); ; {
		now = r.level()
		if now.goroutines <= limit.goroutines && now.heap <= limit.heap || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if now.goroutines > limit.goroutines {
		r.t.Errorf("after %s: app servers hold %.0f goroutines, %.0f before any fault", what, now.goroutines, base.goroutines)
	}
	if now.heap > limit.heap {
		r.t.Errorf("after %s: app servers' heap in use is %.0f MiB, %.0f MiB before any fault", what, now.heap/(1<<20), base.heap/(1<<20))
	}
}

// chaosClient is one tab: it stays connected (reconnecting to either app
// server when dropped), views its post and maybe watches another, and
// while the rig is active moves, re-watches or leaves at random.
type chaosClient struct {
	id  int
	rig *chaosRig

	mu    sync.Mutex
	post  string           // the post it views
	watch string           // the post it watches, or ""
	live  bool             // connected and its view sent
	down  bool             // its server last said it cannot reach Redis
	last  map[string]int64 // viewers of the last count per post on this connection
	conn  *websocket.Conn  // the current connection
	stall bool
	wake  chan struct{} // closed when stall is lifted
}

func (c *chaosClient) viewing() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.post
}

func (c *chaosClient) stallReads(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		c.stall, c.wake = true, make(chan struct{})
	} else if c.stall {
		c.stall = false
		close(c.wake)
	}
}

func (c *chaosClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		conn := c.dial(ctx)
		if conn == nil {
			return
		}
		c.session(ctx, conn)
	}
}

// dial connects to one of the app servers, trying again until one takes it.
func (c *chaosClient) dial(ctx context.Context) *websocket.Conn {
	for ctx.Err() == nil {
		addr := c.rig.addrs[rand.IntN(len(c.rig.addrs))]
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var opts *websocket.DialOptions
		if c.id == 0 {
			// The client that stops reading: a small, fixed receive buffer
			// (the kernel would otherwise grow it to 32 MiB here), so that
			// a flood reaches the server's send queue.
			d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
				})
				return errors.Join(err, serr)
			}}
			opts = &websocket.DialOptions{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}}
		}
		conn, _, err := websocket.Dial(dctx, "ws://"+addr+"/v1/ws", opts)
		cancel()
		if err == nil {
			conn.SetReadLimit(1 << 20)
			return conn
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(100+rand.IntN(200)) * time.Millisecond):
		}
	}
	return nil
}

func (c *chaosClient) send(conn *websocket.Conn, frame string) {
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = conn.Write(wctx, websocket.MessageText, []byte(frame)) // a failed write shows as a failed read
}

// session runs one connection until it ends.
func (c *chaosClient) session(ctx context.Context, conn *websocket.Conn) {
	defer conn.CloseNow()
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c.mu.Lock()
			stall, wake := c.stall, c.wake
			c.mu.Unlock()
			if stall {
				select {
				case <-wake:
				case <-ctx.Done():
					return
				}
			}
			_, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			var f frame
			if json.Unmarshal(b, &f) != nil {
				continue
			}
			switch f.Type {
			case "hello":
				c.mu.Lock()
				c.last = make(map[string]int64)
				post, watch := c.post, c.watch
				c.live, c.down = true, false
				c.mu.Unlock()
				c.send(conn, `{"type":"view","post":"`+post+`"}`)
				if watch != "" {
					c.send(conn, `{"type":"watch","posts":["`+watch+`"]}`)
				}
			case "count":
				c.mu.Lock()
				c.last[f.Post] = f.Viewers
				c.mu.Unlock()
			case "status":
				c.mu.Lock()
				c.down = f.Store == "down"
				c.mu.Unlock()
			}
		}
	}()
	defer func() {
		c.mu.Lock()
		c.live = false
		c.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-time.After(time.Duration(300+rand.IntN(1200)) * time.Millisecond):
		}
		if !c.rig.active.Load() {
			continue
		}
		switch x := rand.IntN(10); {
		case x < 6: // move to another post
			c.mu.Lock()
			c.post = c.rig.posts[rand.IntN(len(c.rig.posts))]
			post := c.post
			c.mu.Unlock()
			c.send(conn, `{"type":"view","post":"`+post+`"}`)
		case x < 8: // watch another post instead
			c.mu.Lock()
			old := c.watch
			c.watch = c.rig.posts[rand.IntN(len(c.rig.posts))]
			watch := c.watch
			c.mu.Unlock()
			if old != "" && old != watch {
				c.send(conn, `{"type":"unwatch","posts":["`+old+`"]}`)
			}
			c.send(conn, `{"type":"watch","posts":["`+watch+`"]}`)
		default: // leave: close, and come back on the next connection
			c.mu.Lock()
			c.live = false
			c.mu.Unlock()
			conn.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func copyCounts(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

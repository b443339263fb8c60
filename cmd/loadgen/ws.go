package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
)

// client is one simulated tab: a viewer of post, or a watcher of posts.
type client struct {
	conn   *websocket.Conn
	server int
	post   string // the post it views; "" for a watcher
	done   chan struct{}
	last   atomic.Int64 // viewers in the last count of post
	// probeAt is when a count of post reached the probe's target, in
	// nanoseconds since the run began; 0 before.
	probeAt atomic.Int64

	mu      sync.Mutex
	up      map[string]bool          // a watcher's: posts it saw above 0
	zeroAt  map[string]time.Duration // a watcher's: when each post's count dropped to 0
	watcher *client                  // a churn viewer's: who watches its post
}

// wsRun is the state of one WebSocket run.
type wsRun struct {
	o      options
	out    io.Writer
	begin  time.Time
	frames atomic.Int64
	target atomic.Int64 // the probe's count; 0 when no probe runs
	rdb    *redis.Client
	last   sample
}

// wsResult is what a run found, for its tests.
type wsResult struct {
	connected, watchers int
	errs                map[string]int
	wrong               []string // posts whose count was wrong at the end
	probeMissed         int      // viewers that never got the probe's count
	churnClosed         int
	churnMissed         int // closes no watcher saw
}

// runWS runs the WebSocket mode: the ramp, a hold, then the churn and
// probe if asked, a check of every count, and the close; each phase ends
// with a report of the servers' and Redis's CPU and memory.
func runWS(ctx context.Context, o options, out io.Writer) (wsResult, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	r := &wsRun{o: o, out: out, begin: time.Now()}
	if o.redis != "" {
		r.rdb = redis.NewClient(&redis.Options{Addr: o.redis})
		defer r.rdb.Close()
	}
	fmt.Fprintf(out, "limits: %s\n", limits())
	res := wsResult{errs: map[string]int{}}
	r.last = r.sample(ctx)
	rampRSS := r.last

	// The ramp: client i views post i mod -posts on server i mod n.
	var clients []*client
	var latencies []time.Duration
	var mu sync.Mutex
	r.spread(ctx, o.conns, o.ramp, func(i int) {
		c, lat, err := r.openViewer(ctx, i, i%len(o.servers), r.post(i%o.posts))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.errs[classify(err)]++
			return
		}
		clients = append(clients, c)
		latencies = append(latencies, lat)
	})
	defer func() {
		start := time.Now()
		for _, c := range clients {
			c.conn.CloseNow()
		}
		for _, c := range clients {
			<-c.done
		}
		fmt.Fprintf(out, "closed %d clients in %s\n", len(clients), time.Since(start).Round(time.Millisecond))
	}()
	res.connected = len(clients)
	fmt.Fprintf(out, "connected %d of %d in %s; errors %v\n", len(clients), o.conns, r.since(r.last.at), res.errs)
	if len(latencies) > 0 {
		slices.Sort(latencies)
		fmt.Fprintf(out, "view -> own count: p50 %s p99 %s max %s\n",
			pct(latencies, 50), pct(latencies, 99), latencies[len(latencies)-1].Round(time.Microsecond))
	}
	r.phase(ctx, "ramp", len(clients))

	// The churn's viewers, each alone on a post, and their watchers, each
	// on another server than the viewers it watches.
	var churners, watchers []*client
	if o.churn > 0 {
		var err error
		churners, watchers, err = r.openChurn(ctx)
		clients = append(clients, churners...)
		clients = append(clients, watchers...)
		res.watchers = len(watchers)
		if err != nil {
			return res, err
		}
		r.phase(ctx, "churn setup", len(churners)+len(watchers))
	}

	select {
	case <-time.After(o.hold):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	r.phase(ctx, "hold", 0)
	r.memory(ctx, rampRSS)
	fmt.Fprintf(out, "count frames received so far: %d\n", r.frames.Load())

	if o.churn > 0 {
		res.churnClosed, res.churnMissed = r.runChurn(ctx, churners)
		r.phase(ctx, "churn", 0)
	}
	if o.probe {
		c, missed, err := r.runProbe(ctx, clients)
		if c != nil {
			clients = append(clients, c)
		}
		if err != nil {
			return res, err
		}
		res.probeMissed = missed
		r.phase(ctx, "probe", 1)
	}
	res.wrong = r.verify(ctx, clients)
	if o.linger > 0 {
		fmt.Fprintf(out, "lingering %s before closing\n", o.linger)
		select {
		case <-time.After(o.linger):
		case <-ctx.Done():
		}
	}
	return res, nil
}

func (r *wsRun) post(n int) string { return r.o.prefix + strconv.Itoa(n) }

// churnPost is the post of the k-th churn viewer, alone on it.
func (r *wsRun) churnPost(k int) string { return r.o.prefix + "c" + strconv.Itoa(k) }

func (r *wsRun) since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// spread calls open(i) for i below n, at most rate a second and
// -inflight at once, and waits for them all.
func (r *wsRun) spread(ctx context.Context, n, rate int, open func(i int)) {
	sem := make(chan struct{}, r.o.inflight)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := 0; i < n && ctx.Err() == nil; i++ {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			open(i)
		}()
	}
	wg.Wait()
}

// dial opens a WebSocket to server s from the i-th source address and reads
// its hello.
func (r *wsRun) dial(ctx context.Context, i, s int) (*websocket.Conn, error) {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if len(r.o.src) > 0 {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(r.o.src[i%len(r.o.src)])}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	conn, _, err := websocket.Dial(ctx, "ws://"+r.o.servers[s]+"/v1/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	if _, err := readFrame(ctx, conn); err != nil { // hello
		conn.CloseNow()
		return nil, err
	}
	return conn, nil
}

// openViewer opens a client that views post and waits for its own count
// frame; it returns the time from the view to that frame.
func (r *wsRun) openViewer(ctx context.Context, i, s int, post string) (*client, time.Duration, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := r.dial(dctx, i, s)
	if err != nil {
		return nil, 0, err
	}
	fail := func(err error) (*client, time.Duration, error) { conn.CloseNow(); return nil, 0, err }
	sent := time.Now()
	if err := conn.Write(dctx, websocket.MessageText, []byte(`{"type":"view","post":"`+post+`"}`)); err != nil {
		return fail(err)
	}
	c := &client{conn: conn, server: s, post: post, done: make(chan struct{})}
	for {
		f, err := readFrame(dctx, conn)
		if err != nil {
			return fail(err)
		}
		if f.Type == "count" && f.Post == post {
			c.last.Store(f.Viewers)
			break
		}
	}
	lat := time.Since(sent)
	go r.read(c)
	return c, lat, nil
}

// read keeps reading, as a browser does: it answers pings, and notes the
// counts the run checks.
func (r *wsRun) read(c *client) {
	defer close(c.done)
	for {
		f, err := readFrame(context.Background(), c.conn)
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			continue
		}
		if err != nil {
			return
		}
		if f.Type != "count" {
			continue
		}
		r.frames.Add(1)
		if c.post == "" {
			c.mu.Lock()
			if f.Viewers > 0 {
				c.up[f.Post] = true
			} else if _, ok := c.zeroAt[f.Post]; !ok && c.up[f.Post] {
				c.zeroAt[f.Post] = time.Since(r.begin)
			}
			c.mu.Unlock()
			continue
		}
		if f.Post != c.post {
			continue
		}
		c.last.Store(f.Viewers)
		if t := r.target.Load(); t > 0 && f.Viewers >= t && c.probeAt.Load() == 0 {
			c.probeAt.Store(int64(time.Since(r.begin)))
		}
	}
}

// openChurn opens -churn times -churn-for viewers, the k-th alone on post
// "<prefix>c<k>" on server k mod n, and watchers of those posts, up to 100
// posts each, on server k+1 mod n. It returns once every watcher has seen
// each of its posts at 1.
func (r *wsRun) openChurn(ctx context.Context) (churners, watchers []*client, err error) {
	n := r.o.churnViewers()
	ns := len(r.o.servers)
	post := r.churnPost
	// Watchers first, so that no viewer's count is missed.
	byServer := make([][]int, ns)
	for k := range n {
		s := (k + 1) % ns
		byServer[s] = append(byServer[s], k)
	}
	watcherOf := make([]*client, n)
	for s, ks := range byServer {
		for len(ks) > 0 {
			batch := ks[:min(100, len(ks))]
			ks = ks[len(batch):]
			posts := make([]string, len(batch))
			for i, k := range batch {
				posts[i] = post(k)
			}
			w, err := r.openWatcher(ctx, len(watchers), s, posts)
			if err != nil {
				return churners, watchers, fmt.Errorf("open a churn watcher: %w", err)
			}
			watchers = append(watchers, w)
			for _, k := range batch {
				watcherOf[k] = w
			}
		}
	}
	var mu sync.Mutex
	errs := map[string]int{}
	churners = make([]*client, n)
	r.spread(ctx, n, r.o.ramp, func(k int) {
		c, _, err := r.openViewer(ctx, k, k%ns, post(k))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs[classify(err)]++
			return
		}
		c.watcher = watcherOf[k]
		churners[k] = c
	})
	if len(errs) > 0 {
		return slices.DeleteFunc(churners, func(c *client) bool { return c == nil }), watchers, fmt.Errorf("open churn viewers: %v", errs)
	}
	waiting := func() int {
		n := 0
		for _, c := range churners {
			c.watcher.mu.Lock()
			if !c.watcher.up[c.post] {
				n++
			}
			c.watcher.mu.Unlock()
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for waiting() > 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return churners, watchers, fmt.Errorf("churn: %d posts' viewers not seen by their watchers in 10s", waiting())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(r.out, "churn: %d viewers alone on a post each, %d watchers on other servers\n", n, len(watchers))
	return churners, watchers, nil
}

// openWatcher opens a client that watches posts.
func (r *wsRun) openWatcher(ctx context.Context, i, s int, posts []string) (*client, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := r.dial(dctx, i, s)
	if err != nil {
		return nil, err
	}
	frame, _ := json.Marshal(map[string]any{"type": "watch", "posts": posts})
	if err := conn.Write(dctx, websocket.MessageText, frame); err != nil {
		conn.CloseNow()
		return nil, err
	}
	c := &client{conn: conn, server: s, done: make(chan struct{}), up: map[string]bool{}, zeroAt: map[string]time.Duration{}}
	go r.read(c)
	return c, nil
}

// runChurn closes the churn's viewers, -churn a second, and times each
// close until a watcher sees its post's count drop to 0. It returns how
// many it closed and how many drops no watcher saw within 5 s.
func (r *wsRun) runChurn(ctx context.Context, churners []*client) (closed, missed int) {
	closedAt := make([]time.Duration, len(churners))
	tick := time.NewTicker(time.Second / time.Duration(r.o.churn))
	defer tick.Stop()
	var wg sync.WaitGroup
	for k, c := range churners {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return closed, len(churners) - closed
		}
		closedAt[k] = time.Since(r.begin)
		// A tab that closes says so with a close frame, as a browser does;
		// the handshake's wait is the client's, not the server's.
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.conn.Close(websocket.StatusGoingAway, "")
		}()
		closed++
	}
	wg.Wait()
	seen := func() (lat []time.Duration, missing int) {
		for k, c := range churners {
			w := c.watcher
			w.mu.Lock()
			at, ok := w.zeroAt[c.post]
			w.mu.Unlock()
			if !ok {
				missing++
				continue
			}
			lat = append(lat, at-closedAt[k])
		}
		return lat, missing
	}
	deadline := time.Now().Add(5 * time.Second)
	lat, missing := seen()
	for missing > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		lat, missing = seen()
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		fmt.Fprintf(r.out, "churn: %d closes at %d/s; close -> watcher on another server sees the drop: p50 %s p99 %s max %s; not seen in 5s: %d\n",
			closed, r.o.churn, pct(lat, 50), pct(lat, 99), lat[len(lat)-1].Round(time.Microsecond), missing)
	} else {
		fmt.Fprintf(r.out, "churn: %d closes, no drop seen\n", closed)
	}
	return closed, missing
}

// runProbe has one more viewer join the first post and times, for every
// viewer of that post, the view until its count frame with the new number.
func (r *wsRun) runProbe(ctx context.Context, clients []*client) (*client, int, error) {
	post := r.post(0)
	var on []*client
	for _, c := range clients {
		if c.post == post {
			on = append(on, c)
		}
	}
	r.target.Store(int64(len(on) + 1))
	sent := time.Since(r.begin)
	c, _, err := r.openViewer(ctx, len(clients), 0, post)
	if err != nil {
		return nil, 0, fmt.Errorf("probe: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var lat []time.Duration
	missed := len(on)
	for missed > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		lat, missed = lat[:0], 0
		for _, v := range on {
			at := v.probeAt.Load()
			if at == 0 {
				missed++
				continue
			}
			lat = append(lat, time.Duration(at)-sent)
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		fmt.Fprintf(r.out, "probe: one more viewer of %s (%d viewers): each has the new count after p50 %s p99 %s max %s; not in 5s: %d\n",
			post, len(on)+1, pct(lat, 50), pct(lat, 99), lat[len(lat)-1].Round(time.Microsecond), missed)
	} else {
		fmt.Fprintf(r.out, "probe: no viewer of %s got the new count\n", post)
	}
	return c, missed, nil
}

// verify checks, until each is right or 5 s pass, that every viewer's last
// count of its post is the number of this run's viewers of it, and that
// the REST count says the same (post k asked of server k mod n). Churn
// posts must be at 0. It returns the posts still wrong.
func (r *wsRun) verify(ctx context.Context, clients []*client) []string {
	want := map[string]int64{}
	for _, c := range clients {
		if c.post != "" && !isDone(c.done) {
			want[c.post]++
		}
	}
	// The churn's posts, their viewers closed, must be at 0.
	for k := range r.o.churnViewers() {
		if _, ok := want[r.churnPost(k)]; !ok {
			want[r.churnPost(k)] = 0
		}
	}
	posts := slices.Sorted(maps.Keys(want))
	check := func() (wrong []string) {
		bad := map[string]string{}
		for _, c := range clients {
			if c.post != "" && !isDone(c.done) && c.last.Load() != want[c.post] {
				bad[c.post] = fmt.Sprintf("%s: a viewer shows %d, want %d", c.post, c.last.Load(), want[c.post])
			}
		}
		for i, p := range posts {
			if _, ok := bad[p]; ok {
				continue
			}
			got, err := restCount(ctx, r.o.servers[i%len(r.o.servers)], p)
			if err != nil {
				bad[p] = fmt.Sprintf("%s: %v", p, err)
			} else if got != want[p] {
				bad[p] = fmt.Sprintf("%s: REST says %d, want %d", p, got, want[p])
			}
		}
		for _, p := range posts {
			if b, ok := bad[p]; ok {
				wrong = append(wrong, b)
			}
		}
		return wrong
	}
	start := time.Now()
	wrong := check()
	for len(wrong) > 0 && time.Since(start) < 5*time.Second && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
		wrong = check()
	}
	if len(wrong) == 0 {
		fmt.Fprintf(r.out, "counts: all %d posts right, on every viewer and over REST\n", len(posts))
	} else {
		fmt.Fprintf(r.out, "counts: %d of %d posts wrong after 5s, e.g. %s\n", len(wrong), len(posts), wrong[0])
	}
	return wrong
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// restCount asks a server for a post's viewers.
func restCount(ctx context.Context, server, post string) (int64, error) {
	u := (&url.URL{Scheme: "http", Host: server, Path: "/v1/posts/" + post}).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Viewers int64 `json:"viewers"`
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	return body.Viewers, err
}

// sample is the servers' metrics and Redis's CPU at one moment.
type sample struct {
	at      time.Time
	servers []map[string]float64 // nil where /metrics did not answer
	redis   float64              // CPU seconds; -1 when not read
}

func (r *wsRun) sample(ctx context.Context) sample {
	s := sample{at: time.Now(), redis: -1}
	for _, srv := range r.o.servers {
		m, err := scrape(ctx, srv)
		if err != nil {
			m = nil
		}
		s.servers = append(s.servers, m)
	}
	if r.rdb != nil {
		if cpu, err := redisCPU(ctx, r.rdb); err == nil {
			s.redis = cpu[r.o.redis].cpu
		}
	}
	return s
}

// phase reports what the servers and Redis used since the last phase
// ended: CPU, and per join where joins is not 0; RSS and goroutines now.
func (r *wsRun) phase(ctx context.Context, name string, joins int) {
	now := r.sample(ctx)
	prev := r.last
	r.last = now
	wall := now.at.Sub(prev.at)
	fmt.Fprintf(r.out, "phase %s, %s:\n", name, wall.Round(time.Millisecond))
	var total float64
	for i, srv := range r.o.servers {
		a, b := now.servers[i], prev.servers[i]
		if a == nil || b == nil {
			fmt.Fprintf(r.out, "  server %s: no /metrics on this address\n", srv)
			continue
		}
		cpu := a["process_cpu_seconds_total"] - b["process_cpu_seconds_total"]
		total += cpu
		fmt.Fprintf(r.out, "  server %s: cpu %.2fs (%.0f%% of a core), RSS %.0f MiB, %d open, %d goroutines, %.0f frames sent\n",
			srv, cpu, 100*cpu/wall.Seconds(), a["process_resident_memory_bytes"]/(1<<20),
			int(a["presence_connections_open"]), int(a["go_goroutines"]), a["presence_frames_sent_total"]-b["presence_frames_sent_total"])
	}
	if joins > 0 {
		fmt.Fprintf(r.out, "  servers' cpu per join: %s over %d joins\n", (time.Duration(total*float64(time.Second)) / time.Duration(joins)).Round(time.Microsecond), joins)
	}
	if now.redis >= 0 && prev.redis >= 0 {
		cpu := now.redis - prev.redis
		fmt.Fprintf(r.out, "  redis %s: cpu %.2fs (%.0f%% of a core)\n", r.o.redis, cpu, 100*cpu/wall.Seconds())
	}
}

// memory reports each server's RSS growth since from, per connection it
// holds now: after the ramp and the hold, that is an idle viewer's cost.
func (r *wsRun) memory(ctx context.Context, from sample) {
	for i, srv := range r.o.servers {
		a, b := r.last.servers[i], from.servers[i]
		if a == nil || b == nil {
			continue
		}
		open := a["presence_connections_open"]
		if open == 0 {
			continue
		}
		grew := a["process_resident_memory_bytes"] - b["process_resident_memory_bytes"]
		fmt.Fprintf(r.out, "  server %s: RSS %.0f -> %.0f MiB, +%.1f KiB per connection open (%d)\n", srv,
			b["process_resident_memory_bytes"]/(1<<20), a["process_resident_memory_bytes"]/(1<<20), grew/open/1024, int(open))
	}
}

type frame struct {
	Type    string `json:"type"`
	Post    string `json:"post"`
	Viewers int64  `json:"viewers"`
}

func readFrame(ctx context.Context, conn *websocket.Conn) (frame, error) {
	var f frame
	_, data, err := conn.Read(ctx)
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(data, &f)
}

// Command loadgen opens many WebSocket clients against a presence server,
// each viewing one of a few posts, and reports how the server copes: connect
// errors, the time from a view to the client's own count frame, and the
// server's memory per connection read from its /metrics. It only dials
// loopback addresses, is bounded by -conns and -timeout, and closes every
// client before it exits.
//
//	go run ./cmd/loadgen -conns 10000 -src 127.0.0.2,127.0.0.3
//
// With -store-redis or -store-cluster it drives the Redis store layer
// itself instead, with no server in between, and reports view, move and
// leave throughput and the Redis CPU each operation costs (see store.go):
//
//	go run ./cmd/loadgen -store-cluster 127.0.0.1:7000,127.0.0.1:7001 -duration 30s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type options struct {
	server   string
	conns    int
	posts    int
	ramp     int
	inflight int
	hold     time.Duration
	timeout  time.Duration
	src      []string

	// The store mode's (see store.go); storeRedis or storeCluster selects it.
	storeRedis   string
	storeCluster []string
	workers      int
	sessions     int
	duration     time.Duration
}

func parse(args []string) (options, error) {
	var o options
	var src, cluster string
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&o.server, "server", "127.0.0.1:8080", "presence server host:port (loopback only)")
	fs.IntVar(&o.conns, "conns", 1000, "WebSocket clients to open (at most 50000)")
	fs.IntVar(&o.posts, "posts", 100, "posts the clients view, round robin (in the store mode, at random)")
	fs.IntVar(&o.ramp, "ramp", 2000, "new connections per second")
	fs.IntVar(&o.inflight, "inflight", 200, "handshakes in flight at most")
	fs.DurationVar(&o.hold, "hold", 5*time.Second, "how long to hold all connections before closing them")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "the whole run stops after this")
	fs.StringVar(&src, "src", "", "comma-separated loopback source addresses to spread connections over (each gives ~28k ports)")
	fs.StringVar(&o.storeRedis, "store-redis", "", "drive the Redis store directly, no server: one node at this redis:// URL (loopback only)")
	fs.StringVar(&cluster, "store-cluster", "", "drive the Redis store directly, no server: the Redis Cluster with these comma-separated host:port seeds (loopback only)")
	fs.IntVar(&o.workers, "workers", 64, "store mode: concurrent workers, each one call at a time (at most 4096)")
	fs.IntVar(&o.sessions, "sessions", 50, "store mode: sessions per worker (at most 10000)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "store mode: how long to drive the store (bounded by -timeout)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.storeRedis != "" || cluster != "" {
		return o, parseStore(fs, &o, cluster)
	}
	if err := onlyFlags(fs, "the WebSocket mode", storeFlags); err != nil {
		return o, err
	}
	if err := checkLoopback("-server", o.server); err != nil {
		return o, err
	}
	for _, s := range strings.Split(src, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if ip := net.ParseIP(s); ip == nil || !ip.IsLoopback() {
			return o, fmt.Errorf("-src must be loopback addresses, got %q", s)
		}
		o.src = append(o.src, s)
	}
	if o.conns < 1 || o.conns > 50000 || o.posts < 1 || o.ramp < 1 || o.inflight < 1 {
		return o, errors.New("-conns must be 1-50000 and -posts, -ramp, -inflight positive")
	}
	return o, nil
}

// checkLoopback refuses a host:port that is not a loopback IP address: the
// load generator is for a machine's own servers.
func checkLoopback(flagName, hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%s: %w", flagName, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s must be a loopback address, got %q", flagName, host)
	}
	return nil
}

// client is one simulated tab.
type client struct {
	conn *websocket.Conn
	done chan struct{}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if o.store() {
		_, err := runStore(ctx, o, out)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	fmt.Fprintf(out, "limits: %s\n", limits())
	before, _ := scrape(ctx, o.server)

	var (
		mu        sync.Mutex
		clients   []*client
		latencies []time.Duration
		errs      = map[string]int{}
		counts    atomic.Int64
	)
	sem := make(chan struct{}, o.inflight)
	tick := time.NewTicker(time.Second / time.Duration(o.ramp))
	defer tick.Stop()
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < o.conns && ctx.Err() == nil; i++ {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, lat, err := open(ctx, o, i, &counts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[classify(err)]++
				return
			}
			clients = append(clients, c)
			latencies = append(latencies, lat)
		}()
	}
	wg.Wait()
	ramp := time.Since(start)
	fmt.Fprintf(out, "connected %d of %d in %s; errors %v\n", len(clients), o.conns, ramp.Round(time.Millisecond), errs)
	if len(latencies) > 0 {
		slices.Sort(latencies)
		fmt.Fprintf(out, "view -> own count: p50 %s p99 %s max %s\n",
			pct(latencies, 50), pct(latencies, 99), latencies[len(latencies)-1].Round(time.Microsecond))
	}

	select {
	case <-time.After(o.hold):
	case <-ctx.Done():
	}
	after, err := scrape(ctx, o.server)
	if err == nil && len(clients) > 0 {
		rss := after["process_resident_memory_bytes"] - before["process_resident_memory_bytes"]
		fmt.Fprintf(out, "server: %d open, RSS %.0f MiB (+%.1f KiB per connection), %d goroutines, %.0f frames sent\n",
			int(after["presence_connections_open"]), after["process_resident_memory_bytes"]/(1<<20),
			rss/float64(len(clients))/1024, int(after["go_goroutines"]), after["presence_frames_sent_total"])
	}
	fmt.Fprintf(out, "count frames received while holding: %d\n", counts.Load())

	closeStart := time.Now()
	for _, c := range clients {
		c.conn.CloseNow()
	}
	for _, c := range clients {
		<-c.done
	}
	fmt.Fprintf(out, "closed %d clients in %s\n", len(clients), time.Since(closeStart).Round(time.Millisecond))
	return nil
}

// open dials, views a post and waits for the client's own count frame.
func open(ctx context.Context, o options, i int, counts *atomic.Int64) (*client, time.Duration, error) {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	if len(o.src) > 0 {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.src[i%len(o.src)])}
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, "ws://"+o.server+"/v1/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, 0, err
	}
	post := "p" + strconv.Itoa(i%o.posts)
	fail := func(err error) (*client, time.Duration, error) { conn.CloseNow(); return nil, 0, err }
	if _, err := readFrame(dctx, conn); err != nil { // hello
		return fail(err)
	}
	sent := time.Now()
	if err := conn.Write(dctx, websocket.MessageText, []byte(`{"type":"view","post":"`+post+`"}`)); err != nil {
		return fail(err)
	}
	for {
		m, err := readFrame(dctx, conn)
		if err != nil {
			return fail(err)
		}
		if m.Type == "count" && m.Post == post {
			break
		}
	}
	lat := time.Since(sent)
	c := &client{conn: conn, done: make(chan struct{})}
	// Keep reading, as a browser does: it answers pings and drains counts.
	go func() {
		defer close(c.done)
		for {
			if _, _, err := conn.Read(context.Background()); err != nil {
				return
			}
			counts.Add(1)
		}
	}()
	return c, lat, nil
}

type frame struct {
	Type string `json:"type"`
	Post string `json:"post"`
}

func readFrame(ctx context.Context, conn *websocket.Conn) (frame, error) {
	var f frame
	_, data, err := conn.Read(ctx)
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(data, &f)
}

// classify groups errors by their errno or a short cause, so a run's
// failures read as "EADDRNOTAVAIL: 312" rather than 312 lines.
func classify(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}

func pct(sorted []time.Duration, p int) time.Duration {
	return sorted[(len(sorted)-1)*p/100].Round(time.Microsecond)
}

// scrape reads the gauges and counters of the server's /metrics.
func scrape(ctx context.Context, server string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, (&url.URL{Scheme: "http", Host: server, Path: "/metrics"}).String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// limits prints what bounds a run on this machine, so recorded figures
// carry them.
func limits() string {
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return "?"
		}
		return strings.Join(strings.Fields(string(b)), "-")
	}
	return fmt.Sprintf("nofile %d/%d, somaxconn %s, ports %s", lim.Cur, lim.Max,
		read("/proc/sys/net/core/somaxconn"), read("/proc/sys/net/ipv4/ip_local_port_range"))
}

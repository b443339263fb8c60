// Command loadgen opens many WebSocket clients against presence servers,
// each viewing one of a few posts, and reports how the servers cope: connect
// errors, the time from a view to the client's own count frame, and per
// phase (ramp, hold, churn, probe) the servers' CPU, RSS and goroutines
// read from their /metrics and Redis's CPU from INFO. With -churn it closes
// viewers at a rate and times each close until a watcher on another server
// sees the count drop; with -probe one more viewer joins the first post and
// it times the new count's arrival at every viewer of it. At the end it
// checks every count, on each viewer and over REST (see ws.go). It only
// dials loopback addresses, is bounded by -conns and -timeout, and closes
// every client before it exits.
//
//	go run ./cmd/loadgen -conns 10000 -src 127.0.0.2,127.0.0.3
//	go run ./cmd/loadgen -server 127.0.0.1:8080,127.0.0.1:8081 -churn 100 -probe -redis 127.0.0.1:6379
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
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
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
	servers  []string
	conns    int
	posts    int
	ramp     int
	inflight int
	hold     time.Duration
	timeout  time.Duration
	src      []string
	prefix   string
	redis    string
	churn    int
	churnFor time.Duration
	probe    bool
	linger   time.Duration

	// The store mode's (see store.go); storeRedis or storeCluster selects it.
	storeRedis   string
	storeCluster []string
	workers      int
	sessions     int
	duration     time.Duration
}

func parse(args []string) (options, error) {
	var o options
	var src, cluster, servers string
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.StringVar(&servers, "server", "127.0.0.1:8080", "presence servers' host:port, comma-separated; client i goes to server i mod n (loopback only)")
	fs.IntVar(&o.conns, "conns", 1000, "WebSocket clients to open (at most 50000)")
	fs.StringVar(&o.prefix, "post-prefix", "p", "posts are named this and a number: runs side by side take a prefix each, so each can check its own counts")
	fs.StringVar(&o.redis, "redis", "", "host:port of the Redis whose CPU to report per phase (loopback only)")
	fs.IntVar(&o.churn, "churn", 0, "after the hold, close this many viewers a second, each alone on its post, and time each close until a watcher on another server sees the post's count drop")
	fs.DurationVar(&o.churnFor, "churn-for", 10*time.Second, "how long the churn lasts")
	fs.BoolVar(&o.probe, "probe", false, "after the hold, one more viewer joins the first post: time until every viewer of that post has the new count")
	fs.DurationVar(&o.linger, "linger", 0, "keep every client open this long after the checks: runs side by side then close only once all have measured")
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
	for _, srv := range strings.Split(servers, ",") {
		if srv = strings.TrimSpace(srv); srv == "" {
			continue
		}
		if err := checkLoopback("-server", srv); err != nil {
			return o, err
		}
		o.servers = append(o.servers, srv)
	}
	if len(o.servers) == 0 {
		return o, errors.New("-server names no server")
	}
	if o.redis != "" {
		if err := checkLoopback("-redis", o.redis); err != nil {
			return o, err
		}
	}
	// Each bound checked alone first, so that the product cannot overflow.
	if o.churn < 0 || o.churn > 10000 || o.churn > 0 && (o.churnFor <= 0 || o.churnFor > time.Hour || o.churnViewers() < 1 || o.churnViewers() > 10000) {
		return o, errors.New("-churn must be 0 or positive, with -churn times -churn-for (s) 1 to 10000 closes")
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

// churnViewers is how many viewers the churn closes: -churn a second for
// -churn-for.
func (o options) churnViewers() int { return o.churn * int(o.churnFor.Seconds()+0.5) }

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

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if o.store() {
		_, err := runStore(ctx, o, out)
		return err
	}
	_, err = runWS(ctx, o, out)
	return err
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

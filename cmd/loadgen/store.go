package main

// The store mode: workers call the Redis store as app servers do, with no
// WebSocket or app server in between, so a run measures what one view,
// move or leave costs Redis, on one node or spread over a cluster's
// primaries.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/bits"
	mrand "math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
)

// Flags of one mode only; setting one in the other mode is refused rather
// than silently ignored.
var (
	wsFlags    = []string{"server", "conns", "ramp", "inflight", "hold", "src", "post-prefix", "redis", "churn", "churn-for", "probe", "linger"}
	storeFlags = []string{"workers", "sessions", "duration"}
)

// store reports whether o selects the store mode.
func (o options) store() bool { return o.storeRedis != "" || len(o.storeCluster) > 0 }

// parseStore checks the store mode's flags; cluster is -store-cluster.
func parseStore(fs *flag.FlagSet, o *options, cluster string) error {
	if o.storeRedis != "" && cluster != "" {
		return errors.New("-store-redis and -store-cluster exclude each other")
	}
	if err := onlyFlags(fs, "the store mode", wsFlags); err != nil {
		return err
	}
	if o.storeRedis != "" {
		opt, err := redis.ParseURL(o.storeRedis)
		if err != nil {
			return fmt.Errorf("-store-redis: %w", err)
		}
		if opt.Network != "tcp" {
			return fmt.Errorf("-store-redis must be a loopback address, got %s socket %q", opt.Network, opt.Addr)
		}
		if err := checkLoopback("-store-redis", opt.Addr); err != nil {
			return err
		}
	}
	for _, s := range strings.Split(cluster, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if err := checkLoopback("-store-cluster", s); err != nil {
			return err
		}
		o.storeCluster = append(o.storeCluster, s)
	}
	if cluster != "" && len(o.storeCluster) == 0 {
		return errors.New("-store-cluster names no node")
	}
	if o.workers < 1 || o.workers > 4096 || o.sessions < 1 || o.sessions > 10000 || o.posts < 1 || o.duration <= 0 {
		return errors.New("-workers must be 1-4096, -sessions 1-10000, -posts and -duration positive")
	}
	if o.workers*o.sessions > 1_000_000 {
		return fmt.Errorf("-workers x -sessions must be at most 1000000, got %d", o.workers*o.sessions)
	}
	return nil
}

// onlyFlags refuses any of names set on the command line.
func onlyFlags(fs *flag.FlagSet, mode string, names []string) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err == nil && slices.Contains(names, f.Name) {
			err = fmt.Errorf("-%s does not apply to %s", f.Name, mode)
		}
	})
	return err
}

// The kinds of operation a worker does, in the order it does them to each
// session: a view of a post, a move to another post (a view naming the
// post it leaves), and a leave.
const (
	opView = iota
	opMove
	opLeave
	numOps
)

var opNames = [numOps]string{"view", "move", "leave"}

// storeResult is what a store run did, for tests.
type storeResult struct {
	prefix    string
	ops       [numOps]int64
	errors    map[string]int
	left      int // sessions still on a post when the run ended, then left
	leaveErrs map[string]int
	primaries int // primaries whose CPU was read
}

// slot is one of a worker's sessions. post is where the store has it, ""
// when it is on none; after a failed call it may also be on prev, or on
// neither, so the next step leaves both.
type slot struct {
	id   presence.SessionID
	post presence.PostID
	prev presence.PostID
	next int // the kind of the next operation
}

// sessions are the session and post pairs a leave of s names.
func (s *slot) sessions() []presence.Session {
	out := []presence.Session{{ID: s.id, Post: s.post}}
	if s.prev != "" && s.prev != s.post {
		out = append(out, presence.Session{ID: s.id, Post: s.prev})
	}
	return out
}

// storeStats are shared by every worker of a run.
type storeStats struct {
	ops  [numOps]atomic.Int64
	lat  [numOps]hist
	mu   sync.Mutex
	errs map[string]int
}

func runStore(ctx context.Context, o options, out io.Writer) (storeResult, error) {
	res := storeResult{prefix: "loadgen:" + randomHex() + ":", errors: map[string]int{}, leaveErrs: map[string]int{}}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	// Reading Redis's CPU after the run and leaving every session must
	// happen even when -timeout or an interrupt ended the run.
	final, cancelFinal := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelFinal()

	log := zap.NewNop()
	conn, kind := redisstore.Connection{URL: o.storeRedis}, "one node"
	if len(o.storeCluster) > 0 {
		conn, kind = redisstore.Connection{Cluster: o.storeCluster}, "cluster"
		if err := checkClusterNodes(ctx, o.storeCluster); err != nil {
			return res, err
		}
	}
	rdb, err := redisstore.Connect(conn, log)
	if err != nil {
		return res, err
	}
	defer rdb.Close()
	// Views counters go a minute after the run rather than the month an app
	// server keeps them; setting their lifetime costs the same either way.
	st := redisstore.New(rdb, redisstore.Config{Prefix: res.prefix, TTL: time.Minute, ViewsTTL: time.Minute}, log)
	if err := st.LoadScripts(ctx); err != nil {
		return res, err
	}
	before, err := redisCPU(ctx, rdb)
	if err != nil {
		return res, fmt.Errorf("read Redis CPU: %w", err)
	}
	fmt.Fprintf(out, "store: %s (%s), %d workers x %d sessions over %d posts for %s, keys %s*\n",
		redisstore.Addr(rdb), kind, o.workers, o.sessions, o.posts, o.duration, res.prefix)

	stats := &storeStats{errs: res.errors}
	workers := make([][]slot, o.workers)
	cpu0 := processCPU()
	start := time.Now()
	end := start.Add(o.duration)
	var wg sync.WaitGroup
	for w := range workers {
		workers[w] = make([]slot, o.sessions)
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(ctx, st, o.posts, end, workers[w], stats)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	client := processCPU() - cpu0
	after, err := redisCPU(final, rdb)
	if err != nil {
		fmt.Fprintf(out, "read Redis CPU after the run: %v\n", err)
	}

	var total int64
	var rates []string
	for k := range numOps {
		res.ops[k] = stats.ops[k].Load()
		total += res.ops[k]
		rates = append(rates, fmt.Sprintf("%s %.0f/s", opNames[k], float64(res.ops[k])/wall.Seconds()))
	}
	fmt.Fprintf(out, "ran %s: %d ops, %.0f/s (%s); errors %v\n",
		wall.Round(time.Millisecond), total, float64(total)/wall.Seconds(), strings.Join(rates, ", "), res.errors)
	for k := range numOps {
		if h := &stats.lat[k]; h.count() > 0 {
			fmt.Fprintf(out, "%s latency: p50 %s p99 %s max %s\n", opNames[k], h.quantile(50), h.quantile(99), h.maximum())
		}
	}
	if err == nil {
		res.primaries = printRedisCPU(out, before, after, wall, total)
	}
	fmt.Fprintf(out, "loadgen cpu: %.2fs (%.0f%% of a core, %d cores)%s\n",
		client.Seconds(), 100*client.Seconds()/wall.Seconds(), runtime.NumCPU(), perOp(client, total))

	leaveStart := time.Now()
	res.left = leaveAll(final, st, workers, res.leaveErrs)
	fmt.Fprintf(out, "left %d sessions in %s; errors %v\n", res.left, time.Since(leaveStart).Round(time.Millisecond), res.leaveErrs)
	return res, nil
}

// work cycles through slots until end, each session viewing a post, moving
// to another and leaving, so the three kinds come one to one to one.
func work(ctx context.Context, st *redisstore.Store, posts int, end time.Time, slots []slot, stats *storeStats) {
	for i := 0; ctx.Err() == nil && time.Now().Before(end); i = (i + 1) % len(slots) {
		s := &slots[i]
		kind := s.next
		var err error
		t0 := time.Now()
		switch kind {
		case opView:
			s.id, s.post = presence.NewSessionID(), post(mrand.IntN(posts))
			_, err = st.View(ctx, presence.Session{ID: s.id, Post: s.post}, "", true)
		case opMove:
			to := s.post
			if posts > 1 {
				to = post((postIndex(s.post) + 1 + mrand.IntN(posts-1)) % posts)
			}
			s.prev, s.post = s.post, to
			_, err = st.View(ctx, presence.Session{ID: s.id, Post: to}, s.prev, true)
		case opLeave:
			err = st.Leave(ctx, s.sessions()...)
		}
		lat := time.Since(t0)
		if err != nil {
			stats.mu.Lock()
			stats.errs[classify(err)]++
			stats.mu.Unlock()
			// Whether the call took effect is unknown: leave the session
			// from wherever it may be, and that until a leave succeeds.
			s.next = opLeave
			continue
		}
		stats.ops[kind].Add(1)
		stats.lat[kind].add(lat)
		s.prev = ""
		if s.next = kind + 1; s.next == numOps {
			s.next, s.post = opView, ""
		}
	}
}

func post(n int) presence.PostID { return presence.PostID("p" + strconv.Itoa(n)) }

func postIndex(p presence.PostID) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(string(p), "p"))
	return n
}

// leaveAll leaves every session still on a post, a batch per call, and
// returns how many it left; failures go to errs by cause.
func leaveAll(ctx context.Context, st *redisstore.Store, workers [][]slot, errs map[string]int) int {
	var batch []presence.Session
	left := 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := st.Leave(ctx, batch...); err != nil {
			errs[classify(err)]++
		}
		batch = batch[:0]
	}
	for _, slots := range workers {
		for i := range slots {
			if slots[i].post == "" {
				continue
			}
			left++
			batch = append(batch, slots[i].sessions()...)
			if len(batch) >= 1000 {
				flush()
			}
		}
	}
	flush()
	return left
}

// checkClusterNodes refuses a cluster that names a node off loopback: the
// client dials the nodes the cluster names, not only the seeds given. It
// asks the first seed that answers.
func checkClusterNodes(ctx context.Context, seeds []string) error {
	var last error
	for _, seed := range seeds {
		c := redis.NewClient(&redis.Options{Addr: seed, MaxRetries: -1})
		ranges, err := c.ClusterSlots(ctx).Result()
		c.Close()
		if err != nil {
			last = fmt.Errorf("CLUSTER SLOTS on %s: %w", seed, err)
			continue
		}
		for _, r := range ranges {
			for _, n := range r.Nodes {
				addr := n.Addr
				// An empty host is the node answering, whose address is
				// the seed's.
				if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
					seedHost, _, _ := net.SplitHostPort(seed)
					addr = net.JoinHostPort(seedHost, port)
				}
				if err := checkLoopback("-store-cluster node", addr); err != nil {
					return fmt.Errorf("%w (announced by %s)", err, seed)
				}
			}
		}
		return nil
	}
	return last
}

// cpuSample is one primary's INFO: CPU seconds used so far and scripts run.
type cpuSample struct {
	cpu     float64
	scripts int64
}

// redisCPU reads INFO cpu and commandstats of the node, or of every primary
// of a cluster, by address.
func redisCPU(ctx context.Context, rdb redis.UniversalClient) (map[string]cpuSample, error) {
	out := map[string]cpuSample{}
	var mu sync.Mutex
	read := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "cpu", "commandstats").Result()
		if err != nil {
			return fmt.Errorf("%s: %w", c.Options().Addr, err)
		}
		s, err := parseInfo(info)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Options().Addr, err)
		}
		mu.Lock()
		defer mu.Unlock()
		out[c.Options().Addr] = s
		return nil
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		return out, c.ForEachMaster(ctx, read)
	case *redis.Client:
		return out, read(ctx, c)
	}
	return nil, fmt.Errorf("cannot read the CPU of a %T", rdb)
}

// parseInfo reads used_cpu_sys, used_cpu_user and the calls of EVALSHA and
// EVAL (the store's scripts fall back to EVAL) from INFO's text.
func parseInfo(info string) (cpuSample, error) {
	var s cpuSample
	found := 0
	for _, line := range strings.Split(info, "\n") {
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch key {
		case "used_cpu_sys", "used_cpu_user":
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return s, fmt.Errorf("INFO %s: %w", key, err)
			}
			s.cpu += v
			found++
		case "cmdstat_evalsha", "cmdstat_eval":
			calls, _, _ := strings.Cut(strings.TrimPrefix(val, "calls="), ",")
			n, err := strconv.ParseInt(calls, 10, 64)
			if err != nil {
				return s, fmt.Errorf("INFO %s: %w", key, err)
			}
			s.scripts += n
		}
	}
	if found != 2 {
		return s, errors.New("INFO has no used_cpu_sys and used_cpu_user")
	}
	return s, nil
}

// printRedisCPU prints each primary's CPU and share of the scripts run
// between the samples, then their sum per operation; it returns how many
// primaries it printed. CPU and scripts are the node's: other clients'
// work during the run counts too.
func printRedisCPU(out io.Writer, before, after map[string]cpuSample, wall time.Duration, ops int64) int {
	var cpu float64
	var scripts int64
	for addr, a := range after {
		if b, ok := before[addr]; ok {
			scripts += a.scripts - b.scripts
		}
	}
	addrs := slices.Sorted(maps.Keys(after))
	for _, addr := range addrs {
		a := after[addr]
		b, ok := before[addr]
		if !ok {
			// A primary promoted or added during the run.
			fmt.Fprintf(out, "primary %s: not a primary when the run started\n", addr)
			continue
		}
		used := a.cpu - b.cpu
		cpu += used
		share := ""
		if scripts > 0 && len(after) > 1 {
			share = fmt.Sprintf(", %.0f%% of scripts", 100*float64(a.scripts-b.scripts)/float64(scripts))
		}
		fmt.Fprintf(out, "primary %s: cpu %.2fs (%.0f%% of a core), %d scripts%s\n",
			addr, used, 100*used/wall.Seconds(), a.scripts-b.scripts, share)
	}
	d := time.Duration(cpu * float64(time.Second))
	primaries := "primaries"
	if len(addrs) == 1 {
		primaries = "primary"
	}
	fmt.Fprintf(out, "redis cpu: %.2fs over %d %s%s\n", cpu, len(addrs), primaries, perOp(d, ops))
	return len(addrs)
}

func perOp(cpu time.Duration, ops int64) string {
	if ops == 0 {
		return ""
	}
	return fmt.Sprintf(", %.1fµs per op", float64(cpu.Microseconds())/float64(ops))
}

// processCPU is the user and system CPU this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func randomHex() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hist counts latencies in buckets at most 1/32 of their value wide, so a
// run of any length holds a few kilobytes rather than every sample. Values
// below 64ns have a bucket each; above, each power of two is cut in 32.
// Workers add to it concurrently.
type hist struct {
	buckets [histBuckets]atomic.Int64
	max     atomic.Int64
}

const (
	histSub     = 32
	histBuckets = (63-6)*histSub + 2*histSub // the largest Duration's is the last
)

func histIndex(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	s := bits.Len64(v) - bits.Len64(2*histSub-1)
	return s*histSub + int(v>>s)
}

// histMid is the middle of bucket i.
func histMid(i int) time.Duration {
	if i < 2*histSub {
		return time.Duration(i)
	}
	s := i/histSub - 1
	return time.Duration((i-s*histSub)<<s + (1<<s)/2)
}

func (h *hist) add(d time.Duration) {
	h.buckets[histIndex(uint64(max(d, 0)))].Add(1)
	for m := h.max.Load(); int64(d) > m; m = h.max.Load() {
		if h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (h *hist) count() int64 {
	var n int64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}

// quantile is the p-th percentile, taken as pct takes it from sorted
// samples; call it once every add is done.
func (h *hist) quantile(p int) time.Duration {
	rank := (h.count() - 1) * int64(p) / 100
	var seen int64
	for i := range h.buckets {
		if seen += h.buckets[i].Load(); seen > rank {
			return histMid(i).Round(time.Microsecond)
		}
	}
	return h.maximum()
}

func (h *hist) maximum() time.Duration {
	return time.Duration(h.max.Load()).Round(time.Microsecond)
}

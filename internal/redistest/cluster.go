package redistest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster on loopback whose nodes are all stopped when
// the test ends. Its methods are meant to be called from the test's own
// goroutine.
type Cluster struct {
	// Primaries are the nodes that own slots, or that AddPrimary added to
	// receive some.
	Primaries []*Server
	// Replicas[i] replicates Primaries[i]; it is empty for a cluster
	// started without replicas, and shorter than Primaries once AddPrimary
	// has run.
	Replicas []*Server

	all   []*Server // every node started, in start order
	extra []string  // every node's arguments beyond the cluster settings
	cli   string    // redis-cli's path
	id    map[*Server]string
	conn  map[*Server]*redis.Client
}

// StartCluster starts a cluster of primaries nodes (at least 3, as redis-cli
// requires), each with a replica when withReplicas, with extra on every
// node's command line. The nodes declare a silent peer failed after 1s, so
// a killed primary's replica takes over within a few seconds. It returns
// once every node reports the cluster ok, all agree on who owns which slot
// and replicates whom, and every replica is in sync.
func StartCluster(tb testing.TB, primaries int, withReplicas bool, extra ...string) *Cluster {
	tb.Helper()
	if primaries < 3 {
		tb.Fatalf("StartCluster(%d): redis-cli --cluster create needs at least 3 primaries", primaries)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatal("redis-cli not found: run scripts/test.sh (it installs redis-tools)")
	}
	c := &Cluster{extra: extra, cli: cli, id: map[*Server]string{}, conn: map[*Server]*redis.Client{}}
	n, replicas := primaries, "0"
	if withReplicas {
		n, replicas = 2*primaries, "1"
	}
	for range n {
		c.startNode(tb)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	c.run(tb, append(args, "--cluster-replicas", replicas, "--cluster-yes")...)
	view := c.settle(tb, "the new cluster ok and agreed")

	// With replicas, redis-cli picks the roles, so read them back.
	for _, s := range c.all {
		if view[c.id[s]].primary {
			c.Primaries = append(c.Primaries, s)
		}
	}
	if withReplicas {
		for _, p := range c.Primaries {
			i := slices.IndexFunc(c.all, func(s *Server) bool { return view[c.id[s]].of == c.id[p] })
			if i < 0 {
				tb.Fatalf("primary %s got no replica:\n%s", p.Addr, view)
			}
			c.Replicas = append(c.Replicas, c.all[i])
		}
		c.settle(tb, "the replicas in sync")
	}
	if len(c.Primaries) != primaries || len(c.Replicas)+len(c.Primaries) != n {
		tb.Fatalf("asked for %d primaries (replicas %v), got:\n%s", primaries, withReplicas, view)
	}
	return c
}

// Addrs returns the host:port of every node started, killed ones included,
// for use as a client's seeds.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.all))
	for i, s := range c.all {
		addrs[i] = s.Addr
	}
	return addrs
}

// Client returns a new cluster client seeded with every running node,
// closed at the end of tb.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	var seeds []string
	for _, s := range c.all {
		// A dead seed costs the client failed dials, each one logged.
		if alive(s) {
			seeds = append(seeds, s.Addr)
		}
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// AddPrimary starts another node with the cluster's settings, joins it to
// the cluster and returns it once every node knows it. It owns no slots
// until Rebalance or MoveSlots gives it some.
func (c *Cluster) AddPrimary(tb testing.TB) *Server {
	tb.Helper()
	seed := c.live(tb)
	s := c.startNode(tb)
	c.run(tb, "--cluster", "add-node", s.Addr, seed.Addr)
	c.Primaries = append(c.Primaries, s)
	c.settle(tb, "every node to know "+s.Addr)
	return s
}

// Rebalance spreads the slots evenly over the primaries, empty ones
// included, and returns once the cluster is ok and agreed again. redis-cli
// migrates the slots live, key by key, so clients meanwhile meet ASK and
// TRYAGAIN redirections.
func (c *Cluster) Rebalance(tb testing.TB) {
	tb.Helper()
	c.run(tb, "--cluster", "rebalance", c.live(tb).Addr, "--cluster-use-empty-masters")
	c.settle(tb, "the cluster ok and agreed after rebalancing")
}

// MoveSlots migrates n slots, taken from every other primary, with their
// keys to the primary to, and returns once the cluster is ok and agreed
// again.
func (c *Cluster) MoveSlots(tb testing.TB, to *Server, n int) {
	tb.Helper()
	id, ok := c.id[to]
	if !ok {
		tb.Fatalf("MoveSlots: %s is not a node of the cluster", to.Addr)
	}
	what := fmt.Sprintf("the cluster ok and agreed after moving %d slots to %s", n, to.Addr)
	before := c.settle(tb, what)
	c.reshard(tb, "all", id, n)
	after := c.settle(tb, what)
	// redis-cli splits n over the sources rounding down all shares but the
	// first, so it can move a slot or two less; the largest source makes up
	// the rest.
	if short := n - (after.slotCount(id) - before.slotCount(id)); short > 0 {
		from := ""
		for other, node := range after {
			if other != id && node.primary && !node.failed && (from == "" || after.slotCount(other) > after.slotCount(from)) {
				from = other
			}
		}
		c.reshard(tb, from, id, short)
		c.settle(tb, what)
	}
}

// MigrateSlot moves the slot of key to the primary to as redis-cli does,
// but one key per MIGRATE with a pause between keys, so that clients
// working on the slot meet it split between two nodes (ASK, TRYAGAIN) for
// a while: the slot is marked migrating and importing, its keys move one by
// one, then every node is told its new owner. It returns once the cluster
// agrees again.
func (c *Cluster) MigrateSlot(tb testing.TB, key string, to *Server, pause time.Duration) {
	tb.Helper()
	c.BeginMigration(tb, key, to)(pause)
}

// BeginMigration marks the slot of key migrating from its primary to to,
// and importing on to, and moves no key: the slot stays in that state, in
// which Redis checks every key a command or script touches, until the
// returned function moves the keys (with pause between them) and hands the
// slot over.
func (c *Cluster) BeginMigration(tb testing.TB, key string, to *Server) func(pause time.Duration) {
	tb.Helper()
	ctx := context.Background()
	from, err := c.PrimaryOf(ctx, key)
	if err != nil {
		tb.Fatalf("MigrateSlot: %v", err)
	}
	if from == to {
		return func(time.Duration) {}
	}
	src, dst := c.conn[from], c.conn[to]
	slot, err := src.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		tb.Fatalf("MigrateSlot: %v", err)
	}
	must := func(what string, err error) {
		if err != nil {
			tb.Fatalf("MigrateSlot %d from %s to %s: %s: %v", slot, from.Addr, to.Addr, what, err)
		}
	}
	must("importing", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", c.id[from]).Err())
	must("migrating", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", c.id[to]).Err())
	return func(pause time.Duration) {
		tb.Helper()
		host, port, _ := net.SplitHostPort(to.Addr)
		for moved := 0; ; moved++ {
			keys, err := src.ClusterGetKeysInSlot(ctx, int(slot), 1).Result()
			must("getkeysinslot", err)
			if len(keys) == 0 {
				break
			}
			if moved > 1_000_000 {
				tb.Fatalf("MigrateSlot %d: keys keep coming", slot)
			}
			must("migrate "+keys[0], src.Do(ctx, "MIGRATE", host, port, "", 0, 5000, "KEYS", keys[0]).Err())
			time.Sleep(pause) // the pause is the point: clients meet a split slot
		}
		// The new owner first, then the old, then the rest, as redis-cli does.
		must("node on target", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", c.id[to]).Err())
		must("node on source", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", c.id[to]).Err())
		for _, n := range c.all {
			if n != from && n != to && alive(n) {
				_ = c.conn[n].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", c.id[to]).Err()
			}
		}
		c.settle(tb, fmt.Sprintf("the cluster agreed after moving slot %d to %s", slot, to.Addr))
	}
}

func (c *Cluster) reshard(tb testing.TB, from, to string, n int) {
	tb.Helper()
	c.run(tb, "--cluster", "reshard", c.live(tb).Addr, "--cluster-from", from, "--cluster-to", to,
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes")
}

// WaitFailover waits, for at most 30s, until the surviving nodes have
// declared killed failed, promoted its replica if it was a primary, and
// agree that the cluster is ok without it. Kill it first. The promoted
// replica then takes killed's place in Primaries and killed moves to
// Replicas, which is what it becomes if it is restarted.
func (c *Cluster) WaitFailover(tb testing.TB, killed *Server) {
	tb.Helper()
	id, ok := c.id[killed]
	if !ok {
		tb.Fatalf("WaitFailover: %s is not a node of the cluster", killed.Addr)
	}
	if alive(killed) {
		tb.Fatalf("WaitFailover: %s is still running: Kill it first", killed.Addr)
	}
	i := slices.Index(c.Primaries, killed)
	var heir *Server
	if i >= 0 {
		if i >= len(c.Replicas) || !alive(c.Replicas[i]) {
			tb.Fatalf("WaitFailover: primary %s has no live replica to take over", killed.Addr)
		}
		heir = c.Replicas[i]
	}
	c.await(tb, "failover of "+killed.Addr, func(ctx context.Context) error {
		view, err := c.agreed(ctx)
		if err != nil {
			return err
		}
		if !view[id].failed {
			return fmt.Errorf("%s not flagged failed yet", killed.Addr)
		}
		if heir != nil && !view[c.id[heir]].primary {
			return fmt.Errorf("replica %s not promoted yet", heir.Addr)
		}
		return nil
	})
	if heir != nil {
		c.Primaries[i], c.Replicas[i] = heir, killed
	}
}

// PrimaryOf returns the primary that owns key's slot, as the first node
// that answers sees it.
func (c *Cluster) PrimaryOf(ctx context.Context, key string) (*Server, error) {
	var last error = errors.New("no live node")
	for _, s := range c.all {
		if !alive(s) {
			continue
		}
		rdb := c.conn[s]
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			last = err
			continue
		}
		ranges, err := rdb.ClusterSlots(ctx).Result()
		if err != nil {
			last = err
			continue
		}
		for _, r := range ranges {
			if int64(r.Start) > slot || slot > int64(r.End) || len(r.Nodes) == 0 {
				continue
			}
			for _, n := range c.all {
				if n.Addr == r.Nodes[0].Addr {
					return n, nil
				}
			}
			return nil, fmt.Errorf("slot %d of %q is owned by %s, not a node of the cluster", slot, key, r.Nodes[0].Addr)
		}
		return nil, fmt.Errorf("slot %d of %q has no owner according to %s", slot, key, s.Addr)
	}
	return nil, last
}

// startNode starts a cluster-enabled node with its own nodes.conf, records
// its node id and stops it when tb ends.
func (c *Cluster) startNode(tb testing.TB) *Server {
	tb.Helper()
	dir := tb.TempDir()
	conf := filepath.Join(dir, "nodes.conf")
	args := append([]string{
		"--cluster-enabled", "yes", "--cluster-config-file", conf, "--cluster-node-timeout", "1000",
		// A primary otherwise holds a replica's first sync back 5s in case
		// more replicas come to share it.
		"--repl-diskless-sync-delay", "0",
	}, c.extra...)
	var s *Server
	var err error
	// A port or its bus port can be taken between choosing and binding;
	// try a few.
	for range 5 {
		var port int
		if port, err = clusterPort(); err != nil {
			tb.Fatal(err)
		}
		var cmd *exec.Cmd
		if cmd, err = launch(dir, strconv.Itoa(port), args); err != nil {
			tb.Fatal(err)
		}
		s = &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, dir: dir, extra: args}
		if err = s.wait(5*time.Second, false); err == nil {
			break
		}
		s.Kill()
		// The node may have written its identity for the old port.
		_ = os.Remove(conf)
	}
	if err != nil {
		tb.Fatalf("start cluster node: %v (log in %s)", err, dir)
	}
	tb.Cleanup(s.Kill)
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: time.Second})
	tb.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := rdb.ClusterMyID(ctx).Result()
	if err != nil {
		tb.Fatalf("CLUSTER MYID on %s: %v", s.Addr, err)
	}
	c.all = append(c.all, s)
	c.id[s], c.conn[s] = id, rdb
	return s
}

// clusterPort returns a port that is free and whose cluster bus port,
// 10000 above it, is free too; the kernel's free-port pick cannot promise
// the second, and picks above 55535 leave no room for it.
func clusterPort() (int, error) {
	for range 100 {
		port := 20000 + rand.IntN(25000)
		if portFree(port) && portFree(port+10000) {
			return port, nil
		}
	}
	return 0, errors.New("no free port pair (port, port+10000) in 20000-55000")
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// run runs redis-cli with args and fails tb, with everything it printed,
// if it fails.
func (c *Cluster) run(tb testing.TB, args ...string) {
	tb.Helper()
	// redis-cli waits forever on a cluster that never converges.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// live returns a running node for redis-cli to reach the cluster through.
func (c *Cluster) live(tb testing.TB) *Server {
	tb.Helper()
	for _, s := range c.all {
		if alive(s) {
			return s
		}
	}
	tb.Fatal("no cluster node is running")
	return nil
}

// alive tells whether s runs; only Kill waits for the process, so a node
// that died by itself still counts, and then fails the next check.
func alive(s *Server) bool { return s.cmd != nil && s.cmd.ProcessState == nil }

// settle waits until the running nodes report the cluster ok and agree on
// it, and every running replica is in sync, and returns their view.
func (c *Cluster) settle(tb testing.TB, what string) clusterView {
	tb.Helper()
	var view clusterView
	c.await(tb, what, func(ctx context.Context) error {
		var err error
		if view, err = c.agreed(ctx); err != nil {
			return err
		}
		for _, r := range c.Replicas {
			if !alive(r) {
				continue
			}
			info, err := c.conn[r].Info(ctx, "replication").Result()
			if err != nil {
				return fmt.Errorf("INFO on %s: %w", r.Addr, err)
			}
			if !containsLine(info, "master_link_status:up") {
				return fmt.Errorf("replica %s not in sync", r.Addr)
			}
		}
		return nil
	})
	return view
}

// agreed returns the cluster as the running nodes see it if each reports
// it ok with every slot served, knows exactly the nodes started, sees no
// slot migrating, and all see the same owners and replicas.
func (c *Cluster) agreed(ctx context.Context) (clusterView, error) {
	var first clusterView
	var firstAddr string
	for _, s := range c.all {
		if !alive(s) {
			continue
		}
		rdb := c.conn[s]
		info, err := rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("CLUSTER INFO on %s: %w", s.Addr, err)
		}
		if !containsLine(info, "cluster_state:ok") || !containsLine(info, "cluster_slots_ok:16384") {
			return nil, fmt.Errorf("cluster not ok on %s:\n%s", s.Addr, info)
		}
		nodes, err := rdb.ClusterNodes(ctx).Result()
		if err != nil {
			return nil, fmt.Errorf("CLUSTER NODES on %s: %w", s.Addr, err)
		}
		view, err := parseNodes(nodes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Addr, err)
		}
		for n, id := range c.id {
			if _, ok := view[id]; !ok {
				return nil, fmt.Errorf("%s does not know %s yet", s.Addr, n.Addr)
			}
		}
		if len(view) != len(c.id) {
			return nil, fmt.Errorf("%s knows nodes not started here:\n%s", s.Addr, nodes)
		}
		if first == nil {
			first, firstAddr = view, s.Addr
		} else if a, b := first.String(), view.String(); a != b {
			return nil, fmt.Errorf("%s and %s disagree:\n%s\nversus\n%s", firstAddr, s.Addr, a, b)
		}
	}
	if first == nil {
		return nil, errors.New("no cluster node is running")
	}
	return first, nil
}

// clusterView is one node's CLUSTER NODES by node id, reduced to what all
// nodes must agree on.
type clusterView map[string]clusterNode

type clusterNode struct {
	addr    string
	primary bool
	of      string // the primary's node id, for a replica
	failed  bool   // flagged fail by a majority, not just suspected (fail?)
	slots   string
}

func (v clusterView) String() string {
	lines := make([]string, 0, len(v))
	for id, n := range v {
		lines = append(lines, fmt.Sprintf("%s %s primary=%v of=%s failed=%v slots=%s", id, n.addr, n.primary, n.of, n.failed, n.slots))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// slotCount counts the slots id owns.
func (v clusterView) slotCount(id string) int {
	n := 0
	for _, r := range strings.Fields(v[id].slots) {
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, _ := strconv.Atoi(lo)
		b, _ := strconv.Atoi(hi)
		n += b - a + 1
	}
	return n
}

// parseNodes reads CLUSTER NODES: one line per node of
// "id ip:port@bus flags primary-id ping pong epoch link slot...".
func parseNodes(text string) (clusterView, error) {
	view := clusterView{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		n := clusterNode{
			addr:    addr,
			primary: slices.Contains(flags, "master"),
			failed:  slices.Contains(flags, "fail"),
			slots:   strings.Join(f[8:], " "),
		}
		if f[3] != "-" {
			n.of = f[3]
		}
		// Migrations show as [slot->-id] on the source, [slot-<-id] on the
		// target.
		if strings.Contains(n.slots, "[") {
			return nil, fmt.Errorf("slot migration in progress: %s", line)
		}
		view[f[0]] = n
	}
	return view, nil
}

// await polls cond, which reads the cluster's state that cannot be
// awaited, until it returns nil, for at most 30s. Unlike wait it fails tb
// with cond's last complaint: a cluster that does not converge is hard to
// diagnose from "not within 30s" alone.
func (c *Cluster) await(tb testing.TB, what string, cond func(ctx context.Context) error) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := cond(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no %s within 30s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

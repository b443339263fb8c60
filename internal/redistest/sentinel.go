package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a Redis Sentinel topology on loopback: a primary, a replica
// of it and three sentinels that monitor it as Master, every one stopped
// when the test ends.
type Sentinel struct {
	Primary, Replica *Server
	// Addrs are the sentinels' host:port.
	Addrs []string
	// Master is the name the sentinels know the primary by.
	Master string
}

// StartSentinel starts the topology and returns once the replica is in
// sync and every sentinel knows the replica and the other sentinels, so
// that killing the primary starts a failover. The sentinels declare a
// master down after 1s without an answer.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	s := &Sentinel{Primary: Start(tb), Master: "presence"}
	_, pport, _ := net.SplitHostPort(s.Primary.Addr)
	s.Replica = Start(tb, "--replicaof", "127.0.0.1", pport)
	rdb := redis.NewClient(&redis.Options{Addr: s.Replica.Addr})
	defer rdb.Close()
	wait(tb, "the replica in sync", func(ctx context.Context) bool {
		info, _ := rdb.Info(ctx, "replication").Result()
		return containsLine(info, "master_link_status:up")
	})
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatal("redis-server not found: run scripts/test.sh (it installs it)")
	}
	for range 3 {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		dir := tb.TempDir()
		// Sentinels rewrite their config file, so each gets its own.
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n", port, dir, filepath.Join(dir, "sentinel.log")) +
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %s 2\n", s.Master, pport) +
			fmt.Sprintf("sentinel down-after-milliseconds %s 1000\n", s.Master) +
			fmt.Sprintf("sentinel failover-timeout %s 5000\n", s.Master) +
			fmt.Sprintf("sentinel parallel-syncs %s 1\n", s.Master)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(bin, conf, "--sentinel")
		if err := cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		s.Addrs = append(s.Addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	for i, addr := range s.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
		wait(tb, fmt.Sprintf("sentinel %d to know the replica and the other sentinels", i), func(ctx context.Context) bool {
			replicas, err1 := sc.Replicas(ctx, s.Master).Result()
			sentinels, err2 := sc.Sentinels(ctx, s.Master).Result()
			return err1 == nil && err2 == nil && len(replicas) == 1 && len(sentinels) == 2
		})
		sc.Close()
	}
	return s
}

// MasterAddr asks the first sentinel that answers for the master's address.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var last error
	for _, addr := range s.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
		res, err := sc.GetMasterAddrByName(ctx, s.Master).Result()
		sc.Close()
		if err == nil && len(res) == 2 {
			return net.JoinHostPort(res[0], res[1]), nil
		}
		last = err
	}
	return "", last
}

// wait polls cond, which reads a server's state that cannot be awaited,
// until it holds, for at most 30s.
func wait(tb testing.TB, what string, cond func(ctx context.Context) bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ok := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no %s within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.TrimSuffix(l, "\r") == line {
			return true
		}
	}
	return false
}

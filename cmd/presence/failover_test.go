package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/proctest"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// TestE2E_SentinelFailover runs two app servers and gc in Sentinel mode
// under 1,000 live sessions and kills the primary with SIGKILL.
func TestE2E_SentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t)
	prefix := redistest.Prefix()
	testFailover(t, failover{
		mode:  "sentinel",
		named: s.Addrs[0],
		keys:  redisstore.NewKeys(prefix),
		env: []string{
			"PRESENCE_REDIS_SENTINELS=" + strings.Join(s.Addrs, ","),
			"PRESENCE_REDIS_MASTER=" + s.Master,
			"PRESENCE_KEY_PREFIX=" + prefix,
		},
		before: func() redis.UniversalClient { return s.Primary.Client(t) },
		kill: func(ctx context.Context) {
			s.Primary.Kill()
			waitUntil(t, 30*time.Second, "the sentinels to promote the replica", func() bool {
				addr, err := s.MasterAddr(ctx)
				return err == nil && addr == s.Replica.Addr
			})
		},
		after: func() redis.UniversalClient { return s.Replica.Client(t) },
	})
}

// TestE2E_ClusterFailover does the same on a Redis Cluster of three
// primaries with a replica each: the primary killed is the one that holds
// the first post, so some partitions lose their node and the rest carry on.
func TestE2E_ClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t, 3, true)
	prefix := redistest.Prefix()
	keys := redisstore.NewClusterKeys(prefix)
	// A client of its own for each look after the kill: one made before
	// would spend its first seconds on the dead primary's slots (go-redis
	// retries there until it reads the slot map again), and the test would
	// time its own client rather than the service.
	fresh := func() redis.UniversalClient {
		rdb, err := redisstore.Connect(redisstore.Connection{Cluster: c.Addrs()}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rdb.Close() })
		return rdb
	}
	testFailover(t, failover{
		mode:  "cluster",
		named: c.Addrs()[0],
		keys:  keys,
		env: []string{
			"PRESENCE_REDIS_CLUSTER=" + strings.Join(c.Addrs(), ","),
			"PRESENCE_KEY_PREFIX=" + prefix,
		},
		before: fresh,
		kill: func(ctx context.Context) {
			victim, err := c.PrimaryOf(ctx, keys.Viewers("s0"))
			if err != nil {
				t.Fatal(err)
			}
			// What the primary acknowledged reaches its replica first, as
			// in a failover that loses nothing; the refresh mends the rest.
			victim.Client(t).Do(ctx, "WAIT", 1, 1000)
			victim.Kill()
			c.WaitFailover(t, victim)
		},
		after: fresh,
	})
}

// failover is one topology for testFailover.
type failover struct {
	mode, named string // the mode and a node the start-up line must name
	keys        redisstore.Keys
	env         []string
	// before gives a client that reads Redis until kill; after one that
	// reads it once kill returns, which is when the topology has a primary
	// again.
	before, after func() redis.UniversalClient
	kill          func(ctx context.Context)
}

// testFailover runs two app servers and gc under 1,000 live sessions and
// kills a primary with SIGKILL. They must follow the promoted replica by
// themselves: every session registered again, every tab's count, SCARD on
// the new primary and REST on both servers right, and gc check clean.
func testFailover(t *testing.T, f failover) {
	const tabs, posts = 1000, 20
	reserveFiles(t, 2*tabs) // the app servers run in this process: both ends
	redisEnv := append(f.env, "PRESENCE_SESSION_TTL=3s")
	var addrs []string
	for i := range 2 {
		p := runApp(t, fmt.Sprint("app", i), append(redisEnv,
			"PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_COALESCE=100ms", "PRESENCE_MAX_CONNS=0", "PRESENCE_MAX_CONNS_PER_IP=0")...)
		addrs = append(addrs, p.addr(t))
		if start := p.startLine(t); !strings.Contains(start, `"mode":"`+f.mode+`"`) || !strings.Contains(start, f.named) {
			t.Errorf("start-up line %s does not name the mode and the nodes", start)
		}
	}
	startProc(t, "gc", gcBin, append(redisEnv, "PRESENCE_GC_ADDR=127.0.0.1:0", "PRESENCE_GC_POLL=500ms")...)

	all := openTabs(t, tabs, func(i int) (string, string) { return addrs[i%2], fmt.Sprintf("s%d", i%posts) })
	ctx := context.Background()
	viewers := func(rdb redis.UniversalClient) (sum int64, problem string) {
		want := int64(tabs / posts)
		for i := range posts {
			post := presence.PostID(fmt.Sprintf("s%d", i))
			n, err := rdb.SCard(ctx, f.keys.PostViewers(post)).Result()
			sum += n
			if (n != want || err != nil) && problem == "" {
				problem = fmt.Sprintf("SCARD %s on the new primary = %d (%v)", post, n, err)
			}
		}
		return sum, problem
	}
	before := f.before()
	waitUntil(t, 30*time.Second, "1,000 sessions in Redis", func() bool {
		n, _ := viewers(before)
		return n == tabs
	})

	killed := time.Now()
	f.kill(ctx)
	promoted := time.Since(killed)

	want := int64(tabs / posts)
	after := f.after()
	healed := func() string {
		if _, problem := viewers(after); problem != "" {
			return problem
		}
		for i := range posts {
			post := fmt.Sprintf("s%d", i)
			for _, addr := range addrs {
				var body struct{ Viewers int64 }
				resp, err := http.Get("http://" + addr + "/v1/posts/" + post)
				if err != nil {
					return err.Error()
				}
				err = json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
				if err != nil || body.Viewers != want {
					return fmt.Sprintf("REST %s on %s = %d (%v)", post, addr, body.Viewers, err)
				}
			}
		}
		for _, tb := range all {
			tb.mu.Lock()
			last, closed := tb.last, !tb.closed.IsZero()
			tb.mu.Unlock()
			if closed || last != want {
				return fmt.Sprintf("a tab of %s shows %d (closed: %v)", tb.post, last, closed)
			}
		}
		cmd := exec.Command(gcBin, "check", "-grace", "1s")
		cmd.Env = append(proctest.Env(), redisEnv...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Sprintf("gc check: %v: %s", err, out)
		}
		return ""
	}
	var problem string
	// Generous: the failover itself takes about 2s, but the sessions the
	// replica lacks are registered again one script each, which on a
	// machine loaded by other tests took up to 11s for 1,000 sessions. The
	// times are logged; this is a bound on healing, not a speed target.
	for end := time.Now().Add(60 * time.Second); ; {
		if problem = healed(); problem == "" || time.Now().After(end) {
			break
		}
		if testing.Verbose() {
			t.Logf("%s after the kill: %s", time.Since(killed).Round(time.Millisecond), problem)
		}
		time.Sleep(100 * time.Millisecond) // polling state the test cannot await
	}
	if problem != "" {
		for _, addr := range addrs {
			t.Logf("%s: reregistrations %v, store errors %v, open %v", addr,
				metric(t, "http://"+addr+"/metrics", "presence_reregistrations_total"),
				metric(t, "http://"+addr+"/metrics", "presence_store_errors_total"),
				metric(t, "http://"+addr+"/metrics", "presence_connections_open"))
		}
		n, _ := viewers(after)
		t.Logf("after the failover: %d viewers in the posts' sets", n)
		t.Fatalf("not healed 60s after the failover: %s", problem)
	}
	t.Logf("%s: primary killed under %d sessions: a primary again after %s, everything right %s after the kill",
		f.mode, tabs, promoted.Round(10*time.Millisecond), time.Since(killed).Round(10*time.Millisecond))
}

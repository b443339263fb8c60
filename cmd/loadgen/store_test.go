package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

const testPosts = 20

func TestStoreOneNode(t *testing.T) {
	srv := redistest.Start(t)
	res := runStoreTest(t, "-store-redis", srv.URL())
	if res.primaries != 1 {
		t.Errorf("read the CPU of %d nodes, want 1", res.primaries)
	}
	var keys []string
	rdb := srv.Client(t)
	iter := rdb.Scan(t.Context(), 0, res.prefix+"*", 1000).Iterator()
	for iter.Next(t.Context()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	checkLeftKeys(t, redisstore.NewKeys(res.prefix), keys)
}

func TestStoreCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3, false)
	res := runStoreTest(t, "-store-cluster", strings.Join(c.Addrs(), ","))
	if res.primaries != 3 {
		t.Errorf("read the CPU of %d primaries, want 3", res.primaries)
	}
	var mu sync.Mutex
	var keys []string
	err := c.Client(t).ForEachMaster(t.Context(), func(ctx context.Context, node *redis.Client) error {
		iter := node.Scan(ctx, 0, res.prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			keys = append(keys, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	checkLeftKeys(t, redisstore.NewClusterKeys(res.prefix), keys)
}

// runStoreTest runs the store mode for a second against the Redis that
// args name and checks that it did every kind of operation without error.
func runStoreTest(t *testing.T, args ...string) storeResult {
	t.Helper()
	args = append(args, "-duration", "1s", "-timeout", "10s", "-workers", "8", "-sessions", "10", "-posts", strconv.Itoa(testPosts))
	o, err := parse(args)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := runStore(t.Context(), o, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range res.ops {
		if n == 0 {
			t.Errorf("no %s done", opNames[k])
		}
	}
	if len(res.errors) > 0 || len(res.leaveErrs) > 0 {
		t.Errorf("errors %v, leaving at the end %v", res.errors, res.leaveErrs)
	}
	for _, want := range []string{"view latency: p50 ", "redis cpu: ", "loadgen cpu: ", "left "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output has no %q", want)
		}
	}
	return res
}

// checkLeftKeys fails unless every key left is a post's views counter or a
// partition's seq: no session, viewers set or hash, or deadline is left.
func checkLeftKeys(t *testing.T, k redisstore.Keys, keys []string) {
	t.Helper()
	allowed := map[string]bool{}
	for i := range testPosts {
		p := presence.PostID("p" + strconv.Itoa(i))
		allowed[k.Views(p)], allowed[k.Seq(p)] = true, true
	}
	if len(keys) == 0 {
		t.Error("no keys at all: the views counters should be there")
	}
	for _, key := range keys {
		if !allowed[key] {
			t.Errorf("key %s left after the run", key)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error; "" for none
	}{
		{[]string{"-store-redis", "redis://127.0.0.1:6379/0"}, ""},
		{[]string{"-store-cluster", "127.0.0.1:7000, 127.0.0.1:7001"}, ""},
		{[]string{"-store-redis", "redis://10.0.0.1:6379/0"}, "-store-redis must be a loopback address"},
		{[]string{"-store-redis", "redis://localhost:6379/0"}, "-store-redis must be a loopback address"},
		{[]string{"-store-redis", "unix:///tmp/redis.sock"}, "-store-redis must be a loopback address"},
		{[]string{"-store-cluster", "127.0.0.1:7000,192.168.1.2:7001"}, "-store-cluster must be a loopback address"},
		{[]string{"-store-cluster", ","}, "names no node"},
		{[]string{"-store-redis", "redis://127.0.0.1:6379/0", "-store-cluster", "127.0.0.1:7000"}, "exclude each other"},
		{[]string{"-store-redis", "redis://127.0.0.1:6379/0", "-conns", "10"}, "-conns does not apply to the store mode"},
		{[]string{"-workers", "10"}, "-workers does not apply to the WebSocket mode"},
		{[]string{"-store-redis", "redis://127.0.0.1:6379/0", "-workers", "0"}, "-workers must be"},
		{[]string{"-store-redis", "redis://127.0.0.1:6379/0", "-workers", "4096", "-sessions", "10000"}, "at most 1000000"},
		// The WebSocket mode's flags.
		{[]string{"-server", "127.0.0.1:8080, 127.0.0.1:8081", "-redis", "127.0.0.1:6379", "-churn", "100", "-churn-for", "10s", "-probe", "-linger", "5s"}, ""},
		{[]string{"-server", "127.0.0.1:8080,10.0.0.2:8080"}, "-server must be a loopback address"},
		{[]string{"-server", " , "}, "names no server"},
		{[]string{"-redis", "192.168.1.2:6379"}, "-redis must be a loopback address"},
		{[]string{"-churn", "-1"}, "-churn must be"},
		{[]string{"-churn", "100", "-churn-for", "0s"}, "-churn must be"},
		{[]string{"-churn", "1001", "-churn-for", "10s"}, "-churn must be"},
		{[]string{"-churn", "9223372036854775807", "-churn-for", "10s"}, "-churn must be"},
		{[]string{"-store-redis", "redis://127.0.0.1:6379/0", "-churn", "10"}, "-churn does not apply to the store mode"},
	} {
		_, err := parse(tc.args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("parse(%q): %v", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("parse(%q): error %v, want one with %q", tc.args, err, tc.want)
		}
	}
}

func TestHist(t *testing.T) {
	var h hist
	samples := make([]time.Duration, 10000)
	for i := range samples {
		samples[i] = time.Duration(rand.Int64N(int64(50 * time.Millisecond)))
		h.add(samples[i])
	}
	slices.Sort(samples)
	for _, p := range []int{0, 50, 99, 100} {
		got, want := h.quantile(p), pct(samples, p)
		if d := got - want; d < -want/30-time.Microsecond || d > want/30+time.Microsecond {
			t.Errorf("p%d = %s, want %s within 1/32", p, got, want)
		}
	}
	if got, want := h.maximum(), samples[len(samples)-1].Round(time.Microsecond); got != want {
		t.Errorf("max = %s, want %s", got, want)
	}
	for _, v := range []uint64{0, 63, 64, 1 << 40, 1<<63 - 1} {
		if i := histIndex(v); i >= histBuckets || histMid(i) < 0 {
			t.Errorf("value %d: bucket %d of %d, middle %d", v, i, histBuckets, histMid(i))
		}
	}
}

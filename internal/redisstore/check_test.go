package redisstore

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redistest"
)

// TestStore_CheckFindsEveryDrift breaks each invariant by hand and expects
// Check to name exactly that, Repair to fix what gc would, and nothing else.
func TestStore_CheckFindsEveryDrift(t *testing.T) {
	s, rdb := newStore(t, time.Minute)
	ctx := context.Background()
	k := s.keys
	view := func(sid, post string) {
		if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(sid), Post: presence.PostID(post)}, "", true); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		view(fmt.Sprint("ok", i), "a")
	}
	r, err := s.Check(ctx, time.Second)
	if err != nil || !r.Clean() || r.Sessions != 20 || r.Members != 20 || r.Posts != 1 || r.Deadlines != 20 {
		t.Fatalf("Check of a healthy store = %+v, %v; want clean with 20 sessions", r, err)
	}

	view("dead", "a")
	rdb.Del(ctx, k.Session("", "dead"))
	rdb.ZAdd(ctx, k.Deadlines(""), redisZ(time.Now().Add(-time.Minute), "dead"))
	view("young", "a") // expired just now: gc's to prune, not drift
	rdb.Del(ctx, k.Session("", "young"))
	rdb.ZAdd(ctx, k.Deadlines(""), redisZ(time.Now(), "young"))
	view("notinset", "a")
	rdb.SRem(ctx, k.PostViewers("a"), "notinset")
	view("nodeadline", "a")
	rdb.ZRem(ctx, k.Deadlines(""), "nodeadline")
	view("sesspost", "a")
	rdb.Set(ctx, k.Session("", "sesspost"), "b", time.Minute)
	view("wrongset", "a")
	rdb.SAdd(ctx, k.PostViewers("b"), "wrongset")
	rdb.SAdd(ctx, k.PostViewers("c"), "orphan")
	rdb.ZAdd(ctx, k.Deadlines(""), redisZ(time.Now().Add(time.Minute), "orphandl"))

	r, err = s.Check(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{DriftDead: 1, DriftNotInSet: 1, DriftNoDeadline: 1, DriftSessionPost: 1,
		DriftWrongSet: 1, DriftOrphanMember: 1, DriftOrphanDeadline: 1}
	if !maps.Equal(r.ByKind, want) {
		t.Errorf("ByKind = %v, want %v", r.ByKind, want)
	}
	wantDrift := map[Drift]bool{
		{Kind: DriftDead, Session: "dead", Post: "a"}: true, {Kind: DriftNotInSet, Session: "notinset", Post: "a"}: true, {Kind: DriftNoDeadline, Session: "nodeadline", Post: "a"}: true,
		{Kind: DriftSessionPost, Session: "sesspost", Post: "a"}: true, {Kind: DriftWrongSet, Session: "wrongset", Post: "b"}: true,
		{Kind: DriftOrphanMember, Session: "orphan", Post: "c"}: true, {Kind: DriftOrphanDeadline, Session: "orphandl", Post: ""}: true,
	}
	for _, d := range r.Drift {
		if !wantDrift[d] {
			t.Errorf("unexpected drift %+v", d)
		}
	}
	t.Logf("summary: %s", r.Summary())

	n, err := s.Repair(ctx, r)
	if err != nil || n != 3 {
		t.Fatalf("Repair = %d, %v; want 3 sessions (dead, nodeadline, orphandl)", n, err)
	}
	r, err = s.Check(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]int{DriftNotInSet: 1, DriftSessionPost: 1, DriftWrongSet: 1, DriftOrphanMember: 1}
	if !maps.Equal(r.ByKind, want) {
		t.Errorf("after Repair ByKind = %v, want %v (what gc does not repair)", r.ByKind, want)
	}
	if c, _ := rdb.SCard(ctx, k.PostViewers("a")).Result(); c != 24 {
		t.Errorf("SCARD a after Repair = %d, want 24 (dead pruned)", c)
	}
}

// TestStore_CheckUnderTraffic: views, moves and leaves racing the scan are
// never reported as drift.
func TestStore_CheckUnderTraffic(t *testing.T) {
	s, _ := newStore(t, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 100_000; i++ {
				sid := presence.SessionID(fmt.Sprint(w, "-", i%200))
				if i%7 == 0 {
					_ = s.Leave(ctx, presence.Session{ID: sid})
					continue
				}
				_, _ = s.View(ctx, presence.Session{ID: sid, Post: presence.PostID(fmt.Sprint("p", i%13))}, "", true)
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	for range 20 {
		r, err := s.Check(ctx, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Clean() {
			t.Fatalf("Check under traffic = %s: %v", r.Summary(), r.Drift)
		}
	}
}

func redisZ(at time.Time, sid string) redis.Z {
	return redis.Z{Score: float64(at.UnixMilli()), Member: sid}
}

// BenchmarkStore_Check100k is the cost of one gc check on 100,000
// sessions over 1,000 posts: the time it takes, the CPU time Redis spends
// on it, and the longest single call (what blocks other clients).
func BenchmarkStore_Check100k(b *testing.B) {
	r := redistest.Start(b)
	rdb := r.Client(b)
	s := New(rdb, Config{TTL: time.Hour}, zap.NewNop())
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 100_000; i += 8 {
				if _, err := s.View(ctx, presence.Session{ID: presence.SessionID(fmt.Sprint("s", i)), Post: presence.PostID(fmt.Sprint("p", i%1000))}, "", true); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rdb.ConfigResetStat(ctx)
	cpu := func() float64 {
		info := rdb.Info(ctx, "cpu").Val()
		var total float64
		for _, line := range strings.Split(info, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
		return total
	}
	before := cpu()
	b.ResetTimer()
	for range b.N {
		rep, err := s.Check(ctx, time.Second)
		if err != nil || !rep.Clean() || rep.Sessions != 100_000 {
			b.Fatalf("Check = %s, %v", rep.Summary(), err)
		}
	}
	b.StopTimer()
	b.ReportMetric((cpu()-before)*1000/float64(b.N), "redis-cpu-ms/op")
	stats := rdb.Info(ctx, "commandstats").Val()
	for _, line := range strings.Split(stats, "\r\n") {
		if strings.HasPrefix(line, "cmdstat_evalsha:") {
			if i := strings.Index(line, "usec_per_call="); i >= 0 {
				f, _ := strconv.ParseFloat(strings.SplitN(line[i+len("usec_per_call="):], ",", 2)[0], 64)
				b.ReportMetric(f, "script-µs/call")
			}
		}
	}
}

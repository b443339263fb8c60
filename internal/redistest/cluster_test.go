package redistest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestClusterMoveSlots(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3, false)
	rdb := c.Client(t)
	ctx := context.Background()
	prefix := Prefix()
	// Without a hash tag the keys land on slots all over the key space.
	const keys = 500
	for i := range keys {
		if err := rdb.Set(ctx, fmt.Sprintf("%s%d", prefix, i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	added := c.AddPrimary(t)
	if got := len(c.Primaries); got != 4 || c.Primaries[3] != added {
		t.Fatalf("Primaries after AddPrimary: %d, last %v", got, c.Primaries[got-1].Addr)
	}
	if n := ownedSlots(t, c, added); n != 0 {
		t.Fatalf("new primary owns %d slots before any move", n)
	}
	c.MoveSlots(t, added, 300)
	if n := ownedSlots(t, c, added); n != 300 {
		t.Fatalf("new primary owns %d slots after moving 300 to it", n)
	}
	readAll(t, rdb, prefix, keys)
	moved := 0
	for i := range keys {
		p, err := c.PrimaryOf(ctx, fmt.Sprintf("%s%d", prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		if p == added {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("none of %d keys is on the primary that got 300 slots", keys)
	}

	c.Rebalance(t)
	if n := ownedSlots(t, c, added); n < 4000 {
		t.Fatalf("new primary owns %d slots after rebalancing, want about 4096", n)
	}
	readAll(t, rdb, prefix, keys)
}

func TestClusterFailover(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3, true)
	if len(c.Primaries) != 3 || len(c.Replicas) != 3 {
		t.Fatalf("%d primaries and %d replicas, want 3 and 3", len(c.Primaries), len(c.Replicas))
	}
	rdb := c.Client(t)
	ctx := context.Background()
	key := Prefix() + "k"
	if err := rdb.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	owner, err := c.PrimaryOf(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(c.Primaries, owner)
	if i < 0 {
		t.Fatalf("%s owns %s but is not in Primaries", owner.Addr, key)
	}
	heir := c.Replicas[i]
	// Without the replica's acknowledgement the write could die with it.
	if n, err := owner.Client(t).Wait(ctx, 1, time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 1000: %d replicas, %v", n, err)
	}

	owner.Kill()
	c.WaitFailover(t, owner)
	if c.Primaries[i] != heir || c.Replicas[i] != owner {
		t.Fatal("WaitFailover did not swap the promoted replica and the killed primary")
	}
	if p, err := c.PrimaryOf(ctx, key); err != nil || p != heir {
		t.Fatalf("PrimaryOf after failover: %v, %v; want the promoted replica %s", p, err, heir.Addr)
	}
	// A new client sees the cluster as it is now, so no retry can hide a
	// failover that has not finished.
	if got, err := c.Client(t).Get(ctx, key).Result(); err != nil || got != "v" {
		t.Fatalf("GET %s after failover: %q, %v", key, got, err)
	}

	// The old primary comes back as the replica of the one that replaced
	// it, which is why WaitFailover files it under Replicas.
	if err := owner.Restart(); err != nil {
		t.Fatal(err)
	}
	view := c.settle(t, "the old primary back as a replica")
	if got, want := view[c.id[owner]].of, c.id[heir]; got != want {
		t.Fatalf("restarted primary replicates %q, want the promoted replica %q", got, want)
	}
}

// ownedSlots counts the slots s owns according to s itself.
func ownedSlots(t *testing.T, c *Cluster, s *Server) int {
	t.Helper()
	ranges, err := c.conn[s].ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range ranges {
		if r.Nodes[0].Addr == s.Addr {
			n += int(r.End - r.Start + 1)
		}
	}
	return n
}

// readAll checks that keys prefix0 to prefix<keys-1> still hold their
// numbers.
func readAll(t *testing.T, rdb *redis.ClusterClient, prefix string, keys int) {
	t.Helper()
	for i := range keys {
		key := fmt.Sprintf("%s%d", prefix, i)
		got, err := rdb.Get(context.Background(), key).Int()
		if err != nil || got != i {
			t.Fatalf("GET %s: %d, %v; want %d", key, got, err, i)
		}
	}
}

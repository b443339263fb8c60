package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/presence/presence/internal/presence"
)

// takeScript removes a views counter from the source once its value has
// been added to the target, or, when an app server of the old deployment
// counted more views meanwhile, takes away only what was added: nothing is
// counted twice, and nothing counted during the move is lost. A counter
// below what was added expired and was made anew since the read: all it
// holds is new, and is left for the next round.
var takeScript = redis.NewScript(`
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
local taken = tonumber(ARGV[1])
if v == taken then
  redis.call('DEL', KEYS[1])
  return 0
end
if v < taken then
  return v
end
return redis.call('DECRBY', KEYS[1], taken)
`)

// MigrateViews moves the views totals of a one-node store on src, with the
// same key prefix, into s, which keeps them in a cluster's partitions:
// each total is added to the post's counter here (views counted here since
// the switch are kept) and then removed from src. Live presence needs no
// move: the app servers register their sessions in the new layout. It
// returns how many counters and views it moved; run again, it moves only
// what was counted on src since.
func (s *Store) MigrateViews(ctx context.Context, src redis.UniversalClient) (counters int, views int64, err error) {
	if !s.keys.sharded() {
		return 0, 0, fmt.Errorf("migrate: the target is one node, whose key layout is the source's: there is nothing to move")
	}
	from := NewKeys(s.keys.prefix)
	var cursor uint64
	for {
		keys, next, err := src.Scan(ctx, cursor, from.kindPattern(kindViews), batchSize).Result()
		if err != nil {
			return counters, views, fmt.Errorf("migrate: scan the source: %w", err)
		}
		for _, key := range keys {
			post, err := presence.ParsePostID(strings.TrimPrefix(key, from.viewsAt(0)))
			if err != nil {
				continue // not a counter these scripts wrote
			}
			n, err := s.moveViews(ctx, src, key, post)
			if err != nil {
				return counters, views, err
			}
			if n > 0 {
				counters++
				views += n
			}
		}
		if next == 0 {
			return counters, views, nil
		}
		cursor = next
	}
}

// moveViews moves one counter, in rounds while the source keeps counting.
func (s *Store) moveViews(ctx context.Context, src redis.UniversalClient, key string, post presence.PostID) (int64, error) {
	var moved int64
	for range 100 {
		v, err := src.Get(ctx, key).Int64()
		if err == redis.Nil {
			return moved, nil
		}
		if err != nil {
			return moved, fmt.Errorf("migrate: read %s: %w", key, err)
		}
		if v <= 0 {
			return moved, nil
		}
		to := s.keys.Views(post)
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.IncrBy(ctx, to, v)
			if s.viewsTTL > 0 {
				p.PExpire(ctx, to, s.viewsTTL)
			}
			return nil
		}); err != nil {
			return moved, fmt.Errorf("migrate: add %d views to %s (if the error came after the cluster added them, run again only after checking it, or they count twice): %w", v, to, err)
		}
		moved += v
		left, err := takeScript.Run(ctx, src, []string{key}, v).Int64()
		if err != nil {
			// Added here but still there: a run again would add it twice.
			return moved, fmt.Errorf("migrate: added %d views of post %s but could not remove them from the source (remove %s there by hand before running again): %w", v, post, key, err)
		}
		if left <= 0 {
			return moved, nil
		}
	}
	return moved, fmt.Errorf("migrate: post %s is still being counted on the source after 100 rounds; stop the old app servers first", post)
}

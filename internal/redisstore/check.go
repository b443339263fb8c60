package redisstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presence/presence/internal/presence"
)

// Kinds of drift that Check reports: each is a broken invariant of the
// schema. The scripts keep every invariant within one call, so drift comes
// from outside them: a failover or a restore that lost writes, a hand edit,
// a collector that did not run.
const (
	// DriftDead: a viewers hash entry whose session key is gone and whose
	// deadline passed more than the grace ago (or that has none): a ghost
	// viewer that gc has not pruned.
	DriftDead = "dead"
	// DriftNotInSet: a viewers hash entry missing from its post's set, so
	// the post's count leaves out a live viewer.
	DriftNotInSet = "not_in_set"
	// DriftNoDeadline: a live session missing from the deadlines index; gc
	// would find it only in its sweep.
	DriftNoDeadline = "no_deadline"
	// DriftSessionPost: the session key names another post than the hash.
	DriftSessionPost = "session_post"
	// DriftWrongSet: a session in the set of a post other than its own, so
	// that post's count is one too high.
	DriftWrongSet = "wrong_set"
	// DriftOrphanMember: a set member with no viewers hash entry, so the
	// post's count is one too high and nothing will remove it.
	DriftOrphanMember = "orphan_member"
	// DriftOrphanDeadline: a deadline of a session that is not in the hash.
	DriftOrphanDeadline = "orphan_deadline"
)

// repairable are the kinds gc repairs on its own (the prune script, which
// its sweep runs over the whole hash): Repair runs it on them now.
var repairable = map[string]bool{DriftDead: true, DriftNoDeadline: true, DriftOrphanDeadline: true}

// Drift is one broken invariant.
type Drift struct {
	Kind    string `json:"kind"`
	Session string `json:"session"`
	Post    string `json:"post,omitempty"`
	// part is the partition it was found in, where Repair works on it.
	part int
}

// Report is what Check found.
type Report struct {
	Sessions  int `json:"sessions"`  // entries of the viewers hash
	Deadlines int `json:"deadlines"` // entries of the deadlines index
	Posts     int `json:"posts"`     // posts with a set of viewers
	Members   int `json:"members"`   // members of those sets, summed
	// ByKind counts the drift found, by kind; empty when clean.
	ByKind map[string]int `json:"by_kind"`
	// Drift lists the drift found, at most MaxListed entries.
	Drift []Drift `json:"drift"`
	// Repaired is how many sessions gc check -repair mended.
	Repaired int `json:"repaired,omitempty"`
	// Millis is how long the check took.
	Millis int64 `json:"ms"`
}

// MaxListed bounds Report.Drift; ByKind counts everything.
const MaxListed = 1000

// Clean reports whether no drift was found.
func (r Report) Clean() bool { return len(r.ByKind) == 0 }

// Summary is the report in one line.
func (r Report) Summary() string {
	state := "clean"
	if !r.Clean() {
		kinds := slices.Sorted(maps.Keys(r.ByKind))
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%d %s", r.ByKind[k], k)
		}
		state = "drift: " + strings.Join(parts, ", ")
	}
	if r.Repaired > 0 {
		state += fmt.Sprintf(" (after repairing %d sessions)", r.Repaired)
	}
	return fmt.Sprintf("%s; %d sessions, %d deadlines, %d posts with %d viewers; %d ms",
		state, r.Sessions, r.Deadlines, r.Posts, r.Members, r.Millis)
}

// Check reads the whole schema and reports every broken invariant. It reads
// with SCAN-family commands in batches of 500 and then looks at each session
// found through a short script that sees the hash, its session key, its
// deadline and the sets at one instant, so a change racing the scan is not
// reported as drift. A session whose key expired less than grace ago is
// not dead yet: gc prunes it at its deadline.
func (s *Store) Check(ctx context.Context, grace time.Duration) (Report, error) {
	start := time.Now()
	r := Report{ByKind: make(map[string]int)}
	seen := make(map[Drift]bool)
	report := func(d Drift) {
		if seen[d] {
			return
		}
		seen[d] = true
		r.ByKind[d.Kind]++
		if len(r.Drift) < MaxListed {
			r.Drift = append(r.Drift, d)
		}
	}
	// The posts' sets are found with one SCAN of each node, then checked
	// partition by partition.
	sets := make(map[int][]string)
	err := s.scanKeys(ctx, kindViewers, "set", func(n int, keys []string) error {
		sets[n] = append(sets[n], keys...)
		return nil
	})
	if err != nil {
		return r, s.fail(opCheck, err)
	}
	for n := range s.keys.parts {
		if err := s.checkPartition(ctx, n, sets[n], grace, &r, report); err != nil {
			return r, s.fail(opCheck, err)
		}
	}
	if len(r.ByKind) == 0 {
		r.ByKind = nil
	}
	sort.Slice(r.Drift, func(i, j int) bool {
		a, b := r.Drift[i], r.Drift[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Session < b.Session
	})
	if r.Drift == nil {
		r.Drift = []Drift{}
	}
	r.Millis = time.Since(start).Milliseconds()
	return r, nil
}

// checkPartition checks partition n: the invariants hold within one
// partition, since every session is registered in its post's.
func (s *Store) checkPartition(ctx context.Context, n int, sets []string, grace time.Duration, r *Report, report func(Drift)) error {
	// found holds every session id seen anywhere, with the posts whose
	// sets hold it ("" for one seen only in the hash or the index).
	found := make(map[string]map[string]struct{})
	see := func(sid, post string) {
		m := found[sid]
		if m == nil {
			m = make(map[string]struct{}, 1)
			found[sid] = m
		}
		if post != "" {
			m[post] = struct{}{}
		}
	}
	c, err := s.scanPairs(ctx, func(c uint64) *redis.ScanCmd { return s.rdb.HScan(ctx, s.keys.viewersAt(n), c, "*", batchSize) }, see)
	if err != nil {
		return err
	}
	r.Sessions += c
	c, err = s.scanPairs(ctx, func(c uint64) *redis.ScanCmd { return s.rdb.ZScan(ctx, s.keys.deadlinesAt(n), c, "*", batchSize) }, see)
	if err != nil {
		return err
	}
	r.Deadlines += c
	setPrefix := s.keys.postViewersAt(n)
	for _, key := range sets {
		post := strings.TrimPrefix(key, setPrefix)
		r.Posts++
		var c uint64
		for {
			members, next, err := s.rdb.SScan(ctx, key, c, "*", batchSize).Result()
			if err != nil {
				return err
			}
			for _, sid := range members {
				r.Members++
				see(sid, post)
			}
			if next == 0 {
				break
			}
			c = next
		}
	}

	// Look at each (session, post whose set holds it) pair at one instant.
	type pair struct{ sid, post string }
	pairs := make([]pair, 0, len(found))
	for sid, posts := range found {
		if len(posts) == 0 {
			pairs = append(pairs, pair{sid, ""})
		}
		for p := range posts {
			pairs = append(pairs, pair{sid, p})
		}
	}
	drift := func(kind, sid, post string) { report(Drift{Kind: kind, Session: sid, Post: post, part: n}) }
	// 100 sessions a call keeps each call under a millisecond on 100k.
	for batch := range slices.Chunk(pairs, 100) {
		args := s.keys.names(n, 2*len(batch))
		for _, p := range batch {
			args = append(args, p.sid, p.post)
		}
		res, err := inspectScript.Run(ctx, s.rdb, s.keys.partKeys(n), args...).Slice()
		if err != nil {
			return err
		}
		if len(res) != 1+5*len(batch) {
			return fmt.Errorf("script returned %d values, want %d", len(res), 1+5*len(batch))
		}
		now, _ := res[0].(int64)
		for i, p := range batch {
			v := res[1+5*i : 6+5*i]
			post, _ := v[0].(string)
			sess, _ := v[1].(string)
			deadline := int64(-1)
			if d, ok := v[2].(string); ok {
				fmt.Sscan(d, &deadline)
			}
			inFound, _ := v[3].(int64)
			inOwn, _ := v[4].(int64)
			if post != "" {
				switch {
				case sess == "" && (deadline < 0 || time.Duration(now-deadline)*time.Millisecond > grace):
					drift(DriftDead, p.sid, post)
				case sess == "":
					// Expired within the grace: gc's to prune, not drift.
				case deadline < 0:
					drift(DriftNoDeadline, p.sid, post)
				case sess != post:
					drift(DriftSessionPost, p.sid, post)
				}
				if inOwn == 0 {
					drift(DriftNotInSet, p.sid, post)
				}
				if p.post != "" && p.post != post && inFound == 1 {
					drift(DriftWrongSet, p.sid, p.post)
				}
				continue
			}
			if p.post != "" && inFound == 1 {
				drift(DriftOrphanMember, p.sid, p.post)
			}
			if deadline >= 0 {
				drift(DriftOrphanDeadline, p.sid, "")
			}
		}
	}
	return nil
}

// scanPairs runs a field/value or member/score scan to its end, calls see
// with every field or member, and returns how many it saw.
func (s *Store) scanPairs(ctx context.Context, scan func(cursor uint64) *redis.ScanCmd, see func(sid, post string)) (int, error) {
	var cursor uint64
	n := 0
	for {
		kv, next, err := scan(cursor).Result()
		if err != nil {
			return n, err
		}
		for i := 0; i+1 < len(kv); i += 2 {
			see(kv[i], "")
			n++
		}
		if next == 0 {
			return n, nil
		}
		cursor = next
	}
}

// Repairable returns the drift the report lists that Repair runs the prune
// script on. The script fixes most of it; what it leaves (an orphaned
// deadline whose session key is still alive, say) stays listed.
func (r Report) Repairable() map[Drift]bool {
	out := make(map[Drift]bool)
	for _, d := range r.Drift {
		if repairable[d.Kind] {
			out[d] = true
		}
	}
	return out
}

// Repair runs the prune script, as gc does, on every session the report
// lists whose drift gc repairs by itself (a report lists at most MaxListed;
// check again for the rest): dead ones are removed (and their posts'
// counts published), live ones get their deadline back, and orphaned
// deadlines go. Other drift needs a person to look; it is left alone. It
// returns how many sessions it ran the script on.
func (s *Store) Repair(ctx context.Context, r Report) (int, error) {
	type at struct {
		sid  string
		part int
	}
	seen := make(map[at]bool)
	byPart := make(map[int][]presence.Session)
	for _, d := range r.Drift {
		k := at{d.Session, d.part}
		if repairable[d.Kind] && !seen[k] {
			seen[k] = true
			byPart[d.part] = append(byPart[d.part], presence.Session{ID: presence.SessionID(d.Session), Post: presence.PostID(d.Post)})
		}
	}
	for n, sids := range byPart {
		if _, err := s.prune(ctx, n, sids); err != nil {
			return 0, err
		}
	}
	return len(seen), nil
}

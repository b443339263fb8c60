package redisstore

import (
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/presence/presence/internal/presence"
)

// Keys builds every Redis key and channel name: no other file, Go or Lua,
// spells one. Scripts get the fixed keys as KEYS and, for the keys of a post
// or a session, the prefixes that its id completes (names), because a
// script may learn a post only inside Redis (the post a moving session
// leaves). Tests build names with the same methods.
//
// Every post belongs to one partition, and so does each session, to its
// post's: the viewers hash, the deadlines index and seq exist once per
// partition, and a script touches the keys of one partition only. On one
// node there is one partition and the names are the seed's schema (with an
// empty prefix). In a cluster there are Partitions, each named with a hash
// tag, {0} to {63}, that puts all its keys and its posts' channels on one
// slot: every script runs on one node, and a post's count is published by
// the node that holds it.
type Keys struct {
	prefix string
	parts  int
}

// Partitions is how many partitions a cluster's keys are spread over: enough
// to share the work between tens of primaries (the hash tags "0" to "63"
// fall 21/22/21 over three primaries' slot ranges, 16 each over four), few
// enough that gc's poll of every partition's deadlines is cheap. It is part
// of the key layout: changing it moves every key.
const Partitions = 64

// NewKeys returns the names of a one-node store with the key prefix.
func NewKeys(prefix string) Keys { return Keys{prefix: prefix, parts: 1} }

// NewClusterKeys returns the names of a cluster store with the key prefix:
// Partitions partitions, each with a hash tag.
func NewClusterKeys(prefix string) Keys { return Keys{prefix: prefix, parts: Partitions} }

// Partition is the partition of a post: CRC-32 (IEEE) of its id modulo
// Partitions in a cluster, which PHP's crc32($post) % 64 gives too.
func (k Keys) Partition(p presence.PostID) int {
	if k.parts == 1 {
		return 0
	}
	return int(crc32.ChecksumIEEE([]byte(p)) % uint32(k.parts))
}

// tag is partition n's hash tag, "" on one node.
func (k Keys) tag(n int) string {
	if k.parts == 1 {
		return ""
	}
	return "{" + strconv.Itoa(n) + "}"
}

// Viewers is the hash of every live session's post, of p's partition.
func (k Keys) Viewers(p presence.PostID) string { return k.viewersAt(k.Partition(p)) }

// Deadlines is the sorted set of session deadlines of p's partition, gc's
// index.
func (k Keys) Deadlines(p presence.PostID) string { return k.deadlinesAt(k.Partition(p)) }

// Seq is the counter that orders the counts of p's partition.
func (k Keys) Seq(p presence.PostID) string { return k.seqAt(k.Partition(p)) }

// PostViewers is the set of a post's viewers; its SCARD is the count.
func (k Keys) PostViewers(p presence.PostID) string {
	return k.postViewersAt(k.Partition(p)) + string(p)
}

// Views is a post's views counter.
func (k Keys) Views(p presence.PostID) string { return k.viewsAt(k.Partition(p)) + string(p) }

// Session is the key of a session that views p; its expiry is its death.
func (k Keys) Session(p presence.PostID, s presence.SessionID) string {
	return k.sessionAt(k.Partition(p)) + string(s)
}

// ResumeKey is the string app servers sign resume tokens with, made by the
// first that needs it, so that every app server of a deployment accepts the
// tokens of the others without a setting.
func (k Keys) ResumeKey() string { return k.prefix + "resume-key" }

// Channel is a post's pub/sub channel: its count messages and events.
func (k Keys) Channel(p presence.PostID) string { return k.channelAt(k.Partition(p)) + string(p) }

// The kinds of name that a post or session id completes: each is the
// prefix, the kind, the partition's tag and a colon before the id.
const (
	kindViewers = "viewers" // a post's set; alone (no colon, no id), the partition's hash
	kindViews   = "views"
	kindSession = "session"
	kindChannel = "presence:post"
	kindHidden  = "hidden" // a post's set of viewers whose tab is in the background
	kindPeople  = "people" // a post's hash of its viewers' visitors
)

func (k Keys) viewersAt(n int) string     { return k.prefix + kindViewers + k.tag(n) }
func (k Keys) deadlinesAt(n int) string   { return k.prefix + "deadlines" + k.tag(n) }
func (k Keys) seqAt(n int) string         { return k.prefix + "seq" + k.tag(n) }
func (k Keys) postViewersAt(n int) string { return k.idPrefix(kindViewers, n) }
func (k Keys) viewsAt(n int) string       { return k.idPrefix(kindViews, n) }
func (k Keys) sessionAt(n int) string     { return k.idPrefix(kindSession, n) }
func (k Keys) channelAt(n int) string     { return k.idPrefix(kindChannel, n) }
func (k Keys) hiddenAt(n int) string      { return k.idPrefix(kindHidden, n) }
func (k Keys) peopleAt(n int) string      { return k.idPrefix(kindPeople, n) }

// People is a post's hash of the visitors among its viewers (see
// people_of in common.lua): its count of people.
func (k Keys) People(p presence.PostID) string { return k.peopleAt(k.Partition(p)) + string(p) }

// Hidden is a post's set of the viewing sessions whose tab is hidden: the
// post's reading count is its viewers less these.
func (k Keys) Hidden(p presence.PostID) string { return k.hiddenAt(k.Partition(p)) + string(p) }

// idPrefix starts every name of a kind in partition n.
func (k Keys) idPrefix(kind string, n int) string { return k.prefix + kind + k.tag(n) + ":" }

// kindPattern matches every name of a kind in every partition, for SCAN
// (on a cluster it also matches the partitions' own keys of that name,
// which a SCAN by type leaves out).
func (k Keys) kindPattern(kind string) string {
	if k.parts == 1 {
		return k.pattern(k.idPrefix(kind, 0))
	}
	return k.pattern(k.prefix + kind + "{")
}

// probeChannel is an app server's own channel in partition n, for proving
// that its subscription there still delivers.
func (k Keys) probeChannel(n int, id string) string {
	return k.prefix + "presence:probe" + k.tag(n) + ":" + id
}

// partKeys are the KEYS of every script that changes a partition: its
// viewers hash, deadlines index and seq, in the order common.lua expects.
func (k Keys) partKeys(n int) []string {
	return []string{k.viewersAt(n), k.deadlinesAt(n), k.seqAt(n)}
}

// touched are the KEYS of a script on partition n that touches the
// sessions on their posts: the partition's keys, then each session's key
// and its post's set, and, withCounts, its views counter, its set of hidden
// viewers and its people (see common.lua): refresh touches none of those,
// and a key it listed but lacked would make Redis refuse it while the slot
// migrates.
func (k Keys) touched(n int, sessions []presence.Session, withCounts bool) []string {
	keys := make([]string, 0, 3+3*len(sessions))
	keys = append(keys, k.viewersAt(n), k.deadlinesAt(n), k.seqAt(n))
	// A post listed twice is harmless; the set only keeps big batches short.
	var posts map[presence.PostID]bool
	if len(sessions) > 1 {
		posts = make(map[presence.PostID]bool)
	}
	for _, s := range sessions {
		keys = append(keys, k.sessionAt(n)+string(s.ID))
		if s.Post != "" && !posts[s.Post] {
			if posts != nil {
				posts[s.Post] = true
			}
			keys = append(keys, k.PostViewers(s.Post))
			if withCounts {
				keys = append(keys, k.Views(s.Post), k.Hidden(s.Post), k.People(s.Post))
			}
		}
	}
	return keys
}

// names are the prefixes that a post or session id completes into a key or
// channel name in partition n, and the command that publishes there, in the
// order the scripts take them (ARGV[1..7], see common.lua's names()), in a
// slice with room for more arguments after them.
func (k Keys) names(n, more int) []any {
	return append(make([]any, 0, 7+more), k.postViewersAt(n), k.viewsAt(n), k.channelAt(n), k.sessionAt(n), k.publishCommand(), k.hiddenAt(n), k.peopleAt(n))
}

// publishCommand is PUBLISH on one node, where PHP code and older app
// servers use it, and SPUBLISH in a cluster, where PUBLISH would go to
// every node and SPUBLISH stays on the node of the channel's slot.
func (k Keys) publishCommand() string {
	if k.parts == 1 {
		return "PUBLISH"
	}
	return "SPUBLISH"
}

// sharded reports whether channels are shard channels (SSUBSCRIBE).
func (k Keys) sharded() bool { return k.parts > 1 }

// pattern matches every key that starts with start, a name built here; its
// glob characters (the prefix may have some) are escaped.
func (k Keys) pattern(start string) string {
	var b strings.Builder
	for _, c := range start {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String() + "*"
}

// channelPost returns the post of a post channel name.
func (k Keys) channelPost(channel string) (presence.PostID, bool) {
	rest, n, ok := k.cutPart(channel, kindChannel)
	if !ok {
		return "", false
	}
	p, err := presence.ParsePostID(rest)
	if err != nil || k.Partition(p) != n {
		return "", false
	}
	return p, true
}

// isSession reports whether key is a session key; expiry events carry the
// key's name.
func (k Keys) isSession(key string) bool {
	_, _, ok := k.cutPart(key, kindSession)
	return ok
}

// cutPart cuts prefix, kind and a partition's tag (when there are
// partitions) and the colon after it from the start of name, and returns
// the rest and the partition.
func (k Keys) cutPart(name, kind string) (rest string, n int, ok bool) {
	rest, ok = strings.CutPrefix(name, k.prefix+kind)
	if !ok {
		return "", 0, false
	}
	if k.parts > 1 {
		end := strings.IndexByte(rest, '}')
		if !strings.HasPrefix(rest, "{") || end < 0 {
			return "", 0, false
		}
		var err error
		if n, err = strconv.Atoi(rest[1:end]); err != nil || n < 0 || n >= k.parts {
			return "", 0, false
		}
		rest = rest[end+1:]
	}
	rest, ok = strings.CutPrefix(rest, ":")
	return rest, n, ok
}

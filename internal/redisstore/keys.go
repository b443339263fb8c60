package redisstore

import (
	"strings"

	"github.com/presence/presence/internal/presence"
)

// Keys builds every Redis key and channel name: no other file, Go or Lua,
// spells one. Scripts get the fixed keys as KEYS and, for the keys of a post
// or a session, the prefixes that its id completes (names), because a
// script may learn a post only inside Redis (the post a moving session
// leaves). Tests build names with the same methods. With an empty prefix the
// names are the seed's schema.
type Keys struct {
	prefix string
}

// NewKeys returns the names of a store with the key prefix.
func NewKeys(prefix string) Keys { return Keys{prefix: prefix} }

// Viewers is the hash of every live session's post.
func (k Keys) Viewers() string { return k.prefix + "viewers" }

// Deadlines is the sorted set of every session's deadline, gc's index.
func (k Keys) Deadlines() string { return k.prefix + "deadlines" }

// Seq is the counter that orders counts.
func (k Keys) Seq() string { return k.prefix + "seq" }

// PostViewers is the set of a post's viewers; its SCARD is the count.
func (k Keys) PostViewers(p presence.PostID) string { return k.prefix + "viewers:" + string(p) }

// Views is a post's views counter.
func (k Keys) Views(p presence.PostID) string { return k.prefix + "views:" + string(p) }

// Session is a session's key, whose expiry is its death.
func (k Keys) Session(s presence.SessionID) string { return k.prefix + "session:" + string(s) }

// names are the prefixes that a post or session id completes into a key or
// channel name, in the order the scripts take them (ARGV[1..4], see
// common.lua's names()).
func (k Keys) names() []any {
	return []any{k.PostViewers(""), k.Views(""), k.channelPrefix(), k.sessionPrefix()}
}

// viewsPattern matches every views counter, for SCAN.
func (k Keys) viewsPattern() string { return k.pattern(k.Views("")) }

// postViewersPattern matches every post's set of viewers, for SCAN.
func (k Keys) postViewersPattern() string { return k.pattern(k.PostViewers("")) }

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

// channelPrefix starts the name of every post's pub/sub channel.
func (k Keys) channelPrefix() string { return k.prefix + "presence:post:" }

// Channel is a post's pub/sub channel: its count messages and events.
func (k Keys) Channel(p presence.PostID) string { return k.channelPrefix() + string(p) }

// probeChannel is an app server's own channel for proving that its
// subscription still delivers.
func (k Keys) probeChannel(id string) string { return k.prefix + "presence:probe:" + id }

// sessionPrefix starts every session key; expiry events carry the key name.
func (k Keys) sessionPrefix() string { return k.Session("") }

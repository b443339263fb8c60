package redisstore

import (
	"strings"

	"github.com/presence/presence/internal/presence"
)

// keys builds every Redis key and channel name the Go code uses; no other Go
// file spells one. The Lua scripts build post and session keys from the
// prefix in the same way (common.lua and the scripts), so a change of the
// schema changes both. With an empty prefix the names are the seed's schema.
// The scripts build post and session keys from the prefix themselves, so
// Redis Cluster would need every key in one slot (a hash-tag prefix such as
// "{presence}:"); the client is a single-node one, and Cluster is not
// supported yet.
type keys struct {
	prefix string
}

func (k keys) viewers() string   { return k.prefix + "viewers" }
func (k keys) deadlines() string { return k.prefix + "deadlines" }
func (k keys) seq() string       { return k.prefix + "seq" }

func (k keys) postViewers(p presence.PostID) string { return k.prefix + "viewers:" + string(p) }
func (k keys) views(p presence.PostID) string       { return k.prefix + "views:" + string(p) }
func (k keys) session(s presence.SessionID) string  { return k.prefix + "session:" + string(s) }

// viewsPattern matches every views counter, for SCAN.
func (k keys) viewsPattern() string { return k.pattern("views:") }

// postViewersPattern matches every post's set of viewers, for SCAN.
func (k keys) postViewersPattern() string { return k.pattern("viewers:") }

// pattern matches every key that starts with the prefix and then start; the
// prefix's own glob characters are escaped.
func (k keys) pattern(start string) string {
	var b strings.Builder
	for _, c := range k.prefix {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String() + start + "*"
}

// channelPrefix starts the name of every post's pub/sub channel.
func (k keys) channelPrefix() string { return k.prefix + "presence:post:" }

func (k keys) channel(p presence.PostID) string { return k.channelPrefix() + string(p) }

// probeChannel is an app server's own channel for proving that its
// subscription still delivers.
func (k keys) probeChannel(id string) string { return k.prefix + "presence:probe:" + id }

// sessionPrefix starts every session key; expiry events carry the key name.
func (k keys) sessionPrefix() string { return k.prefix + "session:" }

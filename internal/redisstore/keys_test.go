package redisstore

import (
	"testing"

	"github.com/presence/presence/internal/presence"
)

// TestKeys_ClusterNames pins the cluster's names: PHP computes a post's
// channel itself (README), so the partition must be PHP's crc32($post) % 64
// (the figures below are PHP's), and the names must parse back.
func TestKeys_ClusterNames(t *testing.T) {
	k := NewClusterKeys("site:")
	for post, part := range map[presence.PostID]int{"13": 27, "hello-world": 27, "a": 3, "made-up-7": 12} {
		if got := k.Partition(post); got != part {
			t.Errorf("Partition(%s) = %d, want %d as PHP's crc32 gives", post, got, part)
		}
	}
	if got := k.Channel("13"); got != "site:presence:post{27}:13" {
		t.Errorf("Channel(13) = %q", got)
	}
	if got := k.Session("13", "abc"); got != "site:session{27}:abc" {
		t.Errorf("Session(13, abc) = %q", got)
	}
	if p, ok := k.channelPost("site:presence:post{27}:13"); !ok || p != "13" {
		t.Errorf("channelPost = %q, %v; want 13", p, ok)
	}
	for _, bad := range []string{"site:presence:post{26}:13", "site:presence:post:13", "site:presence:post{x}:13", "site:presence:post{64}:13", "site:presence:probe{27}:x"} {
		if p, ok := k.channelPost(bad); ok {
			t.Errorf("channelPost(%q) = %q, want refused", bad, p)
		}
	}
	if !k.isSession("site:session{27}:abc") || k.isSession("site:session:abc") || k.isSession("other:session{1}:abc") {
		t.Error("isSession accepts a name of another layout or prefix, or refuses its own")
	}
	// One node keeps the seed's names.
	one := NewKeys("")
	if one.Channel("13") != "presence:post:13" || one.Session("13", "abc") != "session:abc" || one.Viewers("13") != "viewers" {
		t.Errorf("one-node names changed: %s %s %s", one.Channel("13"), one.Session("13", "abc"), one.Viewers("13"))
	}
}

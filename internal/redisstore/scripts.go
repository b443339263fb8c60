package redisstore

import (
	"embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFS embed.FS

// The scripts that change a post's count share common.lua's helpers, which
// are prepended at load time because Redis scripts cannot include files.
var (
	viewScript    = newScript("view.lua", true)
	leaveScript   = newScript("leave.lua", true)
	pruneScript   = newScript("prune.lua", true)
	refreshScript = newScript("refresh.lua", false)
	dueScript     = newScript("due.lua", false)
	countsScript  = newScript("counts.lua", false)
)

var allScripts = []*redis.Script{viewScript, leaveScript, pruneScript, refreshScript, dueScript, countsScript}

func newScript(name string, common bool) *redis.Script {
	src := mustRead(name)
	if common {
		src = mustRead("common.lua") + "\n" + src
	}
	return redis.NewScript(src)
}

func mustRead(name string) string {
	b, err := luaFS.ReadFile("lua/" + name)
	if err != nil {
		panic("redisstore: embedded script missing: " + name) // a build error, not a runtime one
	}
	return string(b)
}

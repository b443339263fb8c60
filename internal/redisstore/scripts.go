package redisstore

import (
	"embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFS embed.FS

// Every script gets common.lua's helpers prepended at load time, because
// Redis scripts cannot include files.
var (
	viewScript    = newScript("view.lua")
	leaveScript   = newScript("leave.lua")
	pruneScript   = newScript("prune.lua")
	refreshScript = newScript("refresh.lua")
	dueScript     = newScript("due.lua")
	countsScript  = newScript("counts.lua")
	inspectScript = newScript("inspect.lua")
)

var allScripts = []*redis.Script{viewScript, leaveScript, pruneScript, refreshScript, dueScript, countsScript, inspectScript}

func newScript(name string) *redis.Script {
	return redis.NewScript(mustRead("common.lua") + "\n" + mustRead(name))
}

func mustRead(name string) string {
	b, err := luaFS.ReadFile("lua/" + name)
	if err != nil {
		panic("redisstore: embedded script missing: " + name) // a build error, not a runtime one
	}
	return string(b)
}

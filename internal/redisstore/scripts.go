package redisstore

import (
	"embed"
	"strings"

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
	// Reads may write seq (moving it to the clock): allow-oom keeps them
	// working on a Redis at maxmemory with noeviction, as reads did before.
	countsScript  = newScript("counts.lua", "allow-oom")
	inspectScript = newScript("inspect.lua")
)

var allScripts = []*redis.Script{viewScript, leaveScript, pruneScript, refreshScript, dueScript, countsScript, inspectScript}

// newScript builds a script from common.lua and name; flags, if any, go in
// the shebang line that Redis 7 reads them from, which must come first.
func newScript(name string, flags ...string) *redis.Script {
	head := ""
	if len(flags) > 0 {
		head = "#!lua flags=" + strings.Join(flags, ",") + "\n"
	}
	return redis.NewScript(head + mustRead("common.lua") + "\n" + mustRead(name))
}

func mustRead(name string) string {
	b, err := luaFS.ReadFile("lua/" + name)
	if err != nil {
		panic("redisstore: embedded script missing: " + name) // a build error, not a runtime one
	}
	return string(b)
}

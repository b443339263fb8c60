// Package config reads the settings of both binaries from flags and
// PRESENCE_* environment variables; a flag overrides its variable.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/presence/presence/internal/origin"
)

// Config holds every setting of presence and gc. Both binaries load and
// validate all of it, including the settings they do not use themselves.
// Defaults are those of the settings table below (and README's).
type Config struct {
	// Addr is the app server's public listener (default :8080); GCAddr is
	// gc's listener for /healthz, /readyz and /metrics (default :8081).
	Addr   string
	GCAddr string
	// RedisURL names the Redis of both binaries. Empty (the default) runs
	// presence in embedded mode, where gc has nothing to do and refuses to
	// start.
	RedisURL string
	// RedisSentinels and RedisMaster select Sentinel mode: the app server
	// and gc ask the sentinels for the master's address and follow a
	// failover by themselves. RedisURL then carries only credentials, TLS
	// and the database; its host is not used.
	RedisSentinels []string
	RedisMaster    string
	// RedisCluster names some nodes of a Redis Cluster and selects Cluster
	// mode: the client learns the other nodes from them, and keys are
	// spread over the cluster's slots. RedisURL then carries only
	// credentials and TLS.
	RedisCluster []string
	// KeyPrefix goes before every Redis key and channel name. Default: none.
	KeyPrefix string
	// SessionTTL is how long a session lives without a refresh (default
	// 90s); app servers refresh their sessions every SessionTTL/3.
	SessionTTL time.Duration
	// Coalesce is the per-post window of count frames (default 250ms); 0
	// sends every change at once.
	Coalesce time.Duration
	// HandoffGrace is how long an app server that shuts down keeps its
	// tabs' sessions at least, for them to resume on another app server
	// (default 30s); 0 removes them at once.
	HandoffGrace time.Duration
	// GCPoll is the longest time between two polls of the deadlines index
	// (default 1s): dead sessions are pruned within about one GCPoll.
	GCPoll time.Duration
	// SweepInterval is the time between gc's walks of the viewers hash
	// (default 5m), which repair lost index entries; 0 turns them off.
	SweepInterval time.Duration
	// AllowedOrigins are the origin patterns of pages that may open
	// WebSockets and read the REST counts. Default: the server's own host.
	AllowedOrigins []string
	// PublishKeys are the bearer keys of the publish API. Default: none,
	// and publishing is off.
	PublishKeys []string
	// LogLevel is debug, info (the default), warn or error.
	LogLevel string
	// LogFormat is auto (the default), console or json.
	LogFormat string
	// PostSecrets are the secrets post tokens are signed with; empty accepts
	// any post id.
	PostSecrets []string
	// ViewsTTL is how long a post's views total lives after its last view;
	// 0 keeps it forever (allowed only with PostSecrets).
	ViewsTTL time.Duration
	// MaxConns is the most WebSockets the app server holds; 0 is no limit.
	// MaxConnsAuto says it was derived from the open-files limit, NoFile.
	MaxConns     int
	MaxConnsAuto bool
	NoFile       uint64
	// MaxConnsPerIP is the most WebSockets one client address holds; 0 is
	// no limit.
	MaxConnsPerIP int
	// TrustedProxies are the peers whose X-Forwarded-For names the client.
	TrustedProxies []netip.Prefix
	// AdminAddr, when set, serves /metrics and the detailed /readyz.
	AdminAddr string
}

// setting is one variable: its flag, environment name, default and help.
type setting struct {
	flag, env, def, help string
}

// settings is the one list of every setting. Defaults are strings in the
// variables' own syntax, so they go through the same parsing and validation
// as a value an operator sets.
var settings = []setting{
	{"addr", "PRESENCE_ADDR", ":8080", "app server listen address"},
	{"gc-addr", "PRESENCE_GC_ADDR", ":8081", "gc's listen address for /healthz, /readyz and /metrics"},
	{"redis-url", "PRESENCE_REDIS_URL", "", "Redis URL, e.g. redis://127.0.0.1:6379/0; empty runs presence in embedded mode (gc requires it)"},
	{"redis-sentinels", "PRESENCE_REDIS_SENTINELS", "", "comma-separated host:port of Redis Sentinels; with PRESENCE_REDIS_MASTER selects Sentinel mode (PRESENCE_REDIS_URL then carries only credentials, TLS and database)"},
	{"redis-master", "PRESENCE_REDIS_MASTER", "", "name of the master the sentinels monitor (Sentinel mode)"},
	{"redis-cluster", "PRESENCE_REDIS_CLUSTER", "", "comma-separated seed host:port of a Redis Cluster; selects Cluster mode (PRESENCE_REDIS_URL then carries only credentials and TLS)"},
	{"key-prefix", "PRESENCE_KEY_PREFIX", "", "prefix for every Redis key and channel, e.g. to share one Redis between applications"},
	{"session-ttl", "PRESENCE_SESSION_TTL", "90s", "session lifetime without a refresh; refreshed every TTL/3 (1s to 1h)"},
	{"coalesce", "PRESENCE_COALESCE", "250ms", "per-post window for count updates: at most one frame per window per client (0 to 10s)"},
	{"handoff-grace", "PRESENCE_HANDOFF_GRACE", "30s", "how long a stopping app server keeps its tabs' sessions at least, for them to resume on another app server without a dip (0 to 10m; 0 removes them at once)"},
	{"gc-poll", "PRESENCE_GC_POLL", "1s", "longest time between two polls of the deadlines index (10ms to 1m)"},
	{"sweep-interval", "PRESENCE_SWEEP_INTERVAL", "5m", "time between gc's full repair sweeps of the viewers hash; 0 disables"},
	{"allowed-origins", "PRESENCE_ALLOWED_ORIGINS", "", "comma-separated WebSocket/CORS origin patterns, [scheme://]host[:port] with path.Match globs; a host without a port allows every port of it; empty: same host only; * allows any"},
	{"publish-keys", "PRESENCE_PUBLISH_KEYS", "", "comma-separated bearer keys for the publish API; empty turns publishing off"},
	{"log-level", "PRESENCE_LOG_LEVEL", "info", "log level: debug, info, warn or error"},
	{"log-format", "PRESENCE_LOG_FORMAT", "auto", "log format: console (lines for people), json, or auto: console on a terminal, JSON otherwise"},
	{"post-secret", "PRESENCE_POST_SECRET", "", "secret (at least 32 characters; several comma separated while rotating) that signs post tokens; empty accepts any post id"},
	{"views-ttl", "PRESENCE_VIEWS_TTL", "720h", "how long a post's views total is kept after its last view; 0 keeps it forever (needs PRESENCE_POST_SECRET)"},
	{"max-conns", "PRESENCE_MAX_CONNS", "auto", "most WebSockets this app server holds; auto: the open-files limit less headroom for Redis and HTTP; 0: no limit"},
	{"max-conns-per-ip", "PRESENCE_MAX_CONNS_PER_IP", "64", "most WebSockets one client IP (IPv6: one /64) holds, and opens in a minute; 0: no limit"},
	{"trusted-proxies", "PRESENCE_TRUSTED_PROXIES", "", "comma-separated CIDRs or IPs of proxies whose X-Forwarded-For header names the client"},
	{"admin-addr", "PRESENCE_ADMIN_ADDR", "", "internal listen address for /metrics, the detailed /readyz and /healthz; empty: /metrics stays on PRESENCE_ADDR"},
}

// Getenv looks names up in environ, entries of the form NAME=value as
// os.Environ gives them, a later entry winning over an earlier one.
func Getenv(environ []string) func(string) string {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	return func(k string) string { return vars[k] }
}

// UnknownVariables returns a line for each PRESENCE_* variable in environ
// that no setting reads, naming the setting it most likely meant: a typo
// such as PRESENCE_PUBLISH_KEY would otherwise leave publishing off
// without a word.
func UnknownVariables(environ []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "PRESENCE_") || seen[name] || isSetting(name) {
			continue
		}
		seen[name] = true
		line := name + " is not a setting and is ignored"
		if best, d := closestSetting(name); d <= max(3, len(name)/3) {
			line += "; did you mean " + best + "?"
		} else {
			line += "; the settings are listed by -h"
		}
		out = append(out, line)
	}
	return out
}

func isSetting(name string) bool {
	for _, s := range settings {
		if s.env == name {
			return true
		}
	}
	return false
}

// closestSetting returns the setting's variable nearest to name by edit
// distance, a name that only lacks or adds a suffix counting as near.
func closestSetting(name string) (string, int) {
	best, bestD := "", -1
	for _, s := range settings {
		d := editDistance(name, s.env)
		if strings.HasPrefix(s.env, name) || strings.HasPrefix(name, s.env) {
			d = min(d, 1)
		}
		if bestD < 0 || d < bestD {
			best, bestD = s.env, d
		}
	}
	return best, bestD
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// onlyFor names the settings that only one program reads; the others both
// read. A flag is defined only for a program that reads it, so that
// "gc -addr :9000" is refused instead of ignored. The variables are read by
// both whatever: one environment file often serves both.
var onlyFor = map[string]string{
	"addr": "presence", "coalesce": "presence", "handoff-grace": "presence",
	"allowed-origins": "presence", "publish-keys": "presence", "post-secret": "presence",
	"max-conns": "presence", "max-conns-per-ip": "presence", "trusted-proxies": "presence",
	"admin-addr": "presence",
	"gc-addr":    "gc", "sweep-interval": "gc",
}

// about is what -h says each program is, before its flags.
var about = map[string]string{
	"presence": "presence is the Presence app server: browsers hold a WebSocket to it and say which post they view;\n" +
		"it keeps presence in Redis (or, with no PRESENCE_REDIS_URL, in memory) and pushes live counts back.\n" +
		"Subcommand: presence healthcheck [-live] (exit 0 when the server on this machine is ready).\n" +
		"Settings are flags or PRESENCE_* variables; a flag overrides its variable.",
	"gc": "gc prunes the sessions of a Presence deployment on Redis that passed their deadline, and pushes the new counts.\n" +
		"Run one or more beside the app servers. Subcommands: gc check [-repair], gc migrate -from URL,\n" +
		"gc healthcheck [-live] (exit 0 when the gc on this machine is ready).\n" +
		"Settings are flags or PRESENCE_* variables; a flag overrides its variable.",
}

// program is the program a Load is for: "gc check" and "gc migrate" are gc.
func program(name string) string {
	p, _, _ := strings.Cut(name, " ")
	return p
}

// ErrVersion is what Load returns for -version: the caller prints the
// version and exits with status 0, as for flag.ErrHelp.
var ErrVersion = errors.New("version requested")

// Load parses args (without the program name) over the environment read by
// getenv. With -h it writes the usage to out and returns flag.ErrHelp.
func Load(name string, args []string, getenv func(string) string, out io.Writer) (Config, error) {
	// ContinueOnError: a bad flag comes back as an error for run to
	// return, rather than an os.Exit inside the flag package.
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)

	// Every flag's default is its variable's value when that is set, which is
	// how a flag overrides its variable.
	vals := make(map[string]*string, len(settings))
	for _, s := range settings {
		def := s.def
		if v, ok := lookup(getenv, s.env); ok {
			def = v
		}
		if only, ok := onlyFor[s.flag]; ok && only != program(name) {
			vals[s.flag] = &def
			continue
		}
		// The flag package prints the default itself: the variable's value
		// when it is set, which is what this run would use.
		help := fmt.Sprintf("%s (env %s)", s.help, s.env)
		vals[s.flag] = fs.String(s.flag, def, help)
	}
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		if a, ok := about[program(name)]; ok {
			fmt.Fprintf(out, "%s\n\n", a)
		}
		fmt.Fprintf(out, "Usage of %s:\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	// The flag package stops parsing at the first argument that is not a
	// flag, so the flags after a stray word would be silently ignored.
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q; settings are flags or PRESENCE_* variables (see -h)", fs.Arg(0))
	}
	if *showVersion {
		return Config{}, ErrVersion
	}
	c := Config{
		Addr:           *vals["addr"],
		GCAddr:         *vals["gc-addr"],
		RedisURL:       strings.TrimSpace(*vals["redis-url"]),
		KeyPrefix:      *vals["key-prefix"],
		RedisSentinels: splitList(*vals["redis-sentinels"]),
		RedisMaster:    strings.TrimSpace(*vals["redis-master"]),
		RedisCluster:   splitList(*vals["redis-cluster"]),
		AllowedOrigins: splitList(*vals["allowed-origins"]),
		PublishKeys:    splitList(*vals["publish-keys"]),
		LogLevel:       strings.ToLower(strings.TrimSpace(*vals["log-level"])),
		LogFormat:      strings.ToLower(strings.TrimSpace(*vals["log-format"])),
		PostSecrets:    splitList(*vals["post-secret"]),
		AdminAddr:      strings.TrimSpace(*vals["admin-addr"]),
	}

	// Parsing errors are collected rather than returned, so one start-up
	// lists every problem of the configuration at once, each naming its
	// variable.
	var errs []error
	dur := func(flagName, env string, dst *time.Duration) {
		d, err := time.ParseDuration(*vals[flagName])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: not a duration (use Go syntax such as 90s or 250ms): %q", env, *vals[flagName]))
			// Validate then checks the default instead, so the error
			// above is the only one about this setting.
			d, _ = time.ParseDuration(defaultOf(flagName))
		}
		*dst = d
	}
	dur("session-ttl", "PRESENCE_SESSION_TTL", &c.SessionTTL)
	dur("coalesce", "PRESENCE_COALESCE", &c.Coalesce)
	dur("handoff-grace", "PRESENCE_HANDOFF_GRACE", &c.HandoffGrace)
	dur("gc-poll", "PRESENCE_GC_POLL", &c.GCPoll)
	dur("sweep-interval", "PRESENCE_SWEEP_INTERVAL", &c.SweepInterval)
	dur("views-ttl", "PRESENCE_VIEWS_TTL", &c.ViewsTTL)
	count := func(env, v string, dst *int) {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s: want a whole number, 0 for no limit, got %q", env, v))
			return
		}
		*dst = n
	}
	c.NoFile = openFilesLimit()
	if v := strings.TrimSpace(*vals["max-conns"]); strings.EqualFold(v, "auto") {
		c.MaxConns, c.MaxConnsAuto = DefaultMaxConns(c.NoFile), true
	} else {
		count("PRESENCE_MAX_CONNS", v, &c.MaxConns)
	}
	count("PRESENCE_MAX_CONNS_PER_IP", *vals["max-conns-per-ip"], &c.MaxConnsPerIP)
	for _, p := range splitList(*vals["trusted-proxies"]) {
		prefix, err := parsePrefix(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("PRESENCE_TRUSTED_PROXIES: %q is neither a CIDR (10.0.0.0/8) nor an IP address", p))
			continue
		}
		c.TrustedProxies = append(c.TrustedProxies, prefix)
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// parsePrefix reads a CIDR, or a single address as the prefix of its own.
// IPv4-mapped IPv6 prefixes become IPv4 ones, as peers' addresses do.
// Without that, a proxy listed as ::ffff:10.0.0.0/104 would never match,
// because the limiter compares unmapped peer addresses.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p.Addr().Is4In6() {
			// The first 96 bits are the ::ffff: mapping itself; a shorter
			// prefix also covers IPv6 addresses and has no IPv4 form.
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("an IPv4-mapped prefix shorter than /96")
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// DefaultMaxConns is the WebSocket limit derived from the open-files limit:
// each WebSocket holds one file, and the rest keeps a tenth (at least 64, at
// most 1,000) for Redis connections, HTTP requests and the admin listener,
// so /healthz and REST still answer when the limit is reached. 0 (unknown
// limit) means no limit. Under the 20,000 open files of the machine in
// docs/benchmarks.md it is 19,000.
func DefaultMaxConns(nofile uint64) int {
	if nofile == 0 {
		return 0
	}
	headroom := min(max(nofile/10, 64), 1000)
	// 0 would mean no limit: a tiny open-files limit must still cap the
	// WebSockets rather than lift the cap.
	if nofile <= headroom {
		return 1
	}
	return int(nofile - headroom)
}

// defaultOf is the default of the setting with this flag name; Load falls
// back on it when a value does not parse.
func defaultOf(flagName string) string {
	for _, s := range settings {
		if s.flag == flagName {
			return s.def
		}
	}
	return ""
}

// lookup treats a variable set to the empty string as unset, as shells and
// compose files often leave them so.
func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks every setting and reports all problems at once, each
// naming its variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, a := range []struct{ env, v string }{{"PRESENCE_ADDR", c.Addr}, {"PRESENCE_GC_ADDR", c.GCAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			bad("%s: want host:port or :port, got %q", a.env, a.v)
		}
	}
	sentinel := len(c.RedisSentinels) > 0
	cluster := len(c.RedisCluster) > 0
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		switch {
		case err != nil:
			bad("PRESENCE_REDIS_URL: %v", err)
		case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
			bad("PRESENCE_REDIS_URL: scheme must be redis://, rediss:// or unix://, got %q", u.Scheme)
		case u.Scheme != "unix" && u.Host == "" && !sentinel && !cluster:
			bad("PRESENCE_REDIS_URL: no host in %q", mask(c.RedisURL))
		case u.Scheme == "unix" && sentinel:
			bad("PRESENCE_REDIS_URL: a unix:// URL cannot go with PRESENCE_REDIS_SENTINELS, which name the master by its sentinels")
		case u.Scheme == "unix" && cluster:
			bad("PRESENCE_REDIS_URL: a unix:// URL cannot go with PRESENCE_REDIS_CLUSTER, whose nodes are host:port")
		case cluster && strings.Trim(u.Path, "/") != "" && strings.Trim(u.Path, "/") != "0":
			bad("PRESENCE_REDIS_URL: a Redis Cluster has only database 0, got %q", mask(c.RedisURL))
		}
	}
	// The three modes exclude each other, and a half-set Sentinel mode
	// would quietly fall back to embedded mode or to one node.
	switch {
	case cluster && sentinel:
		bad("PRESENCE_REDIS_CLUSTER and PRESENCE_REDIS_SENTINELS: set one of them, not both")
	case cluster && c.RedisMaster != "":
		bad("PRESENCE_REDIS_MASTER goes with PRESENCE_REDIS_SENTINELS, not with PRESENCE_REDIS_CLUSTER")
	case cluster && strings.ContainsAny(c.KeyPrefix, "{}"):
		// The first {...} of a key is its hash tag: braces in the prefix
		// would put every key on one slot, or split a partition's keys.
		bad("PRESENCE_KEY_PREFIX: no { or } in Cluster mode, where they would choose the keys' slot; got %q", c.KeyPrefix)
	case sentinel && c.RedisMaster == "":
		bad("PRESENCE_REDIS_SENTINELS needs PRESENCE_REDIS_MASTER, the name of the master the sentinels monitor")
	case !sentinel && c.RedisMaster != "":
		bad("PRESENCE_REDIS_MASTER needs PRESENCE_REDIS_SENTINELS, the sentinels that know it")
	}
	for _, l := range []struct {
		env   string
		addrs []string
	}{{"PRESENCE_REDIS_SENTINELS", c.RedisSentinels}, {"PRESENCE_REDIS_CLUSTER", c.RedisCluster}} {
		for _, a := range l.addrs {
			host, port, err := net.SplitHostPort(a)
			if _, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil {
				bad("%s: want host:port, got %q", l.env, a)
			}
		}
	}
	if c.SessionTTL < time.Second || c.SessionTTL > time.Hour {
		bad("PRESENCE_SESSION_TTL: must be between 1s and 1h, got %s", c.SessionTTL)
	}
	if c.Coalesce < 0 || c.Coalesce > 10*time.Second {
		bad("PRESENCE_COALESCE: must be between 0 and 10s, got %s", c.Coalesce)
	}
	if c.HandoffGrace < 0 || c.HandoffGrace > 10*time.Minute {
		bad("PRESENCE_HANDOFF_GRACE: must be between 0 and 10m, got %s", c.HandoffGrace)
	}
	if c.GCPoll < 10*time.Millisecond || c.GCPoll > time.Minute {
		bad("PRESENCE_GC_POLL: must be between 10ms and 1m, got %s", c.GCPoll)
	}
	if c.SweepInterval < 0 {
		bad("PRESENCE_SWEEP_INTERVAL: must not be negative, got %s", c.SweepInterval)
	}
	// A malformed pattern would show only when a page could not connect;
	// checking here turns it into a start-up error that says what to write.
	for _, o := range c.AllowedOrigins {
		if _, err := origin.Parse(o); err != nil {
			bad("PRESENCE_ALLOWED_ORIGINS: %v", err)
		}
	}
	for i, k := range c.PublishKeys {
		if len(k) < 16 {
			bad("PRESENCE_PUBLISH_KEYS: key %d is %d characters long; use at least 16 random characters", i+1, len(k))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("PRESENCE_LOG_LEVEL: must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "auto", "console", "json":
	default:
		bad("PRESENCE_LOG_FORMAT: must be auto, console or json, got %q", c.LogFormat)
	}
	for i, k := range c.PostSecrets {
		if len(k) < 32 {
			bad("PRESENCE_POST_SECRET: secret %d is %d characters long; use at least 32 random characters (e.g. openssl rand -hex 32)", i+1, len(k))
		}
	}
	switch {
	case c.ViewsTTL < 0:
		bad("PRESENCE_VIEWS_TTL: must not be negative, got %s", c.ViewsTTL)
	case c.ViewsTTL == 0 && len(c.PostSecrets) == 0:
		// Measured before views totals expired (docs/benchmarks.md): 200
		// connections of one address left 8,196 keys without a TTL in 5 s.
		bad("PRESENCE_VIEWS_TTL: 0 keeps every post's views forever, and without PRESENCE_POST_SECRET any client can name new posts; set PRESENCE_POST_SECRET or a TTL")
	case c.ViewsTTL > 0 && c.ViewsTTL < c.SessionTTL:
		// Refreshes do not renew the total: shorter, a post could lose it
		// while people view it.
		bad("PRESENCE_VIEWS_TTL: must be 0 or at least PRESENCE_SESSION_TTL (%s), got %s", c.SessionTTL, c.ViewsTTL)
	}
	if c.MaxConns < 0 || c.MaxConnsPerIP < 0 {
		bad("PRESENCE_MAX_CONNS and PRESENCE_MAX_CONNS_PER_IP must not be negative")
	}
	if c.AdminAddr != "" {
		if _, port, err := net.SplitHostPort(c.AdminAddr); err != nil {
			bad("PRESENCE_ADMIN_ADDR: want host:port or :port, got %q", c.AdminAddr)
		} else if c.AdminAddr == c.Addr && port != "0" {
			// Port 0 is exempt: two listeners on :0 get different ports,
			// which is how the tests run both.
			bad("PRESENCE_ADMIN_ADDR: must differ from PRESENCE_ADDR (%s), or /metrics would be public again", c.Addr)
		}
	}
	return errors.Join(errs...)
}

// Embedded reports whether presence runs without Redis.
func (c Config) Embedded() bool {
	return c.RedisURL == "" && len(c.RedisSentinels) == 0 && len(c.RedisCluster) == 0
}

// RedisMode names how the processes reach Redis: "embedded" (none),
// "redis" (one node), "sentinel" or "cluster".
func (c Config) RedisMode() string {
	switch {
	case len(c.RedisSentinels) > 0:
		return "sentinel"
	case len(c.RedisCluster) > 0:
		return "cluster"
	case c.RedisURL != "":
		return "redis"
	default:
		return "embedded"
	}
}

// Fields returns the effective settings for the start-up log line, with the
// Redis password and the publish keys masked.
func (c Config) Fields() map[string]any {
	maxConns := strconv.Itoa(c.MaxConns)
	if c.MaxConnsAuto {
		maxConns += fmt.Sprintf(" (auto: open-files limit %d less headroom)", c.NoFile)
	}
	trusted := make([]string, len(c.TrustedProxies))
	for i, p := range c.TrustedProxies {
		trusted[i] = p.String()
	}
	return map[string]any{
		"addr":             c.Addr,
		"gc_addr":          c.GCAddr,
		"redis_url":        mask(c.RedisURL),
		"redis_sentinels":  c.RedisSentinels,
		"redis_master":     c.RedisMaster,
		"redis_cluster":    c.RedisCluster,
		"key_prefix":       c.KeyPrefix,
		"session_ttl":      c.SessionTTL.String(),
		"coalesce":         c.Coalesce.String(),
		"handoff_grace":    c.HandoffGrace.String(),
		"gc_poll":          c.GCPoll.String(),
		"sweep_interval":   c.SweepInterval.String(),
		"allowed_origins":  c.AllowedOrigins,
		"publish_keys":     masked(c.PublishKeys),
		"log_level":        c.LogLevel,
		"log_format":       c.LogFormat,
		"post_secret":      masked(c.PostSecrets),
		"views_ttl":        c.ViewsTTL.String(),
		"max_conns":        maxConns,
		"max_conns_per_ip": c.MaxConnsPerIP,
		"trusted_proxies":  trusted,
		"admin_addr":       c.AdminAddr,
	}
}

// masked stands one "***" for each secret, so the log says how many.
func masked(secrets []string) []string {
	out := make([]string, len(secrets))
	for i := range out {
		out[i] = "***"
	}
	return out
}

// mask hides the password of a URL, in the start-up line and in Validate's
// messages alike.
func mask(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	return u.String()
}

// LocalURL returns the http:// URL at which this machine reaches a listener
// bound to addr (host:port, as PRESENCE_ADDR or a listener's address): a
// listener on every address (":8080", "0.0.0.0:8080", "[::]:8080") is
// reached at loopback, written as the caller names it ("localhost" for a
// person to open, "127.0.0.1" for a probe that must not depend on
// /etc/hosts).
func LocalURL(addr, loopback string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = loopback
	}
	return "http://" + net.JoinHostPort(host, port) + "/", nil
}

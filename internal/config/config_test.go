package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoad_Defaults(t *testing.T) {
	c, err := Load("presence", nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.GCAddr != ":8081" || c.SessionTTL != 90*time.Second || c.Coalesce != 250*time.Millisecond ||
		c.GCPoll != time.Second || c.SweepInterval != 5*time.Minute || c.LogLevel != "info" || c.LogFormat != "auto" || !c.Embedded() {
		t.Errorf("defaults = %+v", c)
	}
}

func TestLoad_FlagsOverrideEnv(t *testing.T) {
	c, err := Load("presence", []string{"-session-ttl", "30s"}, env(map[string]string{
		"PRESENCE_SESSION_TTL":     "60s",
		"PRESENCE_REDIS_URL":       "redis://127.0.0.1:6379/2",
		"PRESENCE_ALLOWED_ORIGINS": " a.example.com, https://*.b.org ,",
		"PRESENCE_PUBLISH_KEYS":    "0123456789abcdef,fedcba9876543210",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.SessionTTL != 30*time.Second {
		t.Errorf("SessionTTL=%s, want the flag's 30s", c.SessionTTL)
	}
	if c.Embedded() || c.RedisURL != "redis://127.0.0.1:6379/2" {
		t.Errorf("RedisURL=%q", c.RedisURL)
	}
	if strings.Join(c.AllowedOrigins, "|") != "a.example.com|https://*.b.org" {
		t.Errorf("AllowedOrigins=%q", c.AllowedOrigins)
	}
	if f := c.Fields(); strings.Contains(strings.Join(f["publish_keys"].([]string), ""), "0123") {
		t.Errorf("Fields shows publish keys: %v", f["publish_keys"])
	}
}

func TestLoad_Errors(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"PRESENCE_SESSION_TTL": "90"}, nil, "PRESENCE_SESSION_TTL: not a duration"},
		{map[string]string{"PRESENCE_SESSION_TTL": "500ms"}, nil, "PRESENCE_SESSION_TTL: must be between 1s and 1h, got 500ms"},
		{map[string]string{"PRESENCE_COALESCE": "-1s"}, nil, "PRESENCE_COALESCE"},
		{map[string]string{"PRESENCE_GC_POLL": "1ms"}, nil, "PRESENCE_GC_POLL"},
		{map[string]string{"PRESENCE_REDIS_URL": "notaurl"}, nil, "PRESENCE_REDIS_URL: scheme must be"},
		{map[string]string{"PRESENCE_REDIS_URL": "http://x:1"}, nil, "PRESENCE_REDIS_URL: scheme must be"},
		{map[string]string{"PRESENCE_ADDR": "8080"}, nil, "PRESENCE_ADDR"},
		{map[string]string{"PRESENCE_LOG_LEVEL": "loud"}, nil, "PRESENCE_LOG_LEVEL"},
		{map[string]string{"PRESENCE_LOG_FORMAT": "text"}, nil, "PRESENCE_LOG_FORMAT: must be auto, console or json"},
		{map[string]string{"PRESENCE_ALLOWED_ORIGINS": "[bad"}, nil, "PRESENCE_ALLOWED_ORIGINS"},
		{map[string]string{"PRESENCE_ALLOWED_ORIGINS": "https://example.com/blog/"}, nil, `PRESENCE_ALLOWED_ORIGINS: "https://example.com/blog/" is a URL, not an origin: an origin has no path; write "https://example.com"`},
		{map[string]string{"PRESENCE_ALLOWED_ORIGINS": "127.0.0.1:18100/"}, nil, `write "127.0.0.1:18100"`},
		{map[string]string{"PRESENCE_ALLOWED_ORIGINS": "https://"}, nil, `"https://" is not an origin`},
		{map[string]string{"PRESENCE_PUBLISH_KEYS": "short"}, nil, "PRESENCE_PUBLISH_KEYS"},
		{map[string]string{"PRESENCE_REDIS_SENTINELS": "127.0.0.1:26379"}, nil, "PRESENCE_REDIS_SENTINELS needs PRESENCE_REDIS_MASTER"},
		{map[string]string{"PRESENCE_REDIS_MASTER": "m"}, nil, "PRESENCE_REDIS_MASTER needs PRESENCE_REDIS_SENTINELS"},
		{map[string]string{"PRESENCE_REDIS_SENTINELS": "26379", "PRESENCE_REDIS_MASTER": "m"}, nil, "PRESENCE_REDIS_SENTINELS: want host:port"},
		{map[string]string{"PRESENCE_REDIS_SENTINELS": "a:1", "PRESENCE_REDIS_MASTER": "m", "PRESENCE_REDIS_CLUSTER": "b:2"}, nil, "set one of them, not both"},
		{map[string]string{"PRESENCE_REDIS_CLUSTER": "b:2", "PRESENCE_REDIS_MASTER": "m"}, nil, "PRESENCE_REDIS_MASTER goes with PRESENCE_REDIS_SENTINELS"},
		{map[string]string{"PRESENCE_REDIS_CLUSTER": "b"}, nil, `PRESENCE_REDIS_CLUSTER: want host:port, got "b"`},
		{map[string]string{"PRESENCE_REDIS_CLUSTER": "b:2", "PRESENCE_REDIS_URL": "redis://:pw@/3"}, nil, "a Redis Cluster has only database 0"},
		{map[string]string{"PRESENCE_REDIS_CLUSTER": "b:2", "PRESENCE_REDIS_URL": "unix:///tmp/r.sock"}, nil, "unix:// URL cannot go with PRESENCE_REDIS_CLUSTER"},
		{map[string]string{"PRESENCE_REDIS_CLUSTER": "b:2", "PRESENCE_KEY_PREFIX": "site{1}:"}, nil, "no { or } in Cluster mode"},
		{map[string]string{"PRESENCE_REDIS_SENTINELS": "a:1", "PRESENCE_REDIS_MASTER": "m", "PRESENCE_REDIS_URL": "unix:///tmp/r.sock"}, nil, "cannot go with PRESENCE_REDIS_SENTINELS"},
		{nil, []string{"stray"}, "unexpected argument"},
		{nil, []string{"-nope"}, "flag provided but not defined"},
	}
	for _, tc := range cases {
		_, err := Load("presence", tc.args, env(tc.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v args %v: err=%v, want it to contain %q", tc.env, tc.args, err, tc.want)
		}
	}
	// Several problems are reported together, unparsable durations too.
	_, err := Load("presence", nil, env(map[string]string{
		"PRESENCE_SESSION_TTL": "90", "PRESENCE_LOG_LEVEL": "x", "PRESENCE_ADDR": "8080",
	}), &bytes.Buffer{})
	for _, want := range []string{"PRESENCE_SESSION_TTL: not a duration", "PRESENCE_LOG_LEVEL", "PRESENCE_ADDR"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err=%v, want it to name %s", err, want)
		}
	}
	if n := strings.Count(err.Error(), "PRESENCE_SESSION_TTL"); n != 1 {
		t.Errorf("PRESENCE_SESSION_TTL named %d times in %v, want once", n, err)
	}
}

// TestLoad_HelpDocumentsEverySetting: each program's -h says what it is
// and lists its own settings, and only those; every setting is some
// program's; a flag of the other program is refused.
func TestLoad_HelpDocumentsEverySetting(t *testing.T) {
	listed := map[string]bool{}
	for _, prog := range []string{"presence", "gc"} {
		var out bytes.Buffer
		_, err := Load(prog, []string{"-h"}, env(nil), &out)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s: err=%v, want flag.ErrHelp", prog, err)
		}
		if !strings.HasPrefix(out.String(), prog+" is") && !strings.HasPrefix(out.String(), prog+" prunes") {
			t.Errorf("%s -h does not start by saying what it is: %q", prog, out.String()[:min(80, out.Len())])
		}
		for _, s := range settings {
			only, ok := onlyFor[s.flag]
			mine := !ok || only == prog
			shown := strings.Contains(out.String(), "  -"+s.flag+" ") && strings.Contains(out.String(), s.env)
			if shown != mine {
				t.Errorf("%s -h lists -%s: %v, want %v", prog, s.flag, shown, mine)
			}
			listed[s.flag] = listed[s.flag] || shown
		}
	}
	for _, s := range settings {
		if !listed[s.flag] {
			t.Errorf("no program's -h documents -%s / %s", s.flag, s.env)
		}
	}
	if _, err := Load("gc", []string{"-addr", ":9000"}, env(nil), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "-addr") {
		t.Errorf("gc -addr :9000: err=%v, want the flag refused", err)
	}
}

// TestLoad_SentinelMode: the sentinels and the master name select Sentinel
// mode, which is not embedded, and a URL without a host is enough to carry
// the password.
func TestLoad_SentinelMode(t *testing.T) {
	c, err := Load("gc", nil, env(map[string]string{
		"PRESENCE_REDIS_SENTINELS": "127.0.0.1:26379, 127.0.0.1:26380",
		"PRESENCE_REDIS_MASTER":    "presence",
		"PRESENCE_REDIS_URL":       "redis://:hunter2pw@/2",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Embedded() || c.RedisMode() != "sentinel" || len(c.RedisSentinels) != 2 || c.RedisMaster != "presence" {
		t.Errorf("config %+v: want Sentinel mode with 2 sentinels and master presence", c)
	}
	if f := c.Fields(); strings.Contains(fmt.Sprint(f), "hunter2pw") {
		t.Errorf("start-up fields show the password: %v", f)
	}
}

// TestLoad_ClusterMode: seeds alone select Cluster mode; a URL without a
// host carries the credentials.
func TestLoad_ClusterMode(t *testing.T) {
	c, err := Load("gc", nil, env(map[string]string{
		"PRESENCE_REDIS_CLUSTER": "127.0.0.1:7000,127.0.0.1:7001",
		"PRESENCE_REDIS_URL":     "redis://:hunter2pw@",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Embedded() || c.RedisMode() != "cluster" || len(c.RedisCluster) != 2 {
		t.Errorf("config %+v: want Cluster mode with 2 seeds", c)
	}
	c, err = Load("gc", nil, env(map[string]string{"PRESENCE_REDIS_CLUSTER": "127.0.0.1:7000"}), &bytes.Buffer{})
	if err != nil || c.Embedded() || c.RedisMode() != "cluster" {
		t.Errorf("seeds alone: mode %q, err %v; want cluster", c.RedisMode(), err)
	}
}

func TestMaskHidesRedisPassword(t *testing.T) {
	if got := mask("redis://user:secret@host:6379/0"); strings.Contains(got, "secret") {
		t.Errorf("mask=%q still shows the password", got)
	}
}

func TestLoad_PublicEdgeSettings(t *testing.T) {
	c, err := Load("presence", nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ViewsTTL != 720*time.Hour || c.MaxConnsPerIP != 64 || !c.MaxConnsAuto || c.MaxConns != DefaultMaxConns(c.NoFile) ||
		len(c.PostSecrets) != 0 || len(c.TrustedProxies) != 0 || c.AdminAddr != "" {
		t.Errorf("defaults = %+v", c)
	}
	secret := strings.Repeat("s", 32)
	c, err = Load("presence", nil, env(map[string]string{
		"PRESENCE_POST_SECRET":      secret + "," + strings.Repeat("t", 40),
		"PRESENCE_VIEWS_TTL":        "0",
		"PRESENCE_MAX_CONNS":        "0",
		"PRESENCE_MAX_CONNS_PER_IP": "0",
		"PRESENCE_TRUSTED_PROXIES":  "10.0.0.0/8, 192.168.1.7 ,fd00::/8,10.1.2.3/8,::ffff:172.16.0.0/108",
		"PRESENCE_ADMIN_ADDR":       "127.0.0.1:9090",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var proxies []string
	for _, p := range c.TrustedProxies {
		proxies = append(proxies, p.String())
	}
	if len(c.PostSecrets) != 2 || c.ViewsTTL != 0 || c.MaxConns != 0 || c.MaxConnsAuto || c.MaxConnsPerIP != 0 ||
		strings.Join(proxies, " ") != "10.0.0.0/8 192.168.1.7/32 fd00::/8 10.0.0.0/8 172.16.0.0/12" || c.AdminAddr != "127.0.0.1:9090" {
		t.Errorf("parsed %+v, proxies %v", c, proxies)
	}
	if f := c.Fields(); strings.Contains(fmt.Sprint(f), secret) {
		t.Errorf("Fields shows the post secret: %v", f["post_secret"])
	}
}

func TestLoad_PublicEdgeErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"PRESENCE_POST_SECRET": "short"}, "PRESENCE_POST_SECRET: secret 1 is 5 characters long"},
		{map[string]string{"PRESENCE_VIEWS_TTL": "0"}, "PRESENCE_VIEWS_TTL: 0 keeps every post's views forever"},
		{map[string]string{"PRESENCE_VIEWS_TTL": "-1h"}, "PRESENCE_VIEWS_TTL: must not be negative"},
		{map[string]string{"PRESENCE_VIEWS_TTL": "a month"}, "PRESENCE_VIEWS_TTL: not a duration"},
		{map[string]string{"PRESENCE_MAX_CONNS": "lots"}, "PRESENCE_MAX_CONNS: want a whole number"},
		{map[string]string{"PRESENCE_MAX_CONNS_PER_IP": "-1"}, "PRESENCE_MAX_CONNS_PER_IP: want a whole number"},
		{map[string]string{"PRESENCE_TRUSTED_PROXIES": "10.0.0.0/33"}, `PRESENCE_TRUSTED_PROXIES: "10.0.0.0/33"`},
		{map[string]string{"PRESENCE_TRUSTED_PROXIES": "proxy.local"}, `PRESENCE_TRUSTED_PROXIES: "proxy.local"`},
		{map[string]string{"PRESENCE_TRUSTED_PROXIES": "::ffff:0.0.0.0/90"}, `PRESENCE_TRUSTED_PROXIES: "::ffff:0.0.0.0/90"`},
		{map[string]string{"PRESENCE_VIEWS_TTL": "30s"}, "PRESENCE_VIEWS_TTL: must be 0 or at least PRESENCE_SESSION_TTL (1m30s)"},
		{map[string]string{"PRESENCE_ADMIN_ADDR": "9090"}, "PRESENCE_ADMIN_ADDR: want host:port"},
		{map[string]string{"PRESENCE_ADMIN_ADDR": ":8080"}, "PRESENCE_ADMIN_ADDR: must differ from PRESENCE_ADDR"},
	} {
		_, err := Load("presence", nil, env(tc.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("env %v: err=%v, want it to contain %q", tc.env, err, tc.want)
		}
	}
	// Ephemeral ports may be asked for on both.
	if _, err := Load("presence", nil, env(map[string]string{"PRESENCE_ADDR": "127.0.0.1:0", "PRESENCE_ADMIN_ADDR": "127.0.0.1:0"}), &bytes.Buffer{}); err != nil {
		t.Errorf("both on port 0: %v", err)
	}
}

func TestDefaultMaxConns(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{
		{0, 0},         // unknown: no limit
		{20000, 19000}, // a tenth kept, at most 1,000
		{1024, 922},    // a tenth kept
		{256, 192},     // at least 64 kept
		{50, 1},        // nothing sensible left; one socket still works
		{1 << 20, 1047576},
	} {
		if got := DefaultMaxConns(tc.nofile); got != tc.want {
			t.Errorf("DefaultMaxConns(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
}

func TestUnknownVariables(t *testing.T) {
	got := UnknownVariables([]string{
		"PATH=/usr/bin",
		"PRESENCE_PUBLISH_KEY=abc",
		"PRESENCE_REDIS=redis://127.0.0.1:6379/0",
		"PRESENCE_REDIS_URL=redis://127.0.0.1:6379/0",
		"PRESENCE_ALLOWED_ORIGIN=example.com",
		"PRESENCE_SOMETHING_ELSE_ENTIRELY=1",
		"PRESENCE_PUBLISH_KEY=again",
	})
	want := []string{
		"PRESENCE_PUBLISH_KEY is not a setting and is ignored; did you mean PRESENCE_PUBLISH_KEYS?",
		"PRESENCE_REDIS is not a setting and is ignored; did you mean PRESENCE_REDIS_URL?",
		"PRESENCE_ALLOWED_ORIGIN is not a setting and is ignored; did you mean PRESENCE_ALLOWED_ORIGINS?",
		"PRESENCE_SOMETHING_ELSE_ENTIRELY is not a setting and is ignored; the settings are listed by -h",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("UnknownVariables =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if g := Getenv([]string{"A=1", "B=2", "A=3"}); g("A") != "3" || g("B") != "2" || g("C") != "" {
		t.Errorf("Getenv: A=%q B=%q C=%q, want 3, 2 and empty", g("A"), g("B"), g("C"))
	}
}

func TestLoad_Version(t *testing.T) {
	for _, prog := range []string{"presence", "gc"} {
		if _, err := Load(prog, []string{"-version"}, env(nil), &bytes.Buffer{}); !errors.Is(err, ErrVersion) {
			t.Errorf("%s -version: err=%v, want ErrVersion", prog, err)
		}
	}
}

func TestLocalURL(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{":8080", "http://localhost:8080/"},
		{"0.0.0.0:8080", "http://localhost:8080/"},
		{"[::]:8080", "http://localhost:8080/"},
		{"127.0.0.1:18100", "http://127.0.0.1:18100/"},
		{"[::1]:8080", "http://[::1]:8080/"},
		{"presence.internal:80", "http://presence.internal:80/"},
	} {
		if got, err := LocalURL(tc.addr, "localhost"); err != nil || got != tc.want {
			t.Errorf("LocalURL(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
		}
	}
	if _, err := LocalURL("8080", "localhost"); err == nil || !strings.Contains(err.Error(), `"8080"`) {
		t.Errorf("LocalURL(8080): err=%v, want one naming the address", err)
	}
}

package config

import (
	"bytes"
	"cmp"
	"encoding/json"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// These tests check docker-compose.yml and the files under deploy/ without a
// Docker engine, which neither CI nor most development machines have: a
// mistake in them would otherwise show only when someone runs a profile.

// repoRoot is where docker-compose.yml lives, and what the relative paths of
// its bind mounts start from.
const repoRoot = "../.."

// composeService is the part of a compose service the tests read.
type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Ports       []string `yaml:"ports"`
	Profiles    []string `yaml:"profiles"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Volumes []string `yaml:"volumes"`
}

func readCompose(t *testing.T) map[string]composeService {
	t.Helper()
	raw, err := os.ReadFile(repoRoot + "/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return compose.Services
}

// composeProfiles are the profiles the file defines, each with the services
// `docker compose --profile NAME up` adds to the default ones, and the Redis
// mode its app servers must run in.
var composeProfiles = map[string]struct {
	services []string
	mode     string
}{
	"sentinel": {
		[]string{"redis-primary", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3", "presence-sentinel", "gc-sentinel"},
		"sentinel",
	},
	"cluster": {
		[]string{"redis-node-1", "redis-node-2", "redis-node-3", "redis-node-4", "redis-node-5", "redis-node-6",
			"redis-cluster-init", "presence-cluster", "gc-cluster"},
		"cluster",
	},
}

// profileOf names the one profile of a service, "" for the default one.
func profileOf(s composeService) string {
	if len(s.Profiles) == 0 {
		return ""
	}
	return s.Profiles[0]
}

// isApp reports whether a service runs one of this repository's binaries.
func isApp(s composeService) bool { return s.Image == "presence:local" }

// binaryOf names the binary an app service runs: gc's is its entrypoint,
// the app server's the image's command.
func binaryOf(s composeService) string {
	if len(s.Entrypoint) > 0 {
		return path.Base(s.Entrypoint[0])
	}
	if len(s.Command) > 0 {
		return path.Base(s.Command[0])
	}
	return ""
}

// isRedisNode reports whether a service runs a Redis that holds data.
func isRedisNode(s composeService) bool {
	return strings.HasPrefix(s.Image, "redis:") && len(s.Command) > 0 && s.Command[0] == "redis-server"
}

func isSentinel(s composeService) bool {
	return strings.HasPrefix(s.Image, "redis:") && strings.Contains(strings.Join(s.Command, " "), "--sentinel")
}

func isClusterNode(s composeService) bool {
	v, _ := flagArgs(s.Command, "--cluster-enabled", 1)
	return isRedisNode(s) && len(v) == 1 && v[0] == "yes"
}

// flagArgs returns the n arguments that follow a redis-server flag.
func flagArgs(cmd []string, flag string, n int) ([]string, bool) {
	i := slices.Index(cmd, flag)
	if i < 0 || i+n >= len(cmd) {
		return nil, false
	}
	return cmd[i+1 : i+1+n], true
}

func flagArg(cmd []string, flag string) (string, bool) {
	v, ok := flagArgs(cmd, flag, 1)
	if !ok {
		return "", false
	}
	return v[0], true
}

// loadService runs the validation the service's binary runs at start on the
// environment the compose file gives it.
func loadService(s composeService) (Config, error) {
	return Load(binaryOf(s), nil, func(k string) string { return s.Environment[k] }, &strings.Builder{})
}

// TestComposeFile checks the default services: the ones `docker compose up`
// starts, the settings they pass (each must be one this package knows), and
// Redis started with the expiry events gc listens to.
func TestComposeFile(t *testing.T) {
	services := readCompose(t)
	for _, name := range []string{"redis", "presence", "gc"} {
		if _, ok := services[name]; !ok {
			t.Errorf("no %s service", name)
		} else if p := services[name].Profiles; len(p) > 0 {
			t.Errorf("%s has profiles %v: `docker compose up` would no longer start it", name, p)
		}
	}
	known := map[string]bool{}
	for _, s := range settings {
		known[s.env] = true
	}
	for name, svc := range services {
		for k := range svc.Environment {
			if strings.HasPrefix(k, "PRESENCE_") && !known[k] {
				t.Errorf("service %s sets %s, which no binary reads", name, k)
			}
		}
	}
	redis := services["redis"]
	if cmd := strings.Join(redis.Command, " "); !strings.Contains(cmd, "--notify-keyspace-events") ||
		!strings.Contains(cmd, "E") || !strings.Contains(cmd, "x") {
		t.Errorf("redis command %q does not turn on expired events (Ex)", cmd)
	}
	for _, name := range []string{"presence", "gc"} {
		svc := services[name]
		url := svc.Environment["PRESENCE_REDIS_URL"]
		if !strings.HasPrefix(url, "redis://redis:") {
			t.Errorf("%s: PRESENCE_REDIS_URL=%q, want the redis service", name, url)
		}
		if _, ok := svc.DependsOn["redis"]; !ok {
			t.Errorf("%s does not depend on redis", name)
		}
		c, err := loadService(svc)
		if err != nil {
			t.Errorf("%s: its environment does not pass validation: %v", name, err)
		} else if c.Embedded() {
			t.Errorf("%s would run in embedded mode", name)
		}
	}
	if bin := strings.Join(services["gc"].Entrypoint, " "); !strings.HasSuffix(bin, "/gc") {
		t.Errorf("gc entrypoint %q does not run the gc binary", bin)
	}
	// PHP on the host publishes events through Redis: its port is
	// published, on loopback only, as it has no password.
	if p := services["redis"].Ports; !slices.Contains(p, "127.0.0.1:6379:6379") {
		t.Errorf("redis ports %v, want 127.0.0.1:6379:6379", p)
	}
}

// TestComposeHealthchecks: every app server and gc has a healthcheck that
// runs its own binary's healthcheck subcommand (the image has no shell),
// and the settings it reads there name an address the binary listens on.
func TestComposeHealthchecks(t *testing.T) {
	for name, svc := range readCompose(t) {
		if !isApp(svc) {
			continue
		}
		bin := binaryOf(svc)
		want := []string{"CMD", "/usr/local/bin/" + bin, "healthcheck"}
		if !slices.Equal(svc.Healthcheck.Test, want) {
			t.Errorf("%s: healthcheck %q, want %q", name, svc.Healthcheck.Test, want)
		}
		c, err := loadService(svc)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		addr := c.GCAddr
		if bin == "presence" {
			addr = cmp.Or(c.AdminAddr, c.Addr)
		}
		if _, err := LocalURL(addr, "127.0.0.1"); err != nil {
			t.Errorf("%s: the healthcheck cannot find the server: %v", name, err)
		}
	}
}

// TestComposeProfiles checks that each profile's services carry it, and
// that what compose resolves across services holds together: a service
// starts only with the services it depends on, and profiles run beside the
// default stack, so their published ports must not collide with it.
func TestComposeProfiles(t *testing.T) {
	services := readCompose(t)
	for profile, p := range composeProfiles {
		for _, name := range p.services {
			svc, ok := services[name]
			switch {
			case !ok:
				t.Errorf("profile %s: no %s service", profile, name)
			case !slices.Equal(svc.Profiles, []string{profile}):
				t.Errorf("%s: profiles %v, want [%s]", name, svc.Profiles, profile)
			}
		}
	}
	hostPorts := map[string]string{}
	for name, svc := range services {
		for _, p := range svc.Profiles {
			if _, ok := composeProfiles[p]; !ok {
				t.Errorf("%s: unknown profile %q", name, p)
			}
		}
		for dep := range svc.DependsOn {
			d, ok := services[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on %s, which is not a service", name, dep)
			case len(d.Profiles) > 0 && !slices.ContainsFunc(svc.Profiles, func(p string) bool { return slices.Contains(d.Profiles, p) }):
				// Compose refuses to start a service whose dependency
				// its profiles leave out.
				t.Errorf("%s (profiles %v) depends on %s, which only profiles %v start", name, svc.Profiles, dep, d.Profiles)
			}
		}
		for _, port := range svc.Ports {
			parts := strings.Split(port, ":")
			if len(parts) < 2 || len(parts) > 3 {
				t.Errorf("%s: port %q is not [ip:]host:container", name, port)
				continue
			}
			host := parts[len(parts)-2]
			if other, ok := hostPorts[host]; ok {
				t.Errorf("%s and %s both publish host port %s", name, other, host)
			}
			hostPorts[host] = name
			// Ports of the extra stacks are for trying them on this machine,
			// not for the network.
			if len(svc.Profiles) > 0 && (len(parts) != 3 || parts[0] != "127.0.0.1") {
				t.Errorf("%s: port %q is not bound to 127.0.0.1", name, port)
			}
		}
	}
}

// TestComposeRedisModes loads every app server's and gc's environment as
// its binary would, and checks that it reaches the Redis of its own profile
// in that profile's mode.
func TestComposeRedisModes(t *testing.T) {
	services := readCompose(t)
	type loaded struct {
		name string
		cfg  Config
	}
	byProfile := map[string][]loaded{}
	for name, svc := range services {
		if !isApp(svc) {
			continue
		}
		profile := profileOf(svc)
		want := "redis"
		if profile != "" {
			want = composeProfiles[profile].mode
		}
		c, err := loadService(svc)
		if err != nil {
			t.Errorf("%s: its environment does not pass validation: %v", name, err)
			continue
		}
		if got := c.RedisMode(); got != want {
			t.Errorf("%s: Redis mode %q, want %q", name, got, want)
		}
		byProfile[profile] = append(byProfile[profile], loaded{name, c})

		sameProfile := func(env, addr, port string, kind func(composeService) bool) (string, bool) {
			host, p, err := net.SplitHostPort(addr)
			dep, ok := services[host]
			switch {
			case err != nil:
				t.Errorf("%s: %s names %q, not host:port", name, env, addr)
			case !ok:
				t.Errorf("%s: %s names %s, which is not a service", name, env, host)
			case profileOf(dep) != profile:
				t.Errorf("%s: %s names %s, of profile %q rather than %q", name, env, host, profileOf(dep), profile)
			case !kind(dep):
				t.Errorf("%s: %s names %s, which does not run what %s expects", name, env, host, env)
			case p != port:
				t.Errorf("%s: %s names port %s of %s, which listens on %s", name, env, p, host, port)
			default:
				return host, true
			}
			return "", false
		}
		for _, a := range c.RedisSentinels {
			host, ok := sameProfile("PRESENCE_REDIS_SENTINELS", a, "26379", isSentinel)
			if ok && svc.DependsOn[host].Condition != "service_healthy" {
				t.Errorf("%s does not wait for %s to be healthy", name, host)
			}
		}
		if len(c.RedisCluster) > 0 {
			var seeds, nodes []string
			for _, a := range c.RedisCluster {
				if host, ok := sameProfile("PRESENCE_REDIS_CLUSTER", a, "6379", isClusterNode); ok {
					seeds = append(seeds, host)
				}
			}
			for n, s := range services {
				if isClusterNode(s) && profileOf(s) == profile {
					nodes = append(nodes, n)
				}
			}
			slices.Sort(seeds)
			slices.Sort(nodes)
			if !slices.Equal(seeds, nodes) {
				t.Errorf("%s: PRESENCE_REDIS_CLUSTER names %v, want every node of the cluster, %v", name, seeds, nodes)
			}
			// A node that answers is not yet a cluster: the app server
			// must wait until the slots are assigned.
			waits := false
			for dep, d := range svc.DependsOn {
				if isClusterInit(services[dep]) && d.Condition == "service_completed_successfully" {
					waits = true
				}
			}
			if !waits {
				t.Errorf("%s does not wait for the cluster to be created (service_completed_successfully)", name)
			}
		}
	}
	for profile, apps := range byProfile {
		var bins []string
		for _, a := range apps {
			bins = append(bins, binaryOf(services[a.name]))
			// gc prunes what the app servers write: both must reach the
			// same Redis, under the same key prefix.
			f, g := a.cfg, apps[0].cfg
			if f.RedisURL != g.RedisURL || !slices.Equal(f.RedisSentinels, g.RedisSentinels) || f.RedisMaster != g.RedisMaster ||
				!slices.Equal(f.RedisCluster, g.RedisCluster) || f.KeyPrefix != g.KeyPrefix {
				t.Errorf("profile %q: %s and %s reach different Redis", profile, a.name, apps[0].name)
			}
		}
		slices.Sort(bins)
		if !slices.Equal(bins, []string{"gc", "presence"}) {
			t.Errorf("profile %q runs %v, want one app server and one gc", profile, bins)
		}
	}
	for profile := range composeProfiles {
		if _, ok := byProfile[profile]; !ok {
			t.Errorf("profile %s runs no app server", profile)
		}
	}
}

// TestComposeRedisNodes checks the flags of every Redis that holds data:
// all of them, a replica or cluster node included, may become the master gc
// listens to, and all keep the single-node service's persistence.
func TestComposeRedisNodes(t *testing.T) {
	services := readCompose(t)
	ref := services["redis"].Command
	refSave, _ := flagArg(ref, "--save")
	refAOF, _ := flagArg(ref, "--appendonly")
	for name, svc := range services {
		if !isRedisNode(svc) {
			continue
		}
		cmd := svc.Command
		if ev, _ := flagArg(cmd, "--notify-keyspace-events"); !strings.Contains(ev, "E") || !strings.ContainsAny(ev, "xA") {
			t.Errorf("%s: notify-keyspace-events %q, want expired events (Ex)", name, ev)
		}
		save, okSave := flagArg(cmd, "--save")
		aof, okAOF := flagArg(cmd, "--appendonly")
		if !okSave || !okAOF || save != refSave || aof != refAOF {
			t.Errorf("%s: --save %q --appendonly %q, want the redis service's %q and %q", name, save, aof, refSave, refAOF)
		}
		if r, ok := flagArgs(cmd, "--replicaof", 2); ok {
			if p, isNode := services[r[0]]; !isNode || !isRedisNode(p) || profileOf(p) != profileOf(svc) || r[1] != "6379" {
				t.Errorf("%s replicates %v, not a Redis of its profile", name, r)
			} else if _, dep := svc.DependsOn[r[0]]; !dep {
				t.Errorf("%s does not depend on %s, its primary", name, r[0])
			}
		}
		if profileOf(svc) == "sentinel" {
			// Sentinel hands replicas' announced addresses to clients
			// after a failover.
			if ip, _ := flagArg(cmd, "--replica-announce-ip"); ip != name {
				t.Errorf("%s: replica-announce-ip %q, want its service name", name, ip)
			}
		}
		if isClusterNode(svc) {
			for flag, want := range map[string]string{
				"--cluster-config-file":             "nodes.conf",
				"--cluster-announce-hostname":       name,
				"--cluster-preferred-endpoint-type": "hostname",
			} {
				if v, _ := flagArg(cmd, flag); v != want {
					t.Errorf("%s: %s %q, want %q", name, flag, v, want)
				}
			}
		}
	}
}

// sentinelConf is what TestComposeSentinelConf reads of the template.
type sentinelConf struct {
	resolveHostnames, announceHostnames bool
	// hostnamesBeforeMonitor: Sentinel rejects a hostname in "sentinel
	// monitor" unless resolve-hostnames came first.
	hostnamesBeforeMonitor bool
	master, host, port     string
	quorum                 string
	downAfter              map[string]string
}

func readSentinelConf(t *testing.T, file string) sentinelConf {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	c := sentinelConf{downAfter: map[string]string{}}
	for line := range strings.Lines(string(raw)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "sentinel" {
			continue
		}
		switch {
		case f[1] == "resolve-hostnames" && len(f) == 3:
			c.resolveHostnames = f[2] == "yes"
		case f[1] == "announce-hostnames" && len(f) == 3:
			c.announceHostnames = f[2] == "yes"
		case f[1] == "monitor" && len(f) == 6:
			c.master, c.host, c.port, c.quorum = f[2], f[3], f[4], f[5]
			c.hostnamesBeforeMonitor = c.resolveHostnames
		case f[1] == "down-after-milliseconds" && len(f) == 4:
			c.downAfter[f[2]] = f[3]
		}
	}
	return c
}

// bindMount finds the mount of a file from the repository, "./SRC:DST:ro",
// and checks that the file exists.
func bindMount(t *testing.T, name string, svc composeService, src string) (dst string) {
	t.Helper()
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[0] == src {
			if _, err := os.Stat(repoRoot + "/" + src); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
			if len(parts) < 3 || parts[2] != "ro" {
				t.Errorf("%s mounts %s writable; the file in the repository is not the container's to change", name, src)
			}
			return parts[1]
		}
	}
	t.Errorf("%s does not mount %s", name, src)
	return ""
}

// TestComposeSentinelConf checks the sentinels and their template: the
// master they monitor is the primary the replica follows, under the name
// the app servers ask for, with the quorum and timing the profile promises.
func TestComposeSentinelConf(t *testing.T) {
	services := readCompose(t)
	var sentinels []string
	for name, svc := range services {
		if !isSentinel(svc) {
			continue
		}
		sentinels = append(sentinels, name)
		tmpl := bindMount(t, name, svc, "./deploy/sentinel.conf")
		// Sentinel rewrites its config file and will not start on one
		// it cannot write: it must run on a copy, not on the mount.
		script := strings.Join(svc.Command, " ")
		if tmpl == "" || !strings.Contains(script, "cp "+tmpl+" /data/sentinel.conf") ||
			!strings.Contains(script, "redis-server /data/sentinel.conf --sentinel") {
			t.Errorf("%s: command %q does not run Sentinel on a copy of %s in /data", name, script, tmpl)
		}
	}
	if len(sentinels) < 3 {
		t.Fatalf("sentinels %v: want at least 3, so that a majority survives one's loss", sentinels)
	}
	conf := readSentinelConf(t, repoRoot+"/deploy/sentinel.conf")
	if !conf.resolveHostnames || !conf.announceHostnames || !conf.hostnamesBeforeMonitor {
		t.Errorf("deploy/sentinel.conf: want resolve-hostnames yes and announce-hostnames yes before sentinel monitor, got %+v", conf)
	}
	if conf.quorum != "2" {
		t.Errorf("deploy/sentinel.conf: quorum %q, want 2", conf.quorum)
	}
	if d := conf.downAfter[conf.master]; d != "5000" {
		t.Errorf("deploy/sentinel.conf: down-after-milliseconds %s %q, want 5000", conf.master, d)
	}
	primary, ok := services[conf.host]
	if !ok || !isRedisNode(primary) || profileOf(primary) != "sentinel" || conf.port != "6379" {
		t.Fatalf("deploy/sentinel.conf monitors %s:%s, not a Redis of the sentinel profile", conf.host, conf.port)
	}
	if _, replica := flagArgs(primary.Command, "--replicaof", 2); replica {
		t.Errorf("deploy/sentinel.conf monitors %s, which starts as a replica", conf.host)
	}
	for name, svc := range services {
		if r, ok := flagArgs(svc.Command, "--replicaof", 2); ok && profileOf(svc) == "sentinel" && r[0] != conf.host {
			t.Errorf("%s replicates %s, not the master the sentinels monitor (%s)", name, r[0], conf.host)
		}
		if isSentinel(svc) && svc.DependsOn[conf.host].Condition != "service_healthy" {
			// Sentinel resolves the monitored hostname as it reads the
			// file, and exits if it cannot.
			t.Errorf("%s does not wait for %s to be healthy", name, conf.host)
		}
		if isApp(svc) && profileOf(svc) == "sentinel" {
			if m := svc.Environment["PRESENCE_REDIS_MASTER"]; m != conf.master {
				t.Errorf("%s: PRESENCE_REDIS_MASTER=%q, but the sentinels monitor %q", name, m, conf.master)
			}
		}
	}
}

func isClusterInit(s composeService) bool {
	return strings.Contains(strings.Join(s.Command, " "), "cluster-init.sh")
}

// TestComposeClusterInit checks the one-shot service that creates the
// cluster: it must name every node, wait for them, and run the script the
// repository ships.
func TestComposeClusterInit(t *testing.T) {
	services := readCompose(t)
	var inits []string
	for name, svc := range services {
		if !isClusterInit(svc) {
			continue
		}
		inits = append(inits, name)
		dst := bindMount(t, name, svc, "./deploy/cluster-init.sh")
		if dst == "" || !slices.Contains(svc.Command, dst) {
			t.Errorf("%s: command %q does not run the mounted %s", name, svc.Command, dst)
		}
		var named, nodes []string
		for _, a := range strings.Fields(svc.Environment["CLUSTER_NODES"]) {
			host, port, err := net.SplitHostPort(a)
			if err != nil || port != "6379" {
				t.Errorf("%s: CLUSTER_NODES has %q, want host:6379", name, a)
			}
			named = append(named, host)
		}
		for n, s := range services {
			if isClusterNode(s) && profileOf(s) == profileOf(svc) {
				nodes = append(nodes, n)
				if svc.DependsOn[n].Condition != "service_healthy" {
					t.Errorf("%s does not wait for %s to be healthy", name, n)
				}
			}
		}
		slices.Sort(named)
		slices.Sort(nodes)
		if !slices.Equal(named, nodes) {
			t.Errorf("%s: CLUSTER_NODES names %v, want every cluster node of its profile, %v", name, named, nodes)
		}
		// Three masters, each with the one replica the script asks for.
		if len(nodes) < 6 {
			t.Errorf("%s: %d nodes, want at least 6 for 3 masters with a replica each", name, len(nodes))
		}
	}
	if len(inits) != 1 {
		t.Fatalf("cluster init services %v, want one", inits)
	}
	raw, err := os.ReadFile(repoRoot + "/deploy/cluster-init.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--cluster create", "--cluster-replicas 1", "--cluster-yes", "cluster_slots_assigned:16384", "cluster_state:ok"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("deploy/cluster-init.sh does not contain %q", want)
		}
	}
}

// TestComposeNoInterpolation: compose replaces $NAME in the file with the
// variable of the shell that runs it, silently empty when unset, so a shell
// variable meant for the container must be written $$NAME.
func TestComposeNoInterpolation(t *testing.T) {
	for name, svc := range readCompose(t) {
		var all []string
		all = append(all, svc.Command...)
		all = append(all, svc.Entrypoint...)
		all = append(all, svc.Ports...)
		all = append(all, svc.Volumes...)
		for _, v := range svc.Environment {
			all = append(all, v)
		}
		for _, s := range all {
			if strings.Contains(strings.ReplaceAll(s, "$$", ""), "$") {
				t.Errorf("%s: %q would be interpolated by compose", name, s)
			}
		}
	}
}

// TestDockerfile_Toolchain: the image builds with exactly the Go of
// go.mod's go line, and the build context keeps what the build needs.
func TestDockerfile_Toolchain(t *testing.T) {
	mod, err := os.ReadFile(repoRoot + "/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go ([0-9.]+)$`).FindSubmatch(mod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	docker, err := os.ReadFile(repoRoot + "/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	from := regexp.MustCompile(`(?m)^FROM golang:([^ ]+) AS build$`).FindSubmatch(docker)
	if from == nil || string(from[1]) != string(goLine[1]) {
		t.Errorf("Dockerfile builds with golang:%s, go.mod says go %s", from, goLine[1])
	}
	ignore, err := os.ReadFile(repoRoot + "/.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(regexp.MustCompile(`(?m)#.*$`).ReplaceAllString(string(ignore), ""))
	for _, need := range []string{"go.mod", "go.sum", "cmd", "internal"} {
		if slices.Contains(lines, need) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", need)
		}
	}
	if !slices.Contains(lines, ".git") {
		t.Error(".dockerignore does not leave out .git")
	}
}

// TestComposeSpec validates docker-compose.yml against the Compose
// Specification's JSON schema (testdata/compose-spec.json), which is what
// `docker compose config` checks first: a misspelt key or a value of the
// wrong type fails here rather than on a user's machine.
func TestComposeSpec(t *testing.T) {
	raw, err := os.ReadFile(repoRoot + "/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	// Through JSON, so the validator sees JSON's types (and the merge keys
	// of the YAML anchors resolved).
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	schema, err := c.Compile("testdata/compose-spec.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(inst); err != nil {
		t.Errorf("docker-compose.yml does not follow the Compose Specification:\n%v", err)
	}
}

package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/presence/presence/internal/proctest"
	"github.com/presence/presence/internal/redistest"
)

// These tests hold the operations kit to the binaries it deploys. They
// build presence and gc, run them against a real redis-server (and presence
// in embedded mode), and check every metric the dashboard and the rules
// name, and the label values they select, against what each binary's
// /metrics serves; they run promtool on the rules and systemd-analyze on
// the units. Both tools are required, not optional: scripts/test.sh
// installs them.

// presenceBin and gcBin are the binaries under test, built once per run
// without -race: they are what the units start, and only their output is
// checked here.
var presenceBin, gcBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "presence-deploy")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := proctest.Build(dir, nil, "../cmd/presence", "../cmd/gc"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	presenceBin, gcBin = filepath.Join(dir, "presence"), filepath.Join(dir, "gc")
	return m.Run()
}

// scrapeJobs are the scrape jobs of prometheus/prometheus.yml, each with
// the binary it scrapes: the rules select by these names.
// TestPrometheusConfig keeps the two in step.
var scrapeJobs = map[string]string{"presence": "presence", "presence-gc": "gc"}

// generated are series Prometheus makes itself rather than scraping.
var generated = map[string]bool{"up": true}

// scrapes maps a binary to what its /metrics served: each sample name to
// the label sets of its samples.
type scrapes map[string]map[string][]labels

// labels are the labels of one sample, by name.
type labels map[string]string

// TestBinaries runs the binaries as the units do, with presence.env's
// settings, and holds the dashboard and the rules to what they serve.
func TestBinaries(t *testing.T) {
	redis := redistest.Start(t)
	settings := envFile(t, true)
	// The env file's own addresses would collide with anything on the
	// machine; everything else it says is used as it stands.
	local := []string{
		"PRESENCE_REDIS_URL=" + redis.URL(),
		"PRESENCE_ADDR=127.0.0.1:0",
		"PRESENCE_ADMIN_ADDR=127.0.0.1:0",
		"PRESENCE_GC_ADDR=127.0.0.1:0",
	}
	app := start(t, "presence", presenceBin, append(slices.Clip(settings), local...))
	gc := start(t, "gc", gcBin, append(slices.Clip(settings), local...))
	embedded := start(t, "presence (embedded)", presenceBin, []string{"PRESENCE_ADDR=127.0.0.1:0", "PRESENCE_ADMIN_ADDR=127.0.0.1:0"})

	appAddr := app.field(t, "admin_addr")
	gcAddr := gc.field(t, "addr")
	embeddedAddr := embedded.field(t, "admin_addr")
	for _, addr := range []string{appAddr, gcAddr, embeddedAddr} {
		waitReady(t, addr)
	}
	// One app server binary, two modes: it serves the collector's metrics
	// only when embedded, and the Redis ones only with Redis; its job is
	// scraped in either mode, so either scrape counts for it.
	got := scrapes{
		"presence": union(scrape(t, appAddr), scrape(t, embeddedAddr)),
		"gc":       scrape(t, gcAddr),
	}

	t.Run("dashboard", func(t *testing.T) {
		exprs, vars := dashboard(t)
		vars = resolveVars(t, vars, got)
		for _, e := range exprs {
			checkNamed(t, e.where, substitute(t, e.expr, vars), got)
		}
	})

	t.Run("rules", func(t *testing.T) {
		for _, r := range rules(t) {
			checkNamed(t, r.Alert, r.Expr, got)
		}
	})

	// With nothing to drain each stops at once, well inside its unit's
	// stop timeout; a binary that hangs on SIGTERM would be killed by
	// systemd.
	t.Run("SIGTERM stops each within its unit's TimeoutStopSec", func(t *testing.T) {
		limits := map[*proc]time.Duration{
			app:      unitFile(t, "presence.service").duration(t, "Service", "TimeoutStopSec"),
			embedded: unitFile(t, "presence.service").duration(t, "Service", "TimeoutStopSec"),
			gc:       unitFile(t, "gc.service").duration(t, "Service", "TimeoutStopSec"),
		}
		var wg sync.WaitGroup
		for p, limit := range limits {
			wg.Go(func() {
				if err := p.terminate(limit); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	})

	// Read once the processes have exited, when their output is complete.
	t.Run("env file names only settings", func(t *testing.T) {
		for _, p := range []*proc{app, gc} {
			select {
			case <-p.Done():
			default:
				t.Fatalf("%s has not stopped, so its output may be incomplete", p.Name)
			}
			for _, line := range p.Log.Lines() {
				if msg, _ := line["msg"].(string); strings.Contains(msg, "is not a setting") {
					t.Errorf("%s with presence.env: %s", p.Name, msg)
				}
			}
		}
	})
}

// The env file's placeholders must not be usable: uncommented as they
// stand, both binaries refuse to start and name the variable.
func TestEnvFilePlaceholdersRefused(t *testing.T) {
	settings := envFile(t, false)
	for _, bin := range []string{presenceBin, gcBin} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = append(proctest.Env(), settings...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("%s with presence.env's examples as they stand: %v, want exit status 1\n%s", filepath.Base(bin), err, out)
		}
		for _, name := range []string{"PRESENCE_POST_SECRET", "PRESENCE_PUBLISH_KEYS"} {
			if !bytes.Contains(out, []byte(name)) {
				t.Errorf("%s refused presence.env's examples without naming %s:\n%s", filepath.Base(bin), name, out)
			}
		}
	}
}

// envFile returns the settings of systemd/presence.env, NAME=value, with
// the examples commented out too. With fill, each <placeholder> becomes a
// value long enough for any secret; without, placeholders stay as written.
func envFile(t *testing.T, fill bool) []string {
	t.Helper()
	b, err := os.ReadFile("systemd/presence.env")
	if err != nil {
		t.Fatal(err)
	}
	// An example is a whole line NAME=value behind "#"; prose that merely
	// mentions a variable does not start with its name.
	assignment := regexp.MustCompile(`^#?\s*(PRESENCE_[A-Z0-9_]+)=(.*)$`)
	var out []string
	active := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		m := assignment.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name, value := m[1], m[2]
		if !strings.HasPrefix(line, "#") {
			active[name] = value
		}
		if fill && strings.HasPrefix(value, "<") {
			value = strings.Repeat("0123456789abcdef", 4)
		}
		out = append(out, name+"="+value)
	}
	// What an operator needs in front of them, whether set or shown.
	for _, name := range []string{"PRESENCE_REDIS_URL", "PRESENCE_ADDR", "PRESENCE_GC_ADDR", "PRESENCE_ADMIN_ADDR",
		"PRESENCE_ALLOWED_ORIGINS", "PRESENCE_POST_SECRET", "PRESENCE_PUBLISH_KEYS", "PRESENCE_TRUSTED_PROXIES"} {
		if !slices.ContainsFunc(out, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }) {
			t.Errorf("presence.env does not show %s", name)
		}
	}
	// The internal listeners serve profiles and the detailed /readyz.
	for _, name := range []string{"PRESENCE_GC_ADDR", "PRESENCE_ADMIN_ADDR"} {
		if v := active[name]; !strings.HasPrefix(v, "127.0.0.1:") {
			t.Errorf("presence.env sets %s=%q, want a loopback address", name, v)
		}
	}
	return out
}

// proc is a running binary, killed when its test ends if it still runs.
type proc struct{ *proctest.Proc }

// start starts bin as name with env on top of proctest.Env.
func start(t *testing.T, name, bin string, env []string) *proc {
	t.Helper()
	return &proc{proctest.Start(t, name, bin, env...)}
}

// field waits for the first log line that has key and returns its value:
// the binaries log each listener's address once it is bound.
func (p *proc) field(t *testing.T, key string) string {
	t.Helper()
	line := p.WaitLog(t, 10*time.Second, strconv.Quote(key), func(l map[string]any) bool {
		_, ok := l[key].(string)
		return ok
	})
	return line[key].(string)
}

// terminate sends SIGTERM, as systemd's KillSignal does, and waits up to
// limit for a clean exit; then it kills the process, as systemd would.
func (p *proc) terminate(limit time.Duration) error {
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("%s: SIGTERM: %w", p.Name, err)
	}
	select {
	case <-p.Done():
		if p.Err() != nil {
			return fmt.Errorf("%s exited after SIGTERM with %v, want status 0", p.Name, p.Err())
		}
		return nil
	case <-time.After(limit):
		_ = p.Cmd.Process.Kill()
		<-p.Done()
		return fmt.Errorf("%s still running %s after SIGTERM: systemd would have killed it", p.Name, limit)
	}
}

// client bounds every request, so a process that accepts and never
// answers fails the test rather than hanging it.
var client = &http.Client{Timeout: 5 * time.Second}

// waitReady polls /readyz until it answers 200, so that what is scraped is
// a process that reached its store, as one Prometheus sees in service.
func waitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%s %s", resp.Status, b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s/readyz not ready within 15s; last answer: %s", addr, last)
}

// scrape returns the samples of addr's /metrics by name: a histogram shows
// as its _bucket, _sum and _count, as a query must name it.
func scrape(t *testing.T, addr string) map[string][]labels {
	t.Helper()
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %s", addr, resp.Status)
	}
	samples := map[string][]labels{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// A sample, name{label="value",...} value, reads as a selector
		// whose matchers are its labels; the value names nothing.
		sels, err := selectors(line)
		if err != nil || len(sels) != 1 {
			t.Fatalf("%s/metrics: cannot read %q (%v)", addr, line, err)
		}
		ls := labels{}
		for _, m := range sels[0].matchers {
			ls[m.label] = m.value
		}
		samples[sels[0].name] = append(samples[sels[0].name], ls)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return samples
}

func union(scrapes ...map[string][]labels) map[string][]labels {
	out := map[string][]labels{}
	for _, s := range scrapes {
		for name, ls := range s {
			out[name] = append(out[name], ls...)
		}
	}
	return out
}

// checkNamed fails t for every selector of expr that would select nothing
// from the binaries of the jobs it selects: a metric they do not export, or
// a label value none of its series has. A selector without a job matcher
// is about every job, and any binary's series will do.
func checkNamed(t *testing.T, where, expr string, got scrapes) {
	t.Helper()
	sels, err := selectors(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if len(sels) == 0 {
		t.Errorf("%s: %q names no metric", where, expr)
	}
	for _, sel := range sels {
		jobs, err := selectedJobs(sel)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if len(jobs) == 0 {
			t.Errorf("%s: %s selects none of prometheus.yml's jobs in %q", where, sel.name, expr)
			continue
		}
		// up has no binary to look in, but its job matcher must still name
		// a real job: a misspelt one makes the alert silent for good.
		if generated[sel.name] {
			continue
		}
		var bins []string
		var served []labels
		for _, job := range jobs {
			bins = append(bins, scrapeJobs[job])
			served = append(served, got[scrapeJobs[job]][sel.name]...)
		}
		if len(served) == 0 {
			t.Errorf("%s: %s is not exported by %s (jobs %s), in %q", where, sel.name, strings.Join(bins, " or "), strings.Join(jobs, ", "), expr)
			continue
		}
		for _, m := range sel.matchers {
			if err := checkMatcher(m, served); err != nil {
				t.Errorf("%s: %s{%s%s%q} does not fit what %s serves: %v, in %q", where, sel.name, m.label, m.op, m.value, strings.Join(bins, " or "), err, expr)
			}
		}
	}
}

// selectedJobs returns the jobs, sorted, a series of sel can come from:
// those its job matchers (all of them, as Prometheus ANDs them) accept.
func selectedJobs(sel selector) ([]string, error) {
	var jobs []string
	for job := range scrapeJobs {
		ok := true
		for _, m := range sel.matchers {
			if m.label != "job" {
				continue
			}
			match, err := m.matches(job)
			if err != nil {
				return nil, err
			}
			ok = ok && match
		}
		if ok {
			jobs = append(jobs, job)
		}
	}
	sort.Strings(jobs)
	return jobs, nil
}

// checkMatcher returns what is wrong with m as a matcher of a metric whose
// series the binaries served: a label none of them has or, for = and =~, a
// value none of them has. A renamed label value passes promtool and leaves
// an alert silent; the binaries create every labelled series at start-up,
// so a value not served here is one they never serve. A negative matcher
// needs no series to pass: "every op but ping" may be none.
func checkMatcher(m matcher, served []labels) error {
	switch m.label {
	case "job", "__name__":
		return nil // checked by the caller
	case "instance":
		return nil // Prometheus's target address, which no binary serves
	}
	var values []string
	for _, ls := range served {
		if v, ok := ls[m.label]; ok && !slices.Contains(values, v) {
			values = append(values, v)
		}
	}
	if len(values) == 0 {
		return fmt.Errorf("the series have no %s label", m.label)
	}
	sort.Strings(values)
	for _, v := range values {
		ok, err := m.matches(v)
		if err != nil {
			return err
		}
		if ok || m.op == "!=" || m.op == "!~" {
			return nil
		}
	}
	return fmt.Errorf("no series has this %s; its values are %s", m.label, strings.Join(values, ", "))
}

func TestCheckMatcher(t *testing.T) {
	served := []labels{{"cause": "origin"}, {"cause": "server_full"}, {}}
	tests := []struct {
		m    matcher
		want string // "" for no error
	}{
		{matcher{"cause", "=", "server_full"}, ""},
		{matcher{"cause", "=", "server-full"}, "no series has this cause; its values are origin, server_full"},
		{matcher{"cause", "=~", "server_.*|per_ip"}, ""},
		{matcher{"cause", "=~", "per_ip|bad_handshake"}, "no series has this cause; its values are origin, server_full"},
		{matcher{"cause", "!=", "origin"}, ""},
		{matcher{"cause", "!~", "origin|server_full"}, ""},
		{matcher{"op", "!=", "ping"}, "the series have no op label"},
		{matcher{"cause", "=~", "(origin"}, "error parsing regexp"},
		{matcher{"instance", "=", "a:9091"}, ""},
	}
	for _, tt := range tests {
		err := checkMatcher(tt.m, served)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if (err == nil) != (tt.want == "") || !strings.Contains(got, tt.want) {
			t.Errorf("checkMatcher(%s%s%q) = %v, want %q", tt.m.label, tt.m.op, tt.m.value, err, tt.want)
		}
	}
}

// namedExpr is an expression and where in the dashboard it is.
type namedExpr struct{ where, expr string }

// dashboard returns every query of grafana/presence.json, its variables'
// queries among them, and the variables by name. It also checks what an
// import relies on: a Prometheus data source variable that every panel
// uses, a job variable, and panel ids that are unique.
func dashboard(t *testing.T) ([]namedExpr, map[string]string) {
	t.Helper()
	b, err := os.ReadFile("grafana/presence.json")
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	}
	type panel struct {
		ID         int             `json:"id"`
		Type       string          `json:"type"`
		Title      string          `json:"title"`
		Datasource json.RawMessage `json:"datasource"`
		Targets    []target        `json:"targets"`
		Panels     []panel         `json:"panels"`
	}
	var d struct {
		SchemaVersion int     `json:"schemaVersion"`
		UID           string  `json:"uid"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				Definition string          `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/presence.json: %v", err)
	}
	if d.SchemaVersion < 36 || d.UID == "" {
		t.Errorf("dashboard schemaVersion %d, uid %q: want 36 or later and a uid, so imports and links are stable", d.SchemaVersion, d.UID)
	}
	vars := map[string]string{}
	var exprs []namedExpr
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			var q string
			if json.Unmarshal(v.Query, &q) != nil || q != "prometheus" {
				t.Errorf("variable %s: data source query %s, want \"prometheus\"", v.Name, v.Query)
			}
			vars[v.Name] = "prometheus"
		case "query":
			if v.Definition == "" {
				t.Errorf("variable %s has no definition", v.Name)
			}
			vars[v.Name] = v.Definition
			exprs = append(exprs, namedExpr{"variable " + v.Name, v.Definition})
		default:
			t.Errorf("variable %s: type %s, want datasource or query", v.Name, v.Type)
		}
	}
	if vars["datasource"] != "prometheus" || vars["job"] == "" {
		t.Errorf("dashboard variables %v: want a Prometheus datasource variable and a job variable", slices.Sorted(maps.Keys(vars)))
	}
	ids := map[int]string{}
	var visit func([]panel)
	visit = func(ps []panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.Type != "row" && !strings.Contains(string(p.Datasource), "${datasource}") {
				t.Errorf("panel %q: data source %s, want ${datasource}", p.Title, p.Datasource)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, namedExpr{"panel " + strconv.Quote(p.Title), tg.Expr})
			}
			visit(p.Panels)
		}
	}
	visit(d.Panels)
	return exprs, vars
}

// resolveVars gives each label_values(metric, job) variable the jobs whose
// binary exports metric, as Grafana would find them with everything
// selected, so a panel on $gc_job is checked against the binaries that run
// the collector. Other label variables match anything.
func resolveVars(t *testing.T, vars map[string]string, got scrapes) map[string]string {
	t.Helper()
	out := map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)
	for name, def := range vars {
		m := labelValues.FindStringSubmatch(def)
		switch {
		case name == "datasource":
			out[name] = def
		case m == nil:
			t.Errorf("variable %s: %q is not label_values(selector, label)", name, def)
		case m[2] != "job":
			out[name] = ".*"
		default:
			sels, err := selectors(m[1])
			if err != nil || len(sels) != 1 {
				t.Errorf("variable %s: %q: want one selector (%v)", name, def, err)
				continue
			}
			var jobs []string
			for job, bin := range scrapeJobs {
				if len(got[bin][sels[0].name]) > 0 {
					jobs = append(jobs, job)
				}
			}
			if len(jobs) == 0 {
				t.Errorf("variable %s: no binary exports %s, so it would list no job", name, sels[0].name)
			}
			sort.Strings(jobs)
			out[name] = strings.Join(jobs, "|")
		}
	}
	return out
}

// substitute replaces Grafana's $name and ${name} with vars; a variable the
// dashboard does not define fails the test.
func substitute(t *testing.T, expr string, vars map[string]string) string {
	t.Helper()
	re := regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)
	return re.ReplaceAllStringFunc(expr, func(s string) string {
		m := re.FindStringSubmatch(s)
		name := m[1] + m[2]
		v, ok := vars[name]
		if !ok {
			t.Errorf("%q uses $%s, which the dashboard does not define", expr, name)
		}
		return v
	})
}

// rule is one alerting rule of prometheus/presence-rules.yml.
type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// rules returns the alerting rules, having checked that each has what an
// operator paged at night needs: a for: (no paging on one scrape), a
// severity to route by, and a summary and a description.
func rules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile("prometheus/presence-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("presence-rules.yml: %v", err)
	}
	var out []rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: rule %q is not an alert", g.Name, r.Record)
				continue
			}
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("%s: for: %q: %v", r.Alert, r.For, err)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		t.Fatal("presence-rules.yml has no alerts")
	}
	return out
}

// promtool returns promtool's path, failing the test where it is missing.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: scripts/test.sh installs it (Debian package prometheus), or apt-get install --no-install-recommends prometheus")
	}
	return p
}

// run runs a command in dir and returns its combined output, failing the
// test if it exits non-zero.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPrometheusRules runs promtool on the rules and on their unit tests.
func TestPrometheusRules(t *testing.T) {
	p := promtool(t)
	run(t, "prometheus", p, "check", "rules", "presence-rules.yml")
	run(t, "prometheus", p, "test", "rules", "presence-rules.test.yml")
	// Every rule has a promtool test that makes it fire: a rule that can
	// never fire (a wrong label, a misspelt job) passes check rules.
	b, err := os.ReadFile("prometheus/presence-rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	rs := rules(t)
	for _, name := range []string{"PresenceStoreErrors", "PresenceGCExpiryLag", "PresenceGCStuck", "PresenceServerFull",
		"PresenceHandshakesRefused", "PresenceOriginsRefused"} {
		if !slices.ContainsFunc(rs, func(r rule) bool { return r.Alert == name }) {
			t.Errorf("presence-rules.yml has no %s", name)
		}
		if !regexp.MustCompile(`alertname: ` + name + `\n\s+exp_alerts:\n\s+- exp_labels`).Match(b) {
			t.Errorf("presence-rules.test.yml has no case where %s fires", name)
		}
	}
}

// TestPrometheusConfig checks the example configuration, and that its jobs
// are the ones the rules select and TestBinaries maps to binaries.
func TestPrometheusConfig(t *testing.T) {
	p := promtool(t)
	// check config also loads the rule files it names.
	run(t, "prometheus", p, "check", "config", "prometheus.yml")
	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	var jobs []string
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	want := slices.Sorted(maps.Keys(scrapeJobs))
	if slices.Sort(jobs); !slices.Equal(jobs, want) {
		t.Errorf("prometheus.yml scrape jobs %v, want %v (the jobs the rules and the test use)", jobs, want)
	}
	if !slices.Contains(cfg.RuleFiles, "presence-rules.yml") {
		t.Errorf("prometheus.yml rule_files %v: want presence-rules.yml", cfg.RuleFiles)
	}
}

// unit is a parsed systemd unit file: section, key, values in order.
type unit struct {
	path string
	keys map[string]map[string][]string
}

func unitFile(t *testing.T, name string) unit {
	t.Helper()
	path := filepath.Join("systemd", name)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{path: path, keys: map[string]map[string][]string{}}
	section := ""
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u.keys[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot read %q", path, line)
			}
			u.keys[section][strings.TrimSpace(k)] = append(u.keys[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// get returns the last value of key, as systemd takes the last one, and
// whether it is set at all.
func (u unit) get(section, key string) (string, bool) {
	vs := u.keys[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// duration reads a systemd time span: "15s", "1min 30s", or bare seconds.
func (u unit) duration(t *testing.T, section, key string) time.Duration {
	t.Helper()
	v, ok := u.get(section, key)
	if !ok {
		t.Fatalf("%s: no %s=", u.path, key)
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	s := strings.NewReplacer(" ", "", "min", "m", "sec", "s", "msec", "ms").Replace(v)
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %s=%s: %v", u.path, key, v, err)
	}
	return d
}

// hardening is what both units must set, as the unit says it.
var hardening = map[string]string{
	"DynamicUser":             "yes",
	"NoNewPrivileges":         "yes",
	"CapabilityBoundingSet":   "",
	"ProtectSystem":           "strict",
	"ProtectHome":             "yes",
	"PrivateTmp":              "yes",
	"PrivateDevices":          "yes",
	"ProtectKernelTunables":   "yes",
	"ProtectKernelModules":    "yes",
	"ProtectKernelLogs":       "yes",
	"ProtectControlGroups":    "yes",
	"ProtectClock":            "yes",
	"ProtectHostname":         "yes",
	"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	"RestrictNamespaces":      "yes",
	"LockPersonality":         "yes",
	"MemoryDenyWriteExecute":  "yes",
	"RestrictRealtime":        "yes",
	"RestrictSUIDSGID":        "yes",
	"SystemCallArchitectures": "native",
	"SystemCallFilter":        "@system-service",
	"UMask":                   "0077",
	"Type":                    "exec",
	"Restart":                 "on-failure",
	"KillSignal":              "SIGTERM",
	"EnvironmentFile":         "/etc/presence/presence.env",
}

// TestSystemdUnits checks the units both as systemd reads them
// (systemd-analyze, which needs no running systemd) and for what they
// promise: hardening, bounded restarts and a stop timeout above the
// binary's own shutdown budget.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: scripts/test.sh installs it (Debian package systemd)")
	}
	dir := t.TempDir()
	var copies []string
	for _, tc := range []struct{ file, bin, pkg string }{
		{"presence.service", presenceBin, "../cmd/presence"},
		{"gc.service", gcBin, "../cmd/gc"},
	} {
		u := unitFile(t, tc.file)
		t.Run(tc.file, func(t *testing.T) {
			for k, want := range hardening {
				if got, ok := u.get("Service", k); !ok || got != want {
					t.Errorf("%s: %s=%q (set: %v), want %q", tc.file, k, got, ok, want)
				}
			}
			if _, ok := u.get("Service", "RestartSec"); !ok {
				t.Errorf("%s: no RestartSec=", tc.file)
			}
			for _, k := range []string{"StartLimitIntervalSec", "StartLimitBurst"} {
				if _, ok := u.get("Unit", k); !ok {
					t.Errorf("%s: no %s= in [Unit], so a failing binary restarts forever", tc.file, k)
				}
			}
			for _, k := range []string{"After", "Wants"} {
				if v, _ := u.get("Unit", k); !slices.Contains(strings.Fields(v), "network-online.target") {
					t.Errorf("%s: %s=%q, want network-online.target in it", tc.file, k, v)
				}
			}
			if v, _ := u.get("Install", "WantedBy"); v != "multi-user.target" {
				t.Errorf("%s: WantedBy=%q, want multi-user.target", tc.file, v)
			}
			if v, _ := u.get("Service", "ExecStart"); v != "/usr/local/bin/"+filepath.Base(tc.bin) {
				t.Errorf("%s: ExecStart=%q, want /usr/local/bin/%s", tc.file, v, filepath.Base(tc.bin))
			}
			// systemd sends SIGKILL when TimeoutStopSec runs out: it must
			// be above the longest shutdown the binary allows itself.
			budget := shutdownBudget(t, tc.pkg)
			if stop := u.duration(t, "Service", "TimeoutStopSec"); stop <= budget {
				t.Errorf("%s: TimeoutStopSec=%s, want more than %s's shutdown budget of %s", tc.file, stop, tc.pkg, budget)
			}
		})
		if tc.file == "presence.service" {
			// PRESENCE_MAX_CONNS=auto follows this limit, so it must be a
			// number an operator sized, not systemd's default.
			if v, ok := u.get("Service", "LimitNOFILE"); !ok {
				t.Errorf("presence.service: no LimitNOFILE=")
			} else if n, err := strconv.Atoi(v); err != nil || n < 4096 {
				t.Errorf("presence.service: LimitNOFILE=%s, want a number of at least 4096", v)
			}
		}
		// verify checks that ExecStart is executable, so the copies start
		// the binaries just built; everything else is as shipped.
		b, err := os.ReadFile(u.path)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Replace(string(b), "ExecStart=/usr/local/bin/"+filepath.Base(tc.bin), "ExecStart="+tc.bin, 1)
		cp := filepath.Join(dir, tc.file)
		if err := os.WriteFile(cp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		copies = append(copies, cp)
	}
	// verify reports unknown keys and bad values as warnings with exit
	// status 0: any output at all fails the test.
	if out := run(t, dir, analyze, append([]string{"verify", "--man=no"}, copies...)...); out != "" {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
	// 2.0 or less is the "OK" band of systemd's exposure score; the units
	// score 1.6, so this catches a hardening line that is lost.
	for _, cp := range copies {
		run(t, dir, analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", cp)
	}
}

// shutdownBudget returns the longest timeout the command in pkg gives a
// fresh context (context.WithTimeout(context.Background(), d)): the
// shutdown contexts, made after the run context has ended. Reading the
// source keeps the units in step with the code when a budget changes.
func shutdownBudget(t *testing.T, pkg string) time.Duration {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(pkg, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]ast.Expr{}
	var calls []*ast.CallExpr
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if i < len(n.Values) {
						consts[name.Name] = n.Values[i]
					}
				}
			case *ast.CallExpr:
				if isCall(n, "context", "WithTimeout") && len(n.Args) == 2 {
					if parent, ok := n.Args[0].(*ast.CallExpr); ok && isCall(parent, "context", "Background") {
						calls = append(calls, n)
					}
				}
			}
			return true
		})
	}
	var budget time.Duration
	for _, c := range calls {
		d, err := evalDuration(c.Args[1], consts)
		if err != nil {
			t.Fatalf("%s: %v", fset.Position(c.Pos()), err)
		}
		budget = max(budget, d)
	}
	if budget == 0 {
		t.Fatalf("%s: no context.WithTimeout(context.Background(), d): where is its shutdown budget?", pkg)
	}
	return budget
}

func isCall(c *ast.CallExpr, pkg, fn string) bool {
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == pkg && sel.Sel.Name == fn
}

// evalDuration evaluates the constant duration expressions the commands
// write: 9 * time.Second, a named constant, parentheses, sums.
func evalDuration(e ast.Expr, consts map[string]ast.Expr) (time.Duration, error) {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return evalDuration(e.X, consts)
	case *ast.BasicLit:
		n, err := strconv.ParseInt(e.Value, 0, 64)
		return time.Duration(n), err
	case *ast.Ident:
		if v, ok := consts[e.Name]; ok {
			return evalDuration(v, consts)
		}
	case *ast.SelectorExpr:
		if id, ok := e.X.(*ast.Ident); ok && id.Name == "time" {
			units := map[string]time.Duration{"Millisecond": time.Millisecond, "Second": time.Second, "Minute": time.Minute}
			if u, ok := units[e.Sel.Name]; ok {
				return u, nil
			}
		}
	case *ast.BinaryExpr:
		x, err := evalDuration(e.X, consts)
		if err != nil {
			return 0, err
		}
		y, err := evalDuration(e.Y, consts)
		if err != nil {
			return 0, err
		}
		switch e.Op {
		case token.MUL:
			return x * y, nil
		case token.ADD:
			return x + y, nil
		case token.SUB:
			return x - y, nil
		}
	}
	return 0, fmt.Errorf("cannot evaluate %T as a constant duration", e)
}

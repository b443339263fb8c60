package config

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeFile checks docker-compose.yml without a Docker engine: the
// services it names, the settings it passes (each must be one this package
// knows), and Redis started with the expiry events gc listens to.
func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Entrypoint  []string          `yaml:"entrypoint"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]any    `yaml:"depends_on"`
			Ports       []string          `yaml:"ports"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"redis", "presence", "gc"} {
		if _, ok := compose.Services[name]; !ok {
			t.Errorf("no %s service", name)
		}
	}
	known := map[string]bool{}
	for _, s := range settings {
		known[s.env] = true
	}
	for name, svc := range compose.Services {
		for k := range svc.Environment {
			if strings.HasPrefix(k, "PRESENCE_") && !known[k] {
				t.Errorf("service %s sets %s, which no binary reads", name, k)
			}
		}
	}
	redis := compose.Services["redis"]
	if cmd := strings.Join(redis.Command, " "); !strings.Contains(cmd, "--notify-keyspace-events") ||
		!strings.Contains(cmd, "E") || !strings.Contains(cmd, "x") {
		t.Errorf("redis command %q does not turn on expired events (Ex)", cmd)
	}
	for _, name := range []string{"presence", "gc"} {
		svc := compose.Services[name]
		url := svc.Environment["PRESENCE_REDIS_URL"]
		if !strings.HasPrefix(url, "redis://redis:") {
			t.Errorf("%s: PRESENCE_REDIS_URL=%q, want the redis service", name, url)
		}
		if _, ok := svc.DependsOn["redis"]; !ok {
			t.Errorf("%s does not depend on redis", name)
		}
		// The same validation the binary runs at start.
		c, err := Load(name, nil, func(k string) string { return svc.Environment[k] }, &strings.Builder{})
		if err != nil {
			t.Errorf("%s: its environment does not pass validation: %v", name, err)
		} else if c.Embedded() {
			t.Errorf("%s would run in embedded mode", name)
		}
	}
	if bin := strings.Join(compose.Services["gc"].Entrypoint, " "); !strings.HasSuffix(bin, "/gc") {
		t.Errorf("gc entrypoint %q does not run the gc binary", bin)
	}
}

package version

import (
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestGet(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Go != runtime.Version() {
		t.Errorf("Get() = %+v, want a version and %s", i, runtime.Version())
	}
	if s := (Info{Version: "v1.2.3", Revision: "abc", Go: "go1.26.8"}).String(); s != "v1.2.3 (abc, go1.26.8)" {
		t.Errorf("String() = %q", s)
	}
	if s := (Info{Version: "devel", Go: "go1.26.8"}).String(); s != "devel (go1.26.8)" {
		t.Errorf("String() without a revision = %q", s)
	}
}

// TestDockerfileStampsTheVersion: the image builds without .git, so the
// Dockerfile sets stamped by its import path; a rename here must follow
// there.
func TestDockerfileStampsTheVersion(t *testing.T) {
	docker, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	path := reflect.TypeFor[Info]().PkgPath() + ".stamped="
	if !strings.Contains(string(docker), "-X "+path) {
		t.Errorf("Dockerfile does not set %s with -ldflags -X", path)
	}
}

func TestRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	Register(reg)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "presence_build_info" || mfs[0].Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("gathered %v, %v; want presence_build_info 1", mfs, err)
	}
	labels := map[string]string{}
	for _, l := range mfs[0].Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != Get().Version || labels["goversion"] != runtime.Version() {
		t.Errorf("labels %v, want this build's", labels)
	}
}

// Package version tells which build of Presence is running: -version, the
// first log line and the presence_build_info metric all say the same.
package version

import (
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// stamped is set at link time by builds that have no VCS information to
// go on (the Docker image builds without .git):
//
//	go build -ldflags "-X github.com/presence/presence/internal/version.stamped=v1.2.3"
var stamped string

// Info is what a build knows of itself.
type Info struct {
	// Version is the module version of a tagged build (v1.2.3), Go's
	// pseudo-version of an untagged commit, the stamped version, or
	// "devel" when the build knows none of these.
	Version string
	// Revision is the VCS commit, with "-dirty" when the tree had changes;
	// empty when unknown.
	Revision string
	// Go is the toolchain that built the binary.
	Go string
}

// String is the one-line form: "v1.2.3 (abc1234, go1.26.8)".
func (i Info) String() string {
	s := i.Version + " ("
	if i.Revision != "" {
		s += i.Revision + ", "
	}
	return s + i.Go + ")"
}

// Get reads the build information once.
var Get = sync.OnceValue(func() Info {
	i := Info{Version: "devel", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if stamped != "" {
			i.Version = stamped
		}
		return i
	}
	// go build stamps the main module's version from the VCS ("(devel)"
	// when it cannot: no .git, or -buildvcs=false).
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		i.Version = v
	}
	if stamped != "" {
		i.Version = stamped
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	i.Revision = rev
	return i
})

// Register adds presence_build_info to reg: a gauge of 1 whose labels say
// the version, revision and Go version, so a dashboard can show which
// build each process runs during a rolling deploy.
func Register(reg prometheus.Registerer) {
	i := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "presence_build_info",
		Help:        "The build of this process: version, revision and Go version, with the value 1.",
		ConstLabels: prometheus.Labels{"version": i.Version, "revision": i.Revision, "goversion": i.Go},
	})
	g.Set(1)
	reg.MustRegister(g)
}

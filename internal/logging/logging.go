// Package logging builds the zap logger both binaries use: lines a person
// reads on a terminal, JSON lines anywhere else, at the configured level.
package logging

import (
	"io"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/presence/presence/internal/version"
)

// New returns a logger writing to w. level is one of debug, info, warn,
// error, and format one of auto, console, json; config.Validate has checked
// both, and anything else means info and auto. Auto is console when w is a
// terminal and JSON otherwise: a person running the binary by hand reads
// the lines, while systemd, Docker and Kubernetes hand them to a collector.
func New(w io.Writer, level, format string) *zap.Logger {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		lvl = zapcore.InfoLevel
	}
	var enc zapcore.Encoder
	if format == "console" || (format != "json" && isTerminal(w)) {
		c := zap.NewDevelopmentEncoderConfig()
		c.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		c.CallerKey = ""
		enc = zapcore.NewConsoleEncoder(c)
	} else {
		c := zap.NewProductionEncoderConfig()
		c.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(c)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl))
}

// isTerminal reports whether w is a character device, such as the
// terminal a binary was started from.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Throttle lets one log line through per interval and counts the rest, so a
// condition seen by every frame of every client (Redis away, a publisher
// flooding a channel with bad messages) logs a line, not a flood. The zero
// value lets every line through; set Every.
type Throttle struct {
	// Every is the shortest time between two lines.
	Every time.Duration

	mu      sync.Mutex
	next    time.Time
	skipped int
}

// Allow reports whether a line may go out now, and how many were held back
// since the last one, for the line to say.
func (t *Throttle) Allow(now time.Time) (bool, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.next) {
		t.skipped++
		return false, 0
	}
	t.next = now.Add(t.Every)
	n := t.skipped
	t.skipped = 0
	return true, n
}

// FirstLine logs a binary's first line: msg for a person (what runs and
// where to go), with the build, the mode and the address as fields for a
// log collector.
func FirstLine(log *zap.Logger, msg, mode, addr, url string) {
	v := version.Get()
	rev := zap.Skip() // a build from outside a checkout knows none
	if v.Revision != "" {
		rev = zap.String("revision", v.Revision)
	}
	log.Info(msg, zap.String("version", v.Version), rev, zap.String("go", v.Go),
		zap.String("mode", mode), zap.String("addr", addr), zap.String("url", url))
}

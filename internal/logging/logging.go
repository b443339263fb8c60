// Package logging builds the zap logger both binaries use: JSON lines on the
// given writer, at the configured level.
package logging

import (
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a JSON logger writing to w. level is one of debug, info, warn,
// error; config.Validate has checked it, and anything else means info.
func New(w io.Writer, level string) *zap.Logger {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		lvl = zapcore.InfoLevel
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core)
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

// Package proctest runs the project's binaries in tests: it builds them,
// starts them in an environment that a developer's PRESENCE_* settings
// cannot reach, parses their JSON log lines as they arrive so that a test
// can wait for one, and kills and reaps them when the test ends, showing
// their output only if it failed. Test-only.
package proctest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build runs go build with flags on pkgs, writing each command into dir
// under the last element of its import path: one go command builds them
// all. It returns an error rather than taking a testing.TB because
// binaries are built once, in TestMain.
func Build(dir string, flags []string, pkgs ...string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go build %s: %w", strings.Join(pkgs, " "), err)
	}
	// -o with a trailing separator means a directory, even for one package.
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, flags...)
	cmd := exec.Command(goBin, append(args, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, out)
	}
	return nil
}

// Env returns the test's environment without PRESENCE_* variables, so a
// developer's shell cannot change what the binaries under test do.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PRESENCE_") {
			env = append(env, kv)
		}
	}
	return env
}

// Log is an io.Writer that keeps a process's output and parses each
// complete JSON line as it arrives; other lines (a panic's trace) are
// only in String. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte // the last line, until its newline arrives
	lines   []map[string]any
	wake    chan struct{} // closed and replaced on every write
}

// NewLog returns an empty Log.
func NewLog() *Log { return &Log{wake: make(chan struct{})} }

// Write keeps p and parses the lines it completes. It never fails.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		var line map[string]any
		if json.Unmarshal(l.partial[:i], &line) == nil {
			l.lines = append(l.lines, line)
		}
		l.partial = l.partial[i+1:]
	}
	close(l.wake)
	l.wake = make(chan struct{})
	return len(p), nil
}

// String returns everything written so far, JSON or not.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}

// Lines returns the JSON lines parsed so far, oldest first.
func (l *Log) Lines() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// Find returns the first line that matches ok; failing that, a channel
// closed at the next write. Both come from one look under the lock, so a
// line written just after Find looked still wakes a caller waiting on it.
func (l *Log) Find(ok func(map[string]any) bool) (map[string]any, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if ok(line) {
			return line, nil
		}
	}
	return nil, l.wake
}

// Proc is a binary, or a function standing in for one, running for a
// test; Start and Run stop it and wait for it when the test ends, so no
// process outlives its test.
type Proc struct {
	// Name says which process a failure is about.
	Name string
	// Cmd is the running binary; nil for a function started by Run.
	Cmd *exec.Cmd
	// Log holds what it wrote to stdout and stderr.
	Log *Log

	stop func()
	done chan struct{}
	err  error // set before done is closed
}

// Start starts bin with Env plus env, as name, and kills it when tb ends.
// If tb failed, the cleanup logs the process's output.
func Start(tb testing.TB, name, bin string, env ...string) *Proc {
	tb.Helper()
	p := &Proc{Name: name, Cmd: exec.Command(bin), Log: NewLog(), done: make(chan struct{})}
	p.Cmd.Env = append(Env(), env...)
	// A Writer rather than a pipe: Wait then returns only once every byte
	// has been copied, so the log is complete once Done is closed.
	p.Cmd.Stdout = p.Log
	p.Cmd.Stderr = p.Log
	if err := p.Cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	// Once it has exited the signal fails, which is what Stop promises.
	p.stop = func() { _ = p.Cmd.Process.Signal(syscall.SIGTERM) }
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	// Cleanups run last-in first-out: clients dialled after the process
	// started close before it is killed.
	p.cleanup(tb, func() { _ = p.Cmd.Process.Kill() }) // fails harmlessly if it has exited
	return p
}

// Run runs fn in a goroutine of the test's own process, as name, so that
// the race detector covers what fn runs; fn writes its output to out and
// returns when ctx is cancelled, as a binary's main does on SIGTERM. The
// context is cancelled by Stop or when tb ends, and the cleanup waits for
// fn to return. If tb failed, the cleanup logs fn's output.
func Run(tb testing.TB, name string, fn func(ctx context.Context, out io.Writer) error) *Proc {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proc{Name: name, Log: NewLog(), stop: cancel, done: make(chan struct{})}
	go func() {
		p.err = fn(ctx, p.Log)
		close(p.done)
	}()
	p.cleanup(tb, cancel)
	return p
}

// cleanup ends p when tb ends, waits for it and shows its output on failure.
func (p *Proc) cleanup(tb testing.TB, end func()) {
	tb.Cleanup(func() {
		end()
		<-p.done
		if tb.Failed() {
			tb.Logf("%s output:\n%s", p.Name, p.Log.String())
		}
	})
}

// Stop asks p to end, without waiting: a binary gets SIGTERM, a function's
// context is cancelled. It does nothing once p has ended.
func (p *Proc) Stop() { p.stop() }

// Done returns a channel that is closed once p has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns how p ended: exec.Cmd.Wait's result for a binary, the
// function's for Run. It is meaningful only once Done is closed.
func (p *Proc) Err() error { return p.err }

// WaitLog returns the first log line that matches ok, and fails tb if p
// logs none within limit or ends first. what describes the line in the
// failure.
func (p *Proc) WaitLog(tb testing.TB, limit time.Duration, what string, ok func(map[string]any) bool) map[string]any {
	tb.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		line, more := p.Log.Find(ok)
		if line != nil {
			return line
		}
		select {
		case <-more:
		case <-p.done:
			// Its last lines may have come with its exit.
			if line, _ := p.Log.Find(ok); line != nil {
				return line
			}
			tb.Fatalf("%s exited (%v) before logging %s", p.Name, p.err, what)
		case <-timer.C:
			tb.Fatalf("%s did not log %s within %s", p.Name, what, limit)
		}
	}
}

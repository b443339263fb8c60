// Package redistest starts a real redis-server for tests: on a free loopback
// port, in its own temp dir, stopped when the test ends.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	// Addr is host:port of the server.
	Addr  string
	cmd   *exec.Cmd
	dir   string
	extra []string // the arguments it was started with beyond the defaults
}

// Dir is the server's working directory, where SAVE writes dump.rdb and a
// restart loads it from.
func (s *Server) Dir() string { return s.dir }

// URL returns the redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Client returns a new client of the server, closed at the end of tb.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { rdb.Close() })
	return rdb
}

// Kill stops the server at once, as a crash would.
func (s *Server) Kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// Restart kills the server, as a crash would, and starts it again on the
// same port and directory with its first arguments plus extra: it loads
// whatever dump.rdb the directory holds then. It returns once the server
// takes connections, which can be before it has loaded its data (PING
// answers LOADING meanwhile); the next Kill or the test's cleanup stops it.
func (s *Server) Restart(extra ...string) error {
	s.Kill()
	_, port, _ := net.SplitHostPort(s.Addr)
	cmd, err := launch(s.dir, port, append(slices.Clip(s.extra), extra...))
	if err != nil {
		return err
	}
	s.cmd = cmd
	return s.wait(5*time.Second, true)
}

// Start starts a redis-server and stops it when tb ends. Extra arguments go
// on its command line (e.g. "--notify-keyspace-events", "Ex"). Tests fail,
// not skip, without redis-server: scripts/test.sh installs it.
func Start(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	s, err := start(tb.TempDir(), extra...)
	if err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	tb.Cleanup(s.Kill)
	return s
}

// Main runs a package's tests against one shared redis-server, which it
// stores in *srv before they run, and exits with their result. Call it from
// TestMain.
func Main(m *testing.M, srv **Server) {
	s, stop, err := StartMain()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*srv = s
	code := m.Run()
	stop()
	os.Exit(code)
}

// StartMain is Start for TestMain, where there is no testing.TB: it returns a
// stop function instead of registering a cleanup.
func StartMain(extra ...string) (*Server, func(), error) {
	dir, err := os.MkdirTemp("", "redistest")
	if err != nil {
		return nil, nil, err
	}
	s, err := start(dir, extra...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return s, func() { s.Kill(); os.RemoveAll(dir) }, nil
}

func start(dir string, extra ...string) (*Server, error) {
	// A port can be taken between choosing and binding; try a few.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd, err := launch(dir, strconv.Itoa(port), extra)
		if err != nil {
			return nil, err
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, dir: dir, extra: extra}
		if lastErr = s.wait(5*time.Second, false); lastErr == nil {
			return s, nil
		}
		s.Kill()
	}
	return nil, lastErr
}

func launch(dir, port string, extra []string) (*exec.Cmd, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found: run scripts/test.sh (it installs it) or apt-get install redis-server")
	}
	args := append([]string{
		"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"),
	}, extra...)
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// Snapshot saves the server's data (SAVE) and keeps a copy of the dump
// outside its directory, for RestartFrom; it returns the copy's path.
func (s *Server) Snapshot(tb testing.TB) string {
	tb.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer rdb.Close()
	if err := rdb.Save(context.Background()).Err(); err != nil {
		tb.Fatalf("SAVE: %v", err)
	}
	path := filepath.Join(tb.TempDir(), "snapshot.rdb")
	copyFile(tb, filepath.Join(s.dir, "dump.rdb"), path)
	return path
}

// RestartFrom kills the server and starts it again from a snapshot taken
// earlier, as a restore of an older backup (or a failover to a replica
// that lagged) does; see Restart.
func (s *Server) RestartFrom(tb testing.TB, snapshot string, extra ...string) {
	tb.Helper()
	s.Kill()
	copyFile(tb, snapshot, filepath.Join(s.dir, "dump.rdb"))
	if err := s.Restart(extra...); err != nil {
		tb.Fatal(err)
	}
}

// RestartEmpty kills the server and starts it again without its data, as a
// Redis without persistence comes back.
func (s *Server) RestartEmpty(tb testing.TB) {
	tb.Helper()
	s.Kill()
	if err := os.Remove(filepath.Join(s.dir, "dump.rdb")); err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		tb.Fatal(err)
	}
}

func copyFile(tb testing.TB, from, to string) {
	tb.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

// wait waits until the server answers PING, or with loading also until it
// answers that it is loading its data.
func (s *Server) wait(limit time.Duration, loading bool) error {
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil || loading && strings.HasPrefix(err.Error(), "LOADING") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server at %s not ready after %s: %w", s.Addr, limit, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a process we cannot await
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Prefix returns a key prefix unique to one test, so tests can share a
// server without seeing each other's keys.
func Prefix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + ":"
}

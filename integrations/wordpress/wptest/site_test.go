// Package wptest runs the WordPress plugin in a real WordPress: Debian's
// wordpress package (6.1), its twentytwentythree theme, a MariaDB of the
// test's own and PHP's built-in server, driven in headless Chromium.
// scripts/test.sh installs the packages; every run starts from a fresh
// database and stops everything it started.
package wptest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/presence/presence/internal/appserver"
	"github.com/presence/presence/internal/apptest"
	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/httpapi"
)

const (
	wordpressDir = "/usr/share/wordpress"
	adminUser    = "admin"
	adminPass    = "presence-test-password"
)

// need fails the test with what to install when a program is missing.
func need(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s not found: run scripts/test.sh, which installs wordpress, wordpress-theme-twentytwentythree, mariadb-server, php-cli, php-mysql and chromium with apt-get", p)
		}
	}
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// start runs a process until the test ends, its output in the test's log
// only if the test fails.
func start(t *testing.T, name string, cmd *exec.Cmd) *bytes.Buffer {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A group of its own: php -S runs its workers as child processes, which
	// must stop with it, and which hold its output open until they do.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return &out
}

// waitFor polls ok every 50 ms until it holds or limit passes.
func waitFor(t *testing.T, what string, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startMariaDB starts a MariaDB of the test's own on a Unix socket, with an
// empty database "wordpress", and returns the socket's path.
func startMariaDB(t *testing.T) string {
	t.Helper()
	need(t, "/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db", "/usr/bin/mariadb")
	// Unix socket paths are limited to about 100 bytes; t.TempDir's are long.
	dir, err := os.MkdirTemp("", "wpdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	install := exec.Command("/usr/bin/mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	start(t, "mariadbd", exec.Command("/usr/sbin/mariadbd", "--no-defaults", "--datadir="+data, "--socket="+sock,
		"--skip-networking", "--user=root", "--pid-file="+filepath.Join(dir, "pid"), "--log-error="+filepath.Join(dir, "err.log")))
	waitFor(t, "MariaDB socket", 30*time.Second, func() bool {
		return exec.Command("/usr/bin/mariadb", "--no-defaults", "--socket="+sock, "-uroot", "-e", "SELECT 1").Run() == nil
	})
	if out, err := exec.Command("/usr/bin/mariadb", "--no-defaults", "--socket="+sock, "-uroot",
		"-e", "CREATE DATABASE wordpress CHARACTER SET utf8mb4").CombinedOutput(); err != nil {
		t.Fatalf("create the database: %v\n%s", err, out)
	}
	return sock
}

// site is one WordPress under test.
type site struct {
	dir   string // its document root, a copy of Debian's
	url   string // http://127.0.0.1:port
	debug string // WordPress's debug.log: notices and warnings
}

// startWordPress copies Debian's WordPress into a directory of its own with
// a wp-config.php for the database at sock, serves it with php -S, and
// installs it through install.php.
func startWordPress(t *testing.T, sock string) *site {
	t.Helper()
	need(t, wordpressDir+"/wp-settings.php", wordpressDir+"/wp-content/themes/twentytwentythree/theme.json", "/usr/bin/php")
	root := t.TempDir()
	dir := filepath.Join(root, "wordpress")
	if out, err := exec.Command("cp", "-a", wordpressDir, dir).CombinedOutput(); err != nil {
		t.Fatalf("copy WordPress: %v\n%s", err, out)
	}
	port := freePort(t)
	s := &site{dir: dir, url: "http://127.0.0.1:" + strconv.Itoa(port), debug: filepath.Join(root, "debug.log")}
	salt := make([]byte, 32)
	rand.Read(salt)
	// Debian's wp-config.php reads /etc/wordpress/config-<host>.php; this
	// one is self-contained, so a run touches nothing outside its
	// directories. No request leaves the machine: WordPress would wait on
	// api.wordpress.org in every admin page.
	cfg := fmt.Sprintf(`<?php
define( 'DB_NAME', 'wordpress' );
define( 'DB_USER', 'root' );
define( 'DB_PASSWORD', '' );
define( 'DB_HOST', 'localhost:%s' );
define( 'DB_CHARSET', 'utf8mb4' );
define( 'DB_COLLATE', '' );
foreach ( array( 'AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT' ) as $k ) {
	define( $k, '%s' . $k );
}
$table_prefix = 'wp_';
define( 'WP_HOME', '%s' );
define( 'WP_SITEURL', '%s' );
define( 'WP_CONTENT_DIR', __DIR__ . '/wp-content' );
define( 'WP_DEBUG', true );
define( 'WP_DEBUG_DISPLAY', false );
define( 'WP_DEBUG_LOG', '%s' );
define( 'WP_HTTP_BLOCK_EXTERNAL', true );
define( 'AUTOMATIC_UPDATER_DISABLED', true );
define( 'DISABLE_WP_CRON', true );
define( 'ABSPATH', __DIR__ . '/' );
require_once ABSPATH . 'wp-settings.php';
`, sock, hex.EncodeToString(salt), s.url, s.url, s.debug)
	if err := os.WriteFile(filepath.Join(dir, "wp-config.php"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/php", "-S", "127.0.0.1:"+strconv.Itoa(port), "-t", dir)
	// The browser loads a page's scripts and styles at once; one worker
	// would serve them in turn.
	cmd.Env = append(os.Environ(), "PHP_CLI_SERVER_WORKERS=4")
	start(t, "php -S", cmd)
	waitFor(t, "php -S listening", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	form := url.Values{
		"weblog_title":    {"Presence test site"},
		"user_name":       {adminUser},
		"admin_password":  {adminPass},
		"admin_password2": {adminPass},
		"pw_weak":         {"1"},
		"admin_email":     {"admin@example.com"},
		"blog_public":     {"0"},
		"language":        {""},
	}
	resp, err := http.PostForm(s.url+"/wp-admin/install.php?step=2", form)
	if err != nil {
		t.Fatalf("install WordPress: %v", err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(body.String(), "Success!") {
		t.Fatalf("install WordPress: %s\n%s", resp.Status, body.String())
	}
	return s
}

// fixture runs testdata/fixture.php against the site and returns what it
// printed.
func (s *site) fixture(t *testing.T, args ...string) string {
	t.Helper()
	fixture, err := filepath.Abs("testdata/fixture.php")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/php", append([]string{fixture, s.dir}, args...)...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("fixture %v: %v\n%s%s", args, err, out, stderr)
	}
	return strings.TrimSpace(string(out))
}

// installPlugin copies the plugin into the site's plugins, as unpacking
// its zip would.
func (s *site) installPlugin(t *testing.T) {
	t.Helper()
	src, err := filepath.Abs("../presence-counter")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", src, filepath.Join(s.dir, "wp-content", "plugins")).CombinedOutput(); err != nil {
		t.Fatalf("copy the plugin: %v\n%s", err, out)
	}
}

// pluginNotices returns the lines of WordPress's debug log that name the
// plugin: its notices, warnings and errors.
func (s *site) pluginNotices() []string {
	b, _ := os.ReadFile(s.debug)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "presence-counter") {
			out = append(out, line)
		}
	}
	return out
}

// startPresence runs an app server in the test, on the embedded store,
// that lets origin connect, accepts publishKey and counts only posts
// signed with postSecret.
func startPresence(t *testing.T, origin, publishKey, postSecret string) string {
	t.Helper()
	_, url := apptest.Serve(t, appserver.Options{
		Config: config.Config{Coalesce: 50 * time.Millisecond, GCPoll: 100 * time.Millisecond, PostSecrets: []string{postSecret}},
		API:    httpapi.Config{AllowedOrigins: []string{origin}, PublishKeys: []string{publishKey}},
	})
	return url
}

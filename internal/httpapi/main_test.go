package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/appserver"
	"github.com/presence/presence/internal/apptest"
	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/httpapi"
	"github.com/presence/presence/internal/hub"
	"github.com/presence/presence/internal/memstore"
	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// redisSrv is the package's shared redis-server; every test uses its own prefix.
var redisSrv *redistest.Server

func TestMain(m *testing.M) { redistest.Main(m, &redisSrv) }

// app is one app server under test: a real store on the shared Redis, a
// hub, a bus and the HTTP API on an httptest server.
type app struct {
	URL    string
	prefix string
	store  presence.Store
	redis  *redisstore.Store // nil for the memory store
	memory *memstore.Store   // nil for the Redis store
	rdb    *redis.Client     // nil for the memory store
	hub    *hub.Hub
	reg    *prometheus.Registry
}

type appOpts struct {
	memory   bool // the embedded store instead of Redis
	prefix   string
	ttl      time.Duration
	viewsTTL time.Duration // the stores' views TTL; 0: their default
	coalesce time.Duration
	queue    int           // hub.Config.QueueSize
	check    time.Duration // hub.Config.StoreCheck
	probe    time.Duration // the bus's probe interval and timeout
	origins  []string
	api      httpapi.Config
	rdb      *redis.Client
	log      *zap.Logger // nil: the test's logger
}

func newApp(t *testing.T, o appOpts) *app {
	t.Helper()
	if o.prefix == "" {
		o.prefix = redistest.Prefix()
	}
	if o.coalesce == 0 {
		o.coalesce = 20 * time.Millisecond
	}
	// The same assembly cmd/presence runs; only what the settings do not
	// reach (the client, queue size, probe and check intervals, the API's
	// own limits) is the test's.
	cfg := config.Config{KeyPrefix: o.prefix, SessionTTL: o.ttl, Coalesce: o.coalesce, GCPoll: 100 * time.Millisecond}
	switch {
	case o.viewsTTL == 0:
		cfg.ViewsTTL = presence.DefaultViewsTTL
	case o.viewsTTL > 0:
		cfg.ViewsTTL = o.viewsTTL
	}
	rdb := o.rdb
	if !o.memory {
		cfg.RedisURL = "redis://" + redisSrv.Addr // names the mode; the client is rdb
		if rdb == nil {
			rdb = redisSrv.Client(t)
		}
	}
	o.api.AllowedOrigins = o.origins
	reg := prometheus.NewRegistry()
	as, url := apptest.Serve(t, appserver.Options{
		Config:   cfg,
		API:      o.api,
		Hub:      hub.Config{QueueSize: o.queue, StoreCheck: o.check},
		Bus:      redisstore.BusConfig{ProbeInterval: o.probe, ProbeTimeout: o.probe},
		Redis:    rdb,
		Registry: reg,
		Log:      o.log,
	})
	if o.memory {
		rdb = nil
	}
	return &app{URL: url, prefix: o.prefix, store: as.Store, redis: as.Redis, memory: as.Memory, rdb: rdb, hub: as.Hub, reg: reg}
}

// bothStores runs a test against the Redis store and the memory store: the
// protocol must behave the same on either.
func bothStores(t *testing.T, test func(t *testing.T, o appOpts)) {
	for _, memory := range []bool{false, true} {
		name := "redis"
		if memory {
			name = "memory"
		}
		t.Run(name, func(t *testing.T) { test(t, appOpts{memory: memory}) })
	}
}

// client is a test WebSocket client that reads frames on its own goroutine,
// as a browser does, so the server's pings are answered.
type client struct {
	t      *testing.T
	conn   *websocket.Conn
	frames chan map[string]any
	err    chan error
	hello  map[string]any
}

func dial(t *testing.T, a *app, hdr http.Header) *client {
	t.Helper()
	c, err := tryDial(t, a, hdr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func tryDial(t *testing.T, a *app, hdr http.Header) (*client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.URL, "http")+"/v1/ws", &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		return nil, err
	}
	c := &client{t: t, conn: conn, frames: make(chan map[string]any, 1000), err: make(chan error, 1)}
	go func() {
		for {
			_, data, err := conn.Read(context.Background())
			if err != nil {
				c.err <- err
				close(c.frames)
				return
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("server sent a frame that is not JSON: %q", data)
				continue
			}
			c.frames <- m
		}
	}()
	t.Cleanup(func() { conn.CloseNow() })
	c.hello = c.next()
	if c.hello["type"] != "hello" {
		t.Fatalf("first frame = %v, want hello", c.hello)
	}
	return c, nil
}

func (c *client) send(frame string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		c.t.Fatalf("write %s: %v", frame, err)
	}
}

func (c *client) next() map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("connection closed: %v", <-c.err)
		}
		return m
	case <-time.After(5 * time.Second):
		c.t.Fatal("no frame within 5s")
	}
	return nil
}

// waitFor skips frames until one matches, within 5s, and returns it.
func (c *client) waitFor(desc string, match func(map[string]any) bool) map[string]any {
	c.t.Helper()
	deadline := time.After(5 * time.Second)
	var seen []map[string]any
	for {
		select {
		case m, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("connection closed waiting for %s (saw %v): %v", desc, seen, <-c.err)
			}
			if match(m) {
				return m
			}
			seen = append(seen, m)
		case <-deadline:
			c.t.Fatalf("no %s within 5s; saw %v", desc, seen)
		}
	}
}

// waitCount waits for a count frame of post with the given viewers.
func (c *client) waitCount(post string, viewers int) map[string]any {
	c.t.Helper()
	return c.waitFor(fmt.Sprintf("count %s=%d", post, viewers), func(m map[string]any) bool {
		return m["type"] == "count" && m["post"] == post && m["viewers"] == float64(viewers)
	})
}

// watcher dials a client that watches post and has received its count.
func watcher(t *testing.T, a *app, post string, viewers int) *client {
	t.Helper()
	c := dial(t, a, nil)
	c.send(`{"type":"watch","posts":["` + post + `"]}`)
	c.waitCount(post, viewers)
	return c
}

// viewer dials a client that views post and has received its count.
func viewer(t *testing.T, a *app, post string, viewers int) *client {
	t.Helper()
	c := dial(t, a, nil)
	c.send(`{"type":"view","post":"` + post + `"}`)
	c.waitCount(post, viewers)
	return c
}

// waitCounts waits until the latest count frame of each post shows the
// given viewers, whatever order the posts' frames come in.
func (c *client) waitCounts(want map[string]int) {
	c.t.Helper()
	got := map[string]int{}
	c.waitFor(fmt.Sprintf("counts %v", want), func(m map[string]any) bool {
		if m["type"] == "count" {
			got[m["post"].(string)] = int(m["viewers"].(float64))
		}
		for p, n := range want {
			if v, ok := got[p]; !ok || v != n {
				return false
			}
		}
		return true
	})
}

// closed waits for the server to close the connection and returns the error.
func (c *client) closed() error {
	c.t.Helper()
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return <-c.err
			}
		case <-time.After(5 * time.Second):
			c.t.Fatal("connection not closed within 5s")
			return nil
		}
	}
}

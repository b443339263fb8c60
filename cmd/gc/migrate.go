package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/redisstore"
)

// migrate runs "gc migrate -from URL": it moves the views totals of a
// one-node Redis (the source, with the same PRESENCE_KEY_PREFIX) into the
// Redis Cluster the PRESENCE_* variables name, and returns the exit status:
// 0 done, 1 failed, 2 bad usage.
func migrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("gc migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "redis:// URL of the one-node Redis whose views totals move (required)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: gc migrate -from redis://old-host:6379/0")
		fmt.Fprintln(stderr, "Moves the views totals of a one-node Redis into the Redis Cluster that PRESENCE_REDIS_CLUSTER")
		fmt.Fprintln(stderr, "names, under the same PRESENCE_KEY_PREFIX: each total is added to the cluster's and removed")
		fmt.Fprintln(stderr, "from the source, so it can run while both are in use and again later. Exit status 0: done,")
		fmt.Fprintln(stderr, "1: failed, 2: bad usage.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *from == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	store, closeStore, err := openStore("gc migrate", getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gc migrate:", err)
		return 2
	}
	defer closeStore()
	src, err := redisstore.Connect(redisstore.Connection{URL: *from}, logging.New(stderr, "warn", "auto"))
	if err != nil {
		fmt.Fprintln(stderr, "gc migrate: -from:", err)
		return 2
	}
	defer src.Close()
	counters, views, err := store.MigrateViews(ctx, src)
	fmt.Fprintf(stderr, "gc migrate: moved %d views of %d posts from %s\n", views, counters, redisstore.Addr(src))
	if err != nil {
		fmt.Fprintln(stderr, "gc migrate:", err)
		return 1
	}
	return 0
}

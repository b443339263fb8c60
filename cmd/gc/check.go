package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/presence/presence/internal/config"
	"github.com/presence/presence/internal/logging"
	"github.com/presence/presence/internal/redisstore"
)

// Exit statuses of gc check. README documents them, and the chaos run of
// cmd/presence counts any status but 0 as not healed.
const (
	checkClean   = 0
	checkDrift   = 1
	checkFailed  = 2
	repairRounds = 1000 // a report lists at most MaxListed drift entries: up to a million
)

// check runs "gc check": it reads the Redis the PRESENCE_* variables name,
// writes a JSON report to stdout and a one-line summary to stderr, and
// returns the exit status: 0 clean, 1 drift found, 2 could not check.
func check(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gc check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repair := fs.Bool("repair", false, "repair what gc repairs by itself (prune dead sessions, restore deadlines) and report what is left")
	// A session whose key has just expired is not drift yet: gc prunes it at
	// its deadline, so without a grace a healthy system would report it.
	grace := fs.Duration("grace", 2*time.Second, "how long after its deadline a session whose key expired may wait for gc before it counts as dead")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: gc check [-repair] [-grace 2s]")
		fmt.Fprintln(stderr, "Reads the Redis that PRESENCE_REDIS_URL and PRESENCE_KEY_PREFIX name and reports every")
		fmt.Fprintln(stderr, "broken invariant of the schema: JSON on stdout, one line on stderr. Exit status 0: clean,")
		fmt.Fprintln(stderr, "1: drift found, 2: could not check.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return checkClean
		}
		return checkFailed
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gc check: unexpected argument %q\n", fs.Arg(0))
		return checkFailed
	}
	// The settings come from the environment only (the arguments were
	// check's own flags), so the check reads the Redis and prefix gc prunes.
	store, closeStore, err := openStore("gc check", getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "gc check:", err)
		return checkFailed
	}
	defer closeStore()

	// Check sees each session through a script, at one instant, so traffic
	// racing the scan is not reported: it is safe on a live Redis.
	r, err := store.Check(ctx, *grace)
	// Rounds, because a report lists at most MaxListed entries; they stop
	// when a round fixes nothing more (what the prune script leaves alone
	// stays drift). repaired is a set, as one session can be mended over
	// several rounds and counts once.
	repaired := make(map[string]bool)
	for round := 0; err == nil && *repair && round < repairRounds; round++ {
		before := r.Repairable()
		if len(before) == 0 {
			break
		}
		if _, err = store.Repair(ctx, r); err != nil {
			break
		}
		if r, err = store.Check(ctx, *grace); err != nil {
			break
		}
		after := r.Repairable()
		fixed := 0
		for d := range before {
			if !after[d] {
				repaired[d.Session] = true
				fixed++
			}
		}
		if fixed == 0 {
			break
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "gc check: could not check:", err)
		return checkFailed
	}
	r.Repaired = len(repaired)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintln(stderr, "gc check:", err)
		return checkFailed
	}
	fmt.Fprintln(stderr, "gc check:", r.Summary())
	if !r.Clean() {
		return checkDrift
	}
	return checkClean
}

// openStore opens the store the PRESENCE_* variables name, for a
// subcommand: only warnings (go-redis's dial failures among them) are
// logged, on stderr.
func openStore(name string, getenv func(string) string, stderr io.Writer) (*redisstore.Store, func(), error) {
	cfg, err := config.Load(name, nil, getenv, stderr)
	if err != nil {
		return nil, nil, err
	}
	if cfg.Embedded() {
		return nil, nil, fmt.Errorf("no Redis is set: PRESENCE_REDIS_URL, PRESENCE_REDIS_SENTINELS or PRESENCE_REDIS_CLUSTER names it")
	}
	log := logging.New(stderr, "warn", "auto")
	rdb, err := redisstore.Connect(redisConnection(cfg), log)
	if err != nil {
		return nil, nil, fmt.Errorf("PRESENCE_REDIS_URL: %w", err)
	}
	viewsTTL := cfg.ViewsTTL
	if viewsTTL == 0 {
		viewsTTL = -1 // as in run: zero means the store's default, negative forever
	}
	store := redisstore.New(rdb, redisstore.Config{Prefix: cfg.KeyPrefix, TTL: cfg.SessionTTL, ViewsTTL: viewsTTL}, zap.NewNop())
	return store, func() { rdb.Close(); log.Sync() }, nil
}

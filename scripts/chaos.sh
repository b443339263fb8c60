#!/usr/bin/env bash
# The long chaos run: 300 WebSocket clients on two app servers, gc and a real
# redis-server, three rounds of every fault (app server SIGKILL, gc away for
# longer than a TTL, Redis restarts with and without an older snapshot,
# SCRIPT FLUSH, CLIENT KILL TYPE pubsub, a network path that stops
# delivering, a client that stops reading). After each fault it checks that
# everything heals within one session TTL plus one gc poll, and at the end it
# prints how long each fault took to heal, as the table in
# docs/benchmarks.md. scripts/test.sh runs the short form (one round, 100
# clients). Needs what scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(mktemp)
trap 'rm -f "$table"' EXIT
CHAOS_TABLE="$table" go test -race -count=1 -timeout 30m -run '^TestChaos$' ./cmd/presence -args -chaos=long
cat "$table"

#!/usr/bin/env bash
# Runs the whole stack on loopback for local development: redis-server,
# gc and presence, built from this checkout. Ctrl-C stops everything the
# script started, in order: presence first (its sessions leave while Redis
# is still up), then gc, then Redis.
#
# Settings (environment):
#   REDIS_PORT         Redis port on 127.0.0.1 (default 6379); if something
#                      already answers PING there, it is used, not started
#   PRESENCE_ADDR      app server address (default 127.0.0.1:8080)
#   PRESENCE_GC_ADDR   gc's health and metrics address (default 127.0.0.1:8081)
#   any other PRESENCE_* variable is passed on to both binaries
# PRESENCE_REDIS_URL is always set to the Redis on 127.0.0.1:REDIS_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6379}
export PRESENCE_ADDR=${PRESENCE_ADDR:-127.0.0.1:8080}
export PRESENCE_GC_ADDR=${PRESENCE_GC_ADDR:-127.0.0.1:8081}
export PRESENCE_REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"

# Redis: install it where we can, else say how.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # Debian starts the packaged service on 6379; this script runs its own.
    if command -v service >/dev/null 2>&1; then service redis-server stop >/dev/null 2>&1 || true; fi
  else
    echo "redis-server is missing: install it (e.g. sudo apt-get install redis-server) and run again" >&2
    exit 1
  fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/presence-run.XXXXXX")
pids=() # started processes, in start order: redis, gc, presence

# Children run in their own session where setsid exists, so a Ctrl-C in the
# terminal reaches only this script, which then stops them in order.
spawn() {
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" &
  else
    "$@" &
  fi
  pids+=("$!")
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  local i pid
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      # presence needs up to 9 s to close its WebSockets; then give up.
      for _ in $(seq 1 120); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

# port_open HOST:PORT reports whether something accepts TCP connections there.
port_open() {
  local host=${1%:*} port=${1##*:}
  host=${host#[}
  host=${host%]}
  [ -n "$host" ] && [ "$host" != 0.0.0.0 ] && [ "$host" != :: ] || host=127.0.0.1
  (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# wait_for NAME PID CHECK...: runs CHECK until it succeeds, for up to 15 s,
# and fails at once if PID has exited.
wait_for() {
  local name=$1 pid=$2
  shift 2
  for _ in $(seq 1 150); do
    if "$@"; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited during start-up; see its log above" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "$name did not come up within 15 s" >&2
  return 1
}

# Fail early and clearly when a port is taken, rather than when a binary
# exits, and so that the readiness checks below only see our processes.
for a in "PRESENCE_ADDR=$PRESENCE_ADDR" "PRESENCE_GC_ADDR=$PRESENCE_GC_ADDR"; do
  if port_open "${a#*=}"; then
    echo "something already listens on ${a#*=}; stop it or set ${a%%=*} to another address" >&2
    exit 1
  fi
done

# 1. Redis.
if redis_up; then
  echo "using the Redis that already answers on 127.0.0.1:$REDIS_PORT"
else
  spawn redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --notify-keyspace-events Ex --dir "$tmp" --logfile "$tmp/redis.log"
  if ! wait_for redis-server "${pids[-1]}" redis_up; then
    cat "$tmp/redis.log" >&2 || true
    exit 1
  fi
fi

# 2. Build both binaries once, then run them (no go run wrappers to stop).
echo "building presence and gc"
go build -o "$tmp/bin/" ./cmd/presence ./cmd/gc

# 3. gc, then the app server.
spawn "$tmp/bin/gc"
wait_for gc "${pids[-1]}" port_open "$PRESENCE_GC_ADDR"
spawn "$tmp/bin/presence"
wait_for presence "${pids[-1]}" port_open "$PRESENCE_ADDR"

app="http://${PRESENCE_ADDR}"
case $PRESENCE_ADDR in :*) app="http://127.0.0.1${PRESENCE_ADDR}" ;; esac
gcurl="http://${PRESENCE_GC_ADDR}"
case $PRESENCE_GC_ADDR in :*) gcurl="http://127.0.0.1${PRESENCE_GC_ADDR}" ;; esac
cat <<MSG
presence listens on $app
  WebSocket  ${app/http:/ws:}/v1/ws
  REST       $app/v1/posts/13   $app/v1/viewers?post=1&post=2
  health     $app/readyz   metrics $app/metrics
gc listens on $gcurl (/healthz, /readyz, /metrics)
Redis       $PRESENCE_REDIS_URL
Ctrl-C stops everything this script started.
MSG

# Run until Ctrl-C or until any of them exits on its own.
set +e
wait -n
status=$?
set -e
echo "a process exited (status $status); stopping the rest" >&2
exit "$status"

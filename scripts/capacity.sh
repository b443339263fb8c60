#!/usr/bin/env bash
# The capacity runs of docs/benchmarks.md, on this machine: Redis mode, gc
# and one redis-server, everything on loopback, the load generator on the
# same cores.
#
#   scripts/capacity.sh joins [BIN]  5,000 joins at 1,000 a second (100 posts)
#   scripts/capacity.sh idle [BIN]   19,000 idle viewers on one app server
#   scripts/capacity.sh hot [BIN]    10,000 viewers of one post, then one more
#   scripts/capacity.sh box [BIN]    3 app servers x 19,000 viewers, churn
#   scripts/capacity.sh heap [BIN]   exact heap profile with 2,000 idle viewers
#   scripts/capacity.sh cpu [BIN]    CPU profile of the joins run
#
# BIN is a presence binary to measure (an older build, for a before
# figure); by default the working tree's. Profiles are written to the
# current directory. Everything started here is stopped on exit.
set -euo pipefail

run=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	redis-cli -p 27200 shutdown nosave >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

case "$run" in
joins | idle | hot | box | heap | cpu) ;;
*)
	sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
for tool in redis-server redis-cli curl go; do
	command -v "$tool" >/dev/null || { echo "capacity.sh: $tool is needed" >&2; exit 1; }
done

(cd "$root" && go build -o "$work/gc" ./cmd/gc && go build -o "$work/loadgen" ./cmd/loadgen)
bin=${2:-}
if [ -z "$bin" ]; then
	(cd "$root" && go build -o "$work/presence" ./cmd/presence)
	bin=$work/presence
fi

redis-server --port 27200 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes --logfile "$work/redis.log"
for _ in $(seq 50); do redis-cli -p 27200 ping >/dev/null 2>&1 && break; sleep 0.1; done
export PRESENCE_REDIS_URL=redis://127.0.0.1:27200/0 PRESENCE_LOG_LEVEL=warn
PRESENCE_GC_ADDR=127.0.0.1:18181 "$work/gc" 2>"$work/gc.log" &
pids+=($!)

# server PORT [ENV...]: an app server on PORT without connection limits
# (the load generator is a few addresses with thousands of tabs).
server() {
	local port=$1
	shift
	env "$@" PRESENCE_ADDR=127.0.0.1:"$port" PRESENCE_MAX_CONNS=0 PRESENCE_MAX_CONNS_PER_IP=0 \
		"$bin" 2>"$work/presence-$port.log" &
	pids+=($!)
	for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
	curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 || { echo "capacity.sh: the app server on $port did not start" >&2; cat "$work/presence-$port.log" >&2; exit 1; }
}
loadgen() { "$work/loadgen" -redis 127.0.0.1:27200 "$@"; }

case "$run" in
joins)
	server 18190
	loadgen -server 127.0.0.1:18190 -conns 5000 -posts 100 -ramp 1000 -inflight 200 -hold 2s -src 127.0.0.2,127.0.0.3
	;;
idle)
	server 18190
	loadgen -server 127.0.0.1:18190 -conns 19000 -posts 100 -ramp 2000 -inflight 200 -hold 10s -src 127.0.0.2,127.0.0.3
	;;
hot)
	server 18190
	loadgen -server 127.0.0.1:18190 -conns 10000 -posts 1 -ramp 500 -inflight 200 -hold 5s -probe -src 127.0.0.2,127.0.0.3
	;;
box)
	servers=127.0.0.1:18190,127.0.0.1:18192,127.0.0.1:18194
	for port in 18190 18192 18194; do server $port; done
	cpu() { redis-cli -p 27200 info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {print s}'; }
	c0=$(cpu) t0=$(date +%s.%N)
	# Three processes, as one holds at most 20,000 files: each opens 19,000
	# viewers over the three servers from two addresses of its own, closes
	# 33 a second of its churn viewers, and lingers so none closes while
	# another still measures.
	lg=()
	i=0
	for src in 127.0.0.2,127.0.0.3 127.0.0.4,127.0.0.5 127.0.0.6,127.0.0.7; do
		loadgen -server "$servers" -conns 19000 -posts 100 -post-prefix "g$i-" -ramp 100 -inflight 100 \
			-hold 30s -churn 33 -churn-for 10s -src "$src" -linger 60s -timeout 15m >"$work/loadgen$i.log" 2>&1 &
		lg+=($!)
		i=$((i + 1))
	done
	status=0
	for p in "${lg[@]}"; do wait "$p" || status=1; done
	c1=$(cpu) t1=$(date +%s.%N)
	for i in 0 1 2; do echo "== load generator $i"; cat "$work/loadgen$i.log"; done
	awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" \
		'BEGIN { printf "redis: %.1f s of CPU in %.1f s, %.1f%% of a core\n", c1 - c0, t1 - t0, 100 * (c1 - c0) / (t1 - t0) }'
	redis-cli -p 27200 info memory | grep '^used_memory_human'
	exit $status
	;;
heap)
	# Every allocation sampled; the profile is taken 12 s in, while they hold.
	server 18190 GODEBUG=memprofilerate=1 PRESENCE_ADMIN_ADDR=127.0.0.1:18191
	loadgen -server 127.0.0.1:18190 -conns 2000 -posts 100 -ramp 500 -inflight 100 -hold 20s -src 127.0.0.2,127.0.0.3 &
	l=$!
	sleep 12
	curl -sf -o heap.pb.gz 'http://127.0.0.1:18191/debug/pprof/heap?gc=1'
	wait $l
	go tool pprof -top -sample_index=inuse_space "$bin" heap.pb.gz | head -25
	;;
cpu)
	# /metrics moves to the admin listener with pprof, so the phase report
	# has no server figures; the profile is the point.
	server 18190 PRESENCE_ADMIN_ADDR=127.0.0.1:18191
	curl -sf -o cpu.pb.gz 'http://127.0.0.1:18191/debug/pprof/profile?seconds=6' &
	c=$!
	loadgen -server 127.0.0.1:18190 -conns 5000 -posts 100 -ramp 1000 -inflight 200 -hold 2s -src 127.0.0.2,127.0.0.3
	wait $c
	go tool pprof -top -cum -nodecount 40 "$bin" cpu.pb.gz
	;;
esac

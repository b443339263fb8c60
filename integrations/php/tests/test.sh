#!/bin/sh
# Tests of the PHP client against a real server: checks the syntax of every PHP file,
# builds presence from this checkout, starts redis-server and presence on free loopback
# ports, runs tests/run.php against them, and stops both whatever happens.
#
# Needs go, php-cli, php-curl and redis-server; with php-redis the Redis path is tested
# too (its tests say "skip" without it). Debian:
#   apt-get install -y php-cli php-curl php-redis redis-server
set -eu
cd "$(dirname "$0")/../../.."
dir=integrations/php

missing=
command -v php >/dev/null 2>&1 || missing="$missing php-cli"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v go >/dev/null 2>&1 || missing="$missing go"
if command -v php >/dev/null 2>&1 && ! php -r 'exit(extension_loaded("curl") ? 0 : 1);'; then
	missing="$missing php-curl"
fi
if [ -n "$missing" ]; then
	echo "missing:$missing (Debian: apt-get install -y php-cli php-curl php-redis redis-server)" >&2
	exit 1
fi
if ! php -r 'exit(extension_loaded("redis") ? 0 : 1);'; then
	echo "php-redis is not installed: the Redis path is skipped" >&2
fi

files=$(find "$dir" -name '*.php' | sort)
count=0
status=0
for f in $files; do
	count=$((count + 1))
	if ! out=$(php -l "$f" 2>&1); then
		echo "$out" >&2
		status=1
	fi
done
if [ "$status" -ne 0 ]; then
	echo "php -l: syntax errors" >&2
	exit 1
fi
echo "php -l: $count files, no syntax errors"

tmp=$(mktemp -d)
redis_pid=
presence_pid=
cleanup() {
	status=$?
	trap - EXIT INT TERM HUP
	for pid in $presence_pid $redis_pid; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $presence_pid $redis_pid; do
		wait "$pid" 2>/dev/null || true
	done
	if [ "$status" -ne 0 ]; then
		for log in "$tmp/presence.log" "$tmp/redis.log"; do
			if [ -s "$log" ]; then
				echo "--- $(basename "$log")" >&2
				tail -n 30 "$log" >&2
			fi
		done
	fi
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# A port the kernel just handed out and took back; another process taking it in
# between is unlikely, and would only make a start fail loudly.
free_port() {
	php -r '$s = stream_socket_server("tcp://127.0.0.1:0"); echo parse_url("tcp://" . stream_socket_get_name($s, false), PHP_URL_PORT);'
}
secret() {
	php -r "echo bin2hex(random_bytes($1));"
}

go build -o "$tmp/presence" ./cmd/presence

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
redis_pid=$!
php "$dir/tests/wait.php" redis "127.0.0.1:$redis_port" "$redis_pid" 10

# Settings of the caller's environment must not change the server under test.
for v in $(env | sed -n 's/^\(PRESENCE_[A-Z_]*\)=.*/\1/p'); do
	unset "$v"
done

port=$(free_port)
key_prefix=phptest:
publish_key=$(secret 16)
post_secret=$(secret 32)
PRESENCE_ADDR="127.0.0.1:$port" \
	PRESENCE_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
	PRESENCE_KEY_PREFIX="$key_prefix" \
	PRESENCE_PUBLISH_KEYS="$publish_key" \
	PRESENCE_POST_SECRET="$post_secret" \
	PRESENCE_MAX_CONNS_PER_IP=0 \
	PRESENCE_LOG_LEVEL=warn \
	"$tmp/presence" >"$tmp/presence.log" 2>&1 &
presence_pid=$!
php "$dir/tests/wait.php" http "http://127.0.0.1:$port/healthz" "$presence_pid" 10
# /readyz: presence starts before it reaches Redis, and the tests need both.
php "$dir/tests/wait.php" http "http://127.0.0.1:$port/readyz" "$presence_pid" 10

PRESENCE_TEST_URL="http://127.0.0.1:$port" \
	PRESENCE_TEST_REDIS="127.0.0.1:$redis_port" \
	PRESENCE_TEST_KEY_PREFIX="$key_prefix" \
	PRESENCE_TEST_PUBLISH_KEY="$publish_key" \
	PRESENCE_TEST_POST_SECRET="$post_secret" \
	php "$dir/tests/run.php"

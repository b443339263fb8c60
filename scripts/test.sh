#!/usr/bin/env bash
# Runs every check CI runs: installs what the tests need where it is missing
# (redis-server and redis-cli, Chromium, php-cli with curl, redis and mysql,
# WordPress, two of its default themes, MariaDB, gettext, promtool and
# systemd-analyze), then gofmt, go vet, the
# race-enabled Go tests (Sentinel and Cluster topologies and the real
# WordPress among them, started on loopback by the tests), the chaos run's
# short form, a short run of each fuzz target, the WordPress plugin's PHP
# tests and the PHP client's tests against a real server.
# FUZZTIME sets the fuzz runs' length (default 5000x, a count of inputs: a
# length in time, such as 5s, can end in a spurious "context deadline
# exceeded" from Go 1.26's fuzzing coordinator, golang/go#75804, fixed in Go
# 1.27; docs/benchmarks.md records a long run).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The Redis Cluster tests build their clusters with redis-cli --cluster.
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# The operations kit's test (deploy/): promtool checks and tests the alerting
# rules, systemd-analyze verifies the units.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v php >/dev/null 2>&1 || need_apt+=(php-cli)
# The PHP client's tests: curl for its requests, phpredis for the Redis path.
php -m 2>/dev/null | grep -qx curl || need_apt+=(php-curl)
php -m 2>/dev/null | grep -qx redis || need_apt+=(php-redis)
# The real-WordPress test (integrations/wordpress/wptest).
php -m 2>/dev/null | grep -qx mysqli || need_apt+=(php-mysql)
[ -f /usr/share/wordpress/wp-settings.php ] || need_apt+=(wordpress)
[ -d /usr/share/wordpress/wp-content/themes/twentytwentythree ] || need_apt+=(wordpress-theme-twentytwentythree)
# A classic theme, for lists of excerpts and widget areas.
[ -d /usr/share/wordpress/wp-content/themes/twentytwentyone ] || need_apt+=(wordpress-theme-twentytwentyone)
[ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
# The plugin's .pot file is checked against its strings.
command -v xgettext >/dev/null 2>&1 || need_apt+=(gettext)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_apt[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts the packaged services; tests start their own servers.
    if command -v service >/dev/null 2>&1; then
      service redis-server stop >/dev/null 2>&1 || true
      service mariadb stop >/dev/null 2>&1 || true
      service apache2 stop >/dev/null 2>&1 || true # wordpress pulls it in; php -S serves the test
      service prometheus stop >/dev/null 2>&1 || true
    fi
  else
    echo "missing ${need_apt[*]}: install it (e.g. sudo apt-get install ${need_apt[*]}) and run again" >&2
    exit 1
  fi
fi

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
go test -race -count=1 -timeout 15m ./... "$@"
# The chaos run's short form: one round of every fault (scripts/chaos.sh runs
# the long one).
go test -race -count=1 -timeout 10m -run '^TestChaos$' ./cmd/presence -args -chaos=short
# go test -fuzz takes one target of one package at a time.
for target in FuzzParseFrame:./internal/httpapi FuzzParseEvent:./internal/httpapi FuzzBusParse:./internal/redisstore; do
  go test -run '^$' -fuzz "^${target%%:*}\$" -fuzztime "${FUZZTIME:-5000x}" "${target#*:}"
done
integrations/wordpress/tests/test.sh
sh integrations/php/tests/test.sh

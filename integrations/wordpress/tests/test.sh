#!/bin/sh
# Checks the syntax of every PHP file of the WordPress plugin and its tests, that its
# .pot file holds its strings, then runs the tests. Needs php-cli and gettext.
set -eu
cd "$(dirname "$0")/../../.."

files=$(find integrations/wordpress -name '*.php' | sort)
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

sh integrations/wordpress/pot.sh --check

exec php integrations/wordpress/tests/run.php

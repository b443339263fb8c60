#!/bin/sh
# Writes presence-counter/languages/presence-counter.pot from the plugin's PHP and
# JavaScript, the strings translators see. With --check it writes nothing and fails
# when the committed file is out of date. Needs xgettext (Debian's gettext).
set -eu
cd "$(dirname "$0")/presence-counter"

out=languages/presence-counter.pot
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.js"' EXIT

# WordPress's translation functions; _n takes the singular and plural, and the
# translators: comments go to the translators.
keywords='--keyword=__ --keyword=_e --keyword=esc_html__ --keyword=esc_html_e --keyword=esc_attr__ --keyword=esc_attr_e --keyword=_n:1,2 --keyword=_x:1,2c'
# shellcheck disable=SC2086
xgettext --language=PHP --from-code=UTF-8 --add-comments=translators: $keywords \
	--sort-by-file --no-wrap --add-location=file --package-name='Presence Counter' --package-version="$(sed -n 's/^ \* Version: *//p' presence-counter.php)" \
	--msgid-bugs-address='https://github.com/presence/presence/issues' \
	-o "$tmp" presence-counter.php
sed -i 's/^"Content-Type: text\/plain; charset=CHARSET\\n"/"Content-Type: text\/plain; charset=UTF-8\\n"/' "$tmp"
# shellcheck disable=SC2086
xgettext --language=JavaScript --from-code=UTF-8 --add-comments=translators: $keywords \
	--sort-by-file --no-wrap --add-location=file --join-existing -o "$tmp" words.js block/index.js
# The block's title, description and keywords, which WordPress translates from block.json.
php -r '
$m = json_decode( file_get_contents( "block/block.json" ), true );
$strings = array_merge( array( $m["title"], $m["description"] ), $m["keywords"] );
foreach ( $strings as $s ) {
	echo "#: block/block.json\nmsgid " . json_encode( $s, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE ) . "\nmsgstr \"\"\n\n";
}' >"$tmp.js"
msgcat --no-wrap --use-first -o "$tmp" "$tmp" "$tmp.js"
# No creation date: the file changes only when the strings do.
version=$(sed -n 's/^ \* Version: *//p' presence-counter.php)
sed -i -e '/^"POT-Creation-Date:/d' -e '/^#, fuzzy$/d' \
	-e '1,5c\# Presence Counter, the strings to translate.\n# This file is distributed under the same license as the plugin, GPL-2.0-or-later.' \
	-e "s/^\"Project-Id-Version: .*/\"Project-Id-Version: Presence Counter $version\\\\n\"/" "$tmp"

if [ "${1:-}" = "--check" ]; then
	if ! cmp -s "$tmp" "$out"; then
		diff -u "$out" "$tmp" >&2 || true
		echo "$out is out of date: run integrations/wordpress/pot.sh" >&2
		exit 1
	fi
	echo "$out: up to date"
else
	mkdir -p languages
	cp "$tmp" "$out"
	echo "wrote $out"
fi

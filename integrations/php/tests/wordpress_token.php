<?php
/**
 * Prints the token the WordPress plugin (integrations/wordpress/presence-counter) puts
 * in its pages, so that run.php can compare Client::token() with the plugin's own code
 * rather than with a copy of its formula. Runs in a process of its own, because the
 * WordPress functions the plugin calls are stubbed here in the global namespace.
 *
 *     php wordpress_token.php <post secret> <post> <unix time> [<lifetime days>]
 */

declare(strict_types=1);

if ($argc < 4) {
    fwrite(STDERR, "usage: php wordpress_token.php <post secret> <post> <unix time> [<lifetime days>]\n");
    exit(2);
}
[, $secret, $post, $now] = $argv;
$days = $argv[4] ?? null;

define('ABSPATH', __DIR__ . '/');
define('DAY_IN_SECONDS', 86400);

function add_action(...$args): void {}
function add_filter(...$args): void {}
function add_shortcode(...$args): void {}
function get_option($name, $default = false)
{
    return $name === PRESENCE_COUNTER_POST_SECRET_OPTION ? $GLOBALS['secret'] : $default;
}
function apply_filters($hook, $value, ...$args)
{
    return $hook === 'presence_counter_token_lifetime_days' && $GLOBALS['days'] !== null ? (int) $GLOBALS['days'] : $value;
}

require dirname(__DIR__, 2) . '/wordpress/presence-counter/presence-counter.php';

echo presence_counter_token($post, (int) $now);

<?php
/**
 * Plugin Name:       Presence Counter
 * Description:       Shows "N people are viewing this post" live, counted by your Presence server.
 * Version:           0.5.0
 * Requires at least: 6.0
 * Requires PHP:      7.4
 * License:           GPL-2.0-or-later
 * License URI:       https://www.gnu.org/licenses/gpl-2.0.html
 * Text Domain:       presence-counter
 * Domain Path:       /languages
 *
 * @package Presence_Counter
 */

defined( 'ABSPATH' ) || exit;

define( 'PRESENCE_COUNTER_OPTION', 'presence_counter_server_url' );
define( 'PRESENCE_COUNTER_PUBLISH_KEY_OPTION', 'presence_counter_publish_key' );
define( 'PRESENCE_COUNTER_PUBLISH_KEY_CLEAR', 'presence_counter_publish_key_clear' );
define( 'PRESENCE_COUNTER_POST_SECRET_OPTION', 'presence_counter_post_secret' );
define( 'PRESENCE_COUNTER_POST_SECRET_CLEAR', 'presence_counter_post_secret_clear' );
define( 'PRESENCE_COUNTER_ARCHIVES_OPTION', 'presence_counter_archives' );
define( 'PRESENCE_COUNTER_SINGLE_OPTION', 'presence_counter_single' );
define( 'PRESENCE_COUNTER_HANDLE', 'presence-counter-widget' );
define( 'PRESENCE_COUNTER_WORDS_HANDLE', 'presence-counter-words' );
define( 'PRESENCE_COUNTER_VERSION', '0.5.0' );
// The server refuses larger publish bodies with 413 (MaxEventBody in internal/httpapi/publish.go).
define( 'PRESENCE_COUNTER_MAX_EVENT_BYTES', 16384 );

/*
 * Settings.
 */

/**
 * Reduces a URL to the origin of a Presence server (scheme://host[:port]), or ''.
 *
 * Only the origin is kept: widget.js opens its WebSocket at <host>/v1/ws whatever
 * path it was loaded from, so a path would only load a widget that cannot connect.
 *
 * @param string $url URL as typed by an administrator or read from the database.
 * @return string The origin without a trailing slash, or '' when $url is not a usable http(s) URL.
 */
function presence_counter_normalize_url( $url ) {
	$url = trim( (string) $url );
	// "presence.example.com" means https: esc_url_raw() would make it http://, which
	// browsers block as mixed content on https sites.
	if ( '' !== $url && false === strpos( $url, ':' ) && '/' !== $url[0] ) {
		$url = 'https://' . $url;
	}
	$url = esc_url_raw( $url, array( 'http', 'https' ) );
	if ( '' === $url ) {
		return '';
	}
	$parts = wp_parse_url( $url );
	if ( ! is_array( $parts ) || empty( $parts['scheme'] ) || empty( $parts['host'] ) ) {
		return '';
	}
	$scheme = strtolower( $parts['scheme'] );
	if ( 'http' !== $scheme && 'https' !== $scheme ) {
		return '';
	}
	// A host name (IDNs as UTF-8 bytes) or a bracketed IPv6 address; nothing that could
	// end an HTML attribute or smuggle in user info.
	if ( ! preg_match( '/^(?:[A-Za-z0-9.\-\x80-\xff]+|\[[0-9A-Fa-f:.]+\])$/D', $parts['host'] ) ) {
		return '';
	}
	$origin = $scheme . '://' . strtolower( $parts['host'] );
	if ( ! empty( $parts['port'] ) ) {
		$origin .= ':' . (int) $parts['port'];
	}
	return $origin;
}

/**
 * Whether a URL is safe to send the publish key to: https://, or http:// to this machine.
 *
 * The key travels in the Authorization header, which anyone on the network path can
 * read when the request is plain http://. Loopback addresses (localhost, *.localhost,
 * 127.0.0.0/8, [::1]) never leave the machine, so a Presence server running beside
 * WordPress needs no TLS.
 *
 * @param string $url URL or origin; normalized first, like the stored server URL.
 * @return bool False also for '' and anything that is not an http(s) URL.
 */
function presence_counter_is_secure_url( $url ) {
	$origin = presence_counter_normalize_url( $url );
	if ( '' === $origin ) {
		return false;
	}
	$parts = wp_parse_url( $origin );
	if ( 'https' === $parts['scheme'] ) {
		return true;
	}
	$host = $parts['host'];
	if ( preg_match( '/^(?:[a-z0-9-]+\.)*localhost$/D', $host ) ) {
		return true;
	}
	if ( false !== filter_var( $host, FILTER_VALIDATE_IP, FILTER_FLAG_IPV4 ) ) {
		return 0 === strpos( $host, '127.' );
	}
	// Bracketed IPv6; inet_pton() makes [0:0:0:0:0:0:0:1] equal to [::1].
	if ( '[' === $host[0] ) {
		$ip = substr( $host, 1, -1 );
		return false !== filter_var( $ip, FILTER_VALIDATE_IP, FILTER_FLAG_IPV6 ) && inet_pton( $ip ) === inet_pton( '::1' );
	}
	return false;
}

/**
 * Whether a URL names a Presence server that the publish key must not be sent to.
 *
 * '' (no server) is not one: nothing is sent anywhere then.
 *
 * @param string $url URL or origin.
 * @return bool
 */
function presence_counter_is_insecure_server( $url ) {
	return '' !== presence_counter_normalize_url( $url ) && ! presence_counter_is_secure_url( $url );
}

/**
 * Whether the settings form ticked one of its "remove" checkboxes.
 *
 * @param string $field Name of the checkbox.
 * @return bool
 */
function presence_counter_clear_requested( $field ) {
	// phpcs:ignore WordPress.Security.NonceVerification.Missing -- options.php checked the settings form's nonce before saving; only compared with '1'.
	return isset( $_POST[ $field ] ) && '1' === $_POST[ $field ];
}

/**
 * Whether a publish key will be stored once the settings being saved are written.
 *
 * The server URL is sanitized before the publish key, so this looks at both the
 * stored key and the one submitted with it: a key typed in together with an http://
 * URL would otherwise be stored right after the URL. A key the "remove" checkbox
 * clears in the same save does not count, as it is gone before anything is sent.
 *
 * @return bool
 */
function presence_counter_publish_key_kept() {
	if ( presence_counter_clear_requested( PRESENCE_COUNTER_PUBLISH_KEY_CLEAR ) ) {
		return false;
	}
	if ( '' !== trim( (string) get_option( PRESENCE_COUNTER_PUBLISH_KEY_OPTION, '' ) ) ) {
		return true;
	}
	// phpcs:ignore WordPress.Security.NonceVerification.Missing, WordPress.Security.ValidatedSanitizedInput.InputNotSanitized -- options.php checked the nonce; only tested for being empty, never stored or printed.
	return isset( $_POST[ PRESENCE_COUNTER_PUBLISH_KEY_OPTION ] ) && is_string( $_POST[ PRESENCE_COUNTER_PUBLISH_KEY_OPTION ] ) && '' !== trim( wp_unslash( $_POST[ PRESENCE_COUNTER_PUBLISH_KEY_OPTION ] ) );
}

/**
 * Sanitize callback of the server URL option.
 *
 * An empty value is stored as is (it switches the widget off). A value that is not an
 * http(s) URL is refused with a settings error and the previous value is kept, so a
 * typo never silently disables the counters. So is an http:// URL of another machine
 * while a publish key is set, which would send the key unencrypted.
 *
 * @param mixed $value Submitted value.
 * @return string Value to store.
 */
function presence_counter_sanitize_server_url( $value ) {
	$value = is_string( $value ) ? trim( $value ) : '';
	if ( '' === $value ) {
		return '';
	}
	$url = presence_counter_normalize_url( $value );
	if ( '' === $url ) {
		add_settings_error(
			PRESENCE_COUNTER_OPTION,
			'presence_counter_invalid_url',
			__( 'The Presence server URL must be an http:// or https:// address, such as https://presence.example.com. The previous value was kept.', 'presence-counter' )
		);
		return (string) get_option( PRESENCE_COUNTER_OPTION, '' );
	}
	if ( ! presence_counter_is_secure_url( $url ) && presence_counter_publish_key_kept() ) {
		add_settings_error(
			PRESENCE_COUNTER_OPTION,
			'presence_counter_insecure_url',
			__( 'The Presence server URL was not changed: over http:// to another machine the publish key would be sent unencrypted, readable by anyone on the network path. Use an https:// address, or remove the publish key first. The previous value was kept.', 'presence-counter' )
		);
		return (string) get_option( PRESENCE_COUNTER_OPTION, '' );
	}
	return $url;
}

/**
 * The configured server origin, or '' when none is set.
 *
 * The stored value is checked again because it can be written without the sanitize
 * callback (database edits, imports, older versions).
 *
 * @return string
 */
function presence_counter_server_url() {
	return presence_counter_normalize_url( get_option( PRESENCE_COUNTER_OPTION, '' ) );
}

/**
 * Whether a string can be a publish key.
 *
 * Printable ASCII only, so the key can never break out of the Authorization header.
 * Spaces, quotes and backslashes are refused because they are almost always left over
 * from copying the key out of a shell or .env file, and commas because the server's
 * PRESENCE_PUBLISH_KEYS is split on them, so no key the server accepts has one. The
 * server also refuses keys under 16 characters at start-up, so none can match.
 *
 * @param string $key Candidate key, already trimmed.
 * @return bool
 */
function presence_counter_is_valid_publish_key( $key ) {
	return presence_counter_is_secret_text( $key, 16 );
}

/**
 * Whether a string can be a publish key or a post secret: $min_length to 256
 * printable ASCII characters without spaces, quotes, backslashes or commas.
 *
 * @param string $text       Candidate, already trimmed.
 * @param int    $min_length The server's least length for it.
 * @return bool
 */
function presence_counter_is_secret_text( $text, $min_length ) {
	return is_string( $text )
		&& preg_match( '/^[\x21-\x7e]{' . (int) $min_length . ',256}$/D', $text )
		&& ! preg_match( '/["\'`\\\\,]/', $text );
}

/**
 * Sanitize callback of the publish key option.
 *
 * The settings page never prints the stored key, so its field is empty unless a new
 * key is typed in: an empty value keeps the stored key, and only the "remove" checkbox
 * clears it. A value that cannot be a key is refused with a settings error and the
 * stored key is kept; the error does not repeat the value, which may be a secret.
 *
 * @param mixed $value Submitted value.
 * @return string Value to store.
 */
function presence_counter_sanitize_publish_key( $value ) {
	$previous = (string) get_option( PRESENCE_COUNTER_PUBLISH_KEY_OPTION, '' );
	if ( presence_counter_clear_requested( PRESENCE_COUNTER_PUBLISH_KEY_CLEAR ) ) {
		return '';
	}
	$value = is_string( $value ) ? trim( $value ) : '';
	if ( '' === $value ) {
		return $previous;
	}
	if ( ! presence_counter_is_valid_publish_key( $value ) ) {
		add_settings_error(
			PRESENCE_COUNTER_PUBLISH_KEY_OPTION,
			'presence_counter_invalid_publish_key',
			__( 'The publish key must be one of the keys in the server\'s PRESENCE_PUBLISH_KEYS: 16 to 256 printable ASCII characters, without spaces, quotes, backslashes or commas. The previous key was kept.', 'presence-counter' )
		);
		return $previous;
	}
	// The server URL is already stored when this runs: options are saved in the order they were registered.
	if ( presence_counter_is_insecure_server( presence_counter_server_url() ) ) {
		add_settings_error(
			PRESENCE_COUNTER_PUBLISH_KEY_OPTION,
			'presence_counter_insecure_publish_key',
			__( 'The publish key was not saved: the Presence server URL is an http:// address of another machine, so the key would be sent unencrypted. Use an https:// server URL first. The previous key was kept.', 'presence-counter' )
		);
		return $previous;
	}
	return $value;
}

/**
 * The configured publish key, or '' when none is set.
 *
 * Checked again like the server URL, so a key written past the sanitize callback cannot
 * put a line break into the request headers.
 *
 * @return string
 */
function presence_counter_publish_key() {
	$key = trim( (string) get_option( PRESENCE_COUNTER_PUBLISH_KEY_OPTION, '' ) );
	return presence_counter_is_valid_publish_key( $key ) ? $key : '';
}

/**
 * Whether a string can be a post secret.
 *
 * The rules of a publish key, with at least 32 characters: the server refuses shorter
 * secrets at start-up, and splits PRESENCE_POST_SECRET on commas to allow rotation, so
 * no secret it uses has one.
 *
 * @param string $secret Candidate secret, already trimmed.
 * @return bool
 */
function presence_counter_is_valid_post_secret( $secret ) {
	return presence_counter_is_secret_text( $secret, 32 );
}

/**
 * Sanitize callback of the post secret option.
 *
 * Handled like the publish key: the stored secret is never printed, an empty value
 * keeps it, only the "remove" checkbox clears it, and a refused value keeps it with a
 * settings error that does not repeat the value.
 *
 * @param mixed $value Submitted value.
 * @return string Value to store.
 */
function presence_counter_sanitize_post_secret( $value ) {
	$previous = (string) get_option( PRESENCE_COUNTER_POST_SECRET_OPTION, '' );
	if ( presence_counter_clear_requested( PRESENCE_COUNTER_POST_SECRET_CLEAR ) ) {
		return '';
	}
	$value = is_string( $value ) ? trim( $value ) : '';
	if ( '' === $value ) {
		return $previous;
	}
	if ( presence_counter_is_valid_post_secret( $value ) ) {
		return $value;
	}
	add_settings_error(
		PRESENCE_COUNTER_POST_SECRET_OPTION,
		'presence_counter_invalid_post_secret',
		__( 'The post secret must be the server\'s PRESENCE_POST_SECRET: 32 to 256 printable ASCII characters, without spaces, quotes, backslashes or commas. The previous secret was kept.', 'presence-counter' )
	);
	return $previous;
}

/**
 * The configured post secret, or '' when none is set.
 *
 * Checked again like the publish key: a secret written past the sanitize callback that
 * the server could not hold signs nothing, rather than tokens the server refuses.
 *
 * @return string
 */
function presence_counter_post_secret() {
	$secret = trim( (string) get_option( PRESENCE_COUNTER_POST_SECRET_OPTION, '' ) );
	return presence_counter_is_valid_post_secret( $secret ) ? $secret : '';
}

/**
 * Registers the option, its section and its field.
 */
function presence_counter_register_settings() {
	register_setting(
		'presence_counter',
		PRESENCE_COUNTER_OPTION,
		array(
			'type'              => 'string',
			'description'       => __( 'Base URL of the Presence server.', 'presence-counter' ),
			'sanitize_callback' => 'presence_counter_sanitize_server_url',
			'default'           => '',
			'show_in_rest'      => false,
		)
	);
	add_settings_section(
		'presence_counter_server',
		__( 'Presence server', 'presence-counter' ),
		'__return_false',
		'presence-counter'
	);
	add_settings_field(
		PRESENCE_COUNTER_OPTION,
		__( 'Server URL', 'presence-counter' ),
		'presence_counter_render_server_url_field',
		'presence-counter',
		'presence_counter_server',
		array( 'label_for' => PRESENCE_COUNTER_OPTION )
	);

	register_setting(
		'presence_counter',
		PRESENCE_COUNTER_POST_SECRET_OPTION,
		array(
			'type'              => 'string',
			'description'       => __( 'Secret for signing the posts this site shows, the same as the server\'s PRESENCE_POST_SECRET.', 'presence-counter' ),
			'sanitize_callback' => 'presence_counter_sanitize_post_secret',
			'default'           => '',
			'show_in_rest'      => false, // A secret: never in /wp/v2/settings.
		)
	);
	add_settings_field(
		PRESENCE_COUNTER_POST_SECRET_OPTION,
		__( 'Post secret', 'presence-counter' ),
		'presence_counter_render_post_secret_field',
		'presence-counter',
		'presence_counter_server',
		array( 'label_for' => PRESENCE_COUNTER_POST_SECRET_OPTION )
	);

	add_settings_section(
		'presence_counter_counters',
		__( 'Counters', 'presence-counter' ),
		'__return_false',
		'presence-counter'
	);
	register_setting(
		'presence_counter',
		PRESENCE_COUNTER_SINGLE_OPTION,
		array(
			'type'              => 'string',
			'description'       => __( 'Where single posts show their live viewers.', 'presence-counter' ),
			'sanitize_callback' => 'presence_counter_sanitize_single',
			'default'           => 'after',
			'show_in_rest'      => false,
		)
	);
	add_settings_field(
		PRESENCE_COUNTER_SINGLE_OPTION,
		__( 'On single posts', 'presence-counter' ),
		'presence_counter_render_single_field',
		'presence-counter',
		'presence_counter_counters',
		array( 'label_for' => PRESENCE_COUNTER_SINGLE_OPTION )
	);

	register_setting(
		'presence_counter',
		PRESENCE_COUNTER_ARCHIVES_OPTION,
		array(
			'type'              => 'string',
			'description'       => __( 'Where lists of posts show each post\'s live viewers.', 'presence-counter' ),
			'sanitize_callback' => 'presence_counter_sanitize_archives',
			'default'           => 'title',
			'show_in_rest'      => false,
		)
	);
	add_settings_field(
		PRESENCE_COUNTER_ARCHIVES_OPTION,
		__( 'Lists of posts', 'presence-counter' ),
		'presence_counter_render_archives_field',
		'presence-counter',
		'presence_counter_counters',
		array( 'label_for' => PRESENCE_COUNTER_ARCHIVES_OPTION )
	);

	// After the server URL: its sanitize callback runs first and the key's relies on that.
	register_setting(
		'presence_counter',
		PRESENCE_COUNTER_PUBLISH_KEY_OPTION,
		array(
			'type'              => 'string',
			'description'       => __( 'Bearer key for publishing events to the Presence server.', 'presence-counter' ),
			'sanitize_callback' => 'presence_counter_sanitize_publish_key',
			'default'           => '',
			'show_in_rest'      => false, // A secret: never in /wp/v2/settings.
		)
	);
	add_settings_section(
		'presence_counter_events',
		__( 'Events', 'presence-counter' ),
		'presence_counter_render_events_section',
		'presence-counter'
	);
	add_settings_field(
		PRESENCE_COUNTER_PUBLISH_KEY_OPTION,
		__( 'Publish key', 'presence-counter' ),
		'presence_counter_render_publish_key_field',
		'presence-counter',
		'presence_counter_events',
		array( 'label_for' => PRESENCE_COUNTER_PUBLISH_KEY_OPTION )
	);
}
add_action( 'admin_init', 'presence_counter_register_settings' );

/**
 * Keeps the single posts setting to its three values; anything else is the default.
 *
 * @param mixed $value Submitted value.
 * @return string 'after', 'before' or 'off'.
 */
function presence_counter_sanitize_single( $value ) {
	return in_array( $value, array( 'before', 'off' ), true ) ? $value : 'after';
}

/**
 * Where single posts show their counter: 'after' or 'before' the content, or 'off'.
 *
 * @return string
 */
function presence_counter_single_placement() {
	return presence_counter_sanitize_single( get_option( PRESENCE_COUNTER_SINGLE_OPTION, 'after' ) );
}

/**
 * Prints a select of a setting's values.
 *
 * @param string   $option  Option name, also the select's id and name.
 * @param string   $current The value selected.
 * @param string[] $choices Labels by value, not yet escaped.
 */
function presence_counter_render_select( $option, $current, $choices ) {
	printf( '<select id="%1$s" name="%1$s">', esc_attr( $option ) );
	foreach ( $choices as $value => $label ) {
		printf( '<option value="%s"%s>%s</option>', esc_attr( $value ), $current === $value ? ' selected="selected"' : '', esc_html( $label ) );
	}
	echo '</select>';
}

/**
 * Prints the single posts setting.
 */
function presence_counter_render_single_field() {
	presence_counter_render_select(
		PRESENCE_COUNTER_SINGLE_OPTION,
		presence_counter_single_placement(),
		array(
			'after'  => __( 'After the content', 'presence-counter' ),
			'before' => __( 'Before the content', 'presence-counter' ),
			'off'    => __( 'Off', 'presence-counter' ),
		)
	);
	echo '<p class="description">';
	echo esc_html__( 'On every single post, "N people are viewing this post", live, with no post or template to edit. Posts that already show a Presence counter block or [presence_viewers] get no second one.', 'presence-counter' );
	echo '</p>';
}

/**
 * Keeps the archives setting to its two values; anything else is the default.
 *
 * @param mixed $value Submitted value.
 * @return string 'title' or 'off'.
 */
function presence_counter_sanitize_archives( $value ) {
	return 'off' === $value ? 'off' : 'title';
}

/**
 * Prints the archives setting.
 */
function presence_counter_render_archives_field() {
	presence_counter_render_select(
		PRESENCE_COUNTER_ARCHIVES_OPTION,
		presence_counter_archive_counters() ? 'title' : 'off',
		array(
			'title' => __( 'After each post\'s title or excerpt', 'presence-counter' ),
			'off'   => __( 'Off', 'presence-counter' ),
		)
	);
	echo '<p class="description">';
	echo esc_html__( 'On the home page, archives and search results, each post\'s live viewers, without counting the visitor as a viewer: after the title in block themes, after the excerpt (or the content) in classic themes.', 'presence-counter' );
	echo '</p>';
}

/**
 * Adds Settings > Presence.
 */
function presence_counter_add_settings_page() {
	add_options_page(
		__( 'Presence', 'presence-counter' ),
		__( 'Presence', 'presence-counter' ),
		'manage_options',
		'presence-counter',
		'presence_counter_render_settings_page'
	);
}
add_action( 'admin_menu', 'presence_counter_add_settings_page' );

/**
 * Puts a Settings link first on the plugin's row of the Plugins screen.
 *
 * @param string[] $links       The row's action links.
 * @param string   $plugin_file The row's plugin, relative to the plugins directory.
 * @return string[]
 */
function presence_counter_action_links( $links, $plugin_file ) {
	if ( plugin_basename( __FILE__ ) !== $plugin_file ) {
		return $links;
	}
	$settings = sprintf(
		'<a href="%s">%s</a>',
		esc_url( admin_url( 'options-general.php?page=presence-counter' ) ),
		esc_html__( 'Settings', 'presence-counter' )
	);
	return array_merge( array( 'settings' => $settings ), (array) $links );
}
add_filter( 'plugin_action_links', 'presence_counter_action_links', 10, 2 );

/**
 * Prints the server URL input.
 */
function presence_counter_render_server_url_field() {
	$value = (string) get_option( PRESENCE_COUNTER_OPTION, '' );
	printf(
		// type="text", not "url": a browser refuses "presence.example.com" in a url
		// field, and presence_counter_normalize_url() takes it as https://.
		'<input type="text" inputmode="url" autocomplete="off" spellcheck="false" class="regular-text code" id="%1$s" name="%1$s" value="%2$s" placeholder="https://presence.example.com" />',
		esc_attr( PRESENCE_COUNTER_OPTION ),
		esc_attr( $value )
	);
	echo '<p class="description">';
	echo esc_html__( 'The address your Presence server answers on; the widget is loaded from <URL>/widget.js.', 'presence-counter' );
	echo '<br />';
	printf(
		/* translators: %s: the origin of this site, e.g. https://www.example.com */
		esc_html__( 'The server must allow this site in PRESENCE_ALLOWED_ORIGINS: %s', 'presence-counter' ),
		'<code>' . esc_html( presence_counter_site_origin() ) . '</code>'
	);
	echo '</p>';
}

/**
 * Prints the introduction of the Events section.
 */
function presence_counter_render_events_section() {
	echo '<p>';
	echo esc_html__( 'With a publish key, approving a comment pushes it live to the people viewing its post. Publishing is off on the server unless PRESENCE_PUBLISH_KEYS is set there.', 'presence-counter' );
	echo '</p>';
}

/**
 * Prints the input of a secret option and, when one is stored, its "remove" checkbox.
 *
 * The stored secret is never printed, not even escaped: the page's HTML ends up in
 * browser caches, extensions and screenshots. The field stays empty and says "(set)"
 * instead, and autocomplete="new-password" keeps browsers from filling in the saved
 * WordPress login password, which would otherwise replace the secret on the next save.
 *
 * @param string $option       Option name, also the input's name.
 * @param string $clear        Name of the "remove" checkbox.
 * @param string $remove_label Label of the checkbox, not yet escaped.
 */
function presence_counter_render_secret_input( $option, $clear, $remove_label ) {
	$is_set = '' !== trim( (string) get_option( $option, '' ) );
	printf(
		'<input type="password" class="regular-text code" id="%1$s" name="%1$s" value="" placeholder="%2$s" autocomplete="new-password" spellcheck="false" />',
		esc_attr( $option ),
		esc_attr( $is_set ? __( '(set)', 'presence-counter' ) : '' )
	);
	if ( $is_set ) {
		printf(
			'<br /><label for="%1$s"><input type="checkbox" id="%1$s" name="%1$s" value="1" /> %2$s</label>',
			esc_attr( $clear ),
			esc_html( $remove_label )
		);
	}
}

/**
 * Prints the post secret input.
 */
function presence_counter_render_post_secret_field() {
	presence_counter_render_secret_input(
		PRESENCE_COUNTER_POST_SECRET_OPTION,
		PRESENCE_COUNTER_POST_SECRET_CLEAR,
		__( 'Remove the stored secret (pages no longer carry tokens)', 'presence-counter' )
	);
	echo '<p class="description">';
	echo esc_html__( 'Must equal the server\'s PRESENCE_POST_SECRET (while rotating, one of the comma-separated secrets there). With it, the server accepts only posts this site rendered, so nobody can make the server count made-up posts. Pages carry tokens made with it, never the secret itself. Leave empty when the server has no PRESENCE_POST_SECRET. Once saved the secret is not shown again, and an empty field keeps it.', 'presence-counter' );
	echo '</p>';
}

/**
 * Prints the publish key input.
 */
function presence_counter_render_publish_key_field() {
	presence_counter_render_secret_input(
		PRESENCE_COUNTER_PUBLISH_KEY_OPTION,
		PRESENCE_COUNTER_PUBLISH_KEY_CLEAR,
		__( 'Remove the stored key (stops publishing events)', 'presence-counter' )
	);
	echo '<p class="description">';
	echo esc_html__( 'One of the keys in the server\'s PRESENCE_PUBLISH_KEYS. It is only sent from this site\'s server to the Presence server, never to visitors, and only to an https:// server URL (or http:// on this machine). Leave the field empty to keep the stored key.', 'presence-counter' );
	echo '</p>';
}

/**
 * The origin of this site's front end, as browsers send it in the Origin header.
 *
 * @return string
 */
function presence_counter_site_origin() {
	$parts = wp_parse_url( home_url() );
	if ( ! is_array( $parts ) || empty( $parts['host'] ) ) {
		return '';
	}
	$origin = ( isset( $parts['scheme'] ) ? $parts['scheme'] : 'https' ) . '://' . $parts['host'];
	return empty( $parts['port'] ) ? $origin : $origin . ':' . (int) $parts['port'];
}

/**
 * Prints Settings > Presence.
 *
 * Saved-settings and error messages are printed by WordPress itself for pages under
 * Settings, so settings_errors() is not called here.
 */
function presence_counter_render_settings_page() {
	if ( ! current_user_can( 'manage_options' ) ) {
		return;
	}
	echo '<div class="wrap">';
	echo '<h1>' . esc_html__( 'Presence', 'presence-counter' ) . '</h1>';
	if ( '' === presence_counter_server_url() ) {
		echo '<div class="notice notice-warning inline"><p>';
		echo esc_html__( 'No Presence server is set, so no counters are shown. Enter the URL of your Presence server below, e.g. https://presence.example.com.', 'presence-counter' );
		echo '</p></div>';
	}
	if ( '' !== trim( (string) get_option( PRESENCE_COUNTER_PUBLISH_KEY_OPTION, '' ) ) && presence_counter_is_insecure_server( presence_counter_server_url() ) ) {
		echo '<div class="notice notice-warning inline"><p>';
		echo esc_html__( 'No events are sent: the Presence server URL is an http:// address of another machine, where anyone on the network path could read the publish key. Change the server URL to https://, or remove the publish key.', 'presence-counter' );
		echo '</p></div>';
	}
	echo '<form action="options.php" method="post">';
	settings_fields( 'presence_counter' ); // Nonce, action and option page fields.
	do_settings_sections( 'presence-counter' );
	submit_button();
	echo '</form>';
	echo '<p>';
	echo esc_html__( 'Anywhere else, show counts with the "Presence counter" block (also inside a Query Loop, where each post gets its own), the [presence_viewers] shortcode, [presence_viewers views="1"] for total views, or presence_counter_viewers() and presence_counter_views() in a theme.', 'presence-counter' );
	echo '</p>';
	echo '</div>';
}

/*
 * Post ids.
 */

/**
 * The id Presence knows a post by.
 *
 * On multisite the blog id is part of it, so posts with the same number on different
 * sites of a network that share one Presence server never share a count.
 *
 * @param int|null $post_id Post ID; null for the current post.
 * @return string "<post id>", or "<blog id>-<post id>" on multisite; '' when there is no post.
 */
function presence_counter_post_key( $post_id = null ) {
	if ( null === $post_id ) {
		$post_id = get_the_ID();
		// Outside the loop on a single post; not on archives, where the queried object is a term.
		if ( ! $post_id && is_singular() ) {
			$post_id = get_queried_object_id();
		}
	}
	$post_id = absint( $post_id );
	if ( 0 === $post_id ) {
		return '';
	}
	$key = is_multisite() ? get_current_blog_id() . '-' . $post_id : (string) $post_id;

	/**
	 * Filters the id sent to Presence for a post.
	 *
	 * @param string $key     The id: 1-64 characters of [A-Za-z0-9_-], or it is not used.
	 * @param int    $post_id The post ID.
	 */
	$key = (string) apply_filters( 'presence_counter_post_key', $key, $post_id );

	// The server refuses anything else, and the key is written into HTML attributes.
	return preg_match( '/^[A-Za-z0-9_-]{1,64}$/D', $key ) ? $key : '';
}

/**
 * The token that makes the Presence server accept a post from a browser.
 *
 * "<expires>.<signature>": expires is a Unix time in seconds and the signature the
 * lowercase hex HMAC-SHA256 of "<post key>.<expires>" under the post secret, which the
 * server recomputes byte for byte. Post keys hold no dot, so the message is unambiguous.
 *
 * The expiry is a midnight (UTC): the end of today plus the lifetime in days, so every
 * page rendered on one day carries the same token and page caches and ETags stay
 * stable. With the default lifetime of 7 days a token is valid for 7 to 8 days, longer
 * than page caches usually keep a page.
 *
 * @param string   $post_key A key from presence_counter_post_key().
 * @param int|null $now      Unix time the page is rendered at; null for the current time.
 *                           Lets tests and tools make the token of a given day.
 * @return string The token, or '' when no post secret is set or $post_key is not a key.
 */
function presence_counter_token( $post_key, $now = null ) {
	$secret = presence_counter_post_secret();
	if ( '' === $secret || ! is_string( $post_key ) || ! preg_match( '/^[A-Za-z0-9_-]{1,64}$/D', $post_key ) ) {
		return '';
	}
	$now = null === $now ? time() : (int) $now;

	/**
	 * Filters how many days a post token stays valid after the day it is issued on.
	 *
	 * Pages kept in a cache for longer show counters that stop working until the cache
	 * is refreshed, as the server answers token_expired.
	 *
	 * @param int $days Whole days, 1 to 3650; other values are clamped. Default 7.
	 */
	$days = apply_filters( 'presence_counter_token_lifetime_days', 7 );
	// Clamped before the cast, so a huge value cannot overflow into a float expiry the
	// server would not parse; 10 years is far beyond any page cache.
	$days    = is_numeric( $days ) ? (int) max( 1, min( 3650, (float) $days ) ) : 7;
	$expires = (string) ( ( intdiv( $now, DAY_IN_SECONDS ) + 1 + $days ) * DAY_IN_SECONDS );
	return $expires . '.' . hash_hmac( 'sha256', $post_key . '.' . $expires, $secret );
}

/*
 * Front end.
 */

/**
 * Enqueues widget.js once per page (WordPress ignores repeated enqueues).
 *
 * Printed in the footer, so the shortcode and template functions can still enqueue it
 * while the page body is being rendered.
 *
 * @return bool Whether the widget is enqueued.
 */
function presence_counter_enqueue_widget() {
	$server = presence_counter_server_url();
	if ( '' === $server ) {
		return false;
	}
	// Version null: no ?ver= query, so the server's ETag and Cache-Control decide caching.
	wp_enqueue_script( PRESENCE_COUNTER_HANDLE, $server . '/widget.js', array(), null, true );
	return true;
}

/**
 * The key of the post this page is the single view of, or '' on any other page.
 *
 * @return string
 */
function presence_counter_viewed_key() {
	if ( ! is_singular() ) {
		return '';
	}
	$post_id = get_queried_object_id();
	return $post_id ? presence_counter_post_key( $post_id ) : '';
}

/**
 * Loads the widget on single posts, where the tab counts as a viewer.
 */
function presence_counter_enqueue_scripts() {
	if ( '' !== presence_counter_viewed_key() ) {
		presence_counter_enqueue_widget();
	}
}
add_action( 'wp_enqueue_scripts', 'presence_counter_enqueue_scripts' );

/**
 * Adds async, and data-post on single posts, to the widget's script tag.
 *
 * Done with this filter rather than the script strategies of WordPress 6.3 so that
 * one code path works from 6.0 on. Without data-post (archives, pages that only show
 * counters) the widget watches the counters on the page without counting the tab as a
 * viewer. With a post secret, data-token beside data-post lets the server accept the
 * post.
 *
 * @param string $tag    The script tag(s) printed for the handle.
 * @param string $handle Script handle.
 * @return string
 */
function presence_counter_script_loader_tag( $tag, $handle ) {
	if ( PRESENCE_COUNTER_HANDLE !== $handle ) {
		return $tag;
	}
	$attrs = '';
	$key   = presence_counter_viewed_key();
	if ( '' !== $key && ! preg_match( '/\sdata-post\s*=/i', $tag ) ) {
		$attrs .= ' data-post="' . esc_attr( $key ) . '"';
	}
	$token = '' !== $key ? presence_counter_token( $key ) : '';
	if ( '' !== $token && ! preg_match( '/\sdata-token\s*=/i', $tag ) ) {
		$attrs .= ' data-token="' . esc_attr( $token ) . '"';
	}
	if ( ! preg_match( '/<script\b[^>]*\sasync(?:[\s=>\/])/i', $tag ) ) {
		$attrs .= ' async';
	}
	if ( '' === $attrs ) {
		return $tag;
	}
	// The first tag with a src is the widget's: inline scripts added to the handle have none.
	return preg_replace( '/<script\b(?=[^>]*\ssrc\s*=)/i', '<script' . $attrs, $tag, 1 );
}
add_filter( 'script_loader_tag', 'presence_counter_script_loader_tag', 10, 2 );

/**
 * A kind of count as the widget names it: 'people' (different visitors viewing the
 * post: a reader with three tabs is one), 'viewers' (tabs open on it), 'reading' (the
 * viewers whose tab is in view) or 'views' (its total views); anything else is
 * 'people'.
 *
 * @param mixed $kind Kind asked for.
 * @return string
 */
function presence_counter_kind( $kind ) {
	return in_array( $kind, array( 'viewers', 'views', 'reading' ), true ) ? $kind : 'people';
}

/**
 * Markup of one counter. The widget replaces the number with the live count.
 *
 * With a post secret the counter carries its post's token in data-presence-token, so
 * the server accepts the posts an archive or widget shows as well as the viewed one.
 *
 * @param string $key     A key from presence_counter_post_key().
 * @param string $kind    'people', 'viewers', 'views' or 'reading'.
 * @param int    $initial The number shown until the live count arrives.
 * @return string
 */
function presence_counter_counter_markup( $key, $kind, $initial = 0 ) {
	$kind  = presence_counter_kind( $kind );
	$token = presence_counter_token( $key );
	return sprintf(
		'<span class="%1$s" data-presence-%2$s="%3$s"%4$s>%5$d</span>',
		esc_attr( 'presence-' . $kind ),
		esc_attr( $kind ),
		esc_attr( $key ),
		'' === $token ? '' : ' data-presence-token="' . esc_attr( $token ) . '"',
		(int) $initial
	);
}

/**
 * The words around a count, with %s where the number goes, in the plural form for $n.
 *
 * words.js holds the same strings, so that the words change with the number in the
 * page ("1 person is", "2 people are"), in the visitor's language.
 *
 * @param string $kind    'people', 'viewers', 'views' or 'reading'.
 * @param string $wording 'sentence', 'short' or 'number'.
 * @param int    $n       The number the words are for.
 * @return string
 */
function presence_counter_wording( $kind, $wording, $n ) {
	if ( 'number' === $wording ) {
		return '%s';
	}
	if ( 'reading' === $kind ) {
		return 'short' === $wording
			/* translators: %s: the live number of people with the post in view */
			? _n( '%s reading now', '%s reading now', $n, 'presence-counter' )
			/* translators: %s: the live number of people with the post in view */
			: _n( '%s person is reading this post', '%s people are reading this post', $n, 'presence-counter' );
	}
	if ( 'viewers' === $kind ) {
		return 'short' === $wording
			/* translators: %s: the live number of browser tabs open on a post */
			? _n( '%s open', '%s open', $n, 'presence-counter' )
			/* translators: %s: the live number of browser tabs open on a post */
			: _n( '%s tab is open on this post', '%s tabs are open on this post', $n, 'presence-counter' );
	}
	if ( 'views' === $kind ) {
		return 'short' === $wording
			/* translators: %s: the number of times a post has been viewed */
			? _n( '%s view', '%s views', $n, 'presence-counter' )
			/* translators: %s: the number of times a post has been viewed */
			: _n( 'This post has been viewed %s time', 'This post has been viewed %s times', $n, 'presence-counter' );
	}
	return 'short' === $wording
		/* translators: %s: the live number of people viewing a post */
		? _n( '%s viewing now', '%s viewing now', $n, 'presence-counter' )
		/* translators: %s: the live number of people viewing a post */
		: _n( '%s person is viewing this post', '%s people are viewing this post', $n, 'presence-counter' );
}

/**
 * A counter in its words: "<span>1</span> person is viewing this post", in an element
 * that words.js rewords whenever the widget changes the number.
 *
 * @param string $key     A key from presence_counter_post_key().
 * @param string $kind    'people', 'viewers', 'views' or 'reading'.
 * @param string $wording 'sentence', 'short' or 'number'.
 * @param int    $initial The number shown until the live count arrives.
 * @return string
 */
function presence_counter_words_markup( $key, $kind, $wording, $initial ) {
	$counter = presence_counter_counter_markup( $key, $kind, $initial );
	if ( 'number' === $wording ) {
		return $counter;
	}
	presence_counter_enqueue_words();
	// Split rather than sprintf(): a translation may hold other % signs, and the
	// counter's markup must not pass through esc_html().
	$parts = preg_split( '/%(?:1\$)?s/', presence_counter_wording( $kind, $wording, $initial ), 2 );
	return sprintf(
		'<span class="presence-counter-words" data-presence-words="%1$s %2$s">%3$s%4$s%5$s</span>',
		esc_attr( presence_counter_kind( $kind ) ),
		esc_attr( $wording ),
		esc_html( $parts[0] ),
		$counter,
		esc_html( isset( $parts[1] ) ? $parts[1] : '' )
	);
}

/**
 * Registers words.js, which keeps the words around counters in step with their number;
 * the block's editor script uses its words too.
 */
function presence_counter_register_words() {
	wp_register_script( PRESENCE_COUNTER_WORDS_HANDLE, plugins_url( 'words.js', __FILE__ ), array( 'wp-i18n' ), PRESENCE_COUNTER_VERSION, true );
	wp_set_script_translations( PRESENCE_COUNTER_WORDS_HANDLE, 'presence-counter', plugin_dir_path( __FILE__ ) . 'languages' );
}
add_action( 'init', 'presence_counter_register_words' );

/**
 * Enqueues words.js for the counters on this page.
 */
function presence_counter_enqueue_words() {
	presence_counter_register_words(); // WordPress keeps the first registration.
	wp_enqueue_script( PRESENCE_COUNTER_WORDS_HANDLE );
}

/**
 * A counter for a post, with the widget enqueued to fill it; '' when there is nothing to count.
 *
 * @param int|null $post_id Post ID; null for the current post.
 * @param string   $kind    'viewers' or 'views'.
 * @return string
 */
function presence_counter_render( $post_id, $kind ) {
	$key = presence_counter_post_key( $post_id );
	if ( '' === $key || ! presence_counter_enqueue_widget() ) {
		return '';
	}
	return presence_counter_counter_markup( $key, $kind );
}

/**
 * Whether lists of posts show each post's live viewers after its title.
 *
 * @return bool
 */
function presence_counter_archive_counters() {
	return 'off' !== get_option( PRESENCE_COUNTER_ARCHIVES_OPTION, 'title' );
}

/**
 * The live viewers of a listed post, "N viewing now"; '' when there is nothing to count.
 *
 * @param int $post_id Post ID.
 * @return string
 */
function presence_counter_archive_markup( $post_id ) {
	$key = presence_counter_post_key( $post_id );
	if ( '' === $key || ! presence_counter_enqueue_widget() ) {
		return '';
	}
	return '<p class="presence-counter-list">' . presence_counter_words_markup( $key, 'people', 'short', 0 ) . '</p>';
}

/**
 * Adds a listed post's live viewers after its title in block themes' Query Loops (the
 * home page, archives, search). WordPress removes shortcodes from excerpts, so lists of
 * posts had no place for a counter unless a theme was edited.
 *
 * @param string        $content  The post title block's HTML.
 * @param array         $block    The parsed block.
 * @param WP_Block|null $instance The block instance; its context names the post.
 * @return string
 */
function presence_counter_post_title_block( $content, $block, $instance = null ) {
	// On a single post the title is the viewed post's own, counted by the tab.
	if ( is_singular() || is_admin() || ! presence_counter_archive_counters() ) {
		return $content;
	}
	$post_id = ( $instance instanceof WP_Block && isset( $instance->context['postId'] ) ) ? (int) $instance->context['postId'] : 0;
	if ( 0 === $post_id || '' === $content ) {
		return $content;
	}
	return $content . presence_counter_archive_markup( $post_id );
}
add_filter( 'render_block_core/post-title', 'presence_counter_post_title_block', 10, 3 );

/**
 * Whether the post's content already shows a counter of its own, the block or the
 * shortcode, so that no second one is added.
 *
 * @param int $post_id Post ID.
 * @return bool
 */
function presence_counter_has_own_counter( $post_id ) {
	$post = get_post( $post_id );
	if ( ! $post ) {
		return false;
	}
	return has_block( 'presence-counter/counter', $post ) || has_shortcode( $post->post_content, 'presence_viewers' );
}

/**
 * Adds the counter to a post's content where the settings ask for it: before or after
 * the content of the viewed single post, and after each post's content in the lists of
 * classic themes that show whole posts.
 *
 * Priority 20, after blocks, paragraphs and shortcodes are rendered, so the markup is
 * left as it is.
 *
 * @param string $content The post's content as HTML.
 * @return string
 */
function presence_counter_the_content( $content ) {
	// the_content also runs to make excerpts (for feeds, meta descriptions): no counter
	// there, as only its words would be left.
	if ( is_admin() || is_feed() || doing_filter( 'get_the_excerpt' ) ) {
		return $content;
	}
	$post_id = (int) get_the_ID();
	if ( 0 === $post_id ) {
		return $content;
	}
	if ( is_singular() ) {
		$where = presence_counter_single_placement();
		/**
		 * Filters the post types whose single view gets the automatic counter.
		 *
		 * @param string[] $post_types Default array( 'post' ).
		 */
		$types = (array) apply_filters( 'presence_counter_single_post_types', array( 'post' ) );
		if ( 'off' === $where || ! is_main_query() || get_queried_object_id() !== $post_id
			|| ! in_array( get_post_type( $post_id ), $types, true ) || presence_counter_has_own_counter( $post_id ) ) {
			return $content;
		}
		$key = presence_counter_post_key( $post_id );
		if ( '' === $key || ! presence_counter_enqueue_widget() ) {
			return $content;
		}
		// 1, not 0, until the count arrives: the visitor is one.
		$counter = '<p class="presence-counter">' . presence_counter_words_markup( $key, 'people', 'sentence', 1 ) . '</p>';
		return 'before' === $where ? $counter . $content : $content . $counter;
	}
	// Block themes have theirs after the title; the_content can run for any post there.
	if ( wp_is_block_theme() || ! in_the_loop() || ! presence_counter_archive_counters() ) {
		return $content;
	}
	return $content . presence_counter_archive_markup( $post_id );
}
add_filter( 'the_content', 'presence_counter_the_content', 20 );

/**
 * Adds each listed post's live viewers after its excerpt in classic themes, which list
 * posts with the_excerpt() (twentytwentyone by default). WordPress removes shortcodes
 * from excerpts, so such lists had no counter unless a theme was edited.
 *
 * @param string $excerpt The excerpt as HTML.
 * @return string
 */
function presence_counter_the_excerpt( $excerpt ) {
	if ( is_singular() || is_admin() || is_feed() || wp_is_block_theme() || ! in_the_loop() || ! presence_counter_archive_counters() ) {
		return $excerpt;
	}
	$post_id = (int) get_the_ID();
	return 0 === $post_id ? $excerpt : $excerpt . presence_counter_archive_markup( $post_id );
}
add_filter( 'the_excerpt', 'presence_counter_the_excerpt', 20 );

/*
 * The block.
 */

/**
 * Registers the "Presence counter" block from block/block.json.
 */
function presence_counter_register_block() {
	register_block_type(
		__DIR__ . '/block',
		array( 'render_callback' => 'presence_counter_render_block' )
	);
}
add_action( 'init', 'presence_counter_register_block' );

/**
 * How many Query Loop post templates are being rendered around the current block.
 *
 * Blocks inside a Query Loop and blocks at the top of a template or a widget area get
 * the same context, the postId of the global post; only the post template around the
 * first tells that its post is meant.
 *
 * @param int $delta 1 when a post template starts rendering, -1 when it ends, 0 to read.
 * @return int
 */
function presence_counter_post_template_depth( $delta = 0 ) {
	static $depth = 0;
	$depth = max( 0, $depth + (int) $delta );
	return $depth;
}

/**
 * Notes that a Query Loop's post template starts rendering.
 *
 * render_block_data runs for every block that is rendered, and is followed by the
 * block's render_block_{name} filter, which ends it below.
 *
 * @param array $parsed_block The block about to be rendered.
 * @return array The block, unchanged.
 */
function presence_counter_post_template_starts( $parsed_block ) {
	if ( is_array( $parsed_block ) && isset( $parsed_block['blockName'] ) && 'core/post-template' === $parsed_block['blockName'] ) {
		presence_counter_post_template_depth( 1 );
	}
	return $parsed_block;
}
add_filter( 'render_block_data', 'presence_counter_post_template_starts' );

/**
 * Notes that a Query Loop's post template has been rendered.
 *
 * @param string $content The post template's HTML.
 * @return string The HTML, unchanged.
 */
function presence_counter_post_template_ends( $content ) {
	presence_counter_post_template_depth( -1 );
	return $content;
}
add_filter( 'render_block_core/post-template', 'presence_counter_post_template_ends' );

/**
 * The post a block counts: the post of its Query Loop row, the post being shown in a
 * loop, or the single post being viewed; 0 anywhere else, such as a widget area of an
 * archive, where no one post is meant.
 *
 * @param WP_Block|null $block The block instance.
 * @return int
 */
function presence_counter_block_post_id( $block ) {
	$context = ( $block instanceof WP_Block ) ? $block->context : array();
	if ( presence_counter_post_template_depth() > 0 && isset( $context['postId'] ) ) {
		return (int) $context['postId'];
	}
	if ( in_the_loop() ) {
		return (int) get_the_ID();
	}
	return is_singular() ? (int) get_queried_object_id() : 0;
}

/**
 * Renders the "Presence counter" block; '' while no server is set or there is no post.
 *
 * @param array         $attributes kind ('people', 'viewers', 'views' or 'reading') and wording ('sentence', 'short' or 'number').
 * @param string        $content    Unused: the block has no inner content.
 * @param WP_Block|null $block      The block instance; its context names the post.
 * @return string
 */
function presence_counter_render_block( $attributes, $content = '', $block = null ) {
	$post_id = presence_counter_block_post_id( $block );
	$key     = $post_id ? presence_counter_post_key( $post_id ) : '';
	if ( '' === $key || ! presence_counter_enqueue_widget() ) {
		return '';
	}
	$kind    = presence_counter_kind( isset( $attributes['kind'] ) ? $attributes['kind'] : '' );
	$wording = ( isset( $attributes['wording'] ) && in_array( $attributes['wording'], array( 'short', 'number' ), true ) ) ? $attributes['wording'] : 'sentence';
	// 1 for the viewed post's people, viewers and readers, the visitor being one; 0 until the count arrives otherwise.
	$initial = ( 'views' !== $kind && presence_counter_viewed_key() === $key ) ? 1 : 0;
	return sprintf(
		'<p %s>%s</p>',
		get_block_wrapper_attributes( array( 'class' => 'presence-counter' ) ),
		presence_counter_words_markup( $key, $kind, $wording, $initial )
	);
}

/**
 * Adds "Viewing now" to the Posts and Pages screens, so editors see which posts are
 * being read right now. The widget watches the listed posts there; an editor's tab is
 * no viewer of any of them.
 *
 * @param string[] $columns The list table's columns.
 * @return string[]
 */
function presence_counter_admin_column( $columns ) {
	if ( '' === presence_counter_server_url() ) {
		return $columns;
	}
	$columns['presence_counter'] = __( 'Viewing now', 'presence-counter' );
	return $columns;
}
add_filter( 'manage_posts_columns', 'presence_counter_admin_column' );
add_filter( 'manage_pages_columns', 'presence_counter_admin_column' );

/**
 * Prints a listed post's live viewers in the "Viewing now" column; a dash for a post
 * nobody can view yet (a draft, a scheduled or private post).
 *
 * @param string $column  The column being printed.
 * @param int    $post_id The row's post.
 */
function presence_counter_admin_column_value( $column, $post_id ) {
	if ( 'presence_counter' !== $column ) {
		return;
	}
	$counter = 'publish' === get_post_status( $post_id ) ? presence_counter_render( $post_id, 'people' ) : '';
	echo '' === $counter ? '&#8212;' : $counter; // phpcs:ignore WordPress.Security.EscapeOutput.OutputNotEscaped -- markup built with esc_attr().
}
add_action( 'manage_posts_custom_column', 'presence_counter_admin_column_value', 10, 2 );
add_action( 'manage_pages_custom_column', 'presence_counter_admin_column_value', 10, 2 );

/**
 * The [presence_viewers] shortcode.
 *
 * [presence_viewers] live viewers of the current post; [presence_viewers post="42"] of
 * post 42; [presence_viewers views="1"] total views instead.
 *
 * @param array|string $atts Shortcode attributes.
 * @return string
 */
function presence_counter_shortcode( $atts ) {
	$atts = shortcode_atts(
		array(
			'post'  => '',
			'views' => '',
		),
		$atts,
		'presence_viewers'
	);
	$post_id = null;
	if ( '' !== trim( (string) $atts['post'] ) ) {
		$post_id = absint( $atts['post'] );
		if ( 0 === $post_id ) {
			return ''; // A post attribute that names no post: show nothing rather than another post's count.
		}
	}
	$views = in_array( strtolower( trim( (string) $atts['views'] ) ), array( '1', 'true', 'yes' ), true );
	return presence_counter_render( $post_id, $views ? 'views' : 'viewers' );
}
add_shortcode( 'presence_viewers', 'presence_counter_shortcode' );

/**
 * Template tag: live viewers of a post.
 *
 * @param int|null $post_id Post ID; null for the current post.
 * @param bool     $echo    Whether to print the markup.
 * @return string The markup, printed or not.
 */
function presence_counter_viewers( $post_id = null, $echo = true ) {
	$html = presence_counter_render( $post_id, 'viewers' );
	if ( $echo ) {
		echo $html; // phpcs:ignore WordPress.Security.EscapeOutput.OutputNotEscaped -- escaped in presence_counter_counter_markup().
	}
	return $html;
}

/**
 * Template tag: total views of a post.
 *
 * @param int|null $post_id Post ID; null for the current post.
 * @param bool     $echo    Whether to print the markup.
 * @return string The markup, printed or not.
 */
function presence_counter_views( $post_id = null, $echo = true ) {
	$html = presence_counter_render( $post_id, 'views' );
	if ( $echo ) {
		echo $html; // phpcs:ignore WordPress.Security.EscapeOutput.OutputNotEscaped -- escaped in presence_counter_counter_markup().
	}
	return $html;
}

/*
 * Events.
 */

/**
 * Whether events can be published: a secure server URL and a publish key are set.
 *
 * @return bool
 */
function presence_counter_can_publish() {
	return presence_counter_is_secure_url( presence_counter_server_url() ) && '' !== presence_counter_publish_key();
}

/**
 * Pushes an event to everybody viewing or watching a post, through the Presence server.
 *
 * For use by other code too, e.g. presence_counter_publish( $post_id, 'update', array(
 * 'title' => $post->post_title ) ) from a save_post hook. The request is non-blocking
 * with a 2 second timeout, so a slow or unreachable Presence server holds up the page
 * that publishes by 2 seconds at most; the price is that a refused event (wrong key,
 * publishing off on the server) goes unnoticed here. The caller decides who may see
 * $data: everybody with the post open receives it.
 *
 * @param int    $post_id Post ID; the event goes to presence_counter_post_key( $post_id ).
 * @param string $name    Event name: 1-64 characters of [A-Za-z0-9_.:-].
 * @param mixed  $data    Anything wp_json_encode() can encode; at most about 16 KiB as JSON.
 * @return bool Whether the request was handed to the HTTP API; false, with nothing sent,
 *              when publishing is not configured, the server URL is http:// to another
 *              machine, or the event would be refused.
 */
function presence_counter_publish( $post_id, $name, $data ) {
	$server = presence_counter_server_url();
	$key    = presence_counter_publish_key();
	if ( '' === $server || '' === $key ) {
		return false;
	}
	// The settings page refuses this combination, but options can be written past it
	// (database edits, older versions): the key must never cross the network in clear.
	if ( ! presence_counter_is_secure_url( $server ) ) {
		return false;
	}
	// No "current post" default here: an event must name its post.
	$post_id  = is_numeric( $post_id ) ? absint( $post_id ) : 0;
	$post_key = $post_id ? presence_counter_post_key( $post_id ) : '';
	if ( '' === $post_key ) {
		return false;
	}
	// Checked here because the server's 400 for a bad name would never be seen.
	if ( ! is_string( $name ) || ! preg_match( '/^[A-Za-z0-9_.:-]{1,64}$/D', $name ) ) {
		return false;
	}
	$body = wp_json_encode(
		array(
			'name' => $name,
			'data' => $data,
		)
	);
	if ( false === $body || strlen( $body ) > PRESENCE_COUNTER_MAX_EVENT_BYTES ) {
		return false;
	}
	$response = wp_remote_post(
		$server . '/v1/posts/' . $post_key . '/events',
		array(
			'headers'     => array(
				'Authorization' => 'Bearer ' . $key,
				'Content-Type'  => 'application/json',
			),
			'body'        => $body,
			// With the cURL transport WordPress still waits up to this long for the
			// answer despite 'blocking' => false; other transports return at once.
			'timeout'     => 2,
			'blocking'    => false,
			'data_format' => 'body',
		)
	);
	return ! is_wp_error( $response );
}

/**
 * Plain text of stored comment HTML: tags removed, entities decoded, white space collapsed.
 *
 * WordPress stores comment text and author names HTML-escaped ("Tom &amp; Jerry"); the
 * event carries text, which the page must insert as text (textContent), never as HTML.
 *
 * @param string $html Stored value.
 * @return string
 */
function presence_counter_plain_text( $html ) {
	$text = wp_strip_all_tags( (string) $html, true );
	return trim( html_entity_decode( $text, ENT_QUOTES | ENT_HTML5, 'UTF-8' ) );
}

/**
 * Publishes a 'comment' event for a comment that is approved now.
 *
 * Nothing is sent for pingbacks, trackbacks and other comment types (notes, reviews),
 * nor for comments on posts that are not publicly viewable (private, draft or scheduled
 * posts, post types that are not public) or that have a password: everybody with the
 * post open receives the event, so it must not tell them more than the published post
 * shows.
 *
 * @param int|WP_Comment $comment Comment ID or object.
 * @return bool Whether an event was handed to the HTTP API.
 */
function presence_counter_publish_comment( $comment ) {
	// Before anything else: get_comment_link() below costs queries.
	if ( ! presence_counter_can_publish() ) {
		return false;
	}
	$comment = get_comment( $comment );
	if ( ! $comment ) {
		return false;
	}
	// '' is what comments were stored with before WordPress 5.5 made it 'comment'.
	if ( ! in_array( (string) $comment->comment_type, array( '', 'comment' ), true ) ) {
		return false;
	}
	$post_id = (int) $comment->comment_post_ID;
	$post    = get_post( $post_id );
	// Status and post type: a published post of a type that is not public is not viewable.
	if ( ! $post || ! is_post_publicly_viewable( $post ) ) {
		return false;
	}
	// is_post_publicly_viewable() does not look at passwords.
	if ( '' !== (string) $post->post_password ) {
		return false;
	}

	$data = array(
		'id'      => (int) $comment->comment_ID,
		'author'  => presence_counter_plain_text( get_comment_author( $comment ) ),
		'excerpt' => rtrim( mb_substr( presence_counter_plain_text( $comment->comment_content ), 0, 140 ) ),
		'url'     => get_comment_link( $comment ),
	);

	/**
	 * Filters the data of the 'comment' event sent when a comment is approved.
	 *
	 * @param array|mixed $data    id, author, excerpt and url of the comment; any JSON-encodable
	 *                             value may be returned. null or false sends no event.
	 * @param WP_Comment  $comment The approved comment.
	 */
	$data = apply_filters( 'presence_counter_comment_event_data', $data, $comment );
	if ( null === $data || false === $data ) {
		return false;
	}
	return presence_counter_publish( $post_id, 'comment', $data );
}

/**
 * A new comment: published when it is approved on arrival.
 *
 * Comments held for moderation come back through the status transition below when
 * they are approved.
 *
 * @param int        $comment_id       Comment ID.
 * @param int|string $comment_approved 1 approved, 0 held, 'spam' or 'trash'.
 */
function presence_counter_comment_post( $comment_id, $comment_approved ) {
	// Usually the int 1, but a pre_comment_approved filter may return '1'.
	if ( 1 === $comment_approved || '1' === $comment_approved ) {
		presence_counter_publish_comment( $comment_id );
	}
}
add_action( 'comment_post', 'presence_counter_comment_post', 10, 2 );

/**
 * A comment approved later, from the moderation queue, spam or trash.
 *
 * WordPress fires this only when the status changes, and not when a comment is
 * inserted, so it never repeats the event of presence_counter_comment_post().
 *
 * @param string     $new_status 'approved', 'unapproved', 'spam', 'trash', ...
 * @param string     $old_status The previous status.
 * @param WP_Comment $comment    The comment.
 */
function presence_counter_transition_comment_status( $new_status, $old_status, $comment ) {
	if ( 'approved' === $new_status && 'approved' !== $old_status ) {
		presence_counter_publish_comment( $comment );
	}
}
add_action( 'transition_comment_status', 'presence_counter_transition_comment_status', 10, 3 );

<?php
/**
 * Tests of the Presence Counter plugin, without WordPress, PHPUnit or Composer.
 *
 * The WordPress functions the plugin calls are stubbed below, as closely to WordPress
 * as the tests need (escaping follows WordPress's own rules). Run:
 *
 *     php integrations/wordpress/tests/run.php
 *
 * Prints one line per failed assertion and a last line "N passed, M failed"; exits 1
 * when an assertion failed.
 *
 * @package Presence_Counter
 */

error_reporting( E_ALL );
ini_set( 'display_errors', 'stderr' );

// Any PHP warning or notice is a bug in the plugin: make it fail loudly.
set_error_handler(
	function ( $severity, $message, $file, $line ) {
		throw new ErrorException( $message, 0, $severity, $file, $line );
	}
);

define( 'ABSPATH', __DIR__ . '/' );
define( 'DAY_IN_SECONDS', 86400 ); // WordPress defines it in wp_initial_constants().

$plugin_dir  = dirname( __DIR__ ) . '/presence-counter';
$plugin_file = $plugin_dir . '/presence-counter.php';

/*
 * State of the fake WordPress, reset before each scenario.
 */

$GLOBALS['t'] = array();

function t_reset( array $over = array() ) {
	$GLOBALS['t'] = array_merge(
		array(
			'options'        => array( 1 => array() ), // blog id => name => value
			'blog_id'        => 1,
			'blog_stack'     => array(),
			'sites'          => array( 1 ),
			'multisite'      => false,
			'singular'       => false,
			'queried_id'     => 0,
			'the_id'         => false,
			'can'            => true,
			'home_url'       => 'https://www.example.org',
			'registered'     => array(), // handle => array(src, deps, ver, in_footer)
			'enqueued'       => array(), // handle => true
			'enqueue_calls'  => array(),
			'settings_error' => array(),
			'settings'       => array(),
			'settings_field' => array(),
			'pages'          => array(),
			'fields_group'   => array(),
			'sections_shown' => array(),
			'comments'       => array(), // comment id => WP_Comment-like object
			'post_status'    => array(), // post id => status
			'post_password'  => array(), // post id => password
			'post_type'      => array(), // post id => post type; 'post' when not set
			// Post types as register_post_type() leaves them: 'internal_note' stands for a
			// plugin's type registered with public => false.
			'post_types'     => array(
				'post'          => array( 'public' => true, 'publicly_queryable' => true, '_builtin' => true ),
				'page'          => array( 'public' => true, 'publicly_queryable' => false, '_builtin' => true ),
				'attachment'    => array( 'public' => true, 'publicly_queryable' => true, '_builtin' => true ),
				'wp_block'      => array( 'public' => false, 'publicly_queryable' => false, '_builtin' => true ),
				'product'       => array( 'public' => true, 'publicly_queryable' => true, '_builtin' => false ),
				'internal_note' => array( 'public' => false, 'publicly_queryable' => false, '_builtin' => false ),
			),
			// Post statuses as create_initial_post_types() registers them.
			'post_statuses'  => array(
				'publish'    => array( 'public' => true, 'publicly_queryable' => true, '_builtin' => true ),
				'future'     => array( 'protected' => true, '_builtin' => true ),
				'draft'      => array( 'protected' => true, '_builtin' => true ),
				'pending'    => array( 'protected' => true, '_builtin' => true ),
				'private'    => array( 'private' => true, '_builtin' => true ),
				'trash'      => array( 'internal' => true, '_builtin' => true ),
				'auto-draft' => array( 'internal' => true, '_builtin' => true ),
				'inherit'    => array( 'internal' => true, '_builtin' => true ),
			),
			'remote_posts'   => array(), // array(url, args) per wp_remote_post() call
			'remote_return'  => null,    // what wp_remote_post() returns; null: a non-blocking reply
			'in_the_loop'    => false,
			'main_query'     => true,
			'feed'           => false,
			'admin'          => false,
			'block_theme'    => true,
			'doing'          => array(), // filters running, innermost last
			'post_content'   => array(), // post id => content
			'plurals'        => array(),
			'blocks'         => array(),
			'script_translations' => array(),
		),
		$over
	);
}
t_reset();

// Hooks and shortcodes persist across scenarios: the plugin is loaded once.
$GLOBALS['t_hooks']      = array();
$GLOBALS['t_shortcodes'] = array();

/*
 * Hooks.
 */

/**
 * Like WordPress, a callback added again at the same priority replaces itself
 * (_wp_filter_build_unique_id()), so registering the settings once per scenario does
 * not run their sanitize callbacks several times.
 */
function add_filter( $tag, $callback, $priority = 10, $accepted_args = 1 ) {
	if ( is_string( $callback ) ) {
		$id = $callback;
	} elseif ( is_object( $callback ) ) {
		$id = spl_object_hash( $callback );
	} else {
		$id = ( is_object( $callback[0] ) ? spl_object_hash( $callback[0] ) : $callback[0] ) . '::' . $callback[1];
	}
	$GLOBALS['t_hooks'][ $tag ][ $priority ][ $id ] = array( $callback, $accepted_args );
	return true;
}

function add_action( $tag, $callback, $priority = 10, $accepted_args = 1 ) {
	return add_filter( $tag, $callback, $priority, $accepted_args );
}

function remove_all_filters( $tag ) {
	unset( $GLOBALS['t_hooks'][ $tag ] );
}

function apply_filters( $tag, $value, ...$args ) {
	if ( empty( $GLOBALS['t_hooks'][ $tag ] ) ) {
		return $value;
	}
	$by_priority = $GLOBALS['t_hooks'][ $tag ];
	ksort( $by_priority );
	foreach ( $by_priority as $callbacks ) {
		foreach ( $callbacks as $cb ) {
			$all   = array_merge( array( $value ), $args );
			$value = call_user_func_array( $cb[0], array_slice( $all, 0, max( 1, (int) $cb[1] ) ) );
		}
	}
	return $value;
}

function do_action( $tag, ...$args ) {
	if ( empty( $GLOBALS['t_hooks'][ $tag ] ) ) {
		return;
	}
	$by_priority = $GLOBALS['t_hooks'][ $tag ];
	ksort( $by_priority );
	foreach ( $by_priority as $callbacks ) {
		foreach ( $callbacks as $cb ) {
			call_user_func_array( $cb[0], array_slice( $args, 0, (int) $cb[1] ) );
		}
	}
}

function has_filter_callback( $tag, $callback ) {
	foreach ( isset( $GLOBALS['t_hooks'][ $tag ] ) ? $GLOBALS['t_hooks'][ $tag ] : array() as $callbacks ) {
		foreach ( $callbacks as $cb ) {
			if ( $cb[0] === $callback ) {
				return true;
			}
		}
	}
	return false;
}

function add_shortcode( $tag, $callback ) {
	$GLOBALS['t_shortcodes'][ $tag ] = $callback;
}

/** Runs a registered shortcode the way do_shortcode() calls it. */
function t_shortcode( $tag, $atts = '' ) {
	if ( ! isset( $GLOBALS['t_shortcodes'][ $tag ] ) ) {
		throw new RuntimeException( "shortcode [$tag] is not registered" );
	}
	return call_user_func( $GLOBALS['t_shortcodes'][ $tag ], $atts, '', $tag );
}

function shortcode_atts( $pairs, $atts, $shortcode = '' ) {
	$atts = (array) $atts;
	$out  = array();
	foreach ( $pairs as $name => $default ) {
		$out[ $name ] = array_key_exists( $name, $atts ) ? $atts[ $name ] : $default;
	}
	if ( $shortcode ) {
		$out = apply_filters( "shortcode_atts_{$shortcode}", $out, $pairs, $atts, $shortcode );
	}
	return $out;
}

function __return_false() {
	return false;
}

/*
 * Options and settings.
 */

function get_option( $name, $default = false ) {
	$opts = $GLOBALS['t']['options'][ $GLOBALS['t']['blog_id'] ] ?? array();
	return array_key_exists( $name, $opts ) ? $opts[ $name ] : $default;
}

/** Like WordPress: the value goes through the sanitize_option_{$name} filter. */
function update_option( $name, $value ) {
	$value = apply_filters( "sanitize_option_{$name}", $value, $name, $value );
	$GLOBALS['t']['options'][ $GLOBALS['t']['blog_id'] ][ $name ] = $value;
	return true;
}

function delete_option( $name ) {
	unset( $GLOBALS['t']['options'][ $GLOBALS['t']['blog_id'] ][ $name ] );
	return true;
}

/**
 * Saves the settings form the way wp-admin/options.php does: every option of the group,
 * in registration order, each with its trimmed and unslashed field or null; $_POST
 * holds the whole form meanwhile, so the callbacks can look at other fields.
 */
function t_save_form( $group, array $post ) {
	$_POST = $post;
	foreach ( $GLOBALS['t']['settings'] as $name => $setting ) {
		if ( $group !== $setting['group'] ) {
			continue;
		}
		$value = null;
		if ( isset( $_POST[ $name ] ) ) {
			$value = wp_unslash( is_array( $_POST[ $name ] ) ? $_POST[ $name ] : trim( $_POST[ $name ] ) );
		}
		update_option( $name, $value );
	}
	$_POST = array();
}

/** Writes an option past any sanitizing, as a database edit would. */
function t_raw_option( $name, $value ) {
	$GLOBALS['t']['options'][ $GLOBALS['t']['blog_id'] ][ $name ] = $value;
}

function register_setting( $group, $name, $args = array() ) {
	$GLOBALS['t']['settings'][ $name ] = array( 'group' => $group, 'args' => $args );
	if ( ! empty( $args['sanitize_callback'] ) ) {
		add_filter( "sanitize_option_{$name}", $args['sanitize_callback'] );
	}
}

function add_settings_error( $setting, $code, $message, $type = 'error' ) {
	$GLOBALS['t']['settings_error'][] = compact( 'setting', 'code', 'message', 'type' );
}

function add_settings_section( $id, $title, $callback, $page ) {
	$GLOBALS['t']['settings_section'][ $page ][ $id ] = compact( 'title', 'callback' );
}

function add_settings_field( $id, $title, $callback, $page, $section = 'default', $args = array() ) {
	$GLOBALS['t']['settings_field'][ $page ][ $section ][ $id ] = compact( 'title', 'callback', 'args' );
}

function add_options_page( $page_title, $menu_title, $capability, $menu_slug, $callback = '' ) {
	$GLOBALS['t']['pages'][ $menu_slug ] = compact( 'page_title', 'menu_title', 'capability', 'callback' );
	return 'settings_page_' . $menu_slug;
}

function settings_fields( $group ) {
	$GLOBALS['t']['fields_group'][] = $group;
	echo "<input type='hidden' name='option_page' value='" . esc_attr( $group ) . "' />";
	echo '<input type="hidden" name="action" value="update" />';
	echo '<input type="hidden" name="_wpnonce" value="nonce-' . esc_attr( $group ) . '-options" />';
}

/** Like WordPress: each section's title and callback, then its fields. */
function do_settings_sections( $page ) {
	$GLOBALS['t']['sections_shown'][] = $page;
	foreach ( $GLOBALS['t']['settings_section'][ $page ] ?? array() as $id => $section ) {
		if ( $section['title'] ) {
			echo '<h2>' . $section['title'] . "</h2>\n";
		}
		if ( $section['callback'] ) {
			call_user_func( $section['callback'], array( 'id' => $id ) + $section );
		}
		foreach ( $GLOBALS['t']['settings_field'][ $page ][ $id ] ?? array() as $field ) {
			call_user_func( $field['callback'], $field['args'] );
		}
	}
}

function submit_button() {
	echo '<p class="submit"><input type="submit" name="submit" id="submit" class="button button-primary" value="Save Changes" /></p>';
}

function current_user_can( $capability ) {
	return $GLOBALS['t']['can'] && 'manage_options' === $capability;
}

/*
 * Escaping and translation, following WordPress.
 */

function esc_attr( $text ) {
	return htmlspecialchars( (string) $text, ENT_QUOTES, 'UTF-8', false );
}

function esc_html( $text ) {
	return htmlspecialchars( (string) $text, ENT_QUOTES, 'UTF-8', false );
}

function __( $text, $domain = 'default' ) {
	$GLOBALS['t_domains'][ $domain ] = true;
	return $text;
}

function esc_html__( $text, $domain = 'default' ) {
	return esc_html( __( $text, $domain ) );
}

function esc_attr__( $text, $domain = 'default' ) {
	return esc_attr( __( $text, $domain ) );
}

/** English plural forms; $GLOBALS['t']['plurals'][ $single ] = array( one, other ) stands for a translation. */
function _n( $single, $plural, $number, $domain = 'default' ) {
	$GLOBALS['t_domains'][ $domain ] = true;
	$forms = $GLOBALS['t']['plurals'][ $single ] ?? array( $single, $plural );
	return 1 === (int) $number ? $forms[0] : $forms[1];
}

function wp_allowed_protocols() {
	return array( 'http', 'https', 'ftp', 'ftps', 'mailto', 'news', 'irc', 'irc6', 'ircs', 'gopher', 'nntp', 'feed', 'telnet', 'mms', 'rtsp', 'sms', 'svn', 'tel', 'fax', 'xmpp', 'webcal', 'urn' );
}

/** esc_url() of WordPress, with its protocol check reduced to the part URLs use. */
function esc_url( $url, $protocols = null, $_context = 'display' ) {
	if ( '' === (string) $url ) {
		return '';
	}
	$url = str_replace( ' ', '%20', ltrim( (string) $url ) );
	$url = preg_replace( '|[^a-z0-9-~+_.?#=!&;,/:%@$\|*\'()\[\]\\x80-\\xff]|i', '', $url );
	if ( '' === $url ) {
		return '';
	}
	if ( 0 !== stripos( $url, 'mailto:' ) ) {
		do {
			$before = $url;
			$url    = str_ireplace( array( '%0d', '%0a' ), '', $url );
		} while ( $before !== $url );
	}
	$url = str_replace( ';//', '://', $url );
	if ( false === strpos( $url, ':' ) && ! in_array( $url[0], array( '/', '#', '?' ), true ) && ! preg_match( '/^[a-z0-9-]+?\.php/i', $url ) ) {
		$url = 'http://' . $url;
	}
	if ( 'display' === $_context ) {
		$url = str_replace( '&', '&#038;', $url );
		$url = str_replace( "'", '&#039;', $url );
	}
	if ( null === $protocols ) {
		$protocols = wp_allowed_protocols();
	}
	// wp_kses_bad_protocol(): text before the first ':' with no '/' in it is a scheme.
	$split = explode( ':', $url, 2 );
	if ( 2 === count( $split ) && false === strpos( $split[0], '/' ) ) {
		if ( ! in_array( strtolower( $split[0] ), $protocols, true ) ) {
			return '';
		}
	}
	return $url;
}

function wp_unslash( $value ) {
	return is_string( $value ) ? stripslashes( $value ) : $value;
}

function esc_url_raw( $url, $protocols = null ) {
	return esc_url( $url, $protocols, 'db' );
}

function wp_parse_url( $url, $component = -1 ) {
	return parse_url( $url, $component );
}

function absint( $maybeint ) {
	return abs( (int) $maybeint );
}

function home_url( $path = '' ) {
	return $GLOBALS['t']['home_url'] . $path;
}

/*
 * Query and multisite.
 */

function is_singular() {
	return $GLOBALS['t']['singular'];
}

function get_queried_object_id() {
	return $GLOBALS['t']['queried_id'];
}

function get_the_ID() { // phpcs:ignore WordPress.NamingConventions.ValidFunctionName
	return $GLOBALS['t']['the_id'];
}

function in_the_loop() {
	return $GLOBALS['t']['in_the_loop'];
}

function is_main_query() {
	return $GLOBALS['t']['main_query'];
}

function is_feed() {
	return $GLOBALS['t']['feed'];
}

function is_admin() {
	return $GLOBALS['t']['admin'];
}

function wp_is_block_theme() {
	return $GLOBALS['t']['block_theme'];
}

/** Which filters are running, as WordPress's $wp_current_filter stack says. */
function doing_filter( $hook_name = null ) {
	return in_array( $hook_name, $GLOBALS['t']['doing'], true );
}

function has_shortcode( $content, $tag ) {
	return false !== strpos( (string) $content, '[' . $tag );
}

function has_block( $block_name, $post = null ) {
	$p = get_post( $post );
	return $p && false !== strpos( $p->post_content, '<!-- wp:' . $block_name . ' ' );
}

function get_block_wrapper_attributes( $extra = array() ) {
	return 'class="wp-block-presence-counter-counter ' . esc_attr( $extra['class'] ?? '' ) . '"';
}

function register_block_type( $block_type, $args = array() ) {
	$GLOBALS['t']['blocks'][ $block_type ] = $args;
	return true;
}

/** The part of WP_Block the plugin reads. */
class WP_Block {
	/** @var array */
	public $context;

	public function __construct( array $context ) {
		$this->context = $context;
	}
}

function plugins_url( $path = '', $plugin = '' ) {
	return 'https://www.example.org/wp-content/plugins/presence-counter/' . $path;
}

function plugin_dir_path( $file ) {
	return dirname( $file ) . '/';
}

function wp_set_script_translations( $handle, $domain = 'default', $path = '' ) {
	$GLOBALS['t']['script_translations'][ $handle ] = array( $domain, $path );
	return true;
}

function is_multisite() {
	return $GLOBALS['t']['multisite'];
}

function get_current_blog_id() {
	return $GLOBALS['t']['blog_id'];
}

function get_sites( $args = array() ) {
	return $GLOBALS['t']['sites'];
}

function switch_to_blog( $blog_id ) {
	$GLOBALS['t']['blog_stack'][] = $GLOBALS['t']['blog_id'];
	$GLOBALS['t']['blog_id']      = (int) $blog_id;
	return true;
}

function restore_current_blog() {
	$GLOBALS['t']['blog_id'] = array_pop( $GLOBALS['t']['blog_stack'] );
	return true;
}

/*
 * Scripts.
 */

function wp_register_script( $handle, $src, $deps = array(), $ver = false, $in_footer = false ) {
	if ( isset( $GLOBALS['t']['registered'][ $handle ] ) ) {
		return false; // WordPress keeps the first registration.
	}
	$GLOBALS['t']['registered'][ $handle ] = compact( 'src', 'deps', 'ver', 'in_footer' );
	return true;
}

function wp_enqueue_script( $handle, $src = '', $deps = array(), $ver = false, $in_footer = false ) {
	$GLOBALS['t']['enqueue_calls'][] = compact( 'handle', 'src', 'deps', 'ver', 'in_footer' );
	if ( $src ) {
		wp_register_script( $handle, $src, $deps, $ver, $in_footer );
	}
	$GLOBALS['t']['enqueued'][ $handle ] = true;
}

/**
 * The tag WordPress prints for an enqueued script, passed through script_loader_tag.
 *
 * @param string $handle Handle.
 * @param string $style  '6.4' for wp_get_script_tag() (double quotes), '6.0' for the
 *                       older single-quoted tag with a type attribute, '6.3-async' for
 *                       a tag that already has async from a loading strategy.
 */
function t_script_tag( $handle, $style = '6.4' ) {
	$s   = $GLOBALS['t']['registered'][ $handle ];
	$src = $s['src'];
	if ( false === $s['ver'] ) {
		$src .= '?ver=6.7';
	} elseif ( null !== $s['ver'] ) {
		$src .= '?ver=' . $s['ver'];
	}
	$src = esc_url( $src );
	if ( '6.0' === $style ) {
		$tag = sprintf( "<script type='text/javascript' src='%s' id='%s-js'></script>\n", $src, esc_attr( $handle ) );
	} elseif ( '6.3-async' === $style ) {
		$tag = sprintf( "<script src=\"%s\" id=\"%s-js\" async data-wp-strategy=\"async\"></script>\n", esc_attr( $src ), esc_attr( $handle ) );
	} else {
		$tag = sprintf( "<script src=\"%s\" id=\"%s-js\"></script>\n", esc_attr( $src ), esc_attr( $handle ) );
	}
	return apply_filters( 'script_loader_tag', $tag, $handle, $src );
}

/**
 * Parses one <script ...></script> tag strictly: quoted or bare attributes only, each
 * once. Returns name => value (true for bare ones), or null when the tag is malformed.
 */
function t_parse_script_tag( $tag ) {
	if ( ! preg_match( '/^<script((?:\s+[a-z][a-z0-9-]*(?:="[^"<>]*"|=\'[^\'<>]*\')?)*)\s*><\/script>\s*$/i', $tag, $m ) ) {
		return null;
	}
	preg_match_all( '/\s+([a-z][a-z0-9-]*)(?:="([^"]*)"|=\'([^\']*)\')?/i', $m[1], $all, PREG_SET_ORDER );
	$attrs = array();
	foreach ( $all as $a ) {
		$name = strtolower( $a[1] );
		if ( isset( $attrs[ $name ] ) ) {
			return null;
		}
		if ( isset( $a[3] ) && '' !== $a[3] ) {
			$value = $a[3];
		} elseif ( isset( $a[2] ) && false !== strpos( $a[0], '=' ) ) {
			$value = $a[2];
		} else {
			$value = true;
		}
		$attrs[ $name ] = is_string( $value ) ? html_entity_decode( $value, ENT_QUOTES | ENT_HTML5, 'UTF-8' ) : $value;
	}
	return $attrs;
}

/*
 * HTTP, JSON and text.
 */

class WP_Error {
	public $code;
	public $message;

	public function __construct( $code = '', $message = '' ) {
		$this->code    = $code;
		$this->message = $message;
	}
}

function is_wp_error( $thing ) {
	return $thing instanceof WP_Error;
}

/** Records the request; returns what WordPress returns for a non-blocking one. */
function wp_remote_post( $url, $args = array() ) {
	$GLOBALS['t']['remote_posts'][] = array( 'url' => $url, 'args' => $args );
	if ( null !== $GLOBALS['t']['remote_return'] ) {
		return $GLOBALS['t']['remote_return'];
	}
	return array(
		'headers'  => array(),
		'body'     => '',
		'response' => array( 'code' => false, 'message' => false ),
		'cookies'  => array(),
	);
}

/** wp_json_encode() without its fallback for invalid UTF-8. */
function wp_json_encode( $data, $options = 0, $depth = 512 ) {
	return json_encode( $data, $options, $depth );
}

function wp_strip_all_tags( $text, $remove_breaks = false ) {
	if ( is_null( $text ) ) {
		return '';
	}
	$text = preg_replace( '@<(script|style)[^>]*?>.*?</\\1>@si', '', (string) $text );
	$text = strip_tags( $text );
	if ( $remove_breaks ) {
		$text = preg_replace( '/[\r\n\t ]+/', ' ', $text );
	}
	return trim( $text );
}

// WordPress defines mb_substr() in compat.php when mbstring is missing; so do the tests.
if ( ! function_exists( 'mb_substr' ) ) {
	function mb_substr( $str, $start, $length = null, $encoding = null ) {
		preg_match_all( '/./us', (string) $str, $m );
		return implode( '', array_slice( $m[0], $start, $length ) );
	}
}

/*
 * Comments and posts.
 */

/** Adds a comment (and its post's status) to the fake database; returns it. */
function t_comment( array $fields = array(), $post_status = 'publish' ) {
	$c = (object) array_merge(
		array(
			'comment_ID'       => '7',
			'comment_post_ID'  => '42',
			'comment_author'   => 'Ana',
			'comment_content'  => 'Nice post!',
			'comment_type'     => 'comment',
			'comment_approved' => '1',
			'user_id'          => '0',
		),
		$fields
	);
	$GLOBALS['t']['comments'][ (int) $c->comment_ID ]         = $c;
	$GLOBALS['t']['post_status'][ (int) $c->comment_post_ID ] = $post_status;
	return $c;
}

function get_comment( $comment = null ) {
	if ( is_object( $comment ) ) {
		return $comment;
	}
	return $GLOBALS['t']['comments'][ (int) $comment ] ?? null;
}

function get_comment_author( $comment_id = 0 ) {
	$c      = get_comment( $comment_id );
	$author = ( $c && '' !== $c->comment_author ) ? $c->comment_author : 'Anonymous';
	return apply_filters( 'get_comment_author', $author, $c ? $c->comment_ID : 0, $c );
}

function get_comment_link( $comment = null ) {
	$c = get_comment( $comment );
	return home_url( '/?p=' . $c->comment_post_ID . '#comment-' . $c->comment_ID );
}

/** Post ID of an ID or post object, as WordPress accepts either. */
function t_post_id( $post ) {
	return is_object( $post ) ? (int) $post->ID : (int) $post;
}

function get_post_status( $post = null ) {
	return $GLOBALS['t']['post_status'][ t_post_id( $post ) ] ?? false;
}

function get_post( $post = null ) {
	$id = t_post_id( $post );
	if ( ! isset( $GLOBALS['t']['post_status'][ $id ] ) ) {
		return null;
	}
	return (object) array(
		'ID'            => $id,
		'post_status'   => $GLOBALS['t']['post_status'][ $id ],
		'post_type'     => $GLOBALS['t']['post_type'][ $id ] ?? 'post',
		'post_password' => $GLOBALS['t']['post_password'][ $id ] ?? '',
		'post_content'  => $GLOBALS['t']['post_content'][ $id ] ?? '',
	);
}

function get_post_type( $post = null ) {
	$p = get_post( $post );
	return $p ? $p->post_type : false;
}

/** Like WordPress: publicly queryable, or built in and public. */
function is_post_type_viewable( $post_type ) {
	$type = $GLOBALS['t']['post_types'][ $post_type ] ?? null;
	if ( ! $type ) {
		return false;
	}
	return ! empty( $type['publicly_queryable'] ) || ( ! empty( $type['_builtin'] ) && ! empty( $type['public'] ) );
}

/** Like WordPress: never internal or protected statuses; then as for post types. */
function is_post_status_viewable( $post_status ) {
	$status = is_scalar( $post_status ) ? ( $GLOBALS['t']['post_statuses'][ $post_status ] ?? null ) : null;
	if ( ! $status || ! empty( $status['internal'] ) || ! empty( $status['protected'] ) ) {
		return false;
	}
	return ! empty( $status['publicly_queryable'] ) || ( ! empty( $status['_builtin'] ) && ! empty( $status['public'] ) );
}

/** Like WordPress 5.7+: a viewable status and a viewable type; passwords are not looked at. */
function is_post_publicly_viewable( $post = null ) {
	$p = get_post( $post );
	if ( ! $p ) {
		return false;
	}
	return is_post_type_viewable( get_post_type( $p ) ) && is_post_status_viewable( get_post_status( $p ) );
}

/*
 * Assertions.
 */

$GLOBALS['t_passed'] = 0;
$GLOBALS['t_failed'] = 0;
$GLOBALS['t_scene']  = '';

function scene( $name ) {
	$GLOBALS['t_scene'] = $name;
}

function check( $ok, $what, $detail = '' ) {
	if ( $ok ) {
		$GLOBALS['t_passed']++;
		return;
	}
	$GLOBALS['t_failed']++;
	echo 'FAIL [' . $GLOBALS['t_scene'] . '] ' . $what . ( '' !== $detail ? ': ' . $detail : '' ) . "\n";
}

function check_same( $want, $got, $what ) {
	check( $want === $got, $what, 'want ' . var_export( $want, true ) . ', got ' . var_export( $got, true ) );
}

/** Runs a scenario; an exception fails it instead of ending the run. */
function run( $name, callable $fn ) {
	scene( $name );
	try {
		$fn();
	} catch ( Throwable $e ) {
		check( false, 'no exception', get_class( $e ) . ': ' . $e->getMessage() . ' at ' . basename( $e->getFile() ) . ':' . $e->getLine() );
	}
}

/** A page: fires wp_enqueue_scripts as wp_head() does. */
function t_page( array $state ) {
	t_reset( $state );
	do_action( 'wp_enqueue_scripts' );
}

const T_HANDLE = 'presence-counter-widget';
const T_SERVER = 'https://presence.example.com';
const T_KEY    = '0123456789abcdef-publish';
const T_SECRET = '0123456789abcdef0123456789abcdef'; // Also the server's test vector.

/*
 * Load the plugin.
 */

require $plugin_file;

/*
 * Scenarios.
 */

run(
	'plugin header',
	function () use ( $plugin_file ) {
		$head = file_get_contents( $plugin_file, false, null, 0, 8192 );
		$want = array(
			'Plugin Name'       => 'Presence Counter',
			'Version'           => '0.5.0',
			'Requires at least' => '6.0',
			'Requires PHP'      => '7.4',
			'License'           => 'GPL-2.0-or-later',
			'Text Domain'       => 'presence-counter',
		);
		foreach ( $want as $field => $value ) {
			// The pattern get_file_data() uses.
			$got = preg_match( '/^(?:[ \t]*<\?php)?[ \t\/*#@]*' . preg_quote( $field, '/' ) . ':(.*)$/mi', $head, $m ) ? trim( $m[1] ) : null;
			check_same( $value, $got, "header $field" );
		}
		check( (bool) preg_match( '/^[ \t\/*#@]*Description:\s*\S/mi', $head ), 'header Description' );
		check( false !== strpos( $head, "defined( 'ABSPATH' ) || exit;" ), 'ABSPATH guard' );

		$readme = file_get_contents( dirname( $plugin_file ) . '/readme.txt' );
		$stable = preg_match( '/^Stable tag:\s*(\S+)\s*$/mi', $readme, $m ) ? $m[1] : null;
		check_same( '0.5.0', $stable, 'readme Stable tag matches the Version' );
		check( false !== strpos( $readme, '= 0.5.0 =' ), 'readme changelog has 0.5.0' );
	}
);

run(
	'hooks',
	function () {
		check( has_filter_callback( 'wp_enqueue_scripts', 'presence_counter_enqueue_scripts' ), 'wp_enqueue_scripts hooked' );
		check( has_filter_callback( 'script_loader_tag', 'presence_counter_script_loader_tag' ), 'script_loader_tag hooked' );
		check( has_filter_callback( 'admin_init', 'presence_counter_register_settings' ), 'admin_init hooked' );
		check( has_filter_callback( 'admin_menu', 'presence_counter_add_settings_page' ), 'admin_menu hooked' );
		check( isset( $GLOBALS['t_shortcodes']['presence_viewers'] ), '[presence_viewers] registered' );
		check( has_filter_callback( 'comment_post', 'presence_counter_comment_post' ), 'comment_post hooked' );
		check( has_filter_callback( 'transition_comment_status', 'presence_counter_transition_comment_status' ), 'transition_comment_status hooked' );
	}
);

run(
	'no server URL',
	function () {
		t_page(
			array(
				'singular'   => true,
				'queried_id' => 42,
				'the_id'     => 42,
			)
		);
		check_same( array(), $GLOBALS['t']['enqueue_calls'], 'nothing enqueued on a single post' );
		check_same( '', t_shortcode( 'presence_viewers' ), 'shortcode prints nothing' );
		check_same( array(), $GLOBALS['t']['enqueued'], 'shortcode enqueues nothing' );
	}
);

run(
	'settings: sanitize',
	function () {
		t_reset();
		do_action( 'admin_init' );
		$opt = 'presence_counter_server_url';
		check( isset( $GLOBALS['t']['settings'][ $opt ] ), 'option registered' );
		check_same( 'presence_counter', $GLOBALS['t']['settings'][ $opt ]['group'] ?? null, 'option group' );
		check_same( 'presence_counter_sanitize_server_url', $GLOBALS['t']['settings'][ $opt ]['args']['sanitize_callback'] ?? null, 'sanitize_callback' );

		update_option( $opt, T_SERVER . '/' );
		check_same( T_SERVER, get_option( $opt ), 'trailing slash stripped' );
		check_same( array(), $GLOBALS['t']['settings_error'], 'no error for a good URL' );

		// Refused values keep the previous one, with an error on the settings page.
		$refused = array(
			'javascript:alert(1)',
			'ftp://x',
			'data:text/html,hi',
			'//presence.example.com',
			'https://presence.example.com"onmouseover="alert(1)',
			"https://presence'.example.com",
			'https://presence.example.com:99999',
		);
		foreach ( $refused as $i => $bad ) {
			update_option( $opt, $bad );
			check_same( T_SERVER, get_option( $opt ), "refused $bad keeps the previous value" );
			check_same( $i + 1, count( $GLOBALS['t']['settings_error'] ), "refused $bad adds a settings error" );
		}
		check_same( 'presence_counter_server_url', $GLOBALS['t']['settings_error'][0]['setting'] ?? null, 'error is for the option' );

		$cases = array(
			'  https://presence.example.com  '            => T_SERVER,
			'HTTPS://Presence.Example.COM/'               => T_SERVER,
			'presence.example.com'                        => T_SERVER,
			'https://presence.example.com/widget.js'      => T_SERVER,
			'https://presence.example.com/?a=1#b'         => T_SERVER,
			'http://127.0.0.1:8080/'                      => 'http://127.0.0.1:8080',
			'http://[::1]:8080'                           => 'http://[::1]:8080',
			'https://user:secret@presence.example.com/'   => T_SERVER,
			// esc_url_raw() drops the characters, what is left is a valid URL.
			'https://presence.example.com></script><script>alert(1)' => T_SERVER,
			'https://pre"sence.example.com'              => T_SERVER,
			''                                            => '',
		);
		foreach ( $cases as $in => $want ) {
			update_option( $opt, $in );
			check_same( $want, get_option( $opt ), "sanitize '$in'" );
		}
		check_same( 7, count( $GLOBALS['t']['settings_error'] ), 'no error for accepted values' );
		check_same( '', presence_counter_sanitize_server_url( array( 'x' ) ), 'a non-string is stored empty' );
	}
);

run(
	'settings: page',
	function () {
		t_reset();
		do_action( 'admin_init' );
		do_action( 'admin_menu' );
		$page = $GLOBALS['t']['pages']['presence-counter'] ?? null;
		check( null !== $page, 'options page added' );
		check_same( 'manage_options', $page['capability'] ?? null, 'capability' );
		check_same( 'Presence', $page['menu_title'] ?? null, 'menu title' );
		check( ! empty( $GLOBALS['t']['settings_field']['presence-counter']['presence_counter_server']['presence_counter_server_url'] ), 'field added to its section' );

		ob_start();
		call_user_func( $page['callback'] );
		$html = ob_get_clean();
		check_same( array( 'presence_counter' ), $GLOBALS['t']['fields_group'], 'settings_fields() with the option group' );
		check_same( array( 'presence-counter' ), $GLOBALS['t']['sections_shown'], 'do_settings_sections() of the page' );
		check( false !== strpos( $html, 'notice-warning' ), 'notice when the URL is empty' );
		check( false !== strpos( $html, 'action="options.php"' ), 'form posts to options.php' );
		check( false !== strpos( $html, 'name="presence_counter_server_url"' ), 'input named after the option' );
		check( false !== strpos( $html, 'https://www.example.org' ), 'shows the origin to allow' );

		t_raw_option( 'presence_counter_server_url', T_SERVER );
		ob_start();
		call_user_func( $page['callback'] );
		$html = ob_get_clean();
		check( false === strpos( $html, 'notice-warning' ), 'no notice when the URL is set' );
		check( false !== strpos( $html, 'value="' . T_SERVER . '"' ), 'input shows the URL' );

		t_raw_option( 'presence_counter_server_url', 'https://x.example/"><script>alert(1)</script>' );
		ob_start();
		presence_counter_render_server_url_field();
		$html = ob_get_clean();
		check( false === strpos( $html, '<script' ), 'stored value escaped in the input' );

		$GLOBALS['t']['can'] = false;
		ob_start();
		call_user_func( $page['callback'] );
		check_same( '', ob_get_clean(), 'nothing for users without manage_options' );
	}
);

run(
	'settings: publish key sanitize',
	function () {
		t_reset();
		do_action( 'admin_init' );
		$opt = 'presence_counter_publish_key';
		$key = 'k3y-0123456789abcdef+/=';
		check( isset( $GLOBALS['t']['settings'][ $opt ] ), 'option registered' );
		check_same( 'presence_counter', $GLOBALS['t']['settings'][ $opt ]['group'] ?? null, 'same option group as the URL' );
		check_same( 'presence_counter_sanitize_publish_key', $GLOBALS['t']['settings'][ $opt ]['args']['sanitize_callback'] ?? null, 'sanitize_callback' );
		check_same( false, $GLOBALS['t']['settings'][ $opt ]['args']['show_in_rest'] ?? null, 'not in the REST API' );

		update_option( $opt, '  ' . $key . "\n" );
		check_same( $key, get_option( $opt ), 'trimmed and stored' );
		check_same( $key, presence_counter_publish_key(), 'getter returns it' );
		update_option( $opt, '' );
		check_same( $key, get_option( $opt ), 'an empty submission keeps the stored key' );
		update_option( $opt, '   ' );
		check_same( $key, get_option( $opt ), 'a blank submission keeps the stored key' );
		update_option( $opt, null );
		check_same( $key, get_option( $opt ), 'a missing field keeps the stored key' );
		check_same( array(), $GLOBALS['t']['settings_error'], 'no error so far' );

		$refused = array(
			'with space'       => 'abc def0123456789',
			'double quote'     => 'abc"def0123456789',
			'single quote'     => "abc'def0123456789",
			'quoted'           => '"0123456789abcdef"',
			'backslash'        => 'abc\\def0123456789',
			'comma (two keys)' => '0123456789abcdef,fedcba9876543210',
			'line break'       => "abc\r\nX-Evil: 1",
			'tab'              => "abc\tdef",
			'non-ASCII'        => 'schlüssel0123456789',
			'257 characters'   => str_repeat( 'a', 257 ),
			'15 characters'    => str_repeat( 'a', 15 ),
		);
		$n = 0;
		foreach ( $refused as $what => $bad ) {
			update_option( $opt, $bad );
			check_same( $key, get_option( $opt ), "refused $what: keeps the previous key" );
			check_same( ++$n, count( $GLOBALS['t']['settings_error'] ), "refused $what: settings error" );
			$last = end( $GLOBALS['t']['settings_error'] );
			check( false === strpos( $last['message'], $bad ), "refused $what: error does not repeat the value" );
		}
		check_same( $opt, $GLOBALS['t']['settings_error'][0]['setting'] ?? null, 'error is for the option' );

		update_option( $opt, str_repeat( 'b', 256 ) );
		check_same( str_repeat( 'b', 256 ), get_option( $opt ), '256 characters accepted' );
		update_option( $opt, str_repeat( 'c', 16 ) );
		check_same( str_repeat( 'c', 16 ), get_option( $opt ), '16 characters accepted' );
		update_option( $opt, $key );

		// The "remove" checkbox clears the key, whatever the password field holds.
		$_POST['presence_counter_publish_key_clear'] = '1';
		update_option( $opt, '' );
		check_same( '', get_option( $opt ), 'checkbox clears the key' );
		update_option( $opt, $key );
		check_same( '', get_option( $opt ), 'checkbox wins over a typed key' );
		$_POST['presence_counter_publish_key_clear'] = 'yes';
		update_option( $opt, $key );
		check_same( $key, get_option( $opt ), 'only the value 1 clears' );
		unset( $_POST['presence_counter_publish_key_clear'] );
		check_same( $n, count( $GLOBALS['t']['settings_error'] ), 'no error for accepted values' );
		check_same( $key, presence_counter_sanitize_publish_key( array( 'x' ) ), 'a non-string keeps the stored key' );

		// A stored key that skipped the sanitize callback is not used.
		t_raw_option( $opt, "abc\r\nX-Evil: 1" );
		check_same( '', presence_counter_publish_key(), 'tampered key not used' );
	}
);

run(
	'settings: publish key field',
	function () {
		t_reset();
		do_action( 'admin_init' );
		do_action( 'admin_menu' );
		$page = $GLOBALS['t']['pages']['presence-counter'];
		check( ! empty( $GLOBALS['t']['settings_field']['presence-counter']['presence_counter_events']['presence_counter_publish_key'] ), 'field added to the Events section' );

		ob_start();
		call_user_func( $page['callback'] );
		$html = ob_get_clean();
		check( false !== strpos( $html, 'name="presence_counter_server_url"' ), 'URL field still there' );
		check( (bool) preg_match( '/<input type="password"[^>]* name="presence_counter_publish_key" value=""/', $html ), 'password input named after the option, empty', $html );
		check( false !== strpos( $html, 'autocomplete="new-password"' ), 'browsers do not fill in the login password' );
		check( false === strpos( $html, '(set)' ), 'no "(set)" without a key' );
		check( false === strpos( $html, 'presence_counter_publish_key_clear' ), 'no remove checkbox without a key' );
		check( false !== strpos( $html, '<h2>Events</h2>' ), 'Events section title' );

		$secret = 'S3cret-0123456789abcdef<&>"x';
		t_raw_option( 'presence_counter_publish_key', $secret );
		ob_start();
		call_user_func( $page['callback'] );
		$html = ob_get_clean();
		foreach ( array( $secret, esc_attr( $secret ), 'S3cret', '0123456789abcdef' ) as $needle ) {
			check( false === strpos( $html, $needle ), 'stored key not in the page: ' . $needle );
		}
		check( false !== strpos( $html, 'placeholder="(set)"' ), '"(set)" placeholder' );
		check( (bool) preg_match( '/<input type="checkbox" id="presence_counter_publish_key_clear" name="presence_counter_publish_key_clear" value="1" \/>/', $html ), 'remove checkbox', $html );
		check( (bool) preg_match( '/<input type="password"[^>]* value=""/', $html ), 'password input still empty' );
	}
);


run(
	'settings: post secret sanitize',
	function () {
		t_reset();
		do_action( 'admin_init' );
		$opt    = 'presence_counter_post_secret';
		$secret = 'S3cret-0123456789abcdef0123456789+/=';
		check( isset( $GLOBALS['t']['settings'][ $opt ] ), 'option registered' );
		check_same( 'presence_counter', $GLOBALS['t']['settings'][ $opt ]['group'] ?? null, 'same option group as the URL' );
		check_same( 'presence_counter_sanitize_post_secret', $GLOBALS['t']['settings'][ $opt ]['args']['sanitize_callback'] ?? null, 'sanitize_callback' );
		check_same( false, $GLOBALS['t']['settings'][ $opt ]['args']['show_in_rest'] ?? null, 'not in the REST API' );
		check_same(
			array( 'presence_counter_server_url', $opt, 'presence_counter_single', 'presence_counter_archives', 'presence_counter_publish_key' ),
			array_keys( $GLOBALS['t']['settings'] ),
			'registered after the server URL, and the URL before the publish key'
		);

		update_option( $opt, '  ' . $secret . "\n" );
		check_same( $secret, get_option( $opt ), 'trimmed and stored' );
		check_same( $secret, presence_counter_post_secret(), 'getter returns it' );
		update_option( $opt, '' );
		check_same( $secret, get_option( $opt ), 'an empty submission keeps the stored secret' );
		update_option( $opt, '   ' );
		check_same( $secret, get_option( $opt ), 'a blank submission keeps the stored secret' );
		update_option( $opt, null );
		check_same( $secret, get_option( $opt ), 'a missing field keeps the stored secret' );
		check_same( array(), $GLOBALS['t']['settings_error'], 'no error so far' );

		$refused = array(
			'with space'          => 'abc def0123456789abcdef0123456789',
			'double quote'        => 'abc"def0123456789abcdef0123456789',
			'single quote'        => "abc'def0123456789abcdef0123456789",
			'quoted'              => '"0123456789abcdef0123456789abcdef"',
			'backtick'            => 'abc`def0123456789abcdef0123456789',
			'backslash'           => 'abc\\def0123456789abcdef0123456789',
			'comma (two secrets)' => T_SECRET . ',' . strrev( T_SECRET ),
			'line break'          => "0123456789abcdef0123456789\r\nX-Evil: 1",
			'tab'                 => "0123456789abcdef\t0123456789abcdef",
			'non-ASCII'           => 'schlüssel0123456789abcdef0123456789',
			'257 characters'      => str_repeat( 'a', 257 ),
			'31 characters'       => str_repeat( 'a', 31 ),
			'a publish key'       => '0123456789abcdef-publish',
		);
		$n = 0;
		foreach ( $refused as $what => $bad ) {
			update_option( $opt, $bad );
			check_same( $secret, get_option( $opt ), "refused $what: keeps the previous secret" );
			check_same( ++$n, count( $GLOBALS['t']['settings_error'] ), "refused $what: settings error" );
			$last = end( $GLOBALS['t']['settings_error'] );
			check( false === strpos( $last['message'], $bad ), "refused $what: error does not repeat the value" );
			check_same( 'presence_counter_invalid_post_secret', $last['code'], "refused $what: error code" );
		}
		check_same( $opt, $GLOBALS['t']['settings_error'][0]['setting'] ?? null, 'error is for the option' );
		check( false !== strpos( $GLOBALS['t']['settings_error'][0]['message'] ?? '', 'PRESENCE_POST_SECRET' ), 'error names the server setting' );

		update_option( $opt, str_repeat( 'b', 256 ) );
		check_same( str_repeat( 'b', 256 ), get_option( $opt ), '256 characters accepted' );
		update_option( $opt, str_repeat( 'c', 32 ) );
		check_same( str_repeat( 'c', 32 ), get_option( $opt ), '32 characters accepted' );
		update_option( $opt, $secret );

		// The "remove" checkbox clears the secret, whatever the password field holds.
		$_POST['presence_counter_post_secret_clear'] = '1';
		update_option( $opt, '' );
		check_same( '', get_option( $opt ), 'checkbox clears the secret' );
		update_option( $opt, $secret );
		check_same( '', get_option( $opt ), 'checkbox wins over a typed secret' );
		$_POST['presence_counter_post_secret_clear'] = 'yes';
		update_option( $opt, $secret );
		check_same( $secret, get_option( $opt ), 'only the value 1 clears' );
		unset( $_POST['presence_counter_post_secret_clear'] );

		// Each checkbox clears its own option only.
		update_option( 'presence_counter_publish_key', '0123456789abcdef-publish' );
		$_POST['presence_counter_publish_key_clear'] = '1';
		update_option( $opt, '' );
		check_same( $secret, get_option( $opt ), "the publish key's checkbox keeps the secret" );
		unset( $_POST['presence_counter_publish_key_clear'] );
		$_POST['presence_counter_post_secret_clear'] = '1';
		update_option( 'presence_counter_publish_key', '' );
		check_same( '0123456789abcdef-publish', get_option( 'presence_counter_publish_key' ), "the secret's checkbox keeps the publish key" );
		unset( $_POST['presence_counter_post_secret_clear'] );

		check_same( $n, count( $GLOBALS['t']['settings_error'] ), 'no error for accepted values' );
		check_same( $secret, presence_counter_sanitize_post_secret( array( 'x' ) ), 'a non-string keeps the stored secret' );

		// A stored secret that skipped the sanitize callback is not used.
		foreach ( array( 'short' => 'abc', 'two secrets' => T_SECRET . ',' . T_SECRET, 'line break' => T_SECRET . "\nx" ) as $what => $bad ) {
			t_raw_option( $opt, $bad );
			check_same( '', presence_counter_post_secret(), "tampered secret ($what) not used" );
		}
	}
);

run(
	'settings: post secret field',
	function () {
		t_reset();
		do_action( 'admin_init' );
		do_action( 'admin_menu' );
		$page = $GLOBALS['t']['pages']['presence-counter'];
		check( ! empty( $GLOBALS['t']['settings_field']['presence-counter']['presence_counter_server']['presence_counter_post_secret'] ), 'field added to the server section' );
		check_same( 'Post secret', $GLOBALS['t']['settings_field']['presence-counter']['presence_counter_server']['presence_counter_post_secret']['title'] ?? null, 'field title' );

		ob_start();
		call_user_func( $page['callback'] );
		$html = ob_get_clean();
		check( (bool) preg_match( '/<input type="password"[^>]* name="presence_counter_post_secret" value="" placeholder="" autocomplete="new-password"/', $html ), 'password input named after the option, empty', $html );
		check( false === strpos( $html, '(set)' ), 'no "(set)" without a secret' );
		check( false === strpos( $html, 'presence_counter_post_secret_clear' ), 'no remove checkbox without a secret' );
		check( false !== strpos( $html, 'Must equal the server&#039;s PRESENCE_POST_SECRET' ), 'description names the server setting', $html );
		check( false !== strpos( $html, 'nobody can make the server count made-up posts' ), 'description says what it is for' );
		check( false !== strpos( $html, 'Leave empty when the server has no PRESENCE_POST_SECRET' ), 'description says when to leave it empty' );

		$secret = 'S3cret-0123456789abcdef0123456789<&>"x';
		t_raw_option( 'presence_counter_post_secret', $secret );
		ob_start();
		call_user_func( $page['callback'] );
		$html = ob_get_clean();
		foreach ( array( $secret, esc_attr( $secret ), 'S3cret', '0123456789abcdef' ) as $needle ) {
			check( false === strpos( $html, $needle ), 'stored secret not in the page: ' . $needle );
		}
		check( (bool) preg_match( '/<input type="password"[^>]* name="presence_counter_post_secret" value="" placeholder="\(set\)" autocomplete="new-password"/', $html ), '"(set)" placeholder, still empty', $html );
		check( (bool) preg_match( '/<input type="checkbox" id="presence_counter_post_secret_clear" name="presence_counter_post_secret_clear" value="1" \/>/', $html ), 'remove checkbox', $html );
		check( false === strpos( $html, 'presence_counter_publish_key_clear' ), "no publish key checkbox without a key" );
	}
);

run(
	'settings: secure URLs',
	function () {
		t_reset();
		$secure = array(
			'https://presence.example.com',
			'https://presence.example.com:8443/path',
			'https://10.0.0.5',
			'presence.example.com', // Stored as https://.
			'http://localhost',
			'http://localhost:8080/',
			'HTTP://LOCALHOST',
			'http://presence.localhost:8080',
			'http://a.b.localhost',
			'http://127.0.0.1',
			'http://127.0.0.1:8080',
			'http://127.1.2.3',
			'http://127.255.255.255',
			'http://[::1]',
			'http://[::1]:8080',
			'http://[0:0:0:0:0:0:0:1]:8080',
		);
		foreach ( $secure as $url ) {
			check_same( true, presence_counter_is_secure_url( $url ), "secure: $url" );
			check_same( false, presence_counter_is_insecure_server( $url ), "not an insecure server: $url" );
		}
		$insecure = array(
			'http://presence.example.com',
			'http://presence.example.com:8080',
			'http://10.0.0.5',
			'http://192.168.1.10:8080',
			'http://128.0.0.1',
			'http://126.0.0.1',
			'http://0.0.0.0',
			'http://[::2]',
			'http://[::ffff:127.0.0.1]',
			'http://[::]',
			'http://localhost.example.com',
			'http://notlocalhost',
			'http://localhost.',
			'http://127.0.0.1.nip.io',
			'http://127.0.0.1.',
			'http://0x7f.0.0.1',
			'http://127.1',
		);
		foreach ( $insecure as $url ) {
			check_same( false, presence_counter_is_secure_url( $url ), "not secure: $url" );
			check_same( true, presence_counter_is_insecure_server( $url ), "insecure server: $url" );
		}
		foreach ( array( '', 'javascript:alert(1)', 'ftp://localhost', 'https://' ) as $url ) {
			check_same( false, presence_counter_is_secure_url( $url ), "not a URL, not secure: '$url'" );
			check_same( false, presence_counter_is_insecure_server( $url ), "not a URL, nothing is sent: '$url'" );
		}
	}
);

run(
	'settings: no publish key over plain http',
	function () {
		$url   = 'presence_counter_server_url';
		$opt   = 'presence_counter_publish_key';
		$clear = 'presence_counter_publish_key_clear';
		$plain = 'http://presence.example.com';
		$codes = function () {
			return array_column( $GLOBALS['t']['settings_error'], 'code' );
		};
		$setup = function ( array $options ) {
			t_reset( array( 'options' => array( 1 => $options ) ) );
			do_action( 'admin_init' );
		};
		$no_key_in_errors = function ( $what ) {
			foreach ( $GLOBALS['t']['settings_error'] as $e ) {
				check( false === strpos( $e['message'], T_KEY ) && false === strpos( $e['message'], '0123456789abcdef' ), "$what: error does not contain the key" );
			}
		};

		// A stored key: an http:// URL of another machine is refused, the previous kept.
		$setup( array( $url => T_SERVER, $opt => T_KEY ) );
		t_save_form( 'presence_counter', array( $url => $plain, $opt => '' ) );
		check_same( T_SERVER, get_option( $url ), 'stored key: http URL refused, previous URL kept' );
		check_same( T_KEY, get_option( $opt ), 'stored key: key kept' );
		check_same( array( 'presence_counter_insecure_url' ), $codes(), 'stored key: one error' );
		$e = $GLOBALS['t']['settings_error'][0] ?? array();
		check_same( $url, $e['setting'] ?? null, 'stored key: error is for the URL' );
		check( false !== strpos( $e['message'] ?? '', 'unencrypted' ) && false !== strpos( $e['message'] ?? '', 'https://' ) && false !== strpos( $e['message'] ?? '', 'remove the publish key first' ), 'stored key: error says why and what to do', $e['message'] ?? '' );
		$no_key_in_errors( 'stored key' );

		// The same through update_option() alone, as WP-CLI does: no form, the stored key counts.
		update_option( $url, 'http://10.0.0.5:8080' );
		check_same( T_SERVER, get_option( $url ), 'update_option(): http URL refused' );

		// Loopback URLs never leave the machine.
		foreach ( array( 'http://localhost:8080', 'http://127.0.0.1:8080', 'http://[::1]:8080', 'http://presence.localhost' ) as $loopback ) {
			$setup( array( $url => T_SERVER, $opt => T_KEY ) );
			t_save_form( 'presence_counter', array( $url => $loopback, $opt => '' ) );
			check_same( presence_counter_normalize_url( $loopback ), get_option( $url ), "stored key: $loopback accepted" );
			check_same( array(), $codes(), "stored key: $loopback without error" );
		}

		// Removing the key in the same save: nothing is left to leak.
		$setup( array( $url => T_SERVER, $opt => T_KEY ) );
		t_save_form( 'presence_counter', array( $url => $plain, $opt => '', $clear => '1' ) );
		check_same( $plain, get_option( $url ), 'key removed in the same save: http URL accepted' );
		check_same( '', get_option( $opt ), 'key removed in the same save: key gone' );
		check_same( array(), $codes(), 'key removed in the same save: no error' );

		// No key stored, one typed in with the http URL: the URL is refused (it is stored
		// first), and the key goes with the previous, secure URL.
		$setup( array( $url => T_SERVER ) );
		t_save_form( 'presence_counter', array( $url => $plain, $opt => T_KEY ) );
		check_same( T_SERVER, get_option( $url ), 'typed key: http URL refused' );
		check_same( T_KEY, get_option( $opt ), 'typed key: key stored with the https URL' );
		check_same( array( 'presence_counter_insecure_url' ), $codes(), 'typed key: one error' );
		$no_key_in_errors( 'typed key' );

		// Typed, and removed with the checkbox: the checkbox wins, so the URL is accepted.
		$setup( array( $url => T_SERVER ) );
		t_save_form( 'presence_counter', array( $url => $plain, $opt => T_KEY, $clear => '1' ) );
		check_same( $plain, get_option( $url ), 'typed and removed: http URL accepted' );
		check_same( '', get_option( $opt ), 'typed and removed: no key' );
		check_same( array(), $codes(), 'typed and removed: no error' );

		// No key at all: an http URL sends nothing secret.
		$setup( array( $url => T_SERVER ) );
		t_save_form( 'presence_counter', array( $url => $plain, $opt => '' ) );
		check_same( $plain, get_option( $url ), 'no key: http URL accepted' );
		check_same( array(), $codes(), 'no key: no error' );

		// A key for an http URL of another machine is refused, the previous kept.
		$setup( array( $url => $plain ) );
		t_save_form( 'presence_counter', array( $url => $plain, $opt => T_KEY ) );
		check_same( $plain, get_option( $url ), 'http URL stored: URL unchanged' );
		check_same( '', get_option( $opt ), 'http URL stored: key refused' );
		check_same( array( 'presence_counter_insecure_url', 'presence_counter_insecure_publish_key' ), $codes(), 'http URL stored: both refused' );
		$e = $GLOBALS['t']['settings_error'][1] ?? array();
		check_same( $opt, $e['setting'] ?? null, 'http URL stored: error is for the key' );
		check( false !== strpos( $e['message'] ?? '', 'https:// server URL first' ), 'http URL stored: error says to use https first', $e['message'] ?? '' );
		$no_key_in_errors( 'http URL stored' );

		$setup( array( $url => 'http://10.0.0.5:8080', $opt => 'previous-key-0123456789' ) );
		update_option( $opt, T_KEY );
		check_same( 'previous-key-0123456789', get_option( $opt ), 'update_option(): key refused, previous kept' );
		check_same( array( 'presence_counter_insecure_publish_key' ), $codes(), 'update_option(): one error' );
		$no_key_in_errors( 'update_option()' );

		// Switching to https and typing the key in one save works.
		$setup( array( $url => $plain ) );
		t_save_form( 'presence_counter', array( $url => T_SERVER, $opt => T_KEY ) );
		check_same( T_SERVER, get_option( $url ), 'to https: URL stored' );
		check_same( T_KEY, get_option( $opt ), 'to https: key stored' );
		check_same( array(), $codes(), 'to https: no error' );

		// A loopback URL takes a key.
		$setup( array( $url => 'http://127.0.0.1:8080' ) );
		t_save_form( 'presence_counter', array( $url => 'http://127.0.0.1:8080', $opt => T_KEY ) );
		check_same( T_KEY, get_option( $opt ), 'loopback: key stored' );
		check_same( array(), $codes(), 'loopback: no error' );

		// A key that is not a key is refused as such, once.
		$setup( array( $url => $plain ) );
		update_option( $opt, 'short' );
		check_same( array( 'presence_counter_invalid_publish_key' ), $codes(), 'invalid key with an http URL: only the invalid-key error' );

		// Emptying the URL with a key stored is fine: nothing is sent anywhere.
		$setup( array( $url => T_SERVER, $opt => T_KEY ) );
		t_save_form( 'presence_counter', array( $url => '', $opt => '' ) );
		check_same( '', get_option( $url ), 'empty URL with a key: stored' );
		check_same( array(), $codes(), 'empty URL with a key: no error' );

		// Left from before 0.3.0: http URL and key both stored. Saving the form unchanged
		// keeps both and says why; removing the key fixes it.
		$setup( array( $url => $plain, $opt => T_KEY ) );
		t_save_form( 'presence_counter', array( $url => $plain, $opt => '' ) );
		check_same( $plain, get_option( $url ), 'old http setup: URL kept' );
		check_same( T_KEY, get_option( $opt ), 'old http setup: key kept' );
		check_same( array( 'presence_counter_insecure_url' ), $codes(), 'old http setup: the URL error' );
		$GLOBALS['t']['settings_error'] = array();
		t_save_form( 'presence_counter', array( $url => $plain, $opt => '', $clear => '1' ) );
		check_same( '', get_option( $opt ), 'old http setup: key removed' );
		check_same( array(), $codes(), 'old http setup: removed without error' );
	}
);

run(
	'settings: insecure URL notice',
	function () {
		$notice = 'No events are sent: the Presence server URL is an http:// address of another machine';
		$cases  = array(
			'http URL and key'      => array( array( 'presence_counter_server_url' => 'http://presence.example.com', 'presence_counter_publish_key' => T_KEY ), true ),
			'http IP and key'       => array( array( 'presence_counter_server_url' => 'http://10.0.0.5:8080', 'presence_counter_publish_key' => T_KEY ), true ),
			'http URL and bad key'  => array( array( 'presence_counter_server_url' => 'http://presence.example.com', 'presence_counter_publish_key' => 'short' ), true ),
			'https URL and key'     => array( array( 'presence_counter_server_url' => T_SERVER, 'presence_counter_publish_key' => T_KEY ), false ),
			'loopback URL and key'  => array( array( 'presence_counter_server_url' => 'http://127.0.0.1:8080', 'presence_counter_publish_key' => T_KEY ), false ),
			'http URL without key'  => array( array( 'presence_counter_server_url' => 'http://presence.example.com' ), false ),
			'no URL and key'        => array( array( 'presence_counter_publish_key' => T_KEY ), false ),
		);
		foreach ( $cases as $what => $case ) {
			t_reset( array( 'options' => array( 1 => $case[0] ) ) );
			do_action( 'admin_init' );
			do_action( 'admin_menu' );
			ob_start();
			call_user_func( $GLOBALS['t']['pages']['presence-counter']['callback'] );
			$html = ob_get_clean();
			check_same( $case[1], false !== strpos( $html, $notice ), "$what: " . ( $case[1] ? 'warning shown' : 'no warning' ) );
			if ( $case[1] ) {
				check( (bool) preg_match( '/<div class="notice notice-warning inline"><p>' . preg_quote( $notice, '/' ) . '/', $html ), "$what: as a warning notice" );
				check( false === strpos( $html, T_KEY ), "$what: key not in the page" );
			}
		}
	}
);

run(
	'single post',
	function () {
		t_page(
			array(
				'options'    => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
				'singular'   => true,
				'queried_id' => 42,
				'the_id'     => 42,
			)
		);
		check_same( 1, count( $GLOBALS['t']['enqueue_calls'] ), 'one enqueue' );
		$call = $GLOBALS['t']['enqueue_calls'][0] ?? array();
		check_same( T_HANDLE, $call['handle'] ?? null, 'handle' );
		check_same( T_SERVER . '/widget.js', $call['src'] ?? null, 'src' );
		check_same( array(), $call['deps'] ?? null, 'no dependencies' );
		check( array_key_exists( 'ver', $call ) && null === $call['ver'], 'version null' );
		check_same( true, $call['in_footer'] ?? null, 'in footer' );

		foreach ( array( '6.4', '6.0', '6.3-async' ) as $style ) {
			$tag   = t_script_tag( T_HANDLE, $style );
			$attrs = t_parse_script_tag( $tag );
			check( null !== $attrs, "tag ($style) well-formed", $tag );
			check_same( T_SERVER . '/widget.js', $attrs['src'] ?? null, "tag ($style) src" );
			check_same( '42', $attrs['data-post'] ?? null, "tag ($style) data-post" );
			check_same( true, $attrs['async'] ?? null, "tag ($style) async" );
			check_same( 1, substr_count( $tag, 'data-post="42"' ), "tag ($style) data-post once" );
			check_same( 1, preg_match_all( '/\sasync[\s>]/', $tag ), "tag ($style) async once" );
			check_same( 1, substr_count( $tag, '<script' ), "tag ($style) one script" );
		}

		$other = "<script src=\"https://cdn.example/x.js\" id=\"other-js\"></script>\n";
		check_same( $other, apply_filters( 'script_loader_tag', $other, 'other', 'https://cdn.example/x.js' ), 'other handles untouched' );

		// An inline script added before the widget keeps its tag as is.
		$with_inline = "<script id=\"presence-counter-widget-js-before\">var a = 1;</script>\n<script src=\"" . T_SERVER . "/widget.js\" id=\"presence-counter-widget-js\"></script>\n";
		$filtered    = apply_filters( 'script_loader_tag', $with_inline, T_HANDLE, T_SERVER . '/widget.js' );
		check( 0 === strpos( $filtered, "<script id=\"presence-counter-widget-js-before\">var a = 1;</script>\n<script data-post=\"42\" async src=" ), 'attributes go on the tag with the src', $filtered );

		// The shortcode on the post's own page adds nothing to the enqueue.
		check_same( '<span class="presence-viewers" data-presence-viewers="42">0</span>', t_shortcode( 'presence_viewers' ), 'shortcode for the current post' );
		check_same( array( T_HANDLE => true ), $GLOBALS['t']['enqueued'], 'still one script' );
	}
);

run(
	'single page without an id',
	function () {
		t_page(
			array(
				'options'    => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
				'singular'   => true,
				'queried_id' => 0,
			)
		);
		check_same( array(), $GLOBALS['t']['enqueue_calls'], 'nothing enqueued' );
	}
);

run(
	'multisite',
	function () {
		t_page(
			array(
				'options'    => array( 3 => array( 'presence_counter_server_url' => T_SERVER ) ),
				'multisite'  => true,
				'blog_id'    => 3,
				'singular'   => true,
				'queried_id' => 42,
				'the_id'     => 42,
			)
		);
		check_same( '3-42', presence_counter_post_key( 42 ), 'key' );
		check_same( '3-42', presence_counter_post_key(), 'key of the current post' );
		$attrs = t_parse_script_tag( t_script_tag( T_HANDLE ) );
		check_same( '3-42', $attrs['data-post'] ?? null, 'data-post' );
		check_same( '<span class="presence-viewers" data-presence-viewers="3-42">0</span>', t_shortcode( 'presence_viewers' ), 'shortcode' );
		check_same( '<span class="presence-viewers" data-presence-viewers="3-7">0</span>', t_shortcode( 'presence_viewers', array( 'post' => '7' ) ), 'shortcode for another post' );
		check_same( '<span class="presence-views" data-presence-views="3-42">0</span>', presence_counter_views( 42, false ), 'template function' );

		$GLOBALS['t']['blog_id'] = 12345678;
		$GLOBALS['t']['options'][12345678] = array( 'presence_counter_server_url' => T_SERVER );
		check_same( '12345678-' . PHP_INT_MAX, presence_counter_post_key( PHP_INT_MAX ), 'long key still valid' );
	}
);

run(
	'post keys',
	function () {
		t_reset();
		check_same( '42', presence_counter_post_key( 42 ), 'int' );
		check_same( '42', presence_counter_post_key( '42' ), 'numeric string' );
		check_same( '', presence_counter_post_key( 0 ), 'zero' );
		check_same( '', presence_counter_post_key(), 'no current post' );
		$GLOBALS['t']['queried_id'] = 7; // A term on an archive: not a post.
		check_same( '', presence_counter_post_key(), 'queried term is not a post' );

		// Whatever a filter returns, only [A-Za-z0-9_-]{1,64} is used.
		$cases = array(
			'bad"key'          => '',
			'a.b'              => '',
			"42\n"             => '',
			str_repeat( 'a', 65 ) => '',
			str_repeat( 'a', 64 ) => str_repeat( 'a', 64 ),
			'shop_en-42'       => 'shop_en-42',
		);
		foreach ( $cases as $returned => $want ) {
			$cb = function () use ( $returned ) {
				return $returned;
			};
			add_filter( 'presence_counter_post_key', $cb );
			check_same( $want, presence_counter_post_key( 42 ), 'filtered key ' . json_encode( $returned ) );
			remove_all_filters( 'presence_counter_post_key' );
		}
	}
);

run(
	'shortcode',
	function () {
		t_reset(
			array(
				'options' => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
			)
		);
		$viewers = '<span class="presence-viewers" data-presence-viewers="42">0</span>';
		check_same( $viewers, t_shortcode( 'presence_viewers', array( 'post' => '42' ) ), 'post="42"' );
		check_same( '<span class="presence-views" data-presence-views="42">0</span>', t_shortcode( 'presence_viewers', array( 'post' => '42', 'views' => '1' ) ), 'views="1"' );
		check_same( $viewers, t_shortcode( 'presence_viewers', array( 'post' => '42', 'views' => '0' ) ), 'views="0"' );
		check_same( $viewers, t_shortcode( 'presence_viewers', array( 'post' => '42', 'unknown' => 'x' ) ), 'unknown attribute ignored' );
		check_same( '', t_shortcode( 'presence_viewers', array( 'post' => 'abc' ) ), 'post="abc" prints nothing' );
		check_same( '', t_shortcode( 'presence_viewers' ), 'no current post prints nothing' );
		$GLOBALS['t']['the_id'] = 42;
		check_same( $viewers, t_shortcode( 'presence_viewers' ), 'current post' );
		check_same( $viewers, t_shortcode( 'presence_viewers', '' ), 'no attributes (empty string)' );
	}
);

run(
	'escaping',
	function () {
		t_reset(
			array(
				'options' => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
			)
		);
		$out = t_shortcode( 'presence_viewers', array( 'post' => '42"><script>' ) );
		check_same( '<span class="presence-viewers" data-presence-viewers="42">0</span>', $out, 'crafted post attribute' );
		check( false === stripos( $out, '<script' ), 'no raw <script>' );

		// The markup helper escapes whatever it is given.
		$html = presence_counter_counter_markup( 'x"><script>alert(1)</script>', 'views' );
		check_same( '<span class="presence-views" data-presence-views="x&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">0</span>', $html, 'markup escapes the key' );
		check_same( '<span class="presence-people" data-presence-people="1">0</span>', presence_counter_counter_markup( '1', '"><b>' ), 'unknown kind is people' );

		// Stored URLs that skipped the sanitize callback (database edits) cannot break the tag.
		$tampered = array(
			'https://presence.example.com/"><script>alert(1)</script>',
			"https://presence.example.com/' onload='alert(1)",
			'https://presence.example.com/?"onload="alert(1)',
		);
		foreach ( $tampered as $url ) {
			t_page(
				array(
					'options'    => array( 1 => array( 'presence_counter_server_url' => $url ) ),
					'singular'   => true,
					'queried_id' => 42,
				)
			);
			check_same( T_SERVER . '/widget.js', $GLOBALS['t']['enqueue_calls'][0]['src'] ?? null, "tampered $url: src" );
			$tag   = t_script_tag( T_HANDLE );
			$attrs = t_parse_script_tag( $tag );
			check( null !== $attrs, "tampered $url: tag well-formed", $tag );
			$names = array_keys( (array) $attrs );
			sort( $names );
			check_same( array( 'async', 'data-post', 'id', 'src' ), $names, "tampered $url: attributes" );
		}
		foreach ( array( "https://pre'sence.example.com", 'javascript:alert(1)', 'https://', 'https://a b.example' ) as $url ) {
			t_page(
				array(
					'options'    => array( 1 => array( 'presence_counter_server_url' => $url ) ),
					'singular'   => true,
					'queried_id' => 42,
				)
			);
			check_same( array(), $GLOBALS['t']['enqueue_calls'], "tampered $url: nothing enqueued" );
		}
	}
);

run(
	'template functions',
	function () {
		t_reset(
			array(
				'options' => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
				'the_id'  => 42,
			)
		);
		$viewers = '<span class="presence-viewers" data-presence-viewers="42">0</span>';
		$views   = '<span class="presence-views" data-presence-views="42">0</span>';

		ob_start();
		$ret = presence_counter_viewers();
		$out = ob_get_clean();
		check_same( $viewers, $out, 'viewers echoes' );
		check_same( $viewers, $ret, 'viewers returns' );

		ob_start();
		$ret = presence_counter_viewers( 42, false );
		check_same( '', ob_get_clean(), 'viewers with $echo false prints nothing' );
		check_same( $viewers, $ret, 'viewers with $echo false returns' );

		ob_start();
		$ret = presence_counter_views( 42 );
		$out = ob_get_clean();
		check_same( $views, $out, 'views echoes' );
		check_same( $views, $ret, 'views returns' );

		ob_start();
		$ret = presence_counter_views( null, false );
		check_same( '', ob_get_clean(), 'views with $echo false prints nothing' );
		check_same( $views, $ret, 'views with $echo false returns' );

		check_same( t_shortcode( 'presence_viewers', array( 'post' => '42' ) ), presence_counter_viewers( 42, false ), 'same as the shortcode' );
		check_same( array( T_HANDLE => true ), $GLOBALS['t']['enqueued'], 'widget enqueued' );
	}
);

run(
	'archive page',
	function () {
		t_page(
			array(
				'options'    => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
				'singular'   => false,
				'queried_id' => 5, // The category being listed.
			)
		);
		check_same( array(), $GLOBALS['t']['enqueue_calls'], 'nothing enqueued before a counter is shown' );

		// The loop renders post 42's excerpt with the shortcode in it.
		$GLOBALS['t']['the_id'] = 42;
		check_same( '<span class="presence-viewers" data-presence-viewers="42">0</span>', t_shortcode( 'presence_viewers' ), 'shortcode in the loop' );
		$GLOBALS['t']['the_id'] = 43;
		ob_start();
		presence_counter_viewers();
		check_same( '<span class="presence-viewers" data-presence-viewers="43">0</span>', ob_get_clean(), 'template function in the loop' );

		check_same( array( T_HANDLE => true ), $GLOBALS['t']['enqueued'], 'widget enqueued' );
		check_same( T_SERVER . '/widget.js', $GLOBALS['t']['registered'][ T_HANDLE ]['src'] ?? null, 'src' );
		check_same( true, $GLOBALS['t']['registered'][ T_HANDLE ]['in_footer'] ?? null, 'in footer' );
		$tag   = t_script_tag( T_HANDLE );
		$attrs = t_parse_script_tag( $tag );
		check( null !== $attrs, 'tag well-formed', $tag );
		check( ! isset( $attrs['data-post'] ) && false === strpos( $tag, 'data-post' ), 'no data-post', $tag );
		check_same( true, $attrs['async'] ?? null, 'async' );
	}
);

/** The token of $key for a page rendered at $now, made here as the server checks it. */
function t_token( $key, $now, $days = 7, $secret = T_SECRET ) {
	$expires = ( intdiv( $now, 86400 ) + 1 + $days ) * 86400;
	return $expires . '.' . hash_hmac( 'sha256', $key . '.' . $expires, $secret );
}

/**
 * The tokens of $key a page rendered between $before and $after can carry: time()
 * cannot be fixed, and a page rendered as the day changes has one of the two days'.
 */
function t_tokens( $key, $before, $after ) {
	return array_values( array_unique( array( t_token( $key, $before ), t_token( $key, $after ) ) ) );
}

function check_one_of( array $wants, $got, $what ) {
	check( in_array( $got, $wants, true ), $what, 'want one of ' . var_export( $wants, true ) . ', got ' . var_export( $got, true ) );
}

run(
	'tokens',
	function () {
		t_reset( array( 'options' => array( 1 => array( 'presence_counter_post_secret' => T_SECRET ) ) ) );

		// The server's own vector: 1767225600 is 2026-01-01 00:00 UTC, the expiry of every
		// page rendered on 2025-12-24 (UTC) with the default 7 days.
		$vector = '1767225600.6f8baa973395ee62043c99ed56c4126a6c98e100d802865a1c390a178bed72ab';
		check_same( $vector, t_token( '13', 1766534400 ), 'test helper makes the known vector' );
		check_same( $vector, presence_counter_token( '13', 1766534400 ), 'known vector, first second of the day' );
		check_same( $vector, presence_counter_token( '13', 1766577000 ), 'known vector, midday' );
		check_same( $vector, presence_counter_token( '13', 1766620799 ), 'known vector, last second of the day: one token all day' );
		check_same( '1767312000.' . hash_hmac( 'sha256', '13.1767312000', T_SECRET ), presence_counter_token( '13', 1766620800 ), 'next day: the next day\'s expiry' );

		foreach ( array( 1766534400, 1766620799 ) as $now ) {
			$expires = (int) strtok( presence_counter_token( '13', $now ), '.' );
			check( $expires - $now > 7 * 86400 - 1 && $expires - $now <= 8 * 86400, "valid 7 to 8 days from $now", (string) ( $expires - $now ) );
		}

		$before = time();
		$token  = presence_counter_token( '42' );
		$after  = time();
		check_one_of( t_tokens( '42', $before, $after ), $token, "today's token without \$now" );
		check( (bool) preg_match( '/^[0-9]{10}\.[0-9a-f]{64}$/D', $token ), 'format <expires>.<64 lowercase hex>', $token );

		check( presence_counter_token( '42', 1766534400 ) !== presence_counter_token( '43', 1766534400 ), 'one token per post' );
		check_same( t_token( '3-42', 1766534400 ), presence_counter_token( '3-42', 1766534400 ), 'multisite key signed as it is' );

		// The lifetime filter: whole days, at least 1, at most 3650.
		$lifetimes = array(
			array( 1, 1 ),
			array( 14, 14 ),
			array( '3', 3 ),
			array( 2.9, 2 ),
			array( 0, 1 ),
			array( -5, 1 ),
			array( 3650, 3650 ),
			array( 99999, 3650 ),
			array( 1e30, 3650 ),
			array( PHP_INT_MAX, 3650 ),
			array( 'abc', 7 ),
			array( null, 7 ),
			array( array( 3 ), 7 ),
		);
		foreach ( $lifetimes as $l ) {
			add_filter(
				'presence_counter_token_lifetime_days',
				function () use ( $l ) {
					return $l[0];
				}
			);
			check_same( t_token( '13', 1766534400, $l[1] ), presence_counter_token( '13', 1766534400 ), 'lifetime ' . var_export( $l[0], true ) . " is $l[1] days" );
			remove_all_filters( 'presence_counter_token_lifetime_days' );
		}

		// Only keys the server takes are signed.
		foreach ( array( '', 'a.b', '42"', "42\n", str_repeat( 'a', 65 ) ) as $bad ) {
			check_same( '', presence_counter_token( $bad, 1766534400 ), 'no token for key ' . json_encode( $bad ) );
		}
		check_same( '', presence_counter_token( 42, 1766534400 ), 'no token for an int: a post ID is not its key' );
		check_same( '', presence_counter_token( array( '42' ), 1766534400 ), 'no token for an array' );
		check( '' !== presence_counter_token( str_repeat( 'a', 64 ), 1766534400 ), '64-character key signed' );

		t_reset();
		check_same( '', presence_counter_token( '42' ), 'no secret: no token' );
		t_raw_option( 'presence_counter_post_secret', 'too-short' );
		check_same( '', presence_counter_token( '42' ), 'tampered secret: no token' );
		t_raw_option( 'presence_counter_post_secret', '  ' . T_SECRET . "\n" );
		check_same( $vector, presence_counter_token( '13', 1766534400 ), 'stored secret trimmed' );
	}
);

run(
	'tokens: pages',
	function () {
		$options = array(
			'presence_counter_server_url'  => T_SERVER,
			'presence_counter_post_secret' => T_SECRET,
		);
		$before  = time();
		t_page(
			array(
				'options'    => array( 1 => $options ),
				'singular'   => true,
				'queried_id' => 42,
				'the_id'     => 42,
			)
		);
		foreach ( array( '6.4', '6.0', '6.3-async' ) as $style ) {
			$tag   = t_script_tag( T_HANDLE, $style );
			$attrs = t_parse_script_tag( $tag );
			check( null !== $attrs, "tag ($style) well-formed", $tag );
			check_same( '42', $attrs['data-post'] ?? null, "tag ($style) data-post" );
			check_one_of( t_tokens( '42', $before, time() ), $attrs['data-token'] ?? null, "tag ($style) data-token of the post" );
			check_same( 1, substr_count( $tag, 'data-token=' ), "tag ($style) data-token once" );
			check_same( true, $attrs['async'] ?? null, "tag ($style) async" );
		}
		$tag = t_script_tag( T_HANDLE );
		check( (bool) preg_match( '/^<script data-post="42" data-token="[0-9]+\.[0-9a-f]{64}" async src=/', $tag ), 'data-token beside data-post', $tag );

		// A tag that already has a token keeps it.
		$has   = '<script data-token="x" src="' . T_SERVER . "/widget.js\" id=\"presence-counter-widget-js\"></script>\n";
		$again = apply_filters( 'script_loader_tag', $has, T_HANDLE, T_SERVER . '/widget.js' );
		check_same( 1, substr_count( $again, 'data-token=' ), 'existing data-token not repeated' );

		// Every counter carries the token of its own post.
		$tokens = t_tokens( '42', $before, time() );
		$want   = array_map(
			function ( $t ) {
				return '<span class="presence-viewers" data-presence-viewers="42" data-presence-token="' . $t . '">0</span>';
			},
			$tokens
		);
		check_one_of( $want, t_shortcode( 'presence_viewers' ), 'shortcode for the current post' );
		$html = t_shortcode( 'presence_viewers', array( 'post' => '7', 'views' => '1' ) );
		check( (bool) preg_match( '/^<span class="presence-views" data-presence-views="7" data-presence-token="([^"]+)">0<\/span>$/D', $html, $m ), 'views counter of another post', $html );
		check_one_of( t_tokens( '7', $before, time() ), $m[1] ?? null, "another post's own token" );
		$html = presence_counter_views( 42, false );
		check( (bool) preg_match( '/ data-presence-token="([^"]+)"/', $html, $m ), 'template function', $html );
		check_one_of( $tokens, $m[1] ?? null, 'template function token' );

		// Archives: counters carry tokens; the script tag has neither data-post nor data-token.
		t_page(
			array(
				'options'    => array( 1 => $options ),
				'singular'   => false,
				'queried_id' => 5,
			)
		);
		$GLOBALS['t']['the_id'] = 43;
		$html                   = t_shortcode( 'presence_viewers' );
		check( (bool) preg_match( '/^<span class="presence-viewers" data-presence-viewers="43" data-presence-token="([^"]+)">0<\/span>$/D', $html, $m ), 'archive counter has a token', $html );
		check_one_of( t_tokens( '43', $before, time() ), $m[1] ?? null, 'archive counter token of its post' );
		$tag = t_script_tag( T_HANDLE );
		check( false === strpos( $tag, 'data-post' ) && false === strpos( $tag, 'data-token' ), 'archive script tag: no data-post, no data-token', $tag );

		// Multisite: the token signs the key Presence knows the post by.
		$multi = array(
			'options'    => array( 3 => $options ),
			'multisite'  => true,
			'blog_id'    => 3,
			'singular'   => true,
			'queried_id' => 42,
			'the_id'     => 42,
		);
		t_page( $multi );
		$attrs = t_parse_script_tag( t_script_tag( T_HANDLE ) );
		check_same( '3-42', $attrs['data-post'] ?? null, 'multisite data-post' );
		check_one_of( t_tokens( '3-42', $before, time() ), $attrs['data-token'] ?? null, 'multisite data-token of 3-42' );

		// Escaped like every attribute, though a token has nothing to escape.
		check( false === strpos( presence_counter_counter_markup( 'x"><script>', 'views' ), 'data-presence-token' ), 'no token for a key the server refuses' );

		// Without a secret the page is exactly as before.
		unset( $options['presence_counter_post_secret'] );
		t_page(
			array(
				'options'    => array( 1 => $options ),
				'singular'   => true,
				'queried_id' => 42,
				'the_id'     => 42,
			)
		);
		$tag = t_script_tag( T_HANDLE );
		check_same( '<script data-post="42" async src="' . T_SERVER . "/widget.js\" id=\"presence-counter-widget-js\"></script>\n", $tag, 'no secret: tag without data-token' );
		check_same( '<span class="presence-viewers" data-presence-viewers="42">0</span>', t_shortcode( 'presence_viewers' ), 'no secret: counter without data-presence-token' );

		// A secret that skipped the sanitize callback adds nothing either.
		t_raw_option( 'presence_counter_post_secret', 'short' );
		check( false === strpos( t_script_tag( T_HANDLE ) . t_shortcode( 'presence_viewers' ), 'token' ), 'tampered secret: no token attributes' );
	}
);


/** A site with publishing configured and comment 7 on published post 42. */
function t_events( array $over = array(), $blog_id = 1 ) {
	t_reset(
		array_merge(
			array(
				'blog_id' => $blog_id,
				'options' => array(
					$blog_id => array(
						'presence_counter_server_url'  => T_SERVER,
						'presence_counter_publish_key' => T_KEY,
					),
				),
			),
			$over
		)
	);
	t_comment();
}

/** The decoded JSON body of the only request, or null. */
function t_sent_body() {
	$calls = $GLOBALS['t']['remote_posts'];
	if ( 1 !== count( $calls ) ) {
		return null;
	}
	return json_decode( $calls[0]['args']['body'], true );
}

run(
	'events: approved comment',
	function () {
		t_events();
		do_action( 'comment_post', 7, 1, array() );
		$calls = $GLOBALS['t']['remote_posts'];
		check_same( 1, count( $calls ), 'one request' );
		check_same( T_SERVER . '/v1/posts/42/events', $calls[0]['url'] ?? null, 'URL' );
		$args = $calls[0]['args'] ?? array();
		check_same(
			array(
				'Authorization' => 'Bearer ' . T_KEY,
				'Content-Type'  => 'application/json',
			),
			$args['headers'] ?? null,
			'headers'
		);
		check_same( false, $args['blocking'] ?? null, 'non-blocking' );
		check_same( 2, $args['timeout'] ?? null, 'timeout' );
		check_same( 'body', $args['data_format'] ?? null, 'data_format' );
		check_same( array( 'blocking', 'body', 'data_format', 'headers', 'timeout' ), ( function ( $k ) { sort( $k ); return $k; } )( array_keys( $args ) ), 'no other arguments' );
		check_same(
			'{"name":"comment","data":{"id":7,"author":"Ana","excerpt":"Nice post!","url":"https:\\/\\/www.example.org\\/?p=42#comment-7"}}',
			$args['body'] ?? null,
			'exact JSON body'
		);
		check_same(
			array(
				'name' => 'comment',
				'data' => array(
					'id'      => 7,
					'author'  => 'Ana',
					'excerpt' => 'Nice post!',
					'url'     => 'https://www.example.org/?p=42#comment-7',
				),
			),
			t_sent_body(),
			'decoded body'
		);

		// The string '1' from a pre_comment_approved filter is approved too.
		t_events();
		do_action( 'comment_post', 7, '1', array() );
		check_same( 1, count( $GLOBALS['t']['remote_posts'] ), "comment_post with '1' sends once" );

		// Legacy comment type ''.
		t_events();
		t_comment( array( 'comment_type' => '' ) );
		do_action( 'comment_post', 7, 1, array() );
		check_same( 1, count( $GLOBALS['t']['remote_posts'] ), "comment type '' sends" );
	}
);

run(
	'events: multisite key',
	function () {
		t_events( array( 'multisite' => true ), 3 );
		do_action( 'comment_post', 7, 1, array() );
		check_same( T_SERVER . '/v1/posts/3-42/events', $GLOBALS['t']['remote_posts'][0]['url'] ?? null, 'URL has <blog id>-<post id>' );
		check_same( 1, count( $GLOBALS['t']['remote_posts'] ), 'one request' );
		check_same( 'Bearer ' . T_KEY, $GLOBALS['t']['remote_posts'][0]['args']['headers']['Authorization'] ?? null, "this site's key" );
	}
);

run(
	'events: held, spam and later approval',
	function () {
		foreach ( array( 0, '0', 'spam', 'trash' ) as $approved ) {
			t_events();
			t_comment( array( 'comment_approved' => (string) $approved ) );
			do_action( 'comment_post', 7, $approved, array() );
			check_same( array(), $GLOBALS['t']['remote_posts'], 'comment_post with ' . var_export( $approved, true ) . ' sends nothing' );
		}

		t_events();
		$c = t_comment( array( 'comment_approved' => '1' ) );
		do_action( 'transition_comment_status', 'approved', 'unapproved', $c );
		check_same( 1, count( $GLOBALS['t']['remote_posts'] ), 'unapproved -> approved sends once' );
		check_same( 7, t_sent_body()['data']['id'] ?? null, 'of the comment' );

		foreach ( array( 'spam', 'trash' ) as $old ) {
			t_events();
			do_action( 'transition_comment_status', 'approved', $old, t_comment() );
			check_same( 1, count( $GLOBALS['t']['remote_posts'] ), "$old -> approved sends once" );
		}

		$quiet = array(
			array( 'unapproved', 'approved' ),
			array( 'spam', 'approved' ),
			array( 'spam', 'unapproved' ),
			array( 'trash', 'approved' ),
			array( 'approved', 'approved' ),
		);
		foreach ( $quiet as $tr ) {
			t_events();
			do_action( 'transition_comment_status', $tr[0], $tr[1], t_comment() );
			check_same( array(), $GLOBALS['t']['remote_posts'], "{$tr[1]} -> {$tr[0]} sends nothing" );
		}
	}
);

run(
	'events: not sent',
	function () {
		$cases = array(
			'no publish key' => function () {
				delete_option( 'presence_counter_publish_key' );
			},
			'no server URL'  => function () {
				delete_option( 'presence_counter_server_url' );
			},
			'bad stored key' => function () {
				t_raw_option( 'presence_counter_publish_key', "k\nX-Evil: 1" );
			},
			'pingback'       => function () {
				t_comment( array( 'comment_type' => 'pingback' ) );
			},
			'trackback'      => function () {
				t_comment( array( 'comment_type' => 'trackback' ) );
			},
			'editor note'    => function () {
				t_comment( array( 'comment_type' => 'note' ) );
			},
			'unknown comment' => function () {
				$GLOBALS['t']['comments'] = array();
			},
			'post without a key' => function () {
				add_filter( 'presence_counter_post_key', '__return_false' );
			},
			'filter returns null' => function () {
				add_filter( 'presence_counter_comment_event_data', function () {
					return null;
				} );
			},
			'filter returns false' => function () {
				add_filter( 'presence_counter_comment_event_data', '__return_false' );
			},
			'password-protected post' => function () {
				$GLOBALS['t']['post_password'][42] = 'secret';
			},
		);
		foreach ( array( 'draft', 'private', 'pending', 'future', 'trash', false ) as $status ) {
			$cases[ 'post status ' . var_export( $status, true ) ] = function () use ( $status ) {
				$GLOBALS['t']['post_status'][42] = $status;
			};
		}
		foreach ( $cases as $what => $setup ) {
			t_events();
			$setup();
			do_action( 'comment_post', 7, 1, array() );
			$c = get_comment( 7 );
			if ( $c ) {
				do_action( 'transition_comment_status', 'approved', 'unapproved', $c );
			}
			check_same( array(), $GLOBALS['t']['remote_posts'], "$what: no request" );
			remove_all_filters( 'presence_counter_post_key' );
			remove_all_filters( 'presence_counter_comment_event_data' );
		}
	}
);

run(
	'events: filter',
	function () {
		t_events();
		$seen = null;
		add_filter(
			'presence_counter_comment_event_data',
			function ( $data, $comment ) use ( &$seen ) {
				$seen = $comment;
				unset( $data['url'] );
				$data['avatar'] = 'https://www.example.org/a.png';
				return $data;
			},
			10,
			2
		);
		do_action( 'comment_post', 7, 1, array() );
		remove_all_filters( 'presence_counter_comment_event_data' );
		check_same( '7', $seen->comment_ID ?? null, 'filter gets the comment' );
		check_same(
			array(
				'id'      => 7,
				'author'  => 'Ana',
				'excerpt' => 'Nice post!',
				'avatar'  => 'https://www.example.org/a.png',
			),
			t_sent_body()['data'] ?? null,
			'changed data sent'
		);
	}
);

run(
	'events: text is plain data',
	function () {
		$author = 'Ana "<b>Bold</b>" O\'Brien </script><script>alert(1)</script> \\ é';
		t_events();
		t_comment(
			array(
				'comment_author'  => $author,
				'comment_content' => '<p>Hi <a href="https://x.example/">there</a> & "friends"</p><script>alert(1)</script>',
			)
		);
		do_action( 'comment_post', 7, 1, array() );
		$body = $GLOBALS['t']['remote_posts'][0]['args']['body'] ?? '';
		$json = json_decode( $body, true );
		check( JSON_ERROR_NONE === json_last_error() && is_array( $json ), 'valid JSON', $body );
		check_same( array( 'name', 'data' ), array_keys( (array) $json ), 'only name and data' );
		check_same( array( 'id', 'author', 'excerpt', 'url' ), array_keys( (array) ( $json['data'] ?? array() ) ), 'data fields' );
		check_same( 'Ana "Bold" O\'Brien \\ é', $json['data']['author'] ?? null, 'author: tags stripped, quotes kept as text' );
		check_same( 'Hi there & "friends"', $json['data']['excerpt'] ?? null, 'excerpt: plain text' );
		check( false === strpos( $body, '<b>' ) && false === strpos( $body, '<script' ), 'no markup in the body', $body );
		check( false !== strpos( $body, '\\"friends\\"' ), 'quotes escaped by json_encode', $body );

		// WordPress stores names and comment text HTML-escaped; the event carries text.
		t_events();
		t_comment(
			array(
				'comment_author'  => 'Tom &amp; Jerry &lt;3',
				'comment_content' => 'a &lt; b &amp;&amp; c &#8220;quoted&#8221;',
			)
		);
		do_action( 'comment_post', 7, 1, array() );
		check_same( 'Tom & Jerry <3', t_sent_body()['data']['author'] ?? null, 'author entities decoded' );
		check_same( "a < b && c \u{201C}quoted\u{201D}", t_sent_body()['data']['excerpt'] ?? null, 'excerpt entities decoded' );

		t_events();
		t_comment( array( 'comment_author' => '' ) );
		do_action( 'comment_post', 7, 1, array() );
		check_same( 'Anonymous', t_sent_body()['data']['author'] ?? null, 'empty author is what WordPress shows' );
	}
);

run(
	'events: excerpt length',
	function () {
		t_events();
		$long = '<p>' . str_repeat( 'abcdefghi ', 10 ) . '</p>' . "\n\n<p>" . str_repeat( 'x', 200 ) . '</p>';
		t_comment( array( 'comment_content' => $long ) );
		do_action( 'comment_post', 7, 1, array() );
		$excerpt = t_sent_body()['data']['excerpt'] ?? '';
		check_same( str_repeat( 'abcdefghi ', 10 ) . str_repeat( 'x', 40 ), $excerpt, 'first 140 characters, breaks collapsed' );

		t_events();
		t_comment( array( 'comment_content' => str_repeat( 'ü€😀', 100 ) ) );
		do_action( 'comment_post', 7, 1, array() );
		$excerpt = t_sent_body()['data']['excerpt'] ?? '';
		check_same( 140, preg_match_all( '/./us', $excerpt ), '140 characters, not bytes' );
		check( (bool) preg_match( '//u', $excerpt ), 'still valid UTF-8' );
	}
);

run(
	'events: presence_counter_publish()',
	function () {
		t_events();
		$data = array(
			'title'    => 'Hello <world>',
			'modified' => '2026-01-02T03:04:05+00:00',
		);
		check_same( true, presence_counter_publish( 42, 'update', $data ), 'returns true' );
		check_same( T_SERVER . '/v1/posts/42/events', $GLOBALS['t']['remote_posts'][0]['url'] ?? null, 'URL' );
		check_same( array( 'name' => 'update', 'data' => $data ), t_sent_body(), 'body' );
		check_same( false, $GLOBALS['t']['remote_posts'][0]['args']['blocking'] ?? null, 'non-blocking' );

		t_events();
		check_same( true, presence_counter_publish( '42', 'a.b:c_d-e', null ), 'numeric string id, any valid name, null data' );
		check_same( '{"name":"a.b:c_d-e","data":null}', $GLOBALS['t']['remote_posts'][0]['args']['body'] ?? null, 'null data sent as null' );

		$refused = array(
			'bad name'        => array( 42, 'a b', 1 ),
			'empty name'      => array( 42, '', 1 ),
			'long name'       => array( 42, str_repeat( 'n', 65 ), 1 ),
			'non-string name' => array( 42, 7, 1 ),
			'post 0'          => array( 0, 'update', 1 ),
			'no post'         => array( null, 'update', 1 ),
			'post object'     => array( (object) array( 'ID' => 42 ), 'update', 1 ),
			'over 16 KiB'     => array( 42, 'update', str_repeat( 'x', 16384 ) ),
			'not encodable'   => array( 42, 'update', "\xff\xfe" ),
		);
		foreach ( $refused as $what => $a ) {
			t_events();
			check_same( false, presence_counter_publish( $a[0], $a[1], $a[2] ), "$what: returns false" );
			check_same( array(), $GLOBALS['t']['remote_posts'], "$what: no request" );
		}

		t_events();
		check_same( true, presence_counter_publish( 42, 'update', str_repeat( 'x', 16384 - strlen( '{"name":"update","data":""}' ) ) ), 'exactly 16 KiB is sent' );

		t_events();
		delete_option( 'presence_counter_publish_key' );
		check_same( false, presence_counter_publish( 42, 'update', 1 ), 'not configured: false' );
		check_same( array(), $GLOBALS['t']['remote_posts'], 'not configured: no request' );

		t_events();
		$GLOBALS['t']['remote_return'] = new WP_Error( 'http_request_failed', 'refused' );
		check_same( false, presence_counter_publish( 42, 'update', 1 ), 'HTTP API error: false' );
	}
);

run(
	'events: publicly viewable posts only',
	function () {
		$cases = array(
			'private post'                   => array( array( 'status' => 'private' ), false ),
			'published wp_block'             => array( array( 'type' => 'wp_block' ), false ),
			'published non-public post type' => array( array( 'type' => 'internal_note' ), false ),
			'unregistered post type'         => array( array( 'type' => 'gone' ), false ),
			'password-protected post'        => array( array( 'password' => 'secret' ), false ),
			'password-protected page'        => array( array( 'type' => 'page', 'password' => 'secret' ), false ),
			'published post'                 => array( array(), true ),
			'published page'                 => array( array( 'type' => 'page' ), true ),
			'published public custom type'   => array( array( 'type' => 'product' ), true ),
		);
		foreach ( $cases as $what => $case ) {
			t_events();
			$post = $case[0];
			if ( isset( $post['status'] ) ) {
				$GLOBALS['t']['post_status'][42] = $post['status'];
			}
			if ( isset( $post['type'] ) ) {
				$GLOBALS['t']['post_type'][42] = $post['type'];
			}
			if ( isset( $post['password'] ) ) {
				$GLOBALS['t']['post_password'][42] = $post['password'];
			}
			do_action( 'comment_post', 7, 1, array() );
			check_same( $case[1] ? 1 : 0, count( $GLOBALS['t']['remote_posts'] ), "$what: " . ( $case[1] ? 'event sent' : 'no event' ) );
		}

		// The stub follows WordPress.
		t_reset();
		$GLOBALS['t']['post_status'] = array( 1 => 'publish', 2 => 'private', 3 => 'future', 4 => 'publish', 5 => 'publish' );
		$GLOBALS['t']['post_type']   = array( 4 => 'wp_block', 5 => 'page' );
		check_same( array( 1 => true, 2 => false, 3 => false, 4 => false, 5 => true, 6 => false ), array_map( 'is_post_publicly_viewable', array( 1 => 1, 2 => 2, 3 => 3, 4 => 4, 5 => 5, 6 => 6 ) ), 'is_post_publicly_viewable() stub' );
	}
);

run(
	'events: not sent over plain http',
	function () {
		foreach ( array( 'http://presence.example.com', 'http://10.0.0.5:8080', 'http://[::2]:8080', 'http://localhost.example.com' ) as $url ) {
			t_events();
			t_raw_option( 'presence_counter_server_url', $url ); // Past the sanitize callbacks.
			check_same( false, presence_counter_publish( 42, 'update', 1 ), "$url: presence_counter_publish() returns false" );
			do_action( 'comment_post', 7, 1, array() );
			do_action( 'transition_comment_status', 'approved', 'unapproved', get_comment( 7 ) );
			check_same( array(), $GLOBALS['t']['remote_posts'], "$url: no request" );
		}
		foreach ( array( 'http://localhost:8080', 'http://127.0.0.1:8080', 'http://[::1]:8080', 'http://presence.localhost' ) as $url ) {
			t_events();
			t_raw_option( 'presence_counter_server_url', $url );
			check_same( true, presence_counter_publish( 42, 'update', 1 ), "$url: sent" );
			check_same( presence_counter_normalize_url( $url ) . '/v1/posts/42/events', $GLOBALS['t']['remote_posts'][0]['url'] ?? null, "$url: to the loopback server" );
		}
	}
);

run(
	'uninstall',
	function () use ( $plugin_dir ) {
		if ( ! defined( 'WP_UNINSTALL_PLUGIN' ) ) {
			define( 'WP_UNINSTALL_PLUGIN', 'presence-counter/presence-counter.php' );
		}
		t_reset(
			array(
				'options' => array(
					1 => array(
						'presence_counter_server_url'  => T_SERVER,
						'presence_counter_publish_key' => T_KEY,
						'presence_counter_post_secret' => T_SECRET,
						'presence_counter_archives'    => 'off',
						'presence_counter_single'      => 'before',
						'blogname'                     => 'Site',
					),
				),
			)
		);
		include $plugin_dir . '/uninstall.php';
		check_same( array( 'blogname' => 'Site' ), $GLOBALS['t']['options'][1], 'options deleted' );

		t_reset(
			array(
				'multisite' => true,
				'blog_id'   => 2,
				'sites'     => array( 1, 2, 3 ),
				'options'   => array(
					1 => array( 'presence_counter_server_url' => T_SERVER ),
					2 => array(
						'presence_counter_server_url'  => T_SERVER,
						'presence_counter_publish_key' => T_KEY,
						'presence_counter_post_secret' => T_SECRET,
					),
					3 => array(
						'presence_counter_publish_key' => T_KEY,
						'presence_counter_post_secret' => T_SECRET,
						'blogname'                     => 'Three',
					),
				),
			)
		);
		include $plugin_dir . '/uninstall.php';
		check_same(
			array(
				1 => array(),
				2 => array(),
				3 => array( 'blogname' => 'Three' ),
			),
			$GLOBALS['t']['options'],
			'options deleted on every site'
		);
		check_same( 2, $GLOBALS['t']['blog_id'], 'current site restored' );
	}
);

run(
	'automatic counter on single posts',
	function () {
		$single = array(
			'options'      => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
			'singular'     => true,
			'queried_id'   => 7,
			'the_id'       => 7,
			'post_status'  => array( 7 => 'publish', 8 => 'publish' ),
			'post_content' => array( 7 => '<p>Text</p>' ),
		);
		t_reset( $single );
		$got = apply_filters( 'the_content', '<p>Text</p>' );
		check_same(
			'<p>Text</p><p class="presence-counter"><span class="presence-counter-words" data-presence-words="people sentence"><span class="presence-people" data-presence-people="7">1</span> person is viewing this post</span></p>',
			$got,
			'after the content by default, 1 (the visitor) until the count arrives'
		);
		check( isset( $GLOBALS['t']['enqueued'][ T_HANDLE ] ), 'the widget is enqueued' );
		check_same( array( 'wp-i18n' ), $GLOBALS['t']['registered']['presence-counter-words']['deps'] ?? null, 'words.js, on wp-i18n' );
		check_same( 'presence-counter', $GLOBALS['t']['script_translations']['presence-counter-words'][0] ?? null, 'words.js has the plugin\'s translations' );

		t_reset( array_replace_recursive( $single, array( 'options' => array( 1 => array( 'presence_counter_single' => 'before' ) ) ) ) );
		check( 0 === strpos( apply_filters( 'the_content', '<p>Text</p>' ), '<p class="presence-counter">' ), 'before the content when set so' );

		foreach (
			array(
				'off'                              => array( 'options' => array( 1 => array( 'presence_counter_single' => 'off' ) ) ),
				'no server'                        => array( 'options' => array( 1 => array( 'presence_counter_server_url' => '' ) ) ),
				'another post than the viewed one' => array( 'the_id' => 8 ),
				'a page'                           => array( 'post_type' => array( 7 => 'page' ) ),
				'a feed'                           => array( 'feed' => true ),
				'an excerpt being made'            => array( 'doing' => array( 'get_the_excerpt' ) ),
				'not the main query'               => array( 'main_query' => false ),
				'the block in the post'            => array( 'post_content' => array( 7 => '<!-- wp:presence-counter/counter {"wording":"short"} /-->' ) ),
				'the shortcode in the post'        => array( 'post_content' => array( 7 => '[presence_viewers]' ) ),
			) as $what => $over
		) {
			t_reset( array_replace_recursive( $single, $over ) );
			check_same( '<p>Text</p>', apply_filters( 'the_content', '<p>Text</p>' ), 'nothing added: ' . $what );
		}

		// A translation's words are text, whatever they hold; the number stays a counter.
		t_reset( array_replace( $single, array( 'plurals' => array( '%s person is viewing this post' => array( '<b>%s</b> lecteur & 100%', '%s lecteurs' ) ) ) ) );
		check_same(
			'<p>Text</p><p class="presence-counter"><span class="presence-counter-words" data-presence-words="people sentence">&lt;b&gt;<span class="presence-people" data-presence-people="7">1</span>&lt;/b&gt; lecteur &amp; 100%</span></p>',
			apply_filters( 'the_content', '<p>Text</p>' ),
			'translated words escaped around the counter'
		);
	}
);

run(
	'lists of posts in classic themes',
	function () {
		$list = array(
			'options'     => array( 1 => array( 'presence_counter_server_url' => T_SERVER ) ),
			'block_theme' => false,
			'in_the_loop' => true,
			'the_id'      => 9,
		);
		$counter = '<p class="presence-counter-list"><span class="presence-counter-words" data-presence-words="people short"><span class="presence-people" data-presence-people="9">0</span> viewing now</span></p>';
		t_reset( $list );
		check_same( '<p>Excerpt</p>' . $counter, apply_filters( 'the_excerpt', '<p>Excerpt</p>' ), 'after the excerpt' );
		check_same( '<p>All</p>' . $counter, apply_filters( 'the_content', '<p>All</p>' ), 'after the content of lists that show whole posts' );
		foreach (
			array(
				'a block theme (its counter is after the title)' => array( 'block_theme' => true ),
				'outside the loop'                               => array( 'in_the_loop' => false ),
				'lists switched off'                             => array( 'options' => array( 1 => array( 'presence_counter_archives' => 'off' ) ) ),
				'no server'                                      => array( 'options' => array( 1 => array( 'presence_counter_server_url' => '' ) ) ),
				'wp-admin'                                       => array( 'admin' => true ),
			) as $what => $over
		) {
			t_reset( array_replace_recursive( $list, $over ) );
			check_same( '<p>Excerpt</p>', apply_filters( 'the_excerpt', '<p>Excerpt</p>' ), 'nothing after the excerpt: ' . $what );
			check_same( '<p>All</p>', apply_filters( 'the_content', '<p>All</p>' ), 'nothing after the content: ' . $what );
		}
	}
);

run(
	'block',
	function () use ( $plugin_dir ) {
		t_reset( array( 'options' => array( 1 => array( 'presence_counter_server_url' => T_SERVER, 'presence_counter_post_secret' => T_SECRET ) ) ) );
		do_action( 'init' );
		check_same( array( 'render_callback' => 'presence_counter_render_block' ), $GLOBALS['t']['blocks'][ $plugin_dir . '/block' ] ?? null, 'registered from block/, rendered on the server' );
		$meta = json_decode( (string) file_get_contents( $plugin_dir . '/block/block.json' ), true );
		check_same( 'presence-counter/counter', $meta['name'] ?? null, 'block.json names the block' );
		check_same( array( 'postId', 'postType' ), $meta['usesContext'] ?? null, 'the block reads its Query Loop row\'s post' );
		check_same( '0.5.0', $meta['version'] ?? null, 'block.json has the plugin\'s version' );

		// A Query Loop row: that row's post, with its token.
		apply_filters( 'render_block_data', array( 'blockName' => 'core/post-template' ) );
		$row = presence_counter_render_block( array( 'kind' => 'views', 'wording' => 'short' ), '', new WP_Block( array( 'postId' => 12 ) ) );
		check( false !== strpos( $row, 'data-presence-views="12" data-presence-token="' . presence_counter_token( '12' ) . '">0</span> views' ), 'a row shows its own post\'s views', $row );
		check( 0 === strpos( $row, '<p class="wp-block-presence-counter-counter presence-counter">' ), 'in the block\'s wrapper', $row );
		$number = presence_counter_render_block( array( 'wording' => 'number' ), '', new WP_Block( array( 'postId' => 12 ) ) );
		check( false === strpos( $number, 'presence-counter-words' ) && false !== strpos( $number, 'data-presence-people="12"' ), 'the number alone', $number );
		$readers = presence_counter_render_block( array( 'kind' => 'reading', 'wording' => 'short' ), '', new WP_Block( array( 'postId' => 12 ) ) );
		check( false !== strpos( $readers, 'data-presence-words="reading short"' ) && false !== strpos( $readers, 'class="presence-reading" data-presence-reading="12"' ) && false !== strpos( $readers, '</span> reading now' ), 'the readers of a row\'s post', $readers );
		$odd = presence_counter_render_block( array( 'kind' => '"><script>', 'wording' => 'x' ), '', new WP_Block( array( 'postId' => 12 ) ) );
		check( false !== strpos( $odd, 'data-presence-words="people sentence"' ), 'unknown attributes are the defaults: people, in a sentence', $odd );

		// Outside a Query Loop: the single post viewed, or nothing.
		apply_filters( 'render_block_core/post-template', '' );
		$GLOBALS['t']['singular']   = true;
		$GLOBALS['t']['queried_id'] = 5;
		$single = presence_counter_render_block( array(), '', new WP_Block( array( 'postId' => 5 ) ) );
		check( false !== strpos( $single, 'data-presence-people="5" data-presence-token="' . presence_counter_token( '5' ) . '">1</span> person is viewing this post' ), 'the viewed post, 1 being the visitor', $single );
		$GLOBALS['t']['singular'] = false;
		check_same( '', presence_counter_render_block( array(), '', new WP_Block( array( 'postId' => 5 ) ) ), 'nothing in a widget area of an archive' );
		$GLOBALS['t']['in_the_loop'] = true;
		$GLOBALS['t']['the_id']      = 6;
		check( false !== strpos( presence_counter_render_block( array(), '', null ), 'data-presence-people="6"' ), 'the loop\'s post in a classic list' );
		$tabs = presence_counter_render_block( array( 'kind' => 'viewers' ), '', null );
		check( false !== strpos( $tabs, 'data-presence-viewers="6"' ) && false !== strpos( $tabs, 'tabs are open on this post' ), 'open tabs, in their own words', $tabs );

		update_option( 'presence_counter_server_url', '' );
		check_same( '', presence_counter_render_block( array(), '', new WP_Block( array( 'postId' => 12 ) ) ), 'nothing while no server is set' );
	}
);

run(
	'text domain',
	function () {
		check_same( array( 'presence-counter' ), array_keys( $GLOBALS['t_domains'] ?? array() ), 'every string uses the presence-counter text domain' );
	}
);

echo $GLOBALS['t_passed'] . ' passed, ' . $GLOBALS['t_failed'] . " failed\n";
exit( $GLOBALS['t_failed'] > 0 ? 1 : 0 );

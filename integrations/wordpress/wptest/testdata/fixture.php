<?php
/**
 * Test fixture run with php-cli against the test's WordPress: makes what a
 * test needs without the editor, and reads what it checks.
 *
 *   php fixture.php WP_DIR post TITLE CONTENT       prints the new post's ID
 *   php fixture.php WP_DIR page TITLE CONTENT       prints the new page's ID
 *   php fixture.php WP_DIR theme SLUG               switches to the theme
 *   php fixture.php WP_DIR template SLUG CONTENT    the active block theme's template SLUG, as the site editor saves it
 *   php fixture.php WP_DIR widget-block CONTENT     puts a block widget first in sidebar-1
 *   php fixture.php WP_DIR no-welcome-guide         the editor opens without its welcome guide
 *   php fixture.php WP_DIR pending-comment POST_ID  prints the new comment's ID
 *   php fixture.php WP_DIR options                  prints the plugin's options as JSON
 */

if ( $argc < 3 ) {
	fwrite( STDERR, "usage: php fixture.php WP_DIR post|page|theme|template|widget-block|no-welcome-guide|pending-comment|options ...\n" );
	exit( 2 );
}
$_SERVER['HTTP_HOST']   = 'localhost';
$_SERVER['REQUEST_URI'] = '/';
require $argv[1] . '/wp-load.php';

switch ( $argv[2] ) {
	case 'post':
	case 'page':
		$id = wp_insert_post(
			array(
				'post_type'    => $argv[2],
				'post_title'   => $argv[3],
				'post_content' => $argv[4],
				'post_status'  => 'publish',
				'post_author'  => 1,
			),
			true
		);
		if ( is_wp_error( $id ) ) {
			fwrite( STDERR, $id->get_error_message() . "\n" );
			exit( 1 );
		}
		echo $id;
		break;
	case 'pending-comment':
		$id = wp_insert_comment(
			array(
				'comment_post_ID'      => (int) $argv[3],
				'comment_author'       => 'A reader',
				'comment_author_email' => 'reader@example.com',
				'comment_content'      => 'First!',
				'comment_approved'     => 0,
				'comment_type'         => 'comment',
			)
		);
		if ( ! $id ) {
			fwrite( STDERR, "wp_insert_comment failed\n" );
			exit( 1 );
		}
		echo $id;
		break;
	case 'theme':
		switch_theme( $argv[3] );
		if ( get_stylesheet() !== $argv[3] ) {
			fwrite( STDERR, "theme {$argv[3]} not switched to\n" );
			exit( 1 );
		}
		break;
	case 'template':
		$id = wp_insert_post(
			array(
				'post_type'    => 'wp_template',
				'post_name'    => $argv[3],
				'post_title'   => $argv[3],
				'post_content' => $argv[4],
				'post_status'  => 'publish',
			),
			true
		);
		if ( is_wp_error( $id ) ) {
			fwrite( STDERR, $id->get_error_message() . "\n" );
			exit( 1 );
		}
		// Not tax_input: wp_insert_post() drops it without a user who may assign terms.
		wp_set_post_terms( $id, array( get_stylesheet() ), 'wp_theme' );
		echo $id;
		break;
	case 'widget-block':
		$widgets      = get_option( 'widget_block', array() );
		$n            = max( array_merge( array( 1 ), array_filter( array_keys( $widgets ), 'is_int' ) ) ) + 1;
		$widgets[ $n ] = array( 'content' => $argv[3] );
		update_option( 'widget_block', $widgets );
		$sidebars              = wp_get_sidebars_widgets();
		$sidebars['sidebar-1'] = array_merge( array( 'block-' . $n ), isset( $sidebars['sidebar-1'] ) ? (array) $sidebars['sidebar-1'] : array() );
		wp_set_sidebars_widgets( $sidebars );
		break;
	case 'no-welcome-guide':
		global $wpdb;
		update_user_meta(
			1,
			$wpdb->get_blog_prefix() . 'persisted_preferences',
			array(
				'core/edit-post' => array( 'welcomeGuide' => false ),
				'_modified'      => gmdate( 'c' ),
			)
		);
		break;
	case 'options':
		$out = array();
		foreach ( array( 'presence_counter_server_url', 'presence_counter_publish_key', 'presence_counter_post_secret', 'presence_counter_archives', 'presence_counter_single' ) as $name ) {
			$out[ $name ] = get_option( $name, null );
		}
		echo json_encode( $out );
		break;
	default:
		fwrite( STDERR, "unknown command {$argv[2]}\n" );
		exit( 2 );
}

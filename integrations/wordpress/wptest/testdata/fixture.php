<?php
/**
 * Test fixture run with php-cli against the test's WordPress: makes what a
 * test needs without the editor, and reads what it checks.
 *
 *   php fixture.php WP_DIR post TITLE CONTENT       prints the new post's ID
 *   php fixture.php WP_DIR pending-comment POST_ID  prints the new comment's ID
 *   php fixture.php WP_DIR options                  prints the plugin's options as JSON
 */

if ( $argc < 3 ) {
	fwrite( STDERR, "usage: php fixture.php WP_DIR post|pending-comment|options ...\n" );
	exit( 2 );
}
$_SERVER['HTTP_HOST']   = 'localhost';
$_SERVER['REQUEST_URI'] = '/';
require $argv[1] . '/wp-load.php';

switch ( $argv[2] ) {
	case 'post':
		$id = wp_insert_post(
			array(
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
	case 'options':
		$out = array();
		foreach ( array( 'presence_counter_server_url', 'presence_counter_publish_key', 'presence_counter_post_secret', 'presence_counter_archives' ) as $name ) {
			$out[ $name ] = get_option( $name, null );
		}
		echo json_encode( $out );
		break;
	default:
		fwrite( STDERR, "unknown command {$argv[2]}\n" );
		exit( 2 );
}

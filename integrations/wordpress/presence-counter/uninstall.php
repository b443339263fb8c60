<?php
/**
 * Removes the plugin's options when the plugin is deleted.
 *
 * @package Presence_Counter
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

// The publish key and post secret go too: a secret should not outlive the plugin that used it.
$presence_counter_options = array( 'presence_counter_server_url', 'presence_counter_publish_key', 'presence_counter_post_secret', 'presence_counter_archives', 'presence_counter_single' );

if ( is_multisite() ) {
	// The options are stored per site, and a network-activated plugin may have them on every site.
	foreach ( get_sites( array( 'fields' => 'ids', 'number' => 0 ) ) as $presence_counter_blog_id ) {
		switch_to_blog( $presence_counter_blog_id );
		foreach ( $presence_counter_options as $presence_counter_option ) {
			delete_option( $presence_counter_option );
		}
		restore_current_blog();
	}
} else {
	foreach ( $presence_counter_options as $presence_counter_option ) {
		delete_option( $presence_counter_option );
	}
}

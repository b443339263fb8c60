<?php
/**
 * Removes the plugin's option when the plugin is deleted.
 *
 * @package Presence_Counter
 */

defined( 'WP_UNINSTALL_PLUGIN' ) || exit;

if ( is_multisite() ) {
	// The option is stored per site, and a network-activated plugin may have one on every site.
	foreach ( get_sites( array( 'fields' => 'ids', 'number' => 0 ) ) as $presence_counter_blog_id ) {
		switch_to_blog( $presence_counter_blog_id );
		delete_option( 'presence_counter_server_url' );
		restore_current_blog();
	}
} else {
	delete_option( 'presence_counter_server_url' );
}

<?php
/**
 * What block/index.js needs loaded before it; the file is written by hand, as there is
 * no build step. presence-counter-words is words.js, registered on init.
 *
 * @package Presence_Counter
 */

return array(
	'dependencies' => array( 'presence-counter-words', 'wp-block-editor', 'wp-blocks', 'wp-components', 'wp-element', 'wp-i18n' ),
	'version'      => '0.5.0',
);

/**
 * The "Presence counter" block in the editor. Plain ES5 on WordPress's globals, with no
 * build step; the page shows the block through its server-side render, with live counts.
 */
( function ( wp ) {
	'use strict';
	var el = wp.element.createElement;
	var __ = wp.i18n.__;
	var blockEditor = wp.blockEditor;
	var components = wp.components;

	// words.js, loaded before this script, holds the words of every wording.
	var wording = window.PresenceCounterWords.wording;

	// A select in the block's settings that sets one attribute.
	function select( props, attribute, label, options ) {
		return el( components.SelectControl, {
			label: label,
			value: props.attributes[ attribute ],
			options: options,
			onChange: function ( value ) {
				var change = {};
				change[ attribute ] = value;
				props.setAttributes( change );
			},
		} );
	}

	wp.blocks.registerBlockType( 'presence-counter/counter', {
		edit: function ( props ) {
			var kind = props.attributes.kind;
			var parts = wording( kind, props.attributes.wording, 1 ).split( /%(?:1\$)?s/ );
			return el(
				wp.element.Fragment,
				null,
				el(
					blockEditor.InspectorControls,
					null,
					el(
						components.PanelBody,
						{ title: __( 'Counter', 'presence-counter' ) },
						select( props, 'kind', __( 'Count', 'presence-counter' ), [
							{ value: 'people', label: __( 'People viewing the post now', 'presence-counter' ) },
							{ value: 'reading', label: __( 'People reading it now (its tab in view)', 'presence-counter' ) },
							{ value: 'viewers', label: __( 'Tabs open on the post', 'presence-counter' ) },
							{ value: 'views', label: __( 'Total views of the post', 'presence-counter' ) },
						] ),
						select( props, 'wording', __( 'Wording', 'presence-counter' ), [
							{ value: 'sentence', label: __( 'Sentence', 'presence-counter' ) },
							{ value: 'short', label: __( 'Short', 'presence-counter' ) },
							{ value: 'number', label: __( 'The number alone', 'presence-counter' ) },
						] )
					)
				),
				el(
					'p',
					blockEditor.useBlockProps( { className: 'presence-counter' } ),
					parts[ 0 ],
					el( 'span', { className: 'presence-' + kind }, '1' ),
					parts.slice( 1 ).join( '' )
				)
			);
		},
		// Rendered on the server, so that the count is the live one of the post shown.
		save: function () {
			return null;
		},
	} );
} )( window.wp );

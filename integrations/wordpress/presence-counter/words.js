/**
 * Keeps the words around live counts in step with their number: "1 person is viewing
 * this post" becomes "2 people are viewing this post" when the widget changes the 1, in
 * the plural forms of the site's language (wp.i18n and the plugin's translations).
 */
( function ( w, d ) {
	'use strict';
	if ( ! w.wp || ! w.wp.i18n ) {
		return;
	}
	var _n = w.wp.i18n._n;

	// The same words as presence_counter_wording() in PHP ('people' is the last
	// case). The block's editor script
	// shows its preview with them too.
	function wording( kind, words, n ) {
		if ( 'number' === words ) {
			return '%s';
		}
		if ( 'reading' === kind ) {
			return 'short' === words
				? /* translators: %s: the live number of people with the post in view */ _n( '%s reading now', '%s reading now', n, 'presence-counter' )
				: /* translators: %s: the live number of people with the post in view */ _n( '%s person is reading this post', '%s people are reading this post', n, 'presence-counter' );
		}
		if ( 'viewers' === kind ) {
			return 'short' === words
				? /* translators: %s: the live number of browser tabs open on a post */ _n( '%s open', '%s open', n, 'presence-counter' )
				: /* translators: %s: the live number of browser tabs open on a post */ _n( '%s tab is open on this post', '%s tabs are open on this post', n, 'presence-counter' );
		}
		if ( 'views' === kind ) {
			return 'short' === words
				? /* translators: %s: the number of times a post has been viewed */ _n( '%s view', '%s views', n, 'presence-counter' )
				: /* translators: %s: the number of times a post has been viewed */ _n( 'This post has been viewed %s time', 'This post has been viewed %s times', n, 'presence-counter' );
		}
		return 'short' === words
			? /* translators: %s: the live number of people viewing a post */ _n( '%s viewing now', '%s viewing now', n, 'presence-counter' )
			: /* translators: %s: the live number of people viewing a post */ _n( '%s person is viewing this post', '%s people are viewing this post', n, 'presence-counter' );
	}

	w.PresenceCounterWords = { wording: wording };
	if ( ! w.MutationObserver ) {
		return;
	}

	// Only the text around the counter changes; the counter element stays, so the widget
	// goes on filling it in.
	function reword( box, counter, kind, words ) {
		var n = parseInt( counter.textContent, 10 );
		if ( isNaN( n ) ) {
			return;
		}
		var parts = wording( kind, words, n ).split( /%(?:1\$)?s/ );
		var before = d.createTextNode( parts[ 0 ] );
		var after = d.createTextNode( parts.slice( 1 ).join( '' ) );
		while ( box.firstChild ) {
			box.removeChild( box.firstChild );
		}
		box.appendChild( before );
		box.appendChild( counter );
		box.appendChild( after );
	}

	function watch( box ) {
		var spec = ( box.getAttribute( 'data-presence-words' ) || '' ).split( ' ' );
		var kind = /^(viewers|views|reading)$/.test( spec[ 0 ] ) ? spec[ 0 ] : 'people';
		var counter = box.querySelector( '[data-presence-' + kind + ']' );
		if ( ! counter ) {
			return;
		}
		// The widget sets the counter's textContent whenever a count arrives.
		new w.MutationObserver( function () {
			reword( box, counter, kind, spec[ 1 ] );
		} ).observe( counter, { childList: true, characterData: true, subtree: true } );
		reword( box, counter, kind, spec[ 1 ] );
	}

	function start() {
		var boxes = d.querySelectorAll( '[data-presence-words]' );
		for ( var i = 0; i < boxes.length; i++ ) {
			watch( boxes[ i ] );
		}
	}

	if ( 'loading' === d.readyState ) {
		d.addEventListener( 'DOMContentLoaded', start );
	} else {
		start();
	}
} )( window, document );

// Package presence is the domain of the service: post and session ids, the
// counts and events that flow to browsers, the Store that keeps presence, and
// the errors that reach clients. It imports only the standard library, so
// every adapter (Redis, memory, HTTP) depends on it and never the reverse.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxPostIDLen is the longest post id accepted.
const MaxPostIDLen = 64

// PostID names a post: 1-64 characters of [A-Za-z0-9_-]. The charset keeps ids
// safe to splice into Redis keys, channel names and JSON without escaping.
type PostID string

// ParsePostID validates s as a post id.
func ParsePostID(s string) (PostID, error) {
	if s == "" {
		return "", Errorf(CodeInvalidPost, "post id is empty")
	}
	if len(s) > MaxPostIDLen {
		return "", Errorf(CodeInvalidPost, "post id is %d characters long, at most %d allowed", len(s), MaxPostIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		if !ok {
			return "", Errorf(CodeInvalidPost, "post id %q has a character outside [A-Za-z0-9_-] at position %d", truncate(s, MaxPostIDLen), i)
		}
	}
	return PostID(s), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// SessionID names one browser tab's connection. It is random and made by the
// server; clients never choose it, so one tab cannot act for another.
type SessionID string

// NewSessionID returns a fresh random session id (22 URL-safe characters).
func NewSessionID() SessionID {
	var b [16]byte
	// crypto/rand.Read never returns an error since Go 1.24.
	_, _ = rand.Read(b[:])
	return SessionID(base64.RawURLEncoding.EncodeToString(b[:]))
}

// Session is a live session and the post it views.
type Session struct {
	ID   SessionID
	Post PostID
	// Hidden says the tab is in the background: it views the post but is
	// not reading it. Only View looks at it.
	Hidden bool
	// Visitor names the browser the tab is in (ParseVisitorID), so that one
	// reader with several tabs counts as one person; "" counts the session
	// as a person of its own. Only View looks at it.
	Visitor VisitorID
}

// VisitorID is the random id a browser keeps for itself (widget.js keeps
// one in localStorage): 8-64 characters of [A-Za-z0-9_-]. It says nothing
// about the visitor but that two tabs are in one browser.
type VisitorID string

// ParseVisitorID validates s as a visitor id.
func ParseVisitorID(s string) (VisitorID, error) {
	if len(s) < 8 || len(s) > 64 {
		return "", Errorf(CodeBadRequest, "visitor id must be 8-64 characters of [A-Za-z0-9_-], got %d characters", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "", Errorf(CodeBadRequest, "visitor id has a character outside [A-Za-z0-9_-] at position %d", i)
		}
	}
	return VisitorID(s), nil
}

// Count is the live state of a post.
type Count struct {
	Post PostID
	// Viewers is the number of live sessions viewing the post.
	Viewers int64
	// Views is the total number of views the post has had, counted once per
	// session and post.
	Views int64
	// Reading is how many of the viewers are not hidden: their tab is the
	// one visible in its window.
	Reading int64
	// People is how many different visitors the viewers are: a reader with
	// three tabs on the post is three viewers and one person.
	People int64
	// Seq orders the counts of one store: every change of any post takes a
	// number larger than any before it (the Redis store skips ahead to its
	// clock, so that a Redis that lost data never goes back), so of two counts
	// of a post the one with the larger Seq is newer. It lets a server that reads a count and also hears of changes
	// through pub/sub keep the newest value whatever order they arrive in.
	Seq int64
}

// DefaultSessionTTL is how long a session lives without a refresh unless
// configured otherwise.
const DefaultSessionTTL = 90 * time.Second

// StoreTTLs applies the defaults every store takes: a session TTL of zero is
// DefaultSessionTTL; a views TTL of zero is DefaultViewsTTL, and a negative
// one keeps views forever, which the stores hold as 0.
func StoreTTLs(ttl, viewsTTL time.Duration) (time.Duration, time.Duration) {
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	switch {
	case viewsTTL == 0:
		viewsTTL = DefaultViewsTTL
	case viewsTTL < 0:
		viewsTTL = 0
	}
	return ttl, viewsTTL
}

// DefaultViewsTTL is how long a post's views total is kept after its last
// view unless configured otherwise. Every view of a new id makes a counter;
// without an expiry, clients naming made-up ids would fill the store. A
// month keeps the total of every post people still read.
const DefaultViewsTTL = 30 * 24 * time.Hour

// Event is a message pushed to everybody viewing or watching a post.
type Event struct {
	Post PostID
	Name string
	Data json.RawMessage
}

// Message is one thing a store's change feed carries: a Count or an Event.
type Message struct {
	Count *Count
	Event *Event
}

// Store keeps who views which post. Implementations must keep every change
// atomic: after any interleaving of calls, the viewers of a post are exactly
// the live sessions viewing it.
type Store interface {
	// View makes s.ID a viewer of s.Post, moving it off any other post, and
	// returns the post's new count; s.Hidden says whether it is reading. A
	// view of the post the session already views only sets that. from is the post the caller last placed
	// the session on ("" for none): a store kept in partitions finds the
	// session there only by it. countView adds one to the post's views; the
	// caller decides it, because only the caller knows whether this session
	// saw the post before.
	View(ctx context.Context, s Session, from PostID, countView bool) (Count, error)
	// Leave removes the sessions, each from the post the caller last placed
	// it on (a partitioned store looks nowhere else). Unknown sessions are
	// ignored.
	Leave(ctx context.Context, sessions ...Session) error
	// Refresh pushes the deadlines of live sessions one TTL into the future and
	// returns those that were not live any more, or not on the post the caller
	// believes: the caller registers them again with View.
	Refresh(ctx context.Context, sessions []Session) (missing []SessionID, err error)
	// Hold keeps live sessions for at least d from now, for their tabs to
	// resume them on another connection: it pushes a deadline that is
	// nearer out to d, and never brings one nearer. A session that is not
	// live, or not on the post named, is left alone.
	Hold(ctx context.Context, sessions []Session, d time.Duration) error
	// Counts returns the counts of the posts, in order. Each count is read
	// atomically with its Seq; a partitioned store reads the posts of one
	// partition at one instant and the partitions one after another.
	Counts(ctx context.Context, posts []PostID) ([]Count, error)
	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error
	// TTL is how long a session lives without a refresh.
	TTL() time.Duration
}

// MaxEventNameLen is the longest event name accepted.
const MaxEventNameLen = 64

// NewEvent validates an event: a name of 1-64 characters of [A-Za-z0-9_.:-]
// and data that is valid JSON (absent data becomes null).
func NewEvent(post PostID, name string, data json.RawMessage) (Event, error) {
	if name == "" || len(name) > MaxEventNameLen {
		return Event{}, Errorf(CodeBadRequest, "event name must be 1-%d characters, got %d", MaxEventNameLen, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_.:-", c) >= 0
		if !ok {
			return Event{}, Errorf(CodeBadRequest, "event name %q has a character outside [A-Za-z0-9_.:-]", truncate(name, MaxEventNameLen))
		}
	}
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	// encoding/json lets invalid UTF-8 through, and browsers fail the whole
	// connection on a text frame that holds it.
	if !utf8.Valid(data) {
		return Event{}, Errorf(CodeBadRequest, "event data is not valid UTF-8")
	}
	if !json.Valid(data) {
		return Event{}, Errorf(CodeBadRequest, "event data is not valid JSON")
	}
	return Event{Post: post, Name: name, Data: data}, nil
}

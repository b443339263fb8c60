package presence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The wire format: every frame a server sends to browsers, and every
// message on a post's Redis channel, is built here and nowhere else in Go.
// The Lua scripts build the count message themselves (common.lua's publish,
// which has the numbers only inside Redis); a test in redisstore checks
// their bytes against CountMessage. api/protocol.md documents each frame,
// and a test replays its examples against a server.

// HelloFrame is sent first on every connection:
//
//	{"type":"hello","session":"t3IfUFm_UObWYn5Af9mcgg","ttl":90,"resume":"t3IfUFm_UObWYn5Af9mcgg.Zq0..."}
type HelloFrame struct {
	Type    string    `json:"type"` // "hello"
	Session SessionID `json:"session"`
	TTL     int64     `json:"ttl"` // whole seconds
	// Resume is the session's resume token (Resumer), which a reconnecting
	// tab presents to continue the session; absent while the server has no
	// key.
	Resume string `json:"resume,omitempty"`
}

// Hello returns the hello frame of a session with the store's TTL and its
// resume token ("" for none).
func Hello(sid SessionID, ttl time.Duration, resume string) []byte {
	return marshal(HelloFrame{Type: "hello", Session: sid, TTL: int64(ttl / time.Second), Resume: resume})
}

// CountFrame is a post's count as browsers get it:
//
//	{"type":"count","post":"13","viewers":5,"views":120,"reading":3,"people":4}
type CountFrame struct {
	Type    string `json:"type"` // "count"
	Post    PostID `json:"post"`
	Viewers int64  `json:"viewers"`
	Views   int64  `json:"views"`
	// Reading is the viewers whose tab is visible; the rest are open in
	// the background.
	Reading int64 `json:"reading"`
	// People is how many different visitors the viewers are.
	People int64 `json:"people"`
}

func (c Count) frame() CountFrame {
	return CountFrame{Type: "count", Post: c.Post, Viewers: c.Viewers, Views: c.Views, Reading: c.Reading, People: c.People}
}

// Frame returns the count's frame for browsers.
func (c Count) Frame() []byte {
	return marshal(c.frame())
}

// CountMessage is a count as the store publishes it on the post's channel:
// the browsers' frame plus seq, so PHP code and app servers share one
// format.
//
//	{"type":"count","post":"13","viewers":5,"views":120,"reading":3,"people":4,"seq":4711}
type CountMessage struct {
	CountFrame
	Seq int64 `json:"seq"`
}

// Message returns the count's message for a post's channel. The Redis
// scripts publish the same bytes.
func (c Count) Message() []byte {
	return marshal(CountMessage{c.frame(), c.Seq})
}

// EventFrame is an event, to browsers and, as it is, on the post's channel:
//
//	{"type":"event","post":"13","name":"comment","data":{"author":"Ana"}}
type EventFrame struct {
	Type string          `json:"type"` // "event"
	Post PostID          `json:"post"`
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
}

// MaxEventFrame is the largest event frame, as sent to browsers and on a
// post's channel.
const MaxEventFrame = 20 << 10

// Frame returns the event's frame. Data is compacted but not HTML-escaped:
// escaping would grow "<" sixfold, and a size limit must hold for the bytes
// that are sent, not for an intermediate form.
func (e Event) Frame() []byte {
	return marshal(EventFrame{Type: "event", Post: e.Post, Name: e.Name, Data: e.Data})
}

// ErrorFrame answers a client frame that could not be applied:
//
//	{"type":"error","code":"invalid_post","message":"..."}
type ErrorFrame struct {
	Type    string `json:"type"` // "error"
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorFrameOf returns the frame that tells a client of err: its code and
// the message meant for clients.
func ErrorFrameOf(err error) []byte {
	return marshal(ErrorFrame{Type: "error", Code: ErrorCode(err), Message: ErrorMessage(err)})
}

// StatusFrame says whether the server can reach its store:
//
//	{"type":"status","store":"down"}
type StatusFrame struct {
	Type  string `json:"type"`  // "status"
	Store string `json:"store"` // "up" or "down"
}

// Status returns the status frame for a store that answers (up) or not.
func Status(up bool) []byte {
	store := "down"
	if up {
		store = "up"
	}
	return marshal(StatusFrame{Type: "status", Store: store})
}

// marshal encodes a frame without HTML escaping and without the trailing
// newline of json.Encoder. Every frame type here encodes without error
// (event data was checked by NewEvent).
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// channelMessage is either message a post's channel carries, as parsed.
type channelMessage struct {
	Type    string          `json:"type"`
	Post    string          `json:"post"`
	Viewers *int64          `json:"viewers"`
	Views   *int64          `json:"views"`
	Reading *int64          `json:"reading"`
	People  *int64          `json:"people"`
	Seq     int64           `json:"seq"`
	Name    string          `json:"name"`
	Data    json.RawMessage `json:"data"`
}

// ParseMessage checks a message from post's channel as carefully as a
// browser frame (anything on Redis could come from any client of it) and
// returns it: a CountMessage or an EventFrame. A message may leave out its
// post, which the channel names.
func ParseMessage(post PostID, payload []byte) (Message, error) {
	if len(payload) > MaxEventFrame {
		return Message{}, fmt.Errorf("message of %d bytes, at most %d allowed", len(payload), MaxEventFrame)
	}
	var w channelMessage
	if err := json.Unmarshal(payload, &w); err != nil {
		return Message{}, fmt.Errorf("not JSON: %w", err)
	}
	if w.Post != "" && w.Post != string(post) {
		return Message{}, fmt.Errorf("post %q does not match channel", w.Post)
	}
	switch w.Type {
	case "count":
		if w.Viewers == nil || w.Views == nil || *w.Viewers < 0 || *w.Views < 0 {
			return Message{}, errors.New("count needs non-negative viewers and views")
		}
		// A count without reading (an app server or PHP code from before
		// it) counts every viewer as reading.
		reading := *w.Viewers
		if w.Reading != nil && *w.Reading >= 0 && *w.Reading <= *w.Viewers {
			reading = *w.Reading
		}
		// The same for people: every viewer a person of their own.
		people := *w.Viewers
		if w.People != nil && *w.People <= *w.Viewers && (*w.People >= 1 || *w.People == 0 && *w.Viewers == 0) {
			people = *w.People
		}
		return Message{Count: &Count{Post: post, Viewers: *w.Viewers, Views: *w.Views, Reading: reading, People: people, Seq: w.Seq}}, nil
	case "event":
		ev, err := NewEvent(post, w.Name, w.Data)
		if err != nil {
			return Message{}, err
		}
		return Message{Event: &ev}, nil
	default:
		return Message{}, fmt.Errorf("unknown type %q", w.Type)
	}
}

package httpapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/health"
	"github.com/presence/presence/internal/presence"
)

// MaxEventBody is the largest publish request body, in bytes. It bounds
// what is read; whether an event fits is decided on its frame, against
// presence.MaxEventFrame (20 KiB), which is also the limit of a post's
// channel.
const MaxEventBody = 16 << 10

// publishBody is the request body. Data stays raw: the frame carries it as
// sent, compacted but never re-encoded or HTML-escaped.
type publishBody struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
}

// publishReply is the 202 answer. Servers is how many app servers took the
// event (those with a tab on the post); 0 is not an error, since nobody may
// be reading the post.
type publishReply struct {
	Post    presence.PostID `json:"post"`
	Name    string          `json:"name"`
	Servers int             `json:"servers"`
}

// publish serves POST /v1/posts/{post}/events. The checks run in an order
// that tells a caller nothing it may not know: publishing on or off, then
// the key, then the request itself.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	if len(s.keys) == 0 {
		s.reject(w, presence.Errorf(presence.CodeNotFound, "publishing is off: set PRESENCE_PUBLISH_KEYS to turn on POST /v1/posts/{post}/events"))
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="presence"`)
		s.reject(w, presence.Errorf(presence.CodeUnauthorized, "send the publish key as Authorization: Bearer <key>"))
		return
	}
	if !s.keyAccepted(strings.TrimSpace(token)) {
		s.reject(w, presence.Errorf(presence.CodeForbidden, "the publish key is not accepted"))
		return
	}
	post, err := presence.ParsePostID(chi.URLParam(r, "post"))
	if err != nil {
		s.reject(w, err)
		return
	}
	// Parsed rather than compared, so parameters such as charset=utf-8 pass.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.reject(w, presence.Errorf(presence.CodeUnsupported, "send the event as Content-Type: application/json"))
		return
	}
	// A declared length over the limit is refused before a byte is read;
	// MaxBytesReader catches chunked bodies and lengths that lie.
	if r.ContentLength > MaxEventBody {
		s.reject(w, presence.Errorf(presence.CodeTooLarge, "the body is %d bytes, at most %d allowed", r.ContentLength, MaxEventBody))
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxEventBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		s.reject(w, presence.Errorf(presence.CodeTooLarge, "the body is over %d bytes", MaxEventBody))
		return
	case err != nil:
		s.reject(w, presence.Errorf(presence.CodeBadRequest, "cannot read the body: %v", err))
		return
	}
	ev, err := parseEvent(post, raw)
	if err != nil {
		s.reject(w, err)
		return
	}
	// The limit that matters is the frame's: what is accepted is delivered.
	if n := len(ev.Frame()); n > presence.MaxEventFrame {
		s.reject(w, presence.Errorf(presence.CodeTooLarge, "the event frame would be %d bytes, at most %d allowed", n, presence.MaxEventFrame))
		return
	}
	n, err := s.pub.Publish(r.Context(), ev)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	// 202: the event is handed on, not delivered. Like Redis pub/sub it is
	// fire-and-forget, and a tab not connected now never receives it.
	s.published.Inc()
	health.WriteJSON(w, http.StatusAccepted, publishReply{Post: post, Name: ev.Name, Servers: n})
}

// parseEvent reads {"name":..., "data":...} strictly: an unknown field is
// more likely a typo than an extension, and the caller should hear of it.
func parseEvent(post presence.PostID, raw []byte) (presence.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var in publishBody
	if err := dec.Decode(&in); err != nil {
		msg := err.Error()
		if strings.HasPrefix(msg, "json: unknown field") {
			return presence.Event{}, presence.Errorf(presence.CodeBadRequest, `unknown field %s; the body is {"name":"comment","data":<any JSON>}`, strings.TrimPrefix(msg, "json: unknown field "))
		}
		return presence.Event{}, presence.Errorf(presence.CodeBadRequest, `the body must be {"name":"comment","data":<any JSON>}: %s`, describeJSONError(err))
	}
	// Decode stops after one value; without this check, anything after the
	// object would be dropped without the caller knowing.
	if dec.More() {
		return presence.Event{}, presence.Errorf(presence.CodeBadRequest, "the body holds more than one JSON value")
	}
	return presence.NewEvent(post, in.Name, in.Data)
}

// keyAccepted compares the token with every key in constant time: hashing
// first makes the lengths equal, and no key ends the loop early.
func (s *Server) keyAccepted(token string) bool {
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for _, k := range s.keys {
		ok |= subtle.ConstantTimeCompare(sum[:], k[:])
	}
	return ok == 1
}

// logPublishConfig says at start-up whether publishing is on and with how
// many keys, never the keys themselves.
func (s *Server) logPublishConfig() {
	if len(s.keys) == 0 {
		s.log.Info("publishing is off: no PRESENCE_PUBLISH_KEYS")
		return
	}
	s.log.Info("publishing is on", zap.Int("keys", len(s.keys)))
}

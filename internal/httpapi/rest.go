package httpapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/health"
	"github.com/presence/presence/internal/origin"
	"github.com/presence/presence/internal/presence"
)

// MaxBatch is how many posts one GET /v1/viewers may ask for. It is also the
// limit of one watch or unwatch frame (parsePosts).
const MaxBatch = 100

type postBody struct {
	Post    presence.PostID `json:"post"`
	Viewers int64           `json:"viewers"`
	Views   int64           `json:"views"`
	Reading int64           `json:"reading"`
	People  int64           `json:"people"`
}

// getPost serves GET /v1/posts/{post}: viewers and views of one post.
func (s *Server) getPost(w http.ResponseWriter, r *http.Request) {
	// The id is checked before its token, so a malformed id is a 400 about
	// the id, on REST as on the WebSocket.
	post, err := presence.ParsePostID(chi.URLParam(r, "post"))
	if err != nil {
		s.reject(w, err)
		return
	}
	if err := s.cfg.Signer.Check(post, r.URL.Query().Get("token"), time.Now()); err != nil {
		s.reject(w, err)
		return
	}
	counts, err := s.store.Counts(r.Context(), []presence.PostID{post})
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	health.WriteJSON(w, http.StatusOK, postBody{Post: post, Viewers: counts[0].Viewers, Views: counts[0].Views, Reading: counts[0].Reading, People: counts[0].People})
}

// getViewers serves GET /v1/viewers?post=1&post=2: the viewers of up to
// MaxBatch posts, read in one store call so they come from one instant.
func (s *Server) getViewers(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query()["post"]
	if len(raw) == 0 {
		s.reject(w, presence.Errorf(presence.CodeBadRequest, "name at least one post: /v1/viewers?post=1&post=2"))
		return
	}
	if len(raw) > MaxBatch {
		s.reject(w, presence.Errorf(presence.CodeTooMany, "%d posts asked for, at most %d per request", len(raw), MaxBatch))
		return
	}
	parsed := make([]presence.PostID, len(raw))
	for i, v := range raw {
		p, err := presence.ParsePostID(v)
		if err != nil {
			s.reject(w, err)
			return
		}
		parsed[i] = p
	}
	// Tokens pair with posts by position: ?post=1&token=a&post=2&token=b.
	if err := s.cfg.Signer.CheckAll(parsed, r.URL.Query()["token"], time.Now()); err != nil {
		s.reject(w, err)
		return
	}
	// Repeats are dropped only after the token check, which pairs tokens
	// with the posts as sent; the store is then asked for each post once.
	posts := make([]presence.PostID, 0, len(raw))
	seen := make(map[presence.PostID]bool, len(raw))
	for _, p := range parsed {
		if !seen[p] {
			seen[p] = true
			posts = append(posts, p)
		}
	}
	counts, err := s.store.Counts(r.Context(), posts)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	out := make(map[presence.PostID]int64, len(counts))
	for _, c := range counts {
		out[c.Post] = c.Viewers
	}
	health.WriteJSON(w, http.StatusOK, map[string]any{"counts": out})
}

// reject answers a client's mistake and counts it by code in
// presence_client_errors_total; it logs nothing, since bad input is the
// client's to fix and could otherwise fill the log.
func (s *Server) reject(w http.ResponseWriter, err error) {
	s.rejected.WithLabelValues(presence.ErrorCode(err)).Inc()
	writeError(w, err)
}

// storeError logs a store failure once, here at the edge, and answers with
// a message that does not leak internals.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away; nobody reads an answer
	}
	// During an outage every request fails the same way: one line per 10 s,
	// with the number held back.
	if ok, skipped := s.storeWarn.Allow(time.Now()); ok {
		s.log.Warn("store call failed", zap.String("path", r.URL.Path), zap.Error(err), zap.Int("similar_since_last", skipped))
	}
	writeError(w, err)
}

// cors lets allowed origins read the REST API from a browser. The API is
// read-only GETs without credentials, so only Allow-Origin is needed.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o := r.Header.Get("Origin"); o != "" {
			w.Header().Add("Vary", "Origin")
			if origin.Allowed(s.origins, o, r.Host) {
				w.Header().Set("Access-Control-Allow-Origin", o)
			}
		}
		next.ServeHTTP(w, r)
	})
}

package presence

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// MaxTokenLen is the longest post token accepted: up to 12 digits of expiry,
// a dot and 64 hex digits of signature.
const MaxTokenLen = 12 + 1 + 2*sha256.Size

// Signer checks the post tokens a site issues, so that only posts the site
// rendered can be viewed, watched or counted: without it any client can name
// any well-formed id and leave a counter behind for each.
//
// A token is "<expires>.<signature>": expires is a Unix time in seconds and
// signature the hex HMAC-SHA256 of "<post>.<expires>" under the secret. PHP
// makes one with hash_hmac('sha256', $post . '.' . $expires, $secret). The
// expiry keeps a token from being replayed forever; the message needs no
// escaping because post ids hold no dot.
type Signer struct {
	keys [][]byte
}

// NewSigner returns a Signer that accepts tokens signed with any of the
// secrets (several allow rotation), or nil when there are none: a nil
// Signer accepts every post.
func NewSigner(secrets []string) *Signer {
	if len(secrets) == 0 {
		return nil
	}
	s := &Signer{}
	for _, k := range secrets {
		s.keys = append(s.keys, []byte(k))
	}
	return s
}

// Token returns a token for post, valid until expires, signed with the first
// secret. The server never needs one; tests and tools do.
func (s *Signer) Token(post PostID, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + hex.EncodeToString(sign(s.keys[0], post, exp))
}

func sign(key []byte, post PostID, exp string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(post))
	m.Write([]byte{'.'})
	m.Write([]byte(exp))
	return m.Sum(nil)
}

// Check returns nil when token is a valid token of post at now, and an
// *Error with CodeInvalidToken or CodeTokenExpired otherwise. A nil Signer
// accepts everything.
func (s *Signer) Check(post PostID, token string, now time.Time) error {
	if s == nil {
		return nil
	}
	if token == "" {
		return Errorf(CodeInvalidToken, "post %q needs a token: this server accepts only posts signed by the site (PRESENCE_POST_SECRET)", post)
	}
	exp, sig, ok := strings.Cut(token, ".")
	if !ok || len(token) > MaxTokenLen || exp == "" || len(sig) != 2*sha256.Size {
		return Errorf(CodeInvalidToken, "the token of post %q is not <expires>.<64 hex digits>", post)
	}
	expires, err := strconv.ParseInt(exp, 10, 64)
	mac, herr := hex.DecodeString(sig)
	if err != nil || expires < 0 || herr != nil {
		return Errorf(CodeInvalidToken, "the token of post %q is not <expires>.<64 hex digits>", post)
	}
	// Every key is tried, so the time taken says nothing of which matched.
	valid := 0
	for _, k := range s.keys {
		valid |= boolInt(hmac.Equal(mac, sign(k, post, exp)))
	}
	if valid == 0 {
		return Errorf(CodeInvalidToken, "the token of post %q is not signed with this server's secret, or was made for another post", post)
	}
	if now.Unix() >= expires {
		return Errorf(CodeTokenExpired, "the token of post %q expired at %s; reload the page for a new one", post, time.Unix(expires, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckAll checks one token per post, in order, as view and watch frames and
// the REST counts pair them: tokens is empty (every post then lacks its
// token) or as long as posts. A nil Signer accepts everything, however many
// tokens.
func (s *Signer) CheckAll(posts []PostID, tokens []string, now time.Time) error {
	if s == nil {
		return nil
	}
	if len(tokens) > 0 && len(tokens) != len(posts) {
		return Errorf(CodeBadRequest, "%d posts and %d tokens; send one token per post, in the same order", len(posts), len(tokens))
	}
	for i, p := range posts {
		tok := ""
		if i < len(tokens) {
			tok = tokens[i]
		}
		if err := s.Check(p, tok, now); err != nil {
			return err
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

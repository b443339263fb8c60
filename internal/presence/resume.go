package presence

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync/atomic"
)

// resumeMACLen is how many bytes of the HMAC a resume token keeps: 128 bits,
// as many as a session id has.
const resumeMACLen = 16

// MaxResumeTokenLen is the longest resume token accepted: a session id, a dot
// and the signature, both base64url without padding.
const MaxResumeTokenLen = 22 + 1 + 22

// Resumer issues and checks resume tokens. The hello frame gives a tab one
// for its session; a tab that reconnects presents it, and the app server
// that accepts it, this one or another sharing the key, continues the same
// session instead of making a new one: no leave, no second view.
//
// A token is "<session id>.<signature>", the signature being the first 16
// bytes of HMAC-SHA256 of "resume.<session id>" under the key, base64url.
// It holds no expiry: it is good while its session lives, up to one TTL after
// the connection ended (the store prunes it then), and a token of a session
// already pruned gives the same id back registered anew, which is what a
// fresh session would be. Until SetKey, no tokens are issued and none is
// accepted.
type Resumer struct {
	key atomic.Pointer[[]byte]
}

// NewResumer returns a Resumer with key, or with none when key is empty.
func NewResumer(key []byte) *Resumer {
	r := &Resumer{}
	if len(key) > 0 {
		r.SetKey(key)
	}
	return r
}

// RandomKey returns 32 random bytes, a key for a Resumer that only this
// process uses.
func RandomKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails since Go 1.24
	return k
}

// SetKey sets the key tokens are signed with; tokens of an earlier key stop
// being accepted.
func (r *Resumer) SetKey(key []byte) {
	k := append([]byte(nil), key...)
	r.key.Store(&k)
}

// Ready says whether a key is set.
func (r *Resumer) Ready() bool { return r != nil && r.key.Load() != nil }

func (r *Resumer) mac(key []byte, sid string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("resume."))
	m.Write([]byte(sid))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:resumeMACLen])
}

// Token returns the resume token of sid, or "" while no key is set.
func (r *Resumer) Token(sid SessionID) string {
	if r == nil {
		return ""
	}
	k := r.key.Load()
	if k == nil {
		return ""
	}
	return string(sid) + "." + r.mac(*k, string(sid))
}

// Check returns the session a token resumes, and false for anything that is
// not a token of this key: a client gets a fresh session then, never an
// error, as a token from before a key change is no fault of the tab's.
func (r *Resumer) Check(token string) (SessionID, bool) {
	if r == nil || token == "" || len(token) > MaxResumeTokenLen {
		return "", false
	}
	k := r.key.Load()
	if k == nil {
		return "", false
	}
	sid, sig, ok := strings.Cut(token, ".")
	if !ok || len(sid) != 22 || !hmac.Equal([]byte(sig), []byte(r.mac(*k, sid))) {
		return "", false
	}
	return SessionID(sid), true
}

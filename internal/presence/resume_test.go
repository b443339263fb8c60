package presence

import (
	"strings"
	"testing"
)

func TestResumer(t *testing.T) {
	r := NewResumer([]byte("a key of the test"))
	sid := NewSessionID()
	tok := r.Token(sid)
	if got, ok := r.Check(tok); !ok || got != sid {
		t.Fatalf("Check(Token(%s)) = %q, %v; want the session", sid, got, ok)
	}
	if len(tok) > MaxResumeTokenLen {
		t.Errorf("token %q longer than MaxResumeTokenLen %d", tok, MaxResumeTokenLen)
	}
	other := NewSessionID()
	bad := []string{
		"",
		string(sid),                    // no signature
		string(other) + tok[len(sid):], // another session's id with this signature
		tok[:len(tok)-1] + "A",         // a signature changed
		tok + "A",                      // too long a signature
		strings.Repeat("a", 200),       // too long
		NewResumer([]byte("another key")).Token(sid), // another deployment's
	}
	if bad[3] == tok {
		bad[3] = tok[:len(tok)-1] + "B"
	}
	for _, b := range bad {
		if got, ok := r.Check(b); ok {
			t.Errorf("Check(%q) = %q, true; want false", b, got)
		}
	}
	// A new key: tokens of the old one are refused, new ones work.
	r.SetKey([]byte("the next key"))
	if _, ok := r.Check(tok); ok {
		t.Error("a token of the old key is still accepted after SetKey")
	}
	if got, ok := r.Check(r.Token(sid)); !ok || got != sid {
		t.Errorf("a token of the new key: %q, %v", got, ok)
	}
	// No key: no tokens, none accepted.
	var none Resumer
	if none.Token(sid) != "" || none.Ready() {
		t.Error("a Resumer without a key issues tokens")
	}
	if _, ok := none.Check(tok); ok {
		t.Error("a Resumer without a key accepts a token")
	}
}

package presence_test

import (
	"strings"
	"testing"
	"time"

	"github.com/presence/presence/internal/presence"
)

const secret = "0123456789abcdef0123456789abcdef"

// phpToken is what README's PHP makes for post 13 expiring at 1767225600:
// php -r 'echo hash_hmac("sha256", "13.1767225600", "0123456789abcdef0123456789abcdef");'
const phpToken = "1767225600.6f8baa973395ee62043c99ed56c4126a6c98e100d802865a1c390a178bed72ab"

func TestSigner_MatchesPHP(t *testing.T) {
	s := presence.NewSigner([]string{secret})
	exp := time.Unix(1767225600, 0)
	if got := s.Token("13", exp); got != phpToken {
		t.Errorf("Token = %s, want PHP's %s", got, phpToken)
	}
	if err := s.Check("13", phpToken, exp.Add(-time.Second)); err != nil {
		t.Errorf("Check of PHP's token = %v, want nil", err)
	}
	if err := s.Check("13", strings.ToUpper(phpToken), exp.Add(-time.Second)); err != nil {
		t.Errorf("Check of PHP's token in upper case = %v, want nil", err)
	}
}

func TestSigner_Refuses(t *testing.T) {
	s := presence.NewSigner([]string{"old-secret-old-secret-old-secret", secret})
	now := time.Unix(1767225600-60, 0)
	other := presence.NewSigner([]string{"another-secret-another-secret-00"})
	for _, tc := range []struct {
		name, post, token, code string
	}{
		{"missing", "13", "", presence.CodeInvalidToken},
		{"no dot", "13", strings.Replace(phpToken, ".", "", 1), presence.CodeInvalidToken},
		{"short signature", "13", phpToken[:len(phpToken)-2], presence.CodeInvalidToken},
		{"not hex", "13", phpToken[:len(phpToken)-1] + "g", presence.CodeInvalidToken},
		{"negative expiry", "13", "-1" + phpToken[10:], presence.CodeInvalidToken},
		{"expiry not a number", "13", "x767225600" + phpToken[10:], presence.CodeInvalidToken},
		{"too long", "13", "0000000" + phpToken, presence.CodeInvalidToken},
		{"another post", "14", phpToken, presence.CodeInvalidToken},
		{"another expiry", "13", "1767225601" + phpToken[10:], presence.CodeInvalidToken},
		{"another secret", "13", other.Token("13", time.Unix(1767225600, 0)), presence.CodeInvalidToken},
		{"expired", "13", s.Token("13", now), presence.CodeTokenExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Check(presence.PostID(tc.post), tc.token, now)
			if got := presence.ErrorCode(err); err == nil || got != tc.code {
				t.Fatalf("Check(%s, %q) = %v, want code %s", tc.post, tc.token, err, tc.code)
			}
			if msg := presence.ErrorMessage(err); !strings.Contains(msg, tc.post) {
				t.Errorf("message %q does not name the post", msg)
			}
		})
	}
	// Any of the secrets is accepted: rotation.
	if err := s.Check("13", phpToken, now); err != nil {
		t.Errorf("token of the second secret = %v, want nil", err)
	}
}

func TestSigner_NilAcceptsAll(t *testing.T) {
	var s *presence.Signer = presence.NewSigner(nil)
	if s != nil {
		t.Fatal("NewSigner(nil) is not nil")
	}
	if err := s.Check("13", "", time.Now()); err != nil {
		t.Errorf("nil signer refused a post: %v", err)
	}
}

func TestSigner_CheckAll(t *testing.T) {
	s := presence.NewSigner([]string{secret})
	now := time.Unix(1767225600-60, 0)
	posts := []presence.PostID{"1", "2"}
	ok := []string{s.Token("1", now.Add(time.Hour)), s.Token("2", now.Add(time.Hour))}
	for _, tc := range []struct {
		name   string
		tokens []string
		code   string
	}{
		{"one per post", ok, ""},
		{"none", nil, presence.CodeInvalidToken},
		{"one short", ok[:1], presence.CodeBadRequest},
		{"one too many", append(ok[:2:2], ok[0]), presence.CodeBadRequest},
		{"swapped", []string{ok[1], ok[0]}, presence.CodeInvalidToken},
	} {
		err := s.CheckAll(posts, tc.tokens, now)
		if got := presence.ErrorCode(err); (err == nil) != (tc.code == "") || err != nil && got != tc.code {
			t.Errorf("%s: CheckAll = %v, want code %q", tc.name, err, tc.code)
		}
	}
	var none *presence.Signer
	if err := none.CheckAll(posts, []string{"x"}, now); err != nil {
		t.Errorf("nil signer with a short tokens list = %v, want nil", err)
	}
}

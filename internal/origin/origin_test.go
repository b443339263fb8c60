package origin

import (
	"net/url"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		allows  []string
		refuses []string
	}{
		{"example.com", []string{"http://example.com", "https://example.com", "http://example.com:8000", "https://EXAMPLE.com"},
			[]string{"https://www.example.com", "https://example.com.evil.net", "https://evilexample.com"}},
		{"*.example.com", []string{"https://www.example.com", "https://a.b.example.com:8443"}, []string{"https://example.com", "https://www.example.net"}},
		{"https://example.com", []string{"https://example.com", "https://example.com:8443"}, []string{"http://example.com"}},
		{"localhost:8080", []string{"http://localhost:8080"}, []string{"http://localhost", "http://localhost:8081"}},
		{"localhost:*", []string{"http://localhost", "http://localhost:5173"}, []string{"http://127.0.0.1:5173"}},
		{"127.0.0.1", []string{"http://127.0.0.1:18100", "http://127.0.0.1"}, []string{"http://127.0.0.2:18100"}},
		{"[::1]", []string{"http://[::1]:8080", "http://[::1]", "http://[0:0::1]:80"}, []string{"http://[::2]:8080", "http://localhost:8080"}},
		{"[::1]:8080", []string{"http://[::1]:8080"}, []string{"http://[::1]:8081", "http://[::1]"}},
		{"http://[::1]:*", []string{"http://[::1]:8080"}, []string{"https://[::1]:8080"}},
		{"::1", []string{"http://[::1]:8080"}, []string{"http://[::2]"}},
		{"www.example.co[mn]", []string{"https://www.example.com", "https://www.example.con"}, []string{"https://www.example.co"}},
		{"[a-z]*.example.com", []string{"https://www.example.com"}, []string{"https://1.example.com"}},
		{"*", []string{"https://anything.example", "http://[::1]:1"}, nil},
	} {
		p, err := Parse(tc.pattern)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.pattern, err)
			continue
		}
		for _, o := range tc.allows {
			if u, _ := url.Parse(o); !p.Match(u) {
				t.Errorf("%q does not allow %s", tc.pattern, o)
			}
		}
		for _, o := range tc.refuses {
			if u, _ := url.Parse(o); p.Match(u) {
				t.Errorf("%q allows %s", tc.pattern, o)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{"https://example.com/blog/", `"https://example.com/blog/" is a URL, not an origin: an origin has no path; write "https://example.com"`},
		{"127.0.0.1:18100/", `write "127.0.0.1:18100"`},
		{"https://", `"https://" is not an origin`},
		{"user@example.com", `is not an origin`},
		{"example.com:", `is not an origin`},
		{"[bad", "bad pattern"},
		{"[::1]x", "after an IPv6 address in brackets"},
	} {
		if _, err := Parse(tc.pattern); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q): err=%v, want one saying %q", tc.pattern, err, tc.want)
		}
	}
}

func TestAllowed(t *testing.T) {
	ps, err := ParseAll([]string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		origin, host string
		want         bool
	}{
		{"https://presence.example.net", "presence.example.net", true}, // same host
		{"https://example.com:8000", "presence.example.net", true},
		{"https://evil.example", "presence.example.net", false},
		{"null", "presence.example.net", false},
		{"", "presence.example.net", false},
	} {
		if got := Allowed(ps, tc.origin, tc.host); got != tc.want {
			t.Errorf("Allowed(%q, host %q) = %v, want %v", tc.origin, tc.host, got, tc.want)
		}
	}
	all, _ := ParseAll([]string{"*"})
	if !Allowed(all, "null", "x") {
		t.Error(`"*" does not allow an origin of no site`)
	}
}

func TestRefusal(t *testing.T) {
	for _, tc := range []struct{ origin, want string }{
		{"http://localhost:5173", `the origin "http://localhost:5173" is not allowed to connect; to allow it, add "localhost" (any port) or "http://localhost:5173" to PRESENCE_ALLOWED_ORIGINS`},
		{"http://[::1]:8080", `add "[::1]" (any port) or "http://[::1]:8080"`},
		{"null", `the origin "null" is not allowed to connect: a page with no site of its own`},
		{strings.Repeat("\x80", 1<<20), "is no origin a pattern"},
		{"https://" + strings.Repeat("a", 300), "is no origin a pattern"},
	} {
		got := Refusal(tc.origin)
		if !strings.Contains(got, tc.want) || len(got) > 2*maxShown+200 {
			t.Errorf("Refusal(%.40q) = %.300q, want it to say %q, and short", tc.origin, got, tc.want)
		}
	}
	// Every suggestion is a pattern that allows the page.
	for _, o := range []string{"http://localhost:5173", "http://[::1]:8080", "https://Blog.Example.com"} {
		msg := Refusal(o)
		u, _ := url.Parse(o)
		for _, q := range strings.Split(msg, `"`)[3:6:6] {
			if q == " (any port) or " {
				continue
			}
			p, err := Parse(q)
			if err != nil || !p.Match(u) {
				t.Errorf("Refusal(%s) suggests %q, which does not allow it (%v)", o, q, err)
			}
		}
	}
}

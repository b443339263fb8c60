// Package origin reads the patterns of PRESENCE_ALLOWED_ORIGINS and decides
// which pages they allow. Config checks them with Parse at start-up; the
// WebSocket handshake and CORS both ask Allowed, so one setting means one
// thing everywhere.
package origin

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"
)

// A Pattern is [scheme://]host[:port], each part a path.Match glob
// compared without regard to case. A pattern without a port allows every
// port of its host, since a site and its development server differ only
// there; a host in brackets that is an IPv6 address is compared as one.
type Pattern struct {
	all     bool   // "*": every origin
	scheme  string // glob; empty: any scheme
	host    string // glob, or an IPv6 address when ip6
	ip6     net.IP // the host as an address, for an IPv6 literal
	port    string // glob, when hasPort
	hasPort bool
}

// Parse reads one pattern. The errors say what to write instead: a page's
// URL pasted whole, with a path, is the usual mistake.
func Parse(p string) (Pattern, error) {
	if p == "*" {
		return Pattern{all: true}, nil
	}
	lower := strings.ToLower(strings.TrimSpace(p))
	scheme, host, ok := strings.Cut(lower, "://")
	if !ok {
		scheme, host = "", lower
	}
	if i := strings.IndexAny(host, "/?#"); i >= 0 {
		want := lower[:len(lower)-len(host)+i]
		return Pattern{}, fmt.Errorf("%q is a URL, not an origin: an origin has no path; write %q (a host allows every port of it, host:port only that port)", p, want)
	}
	if host == "" || strings.Contains(host, "@") {
		return Pattern{}, fmt.Errorf("%q is not an origin: write [scheme://]host[:port], e.g. example.com (every port), https://example.com or localhost:8080", p)
	}
	pt := Pattern{scheme: scheme}
	switch {
	case strings.HasPrefix(host, "[") && strings.Contains(host, "]") && isIP6(host[1:strings.Index(host, "]")]):
		end := strings.Index(host, "]")
		pt.host, pt.ip6 = host[1:end], net.ParseIP(host[1:end])
		switch rest := host[end+1:]; {
		case rest == "":
		case strings.HasPrefix(rest, ":"):
			pt.port, pt.hasPort = rest[1:], true
		default:
			return Pattern{}, fmt.Errorf("%q is not an origin: after an IPv6 address in brackets comes nothing or :port", p)
		}
	case isIP6(host):
		// An IPv6 address without brackets has no room for a port.
		pt.host, pt.ip6 = host, net.ParseIP(host)
	default:
		pt.host = host
		if i := strings.LastIndex(host, ":"); i >= 0 {
			pt.host, pt.port, pt.hasPort = host[:i], host[i+1:], true
		}
	}
	for _, part := range []string{pt.scheme, pt.host, pt.port} {
		if _, err := path.Match(part, ""); err != nil {
			return Pattern{}, fmt.Errorf("bad pattern %q: %w", p, err)
		}
	}
	if pt.host == "" || (pt.hasPort && pt.port == "") {
		return Pattern{}, fmt.Errorf("%q is not an origin: write [scheme://]host[:port], e.g. example.com (every port), https://example.com or localhost:8080", p)
	}
	return pt, nil
}

func isIP6(s string) bool { return strings.Contains(s, ":") && net.ParseIP(s) != nil }

// Match reports whether the page origin u is one the pattern allows.
func (p Pattern) Match(u *url.URL) bool {
	if p.all {
		return true
	}
	if p.scheme != "" {
		if ok, _ := path.Match(p.scheme, strings.ToLower(u.Scheme)); !ok {
			return false
		}
	}
	host := strings.ToLower(u.Hostname())
	if p.ip6 != nil {
		if !p.ip6.Equal(net.ParseIP(host)) {
			return false
		}
	} else if ok, _ := path.Match(p.host, host); !ok {
		return false
	}
	if p.hasPort {
		// An origin on its scheme's default port has none: "localhost:*"
		// allows http://localhost too.
		ok, _ := path.Match(p.port, u.Port())
		return ok
	}
	return true
}

// ParseAll reads every pattern, for a server built from settings that
// config.Validate has checked: it fails only on what Validate refuses.
func ParseAll(ps []string) ([]Pattern, error) {
	out := make([]Pattern, 0, len(ps))
	var errs []error
	for _, p := range ps {
		pt, err := Parse(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, pt)
	}
	return out, errors.Join(errs...)
}

// Allowed reports whether a page of origin (the Origin header) may use the
// server reached as host (the Host header). A page of the server's own host
// always may; an origin that names no host (the "null" of a sandboxed frame
// or a local file) only where a pattern is "*".
func Allowed(patterns []Pattern, origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		for _, p := range patterns {
			if p.all {
				return true
			}
		}
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, p := range patterns {
		if p.Match(u) {
			return true
		}
	}
	return false
}

// maxShown is the longest origin a refusal repeats. A browser's Origin is
// a scheme and a host name; anything longer, or not printable ASCII, is no
// page's, and echoing it would let a request multiply its own size in the
// answer and the log.
const maxShown = 255

// Plain returns origin when it is short printable ASCII, fit to repeat in a
// message or a log line, and "" otherwise.
func Plain(origin string) string {
	if len(origin) > maxShown {
		return ""
	}
	for i := 0; i < len(origin); i++ {
		if c := origin[i]; c < 0x21 || c > 0x7e {
			return ""
		}
	}
	return origin
}

// Refusal is the message for a page whose origin is refused: the two
// patterns that would allow it, the host (every port) and the exact origin.
func Refusal(origin string) string {
	plain := Plain(origin)
	if plain == "" {
		return "the page's origin is not allowed to connect, and its Origin header is no origin a pattern of PRESENCE_ALLOWED_ORIGINS could name"
	}
	u, err := url.Parse(plain)
	if err != nil || u.Host == "" {
		return fmt.Sprintf("the origin %q is not allowed to connect: a page with no site of its own (a local file, a sandboxed frame) is allowed only by the pattern * in PRESENCE_ALLOWED_ORIGINS", plain)
	}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("the origin %q is not allowed to connect; to allow it, add %q (any port) or %q to PRESENCE_ALLOWED_ORIGINS", plain, host, u.Scheme+"://"+u.Host)
}

// Package widget serves the embeddable counter script, /widget.js, and the
// demo page a new user sees at /.
package widget

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"html/template"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

//go:embed widget.js
var source []byte

// script is widget.js as served: without its whole-line comments, which are
// there for its readers while every browser of every page downloads the
// file (they were a quarter of it gzipped). No line of the script begins a
// string or a regular expression with //, and comments after code stay.
var script = func() []byte {
	var out []byte
	for line := range bytes.Lines(source) {
		if bytes.HasPrefix(bytes.TrimLeft(line, " \t"), []byte("//")) {
			continue
		}
		out = append(out, line...)
	}
	return out
}()

//go:embed demo.html
var demoHTML string

var demo = template.Must(template.New("demo").Parse(demoHTML))

// etag is fixed per build: the script is embedded. The gzipped script is
// another representation and gets its own, so no cache mixes them up.
var etag = func() string {
	sum := sha256.Sum256(script)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

var etagGzip = strings.TrimSuffix(etag, `"`) + `-gzip"`

// scriptGzip is widget.js compressed once, at start-up: every page of a site
// loads it, and compressing per request would spend CPU on every one.
var scriptGzip = func() []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(script)
	_ = zw.Close()
	return buf.Bytes()
}()

// Script serves widget.js, gzipped to clients that take it. Browsers
// revalidate it every five minutes with its ETag, so a new release reaches
// pages quickly at the cost of a 304.
func Script(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", "public, max-age=300")
	h.Add("Vary", "Accept-Encoding")
	body, tag := script, etag
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		body, tag = scriptGzip, etagGzip
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("ETag", tag)
	// A request of many ranges costs the server a part header for each and
	// can ask for the same bytes again and again (4,000 one-byte ranges
	// made 606 KB of multipart); nobody needs more than one range of a small
	// script, so such a request gets the whole of it.
	if strings.Contains(r.Header.Get("Range"), ",") {
		r.Header.Del("Range")
	}
	// Any page may load the script; what it may connect to is decided by
	// the WebSocket origin check.
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("X-Content-Type-Options", "nosniff")
	// A zero modtime leaves Last-Modified out: replicas of one release must
	// agree, and the ETag already names the content.
	http.ServeContent(w, r, "widget.js", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reads Accept-Encoding: gzip, or failing that *, with a
// q-value above zero; an explicit gzip;q=0 wins over *.
func acceptsGzip(values []string) bool {
	gzip, star := -1.0, -1.0
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			q := 1.0
			for _, param := range strings.Split(params, ";") {
				if k, val, ok := strings.Cut(strings.TrimSpace(param), "="); ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						q = f
					}
				}
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "gzip", "x-gzip":
				gzip = q
			case "*":
				star = q
			}
		}
	}
	if gzip >= 0 {
		return gzip > 0
	}
	return star > 0
}

type post struct {
	ID, Title string
}

var archive = []post{
	{"hello-world", "Hello, world"},
	{"13", "Post 13: live counters in WordPress"},
	{"release-notes", "Release notes"},
	{"faq", "Frequently asked questions"},
	{"contact", "Contact"},
}

var postID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Demo serves the demo page: a sample post (?post=ID, default hello-world)
// with its live counter, an archive of posts with theirs, and the embed
// snippet with this server's own URL.
func Demo(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	p := r.URL.Query().Get("post")
	if !postID.MatchString(p) {
		p = "hello-world"
	}
	title := "Post " + p
	for _, a := range archive {
		if a.ID == p {
			title = a.Title
		}
	}
	var buf bytes.Buffer
	err := demo.Execute(&buf, map[string]any{"Post": p, "Title": title, "Archive": archive, "Base": baseURL(r)})
	if err != nil {
		http.Error(w, "demo page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// baseURL is how the browser reached this server, so the snippet is right
// behind a TLS-terminating proxy too.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

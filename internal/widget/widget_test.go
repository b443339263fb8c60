package widget

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func serve(h http.HandlerFunc, target string, hdr http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h(rec, req)
	return rec
}

func TestScript_CachingHeaders(t *testing.T) {
	rec := serve(Script, "/widget.js", nil)
	if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), script) {
		t.Fatalf("GET /widget.js = %d with %d bytes, want 200 and the script", rec.Code, rec.Body.Len())
	}
	h := rec.Header()
	if h.Get("ETag") == "" || h.Get("Cache-Control") != "public, max-age=300" || !strings.HasPrefix(h.Get("Content-Type"), "text/javascript") {
		t.Errorf("headers %v, want an ETag, Cache-Control public, max-age=300 and text/javascript", h)
	}
	rec = serve(Script, "/widget.js", http.Header{"If-None-Match": {h.Get("ETag")}})
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Errorf("revalidation with the ETag = %d with %d bytes, want 304 and no body", rec.Code, rec.Body.Len())
	}
	rec = serve(Script, "/widget.js", http.Header{"If-None-Match": {`"old"`}})
	if rec.Code != 200 {
		t.Errorf("revalidation with another ETag = %d, want 200", rec.Code)
	}
}

// TestScript_SizeInREADME keeps README's figure true and the script small.
func TestScript_SizeInREADME(t *testing.T) {
	// What the server sends, compressed as README says.
	size := len(scriptGzip)
	if size > 3*1024 {
		t.Errorf("widget.js is %d bytes gzipped, over the 3 KB budget", size)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`widget\.js is ([0-9,]+) bytes gzipped`).FindSubmatch(readme)
	if m == nil {
		t.Fatalf("README does not state widget.js's gzipped size as \"widget.js is N bytes gzipped\" (it is %d)", size)
	}
	if stated, _ := strconv.Atoi(strings.ReplaceAll(string(m[1]), ",", "")); stated != size {
		t.Errorf("README says widget.js is %d bytes gzipped; it is %d", stated, size)
	}
}

func TestDemo(t *testing.T) {
	rec := serve(Demo, "http://presence.example.com/?post=13", nil)
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, `data-presence-viewers="13"`) ||
		!strings.Contains(body, `src="/widget.js" data-post="13"`) ||
		!strings.Contains(body, `http://presence.example.com/widget.js`) {
		t.Errorf("demo page = %d, want post 13's counter and this server's URL in the snippet:\n%s", rec.Code, body)
	}
	// Behind a TLS proxy the snippet says https.
	rec = serve(Demo, "http://presence.example.com/", http.Header{"X-Forwarded-Proto": {"https"}})
	if !strings.Contains(rec.Body.String(), `https://presence.example.com/widget.js`) {
		t.Errorf("snippet behind a TLS proxy does not use https")
	}
	// A post id outside the charset never reaches the page.
	rec = serve(Demo, `/?post=%3Cscript%3Ealert(1)%3C/script%3E`, nil)
	if strings.Contains(rec.Body.String(), "<script>alert") || !strings.Contains(rec.Body.String(), `data-post="hello-world"`) {
		t.Errorf("a bad post id was not replaced by the default")
	}
	if rec := serve(Demo, "/nothing", nil); rec.Code != 404 {
		t.Errorf("GET /nothing = %d, want 404", rec.Code)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   bool
	}{
		{"", false},
		{"gzip", true},
		{"deflate, gzip;q=0.5", true},
		{"br, deflate", false},
		{"*", true},
		{"gzip;q=0, *", false},
		{"*;q=0", false},
		{"gzip;level=1;q=0", false},
		{"GZIP ; Q=0.001", true},
		{"identity;q=1, *;q=0", false},
	} {
		if got := acceptsGzip([]string{tc.header}); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

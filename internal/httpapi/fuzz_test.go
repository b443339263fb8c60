package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/presence/presence/internal/presence"
)

// The fuzz targets feed the parsers of everything a client or a publisher
// sends. scripts/test.sh runs each for a few seconds; docs/benchmarks.md
// records a long run. Seeds: the f.Add calls and testdata/fuzz.

func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"view","post":"13"}`,
		`{"type":"view","post":"13","token":"1767225600.6f8baa973395ee62043c99ed56c4126a6c98e100d802865a1c390a178bed72ab"}`,
		`{"type":"unview"}`,
		`{"type":"watch","posts":["1","2"],"tokens":["a","b"]}`,
		`{"type":"unwatch","posts":["1"]}`,
		`{"type":"watch","posts":["1"],"tokens":[]}`,
		`{"type":"view","post":13}`,
		`{"type":"view","post":"a\u0000b"}`,
		"{\"type\":\"view\",\"post\":\"caf\xe9\"}",
		`[1,2]`, `"x"`, `null`, `{}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := parseFrame(data)
		if err != nil {
			switch code := presence.ErrorCode(err); code {
			case presence.CodeBadRequest, presence.CodeInvalidPost, presence.CodeTooMany:
			default:
				t.Fatalf("error code %q for client input: %v", code, err)
			}
			// The message goes back in an error frame, which browsers
			// refuse unless it is valid UTF-8.
			if frame := presence.ErrorFrameOf(err); !utf8.Valid(frame) {
				t.Fatalf("error frame is not UTF-8: %q", frame)
			}
			return
		}
		switch fr.Type {
		case "view":
			if _, err := presence.ParsePostID(string(fr.Post)); err != nil {
				t.Fatalf("accepted view of %q: %v", fr.Post, err)
			}
		case "unview":
		case "watch", "unwatch":
			if len(fr.Posts) == 0 || len(fr.Posts) > MaxBatch {
				t.Fatalf("accepted %s of %d posts", fr.Type, len(fr.Posts))
			}
			for _, p := range fr.Posts {
				if _, err := presence.ParsePostID(string(p)); err != nil {
					t.Fatalf("accepted %s of %q: %v", fr.Type, p, err)
				}
			}
		default:
			t.Fatalf("accepted type %q", fr.Type)
		}
	})
}

func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		`{"name":"comment","data":{"author":"Ana","text":"Nice post!"}}`,
		`{"name":"x"}`,
		`{"name":"x","data":"<script>&amp;</script>"}`,
		`{"name":"x","data":"\u2028\u2029"}`,
		`{"name":"x","data":"\ud800"}`,
		"{\"name\":\"x\",\"data\":\"caf\xe9\"}",
		`{"name":"a b"}`,
		`{"name":"x","extra":1}`,
		`{"name":"x"} {"name":"y"}`,
		`{"name":"x","data":[1,2,{"a":null}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := parseEvent("13", body)
		if err != nil {
			if code := presence.ErrorCode(err); code != presence.CodeBadRequest {
				t.Fatalf("error code %q for a publish body: %v", code, err)
			}
			return
		}
		// What is accepted is delivered: a frame that browsers take, no
		// bigger than the body allows, with the data that was sent.
		frame := ev.Frame()
		if !utf8.Valid(frame) || !json.Valid(frame) {
			t.Fatalf("frame %q is not valid UTF-8 JSON", frame)
		}
		if len(body) <= MaxEventBody && len(frame) > presence.MaxEventFrame {
			t.Fatalf("a %d-byte body made a %d-byte frame", len(body), len(frame))
		}
		var got struct {
			Type, Post, Name string
			Data             json.RawMessage
		}
		if err := json.Unmarshal(frame, &got); err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, ev.Data); err != nil {
			t.Fatal(err)
		}
		if got.Type != "event" || got.Post != "13" || got.Name != ev.Name || !bytes.Equal(got.Data, want.Bytes()) {
			t.Fatalf("frame %q does not carry event %+v", frame, ev)
		}
	})
}

package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presence/presence/internal/presence"
	"github.com/presence/presence/internal/redisstore"
	"github.com/presence/presence/internal/redistest"
)

// jsonExamples returns every ```json block of a Markdown file, decoded.
func jsonExamples(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		var v map[string]any
		if err := json.Unmarshal([]byte(m[1]), &v); err != nil {
			t.Fatalf("%s: example %q is not a JSON object: %v", path, m[1], err)
		}
		out = append(out, v)
	}
	return out
}

func keys(m map[string]any) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ",")
}

// TestProtocolDoc_Examples replays every example of api/protocol.md: client
// frames are sent to a real server and must be accepted; server frames must
// have the fields the server really sends; the event published on a post's
// Redis channel must reach a client as the documented event frame.
func TestProtocolDoc_Examples(t *testing.T) {
	a := newApp(t, appOpts{})
	c := dial(t, a, nil)
	w := watcher(t, a, "13", 0)
	signedApp := newApp(t, signed(appOpts{memory: true}))
	// The examples' tokens, checked before they expire.
	docSigner := presence.NewSigner([]string{"0123456789abcdef0123456789abcdef"})
	docTime := time.Unix(1767225600-1, 0)

	examples := jsonExamples(t, "../../api/protocol.md")
	if len(examples) < 8 {
		t.Fatalf("found %d JSON examples in api/protocol.md, expected every frame type", len(examples))
	}
	seen := map[string]bool{}
	for _, ex := range examples {
		typ, _ := ex["type"].(string)
		raw, _ := json.Marshal(ex)
		switch {
		case typ == "view" || typ == "unview" || typ == "watch" || typ == "unwatch":
			seen["client "+typ] = true
			if tok, ok := ex["token"].(string); ok {
				seen["client view with token"] = true
				if err := docSigner.Check(presence.PostID(ex["post"].(string)), tok, docTime); err != nil {
					t.Errorf("documented token of %s: %v", raw, err)
				}
			}
			if toks, ok := ex["tokens"].([]any); ok {
				seen["client watch with tokens"] = true
				for i, p := range ex["posts"].([]any) {
					if err := docSigner.Check(presence.PostID(p.(string)), toks[i].(string), docTime); err != nil {
						t.Errorf("documented token of %s: %v", raw, err)
					}
				}
			}
			c.send(string(raw))
			// A watch of a sentinel post answers after the example was
			// handled; any error frame before it is the example's.
			c.send(`{"type":"watch","posts":["sentinel"]}`)
			c.waitFor("sentinel count", func(m map[string]any) bool {
				if m["type"] == "error" {
					t.Errorf("documented frame %s was refused: %v", raw, m)
				}
				return m["type"] == "count" && m["post"] == "sentinel"
			})
			c.send(`{"type":"unwatch","posts":["sentinel"]}`)
		case typ == "status":
			// Provoked for real: a server whose Redis goes away.
			seen["status"] = true
			rs := redistest.Start(t)
			sa := newApp(t, appOpts{rdb: rs.Client(t), check: 50 * time.Millisecond})
			sc := dial(t, sa, nil)
			rs.Kill()
			got := sc.waitFor("status", func(m map[string]any) bool { return m["type"] == "status" })
			if !reflect.DeepEqual(got, ex) {
				t.Errorf("documented status %s; the server sends %v", raw, got)
			}
		case typ == "hello":
			seen["hello"] = true
			if keys(ex) != keys(c.hello) {
				t.Errorf("documented hello has fields %s, server sends %s", keys(ex), keys(c.hello))
			}
		case typ == "count" && ex["seq"] == nil:
			seen["count"] = true
			c.send(`{"type":"watch","posts":["x1"]}`)
			got := c.waitCount("x1", 0)
			if keys(ex) != keys(got) {
				t.Errorf("documented count has fields %s, server sends %s", keys(ex), keys(got))
			}
		case typ == "count":
			seen["count message"] = true
			// The scripts publish exactly these fields.
			feed := a.rdb.Subscribe(context.Background(), redisstore.NewKeys(a.prefix).Channel("docs"))
			if _, err := feed.Receive(context.Background()); err != nil {
				t.Fatal(err)
			}
			v := dial(t, a, nil)
			v.send(`{"type":"view","post":"docs"}`)
			msg, err := feed.ReceiveMessage(context.Background())
			feed.Close()
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(msg.Payload), &got); err != nil || keys(got) != keys(ex) {
				t.Errorf("documented count message has fields %s, scripts publish %s (%v)", keys(ex), msg.Payload, err)
			}
		case typ == "error":
			// Each documented error is provoked on a fresh client by the
			// frames that cause it; the server must answer word for word.
			seen["error"] = true
			e := dial(t, a, nil)
			switch ex["code"] {
			case "bad_request":
				e.send(`{"type":"view"}`)
			case "invalid_post":
				e.send(`{"type":"view","post":"a b"}`)
			case "invalid_token":
				e = dial(t, signedApp, nil)
				e.send(`{"type":"view","post":"13"}`)
			case "token_expired":
				e = dial(t, signedApp, nil)
				e.send(`{"type":"view","post":"13","token":"` + testSigner.Token("13", time.Unix(1764547200, 0)) + `"}`)
			case "too_many":
				posts := make([]string, 110)
				for i := range posts {
					posts[i] = fmt.Sprintf("%q", fmt.Sprint("p", i))
				}
				e.send(`{"type":"watch","posts":[` + strings.Join(posts[:100], ",") + `]}`)
				e.send(`{"type":"watch","posts":[` + strings.Join(posts[100:], ",") + `]}`)
			default:
				t.Errorf("documented error code %v: this test does not know how to provoke it", ex["code"])
				continue
			}
			got := e.waitFor("error", func(m map[string]any) bool { return m["type"] == "error" })
			if !reflect.DeepEqual(got, ex) {
				t.Errorf("documented error %s; the server sends %v", raw, got)
			}
		case typ == "event":
			seen["event"] = true
			if ex["post"] != "13" {
				t.Errorf("event example for post %v; this test expects post 13", ex["post"])
				continue
			}
			if err := a.rdb.Publish(context.Background(), redisstore.NewKeys(a.prefix).Channel("13"), string(raw)).Err(); err != nil {
				t.Fatal(err)
			}
			got := w.waitFor("event", func(m map[string]any) bool { return m["type"] == "event" })
			gotRaw, _ := json.Marshal(got)
			if string(gotRaw) != string(raw) {
				t.Errorf("published %s, client received %s", raw, gotRaw)
			}
		default:
			t.Errorf("example %s has a type this test does not know", raw)
		}
	}
	for _, want := range []string{"client view", "client unview", "client watch", "client unwatch", "client view with token", "client watch with tokens", "hello", "count", "status", "error", "event", "count message"} {
		if !seen[want] {
			t.Errorf("api/protocol.md has no JSON example of %s", want)
		}
	}
}

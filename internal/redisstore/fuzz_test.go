package redisstore

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"go.uber.org/zap"
)

// FuzzBusParse feeds the parser of messages on post channels, which anything
// that can PUBLISH to Redis writes. scripts/test.sh runs it for a few
// seconds; docs/benchmarks.md records a long run.
func FuzzBusParse(f *testing.F) {
	for _, s := range []struct{ post, payload string }{
		{"13", `{"type":"count","post":"13","viewers":5,"views":120,"seq":4711}`},
		{"13", `{"type":"event","post":"13","name":"comment","data":{"id":7}}`},
		{"13", `{"type":"event","name":"x"}`},
		{"13", `{"type":"event","post":"14","name":"x"}`},
		{"13", `{"type":"count","post":"13","viewers":-1,"views":0}`},
		{"13", "{\"type\":\"event\",\"name\":\"x\",\"data\":\"caf\xe9\"}"},
		{"13", `{"type":"event","name":"x","data":"<>&\u2028"}`},
		{"a b", `{"type":"count","viewers":1,"views":1}`},
		{"13", `not json`},
	} {
		f.Add(s.post, s.payload)
	}
	b := NewBus(New(nil, Config{}, zap.NewNop()), BusConfig{})
	f.Fuzz(func(t *testing.T, post, payload string) {
		m, err := b.parse(b.keys.channelAt(0)+post, payload)
		if err != nil {
			return
		}
		switch {
		case m.Count != nil && m.Event == nil:
			if m.Count.Viewers < 0 || m.Count.Views < 0 || string(m.Count.Post) != post {
				t.Fatalf("accepted count %+v from channel of %q", *m.Count, post)
			}
		case m.Event != nil && m.Count == nil:
			// The frame goes to browsers as it is.
			frame := m.Event.Frame()
			if !utf8.Valid(frame) || !json.Valid(frame) {
				t.Fatalf("event frame %q is not valid UTF-8 JSON", frame)
			}
			if len(frame) > MaxMessage+len(post)+16 {
				t.Fatalf("a %d-byte message made a %d-byte frame", len(payload), len(frame))
			}
		default:
			t.Fatalf("parse returned %+v", m)
		}
	})
}

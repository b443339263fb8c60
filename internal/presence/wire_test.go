package presence

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestFrames pins every frame's bytes: the JSON api/protocol.md documents.
func TestFrames(t *testing.T) {
	ev, err := NewEvent("13", "comment", json.RawMessage(`{ "text": "<b>&</b>" }`))
	if err != nil {
		t.Fatal(err)
	}
	c := Count{Post: "13", Viewers: 5, Views: 120, Reading: 3, People: 4, Seq: 4711}
	for _, tc := range []struct{ got, want string }{
		{string(Hello("t3IfUFm_UObWYn5Af9mcgg", 90*time.Second, "")), `{"type":"hello","session":"t3IfUFm_UObWYn5Af9mcgg","ttl":90}`},
		{string(Hello("t3IfUFm_UObWYn5Af9mcgg", 90*time.Second, "t3IfUFm_UObWYn5Af9mcgg.sig")), `{"type":"hello","session":"t3IfUFm_UObWYn5Af9mcgg","ttl":90,"resume":"t3IfUFm_UObWYn5Af9mcgg.sig"}`},
		{string(c.Frame()), `{"type":"count","post":"13","viewers":5,"views":120,"reading":3,"people":4}`},
		{string(c.Message()), `{"type":"count","post":"13","viewers":5,"views":120,"reading":3,"people":4,"seq":4711}`},
		// Compacted, not HTML-escaped: the size limit holds for these bytes.
		{string(ev.Frame()), `{"type":"event","post":"13","name":"comment","data":{"text":"<b>&</b>"}}`},
		{string(ErrorFrameOf(Errorf(CodeInvalidPost, "post id is empty"))), `{"type":"error","code":"invalid_post","message":"post id is empty"}`},
		{string(Status(false)), `{"type":"status","store":"down"}`},
		{string(Status(true)), `{"type":"status","store":"up"}`},
	} {
		if tc.got != tc.want {
			t.Errorf("frame\n%s\nwant\n%s", tc.got, tc.want)
		}
	}
	// What the store publishes parses back to the same count.
	m, err := ParseMessage("13", c.Message())
	if err != nil || m.Count == nil || *m.Count != c {
		t.Errorf("ParseMessage(Message()) = %+v, %v; want %+v", m.Count, err, c)
	}
	// A count from before reading and people (an older app server, PHP
	// code), or with numbers it cannot have, counts every viewer as reading
	// and as a person.
	for _, old := range []string{
		`{"type":"count","post":"13","viewers":5,"views":120,"seq":4711}`,
		`{"type":"count","post":"13","viewers":5,"views":120,"reading":6,"people":6,"seq":4711}`,
		`{"type":"count","post":"13","viewers":5,"views":120,"reading":-1,"people":0,"seq":4711}`,
	} {
		m, err := ParseMessage("13", []byte(old))
		if err != nil || m.Count == nil || m.Count.Reading != 5 || m.Count.People != 5 {
			t.Errorf("ParseMessage(%s) = %+v, %v; want reading 5 and people 5", old, m.Count, err)
		}
	}
	for _, v := range []string{"", "short", strings.Repeat("a", 65), "has space", "dots.not-ok"} {
		if _, err := ParseVisitorID(v); err == nil {
			t.Errorf("ParseVisitorID(%q) accepted", v)
		}
	}
	if v, err := ParseVisitorID("Zq0_-9abcdefghijklmnop"); err != nil || v != "Zq0_-9abcdefghijklmnop" {
		t.Errorf("ParseVisitorID of a good id = %q, %v", v, err)
	}
}

// BenchmarkCountFrame is the encoding of the frame every count change
// sends, once per change and room.
func BenchmarkCountFrame(b *testing.B) {
	c := Count{Post: "hello-world", Viewers: 1234, Views: 98765, Seq: 1764600000000000}
	b.ReportAllocs()
	for b.Loop() {
		if len(c.Frame()) == 0 {
			b.Fatal("empty frame")
		}
	}
}

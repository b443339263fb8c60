// Package storetest is the conformance suite every presence.Store passes:
// one table of behaviours, run against real Redis by redisstore's tests and
// against memory by memstore's.
package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence/presence/internal/presence"
)

// Harness is one fresh, empty store under test.
type Harness struct {
	Store  presence.Store
	Source presence.Pruner
	// Feed returns the change messages of the posts, in publish order,
	// starting no later than when Feed returns.
	Feed func(t *testing.T, posts ...presence.PostID) <-chan presence.Message
	// Consistent, if set, checks the store's own records against the
	// sessions that must be live (want) after a concurrent run: what the
	// counts alone cannot show. Nil for a store with nothing more to check.
	Consistent func(t *testing.T, want map[presence.SessionID]presence.PostID, posts []presence.PostID)
}

// Factory makes a fresh Harness whose sessions live for ttl and whose views
// totals live for viewsTTL after their last view (0: the store's default).
type Factory func(t *testing.T, ttl, viewsTTL time.Duration) Harness

// Run runs the suite.
func Run(t *testing.T, newHarness Factory) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newHarness)
		})
	}
}

const longTTL = time.Minute

var cases = []struct {
	name string
	run  func(t *testing.T, f Factory)
}{
	{"view counts a viewer and a view", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		got := st.view(t, "s1", "13", true)
		wantCount(t, got, 1, 1)
		if got.Seq <= 0 {
			t.Errorf("Seq=%d, want > 0 after a change", got.Seq)
		}
		wantCount(t, counts(t, h.Store, "13")[0], 1, 1)
	}},
	{"second viewer and uncounted view", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		st.view(t, "s1", "13", true)
		wantCount(t, st.view(t, "s2", "13", true), 2, 2)
		wantCount(t, st.view(t, "s2", "13", false), 2, 2)
	}},
	{"a counted view repeated on the same post counts once", func(t *testing.T, f Factory) {
		// A view retried after its reply was lost arrives again with
		// countView set; the session is already on the post, so no count.
		h := f(t, longTTL, 0)
		st := track(h.Store)
		st.view(t, "s1", "13", true)
		wantCount(t, st.view(t, "s1", "13", true), 1, 1)
	}},
	{"move leaves the old post", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		st.view(t, "s1", "a", true)
		wantCount(t, st.view(t, "s1", "b", true), 1, 1)
		c := counts(t, h.Store, "a", "b")
		wantCount(t, c[0], 0, 1)
		wantCount(t, c[1], 1, 1)
	}},
	{"leave twice and unknown session", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		st.view(t, "s1", "13", true)
		for i := range 2 {
			if err := st.leave("s1"); err != nil {
				t.Fatalf("Leave #%d: %v", i+1, err)
			}
		}
		if err := st.leave("nobody"); err != nil {
			t.Fatalf("Leave(unknown): %v", err)
		}
		wantCount(t, counts(t, h.Store, "13")[0], 0, 1)
	}},
	{"counts of unknown posts are zero", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		for _, c := range counts(t, h.Store, "x", "y") {
			wantCount(t, c, 0, 0)
		}
	}},
	{"seq grows with every change", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		a := st.view(t, "s1", "a", true)
		b := st.view(t, "s2", "b", true)
		if b.Seq <= a.Seq {
			t.Errorf("second change Seq=%d, want > %d", b.Seq, a.Seq)
		}
		if c := counts(t, h.Store, "a")[0]; c.Seq < b.Seq {
			t.Errorf("Counts Seq=%d, want >= %d", c.Seq, b.Seq)
		}
	}},
	{"a hidden tab views but does not read", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		ctx := context.Background()
		feed := h.Feed(t, "13", "14")
		view := func(sid presence.SessionID, post, from presence.PostID, hidden, countView bool) presence.Count {
			t.Helper()
			c, err := h.Store.View(ctx, presence.Session{ID: sid, Post: post, Hidden: hidden}, from, countView)
			if err != nil {
				t.Fatalf("View(%s, %s, hidden %v): %v", sid, post, hidden, err)
			}
			return c
		}
		wantReading(t, view("a", "13", "", false, true), 1, 1, 1)
		wantReading(t, view("b", "13", "", true, true), 2, 2, 1)
		// Visible again: the post's count changes, no view is counted, and
		// the change is published like any other.
		wantReading(t, view("b", "13", "13", false, false), 2, 2, 2)
		for {
			m := next(t, feed)
			if m.Count != nil && m.Count.Post == "13" && m.Count.Reading == 2 {
				break
			}
		}
		// Hidden, then moved to another post hidden: each post's reading
		// follows.
		wantReading(t, view("b", "13", "13", true, false), 2, 2, 1)
		wantReading(t, view("b", "14", "13", true, true), 1, 1, 0)
		wantReading(t, counts(t, h.Store, "13")[0], 1, 2, 1)
		if err := h.Store.Leave(ctx, presence.Session{ID: "b", Post: "14"}); err != nil {
			t.Fatal(err)
		}
		c := counts(t, h.Store, "13", "14")
		wantReading(t, c[0], 1, 2, 1)
		wantReading(t, c[1], 0, 1, 0)
		// A hidden tab that goes away without a leave is pruned from the
		// hidden viewers too.
		wantReading(t, view("c", "14", "", true, true), 1, 2, 0)
		lags, err := h.Source.Prune(ctx, []presence.Session{{ID: "c", Post: "14"}})
		if err != nil || len(lags) != 0 {
			t.Fatalf("Prune(live) = %v, %v; want nothing pruned", lags, err)
		}
		if err := h.Store.Leave(ctx, presence.Session{ID: "c", Post: "14"}); err != nil {
			t.Fatal(err)
		}
		wantReading(t, view("d", "14", "", false, true), 1, 3, 1)
	}},
	{"tabs of one visitor are one person", func(t *testing.T, f Factory) {
		h := f(t, time.Second, 0)
		ctx := context.Background()
		feed := h.Feed(t, "13")
		view := func(sid presence.SessionID, post, from presence.PostID, visitor presence.VisitorID) presence.Count {
			t.Helper()
			c, err := h.Store.View(ctx, presence.Session{ID: sid, Post: post, Visitor: visitor}, from, from == "")
			if err != nil {
				t.Fatalf("View(%s, %s, visitor %s): %v", sid, post, visitor, err)
			}
			return c
		}
		wantAll(t, view("a1", "13", "", "visitor-a"), 1, 1, 1, 1)
		wantAll(t, view("a2", "13", "", "visitor-a"), 2, 2, 2, 1)
		wantAll(t, view("b1", "13", "", "visitor-b"), 3, 3, 3, 2)
		wantAll(t, view("x", "13", "", ""), 4, 4, 4, 3) // no visitor id: a person of its own
		// One of a's tabs closes: a is still there.
		if err := h.Store.Leave(ctx, presence.Session{ID: "a1", Post: "13"}); err != nil {
			t.Fatal(err)
		}
		wantAll(t, counts(t, h.Store, "13")[0], 3, 4, 3, 3)
		for {
			m := next(t, feed)
			if m.Count != nil && m.Count.Viewers == 3 && m.Count.Views == 4 {
				if m.Count.People != 3 {
					t.Errorf("published count %+v, want 3 people", *m.Count)
				}
				break
			}
		}
		// a's last tab moves to another post: a leaves 13 and is on 14.
		wantAll(t, view("a2", "14", "13", "visitor-a"), 1, 0, 1, 1)
		wantAll(t, counts(t, h.Store, "13")[0], 2, 4, 2, 2)
		// Both sessions of b on 14 in one batch leave together: both its
		// counts go, not one.
		view("b2", "14", "", "visitor-b")
		view("b3", "14", "", "visitor-b")
		wantAll(t, counts(t, h.Store, "14")[0], 3, 2, 3, 2)
		if err := h.Store.Leave(ctx, presence.Session{ID: "b2", Post: "14"}, presence.Session{ID: "b3", Post: "14"}); err != nil {
			t.Fatal(err)
		}
		wantAll(t, counts(t, h.Store, "14")[0], 1, 2, 1, 1)
		// Pruned when it expires, like a leave.
		deadline := time.Now().Add(5 * time.Second)
		for {
			due, _, err := h.Source.Due(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.Source.Prune(ctx, due); err != nil {
				t.Fatal(err)
			}
			if c := counts(t, h.Store, "14")[0]; c.Viewers == 0 {
				wantAll(t, c, 0, 2, 0, 0)
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("sessions of a 1s TTL not pruned within 5s")
			}
			time.Sleep(50 * time.Millisecond) // a TTL must pass: nothing to await
		}
	}},
	{"refresh keeps live sessions and reports lost ones", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		st.view(t, "s1", "13", true)
		missing, err := h.Store.Refresh(context.Background(), []presence.Session{
			{ID: "s1", Post: "13"}, {ID: "gone", Post: "13"}, {ID: "s1x", Post: "14"},
		})
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		// In no particular order: a partitioned store asks partition by
		// partition.
		slices.Sort(missing)
		if fmt.Sprint(missing) != "[gone s1x]" {
			t.Errorf("missing=%v, want [gone s1x]", missing)
		}
		// A session on another post than the caller believes is reported too.
		missing, err = h.Store.Refresh(context.Background(), []presence.Session{{ID: "s1", Post: "99"}})
		if err != nil || fmt.Sprint(missing) != "[s1]" {
			t.Errorf("Refresh(wrong post) = %v, %v; want [s1]", missing, err)
		}
	}},
	{"hold keeps sessions longer, never shorter, and revives none", func(t *testing.T, f Factory) {
		h := f(t, time.Second, 0)
		st := track(h.Store)
		ctx := context.Background()
		st.view(t, "s1", "13", true)
		// A session the store does not have, and one on another post than
		// named, are left alone.
		if err := h.Store.Hold(ctx, []presence.Session{{ID: "s1", Post: "13"}, {ID: "gone", Post: "13"}, {ID: "s1", Post: "99"}}, time.Minute); err != nil {
			t.Fatalf("Hold: %v", err)
		}
		due, next, err := h.Source.Due(ctx, 100)
		if err != nil || len(due) != 0 || next < 30*time.Second {
			t.Fatalf("Due after a hold of a minute on a 1s TTL = %v, next in %v, %v; want none due for more than 30s", due, next, err)
		}
		// A shorter hold does not bring the deadline nearer.
		if err := h.Store.Hold(ctx, []presence.Session{{ID: "s1", Post: "13"}}, 100*time.Millisecond); err != nil {
			t.Fatalf("Hold: %v", err)
		}
		if _, next, err := h.Source.Due(ctx, 100); err != nil || next < 30*time.Second {
			t.Errorf("Due after a shorter hold: next in %v, %v; want more than 30s still", next, err)
		}
		missing, err := h.Store.Refresh(ctx, []presence.Session{{ID: "gone", Post: "13"}})
		if err != nil || fmt.Sprint(missing) != "[gone]" {
			t.Errorf("Refresh(gone) after a hold = %v, %v; want [gone]: a hold makes no session", missing, err)
		}
		c := counts(t, h.Store, "13", "99")
		wantCount(t, c[0], 1, 1)
		wantCount(t, c[1], 0, 0)
	}},
	{"expired session is pruned and re-registers without a second view", func(t *testing.T, f Factory) {
		h := f(t, time.Second, 0)
		st := track(h.Store)
		ctx := context.Background()
		st.view(t, "dead", "13", true)
		st.view(t, "live", "13", true)
		// Keep "live" alive while "dead" runs out.
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := h.Store.Refresh(ctx, []presence.Session{{ID: "live", Post: "13"}}); err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			due, _, err := h.Source.Due(ctx, 100)
			if err != nil {
				t.Fatalf("Due: %v", err)
			}
			lags, err := h.Source.Prune(ctx, due)
			if err != nil {
				t.Fatalf("Prune: %v", err)
			}
			if len(lags) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dead session not pruned 5s after a 1s TTL")
			}
			time.Sleep(50 * time.Millisecond) // a TTL must pass: nothing to await
		}
		wantCount(t, counts(t, h.Store, "13")[0], 1, 2)
		missing, err := h.Store.Refresh(ctx, []presence.Session{{ID: "dead", Post: "13"}})
		if err != nil || fmt.Sprint(missing) != "[dead]" {
			t.Fatalf("Refresh(pruned) = %v, %v; want [dead]", missing, err)
		}
		wantCount(t, st.view(t, "dead", "13", false), 2, 2)
	}},
	{"prune leaves live sessions alone", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		st.view(t, "s1", "13", true)
		lags, err := h.Source.Prune(context.Background(), []presence.Session{{ID: "s1", Post: "13"}, {ID: "unknown", Post: "13"}})
		if err != nil || len(lags) != 0 {
			t.Fatalf("Prune(live) = %v, %v; want nothing pruned", lags, err)
		}
		wantCount(t, counts(t, h.Store, "13")[0], 1, 1)
		due, next, err := h.Source.Due(context.Background(), 10)
		if err != nil || len(due) != 0 || next <= 0 {
			t.Fatalf("Due = %v, %v, %v; want none due and a next deadline", due, next, err)
		}
	}},
	{"changes are published in order", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		feed := h.Feed(t, "a", "b")
		st.view(t, "s1", "a", true)
		st.view(t, "s2", "a", true)
		st.view(t, "s1", "b", true)
		if err := st.leave("s2"); err != nil {
			t.Fatal(err)
		}
		// Seq orders the counts of one post; posts may live in partitions
		// of their own, whose messages travel apart.
		want := map[presence.PostID]string{"a": "1/1 2/2 1/2 0/2", "b": "1/1"}
		got := map[presence.PostID]string{}
		last := map[presence.PostID]int64{}
		for i := range 5 {
			m := next(t, feed)
			if m.Count == nil {
				t.Fatalf("message %d is not a count: %+v", i, m)
			}
			c := m.Count
			got[c.Post] = strings.TrimSpace(got[c.Post] + fmt.Sprintf(" %d/%d", c.Viewers, c.Views))
			if c.Seq <= last[c.Post] {
				t.Errorf("message %d (post %s) Seq=%d, want > %d", i, c.Post, c.Seq, last[c.Post])
			}
			last[c.Post] = c.Seq
		}
		for p, w := range want {
			if got[p] != w {
				t.Errorf("post %s: viewers/views %q, want %q", p, got[p], w)
			}
		}
	}},
	{"concurrent views, moves and leaves keep counts exact", func(t *testing.T, f Factory) {
		h := f(t, longTTL, 0)
		st := track(h.Store)
		posts := []presence.PostID{"p0", "p1", "p2", "p3"}
		const workers, ops = 16, 60
		final := make([]presence.PostID, workers) // "" = not viewing
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sid := presence.SessionID(fmt.Sprintf("w%d", w))
				r := rand.New(rand.NewPCG(uint64(w), 7))
				for range ops {
					var err error
					switch r.IntN(5) {
					case 0:
						err = st.leave(sid)
						final[w] = ""
					case 1:
						// Another worker's session, live: prune must leave it.
						other := presence.SessionID(fmt.Sprintf("w%d", r.IntN(workers)))
						_, err = h.Source.Prune(context.Background(), []presence.Session{{ID: other, Post: posts[r.IntN(len(posts))]}})
					default:
						p := posts[r.IntN(len(posts))]
						_, err = st.tryView(sid, p, false)
						final[w] = p
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		want := map[presence.PostID]int64{}
		live := map[presence.SessionID]presence.PostID{}
		for w, p := range final {
			if p != "" {
				want[p]++
				live[presence.SessionID(fmt.Sprintf("w%d", w))] = p
			}
		}
		for _, c := range counts(t, h.Store, posts...) {
			if c.Viewers != want[c.Post] {
				t.Errorf("post %s viewers=%d, want %d", c.Post, c.Viewers, want[c.Post])
			}
		}
		if h.Consistent != nil {
			h.Consistent(t, live, posts)
		}
	}},
	{"views totals expire unless viewed", func(t *testing.T, f Factory) {
		const viewsTTL = 500 * time.Millisecond
		h := f(t, longTTL, viewsTTL)
		st := track(h.Store)
		// Made-up posts viewed once, by sessions that leave at once.
		made := make([]presence.PostID, 50)
		for i := range made {
			made[i] = presence.PostID(fmt.Sprintf("made-up-%d", i))
			sid := presence.SessionID(fmt.Sprintf("m%d", i))
			st.view(t, sid, made[i], true)
			if err := st.leave(sid); err != nil {
				t.Fatal(err)
			}
		}
		// A real post viewed again and again outlives the TTL many times.
		start := time.Now()
		wantCount(t, st.view(t, "reader-0", "read", true), 1, 1)
		for i := 1; time.Since(start) < 4*viewsTTL; i++ {
			time.Sleep(viewsTTL / 5) // the passing of time is what is tested
			st.view(t, presence.SessionID(fmt.Sprintf("reader-%d", i)), "read", false)
		}
		if c := counts(t, h.Store, "read")[0]; c.Views != 1 {
			t.Errorf("views of a post viewed every %s = %d, want 1 (kept)", viewsTTL/5, c.Views)
		}
		waitViews(t, h.Store, made, 0)
	}},
}

// waitViews waits, with a deadline, until every post's views total is n.
func waitViews(t *testing.T, s presence.Store, posts []presence.PostID, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for _, c := range counts(t, s, posts...) {
			if c.Views != n {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d posts do not have %d views after 10s", left, len(posts), n)
		}
		time.Sleep(50 * time.Millisecond) // expiry sends no event to await
	}
}

// tracker remembers the post each session was last placed on, as an app
// server does: View and Leave take it.
type tracker struct {
	s  presence.Store
	mu sync.Mutex
	at map[presence.SessionID]presence.PostID
}

func track(s presence.Store) *tracker {
	return &tracker{s: s, at: make(map[presence.SessionID]presence.PostID)}
}

func (tr *tracker) tryView(sid presence.SessionID, post presence.PostID, countView bool) (presence.Count, error) {
	tr.mu.Lock()
	from := tr.at[sid]
	tr.mu.Unlock()
	c, err := tr.s.View(context.Background(), presence.Session{ID: sid, Post: post}, from, countView)
	if err == nil {
		tr.mu.Lock()
		tr.at[sid] = post
		tr.mu.Unlock()
	}
	return c, err
}

func (tr *tracker) leave(sid presence.SessionID) error {
	tr.mu.Lock()
	from := tr.at[sid]
	delete(tr.at, sid)
	tr.mu.Unlock()
	return tr.s.Leave(context.Background(), presence.Session{ID: sid, Post: from})
}

func (tr *tracker) view(t *testing.T, sid presence.SessionID, post presence.PostID, countView bool) presence.Count {
	t.Helper()
	c, err := tr.tryView(sid, post, countView)
	if err != nil {
		t.Fatalf("View(%s, %s): %v", sid, post, err)
	}
	if c.Post != post {
		t.Fatalf("View(%s, %s) returned post %q", sid, post, c.Post)
	}
	return c
}

func counts(t *testing.T, s presence.Store, posts ...presence.PostID) []presence.Count {
	t.Helper()
	cs, err := s.Counts(context.Background(), posts)
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	if len(cs) != len(posts) {
		t.Fatalf("Counts returned %d counts for %d posts", len(cs), len(posts))
	}
	return cs
}

// wantCount checks a count where no tab is hidden and none names its
// visitor: every viewer reads and is a person of its own.
func wantCount(t *testing.T, c presence.Count, viewers, views int64) {
	t.Helper()
	wantAll(t, c, viewers, views, viewers, viewers)
}

// wantReading checks a count whose tabs name no visitor.
func wantReading(t *testing.T, c presence.Count, viewers, views, reading int64) {
	t.Helper()
	wantAll(t, c, viewers, views, reading, viewers)
}

func wantAll(t *testing.T, c presence.Count, viewers, views, reading, people int64) {
	t.Helper()
	if c.Viewers != viewers || c.Views != views || c.Reading != reading || c.People != people {
		t.Errorf("post %s: viewers=%d views=%d reading=%d people=%d, want viewers=%d views=%d reading=%d people=%d",
			c.Post, c.Viewers, c.Views, c.Reading, c.People, viewers, views, reading, people)
	}
}

func next(t *testing.T, ch <-chan presence.Message) presence.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no change message within 5s")
		return presence.Message{}
	}
}

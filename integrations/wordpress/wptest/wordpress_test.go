package wptest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/presence/presence/internal/browsertest"
)

const (
	publishKey = "wordpress-test-publish-key-0123456789"
	// The server counts only signed posts: every counter the plugin prints
	// must carry its post's token, or its count never arrives.
	postSecret = "wordpress-test-post-secret-0123456789abcdef"
)

// newTab opens a tab that accepts every JavaScript dialog (WordPress asks
// with confirm() before some actions) and logs what it said.
func newTab(t *testing.T, browser context.Context, opts ...chromedp.ContextOption) (context.Context, context.CancelFunc) {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser, opts...)
	dialogs := make(chan string, 16)
	if err := chromedp.Listen(tab, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			select {
			case dialogs <- d.Message:
			default:
			}
		}
	}); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		for {
			select {
			case <-tab.Done():
				return
			case msg := <-dialogs:
				t.Logf("dialog: %q, accepted", msg)
				_, _ = chromedp.Call(tab, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}
		}
	}()
	return tab, cancel
}

// otherReader opens a tab of another browser profile, with its own
// localStorage and so its own visitor id: another person, where a second
// tab of the same profile is the same person.
func otherReader(t *testing.T, browser context.Context) (context.Context, context.CancelFunc) {
	t.Helper()
	return newTab(t, browser, chromedp.WithNewBrowserContext())
}

// run runs browser steps in tab within limit.
func run(t *testing.T, tab context.Context, limit time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, limit)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", where(tab), err)
	}
}

// where says which page a tab shows and how it starts, for a failure's
// message.
func where(tab context.Context) string {
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	page, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + (document.body ? document.body.innerText.slice(0, 600) : "")`))
	if err != nil {
		return fmt.Sprintf("(the page cannot be read: %v)", err)
	}
	return "in " + page
}

// get runs one browser action that returns a value, within limit.
func get[T any](t *testing.T, tab context.Context, limit time.Duration, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, limit)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", where(tab), err)
	}
	return v
}

type css = chromedp.CSS

// text waits until the element's text satisfies ok, and returns it.
func text(t *testing.T, tab context.Context, sel, what string, ok func(string) bool) string {
	t.Helper()
	var got string
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(tab, 2*time.Second)
		var err error
		got, err = chromedp.Run(ctx, chromedp.Text(css(sel)))
		cancel()
		if err == nil && ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q is %q (err %v), want %s", sel, sel, got, err, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// attr waits until the element has a non-empty property name (value,
// href), and returns it. It reads in one evaluation, again until it works:
// wp-admin's screens rewrite their URL once loaded, and a node looked up
// before that can be gone by the time it is read.
func attr(t *testing.T, tab context.Context, sel, name string) string {
	t.Helper()
	js := fmt.Sprintf(`(function(){var e=document.querySelector(%q);return e&&e[%q]?String(e[%q]):""})()`, sel, name, name)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(tab, 2*time.Second)
		v, _ := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		cancel()
		if v != "" {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no %s within 15s; %s", sel, name, where(tab))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func is(want string) func(string) bool {
	return func(s string) bool { return strings.TrimSpace(s) == want }
}

func contains(want string) func(string) bool {
	return func(s string) bool { return strings.Contains(s, want) }
}

// screenshot saves the tab as PNG (quality 100: below it Chromium sends JPEG) under $PRESENCE_SCREENSHOTS, when that is
// set: docs/ keeps the ones of a post and a home page made this way.
func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	dir := os.Getenv("PRESENCE_SCREENSHOTS")
	if dir == "" {
		return
	}
	png := get(t, tab, 30*time.Second, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWordPress uses the plugin as a site owner would, in a real WordPress:
// install and activate it, configure it (refused inputs too, and a post
// secret the server requires), see a post's automatic counter live across
// two tabs, the block in posts, Query Loops, the editor and a widget area,
// counters in lists of posts of a block and a classic theme, an approved
// comment reach an open tab as an event, then deactivate and delete it,
// which removes its options. The plugin writes no notice or warning to
// WordPress's debug log throughout.
func TestWordPress(t *testing.T) {
	if testing.Short() {
		t.Skip("a real WordPress takes a minute")
	}
	began := time.Now()
	sock := startMariaDB(t)
	s := startWordPress(t, sock)
	presenceURL := startPresence(t, s.url, publishKey, postSecret)
	t.Logf("WordPress at %s, Presence at %s, ready in %s", s.url, presenceURL, time.Since(began).Round(time.Millisecond))
	s.installPlugin(t)
	// No shortcode and no block: the counter comes by itself.
	post := s.fixture(t, "post", "A post with a counter", `<!-- wp:paragraph --><p>The text of the post.</p><!-- /wp:paragraph -->`)
	// A post with a block of its own, views in the short wording: no second
	// counter is added to it.
	blockPost := s.fixture(t, "post", "A post with the block", `<!-- wp:paragraph --><p>This one shows its views.</p><!-- /wp:paragraph -->
<!-- wp:presence-counter/counter {"kind":"views","wording":"short"} /-->`)
	// A page that lists the posts in a Query Loop with the block in each row.
	loopPage := s.fixture(t, "page", "Posts being read", `<!-- wp:query {"queryId":1,"query":{"perPage":10,"pages":0,"offset":0,"postType":"post","order":"desc","orderBy":"date","inherit":false}} -->
<div class="wp-block-query"><!-- wp:post-template -->
<!-- wp:post-title /-->
<!-- wp:presence-counter/counter {"wording":"short"} /-->
<!-- /wp:post-template --></div>
<!-- /wp:query -->`)
	// The search results' template with the block beside each title, as a
	// site owner would add it in the site editor.
	s.fixture(t, "template", "search", `<!-- wp:template-part {"slug":"header","tagName":"header"} /-->
<!-- wp:query {"queryId":2,"query":{"inherit":true}} -->
<div class="wp-block-query"><!-- wp:post-template -->
<!-- wp:post-title {"isLink":true} /-->
<!-- wp:presence-counter/counter {"wording":"number"} /-->
<!-- /wp:post-template --></div>
<!-- /wp:query -->`)
	s.fixture(t, "no-welcome-guide")

	browser := browsertest.New(t, chromedp.WindowSize(1200, 1400))
	admin, closeAdmin := newTab(t, browser)
	defer closeAdmin()
	const plugin = `tr[data-plugin="presence-counter/presence-counter.php"]`

	t.Run("activate", func(t *testing.T) {
		run(t, admin, 60*time.Second,
			chromedp.Navigate(s.url+"/wp-login.php"),
			chromedp.WaitVisible(css("#user_login")),
			chromedp.SetValue(css("#user_login"), adminUser),
			chromedp.SetValue(css("#user_pass"), adminPass),
			chromedp.Click(css("#wp-submit")),
			chromedp.WaitVisible(css("#wpadminbar")),
			chromedp.Navigate(s.url+"/wp-admin/plugins.php"),
			chromedp.Click(css(plugin+` .activate a`)),
			chromedp.WaitVisible(css(plugin+` .deactivate a`)),
			// The row leads to the settings.
			chromedp.WaitVisible(css(plugin+` .settings a[href$="options-general.php?page=presence-counter"]`)),
		)
	})

	postURL := s.url + "/?p=" + post
	t.Run("nothing without a server", func(t *testing.T) {
		// Active but not configured: no counter, no widget, no words
		// without a number.
		run(t, admin, 30*time.Second, chromedp.Navigate(postURL), chromedp.WaitVisible(css(".wp-block-post-content")))
		got := get(t, admin, 10*time.Second, chromedp.Evaluate[string](
			`[document.querySelectorAll(".presence-counter, .presence-counter-list, [data-presence-people], [data-presence-viewers], [data-presence-views]").length, document.querySelectorAll('script[src*="widget.js"], script[src*="words.js"]').length, /viewing/.test(document.body.innerText)].join(" ")`))
		if got != "0 0 false" {
			t.Errorf("counters, scripts, the word viewing on a post with no server set: %s, want 0 0 false", got)
		}
	})

	settings := s.url + "/wp-admin/options-general.php?page=presence-counter"
	t.Run("configure", func(t *testing.T) {
		// A scheme the plugin refuses: a message, and nothing saved.
		run(t, admin, 30*time.Second,
			chromedp.Navigate(settings),
			chromedp.SetValue(css("#presence_counter_server_url"), "ftp://presence.example.com"),
			chromedp.Click(css("#submit")),
			chromedp.WaitVisible(css(".notice-error, .error")),
		)
		text(t, admin, ".notice-error, .error", "the URL refused", contains("must be an http:// or https:// address"))
		if opts := s.options(t); opts["presence_counter_server_url"] != nil && opts["presence_counter_server_url"] != "" {
			t.Errorf("a refused URL was saved: %v", opts["presence_counter_server_url"])
		}
		// A bare host name is taken as https://: the field must not be one the
		// browser refuses to submit.
		run(t, admin, 30*time.Second,
			chromedp.Navigate(settings),
			chromedp.SetValue(css("#presence_counter_server_url"), "presence.example.com"),
			chromedp.Click(css("#submit")),
			chromedp.WaitVisible(css("#setting-error-settings_updated, .notice-success, .updated")),
		)
		if got := s.options(t)["presence_counter_server_url"]; got != "https://presence.example.com" {
			t.Errorf("a bare host name was saved as %v, want https://presence.example.com", got)
		}
		// A publish key the server could not hold: refused the same way.
		run(t, admin, 30*time.Second,
			chromedp.Navigate(settings),
			chromedp.SetValue(css("#presence_counter_server_url"), presenceURL),
			chromedp.SetValue(css("#presence_counter_publish_key"), "short"),
			chromedp.Click(css("#submit")),
			chromedp.WaitVisible(css(".notice-error, .error")),
		)
		text(t, admin, ".notice-error, .error", "the key refused", contains("The publish key must be"))
		run(t, admin, 30*time.Second,
			chromedp.Navigate(settings),
			chromedp.SetValue(css("#presence_counter_publish_key"), publishKey),
			chromedp.SetValue(css("#presence_counter_post_secret"), postSecret),
			chromedp.Click(css("#submit")),
			chromedp.WaitVisible(css("#setting-error-settings_updated, .notice-success, .updated")),
		)
		opts := s.options(t)
		if opts["presence_counter_server_url"] != presenceURL || opts["presence_counter_publish_key"] != publishKey || opts["presence_counter_post_secret"] != postSecret {
			t.Fatalf("saved options %v, want the server %s, the key and the secret", opts, presenceURL)
		}
	})

	counter := `.presence-counter .presence-people`
	sentence := `p.presence-counter`
	// The first tab stays open for the comment's event.
	first, closeFirst := newTab(t, browser)
	defer closeFirst()
	t.Run("counter across two tabs", func(t *testing.T) {
		run(t, first, 30*time.Second, chromedp.Navigate(postURL))
		text(t, first, counter, "1 on the first tab", is("1"))
		text(t, first, sentence, "the singular", is("1 person is viewing this post"))
		second, closeSecond := otherReader(t, browser)
		run(t, second, 30*time.Second, chromedp.Navigate(postURL))
		text(t, second, counter, "2 on the second tab", is("2"))
		text(t, first, counter, "2 on the first tab", is("2"))
		text(t, first, sentence, "the plural, once the number changed", is("2 people are viewing this post"))
		// In the content column, like the post's own paragraphs.
		box := get(t, first, 10*time.Second, chromedp.Evaluate[string](
			`(function(){var c=document.querySelector("p.presence-counter"),p=document.querySelector(".wp-block-post-content > p");if(!c||!p)return"missing";var a=c.getBoundingClientRect(),b=p.getBoundingClientRect();return Math.round(a.left)+","+Math.round(a.width)+" "+Math.round(b.left)+","+Math.round(b.width)})()`))
		if l := strings.Fields(box); len(l) != 2 || l[0] != l[1] {
			t.Errorf("the counter's left,width and the paragraph's: %s, want the same", box)
		}
		if n := get(t, first, 10*time.Second, chromedp.Evaluate[int](`document.querySelectorAll("p.presence-counter").length`)); n != 1 {
			t.Errorf("%d counters on the post, want 1", n)
		}
		screenshot(t, first, "wordpress-post.png")
		closeSecond()
		text(t, first, counter, "1 once the second tab closed", is("1"))
		text(t, first, sentence, "the singular again", is("1 person is viewing this post"))
	})

	t.Run("a post with its own block", func(t *testing.T) {
		tab, closeTab := newTab(t, browser)
		defer closeTab()
		run(t, tab, 30*time.Second, chromedp.Navigate(s.url+"/?p="+blockPost))
		text(t, tab, `.wp-block-presence-counter-counter [data-presence-views="`+blockPost+`"]`, "views, once counted", func(v string) bool { return v != "0" && v != "" })
		got := get(t, tab, 10*time.Second, chromedp.Evaluate[string](
			`document.querySelectorAll("p.presence-counter").length + " " + document.querySelector(".wp-block-presence-counter-counter").innerText`))
		if !strings.HasPrefix(got, "1 ") || !strings.HasSuffix(got, "view") && !strings.HasSuffix(got, "views") {
			t.Errorf("counters on the post and the block's text: %q, want 1 counter (the block's) in the short wording", got)
		}
	})

	t.Run("home page of the block theme", func(t *testing.T) {
		// twentytwentythree lists posts in a Query Loop with their excerpts,
		// which WordPress strips of shortcodes: the counter comes after the
		// title, live, and the home page is not counted as a viewer.
		home, closeHome := newTab(t, browser)
		defer closeHome()
		run(t, home, 30*time.Second, chromedp.Navigate(s.url+"/"))
		listed := `.presence-counter-list [data-presence-people="` + post + `"]`
		text(t, home, listed, "1 for the post the first tab views", is("1"))
		text(t, home, `.presence-counter-list:has([data-presence-people="`+post+`"])`, "the wording", is("1 viewing now"))
		text(t, first, counter, "still 1 on the post: the home page watches only", is("1"))
		second, closeSecond := otherReader(t, browser)
		run(t, second, 30*time.Second, chromedp.Navigate(postURL))
		text(t, home, listed, "2 once a second tab views the post", is("2"))
		screenshot(t, home, "wordpress-home.png")
		closeSecond()
		text(t, home, listed, "1 once it closed", is("1"))
	})

	t.Run("the block in a Query Loop", func(t *testing.T) {
		tab, closeTab := newTab(t, browser)
		defer closeTab()
		run(t, tab, 30*time.Second, chromedp.Navigate(s.url+"/?page_id="+loopPage))
		// Each row counts its own post: the first tab views post, nobody
		// views blockPost.
		row := `.wp-block-post-template .wp-block-presence-counter-counter:has([data-presence-people="%s"])`
		text(t, tab, fmt.Sprintf(row, post), "1 viewing now in the row of the viewed post", is("1 viewing now"))
		text(t, tab, fmt.Sprintf(row, blockPost), "0 viewing now in the row of the other", is("0 viewing now"))
		second, closeSecond := otherReader(t, browser)
		run(t, second, 30*time.Second, chromedp.Navigate(postURL))
		text(t, tab, fmt.Sprintf(row, post), "2 viewing now once a second tab views it", is("2 viewing now"))
		closeSecond()
		text(t, tab, fmt.Sprintf(row, post), "1 viewing now once it closed", is("1 viewing now"))

		// A list of posts, where no post is the viewed one and the loop is
		// the template's, not the page's.
		run(t, tab, 30*time.Second, chromedp.Navigate(s.url+"/?s=post"))
		cell := `.wp-block-post-template .wp-block-presence-counter-counter [data-presence-people="%s"]`
		text(t, tab, fmt.Sprintf(cell, post), "1 in the row of the viewed post", is("1"))
		text(t, tab, fmt.Sprintf(cell, blockPost), "0 in the row of the other", is("0"))
	})

	t.Run("viewing now on the Posts screen", func(t *testing.T) {
		run(t, admin, 30*time.Second, chromedp.Navigate(s.url+"/wp-admin/edit.php"))
		cell := `td.column-presence_counter [data-presence-people="` + post + `"]`
		text(t, admin, cell, "1 for the post the first tab views", is("1"))
		text(t, first, counter, "still 1 on the post: the editor's tab watches only", is("1"))
		screenshot(t, admin, "wordpress-posts-column.png")
	})

	t.Run("the block in the editor", func(t *testing.T) {
		run(t, admin, 60*time.Second,
			chromedp.Navigate(s.url+"/wp-admin/post.php?action=edit&post="+blockPost),
			chromedp.WaitVisible(css(`.wp-block-presence-counter-counter`)),
			chromedp.Click(css(`.wp-block-presence-counter-counter`)),
		)
		text(t, admin, `.wp-block-presence-counter-counter`, "the block's preview in its wording", is("1 view"))
		// Its settings, in the sidebar of the selected block.
		// innerText is as shown: the labels are in capitals.
		text(t, admin, `.block-editor-block-inspector`, "the block's settings", func(s string) bool {
			s = strings.ToLower(s)
			return strings.Contains(s, "people viewing the post now") && strings.Contains(s, "wording")
		})
		screenshot(t, admin, "wordpress-block-editor.png")
		// The editor found nothing wrong with the block's saved markup.
		if n := get(t, admin, 10*time.Second, chromedp.Evaluate[int](`document.querySelectorAll(".block-editor-warning").length`)); n != 0 {
			t.Errorf("%d block warnings in the editor; %s", n, where(admin))
		}
	})

	t.Run("approved comment reaches an open tab", func(t *testing.T) {
		get(t, first, 10*time.Second, chromedp.Evaluate[bool](
			`window.__events = []; Presence.on("event", function (m) { window.__events.push(m); }); true`))
		comment := s.fixture(t, "pending-comment", post)
		// Approve as a moderator does, from the comments screen's link.
		run(t, admin, 30*time.Second, chromedp.Navigate(s.url+"/wp-admin/edit-comments.php?comment_status=moderated"))
		href := attr(t, admin, "#comment-"+comment+" .approve a", "href") // the property: an absolute URL
		run(t, admin, 30*time.Second, chromedp.Navigate(href))
		var got string
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(got, `"name":"comment"`) {
			if time.Now().After(deadline) {
				t.Fatalf("no comment event in the open tab within 15 s; it has %s", got)
			}
			time.Sleep(100 * time.Millisecond)
			got = get(t, first, 5*time.Second, chromedp.Evaluate[string](`JSON.stringify(window.__events)`))
		}
		if !strings.Contains(got, "First!") {
			t.Errorf("the comment event lacks the comment's text: %s", got)
		}
	})

	t.Run("a classic theme: excerpts and a widget area", func(t *testing.T) {
		// twentytwentyone lists excerpts on the home page, and has a widget
		// area in its footer, where the block counts the single post viewed.
		s.fixture(t, "theme", "twentytwentyone")
		s.fixture(t, "widget-block", `<!-- wp:presence-counter/counter {"wording":"short"} /-->`)
		home, closeHome := newTab(t, browser)
		defer closeHome()
		run(t, home, 30*time.Second, chromedp.Navigate(s.url+"/"))
		listed := `.entry-content .presence-counter-list:has([data-presence-people="` + post + `"])`
		text(t, home, listed, "1 viewing now after the excerpt of the viewed post", is("1 viewing now"))
		if n := get(t, home, 10*time.Second, chromedp.Evaluate[int](`document.querySelectorAll(".widget-area [data-presence-people], .widget-area [data-presence-views]").length`)); n != 0 {
			t.Errorf("%d counters in the widget area of the home page, want none: no one post is meant there", n)
		}
		screenshot(t, home, "wordpress-classic-home.png")
		tab, closeTab := otherReader(t, browser)
		defer closeTab()
		run(t, tab, 30*time.Second, chromedp.Navigate(postURL))
		text(t, tab, `.widget-area [data-presence-people="`+post+`"]`, "2 in the widget area: the first tab's reader and this one", is("2"))
		text(t, tab, `.entry-content p.presence-counter`, "the automatic counter in the classic theme too", is("2 people are viewing this post"))
		text(t, home, listed, "2 viewing now on the home page", is("2 viewing now"))
	})

	t.Run("deactivate and delete", func(t *testing.T) {
		run(t, admin, 60*time.Second,
			chromedp.Navigate(s.url+"/wp-admin/plugins.php"),
			chromedp.Click(css(plugin+` .deactivate a`)),
			chromedp.WaitVisible(css(plugin+` .activate a`)),
		)
		// The delete link asks with confirm() and deletes over Ajax; the
		// bulk action's screen is the same deletion without script.
		nonce := attr(t, admin, `#bulk-action-form input[name="_wpnonce"]`, "value")
		run(t, admin, 60*time.Second,
			chromedp.Navigate(s.url+"/wp-admin/plugins.php?action=delete-selected&checked%5B%5D=presence-counter%2Fpresence-counter.php&_wpnonce="+nonce),
			chromedp.Click(css(`input#submit[value*="delete"]`)),
			// Back on the list, which says it deleted the plugin.
			chromedp.WaitVisible(css(`#message`)),
			chromedp.WaitNotPresent(css(plugin)),
		)
		if _, err := os.Stat(s.dir + "/wp-content/plugins/presence-counter"); !os.IsNotExist(err) {
			t.Errorf("the plugin's files are still there (%v); the browser is %s", err, where(admin))
		}
		for name, v := range s.options(t) {
			if v != nil {
				t.Errorf("option %s is still set after deletion: %v", name, v)
			}
		}
	})

	if notices := s.pluginNotices(); len(notices) > 0 {
		t.Errorf("the plugin wrote to WordPress's debug log:\n%s", strings.Join(notices, "\n"))
	}
	t.Logf("the whole run took %s", time.Since(began).Round(time.Millisecond))
}

// options reads the plugin's options; a deleted one is nil.
func (s *site) options(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal([]byte(s.fixture(t, "options")), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

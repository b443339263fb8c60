// Package browsertest starts the headless Chromium that the browser tests
// drive: the demo page's and the widget's in cmd/presence, and the
// real-WordPress test's.
package browsertest

import (
	"context"
	"os"
	"testing"

	"github.com/chromedp/chromedp"
)

// Bin is where Debian's chromium package puts the browser.
const Bin = "/usr/bin/chromium"

// New starts headless Chromium with a fresh profile and the flags that keep
// it off the network it cannot reach here, in a 1000x1400 window; extra
// options come after these and can change them. The browser lives until
// the test ends; tabs are contexts made from the one returned.
func New(tb testing.TB, extra ...chromedp.ExecAllocatorOption) context.Context {
	tb.Helper()
	if _, err := os.Stat(Bin); err != nil {
		tb.Fatalf("chromium not found at %s: run scripts/test.sh (it installs it) or apt-get install chromium", Bin)
	}
	opts := append([]chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1000, 1400),
	}, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(tb.Logf))
	// The first run on a context starts the browser; it lives as long as
	// bctx, which must carry no timeout.
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		tb.Fatalf("start chromium: %v", err)
	}
	tb.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	return bctx
}

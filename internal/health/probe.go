package health

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// probeTimeout bounds one healthcheck: Docker's and compose's default
// healthcheck timeout is 30s, but a check that outlives the next one only
// piles up; /readyz answers within readyTimeout whatever Redis does.
const probeTimeout = 2 * time.Second

// probeClient goes to the server directly: HTTP_PROXY, set for the
// application's own traffic in some containers, must not route a check of
// this machine's server through a proxy.
var probeClient = &http.Client{Transport: &http.Transport{Proxy: nil}}

// Probe asks url and returns nil when it answers 200, or an error with the
// status and the start of the body.
func Probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// Command is the healthcheck subcommand of both binaries, for images with
// no shell and no curl (distroless): it asks the running server's /readyz
// (with -live, /healthz) and exits 0 when it answers 200, 1 otherwise.
// base gives the server's URL from the settings, once the flags are
// parsed; -url overrides it.
func Command(ctx context.Context, name string, args []string, base func() (string, error), stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	live := fs.Bool("live", false, "ask /healthz (the process answers) instead of /readyz (it can serve: Redis answers)")
	url := fs.String("url", "", "the server's base URL, e.g. http://127.0.0.1:8080/; default: from the PRESENCE_* settings")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s asks the server running on this machine whether it is ready, and exits 0 if it is, 1 if not.\n"+
			"It finds the server from the same PRESENCE_* variables the server reads.\n\nUsage of %s:\n", name, name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return 1
	}
	u := *url
	if u == "" {
		var err error
		if u, err = base(); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 1
		}
	}
	path := "readyz"
	if *live {
		path = "healthz"
	}
	u = strings.TrimSuffix(u, "/") + "/" + path
	if err := Probe(ctx, u); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s answered 200\n", name, u)
	return 0
}

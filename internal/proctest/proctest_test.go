package proctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"
)

// TestMain doubles as the binary that TestStart starts: the test binary
// itself, told so by an environment variable that Env lets through.
func TestMain(m *testing.M) {
	if os.Getenv("PROCTEST_CHILD") != "" {
		_, leaked := os.LookupEnv("PRESENCE_LEAK")
		fmt.Println("not JSON")
		fmt.Printf(`{"msg":"up","leaked":%t}`+"\n", leaked)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func TestLog(t *testing.T) {
	t.Parallel()
	l := NewLog()
	// A line split across writes is parsed once whole; others are kept only
	// as text.
	fmt.Fprint(l, `{"n":`)
	fmt.Fprint(l, "1}\nnot JSON\n{\"n\":2}")
	if got := len(l.Lines()); got != 1 {
		t.Fatalf("Lines()=%d lines, want 1 before the second newline", got)
	}
	two := func(line map[string]any) bool { return line["n"] == 2.0 }
	line, more := l.Find(two)
	if line != nil || more == nil {
		t.Fatalf("Find=%v, %v before the line is complete, want nil and a channel", line, more)
	}
	fmt.Fprint(l, "\n")
	select {
	case <-more:
	default:
		t.Fatal("Find's channel is still open after a write")
	}
	if line, _ := l.Find(two); line == nil {
		t.Fatalf("Find found no line n=2 in %v", l.Lines())
	}
	if got, want := l.String(), "{\"n\":1}\nnot JSON\n{\"n\":2}\n"; got != want {
		t.Errorf("String()=%q, want %q", got, want)
	}
}

func TestStart(t *testing.T) {
	t.Setenv("PRESENCE_LEAK", "1")
	t.Setenv("PROCTEST_CHILD", "1")
	p := Start(t, "child", os.Args[0])
	line := p.WaitLog(t, 10*time.Second, `{"msg":"up"}`, func(l map[string]any) bool { return l["msg"] == "up" })
	if line["leaked"] != false {
		t.Errorf("the child saw PRESENCE_LEAK: %v", line)
	}
	<-p.Done()
	if p.Cmd.ProcessState.ExitCode() != 3 {
		t.Errorf("exit: %v, want status 3", p.Err())
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	p := Run(t, "fn", func(ctx context.Context, out io.Writer) error {
		fmt.Fprintln(out, `{"msg":"up"}`)
		<-ctx.Done()
		return ctx.Err()
	})
	p.WaitLog(t, 10*time.Second, `{"msg":"up"}`, func(l map[string]any) bool { return l["msg"] == "up" })
	p.Stop()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("fn still running 10s after Stop")
	}
	if !errors.Is(p.Err(), context.Canceled) {
		t.Errorf("Err()=%v, want context.Canceled", p.Err())
	}
}

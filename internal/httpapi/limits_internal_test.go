package httpapi

import (
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/origin"
)

// TestOriginLog_Bounded: the refusal log remembers origins as origin.Plain
// gives them, so Origin headers that are no origin (long, not ASCII), each
// different, are one entry, not one of up to 64 KiB each; plain ones are
// remembered up to originLogKept.
func TestOriginLog_Bounded(t *testing.T) {
	s := &Server{log: zap.NewNop(), refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"cause"})}
	for i := range 20 {
		s.refuseOrigin(httptest.NewRecorder(), strings.Repeat("\x80", 1000)+strconv.Itoa(i))
	}
	if n := len(s.originLog.last); n != 1 {
		t.Errorf("%d origins remembered after 20 that are no origin, want 1", n)
	}
	var l originLog
	now := time.Now()
	for i := range 3000 {
		l.allow(origin.Plain("https://site-"+strconv.Itoa(i)+".example"), now)
		now = now.Add(originLogEvery / originLogBurst)
	}
	if n := len(l.last); n == 0 || n > originLogKept {
		t.Errorf("%d origins remembered, want 1 to %d", n, originLogKept)
	}
}

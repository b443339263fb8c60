// Package gc prunes dead sessions. A Collector polls a store's Pruner for
// sessions whose deadline has passed and prunes them; wake-ups (Redis expiry
// events in cmd/gc, nothing in embedded mode) only make it poll sooner.
// Pruning is idempotent, so any number of collectors may run against one
// store.
package gc

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/presence/presence/internal/presence"
)

// Config configures a Collector. The zero value is usable.
type Config struct {
	// Poll is the longest time between two polls. Default: 1s.
	Poll time.Duration
	// Batch is how many sessions one poll prunes at a time. Default: 500.
	Batch int
	// Sweeper makes the full sweeps, for a store whose deadlines index can
	// miss sessions (Redis: a failover, a hand edit). Default: none.
	Sweeper presence.Sweeper
	// Sweep is the time between full sweeps when there is a Sweeper.
	// Default: 5m; negative disables.
	Sweep time.Duration
	// Wake makes the collector poll at once when it receives. Default: nil.
	Wake <-chan struct{}
	// Registerer receives the collector's metrics. Default: none.
	Registerer prometheus.Registerer
}

// minWait keeps a collector from spinning on a deadline that Redis, whose
// keys expire only once their deadline has strictly passed, does not yet
// count as expired.
const minWait = 5 * time.Millisecond

// Collector prunes dead sessions of one store.
type Collector struct {
	src presence.Pruner
	cfg Config
	log *zap.Logger

	prunes prometheus.Counter
	lag    prometheus.Histogram
	polls  prometheus.Counter
	errors prometheus.Counter
	wakes  prometheus.Counter
}

// New returns a Collector for src.
func New(src presence.Pruner, cfg Config, log *zap.Logger) *Collector {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Sweep == 0 {
		cfg.Sweep = 5 * time.Minute
	}
	c := &Collector{
		src: src,
		cfg: cfg,
		log: log.Named("gc"),
		prunes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_prunes_total",
			Help: "Dead sessions pruned.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "presence_gc_expiry_lag_seconds",
			Help:    "Time from a dead session's deadline to its prune.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60},
		}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_gc_polls_total",
			Help: "Polls of the deadlines index.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_gc_errors_total",
			Help: "Polls, prunes and sweeps that failed.",
		}),
		wakes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_gc_wakeups_total",
			Help: "Early polls triggered by expiry events or reconnects.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(c.prunes, c.lag, c.polls, c.errors, c.wakes)
	}
	return c
}

// Run polls until ctx ends. Errors are logged and retried, never returned:
// a store that is away now may be back at the next poll.
func (c *Collector) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var sweep <-chan time.Time
	if c.cfg.Sweeper != nil && c.cfg.Sweep > 0 {
		t := time.NewTicker(c.cfg.Sweep)
		defer t.Stop()
		sweep = t.C
	}
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.cfg.Wake:
			c.wakes.Inc()
		case <-timer.C:
		case <-sweep:
			if n, err := c.cfg.Sweeper.Sweep(ctx); err != nil {
				c.errors.Inc()
				c.log.Warn("sweep failed", zap.Error(err))
			} else if n > 0 {
				c.prunes.Add(float64(n))
				c.log.Info("sweep pruned sessions the deadlines index missed", zap.Int("pruned", n))
			}
		}
		next, err := c.Poll(ctx)
		if err != nil {
			c.errors.Inc()
			if !failing && ctx.Err() == nil {
				c.log.Warn("poll failed; retrying every poll interval", zap.Error(err))
			}
			failing = true
			next = c.cfg.Poll
		} else if failing {
			failing = false
			c.log.Info("poll works again")
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// Poll prunes every session that is due and returns how long to wait before
// the next poll: until the next deadline, but at most the poll interval.
func (c *Collector) Poll(ctx context.Context) (time.Duration, error) {
	for {
		c.polls.Inc()
		due, next, derr := c.src.Due(ctx, c.cfg.Batch)
		if derr != nil {
			// A store in parts (a Redis Cluster with a primary away) hands
			// over what the other parts found: prune that, then report.
			lags, err := c.src.Prune(ctx, due)
			c.observe(lags)
			return 0, errors.Join(derr, err)
		}
		if len(due) == 0 {
			if next < 0 || next > c.cfg.Poll {
				return c.cfg.Poll, nil
			}
			return max(next, minWait), nil
		}
		lags, err := c.src.Prune(ctx, due)
		c.observe(lags)
		if err != nil {
			return 0, err
		}
		if len(lags) == 0 && len(due) < c.cfg.Batch {
			// Everything due was alive after all (refreshed just now, or a
			// key Redis has not expired yet): wait a little, do not spin.
			return minWait, nil
		}
	}
}

// observe counts pruned sessions and how late each was.
func (c *Collector) observe(lags []time.Duration) {
	for _, l := range lags {
		c.lag.Observe(l.Seconds())
	}
	c.prunes.Add(float64(len(lags)))
}

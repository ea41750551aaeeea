package tsdbx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// IdleCompactor empties the head of one tsdb.DB once no sample has been
// appended to it for IdleOptions.IdleTimeout: it runs CompactHead (in-order
// and out-of-order head) while keeping appends made through Appendable out of
// the compaction, so no acknowledged sample is lost.
//
// The caller owns the DB: IdleCompactor never closes it. Stop Run (cancel its
// context) before closing the DB. One IdleCompactor per DB: two compactors on
// the same DB would not see each other's appenders. Make it with
// NewIdleCompactor: a zero IdleCompactor refuses every call with
// ErrNotConstructed (its appenders too) rather than panic.
type IdleCompactor struct {
	db      *tsdb.DB
	opts    IdleOptions
	logger  *slog.Logger
	metrics *idleMetrics

	gate         gate
	lastActivity atomic.Int64  // IdleOptions.Now().UnixNano() of the last activity
	running      chan struct{} // one compaction at a time (a semaphore that honours ctx)

	phaseMu    sync.Mutex
	phase      phase
	phaseStart time.Time

	// Test seams.
	newTicker func(time.Duration) (<-chan time.Time, func())
	onPhase   func(phase)
	onCheck   func(compacted bool, err error) // after each of Run's checks
}

// NewIdleCompactor returns a compactor for db. It rejects a nil db, negative
// durations and a DrainTimeout not shorter than CheckInterval; zero durations
// take their defaults. Construction counts as activity, so a DB just opened
// (and its replayed WAL) is left alone for one IdleTimeout.
func NewIdleCompactor(db *tsdb.DB, o IdleOptions) (*IdleCompactor, error) {
	if db == nil {
		return nil, ErrNilDB
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &IdleCompactor{
		db:        db,
		opts:      o,
		logger:    o.Logger,
		running:   make(chan struct{}, 1),
		newTicker: realTicker,
	}
	c.metrics = newIdleMetrics(c)
	if err := c.metrics.register(o.Registerer); err != nil {
		if isAlreadyRegistered(err) {
			err = fmt.Errorf("%w (one compactor per registry: wrap the Registerer with prometheus.WrapRegistererWith and a tenant label)", err)
		}
		return nil, err
	}
	c.Touch()
	return c, nil
}

// Unregister removes the compactor's metrics from IdleOptions.Registerer, for
// when its tenant's DB is closed for good. It does not stop Run.
func (c *IdleCompactor) Unregister() {
	if c.constructed() == nil {
		c.metrics.unregister()
	}
}

// constructed refuses the zero value clearly: it has no DB, clock or gate
// bookkeeping, and guessing them would hide a wiring mistake.
func (c *IdleCompactor) constructed() error {
	if c == nil || c.db == nil {
		return ErrNotConstructed
	}
	return nil
}

// Appendable returns the DB as a storage.Appendable (and storage.AppendableV2)
// whose appenders cooperate with compaction:
//
//   - every Commit that returns nil after at least one sample was accepted
//     marks activity; Rollback, a failed Commit and a Commit that stored
//     nothing do not (so requests that are all rejected cannot keep an idle
//     head in memory);
//   - a compaction waits for the appenders opened before it to Commit or
//     Rollback (at most IdleOptions.DrainTimeout), so their samples are in the
//     blocks it writes;
//   - an appender opened while a compaction runs stores nothing: each of its
//     methods returns ErrCompactionInProgress, and the append can be retried.
//
// Appends that bypass the wrapper (db.Appender directly) are not coordinated.
func (c *IdleCompactor) Appendable() storage.Appendable { return appendable{c} }

// Touch marks activity by hand, for appends that do not go through Appendable.
func (c *IdleCompactor) Touch() {
	if c.constructed() == nil {
		c.lastActivity.Store(c.opts.Now().UnixNano())
	}
}

// LastActivity returns the time of the last activity (Touch or successful Commit).
func (c *IdleCompactor) LastActivity() time.Time {
	if c.constructed() != nil {
		return time.Time{}
	}
	return time.Unix(0, c.lastActivity.Load())
}

// CompactIfIdle compacts the head (see CompactHead) if nothing was appended for
// IdleOptions.IdleTimeout and the head holds at least one series. Idleness is
// checked again once the gate is shut and the appenders opened before it have
// finished, so a push committed meanwhile cancels the compaction. compacted
// reports whether the compaction ran, even if it then returned an error; it
// is false when the DB is busy, its head is empty, ctx has ended, or appenders
// opened earlier did not finish within DrainTimeout (ErrAppendersInFlight).
//
// A caller driving CompactIfIdle from its own loop instead of Run should, as
// Run does, wait a CheckInterval after ErrAppendersInFlight: each attempt
// refuses appends for up to DrainTimeout.
func (c *IdleCompactor) CompactIfIdle(ctx context.Context) (compacted bool, err error) {
	if err := c.constructed(); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if !c.idle() || c.db.Head().NumSeries() == 0 {
		return false, nil
	}
	return c.compact(ctx, triggerIdle)
}

// CompactNow compacts the head whether or not the DB is idle, with the same
// append coordination and metrics as CompactIfIdle: what an ingester calls to
// flush a tenant before shutdown (Thanos' flushHead).
func (c *IdleCompactor) CompactNow(ctx context.Context) error {
	if err := c.constructed(); err != nil {
		return err
	}
	_, err := c.compact(ctx, triggerNow)
	return err
}

// Run calls CompactIfIdle every IdleOptions.CheckInterval until ctx ends, then
// returns nil (ErrNotConstructed at once for a zero IdleCompactor). A failed
// compaction is logged, counted in leaksafe_tsdbx_head_compaction_failures_total
// and retried at the next tick, except after ErrAppendersInFlight: then the
// gate stays open for at least a whole CheckInterval before the next attempt
// shuts it again. Run starts no goroutine of its own.
func (c *IdleCompactor) Run(ctx context.Context) error {
	if err := c.constructed(); err != nil {
		return err
	}
	ticks, stop := c.newTicker(c.opts.CheckInterval)
	defer stop()
	// A leaked appender fails every drain, and the pushes refused meanwhile
	// are not activity, so the tenant stays idle and every check drains again.
	// A tick that fell due while a drain waited would shut the gate again
	// moments after it reopened, refusing nearly every push; holding off for a
	// CheckInterval from the reopening keeps it open most of the time.
	var holdOffUntil time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
		}
		if c.opts.Now().Before(holdOffUntil) {
			continue
		}
		compacted, err := c.CompactIfIdle(ctx)
		if errors.Is(err, ErrAppendersInFlight) {
			holdOffUntil = c.opts.Now().Add(c.opts.CheckInterval)
		}
		if c.onCheck != nil {
			c.onCheck(compacted, err)
		}
	}
}

func (c *IdleCompactor) idle() bool {
	return c.opts.Now().Sub(c.LastActivity()) >= c.opts.IdleTimeout
}

func (c *IdleCompactor) compact(ctx context.Context, trigger string) (ran bool, err error) {
	select {
	case c.running <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-c.running }()

	start := c.opts.Now()
	abandoned := false
	defer func() {
		if abandoned {
			return // no compaction was attempted: neither a duration nor a failure
		}
		c.metrics.duration.Observe(c.opts.Now().Sub(start).Seconds())
		// Logged here rather than in Run so that a failed CompactNow (the
		// shutdown flush) or a direct CompactIfIdle leaves a trace too, once.
		if err != nil && !errors.Is(err, context.Canceled) {
			c.metrics.failures.WithLabelValues(trigger).Inc()
			c.logger.Error("head compaction failed", "trigger", trigger, "err", err)
		}
	}()

	if err := c.drainAppenders(ctx); err != nil {
		c.enterPhase(phaseFinished)
		return false, err
	}
	defer c.gate.open()

	// The idleness check ran before the gate shut: a push may have committed
	// since, before the gate shut or while the drain waited for it. Compacting
	// now would empty the head of a tenant that is sending again.
	if trigger == triggerIdle && !c.idle() {
		abandoned = true
		c.enterPhase(phaseFinished)
		return false, nil
	}

	head := c.db.Head()
	before := head.NumSeries()
	c.metrics.compactions.WithLabelValues(trigger).Inc()
	c.metrics.seriesBefore.Set(float64(before))

	err = fullCompaction{db: c.db, enter: c.enterPhase}.run(ctx)

	after := head.NumSeries()
	c.metrics.seriesAfter.Set(float64(after))
	if err == nil {
		c.metrics.lastSuccess.Set(float64(c.opts.Now().UnixNano()) / 1e9)
		c.logger.Info("head compacted", "trigger", trigger, "series_before", before, "series_after", after, "duration", c.opts.Now().Sub(start))
	}
	return true, err
}

// drainAppenders closes the gate and waits for the appenders already inside.
func (c *IdleCompactor) drainAppenders(ctx context.Context) error {
	drained := c.gate.shut()
	// The phase starts only now, so whoever sees it sees new appenders refused.
	c.enterPhase(phaseDrain)
	drainCtx, cancel := context.WithTimeout(ctx, c.opts.DrainTimeout)
	defer cancel()
	err := c.gate.await(drainCtx, drained)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return fmt.Errorf("%w: %d appender(s) still open after %v", ErrAppendersInFlight, c.gate.appendersInFlight(), c.opts.DrainTimeout)
	}
}

func (c *IdleCompactor) enterPhase(p phase) {
	c.phaseMu.Lock()
	c.phase, c.phaseStart = p, c.opts.Now()
	c.phaseMu.Unlock()
	if c.onPhase != nil {
		c.onPhase(p)
	}
}

// phaseSeconds is how long the running compaction has been in phase p, or 0.
func (c *IdleCompactor) phaseSeconds(p phase) float64 {
	c.phaseMu.Lock()
	defer c.phaseMu.Unlock()
	if c.phase != p || p == phaseFinished {
		return 0
	}
	// A clock that went backwards must not report a negative wait.
	return max(c.opts.Now().Sub(c.phaseStart).Seconds(), 0)
}

func realTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

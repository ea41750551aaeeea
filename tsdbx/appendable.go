package tsdbx

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
)

// gate lets appenders and a compaction exclude each other, the way Cortex'
// userTSDB does with its forceCompacting state and pushesInFlight wait group:
// an appender holds the gate from Appender() to Commit/Rollback; a compaction
// closes it, waits until the appenders already inside have finished, and keeps
// new ones out until it reopens the gate.
//
// Two uncontended mutex operations per appender (enter and leave), none per
// sample, are the whole hot-path cost.
type gate struct {
	mu       sync.Mutex
	closed   bool
	inFlight int
	drained  chan struct{} // non-nil while a closer waits for inFlight to reach 0
}

// enter registers an appender. It fails while a compaction holds the gate.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.inFlight++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	if g.inFlight == 0 && g.drained != nil {
		close(g.drained)
		g.drained = nil
	}
}

// shut closes the gate to new appenders and returns a channel that is closed
// once every appender that entered before has left.
func (g *gate) shut() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	drained := make(chan struct{})
	if g.inFlight == 0 {
		close(drained)
	} else {
		g.drained = drained
	}
	return drained
}

// await waits for the channel shut returned. If ctx ends first the gate is
// reopened and ctx's error returned, so a leaked appender delays compaction
// but keeps appends out no longer than ctx allows, at each attempt; Run keeps
// the attempts a CheckInterval apart, so that the gate is mostly open.
func (g *gate) await(ctx context.Context, drained <-chan struct{}) error {
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-drained: // the last appender left while we were giving up
		return nil
	default:
	}
	g.drained = nil
	g.closed = false
	return ctx.Err()
}

func (g *gate) open() {
	g.mu.Lock()
	g.closed = false
	g.mu.Unlock()
}

func (g *gate) appendersInFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight
}

// appendable is what IdleCompactor.Appendable returns.
type appendable struct{ c *IdleCompactor }

var (
	_ storage.Appendable   = appendable{}
	_ storage.AppendableV2 = appendable{}
)

// Appender opens an appender on the DB, or, while a compaction runs, returns
// one whose every method fails with ErrCompactionInProgress.
func (a appendable) Appender(ctx context.Context) storage.Appender {
	if err := a.c.constructed(); err != nil {
		return rejectedAppender{err}
	}
	if !a.c.gate.enter() {
		a.c.metrics.appendersRejected.Inc()
		return rejectedAppender{ErrCompactionInProgress}
	}
	return &gatedAppender{Appender: a.c.db.Appender(ctx), transaction: transaction{c: a.c}}
}

// AppenderV2 is Appender for Prometheus' newer append interface.
func (a appendable) AppenderV2(ctx context.Context) storage.AppenderV2 {
	if err := a.c.constructed(); err != nil {
		return rejectedAppenderV2{err}
	}
	if !a.c.gate.enter() {
		a.c.metrics.appendersRejected.Inc()
		return rejectedAppenderV2{ErrCompactionInProgress}
	}
	return &gatedAppenderV2{AppenderV2: a.c.db.AppenderV2(ctx), transaction: transaction{c: a.c}}
}

// transaction is the bookkeeping both appender versions share.
type transaction struct {
	c      *IdleCompactor
	stored bool // a sample was accepted, so a successful Commit is activity
	done   bool // the gate was left; a second Commit/Rollback must not leave twice
}

func (t *transaction) finish(commitErr error, committed bool) {
	if committed && commitErr == nil && t.stored {
		t.c.Touch()
	}
	if !t.done {
		t.done = true
		t.c.gate.leave()
	}
}

type gatedAppender struct {
	storage.Appender
	transaction
}

func (a *gatedAppender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	ref, err := a.Appender.Append(ref, l, t, v)
	a.stored = a.stored || err == nil
	return ref, err
}

func (a *gatedAppender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	ref, err := a.Appender.AppendHistogram(ref, l, t, h, fh)
	a.stored = a.stored || err == nil
	return ref, err
}

func (a *gatedAppender) AppendSTZeroSample(ref storage.SeriesRef, l labels.Labels, t, st int64) (storage.SeriesRef, error) {
	ref, err := a.Appender.AppendSTZeroSample(ref, l, t, st)
	a.stored = a.stored || err == nil
	return ref, err
}

func (a *gatedAppender) AppendHistogramSTZeroSample(ref storage.SeriesRef, l labels.Labels, t, st int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	ref, err := a.Appender.AppendHistogramSTZeroSample(ref, l, t, st, h, fh)
	a.stored = a.stored || err == nil
	return ref, err
}

// GetRef keeps the optional storage.GetRef interface of the DB's appender
// (Cortex relies on it) visible through the wrapper.
func (a *gatedAppender) GetRef(lset labels.Labels, hash uint64) (storage.SeriesRef, labels.Labels) {
	if g, ok := a.Appender.(storage.GetRef); ok {
		return g.GetRef(lset, hash)
	}
	return 0, labels.EmptyLabels()
}

func (a *gatedAppender) Commit() error {
	err := a.Appender.Commit()
	a.finish(err, true)
	return err
}

func (a *gatedAppender) Rollback() error {
	err := a.Appender.Rollback()
	a.finish(err, false)
	return err
}

type gatedAppenderV2 struct {
	storage.AppenderV2
	transaction
}

func (a *gatedAppenderV2) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	ref, err := a.AppenderV2.Append(ref, ls, st, t, v, h, fh, opts)
	// A partial error (an exemplar rejected) still stored the sample.
	var partial *storage.AppendPartialError
	a.stored = a.stored || err == nil || errors.As(err, &partial)
	return ref, err
}

func (a *gatedAppenderV2) GetRef(lset labels.Labels, hash uint64) (storage.SeriesRef, labels.Labels) {
	if g, ok := a.AppenderV2.(storage.GetRef); ok {
		return g.GetRef(lset, hash)
	}
	return 0, labels.EmptyLabels()
}

func (a *gatedAppenderV2) Commit() error {
	err := a.AppenderV2.Commit()
	a.finish(err, true)
	return err
}

func (a *gatedAppenderV2) Rollback() error {
	err := a.AppenderV2.Rollback()
	a.finish(err, false)
	return err
}

// rejectedAppender is handed out while a compaction runs (err is
// ErrCompactionInProgress), or by a zero IdleCompactor (ErrNotConstructed). It
// never touched the DB, so it holds nothing and needs no Rollback; Commit fails
// so that a caller ignoring Append's error still does not count the batch as
// stored.
type rejectedAppender struct{ err error }

var (
	_ storage.Appender   = rejectedAppender{}
	_ storage.AppenderV2 = rejectedAppenderV2{}
)

func (r rejectedAppender) Append(storage.SeriesRef, labels.Labels, int64, float64) (storage.SeriesRef, error) {
	return 0, r.err
}

func (r rejectedAppender) AppendHistogram(storage.SeriesRef, labels.Labels, int64, *histogram.Histogram, *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return 0, r.err
}

func (r rejectedAppender) AppendSTZeroSample(storage.SeriesRef, labels.Labels, int64, int64) (storage.SeriesRef, error) {
	return 0, r.err
}

func (r rejectedAppender) AppendHistogramSTZeroSample(storage.SeriesRef, labels.Labels, int64, int64, *histogram.Histogram, *histogram.FloatHistogram) (storage.SeriesRef, error) {
	return 0, r.err
}

func (r rejectedAppender) AppendExemplar(storage.SeriesRef, labels.Labels, exemplar.Exemplar) (storage.SeriesRef, error) {
	return 0, r.err
}

func (r rejectedAppender) UpdateMetadata(storage.SeriesRef, labels.Labels, metadata.Metadata) (storage.SeriesRef, error) {
	return 0, r.err
}

func (rejectedAppender) SetOptions(*storage.AppendOptions) {}

func (r rejectedAppender) Commit() error { return r.err }
func (rejectedAppender) Rollback() error { return nil }

type rejectedAppenderV2 struct{ err error }

func (r rejectedAppenderV2) Append(storage.SeriesRef, labels.Labels, int64, int64, float64, *histogram.Histogram, *histogram.FloatHistogram, storage.AppendV2Options) (storage.SeriesRef, error) {
	return 0, r.err
}

func (r rejectedAppenderV2) Commit() error { return r.err }
func (rejectedAppenderV2) Rollback() error { return nil }

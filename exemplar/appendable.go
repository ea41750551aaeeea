package exemplar

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
)

// Appendable wraps next so that its appenders send samples, histograms and
// metadata to next and exemplars to s — never to next. This is how a Thanos
// Receive or Cortex fork adopts the store without patching the TSDB head: open
// the tsdb.DB with its own exemplar storage disabled (it would otherwise hold
// the exemplars a second time), hand out Appendable(db, s) for writes and serve
// exemplar queries from s.
//
// The appenders behave like the head's: AppendExemplar drops empty-valued
// exemplar labels, validates against s at once (a duplicate returns 0, nil),
// and keeps the exemplar until Commit, which stores it in s only if next's
// Commit succeeds; Rollback drops it. Exemplars refused at Commit (the store
// changed since the append) are dropped as the head drops them, and counted in
// s's Stats. The appenders implement storage.GetRef, delegating to next's
// appender when it does (Thanos and Cortex type-assert it).
//
// Like the head, AppendExemplar accepts a ref with empty series labels
// (Cortex and Mimir call AppendExemplar(ref, nil, e)): the series is the one
// next's appender returned that ref for, from Append, AppendHistogram or
// GetRef, earlier in the same transaction. The labels passed to those calls
// must stay unchanged until the exemplar is appended (Cortex and Mimir pass
// labels that do); the exemplar's copy is made then. A ref the transaction has
// not seen is refused with ErrUnknownSeriesRef, as the head refuses a ref it
// does not hold.
func Appendable(next storage.Appendable, s *Store) storage.Appendable {
	return appendable{next: next, store: s}
}

type appendable struct {
	next  storage.Appendable
	store *Store
}

func (a appendable) Appender(ctx context.Context) storage.Appender {
	return &appender{Appender: a.next.Appender(ctx), store: a.store, copier: labelDecoder{b: labels.NewScratchBuilder(8)}}
}

type pendingExemplar struct {
	series labels.Labels
	e      exemplar.Exemplar
}

// pending copies l and e's labels: callers (Prometheus' scrape loop, Thanos'
// request decoding) reuse the buffers behind them before Commit.
func (d *labelDecoder) pending(l labels.Labels, e exemplar.Exemplar) pendingExemplar {
	e.Labels = d.copyLabels(e.Labels)
	return pendingExemplar{series: d.copyLabels(l), e: e}
}

type appender struct {
	storage.Appender
	store   *Store
	pending []pendingExemplar
	copier  labelDecoder
	// series maps the refs next's appender returned in this transaction to
	// their labels, for exemplars appended by ref alone; lastRef spares a map
	// write for every further sample of the same series.
	series  map[storage.SeriesRef]labels.Labels
	lastRef storage.SeriesRef
}

var _ storage.GetRef = (*appender)(nil)

// remember records that next's appender knows l by ref.
func (a *appender) remember(ref storage.SeriesRef, l labels.Labels) {
	if ref == 0 || ref == a.lastRef || l.IsEmpty() {
		return
	}
	if a.series == nil {
		a.series = make(map[storage.SeriesRef]labels.Labels)
	}
	a.series[ref] = l
	a.lastRef = ref
}

func (a *appender) forget() {
	a.pending = nil
	a.series, a.lastRef = nil, 0
}

func (a *appender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	ref, err := a.Appender.Append(ref, l, t, v)
	if err == nil {
		a.remember(ref, l)
	}
	return ref, err
}

func (a *appender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	ref, err := a.Appender.AppendHistogram(ref, l, t, h, fh)
	if err == nil {
		a.remember(ref, l)
	}
	return ref, err
}

func (a *appender) AppendExemplar(ref storage.SeriesRef, l labels.Labels, e exemplar.Exemplar) (storage.SeriesRef, error) {
	if l.IsEmpty() {
		known, ok := a.series[ref]
		if !ok {
			// The head drops exemplars silently while its storage is disabled,
			// before it looks the series up.
			if errors.Is(a.store.ValidateExemplar(l, e), storage.ErrExemplarsDisabled) {
				return 0, nil
			}
			return 0, fmt.Errorf("%w: %d", ErrUnknownSeriesRef, ref)
		}
		l = known
	}
	e.Labels = e.Labels.WithoutEmpty()
	if err := a.store.ValidateExemplar(l, e); err != nil {
		if errors.Is(err, storage.ErrDuplicateExemplar) || errors.Is(err, storage.ErrExemplarsDisabled) {
			return 0, nil
		}
		return 0, err
	}
	a.pending = append(a.pending, a.copier.pending(l, e))
	if ref == 0 {
		ref, _ = a.GetRef(l, l.Hash())
	}
	return ref, nil
}

func (a *appender) GetRef(lset labels.Labels, hash uint64) (storage.SeriesRef, labels.Labels) {
	if gr, ok := a.Appender.(storage.GetRef); ok {
		ref, l := gr.GetRef(lset, hash)
		a.remember(ref, l)
		return ref, l
	}
	return 0, labels.EmptyLabels()
}

func (a *appender) Commit() error {
	pending := a.pending
	a.forget()
	if err := a.Appender.Commit(); err != nil {
		return err
	}
	for _, p := range pending {
		// Refusals are counted by the store; like the head, a commit does not
		// fail because an exemplar could not be kept.
		_ = a.store.AddExemplar(p.series, p.e)
	}
	return nil
}

func (a *appender) Rollback() error {
	a.forget()
	return a.Appender.Rollback()
}

// AppendableV2 is Appendable for Prometheus' AppenderV2 interface, where
// exemplars ride along with the sample in AppendV2Options.Exemplars. They are
// validated as the head validates them (refusals come back in a
// storage.AppendPartialError, duplicates are ignored), kept until Commit and
// never passed to next.
func AppendableV2(next storage.AppendableV2, s *Store) storage.AppendableV2 {
	return appendableV2{next: next, store: s}
}

type appendableV2 struct {
	next  storage.AppendableV2
	store *Store
}

func (a appendableV2) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return &appenderV2{AppenderV2: a.next.AppenderV2(ctx), store: a.store, copier: labelDecoder{b: labels.NewScratchBuilder(8)}}
}

type appenderV2 struct {
	storage.AppenderV2
	store   *Store
	pending []pendingExemplar
	copier  labelDecoder
}

var _ storage.GetRef = (*appenderV2)(nil)

func (a *appenderV2) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	exs := opts.Exemplars
	opts.Exemplars = nil
	ref, err := a.AppenderV2.Append(ref, ls, st, t, v, h, fh, opts)
	var partial *storage.AppendPartialError
	if partial, err = partial.Handle(err); err != nil {
		return ref, err
	}
	stale := value.IsStaleNaN(v) || (h != nil && value.IsStaleNaN(h.Sum)) || (fh != nil && value.IsStaleNaN(fh.Sum))
	if stale || len(exs) == 0 {
		return ref, partial.ToError()
	}
	for _, e := range exs {
		e.Labels = e.Labels.WithoutEmpty()
		if err := a.store.ValidateExemplar(ls, e); err != nil {
			if !errors.Is(err, storage.ErrDuplicateExemplar) && !errors.Is(err, storage.ErrExemplarsDisabled) {
				if partial == nil {
					partial = &storage.AppendPartialError{}
				}
				partial.ExemplarErrors = append(partial.ExemplarErrors, err)
			}
			continue
		}
		a.pending = append(a.pending, a.copier.pending(ls, e))
	}
	return ref, partial.ToError()
}

func (a *appenderV2) GetRef(lset labels.Labels, hash uint64) (storage.SeriesRef, labels.Labels) {
	if gr, ok := a.AppenderV2.(storage.GetRef); ok {
		return gr.GetRef(lset, hash)
	}
	return 0, labels.EmptyLabels()
}

func (a *appenderV2) Commit() error {
	pending := a.pending
	a.pending = nil
	if err := a.AppenderV2.Commit(); err != nil {
		return err
	}
	for _, p := range pending {
		_ = a.store.AddExemplar(p.series, p.e)
	}
	return nil
}

func (a *appenderV2) Rollback() error {
	a.pending = nil
	return a.AppenderV2.Rollback()
}

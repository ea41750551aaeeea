package exemplar

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
//
// A transaction copies its pending labels into one buffer, reused by later
// transactions once Commit or Rollback has cleared it: a request does not
// allocate per exemplar.
func Appendable(next storage.Appendable, s *Store) storage.Appendable {
	return appendable{next: next, store: s}
}

type appendable struct {
	next  storage.Appendable
	store *Store
}

func (a appendable) Appender(ctx context.Context) storage.Appender {
	return &appender{Appender: a.next.Appender(ctx), store: a.store}
}

// txn is what an appender holds for one transaction. It is pooled and its
// labels are copied into one buffer: a request of a hundred exemplars used
// to allocate two label copies and a map entry for each.
type txn struct {
	pending []pendingExemplar
	// text holds the series and exemplar labels of pending, copied: callers
	// (Prometheus' scrape loop, Thanos' request decoding) reuse the buffers
	// behind them before Commit.
	text []byte
	// refs are the series next's appender returned refs for, in order, for
	// exemplars appended by ref alone; byRef indexes refs[:indexed] once a
	// lookup reaches past the last few.
	refs    []refLabels
	byRef   map[storage.SeriesRef]labels.Labels
	indexed int
	// Commit's views of one pending exemplar's labels, rebuilt in place by
	// two builders sharing syms (dedupelabels interns every name and value
	// they rebuild there; the other builds have no table).
	syms             *labels.SymbolTable
	seriesB, labelsB labels.ScratchBuilder
	series, exLabels labels.Labels
}

type pendingExemplar struct {
	series, labels textSpan // in txn.text
	e              exemplar.Exemplar
}

type textSpan struct{ from, to int }

type refLabels struct {
	ref storage.SeriesRef
	l   labels.Labels
}

var txnPool = sync.Pool{New: func() any {
	t := &txn{}
	t.newBuilders()
	return t
}}

func (t *txn) newBuilders() {
	t.syms = labels.NewSymbolTable()
	t.seriesB = labels.NewScratchBuilderWithSymbolTable(t.syms, 8)
	t.labelsB = labels.NewScratchBuilderWithSymbolTable(t.syms, 4)
}

func (t *txn) add(l labels.Labels, e exemplar.Exemplar) {
	from := len(t.text)
	t.text = appendLabelText(t.text, l)
	mid := len(t.text)
	t.text = appendLabelText(t.text, e.Labels)
	e.Labels = labels.EmptyLabels()
	t.pending = append(t.pending, pendingExemplar{series: textSpan{from, mid}, labels: textSpan{mid, len(t.text)}, e: e})
}

// commit stores every pending exemplar in s. The labels it passes are views
// of t's memory, valid for the one call: the store copies what it keeps.
func (t *txn) commit(s *Store) {
	for _, p := range t.pending {
		labelsFromText(t.text[p.series.from:p.series.to], &t.seriesB, &t.series)
		labelsFromText(t.text[p.labels.from:p.labels.to], &t.labelsB, &t.exLabels)
		e := p.e
		e.Labels = t.exLabels
		// Refusals are counted by the store; like the head, a commit does not
		// fail because an exemplar could not be kept.
		_ = s.AddExemplar(t.series, e)
	}
}

// lookup returns the labels next's appender returned ref for.
func (t *txn) lookup(ref storage.SeriesRef) (labels.Labels, bool) {
	// An exemplar appended by ref nearly always follows its series' sample.
	for i := len(t.refs) - 1; i >= max(0, len(t.refs)-8); i-- {
		if t.refs[i].ref == ref {
			return t.refs[i].l, true
		}
	}
	if t.byRef == nil {
		t.byRef = make(map[storage.SeriesRef]labels.Labels, len(t.refs))
	}
	for _, r := range t.refs[t.indexed:] {
		t.byRef[r.ref] = r.l
	}
	t.indexed = len(t.refs)
	l, ok := t.byRef[ref]
	return l, ok
}

// release returns t to the pool holding nothing of the caller's, and no more
// than a large request's worth of memory.
func (t *txn) release() {
	const keep, keepSymbols = 1 << 20, 4096
	switch {
	case cap(t.text) > keep || cap(t.pending) > keep/64 || cap(t.refs) > keep/32 || len(t.byRef) > keep/32:
		// The builders hold views of the text and a copy of its largest
		// label set: they go with it.
		*t = txn{}
		t.newBuilders()
	case t.syms.Len() > keepSymbols:
		t.newBuilders()
	}
	clear(t.refs)
	clear(t.byRef)
	clear(t.pending)
	t.pending, t.text, t.refs, t.indexed = t.pending[:0], t.text[:0], t.refs[:0], 0
	txnPool.Put(t)
}

// transaction is what both appenders share: the txn, taken from txnPool when
// first needed and returned at Commit or Rollback.
type transaction struct{ txn *txn }

func (a *transaction) open() *txn {
	if a.txn == nil {
		a.txn = txnPool.Get().(*txn)
	}
	return a.txn
}

// commit commits next and, if that succeeds, stores the pending exemplars in s.
func (a *transaction) commit(next interface{ Commit() error }, s *Store) error {
	t := a.txn
	a.txn = nil
	if t != nil {
		defer t.release()
	}
	if err := next.Commit(); err != nil {
		return err
	}
	if t != nil {
		t.commit(s)
	}
	return nil
}

func (a *transaction) rollback(next interface{ Rollback() error }) error {
	if t := a.txn; t != nil {
		a.txn = nil
		t.release()
	}
	return next.Rollback()
}

type appender struct {
	storage.Appender
	transaction
	store *Store
	// lastRef spares recording every further sample of the same series.
	lastRef storage.SeriesRef
}

var _ storage.GetRef = (*appender)(nil)

// remember records that next's appender knows l by ref.
func (a *appender) remember(ref storage.SeriesRef, l labels.Labels) {
	if ref == 0 || ref == a.lastRef || l.IsEmpty() {
		return
	}
	t := a.open()
	t.refs = append(t.refs, refLabels{ref, l})
	a.lastRef = ref
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
		var known labels.Labels
		ok := false
		if a.txn != nil {
			known, ok = a.txn.lookup(ref)
		}
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
	a.open().add(l, e)
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
	a.lastRef = 0
	return a.commit(a.Appender, a.store)
}

func (a *appender) Rollback() error {
	a.lastRef = 0
	return a.rollback(a.Appender)
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
	return &appenderV2{AppenderV2: a.next.AppenderV2(ctx), store: a.store}
}

type appenderV2 struct {
	storage.AppenderV2
	transaction
	store *Store
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
		a.open().add(ls, e)
	}
	return ref, partial.ToError()
}

func (a *appenderV2) GetRef(lset labels.Labels, hash uint64) (storage.SeriesRef, labels.Labels) {
	if gr, ok := a.AppenderV2.(storage.GetRef); ok {
		return gr.GetRef(lset, hash)
	}
	return 0, labels.EmptyLabels()
}

func (a *appenderV2) Commit() error { return a.commit(a.AppenderV2, a.store) }

func (a *appenderV2) Rollback() error { return a.rollback(a.AppenderV2) }

package exemplar

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"unsafe"
	"weak"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
)

// openTSDB opens a real on-disk TSDB. withExemplars turns on the head's own
// exemplar storage, to prove the wrapper never feeds it.
func openTSDB(t *testing.T, withExemplars bool) *tsdb.DB {
	t.Helper()
	opts := tsdb.DefaultOptions()
	opts.EnableExemplarStorage = withExemplars
	opts.MaxExemplars = 1000
	db, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, db.Close()) })
	return db
}

func dbExemplars(t *testing.T, db *tsdb.DB) int {
	t.Helper()
	q, err := db.ExemplarQuerier(context.Background())
	require.NoError(t, err)
	res, err := q.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")})
	require.NoError(t, err)
	n := 0
	for _, r := range res {
		n += len(r.Exemplars)
	}
	return n
}

func dbSamples(t *testing.T, db *tsdb.DB, name string) int {
	t.Helper()
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", name))
	n := 0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			n++
		}
		require.NoError(t, it.Err())
	}
	require.NoError(t, ss.Err())
	return n
}

func TestAppendableSendsSamplesToTheTSDBAndExemplarsOnlyToTheStoreAtCommit(t *testing.T) {
	db := openTSDB(t, true)
	s := mustNew(t, Options{MaxExemplars: 100})
	app := Appendable(db, s).Appender(context.Background())

	series := labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "le", "0.5")
	ref, err := app.Append(0, series, 1000, 3)
	require.NoError(t, err)
	e := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736", "empty", ""), Value: 0.42, Ts: 1000, HasTs: true}
	gotRef, err := app.AppendExemplar(ref, series, e)
	require.NoError(t, err)
	require.Equal(t, ref, gotRef)
	require.Zero(t, s.Stats().Exemplars, "nothing is stored before Commit")

	require.NoError(t, app.Commit())
	require.Equal(t, 1, dbSamples(t, db, "http_request_duration_seconds_bucket"))
	require.Zero(t, dbExemplars(t, db), "the head's own exemplar storage never sees them")
	got := selectAll(t, s)
	require.Len(t, got, 1)
	require.Equal(t, `{trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}`, got[0].Exemplars[0].Labels.String(), "empty labels dropped, like the head")
}

func TestAppendableValidatesAtAppendAndDropsAtRollback(t *testing.T) {
	db := openTSDB(t, false)
	s := mustNew(t, Options{MaxExemplars: 100})
	a := Appendable(db, s)
	series := labels.FromStrings("__name__", "m")

	app := a.Appender(context.Background())
	ref, err := app.Append(0, series, 1000, 1)
	require.NoError(t, err)
	_, err = app.AppendExemplar(ref, series, exemplar.Exemplar{Labels: labels.FromStrings("trace_id", string(make([]byte, 200))), Ts: 1000})
	require.ErrorIs(t, err, storage.ErrExemplarLabelLength, "refused at append time, like the head")
	_, err = app.AppendExemplar(ref, series, exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 1000, HasTs: true})
	require.NoError(t, err)
	require.NoError(t, app.Rollback())
	require.Zero(t, s.Stats().Exemplars, "Rollback drops pending exemplars")
	require.Zero(t, dbSamples(t, db, "m"))

	app = a.Appender(context.Background())
	ref, err = app.Append(0, series, 2000, 1)
	require.NoError(t, err)
	e := exemplar.Exemplar{Labels: traceID(2), Value: 1, Ts: 2000, HasTs: true}
	_, err = app.AppendExemplar(ref, series, e)
	require.NoError(t, err)
	require.NoError(t, app.Commit())

	app = a.Appender(context.Background())
	dupRef, err := app.AppendExemplar(ref, series, e)
	require.NoError(t, err, "a duplicate is not an error")
	require.Zero(t, dupRef, "the head returns 0 for a duplicate")
	_, err = app.AppendExemplar(ref, series, exemplar.Exemplar{Labels: traceID(3), Value: 1, Ts: 10, HasTs: true})
	require.ErrorIs(t, err, storage.ErrOutOfOrderExemplar)
	require.NoError(t, app.Commit())
	require.Equal(t, int64(1), s.Stats().Exemplars)
}

func TestAppendableKeepsGetRefWorking(t *testing.T) {
	db := openTSDB(t, false)
	s := mustNew(t, Options{MaxExemplars: 100})
	a := Appendable(db, s)
	series := labels.FromStrings("__name__", "m", "job", "api")

	app := a.Appender(context.Background())
	ref, err := app.Append(0, series, 1000, 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())

	app = a.Appender(context.Background())
	gr, ok := app.(storage.GetRef)
	require.True(t, ok, "Thanos and Cortex type-assert storage.GetRef on the appender")
	got, lset := gr.GetRef(series, series.Hash())
	require.Equal(t, ref, got)
	require.True(t, labels.Equal(series, lset))
	// An exemplar appended without a ref gets the series' ref back.
	exRef, err := app.AppendExemplar(0, series, exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 1000, HasTs: true})
	require.NoError(t, err)
	require.Equal(t, ref, exRef)
	require.NoError(t, app.Rollback())

	// Wrapping an appender without GetRef still answers it: "not found".
	noRef := Appendable(appendableFunc(func(context.Context) storage.Appender { return failingAppender{} }), s).Appender(context.Background())
	got, _ = noRef.(storage.GetRef).GetRef(series, series.Hash())
	require.Zero(t, got)
}

func TestAppendableResolvesTheSeriesOfAnExemplarAppendedByRefAlone(t *testing.T) {
	// Cortex and Mimir append exemplars as AppendExemplar(ref, nil, e): the
	// head finds the series by ref. Every such exemplar was refused with
	// ErrInvalidSeriesLabels.
	db := openTSDB(t, false)
	s := mustNew(t, Options{MaxExemplars: 100})
	a := Appendable(db, s)
	series := labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "le", "0.5")
	hseries := labels.FromStrings("__name__", "http_request_duration_seconds", "job", "api")

	app := a.Appender(context.Background())
	ref, err := app.Append(0, series, 1000, 3)
	require.NoError(t, err)
	gotRef, err := app.AppendExemplar(ref, labels.EmptyLabels(), exemplar.Exemplar{Labels: traceID(1), Value: 0.4, Ts: 1000, HasTs: true})
	require.NoError(t, err)
	require.Equal(t, ref, gotRef)
	h := &histogram.Histogram{Count: 1, Sum: 0.2, ZeroThreshold: 0.001, PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1}}
	href, err := app.AppendHistogram(0, hseries, 1000, h, nil)
	require.NoError(t, err)
	_, err = app.AppendExemplar(href, labels.EmptyLabels(), exemplar.Exemplar{Labels: traceID(2), Value: 0.2, Ts: 1000, HasTs: true})
	require.NoError(t, err)
	require.NoError(t, app.Commit())

	// The next request: Cortex looks the series up with GetRef and appends
	// its exemplars by that ref even when every sample was refused.
	app = a.Appender(context.Background())
	cref, copied := app.(storage.GetRef).GetRef(series, series.Hash())
	require.Equal(t, ref, cref)
	_, err = app.Append(cref, copied, 500, 1)
	require.ErrorIs(t, err, storage.ErrOutOfOrderSample)
	_, err = app.AppendExemplar(cref, labels.EmptyLabels(), exemplar.Exemplar{Labels: traceID(3), Value: 0.5, Ts: 2000, HasTs: true})
	require.NoError(t, err)
	require.NoError(t, app.Commit())

	got := selectAll(t, s)
	require.Len(t, got, 2)
	// Compared as text: in the dedupelabels build equal labels may sit on
	// different symbol tables.
	require.Equal(t, hseries.String(), got[0].SeriesLabels.String())
	require.Equal(t, traceID(2).String(), got[0].Exemplars[0].Labels.String())
	require.Equal(t, series.String(), got[1].SeriesLabels.String())
	require.Len(t, got[1].Exemplars, 2)
	require.Equal(t, traceID(3).String(), got[1].Exemplars[1].Labels.String())

	// A ref this appender has not seen is an error, as in the head.
	e := exemplar.Exemplar{Labels: traceID(4), Value: 1, Ts: 3000, HasTs: true}
	app = a.Appender(context.Background())
	_, err = app.AppendExemplar(ref+1000, labels.EmptyLabels(), e)
	require.ErrorIs(t, err, ErrUnknownSeriesRef)
	require.NoError(t, app.Commit())
	head := openTSDB(t, true).Appender(context.Background())
	_, headErr := head.AppendExemplar(ref+1000, labels.EmptyLabels(), e)
	require.Error(t, headErr)
	require.Equal(t, headErr.Error(), strings.TrimPrefix(err.Error(), "exemplar: "), "the head's message")
	require.NoError(t, head.Rollback())
	require.Equal(t, int64(3), s.Stats().Exemplars)

	// With exemplar storage off the head drops them before looking at the ref.
	s.Resize(0)
	app = a.Appender(context.Background())
	_, err = app.AppendExemplar(ref+1000, labels.EmptyLabels(), e)
	require.NoError(t, err)
	require.NoError(t, app.Rollback())
}

func TestAppendableCopiesLabelsTheCallerReusesBeforeCommit(t *testing.T) {
	// Prometheus' scrape loop and Thanos' request decoding reuse the memory
	// behind the labels before Commit.
	db := openTSDB(t, false)
	s := mustNew(t, Options{MaxExemplars: 100})
	app := Appendable(db, s).Appender(context.Background())
	buf := make([]byte, 0, 1024)
	sb, eb := labels.NewScratchBuilder(2), labels.NewScratchBuilder(1)
	series := aliasedLabels(buf, &sb, "__name__", "requests_total", "job", "api")
	trace := aliasedLabels(buf[512:512], &eb, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")
	ref, err := app.Append(0, series, 1000, 1)
	require.NoError(t, err)
	_, err = app.AppendExemplar(ref, series, exemplar.Exemplar{Labels: trace, Value: 1, Ts: 1000, HasTs: true})
	require.NoError(t, err)
	for i := range buf[:cap(buf)] {
		buf[:cap(buf)][i] = 'X'
	}
	aliasedLabels(buf[256:256], &sb, "__name__", "XXXXXXXXXXXXXX", "job", "XXX")
	aliasedLabels(buf[768:768], &eb, "trace_id", "ffffffffffffffffffffffffffffffff")
	require.NoError(t, app.Commit())
	got := selectAll(t, s)
	require.Len(t, got, 1)
	require.Equal(t, `{__name__="requests_total", job="api"}`, got[0].SeriesLabels.String())
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", got[0].Exemplars[0].Labels.Get("trace_id"))
}

type appendableFunc func(context.Context) storage.Appender

func (f appendableFunc) Appender(ctx context.Context) storage.Appender { return f(ctx) }

// failingAppender is a storage.Appender whose Commit fails, without GetRef.
type failingAppender struct{ storage.Appender }

var errCommit = errors.New("commit failed")

func (failingAppender) Append(storage.SeriesRef, labels.Labels, int64, float64) (storage.SeriesRef, error) {
	return 1, nil
}
func (failingAppender) Commit() error   { return errCommit }
func (failingAppender) Rollback() error { return nil }

func TestAppendableStoresNothingWhenTheWrappedCommitFails(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 100})
	app := Appendable(appendableFunc(func(context.Context) storage.Appender { return failingAppender{} }), s).Appender(context.Background())
	series := labels.FromStrings("__name__", "m")
	_, err := app.AppendExemplar(1, series, exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 1})
	require.NoError(t, err)
	require.ErrorIs(t, app.Commit(), errCommit)
	require.Zero(t, s.Stats().Exemplars)
}

func TestAppendableV2RoutesExemplarsFromAppendOptions(t *testing.T) {
	db := openTSDB(t, true)
	s := mustNew(t, Options{MaxExemplars: 100})
	app := AppendableV2(db, s).AppenderV2(context.Background())
	series := labels.FromStrings("__name__", "m")
	exs := []exemplar.Exemplar{
		{Labels: traceID(1), Value: 1, Ts: 1000, HasTs: true},
		{Labels: labels.FromStrings("trace_id", string(make([]byte, 200))), Value: 2, Ts: 1000, HasTs: true},
	}
	ref, err := app.Append(0, series, 0, 1000, 1, nil, nil, storage.AppendV2Options{Exemplars: exs})
	require.NotZero(t, ref, "the sample was written")
	var partial *storage.AppendPartialError
	require.ErrorAs(t, err, &partial)
	require.Len(t, partial.ExemplarErrors, 1)
	require.ErrorIs(t, partial.ExemplarErrors[0], storage.ErrExemplarLabelLength)
	exs[0] = exemplar.Exemplar{} // the options' slice is the caller's to reuse
	_, err = app.Append(ref, series, 0, 2000, math.Float64frombits(value.StaleNaN), nil, nil,
		storage.AppendV2Options{Exemplars: []exemplar.Exemplar{{Labels: traceID(9), Value: 9, Ts: 2000, HasTs: true}}})
	require.NoError(t, err)
	require.Zero(t, s.Stats().Exemplars, "nothing stored before Commit")
	require.NoError(t, app.Commit())

	require.Zero(t, dbExemplars(t, db), "the head's exemplar storage never sees them")
	got := selectAll(t, s)
	require.Len(t, got, 1)
	require.Len(t, got[0].Exemplars, 1, "stale markers carry no exemplars, as in the head")
	require.Equal(t, traceID(1).Get("trace_id"), got[0].Exemplars[0].Labels.Get("trace_id"))
	_, ok := AppendableV2(db, s).AppenderV2(context.Background()).(storage.GetRef)
	require.True(t, ok)
}

// countingAppender hands out a new ref for every Append and keeps nothing.
type countingAppender struct {
	storage.Appender
	refs storage.SeriesRef
}

func (c *countingAppender) Append(storage.SeriesRef, labels.Labels, int64, float64) (storage.SeriesRef, error) {
	c.refs++
	return c.refs, nil
}
func (*countingAppender) Commit() error   { return nil }
func (*countingAppender) Rollback() error { return nil }

// The appender's transaction memory is pooled for the next one: it must not
// keep the caller's labels (thanos#8923 again) once Commit or Rollback
// returns, including the series it looked up by ref.
func TestAppendableKeepsNothingOfTheCallersAfterTheTransaction(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(map[bool]string{true: "commit", false: "rollback"}[commit], func(t *testing.T) {
			s := mustNew(t, Options{MaxExemplars: 100})
			a := Appendable(appendableFunc(func(context.Context) storage.Appender { return &countingAppender{} }), s)
			const others = 20 // the exemplar's series is past the last few: found through the index
			var tx *txn
			series, trace := func() (weak.Pointer[byte], weak.Pointer[byte]) {
				app := a.Appender(context.Background())
				buf := make([]byte, 0, 1<<20)
				sb, eb := labels.NewScratchBuilder(4), labels.NewScratchBuilder(2)
				l := aliasedLabels(buf, &sb, "__name__", "http_request_duration_seconds_bucket", "le", "0.25")
				ref, err := app.Append(0, l, 1, 1)
				require.NoError(t, err)
				for i := range others {
					_, err := app.Append(0, labels.FromStrings("__name__", fmt.Sprint("other_", i)), 1, 1)
					require.NoError(t, err)
				}
				e := exemplar.Exemplar{Labels: aliasedLabels(buf[4096:4096], &eb, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), Value: 1, Ts: 1, HasTs: true}
				_, err = app.AppendExemplar(ref, labels.EmptyLabels(), e)
				require.NoError(t, err)
				tx = app.(*appender).txn
				if commit {
					require.NoError(t, app.Commit())
				} else {
					require.NoError(t, app.Rollback())
				}
				return weak.Make(unsafe.StringData(l.Get("le"))), weak.Make(unsafe.StringData(e.Labels.Get("trace_id")))
			}()
			// Hold the transaction as the pool would hold it for the next one.
			require.NotNil(t, tx.byRef, "the lookup went through the index")
			require.True(t, collected(series, trace), "the pooled transaction pins the caller's labels")
			runtime.KeepAlive(tx)
			if commit {
				got := selectAll(t, s)
				require.Len(t, got, 1)
				require.Equal(t, `{__name__="http_request_duration_seconds_bucket", le="0.25"}`, got[0].SeriesLabels.String())
				require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", got[0].Exemplars[0].Labels.Get("trace_id"))
			} else {
				require.Zero(t, s.Stats().Exemplars)
			}
		})
	}
}

// A huge transaction's buffers are not kept for the next one.
func TestAppendableDoesNotPoolAHugeTransactionsMemory(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 100})
	app := Appendable(appendableFunc(func(context.Context) storage.Appender { return &countingAppender{} }), s).Appender(context.Background())
	series := labels.FromStrings("__name__", "m", "pod", strings.Repeat("p", 1000))
	for i := range 1100 { // ~1.1 MB of series labels pending
		_, err := app.AppendExemplar(0, series, exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true})
		require.NoError(t, err)
	}
	tx := app.(*appender).txn
	require.Greater(t, cap(tx.text), 1<<20)
	text := weak.Make(unsafe.SliceData(tx.text))
	require.NoError(t, app.Commit())
	require.LessOrEqual(t, cap(tx.text), 1<<20)
	require.Zero(t, cap(tx.pending))
	require.True(t, collected(text), "the pooled transaction (its builders) keeps the huge text alive")
	runtime.KeepAlive(tx)
	require.Equal(t, int64(100), s.Stats().Exemplars)
}

// With dedupelabels, rebuilding labels at Commit interns every value in the
// builders' symbol table: a pooled transaction must not keep them all.
func TestAppendablePooledTransactionsStayBounded(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 100})
	a := Appendable(appendableFunc(func(context.Context) storage.Appender { return &countingAppender{} }), s)
	series := labels.FromStrings("__name__", "m")
	for r := range 20 {
		app := a.Appender(context.Background())
		for i := range 500 {
			_, err := app.AppendExemplar(0, series, exemplar.Exemplar{Labels: traceID(r*500 + i), Value: 1, Ts: int64(r*500 + i), HasTs: true})
			require.NoError(t, err)
		}
		tx := app.(*appender).txn
		require.NoError(t, app.Commit())
		require.LessOrEqual(t, tx.syms.Len(), 4096, "request %d", r)
	}
}

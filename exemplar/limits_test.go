package exemplar

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
)

func traceID(i int) labels.Labels {
	return labels.FromStrings("trace_id", fmt.Sprintf("%016x%016x", uint64(i)*0x9e3779b97f4a7c15, uint64(i)))
}

func selectAll(t testing.TB, s *Store) []exemplar.QueryResult {
	t.Helper()
	got, err := s.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".*")})
	require.NoError(t, err)
	return got
}

func TestOptionsThatCannotWorkAreRefused(t *testing.T) {
	for _, o := range []Options{
		{},
		{MaxExemplars: -1},
		{MaxExemplars: MaxExemplarsLimit + 1},
		{MaxExemplars: 10, MaxBytes: -1},
		{MaxExemplars: 10, MaxBytes: MinBytes - 1},
		{MaxExemplars: 10, MaxAge: -time.Second},
		{MaxExemplars: 10, MaxAge: time.Microsecond},
		{MaxExemplars: 10, MaxPerSeries: -1},
		{MaxExemplars: 10, OOOWindow: -time.Second},
	} {
		_, err := New(o)
		require.ErrorIs(t, err, ErrInvalidOptions, "%+v", o)
	}
	s := mustNew(t, Options{MaxExemplars: 1})
	require.ErrorIs(t, s.SetLimits(Options{}), ErrInvalidOptions)
	require.Equal(t, int64(1), s.Stats().MaxExemplars, "a refused SetLimits changes nothing")
}

func TestNewAllocatesNothingForItsCapacity(t *testing.T) {
	// Prometheus preallocates 64 bytes per slot: 64 MB for an empty 1M store.
	// Measured on the heap, not taken from the store's own accounting.
	const capacity = 1 << 20
	base := liveHeap()
	s := mustNew(t, Options{MaxExemplars: capacity})
	empty := liveHeap() - base
	t.Logf("an empty store of capacity %d holds %d heap bytes (accounts %d)", capacity, empty, s.Stats().Bytes)
	require.Less(t, empty, int64(16<<10), "an empty store holds almost nothing")
	require.Equal(t, storeBytes, s.Stats().Bytes)

	require.NoError(t, s.AddExemplar(labels.FromStrings("__name__", "a"), exemplar.Exemplar{Labels: traceID(1), Ts: 1}))
	one := liveHeap() - base
	t.Logf("with one exemplar: %d heap bytes (accounts %d)", one, s.Stats().Bytes)
	require.Less(t, one, int64(64<<10), "one exemplar costs a page, not the capacity")
	require.Less(t, s.Stats().Bytes, int64(64<<10))
	runtime.KeepAlive(s)

	big := mustNew(t, Options{MaxExemplars: MaxExemplarsLimit})
	require.Equal(t, storeBytes, big.Stats().Bytes)
}

func TestStaleReAddIntoAFullStoreIsRefusedAndCounted(t *testing.T) {
	// Prometheus #9377: once a series' exemplars have been evicted, an old
	// exemplar re-sent by the target (OpenMetrics keeps exposing the last one)
	// is no longer a duplicate; Prometheus stores it by evicting a newer one.
	s := mustNew(t, Options{MaxExemplars: 3})
	quiet := labels.FromStrings("__name__", "quiet")
	busy := labels.FromStrings("__name__", "busy")
	old := exemplar.Exemplar{Labels: traceID(0), Value: 1, Ts: 10, HasTs: true}
	require.NoError(t, s.AddExemplar(quiet, old))
	for i := range 3 {
		require.NoError(t, s.AddExemplar(busy, exemplar.Exemplar{Labels: traceID(i + 1), Value: 2, Ts: int64(20 + i), HasTs: true}))
	}
	before := selectAll(t, s)

	require.ErrorIs(t, s.ValidateExemplar(quiet, old), storage.ErrOutOfOrderExemplar)
	require.ErrorIs(t, s.AddExemplar(quiet, old), storage.ErrOutOfOrderExemplar)
	st := s.Stats()
	require.Equal(t, uint64(1), st.Refused.StaleFull)
	require.Equal(t, uint64(1), st.OutOfOrder)
	require.Equal(t, before, selectAll(t, s), "nothing newer was evicted")

	theirs := newPrometheusStore(t, 3, 0)
	require.NoError(t, theirs.AddExemplar(quiet, old))
	for i := range 3 {
		require.NoError(t, theirs.AddExemplar(busy, exemplar.Exemplar{Labels: traceID(i + 1), Value: 2, Ts: int64(20 + i), HasTs: true}))
	}
	require.NoError(t, theirs.AddExemplar(quiet, old), "Prometheus takes it, evicting busy's exemplar at ts 20")
}

func TestHotSeriesAtMaxPerSeriesEvictsOnlyItsOwnOldest(t *testing.T) {
	for _, maxBytes := range []int64{0, 256 << 10} {
		t.Run(fmt.Sprintf("MaxBytes=%d", maxBytes), func(t *testing.T) {
			const quietSeries, perSeries = 500, 8
			s := mustNew(t, Options{MaxExemplars: 100_000, MaxBytes: maxBytes, MaxPerSeries: perSeries})
			for i := range quietSeries {
				l := labels.FromStrings("__name__", "quiet", "instance", strconv.Itoa(i))
				require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i)}))
			}
			hot := labels.FromStrings("__name__", "hot")
			for i := range 20_000 {
				require.NoError(t, s.AddExemplar(hot, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: int64(1000 + i)}))
				if i%1000 == 0 {
					requireInvariants(t, s)
				}
			}
			st := s.Stats()
			require.Equal(t, int64(quietSeries+1), st.Series, "every quiet series kept its exemplar")
			require.Equal(t, int64(quietSeries+perSeries), st.Exemplars)
			require.Zero(t, st.Evicted.Count+st.Evicted.Bytes+st.Evicted.Age, "only per-series evictions happened")
			require.Equal(t, uint64(20_000-perSeries), st.Evicted.PerSeries)
			got, err := s.Select(0, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "hot")})
			require.NoError(t, err)
			require.Len(t, got[0].Exemplars, perSeries)
			require.Equal(t, int64(1000+20_000-perSeries), got[0].Exemplars[0].Ts, "the hot series kept its newest")
			requireInvariants(t, s)
		})
	}
}

func TestExemplarOlderThanSeriesOldestIsRefusedWhenSeriesIsAtItsCap(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 100, MaxPerSeries: 2, OOOWindow: time.Second})
	l := labels.FromStrings("__name__", "a")
	require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Value: 1, Ts: 100}))
	require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Value: 2, Ts: 200}))
	require.ErrorIs(t, s.AddExemplar(l, exemplar.Exemplar{Value: 3, Ts: 50}), storage.ErrOutOfOrderExemplar)
	require.Equal(t, uint64(1), s.Stats().Refused.StaleSeries)
	require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Value: 4, Ts: 150}), "within the window and newer than the oldest: replaces it")
	got := selectAll(t, s)
	require.Equal(t, []int64{150, 200}, []int64{got[0].Exemplars[0].Ts, got[0].Exemplars[1].Ts})
}

func TestMaxAgeFreesAgedExemplarsAndNeverReturnsThem(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 1000, MaxAge: time.Minute, OOOWindow: time.Hour})
	lagging := labels.FromStrings("__name__", "lagging") // an app stamping exemplars in the past
	current := labels.FromStrings("__name__", "current")
	base := int64(10 * 60 * 1000)
	// Interleave so aged exemplars sit behind younger ones in ingestion order.
	for i := range 100 {
		require.NoError(t, s.AddExemplar(current, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: base + int64(i)*1000, HasTs: true}))
		require.NoError(t, s.AddExemplar(lagging, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: base + int64(i)*1000 - 30_000, HasTs: true}))
		requireInvariants(t, s)
	}
	st := s.Stats()
	cutoff := st.NewestTimestamp - time.Minute.Milliseconds()
	for _, r := range selectAll(t, s) {
		for _, e := range r.Exemplars {
			require.GreaterOrEqual(t, e.Ts, cutoff, "aged exemplar returned for %s", r.SeriesLabels)
		}
	}
	held := 0
	require.NoError(t, s.IterateExemplars(func(_ labels.Labels, e exemplar.Exemplar) error {
		require.GreaterOrEqual(t, e.Ts, cutoff)
		held++
		return nil
	}))
	require.Equal(t, int64(held), st.Exemplars, "aged exemplars are freed, not just hidden")
	// Current keeps i >= 39 (61), lagging i >= 69 (31).
	require.Equal(t, int64(92), st.Exemplars)
	require.Equal(t, uint64(108), st.Evicted.Age)

	require.ErrorIs(t, s.AddExemplar(lagging, exemplar.Exemplar{Value: -1, Ts: cutoff - 1, HasTs: true}), storage.ErrOutOfOrderExemplar)
	require.Equal(t, uint64(1), s.Stats().Refused.StaleAge)
}

func TestMaxBytesBoundsTheStoreAndEvictsOldestFirst(t *testing.T) {
	const maxBytes = 256 << 10
	s := mustNew(t, Options{MaxExemplars: 1 << 20, MaxBytes: maxBytes})
	var added []string
	for i := range 20_000 {
		l := labels.FromStrings("__name__", "requests", "instance", fmt.Sprintf("host-%d.example.com:9100", i%3000))
		require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: int64(i), HasTs: true}))
		added = append(added, traceID(i).Get("trace_id"))
		require.LessOrEqual(t, s.Stats().Bytes, int64(maxBytes))
		if i%2000 == 0 {
			requireInvariants(t, s)
		}
	}
	st := s.Stats()
	require.Positive(t, st.Evicted.Bytes)
	require.Zero(t, st.Evicted.Count)
	// Oldest first: what is held is exactly the last Exemplars added.
	var held []string
	require.NoError(t, s.IterateExemplars(func(_ labels.Labels, e exemplar.Exemplar) error {
		held = append(held, e.Labels.Get("trace_id"))
		return nil
	}))
	require.Equal(t, added[len(added)-len(held):], held)
	require.Greater(t, st.Bytes, int64(maxBytes)*3/4, "the budget is used, not wasted")
}

func TestExemplarLargerThanMaxBytesIsRefusedWithoutEvictingAnything(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 10, MaxBytes: MinBytes})
	small := labels.FromStrings("__name__", "small")
	require.NoError(t, s.AddExemplar(small, exemplar.Exemplar{Value: 1, Ts: 1}))
	huge := labels.FromStrings("__name__", "huge", "blob", strings.Repeat("x", MinBytes))
	err := s.AddExemplar(huge, exemplar.Exemplar{Value: 1, Ts: 2})
	require.ErrorIs(t, err, ErrExemplarTooLarge)
	require.Equal(t, int64(1), s.Stats().Exemplars, "nothing was evicted for it")
	require.Zero(t, s.Stats().Evicted.Bytes)
}

func TestSetLimitsShrinksEveryLimitAtOnceKeepingTheNewest(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 10_000})
	for i := range 5000 {
		l := labels.FromStrings("__name__", "m", "series", strconv.Itoa(i%50))
		require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: int64(i), HasTs: true}))
	}
	full := s.Stats()

	require.NoError(t, s.SetLimits(Options{MaxExemplars: 10_000, MaxPerSeries: 40}))
	require.Equal(t, int64(50*40), s.Stats().Exemplars)
	require.NoError(t, s.SetLimits(Options{MaxExemplars: 10_000, MaxPerSeries: 40, MaxAge: 1000 * time.Millisecond}))
	require.Equal(t, int64(1001), s.Stats().Exemplars, "ts 3999..4999 are within a second of the newest")
	require.NoError(t, s.SetLimits(Options{MaxExemplars: 500}))
	st := s.Stats()
	require.Equal(t, int64(500), st.Exemplars)
	require.Equal(t, int64(4500), st.OldestTimestamp, "the newest 500 are kept")
	require.Less(t, st.Bytes, full.Bytes/4, "memory follows what is held")
	require.NoError(t, s.SetLimits(Options{MaxExemplars: 500, MaxBytes: MinBytes}))
	st = s.Stats()
	require.LessOrEqual(t, st.Bytes, int64(MinBytes))
	require.Equal(t, int64(4999), st.NewestTimestamp)
	require.Positive(t, st.Evicted.Bytes)
	require.Positive(t, st.Evicted.PerSeries)
	require.Positive(t, st.Evicted.Age)
	require.Positive(t, st.Evicted.Count)
	requireInvariants(t, s)
}

func TestMetricsKeepPrometheusNamesAndAddBytesEvictionsRefusals(t *testing.T) {
	theirs := prometheus.NewRegistry()
	_ = tsdb.NewExemplarMetrics(theirs)
	upstream, err := theirs.Gather()
	require.NoError(t, err)

	reg := prometheus.NewRegistry()
	s, err := New(Options{MaxExemplars: 2, Registerer: reg})
	require.NoError(t, err)
	l := labels.FromStrings("__name__", "m")
	require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Value: 1, Ts: 10, HasTs: true}))
	require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Value: 2, Ts: 20, HasTs: true}))
	require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Value: 3, Ts: 30, HasTs: true}))
	// A new series' exemplar older than the one a full store would evict.
	require.ErrorIs(t, s.AddExemplar(labels.FromStrings("__name__", "late"), exemplar.Exemplar{Value: 4, Ts: 5, HasTs: true}), storage.ErrOutOfOrderExemplar)

	ours, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range ours {
		names[mf.GetName()] = true
	}
	for _, mf := range upstream {
		require.True(t, names[mf.GetName()], "Prometheus' %s is missing", mf.GetName())
	}
	require.Equal(t, 3.0, gatheredValue(t, reg, "prometheus_tsdb_exemplar_exemplars_appended_total"))
	require.Equal(t, 2.0, gatheredValue(t, reg, "prometheus_tsdb_exemplar_exemplars_in_storage"))
	require.Equal(t, 0.02, gatheredValue(t, reg, "prometheus_tsdb_exemplar_last_exemplars_timestamp_seconds"))
	require.Equal(t, 1.0, gatheredValue(t, reg, "prometheus_tsdb_exemplar_out_of_order_exemplars_total"))
	require.Equal(t, float64(s.Stats().Bytes), gatheredValue(t, reg, "prometheus_tsdb_exemplar_bytes_in_storage"))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP prometheus_tsdb_exemplar_evicted_exemplars_total Total number of exemplars evicted, by the limit that required it.
# TYPE prometheus_tsdb_exemplar_evicted_exemplars_total counter
prometheus_tsdb_exemplar_evicted_exemplars_total{reason="age"} 0
prometheus_tsdb_exemplar_evicted_exemplars_total{reason="budget"} 0
prometheus_tsdb_exemplar_evicted_exemplars_total{reason="bytes"} 0
prometheus_tsdb_exemplar_evicted_exemplars_total{reason="count"} 1
prometheus_tsdb_exemplar_evicted_exemplars_total{reason="per_series"} 0
# HELP prometheus_tsdb_exemplar_refused_exemplars_total Total number of stale re-adds refused (returned as out of order), by reason.
# TYPE prometheus_tsdb_exemplar_refused_exemplars_total counter
prometheus_tsdb_exemplar_refused_exemplars_total{reason="stale_age"} 0
prometheus_tsdb_exemplar_refused_exemplars_total{reason="stale_full"} 1
prometheus_tsdb_exemplar_refused_exemplars_total{reason="stale_series"} 0
`), "prometheus_tsdb_exemplar_evicted_exemplars_total", "prometheus_tsdb_exemplar_refused_exemplars_total"))

	// A second store on the same registry is refused clearly; after Close the
	// name is free again (a tenant re-created after deletion).
	_, err = New(Options{MaxExemplars: 2, Registerer: reg})
	require.Error(t, err)
	require.NoError(t, s.Close())
	s2, err := New(Options{MaxExemplars: 2, Registerer: reg})
	require.NoError(t, err)
	require.NoError(t, s2.Close())
}

// gatheredValue returns the value of the single, label-less metric name.
func gatheredValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		require.Len(t, mf.GetMetric(), 1)
		m := mf.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not gathered", name)
	return 0
}

func TestCloseReleasesEverythingAndDisablesTheStore(t *testing.T) {
	s, err := New(Options{MaxExemplars: 100})
	require.NoError(t, err)
	l := labels.FromStrings("__name__", "m")
	require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 1}))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "idempotent")
	st := s.Stats()
	require.Zero(t, st.Exemplars)
	require.Zero(t, st.Bytes)
	require.True(t, errors.Is(s.AddExemplar(l, exemplar.Exemplar{Value: 2, Ts: 2}), storage.ErrExemplarsDisabled))
	require.True(t, errors.Is(s.ValidateExemplar(l, exemplar.Exemplar{Value: 2, Ts: 2}), storage.ErrExemplarsDisabled))
	require.Empty(t, selectAll(t, s))
	require.ErrorIs(t, s.SetLimits(Options{MaxExemplars: 1}), ErrInvalidOptions)
	require.Equal(t, 0, s.Resize(10))
}

func TestAddNeverEvictsForAnExemplarItThenRefuses(t *testing.T) {
	// ValidateExemplar accepts an exemplar that fits MaxBytes with the store
	// otherwise empty; AddExemplar must then store it. An emptied ring still
	// held the page its head stopped in, so an exemplar taking two slots from
	// the last slot of that page did not fit: every exemplar was evicted and
	// the add refused with ErrExemplarTooLarge.
	s := mustNew(t, Options{MaxExemplars: 1000, MaxBytes: MinBytes})
	small := labels.FromStrings("__name__", "small")
	for i := range pageSlots - 1 {
		require.NoError(t, s.AddExemplar(small, exemplar.Exemplar{Value: float64(i), Ts: int64(i), HasTs: true}))
	}
	twoSlots := labels.FromStrings("trace_id", strings.Repeat("Z", 60)) // not hex: 60 bytes do not fit inline
	e := exemplar.Exemplar{Labels: twoSlots, Value: 1, Ts: 10_000, HasTs: true}
	enc, newNames, err := encodeLabels(nil, twoSlots, &s.syms)
	require.NoError(t, err)
	require.Equal(t, 1, contSlotsFor(len(enc)))
	// Series labels that leave less than a page of MaxBytes once stored alone.
	var big labels.Labels
	for pad := 1000; ; pad += 64 {
		big = labels.FromStrings("__name__", "big", "blob", strings.Repeat("x", pad))
		if s.minimalFootprint(big, &e, len(enc), newNames) > MinBytes-pageBytes/2 {
			break
		}
	}
	require.LessOrEqual(t, s.minimalFootprint(big, &e, len(enc), newNames), int64(MinBytes))

	require.NoError(t, s.ValidateExemplar(big, e))
	require.NoError(t, s.AddExemplar(big, e))
	got := selectAll(t, s)
	require.Len(t, got, 1)
	require.Equal(t, "big", got[0].SeriesLabels.Get("__name__"))
	requireInvariants(t, s)
}

func TestResizeToZeroKeepsNoPage(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 1000})
	for i := range 10 {
		require.NoError(t, s.AddExemplar(labels.FromStrings("__name__", "m"), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
	}
	require.Equal(t, 0, s.Resize(0))
	require.Equal(t, s.fixedBytes(), s.Stats().Bytes, "a disabled store holds nothing for exemplars")
	requireInvariants(t, s)
}

func TestHotSeriesReplacingItsOnlyExemplarAtMaxBytesNeverEvictsAQuietOne(t *testing.T) {
	// With MaxPerSeries=1 the hot series' own exemplar goes and its series
	// with it, then the series is added back. The byte limit must judge the
	// re-add by what the store holds after that removal: judged by the count
	// from before it, the series labels were paid for twice and a quiet
	// series' exemplar was evicted to make room that was already there.
	s := mustNew(t, Options{MaxExemplars: 1 << 20})
	quiet := func(i int) labels.Labels {
		return labels.FromStrings("__name__", "quiet", "instance", fmt.Sprintf("host-%d.example.com:9100", i))
	}
	for i := 0; s.Stats().Bytes < MinBytes; i++ {
		require.NoError(t, s.AddExemplar(quiet(i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
	}
	hot := labels.FromStrings("__name__", "hot", "instance", "host-hot.example.com:9100")
	require.NoError(t, s.AddExemplar(hot, exemplar.Exemplar{Labels: traceID(0), Value: 0, Ts: 1 << 20, HasTs: true}))
	// Not a byte to spare.
	require.NoError(t, s.SetLimits(Options{MaxExemplars: 1 << 20, MaxBytes: s.Stats().Bytes, MaxPerSeries: 1}))
	before := s.Stats()
	quietBefore := selectAll(t, s)

	for i := 1; i <= 5000; i++ {
		require.NoError(t, s.AddExemplar(hot, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: 1<<20 + int64(i), HasTs: true}))
		if st := s.Stats(); st.Evicted.Bytes != before.Evicted.Bytes || st.Series != before.Series {
			t.Fatalf("hot add %d: byte evictions %d -> %d, series %d -> %d: a quiet series paid for the hot one",
				i, before.Evicted.Bytes, st.Evicted.Bytes, before.Series, st.Series)
		}
		if i%500 == 0 {
			requireInvariants(t, s)
		}
	}
	st := s.Stats()
	require.Equal(t, uint64(5000), st.Evicted.PerSeries-before.Evicted.PerSeries)
	require.LessOrEqual(t, st.Bytes, before.MaxBytes)
	after := selectAll(t, s)
	require.Len(t, after, len(quietBefore))
	for i := range after {
		if after[i].SeriesLabels.Get("__name__") == "quiet" {
			// As text: in the dedupelabels build equal labels may sit on
			// different symbol tables.
			require.Equal(t, fmt.Sprint(quietBefore[i]), fmt.Sprint(after[i]), "quiet series are untouched")
		}
	}
}

func TestCountEvictionFreesWhatTheByteLimitThenSees(t *testing.T) {
	// At MaxExemplars every add of a new series evicts the oldest exemplar,
	// and its series, by count; that frees what the new series costs. The byte
	// limit judged by the count from before that eviction evicted a second
	// exemplar for nothing.
	const n = 1000
	s := mustNew(t, Options{MaxExemplars: n})
	series := func(i int) labels.Labels {
		return labels.FromStrings("__name__", "requests", "instance", fmt.Sprintf("host-%06d.example.com:9100", i))
	}
	i := 0
	for ; i < 4*n; i++ { // past the first cycles of the ring's pages: bytes are steady
		require.NoError(t, s.AddExemplar(series(i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
	}
	require.GreaterOrEqual(t, s.Stats().Bytes, int64(MinBytes))
	require.NoError(t, s.SetLimits(Options{MaxExemplars: n, MaxBytes: s.Stats().Bytes}))
	before := s.Stats()
	for end := i + 2*n; i < end; i++ {
		require.NoError(t, s.AddExemplar(series(i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
	}
	st := s.Stats()
	require.Equal(t, before.Evicted.Bytes, st.Evicted.Bytes, "the count limit alone made room")
	require.Equal(t, int64(n), st.Exemplars)
	require.LessOrEqual(t, st.Bytes, before.MaxBytes)
	requireInvariants(t, s)
}

func TestSeriesAtMaxPerSeriesGetsTheByteChecksBeforeItDropsItsOwnOldest(t *testing.T) {
	// A series at MaxPerSeries skipped the checks that refuse an exemplar
	// before anything is evicted for it: its own oldest went, then the add
	// was refused (too large), or another series' exemplar went for a stale
	// one.
	t.Run("too large", func(t *testing.T) {
		s := mustNew(t, Options{MaxExemplars: 100, MaxPerSeries: 1})
		l := labels.FromStrings("__name__", "m", "pod", strings.Repeat("p", 24<<10))
		require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 1, HasTs: true}))
		// Not a byte to spare: a new label name needs a symbol the store
		// cannot hold even with only this exemplar in it.
		require.NoError(t, s.SetLimits(Options{MaxExemplars: 100, MaxPerSeries: 1, MaxBytes: s.Stats().Bytes}))
		before, held := s.Stats(), selectAll(t, s)
		e := exemplar.Exemplar{Labels: labels.FromStrings("parent_span_id", "00f067aa0ba902b7"), Value: 2, Ts: 2, HasTs: true}
		require.ErrorIs(t, s.ValidateExemplar(l, e), ErrExemplarTooLarge)
		require.ErrorIs(t, s.AddExemplar(l, e), ErrExemplarTooLarge)
		require.Equal(t, before, s.Stats(), "nothing was evicted for it")
		require.Equal(t, held, selectAll(t, s))
		requireInvariants(t, s)
	})
	t.Run("stale", func(t *testing.T) {
		s := mustNew(t, Options{MaxExemplars: 1 << 20, MaxPerSeries: 1})
		first := labels.FromStrings("__name__", "first")
		hot := labels.FromStrings("__name__", "hot")
		// Ingestion order is not timestamp order: first, at ts 1000, is the
		// next to go; hot's exemplar at ts 10 was added after it.
		require.NoError(t, s.AddExemplar(first, exemplar.Exemplar{Labels: traceID(0), Value: 1, Ts: 1000, HasTs: true}))
		require.NoError(t, s.AddExemplar(hot, exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 10, HasTs: true}))
		// Fill to the end of a page, then allow not a byte more.
		for i := 2; s.Stats().Bytes < MinBytes || (s.ring.tail-s.ring.base)%pageSlots != 0; i++ {
			l := labels.FromStrings("__name__", "filler", "instance", fmt.Sprintf("host-%d.example.com:9100", i))
			require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(2000 + i), HasTs: true}))
		}
		require.NoError(t, s.SetLimits(Options{MaxExemplars: 1 << 20, MaxPerSeries: 1, MaxBytes: s.Stats().Bytes}))
		before, held := s.Stats(), selectAll(t, s)

		// Two slots where hot frees one: storing it would evict first's
		// exemplar, which is newer.
		twoSlots := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", strings.Repeat("Z", 60)), Value: 2, Ts: 20, HasTs: true}
		require.ErrorIs(t, s.ValidateExemplar(hot, twoSlots), storage.ErrOutOfOrderExemplar)
		require.ErrorIs(t, s.AddExemplar(hot, twoSlots), storage.ErrOutOfOrderExemplar)
		st := s.Stats()
		require.Equal(t, before.Refused.StaleFull+1, st.Refused.StaleFull)
		require.Equal(t, before.Evicted, st.Evicted, "nothing was evicted for it")
		require.Equal(t, held, selectAll(t, s))

		// One slot for the one hot frees: stored, and no other series pays.
		require.NoError(t, s.AddExemplar(hot, exemplar.Exemplar{Labels: traceID(-1), Value: 3, Ts: 20, HasTs: true}))
		st = s.Stats()
		require.Equal(t, before.Evicted.PerSeries+1, st.Evicted.PerSeries)
		require.Equal(t, before.Evicted.Bytes, st.Evicted.Bytes)
		require.Equal(t, before.Series, st.Series)
		requireInvariants(t, s)
	})
}

func TestATraceAndASpanIDTakeOneSlot(t *testing.T) {
	// The slot is sized for this: 28 inline bytes hold trace_id and span_id
	// hex-packed (1+1+16 and 1+1+8 bytes).
	s := mustNew(t, Options{MaxExemplars: 10})
	for i, ls := range []labels.Labels{
		labels.FromStrings("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
		labels.FromStrings("span_id", "00f067aa0ba902b7", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
	} {
		require.NoError(t, s.AddExemplar(labels.FromStrings("__name__", "a"), exemplar.Exemplar{Labels: ls, Value: 1, Ts: int64(i), HasTs: true}))
		require.Equal(t, uint32(1), s.ring.at(s.ring.tail-1).width(), "%s", ls)
	}
	got := selectAll(t, s)
	require.Len(t, got, 1)
	require.Len(t, got[0].Exemplars, 2)
	require.Equal(t, "00f067aa0ba902b7", got[0].Exemplars[1].Labels.Get("span_id"))
	requireInvariants(t, s)
}

func TestLabelsOfEveryLengthAroundTheSlotBoundariesRoundTrip(t *testing.T) {
	// Inline, just past inline, and across one and two continuation slots:
	// each layout stores its length differently (see slot.meta).
	s := mustNew(t, Options{MaxExemplars: 1000})
	series := labels.FromStrings("__name__", "a")
	var want []labels.Labels
	for n := 0; n <= inlineContBytes+2*slotBytes+2; n++ {
		// Two-byte runes, so the longest stays within 128 runes; not hex:
		// never packed.
		ls := labels.FromStrings("note", strings.Repeat("z", n%2)+strings.Repeat("é", n/2))
		want = append(want, ls)
		require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: ls, Value: float64(n), Ts: int64(n), HasTs: n%2 == 0}))
	}
	got := selectAll(t, s)
	require.Len(t, got, 1)
	require.Len(t, got[0].Exemplars, len(want))
	for i, e := range got[0].Exemplars {
		require.Equal(t, want[i].String(), e.Labels.String(), "label value of %d bytes", i)
		require.Equal(t, i%2 == 0, e.HasTs, "label value of %d bytes", i)
	}
	requireInvariants(t, s)
}

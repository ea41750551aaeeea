package exemplar

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// The behaviours Prometheus' own tsdb/exemplar_test.go checks on its
// CircularExemplarStorage, restated for this store. Where the answer is the
// same, each case also runs against Prometheus' store, so the expectation
// cannot drift from upstream.

func mustNew(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := New(o)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestValidateExemplarAnswersWhatAddExemplarWouldDo(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 2})
	series := labels.FromStrings("service", "asdf")
	first := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "qwerty"), Value: 0.1, Ts: 1}
	require.NoError(t, s.ValidateExemplar(series, first))
	require.NoError(t, s.AddExemplar(series, first))

	second := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "zxcvb"), Value: 0.1, Ts: 2}
	require.NoError(t, s.ValidateExemplar(series, second))
	require.NoError(t, s.AddExemplar(series, second))
	require.Equal(t, storage.ErrDuplicateExemplar, s.ValidateExemplar(series, second))

	sameButLater := second
	sameButLater.Ts = 3 // HasTs is false: the timestamp is not part of equality
	require.Equal(t, storage.ErrDuplicateExemplar, s.ValidateExemplar(series, sameButLater))

	older := second
	older.Ts, older.Value = 1, 0.3
	require.Equal(t, storage.ErrOutOfOrderExemplar, s.ValidateExemplar(series, older))

	tooLong := exemplar.Exemplar{Labels: labels.FromStrings("a", strings.Repeat("b", exemplar.ExemplarMaxLabelSetLength)), Value: 0.1, Ts: 2}
	require.Equal(t, storage.ErrExemplarLabelLength, s.ValidateExemplar(series, tooLong))

	require.Equal(t, int64(2), s.Stats().Exemplars, "validation changes nothing")
}

func TestAddExemplarKeepsEachSeriesSortedAndEvictsOldestAdded(t *testing.T) {
	s1 := labels.FromStrings("trace_id", "foo")
	s2 := labels.FromStrings("trace_id", "bar")
	e := func(l labels.Labels, v float64, ts int64) exemplar.Exemplar {
		return exemplar.Exemplar{Labels: l, Value: v, Ts: ts}
	}
	cases := []struct {
		name  string
		size  int64
		add   []exemplar.Exemplar
		query labels.Labels
		want  []exemplar.Exemplar
		err   error
		// upstreamDiffers marks the documented difference: a full store refuses
		// an exemplar older than the one it would evict (Prometheus #9377).
		upstreamDiffers bool
	}{
		{name: "newer goes after newest", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 2)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 2)}},
		{name: "older goes before oldest", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 2), e(s1, 0.2, 1)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.2, 1), e(s1, 0.1, 2)}},
		{name: "in between goes in between", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 3), e(s1, 0.3, 2)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.3, 2), e(s1, 0.2, 3)}},
		{name: "full store evicts the oldest added", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 2), e(s1, 0.3, 3), e(s1, 0.4, 4)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.2, 2), e(s1, 0.3, 3), e(s1, 0.4, 4)}},
		{name: "full store refuses an exemplar older than the one it would evict", size: 3,
			add: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 2), e(s1, 0.3, 3), e(s1, 0.4, 0)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 2), e(s1, 0.3, 3)}, err: storage.ErrOutOfOrderExemplar, upstreamDiffers: true},
		{name: "full store takes an out-of-order exemplar newer than the one it evicts", size: 3,
			add: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 3), e(s1, 0.3, 4), e(s1, 0.4, 2)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.4, 2), e(s1, 0.2, 3), e(s1, 0.3, 4)}},
		{name: "evicting the exemplar an out-of-order one goes after", size: 3,
			add: []exemplar.Exemplar{e(s1, 0.2, 2), e(s1, 0.1, 1), e(s1, 0.5, 5), e(s1, 0.3, 3)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.3, 3), e(s1, 0.5, 5)}},
		{name: "outside the out-of-order window is refused", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 200), e(s1, 0.2, 1)},
			query: s1, want: []exemplar.Exemplar{e(s1, 0.1, 200)}, err: storage.ErrOutOfOrderExemplar},
		{name: "series are kept apart", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 3), e(s2, 0.3, 4)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 3)}},
		{name: "one series' adds evict another's oldest", size: 3, add: []exemplar.Exemplar{e(s2, 0.1, 1), e(s2, 0.2, 2), e(s2, 0.3, 3), e(s1, 0.4, 4)}, query: s2,
			want: []exemplar.Exemplar{e(s2, 0.2, 2), e(s2, 0.3, 3)}},
		{name: "a stale re-add into a full store keeps the other series' newer exemplars", size: 3,
			add: []exemplar.Exemplar{e(s2, 0.1, 3), e(s2, 0.2, 2), e(s2, 0.3, 4), e(s1, 0.4, 4), e(s1, 0.5, 1)}, query: s2,
			want: []exemplar.Exemplar{e(s2, 0.2, 2), e(s2, 0.3, 4)}, err: storage.ErrOutOfOrderExemplar, upstreamDiffers: true},
		{name: "a duplicate of the newest is ignored", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 3), e(s1, 0.1, 3)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 3)}},
		{name: "a duplicate is ignored even when full", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 3), e(s1, 0.2, 4), e(s1, 0.3, 5), e(s1, 0.3, 5)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 3), e(s1, 0.2, 4), e(s1, 0.3, 5)}},
		{name: "zero timestamps are valid", size: 3, add: []exemplar.Exemplar{e(s1, 0.1, 0), e(s1, 0.2, 0)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.1, 0), e(s1, 0.2, 0)}},
		{name: "labels longer than 128 runes are refused", size: 3,
			add: []exemplar.Exemplar{e(labels.FromStrings("a", strings.Repeat("b", exemplar.ExemplarMaxLabelSetLength)), 0.1, 2)},
			err: storage.ErrExemplarLabelLength},
		{name: "native histogram buckets re-sent are ignored", size: 6,
			add:   []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 2), e(s1, 0.3, 3), e(s1, 0.1, 1), e(s1, 0.2, 2), e(s1, 0.3, 3)},
			query: s1, want: []exemplar.Exemplar{e(s1, 0.1, 1), e(s1, 0.2, 2), e(s1, 0.3, 3)}},
		{name: "a series whose only exemplar is evicted by its own add keeps the new one", size: 2,
			add: []exemplar.Exemplar{e(s1, 0.1, 1), e(s2, 0.2, 2), e(s1, 0.3, 3)}, query: s1,
			want: []exemplar.Exemplar{e(s1, 0.3, 3)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ours := mustNew(t, Options{MaxExemplars: tc.size, OOOWindow: 100 * time.Millisecond})
			theirs := newPrometheusStore(t, tc.size, 100)
			var ourErr, theirErr error
			for _, ex := range tc.add {
				if ourErr = ours.AddExemplar(ex.Labels, ex); ourErr != nil {
					break
				}
			}
			for _, ex := range tc.add {
				if theirErr = theirs.AddExemplar(ex.Labels, ex); theirErr != nil {
					break
				}
			}
			if tc.err == nil {
				require.NoError(t, ourErr)
			} else {
				require.ErrorIs(t, ourErr, tc.err)
			}
			if tc.upstreamDiffers {
				require.NoError(t, theirErr, "Prometheus keeps the stale re-add")
				require.Equal(t, uint64(1), ours.Stats().Refused.StaleFull)
			} else {
				require.Equal(t, theirErr, ourErr)
			}
			if tc.query.IsEmpty() {
				return
			}
			m := []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "trace_id", tc.query.Get("trace_id"))}
			got, err := ours.Select(0, 1000, m)
			require.NoError(t, err)
			require.Len(t, got, 1)
			requireExemplarsEqual(t, tc.want, got[0].Exemplars)
			if !tc.upstreamDiffers {
				upstream, err := theirs.Select(0, 1000, m)
				require.NoError(t, err)
				requireExemplarsEqual(t, upstream[0].Exemplars, got[0].Exemplars)
			}
			requireInvariants(t, ours)
		})
	}
}

func requireExemplarsEqual(t *testing.T, want, got []exemplar.Exemplar) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.True(t, sameExemplar(want[i], got[i]), "exemplar %d: want %+v, got %+v", i, want[i], got[i])
	}
}

func TestOverflowKeepsTheNewestAndSelectReturnsThemInOrder(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 5})
	series := labels.FromStrings("service", "asdf")
	var added []exemplar.Exemplar
	for i := range 6 {
		e := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "a"), Value: float64(i+1) / 10, Ts: int64(101 + i)}
		require.NoError(t, s.AddExemplar(series, e))
		added = append(added, e)
	}
	got, err := s.Select(100, 110, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "service", "asdf")})
	require.NoError(t, err)
	require.Len(t, got, 1)
	requireExemplarsEqual(t, added[1:], got[0].Exemplars)
}

func TestSelectReturnsOnlyTheMatchingSeries(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 5})
	l1 := labels.FromStrings("__name__", "test_metric", "service", "asdf")
	l2 := labels.FromStrings("__name__", "test_metric2", "service", "qwer")
	for i := range 5 {
		require.NoError(t, s.AddExemplar(l1, exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "a"), Value: float64(i+1) / 10, Ts: int64(101 + i)}))
		require.NoError(t, s.AddExemplar(l2, exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "b"), Value: float64(i+1) / 10, Ts: int64(101 + i)}))
	}
	// Ten adds into five slots: l1 keeps its last two, l2 its last three.
	for name, want := range map[string]int{"test_metric": 2, "test_metric2": 3} {
		got, err := s.Select(100, 200, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", name)})
		require.NoError(t, err)
		require.Len(t, got, 1)
		require.Equal(t, name, got[0].SeriesLabels.Get("__name__"))
		require.Len(t, got[0].Exemplars, want)
	}
}

func TestSelectTimeRangeIsInclusive(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 5})
	series := labels.FromStrings("service", "asdf")
	for i := range 5 {
		require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: labels.FromStrings("trace_id", strconv.Itoa(i)), Value: 0.1, Ts: int64(101 + i)}))
	}
	got, err := s.Select(102, 104, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "service", "asdf")})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Len(t, got[0].Exemplars, 3)
	require.Equal(t, int64(102), got[0].Exemplars[0].Ts)
	require.Equal(t, int64(104), got[0].Exemplars[2].Ts)
}

func TestSelectReturnsASeriesMatchedByTwoMatcherSetsOnce(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 4})
	series := labels.FromStrings("service", "asdf", "cluster", "us-central1")
	require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "qwerty"), Value: 0.1, Ts: 12}))
	got, err := s.Select(0, 100,
		[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "service", "asdf")},
		[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "cluster", "us-central1")})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Len(t, got[0].Exemplars, 1)
}

func TestSeriesLeavesTheIndexWithItsLastExemplar(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 2})
	l1 := labels.FromStrings("service", "asdf")
	l2 := labels.FromStrings("service", "qwer")
	require.NoError(t, s.AddExemplar(l1, exemplar.Exemplar{Value: 1, Ts: 1}))
	require.NoError(t, s.AddExemplar(l2, exemplar.Exemplar{Value: 2, Ts: 2}))
	require.NoError(t, s.AddExemplar(l2, exemplar.Exemplar{Value: 3, Ts: 3}))

	_, found := s.series.find(s.seriesHash(newSeriesKey(l1, nil)), newSeriesKey(l1, nil))
	require.False(t, found, "l1's last exemplar was evicted: it must be gone from the index")
	require.Equal(t, int64(1), s.Stats().Series)

	require.NoError(t, s.AddExemplar(l1, exemplar.Exemplar{Value: 4, Ts: 4}))
	require.Equal(t, int64(2), s.Stats().Series)
	got, err := s.Select(0, 10, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "service", "qwer")})
	require.NoError(t, err)
	require.Len(t, got[0].Exemplars, 1, "l2 lost its oldest to l1's add")
	require.Equal(t, int64(3), got[0].Exemplars[0].Ts)
	requireInvariants(t, s)
}

func TestResizeKeepsTheNewest(t *testing.T) {
	cases := []struct {
		name               string
		start, to          int64
		present, absent    []int
		kept               int
		disabledAfterwards bool
	}{
		{name: "grow", start: 100, to: 200, present: []int{99, 98, 1, 0}, absent: []int{100}, kept: 100},
		{name: "shrink", start: 100, to: 50, present: []int{99, 98, 50}, absent: []int{49, 1, 0}, kept: 50},
		{name: "shrink to zero disables", start: 100, to: 0, absent: []int{99, 0}, kept: 0, disabledAfterwards: true},
		{name: "negative disables", start: 100, to: -1, absent: []int{99, 0}, kept: 0, disabledAfterwards: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := mustNew(t, Options{MaxExemplars: tc.start})
			theirs := newPrometheusStore(t, tc.start, 0)
			for i := range int(tc.start) {
				l := labels.FromStrings("service", strconv.Itoa(i))
				e := exemplar.Exemplar{Value: float64(i), Ts: int64(i)}
				require.NoError(t, s.AddExemplar(l, e))
				require.NoError(t, theirs.AddExemplar(l, e))
			}
			require.Equal(t, tc.kept, s.Resize(tc.to))
			require.Equal(t, theirs.Resize(tc.to), tc.kept)
			for _, i := range tc.present {
				got, err := s.Select(0, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "service", strconv.Itoa(i))})
				require.NoError(t, err)
				require.NotEmpty(t, got, "series %d", i)
			}
			for _, i := range tc.absent {
				got, err := s.Select(0, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "service", strconv.Itoa(i))})
				require.NoError(t, err)
				require.Empty(t, got, "series %d", i)
			}
			if tc.disabledAfterwards {
				require.Equal(t, storage.ErrExemplarsDisabled, s.AddExemplar(labels.FromStrings("a", "b"), exemplar.Exemplar{Ts: 1000}))
				require.Equal(t, storage.ErrExemplarsDisabled, theirs.AddExemplar(labels.FromStrings("a", "b"), exemplar.Exemplar{Ts: 1000}))
				require.Equal(t, 0, s.Resize(10))
				require.NoError(t, s.AddExemplar(labels.FromStrings("a", "b"), exemplar.Exemplar{Ts: 1000}), "a later Resize enables it again")
			}
			requireInvariants(t, s)
		})
	}
}

func TestAddExemplarAndResizeRunConcurrently(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 1})
	series := labels.FromStrings("service", "asdf")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 200 {
			e := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", "qwerty"), Value: float64(i), Ts: int64(i)}
			if err := s.AddExemplar(series, e); err != nil {
				t.Errorf("add %d: %v", i, err)
				return
			}
		}
	}()
	for i := range 200 {
		s.Resize(int64(i%17 + 1))
	}
	wg.Wait()
	requireInvariants(t, s)
}

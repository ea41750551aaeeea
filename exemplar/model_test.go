package exemplar

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// model is the store's specification written as plainly as possible: a slice
// in insertion order, scanned on every call. The randomised test and the fuzz
// target require the store to agree with it on every answer and on content.
type model struct {
	maxExemplars, oooMs, maxAgeMs, maxPerSeries int64
	held                                        []modelEntry // insertion order
	seq                                         int
	newest                                      int64
	haveNewest                                  bool
}

type modelEntry struct {
	series labels.Labels
	e      exemplar.Exemplar
	seq    int
}

func newModel(o Options) *model {
	return &model{maxExemplars: o.MaxExemplars, oooMs: o.OOOWindow.Milliseconds(), maxAgeMs: o.MaxAge.Milliseconds(), maxPerSeries: int64(o.MaxPerSeries)}
}

// list returns the series' exemplars by timestamp, ties in insertion order.
func (m *model) list(series labels.Labels) []modelEntry {
	var out []modelEntry
	for _, h := range m.held {
		if labels.Equal(h.series, series) {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(a, b modelEntry) int {
		if a.e.Ts != b.e.Ts {
			return cmpInt(a.e.Ts, b.e.Ts)
		}
		return cmpInt(int64(a.seq), int64(b.seq))
	})
	return out
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *model) remove(seq int) {
	m.held = slices.DeleteFunc(m.held, func(h modelEntry) bool { return h.seq == seq })
}

func (m *model) cutoff() int64 {
	if m.newest < math.MinInt64+m.maxAgeMs {
		return math.MinInt64
	}
	return m.newest - m.maxAgeMs
}

// verdict is what Validate says: nil, ErrDuplicateExemplar or
// ErrOutOfOrderExemplar; noop means Add returns nil without storing.
func (m *model) verdict(series labels.Labels, e exemplar.Exemplar) (noop bool, refusal string, err error) {
	list := m.list(series)
	if n := len(list); n > 0 {
		newest := list[n-1].e
		if newest.Equals(e) {
			return true, "", storage.ErrDuplicateExemplar
		}
		if (e.Ts < newest.Ts && e.Ts <= newest.Ts-m.oooMs) ||
			(e.Ts == newest.Ts && e.Value < newest.Value) ||
			(e.Ts == newest.Ts && e.Value == newest.Value && e.Labels.Hash() < newest.Labels.Hash()) {
			return false, "", storage.ErrOutOfOrderExemplar
		}
		if e.Ts >= list[0].e.Ts && e.Ts < newest.Ts {
			i := len(list) - 1
			for list[i].e.Ts > e.Ts {
				i--
			}
			if list[i].e.Ts == e.Ts {
				return true, "", nil
			}
		}
	}
	if m.maxAgeMs > 0 && m.haveNewest && e.Ts < m.cutoff() {
		return false, "stale_age", storage.ErrOutOfOrderExemplar
	}
	if len(list) > 0 && m.maxPerSeries > 0 && int64(len(list)) >= m.maxPerSeries {
		if e.Ts < list[0].e.Ts {
			return false, "stale_series", storage.ErrOutOfOrderExemplar
		}
		return false, "", nil
	}
	if len(m.held) > 0 && int64(len(m.held)) >= m.maxExemplars && e.Ts < m.held[0].e.Ts {
		return false, "stale_full", storage.ErrOutOfOrderExemplar
	}
	return false, "", nil
}

func (m *model) add(series labels.Labels, e exemplar.Exemplar) error {
	noop, _, err := m.verdict(series, e)
	if err == storage.ErrDuplicateExemplar || noop {
		return nil
	}
	if err != nil {
		return err
	}
	if !m.haveNewest || e.Ts > m.newest {
		m.newest, m.haveNewest = e.Ts, true
		if m.maxAgeMs > 0 {
			m.held = slices.DeleteFunc(m.held, func(h modelEntry) bool { return h.e.Ts < m.cutoff() })
		}
	}
	if m.maxPerSeries > 0 {
		for list := m.list(series); int64(len(list)) >= m.maxPerSeries; list = list[1:] {
			m.remove(list[0].seq)
		}
	}
	for int64(len(m.held)) >= m.maxExemplars {
		m.held = m.held[1:]
	}
	m.seq++
	m.held = append(m.held, modelEntry{series: series, e: e, seq: m.seq})
	return nil
}

// setLimits applies limits in the store's order: per series, age, count.
func (m *model) setLimits(o Options) {
	m.maxExemplars, m.oooMs, m.maxAgeMs, m.maxPerSeries = o.MaxExemplars, o.OOOWindow.Milliseconds(), o.MaxAge.Milliseconds(), int64(o.MaxPerSeries)
	if m.maxPerSeries > 0 {
		seen := map[string]bool{}
		for _, h := range slices.Clone(m.held) {
			k := h.series.String()
			if seen[k] {
				continue
			}
			seen[k] = true
			for list := m.list(h.series); int64(len(list)) > m.maxPerSeries; list = list[1:] {
				m.remove(list[0].seq)
			}
		}
	}
	if m.maxAgeMs > 0 && m.haveNewest {
		m.held = slices.DeleteFunc(m.held, func(h modelEntry) bool { return h.e.Ts < m.cutoff() })
	}
	for int64(len(m.held)) > m.maxExemplars {
		m.held = m.held[1:]
	}
}

// trimTo evicts oldest first down to n: the byte limit's evictions, which the
// model cannot predict but whose order it can check.
func (m *model) trimTo(n int64) {
	for int64(len(m.held)) > n {
		m.held = m.held[1:]
	}
}

func (m *model) selectAll(start, end int64) []exemplar.QueryResult {
	bySeries := map[string]labels.Labels{}
	for _, h := range m.held {
		bySeries[h.series.String()] = h.series
	}
	var out []exemplar.QueryResult
	for _, k := range sortedKeys(bySeries) {
		var exs []exemplar.Exemplar
		for _, h := range m.list(bySeries[k]) {
			if h.e.Ts >= start && h.e.Ts <= end {
				exs = append(exs, h.e)
			}
		}
		if len(exs) > 0 {
			out = append(out, exemplar.QueryResult{SeriesLabels: bySeries[k], Exemplars: exs})
		}
	}
	slices.SortFunc(out, func(a, b exemplar.QueryResult) int { return labels.Compare(a.SeriesLabels, b.SeriesLabels) })
	return out
}

func requireAgreesWithModel(t *testing.T, s *Store, m *model, step int) {
	t.Helper()
	got := iterateAll(t, s)
	require.Equal(t, len(m.held), len(got), "step %d: exemplars held", step)
	for i, h := range m.held {
		require.Equal(t, h.series.String(), got[i].series, "step %d: exemplar %d", step, i)
		require.True(t, sameExemplar(h.e, got[i].e), "step %d: exemplar %d: store %+v, model %+v", step, i, got[i].e, h.e)
	}
	all := []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "job", ".+")}
	for _, r := range [][2]int64{{math.MinInt64, math.MaxInt64}, {1000, 1100}} {
		res, err := s.Select(r[0], r[1], all)
		require.NoError(t, err)
		requireSameResults(t, m.selectAll(r[0], r[1]), res, "step %d select %v", step, r)
	}
	requireInvariants(t, s)
}

type modelRun struct {
	opts      Options
	trimBytes bool // MaxBytes set: compare after evicting the model down to the store's count
}

func runAgainstModel(t *testing.T, run modelRun, g *exemplarGen, steps int, limitChanges []Options) {
	s, err := New(run.opts)
	require.NoError(t, err)
	m := newModel(run.opts)
	if run.trimBytes {
		m.maxExemplars = math.MaxInt64
	}
	for step := range steps {
		if len(limitChanges) > 0 && g.rng.IntN(50) == 0 {
			o := limitChanges[g.rng.IntN(len(limitChanges))]
			require.NoError(t, s.SetLimits(o))
			m.setLimits(o)
			if run.trimBytes {
				m.maxExemplars = math.MaxInt64
				m.trimTo(s.Stats().Exemplars)
			}
			requireAgreesWithModel(t, s, m, step)
			continue
		}
		l, e := g.next()
		if run.trimBytes && g.rng.IntN(25) == 0 {
			// A series whose labels take a third to all of MaxBytes: some fit only
			// after evicting everything, some not at all.
			l = labels.FromStrings("__name__", "big", "job", "api", "pad", strings.Repeat("x", 20<<10+g.rng.IntN(44<<10)))
		}
		valid := s.ValidateExemplar(l, e)
		before := s.Stats()
		err := s.AddExemplar(l, e)
		after := s.Stats()
		if err != nil {
			// A refusal changes nothing but the refusal counters.
			require.Equal(t, before.Exemplars, after.Exemplars, "step %d: refused with %v", step, err)
			require.Equal(t, before.Evicted, after.Evicted, "step %d: refused with %v", step, err)
			require.Equal(t, before.Bytes, after.Bytes, "step %d: refused with %v", step, err)
			require.Equal(t, before.Appended, after.Appended, "step %d", step)
		}
		if run.trimBytes && errors.Is(err, ErrExemplarTooLarge) {
			require.ErrorIs(t, valid, ErrExemplarTooLarge, "step %d: ValidateExemplar must refuse what AddExemplar refuses", step)
			continue
		}
		if run.trimBytes && after.Refused.StaleFull != before.Refused.StaleFull {
			require.ErrorIs(t, err, storage.ErrOutOfOrderExemplar)
			require.NotEmpty(t, m.held)
			require.Less(t, e.Ts, m.held[0].e.Ts, "step %d: refused as stale but not older than the oldest held", step)
			continue
		}
		_, refusal, wantValid := m.verdict(l, e)
		require.Equal(t, wantValid, valid, "step %d: ValidateExemplar(%s, %+v)", step, l, e)
		require.Equal(t, m.add(l, e), err, "step %d: AddExemplar(%s, %+v)", step, l, e)
		switch refusal {
		case "stale_age":
			require.Equal(t, before.Refused.StaleAge+1, after.Refused.StaleAge)
		case "stale_series":
			require.Equal(t, before.Refused.StaleSeries+1, after.Refused.StaleSeries)
		case "stale_full":
			require.Equal(t, before.Refused.StaleFull+1, after.Refused.StaleFull)
		}
		if run.trimBytes {
			m.trimTo(after.Exemplars)
		}
		if step%5 == 0 || err != nil {
			requireAgreesWithModel(t, s, m, step)
		}
	}
	requireAgreesWithModel(t, s, m, steps)
	require.NoError(t, s.Close())
}

func TestAgreesWithModelUnderEveryLimit(t *testing.T) {
	seeds, steps := 12, 500
	if testing.Short() || raceEnabled {
		seeds, steps = 4, 300
	}
	runs := []modelRun{
		{opts: Options{MaxExemplars: 20, MaxPerSeries: 3}},
		{opts: Options{MaxExemplars: 20, MaxAge: 15 * time.Millisecond, OOOWindow: 10 * time.Millisecond}},
		{opts: Options{MaxExemplars: 40, MaxAge: 40 * time.Millisecond, MaxPerSeries: 2, OOOWindow: 30 * time.Millisecond}},
		{opts: Options{MaxExemplars: 1 << 20, MaxBytes: MinBytes, OOOWindow: 20 * time.Millisecond}, trimBytes: true},
		{opts: Options{MaxExemplars: 1 << 20, MaxBytes: MinBytes, MaxPerSeries: 5, MaxAge: 100 * time.Millisecond, OOOWindow: 50 * time.Millisecond}, trimBytes: true},
	}
	changes := []Options{
		{MaxExemplars: 5, OOOWindow: 10 * time.Millisecond},
		{MaxExemplars: 30, MaxPerSeries: 1},
		{MaxExemplars: 30, MaxAge: 5 * time.Millisecond, OOOWindow: 20 * time.Millisecond},
		{MaxExemplars: 100},
	}
	for seed := range seeds {
		for i, run := range runs {
			t.Run(fmt.Sprintf("seed=%d/run=%d", seed, i), func(t *testing.T) {
				var ch []Options
				if !run.trimBytes {
					ch = changes
				}
				// Many series with long labels make the byte limit bite.
				g := newExemplarGen(uint64(seed), 200)
				runAgainstModel(t, run, g, steps, ch)
			})
		}
	}
}

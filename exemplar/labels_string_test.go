//go:build !slicelabels && !dedupelabels

package exemplar

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// With Prometheus v0.315.0 Select hands out views of its blocks; if a later
// Prometheus changes labels.Labels, the load-time check turns that off and
// Select builds every set with a ScratchBuilder: same answers, more
// allocations.
func TestSelectReturnsTheSameLabelsWithoutLabelViews(t *testing.T) {
	require.True(t, viewLayoutHolds, "Prometheus v0.315.0's labels.Labels is its text")
	s := mustNew(t, Options{MaxExemplars: 1000})
	for i := range 1000 {
		series := labels.FromStrings("__name__", "m", "instance", fmt.Sprintf("host-%d", i%37))
		ex := traceID(i)
		if i%3 == 0 {
			ex = labels.FromStrings("trace_id", fmt.Sprint(i)) // short sets are kept as their text
		}
		require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: ex, Value: float64(i), Ts: int64(i), HasTs: true}))
	}
	views := selectAll(t, s)
	viewAllocs := testing.AllocsPerRun(5, func() { selectAll(t, s) })

	viewLayoutHolds = false
	t.Cleanup(func() { viewLayoutHolds = true })
	built := selectAll(t, s)
	builtAllocs := testing.AllocsPerRun(5, func() { selectAll(t, s) })

	require.Equal(t, len(built), len(views))
	for i := range built {
		require.Equal(t, built[i].SeriesLabels.String(), views[i].SeriesLabels.String())
		require.Equal(t, len(built[i].Exemplars), len(views[i].Exemplars))
		for j, e := range built[i].Exemplars {
			require.True(t, sameExemplar(e, views[i].Exemplars[j]), "series %d exemplar %d: %v vs %v", i, j, e, views[i].Exemplars[j])
		}
	}
	require.Less(t, viewAllocs, 100.0, "views: a few blocks, not a set per exemplar")
	require.Greater(t, builtAllocs, 1000.0, "built: one set per exemplar")
}

//go:build !slicelabels && !dedupelabels

package exemplar

import (
	"fmt"
	"math/rand/v2"
	"strings"
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
	// Not parallel: it switches the views off for the whole package.
	require.True(t, viewLayoutHolds, "Prometheus v0.315.0's labels.Labels is its text")
	s := mustNew(t, Options{MaxExemplars: 1000})
	want := map[int64]labels.Labels{}
	for i := range 1000 {
		series := labels.FromStrings("__name__", "m", "instance", fmt.Sprintf("host-%d", i%37))
		var ex labels.Labels
		switch i % 3 {
		case 0:
			ex = labels.FromStrings("trace_id", fmt.Sprint(i)) // short sets are kept as their text
		case 1:
			ex = traceID(i)
		case 2:
			// A name too long for a symbol, whose length takes four bytes in
			// the labels' text: 270 bytes in 91 runes.
			ex = labels.FromStrings(strings.Repeat("€", 90), fmt.Sprint(i))
		}
		want[int64(i)] = ex
		require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: ex, Value: float64(i), Ts: int64(i), HasTs: true}))
	}
	views := selectAll(t, s)
	viewAllocs := testing.AllocsPerRun(5, func() { selectAll(t, s) })

	viewLayoutHolds = false
	t.Cleanup(func() { viewLayoutHolds = true })
	built := selectAll(t, s)
	builtAllocs := testing.AllocsPerRun(5, func() { selectAll(t, s) })

	n := 0
	require.Equal(t, len(built), len(views))
	for i := range built {
		require.Equal(t, built[i].SeriesLabels.String(), views[i].SeriesLabels.String())
		require.Equal(t, len(built[i].Exemplars), len(views[i].Exemplars))
		for j, e := range built[i].Exemplars {
			v := views[i].Exemplars[j]
			require.True(t, sameExemplar(e, v), "series %d exemplar %d: %v vs %v", i, j, e, v)
			w := want[v.Ts]
			// Equal compares the text; String and Hash read it as labels.
			require.True(t, labels.Equal(w, v.Labels), "exemplar at %d: %v, added as %v", v.Ts, v.Labels, w)
			require.Equal(t, w.String(), v.Labels.String())
			require.Equal(t, w.Hash(), v.Labels.Hash())
			n++
		}
	}
	require.Equal(t, 1000, n)
	require.Less(t, viewAllocs, 100.0, "views: a few blocks, not a set per exemplar")
	require.Greater(t, builtAllocs, 1000.0, "built: one set per exemplar")
}

// Where a labels.Labels is its text the encoder walks that text in place;
// otherwise it goes through Range. Both must write the same bytes, or a store
// would see one exemplar as two after a Prometheus upgrade.
func TestEncodingWalksTheTextAsRangeReadsIt(t *testing.T) {
	// Not parallel: it switches the views off for the whole package.
	require.True(t, viewLayoutHolds, "Prometheus v0.315.0's labels.Labels is its text")
	t.Cleanup(func() { viewLayoutHolds = true })
	rng := rand.New(rand.NewPCG(1, 2))
	field := func() string {
		switch rng.IntN(5) {
		case 0:
			return ""
		case 1:
			return fmt.Sprintf("%032x", rng.Uint64()) // hex-packed
		case 2:
			return strings.Repeat("€", 85+rng.IntN(10)) // a four-byte length in the text
		case 3:
			return "trace_id"
		default:
			return fmt.Sprintf("%x", rng.Uint32()>>rng.IntN(32)) // odd and even lengths
		}
	}
	var syms symbolTable
	syms.add("trace_id")
	for range 2000 {
		b := labels.NewScratchBuilder(4)
		for range rng.IntN(5) {
			b.Add(field(), field())
		}
		ls := b.Labels() // unsorted, duplicate names: the encoder takes what it is given
		viewLayoutHolds = true
		walked, walkedNew, walkedErr := encodeLabels(nil, ls, &syms)
		viewLayoutHolds = false
		ranged, rangedNew, rangedErr := encodeLabels(nil, ls, &syms)
		require.Equal(t, rangedErr, walkedErr, "%v", ls)
		require.Equal(t, rangedNew, walkedNew, "%v", ls)
		require.Equal(t, ranged, walked, "%v", ls)
	}
}

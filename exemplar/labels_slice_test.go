//go:build slicelabels

package exemplar

import (
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// Select hands out exemplar labels as pieces of shared slabs: each set must
// come out whole across a slab's end, and appending to one set must not
// write into the next.
func TestSelectedLabelSetsShareNoWritableMemory(t *testing.T) {
	const n = slabLabels // three labels each: slabs of powers of two end inside a set
	s := mustNew(t, Options{MaxExemplars: n})
	series := labels.FromStrings("__name__", "m")
	want := make([]labels.Labels, n)
	for i := range want {
		want[i] = labels.FromStrings("parent", fmt.Sprint(i), "span_id", fmt.Sprintf("%016x", i), "trace_id", fmt.Sprintf("%032x", i))
		require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: want[i], Value: 1, Ts: int64(i), HasTs: true}))
	}
	res, err := s.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")})
	require.NoError(t, err)
	require.Len(t, res, 1)
	got := res[0].Exemplars
	require.Len(t, got, n)
	for i := range got {
		require.Equal(t, want[i], got[i].Labels, "exemplar %d", i)
		got[i].Labels = append(got[i].Labels, labels.Label{Name: "zz", Value: "appended"})
	}
	for i := range got {
		require.Equal(t, want[i], got[i].Labels[:3], "exemplar %d after its neighbour grew", i)
	}
}

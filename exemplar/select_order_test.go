package exemplar

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// sortHits must order label sets exactly as labels.Compare does, whatever
// they share: the 8-byte keys only ever break ties the sets have past their
// common part.
func TestSelectOrdersSeriesAsLabelsCompare(t *testing.T) {
	// Pieces that make sets agree for a while and then differ within 8 bytes,
	// past 8 bytes, in a name, in a length, or by one set ending early.
	names := []string{"__name__", "instance", "job", "le", "", "a\x00", "a", "zz"}
	values := []string{"", "\x00", "\x00\x00", "host-1:9090", "host-10:9090", "host-1", "host-100000000000",
		"host-100000000001", "\xff", "\xff\xff", strings.Repeat("v", 300), strings.Repeat("v", 301), "0.5", "+Inf"}
	for seed := range 200 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		seen := map[string]bool{}
		var hits []selectHit
		for range 2 + rng.IntN(40) {
			b := labels.NewScratchBuilder(4)
			for j := range rng.IntN(4) {
				// Names sorted and distinct, as in a series; values free.
				b.Add(fmt.Sprintf("%d%s", j, names[rng.IntN(len(names))]), values[rng.IntN(len(values))])
			}
			ls := b.Labels()
			if seen[ls.String()] {
				continue // series are distinct
			}
			seen[ls.String()] = true
			hits = append(hits, selectHit{id: uint32(len(hits)), lbls: ls})
		}
		want := slices.Clone(hits)
		slices.SortFunc(want, func(a, b selectHit) int { return labels.Compare(a.lbls, b.lbls) })
		order := sortHits(hits)
		require.Len(t, order, len(want))
		for i, o := range order {
			require.Equal(t, want[i].lbls.String(), hits[o.hit].lbls.String(), "seed %d, place %d", seed, i)
		}
	}
}

// Select hands out exemplar labels as pieces of shared blocks: every set must
// come out whole where a block ends, and a later add or Select must not change
// the labels an earlier Select returned.
func TestSelectedLabelSetsComeOutWholeAcrossBlocks(t *testing.T) {
	const n = 300
	s := mustNew(t, Options{MaxExemplars: 2 * n})
	series := labels.FromStrings("__name__", "m")
	want := make([]labels.Labels, n)
	for i := range want {
		// Sets of 74 to 114 bytes of text: blocks end inside some of them.
		value := fmt.Sprintf("%032x", i) + strings.Repeat("y", i%41)
		want[i] = labels.FromStrings("parent", fmt.Sprint(i), "span_id", fmt.Sprintf("%016x", i), "trace_id", value)
		require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: want[i], Value: 1, Ts: int64(i), HasTs: true}))
	}
	sel := func() []exemplar.Exemplar {
		res, err := s.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")})
		require.NoError(t, err)
		require.Len(t, res, 1)
		return res[0].Exemplars
	}
	first := sel()
	require.Len(t, first, n)
	for i := range first {
		require.Equal(t, want[i].String(), first[i].Labels.String(), "exemplar %d", i)
	}
	for i := range n {
		require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: traceID(i), Value: 2, Ts: int64(n + i), HasTs: true}))
	}
	require.Len(t, sel(), 2*n)
	for i := range first {
		require.Equal(t, want[i].String(), first[i].Labels.String(), "exemplar %d after more adds and a Select", i)
	}
}

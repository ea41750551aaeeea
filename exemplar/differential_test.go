package exemplar

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
)

// The differential tests run one random sequence of calls against this store
// and against Prometheus' CircularExemplarStorage and require the same answer
// to every call, and the same content (IterateExemplars and Select) after it.
// The only expected difference is the documented stale re-add refusal: when
// this store refuses one, the test checks it was counted as such and does not
// send it to Prometheus either.

func newPrometheusStore(t testing.TB, size int64, oooWindowMs int64) *tsdb.CircularExemplarStorage {
	es, err := tsdb.NewCircularExemplarStorage(size, tsdb.NewExemplarMetrics(nil), oooWindowMs)
	require.NoError(t, err)
	return es.(*tsdb.CircularExemplarStorage)
}

type heldExemplar struct {
	series string
	e      exemplar.Exemplar
}

func iterateAll(t testing.TB, es interface {
	IterateExemplars(func(labels.Labels, exemplar.Exemplar) error) error
}) []heldExemplar {
	var out []heldExemplar
	require.NoError(t, es.IterateExemplars(func(l labels.Labels, e exemplar.Exemplar) error {
		out = append(out, heldExemplar{l.String(), e})
		return nil
	}))
	return out
}

// sameExemplar compares bit for bit (NaN included) and labels by content.
func sameExemplar(a, b exemplar.Exemplar) bool {
	return labels.Equal(a.Labels, b.Labels) && math.Float64bits(a.Value) == math.Float64bits(b.Value) &&
		a.Ts == b.Ts && a.HasTs == b.HasTs
}

func requireSameContent(t *testing.T, ours *Store, theirs *tsdb.CircularExemplarStorage, step int) {
	t.Helper()
	a, b := iterateAll(t, ours), iterateAll(t, theirs)
	require.Equal(t, len(b), len(a), "step %d: number of exemplars", step)
	for i := range a {
		require.Equal(t, b[i].series, a[i].series, "step %d: exemplar %d series", step, i)
		require.True(t, sameExemplar(a[i].e, b[i].e), "step %d: exemplar %d: ours %+v, Prometheus %+v", step, i, a[i].e, b[i].e)
	}
	all := []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "job", ".*")}
	for _, r := range [][2]int64{{math.MinInt64, math.MaxInt64}, {0, 50}, {40, 45}, {100, 90}} {
		ra, err := ours.Select(r[0], r[1], all)
		require.NoError(t, err)
		rb, err := theirs.Select(r[0], r[1], all)
		require.NoError(t, err)
		requireSameResults(t, rb, ra, "step %d select %v", step, r)
	}
	require.Equal(t, int64(len(b)), ours.Stats().Exemplars)
	requireInvariants(t, ours)
}

func requireSameResults(t *testing.T, want, got []exemplar.QueryResult, msgAndArgs ...any) {
	t.Helper()
	require.Equal(t, len(want), len(got), msgAndArgs...)
	for i := range want {
		require.Equal(t, want[i].SeriesLabels.String(), got[i].SeriesLabels.String(), msgAndArgs...)
		require.Equal(t, len(want[i].Exemplars), len(got[i].Exemplars), msgAndArgs...)
		for j := range want[i].Exemplars {
			require.True(t, sameExemplar(want[i].Exemplars[j], got[i].Exemplars[j]), msgAndArgs...)
		}
	}
}

// exemplarGen draws exemplars from small pools so duplicates, equal
// timestamps, equal values and out-of-order arrivals are frequent.
type exemplarGen struct {
	rng     *rand.Rand
	series  []labels.Labels
	traceID []labels.Labels
	ts      int64
}

func newExemplarGen(seed uint64, nSeries int) *exemplarGen {
	g := &exemplarGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), ts: 1000}
	for i := range nSeries {
		g.series = append(g.series, labels.FromStrings("__name__", "req_duration_seconds_bucket", "job", "api", "le", strconv.Itoa(i)))
	}
	g.traceID = []labels.Labels{
		labels.EmptyLabels(),
		labels.FromStrings("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
		labels.FromStrings("trace_id", "00f067aa0ba902b7"),
		labels.FromStrings("trace_id", "Not-Hex-At-All"),
		labels.FromStrings("span_id", "a3ce929d0e0e4736", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
		labels.FromStrings("a_rather_long_label_name_that_is_not_a_symbol_x", "v", "trace_id", "0123456789abcdef0123456789abcdef"),
		labels.FromStrings("trace_id", "ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé-ünïcödé-"),
	}
	return g
}

func (g *exemplarGen) next() (labels.Labels, exemplar.Exemplar) {
	r := g.rng
	// Mostly moving forward, sometimes back (out of order), sometimes equal.
	switch x := r.IntN(10); {
	case x < 6:
		g.ts += int64(r.IntN(8))
	case x < 8:
		g.ts -= int64(r.IntN(12))
	}
	e := exemplar.Exemplar{
		Labels: g.traceID[r.IntN(len(g.traceID))],
		Value:  float64(r.IntN(4)),
		Ts:     g.ts,
		HasTs:  r.IntN(4) != 0,
	}
	switch r.IntN(40) {
	case 0:
		e.Value = math.NaN()
	case 1:
		e.Value = math.Inf(1)
	case 2:
		e.Value = math.Inf(-1)
	}
	return g.series[r.IntN(len(g.series))], e
}

func TestSameAnswersAsPrometheusForRandomSequences(t *testing.T) {
	seeds := 40
	steps := 400
	if testing.Short() || raceEnabled {
		seeds, steps = 12, 300
	}
	for seed := range seeds {
		for _, cfg := range []struct {
			size, ooo int64
			series    int
		}{{8, 0, 3}, {8, 10, 3}, {50, 5, 10}, {3, 100, 1}, {200, 30, 40}} {
			t.Run(fmt.Sprintf("seed=%d/size=%d/ooo=%d/series=%d", seed, cfg.size, cfg.ooo, cfg.series), func(t *testing.T) {
				ours, err := New(Options{MaxExemplars: cfg.size, OOOWindow: time.Duration(cfg.ooo) * time.Millisecond})
				require.NoError(t, err)
				reg := prometheus.NewRegistry()
				es, err := tsdb.NewCircularExemplarStorage(cfg.size, tsdb.NewExemplarMetrics(reg), cfg.ooo)
				require.NoError(t, err)
				theirs := es.(*tsdb.CircularExemplarStorage)
				g := newExemplarGen(uint64(seed), cfg.series)
				for step := range steps {
					if g.rng.IntN(60) == 0 {
						n := int64(1 + g.rng.IntN(int(cfg.size)*2))
						require.Equal(t, theirs.Resize(n), ours.Resize(n), "step %d: resize to %d", step, n)
						requireSameContent(t, ours, theirs, step)
						continue
					}
					l, e := g.next()
					ourValid := ours.ValidateExemplar(l, e)
					before := ours.Stats()
					ourErr := ours.AddExemplar(l, e)
					require.Equal(t, ourValid == nil || ourValid == storage.ErrDuplicateExemplar, ourErr == nil,
						"step %d: Validate said %v, Add said %v", step, ourValid, ourErr)
					after := ours.Stats()
					if after.Refused.StaleFull != before.Refused.StaleFull {
						// The documented difference: Prometheus would evict a newer
						// exemplar to keep this one.
						require.ErrorIs(t, ourErr, storage.ErrOutOfOrderExemplar)
						require.Equal(t, before.Exemplars, after.Exemplars)
						require.NoError(t, theirs.ValidateExemplar(l, e), "step %d: Prometheus would accept the stale re-add", step)
						held := iterateAll(t, theirs)
						require.Len(t, held, int(after.MaxExemplars), "step %d: refused as stale but the store is not full", step)
						require.Less(t, e.Ts, held[0].e.Ts, "step %d: refused as stale but not older than the exemplar Prometheus would evict", step)
						continue
					}
					theirValid := theirs.ValidateExemplar(l, e)
					theirErr := theirs.AddExemplar(l, e)
					require.Equal(t, theirValid, ourValid, "step %d: ValidateExemplar(%s, %+v)", step, l, e)
					require.Equal(t, theirErr, ourErr, "step %d: AddExemplar(%s, %+v)", step, l, e)
					if step%7 == 0 || ourErr != nil {
						requireSameContent(t, ours, theirs, step)
					}
				}
				requireSameContent(t, ours, theirs, steps)
				// The counters Prometheus keeps agree too (stale re-adds were not sent to it).
				st := ours.Stats()
				require.Equal(t, float64(st.Appended), gatheredValue(t, reg, "prometheus_tsdb_exemplar_exemplars_appended_total"))
				require.Equal(t, float64(st.OutOfOrder-st.Refused.StaleFull), gatheredValue(t, reg, "prometheus_tsdb_exemplar_out_of_order_exemplars_total"))
				require.Equal(t, float64(st.Series), gatheredValue(t, reg, "prometheus_tsdb_exemplar_series_with_exemplars_in_storage"))
				// Not exemplars_in_storage: Prometheus derives it from its write
				// position, which is wrong after a Resize (0 for 271 held); the
				// content comparison above already checks the count.
			})
		}
	}
}

func TestSameAnswersAsPrometheusWhenEveryAddEvicts(t *testing.T) {
	// In-order timestamps: no stale re-add can happen, so the stores must hold
	// exactly the same exemplars at every step, through eviction and series
	// removal.
	const size = 64
	ours, err := New(Options{MaxExemplars: size})
	require.NoError(t, err)
	theirs := newPrometheusStore(t, size, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		l := labels.FromStrings("job", "api", "series", strconv.Itoa(rng.IntN(100)))
		e := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", fmt.Sprintf("%032x", rng.Uint64())), Value: float64(i), Ts: int64(i), HasTs: true}
		require.Equal(t, theirs.AddExemplar(l, e), ours.AddExemplar(l, e))
		if i%97 == 0 {
			requireSameContent(t, ours, theirs, i)
		}
	}
	requireSameContent(t, ours, theirs, 3000)
	require.Less(t, ours.Stats().Series, int64(size+1))
}

// sortedKeys is a helper for stable failure messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

package exemplar

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
)

// Every benchmark runs Prometheus' CircularExemplarStorage (impl=prometheus)
// and this store (impl=leaksafe) on the same workload in the same run:
//
//	go test -run '^$' -bench . -benchmem -count 6 ./exemplar/ | tee new.txt
//	go test -run '^$' -bench . -benchmem -count 6 -tags slicelabels ./exemplar/ | tee new-slicelabels.txt
//	benchstat -col /impl new.txt

type benchStore interface {
	AddExemplar(labels.Labels, exemplar.Exemplar) error
	Select(start, end int64, matchers ...[]*labels.Matcher) ([]exemplar.QueryResult, error)
}

var impls = []string{"prometheus", "leaksafe"}

func newBenchStore(b testing.TB, impl string, capacity int64, oooWindowMs int64) benchStore {
	if impl == "prometheus" {
		return newPrometheusStore(b, capacity, oooWindowMs)
	}
	s, err := New(Options{MaxExemplars: capacity, OOOWindow: time.Duration(oooWindowMs) * time.Millisecond})
	require.NoError(b, err)
	return s
}

func closeBenchStore(s benchStore) {
	if c, ok := s.(*Store); ok {
		_ = c.Close()
	}
}

// histogramSeries returns n bucket series of one histogram, one per instance.
func histogramSeries(n int) []labels.Labels {
	series := make([]labels.Labels, n)
	for i := range series {
		series[i] = labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "instance", fmt.Sprintf("host-%d:9090", i), "le", "0.5")
	}
	return series
}

// hexTraceIDs returns n distinct 32-hex trace id label sets.
func hexTraceIDs(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		out[i] = traceID(i)
	}
	return out
}

// Prometheus' BenchmarkAddExemplar workload: n adds into a fresh store of the
// given capacity, the series changing every 100 adds. Unlike upstream, making
// the store is timed: Prometheus allocates its whole capacity there and this
// store allocates as it fills, so timing only the adds would charge one and
// not the other.
func BenchmarkAddExemplar(b *testing.B) {
	exLabels := labels.FromStrings("trace_id", "89620921")
	for _, capacity := range []int{1000, 10000, 100000} {
		for _, n := range []int{10000, 100000, 1000000} {
			for _, impl := range impls {
				b.Run(fmt.Sprintf("n=%d/capacity=%d/impl=%s", n, capacity, impl), func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						s := newBenchStore(b, impl, int64(capacity), 0)
						var l labels.Labels
						for i := range n {
							if i%100 == 0 {
								l = labels.FromStrings("service", strconv.Itoa(i))
							}
							if err := s.AddExemplar(l, exemplar.Exemplar{Value: float64(i), Ts: int64(i), Labels: exLabels}); err != nil {
								b.Fatal(err)
							}
						}
						b.StopTimer()
						closeBenchStore(s) // Close releases: not part of what is compared
						b.StartTimer()
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/add")
				})
			}
		}
	}
}

// Prometheus' BenchmarkAddExemplar_OutOfOrder workload, fixed: upstream reuses
// one store across iterations, so after the first iteration it measures
// duplicates. Here every iteration starts from a freshly made store, filled
// (untimed) as the case says.
// Refused adds (stale re-adds, which Prometheus stores) are reported.
func BenchmarkAddExemplarOutOfOrder(b *testing.B) {
	const capacity = 5000
	exLabels := labels.FromStrings("trace_id", "89620921")
	fills := []struct {
		name string
		fill func(benchStore)
	}{
		{"empty", func(benchStore) {}},
		{"full-one", func(s benchStore) {
			for i := range capacity {
				_ = s.AddExemplar(exLabels, exemplar.Exemplar{Value: float64(i), Ts: int64(i), Labels: exLabels})
			}
		}},
		{"full-multiple", func(s benchStore) {
			for i := range capacity {
				l := labels.FromStrings("service", strconv.Itoa(i))
				_ = s.AddExemplar(l, exemplar.Exemplar{Value: float64(i), Ts: int64(i), Labels: l})
			}
		}},
	}
	// An order maps the i-th add to its timestamp and series. It returns them
	// rather than writing through pointers: a pointer passed to a function
	// value escapes, and the harness would allocate on every add.
	outOfOrder := func(ts int64, l labels.Labels) (int64, labels.Labels) {
		switch ts % 3 {
		case 1:
			ts = capacity - ts
		case 2:
			ts = (capacity - ts) + 100
		}
		return ts, l
	}
	reverse := func(ts int64, l labels.Labels) (int64, labels.Labels) { return capacity - ts, l }
	multi := func(f func(int64, labels.Labels) (int64, labels.Labels)) func(int64, labels.Labels) (int64, labels.Labels) {
		return func(ts int64, l labels.Labels) (int64, labels.Labels) {
			ts, _ = f(ts, l)
			return ts, labels.FromStrings("service", strconv.Itoa(int(ts)))
		}
	}
	orders := []struct {
		name string
		f    func(int64, labels.Labels) (int64, labels.Labels)
	}{
		{"in-order", func(ts int64, l labels.Labels) (int64, labels.Labels) { return ts, l }},
		{"reverse", reverse},
		{"out-of-order", outOfOrder},
		{"multi-in-order", multi(func(ts int64, l labels.Labels) (int64, labels.Labels) { return ts, l })},
		{"multi-reverse", multi(reverse)},
		{"multi-out-of-order", multi(outOfOrder)},
	}
	for _, fill := range fills {
		for _, order := range orders {
			for _, impl := range impls {
				b.Run(fmt.Sprintf("fill=%s/order=%s/impl=%s", fill.name, order.name, impl), func(b *testing.B) {
					b.ReportAllocs()
					refused := 0
					for b.Loop() {
						// Making the store is timed, the fill is not: see
						// BenchmarkAddExemplar.
						s := newBenchStore(b, impl, capacity, 100000)
						b.StopTimer()
						fill.fill(s)
						l := labels.FromStrings("service", "0")
						b.StartTimer()
						for i := range capacity {
							var ts int64
							ts, l = order.f(int64(i), l)
							if err := s.AddExemplar(l, exemplar.Exemplar{Value: float64(i), Ts: ts, Labels: l}); err != nil {
								if !errors.Is(err, storage.ErrOutOfOrderExemplar) {
									b.Fatal(err)
								}
								refused++
							}
						}
						b.StopTimer()
						closeBenchStore(s)
						b.StartTimer()
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*capacity), "ns/add")
					b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
				})
			}
		}
	}
}

// Steady state: a full store where every add evicts, 1000 series, distinct
// trace ids, timestamps strictly increasing.
func BenchmarkAddExemplarSteadyState(b *testing.B) {
	const capacity, nSeries = 100_000, 1000
	series := histogramSeries(nSeries)
	ids := hexTraceIDs(1 << 16)
	for _, impl := range impls {
		b.Run("impl="+impl, func(b *testing.B) {
			s := newBenchStore(b, impl, capacity, 0)
			defer closeBenchStore(s)
			ts := int64(0)
			add := func() {
				ts++
				if err := s.AddExemplar(series[ts%nSeries], exemplar.Exemplar{Labels: ids[ts&(1<<16-1)], Value: float64(ts), Ts: ts, HasTs: true}); err != nil {
					b.Fatal(err)
				}
			}
			for range capacity {
				add()
			}
			b.ReportAllocs()
			for b.Loop() {
				add()
			}
		})
	}
}

// Churn: every add is for a series never seen (or long evicted), so every
// add evicts an exemplar and its series.
func BenchmarkAddExemplarChurn(b *testing.B) {
	const capacity, pool = 100_000, 250_000
	series := make([]labels.Labels, pool)
	for i := range series {
		series[i] = labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "pod", fmt.Sprintf("api-%08d", i), "le", "0.5")
	}
	ids := hexTraceIDs(1 << 16)
	for _, impl := range impls {
		b.Run("impl="+impl, func(b *testing.B) {
			s := newBenchStore(b, impl, capacity, 0)
			defer closeBenchStore(s)
			i := 0
			add := func() {
				i++
				if err := s.AddExemplar(series[i%pool], exemplar.Exemplar{Labels: ids[i&(1<<16-1)], Value: 1, Ts: int64(i), HasTs: true}); err != nil {
					b.Fatal(err)
				}
			}
			for range capacity {
				add()
			}
			b.ReportAllocs()
			for b.Loop() {
				add()
			}
		})
	}
}

// 100 tenants, one store each (Thanos Receive), 1000 exemplars each, round
// robin with one tenant sending half of all exemplars. impl=leaksafe-budget
// additionally shares one byte budget.
func BenchmarkAddExemplarTenants(b *testing.B) {
	const tenants, perTenant = 100, 1000
	series := make([]labels.Labels, 500)
	for i := range series {
		series[i] = labels.FromStrings("__name__", "rpc_duration_seconds_bucket", "pod", fmt.Sprintf("api-%d", i), "le", "1")
	}
	ids := hexTraceIDs(1 << 16)
	for _, impl := range []string{"prometheus", "leaksafe", "leaksafe-budget"} {
		b.Run("impl="+impl, func(b *testing.B) {
			stores := make([]benchStore, tenants)
			var budget *Budget
			if impl == "leaksafe-budget" {
				var err error
				budget, err = NewBudget(BudgetOptions{MaxBytes: tenants * 96 << 10, FloorBytes: 48 << 10})
				require.NoError(b, err)
			}
			for i := range stores {
				if budget != nil {
					s, err := New(Options{MaxExemplars: perTenant, Budget: budget})
					require.NoError(b, err)
					stores[i] = s
				} else {
					stores[i] = newBenchStore(b, impl, perTenant, 0)
				}
				defer closeBenchStore(stores[i])
			}
			n := 0
			add := func() {
				n++
				t := n % (2 * tenants)
				if t >= tenants {
					t = 0 // the noisy tenant
				}
				if err := stores[t].AddExemplar(series[n%len(series)], exemplar.Exemplar{Labels: ids[n&(1<<16-1)], Value: 1, Ts: int64(n), HasTs: true}); err != nil {
					b.Fatal(err)
				}
			}
			for range tenants * perTenant * 2 {
				add()
			}
			b.ReportAllocs()
			for b.Loop() {
				add()
			}
		})
	}
}

// Select over one series and over 1,000 series of a store holding 1,000
// series × 10 exemplars with distinct trace ids.
func BenchmarkSelect(b *testing.B) {
	const nSeries, perSeries = 1000, 10
	for _, impl := range impls {
		s := newBenchStore(b, impl, nSeries*perSeries, 0)
		for i := range nSeries * perSeries {
			l := labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "instance", fmt.Sprintf("host-%d:9090", i%nSeries), "le", "0.5")
			require.NoError(b, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: int64(i), HasTs: true}))
		}
		for _, q := range []struct {
			name string
			m    []*labels.Matcher
			want int
		}{
			{"series=1", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "instance", "host-500:9090")}, 1},
			{"series=1000", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "http_request_duration_seconds_bucket")}, nSeries},
		} {
			b.Run(q.name+"/impl="+impl, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					res, err := s.Select(math.MinInt64, math.MaxInt64, q.m)
					if err != nil || len(res) != q.want {
						b.Fatal(err, len(res))
					}
				}
			})
		}
		closeBenchStore(s)
	}
}

// Heap held per stored exemplar, measured with runtime.ReadMemStats after GC:
// a store filled to capacity with distinct 32-hex trace ids.
func BenchmarkHeapPerExemplar(b *testing.B) {
	for _, c := range []struct{ capacity, series int }{{100_000, 1000}, {1_000_000, 1000}, {1_000_000, 100_000}} {
		series := histogramSeries(c.series)
		for _, impl := range impls {
			b.Run(fmt.Sprintf("capacity=%d/series=%d/impl=%s", c.capacity, c.series, impl), func(b *testing.B) {
				var perExemplar float64
				for b.Loop() {
					b.StopTimer()
					base := liveHeap()
					b.StartTimer()
					s := newBenchStore(b, impl, int64(c.capacity), 0)
					for i := range c.capacity {
						// Each exemplar arrives with its own labels, as from a scrape or request.
						e := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", fmt.Sprintf("%032x", i)), Value: float64(i), Ts: int64(i), HasTs: true}
						if err := s.AddExemplar(series[i%c.series], e); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					perExemplar += float64(liveHeap()-base) / float64(c.capacity)
					runtime.KeepAlive(s)
					closeBenchStore(s)
					b.StartTimer()
				}
				b.ReportMetric(perExemplar/float64(b.N), "B/exemplar")
			})
		}
	}
}

// Remote-write-shaped: each op is one request of 100 series (out of 1,000),
// each a sample and an exemplar with a distinct trace id, committed at once,
// into a real TSDB on disk. impl=prometheus is the head's own exemplar
// storage; impl=leaksafe is a TSDB with it disabled behind Appendable. The
// samples cost the same on both sides, so the ratio shows what routing
// exemplars to this store adds to a request.
func BenchmarkAppendableRemoteWrite(b *testing.B) {
	const nSeries, perRequest, capacity = 1000, 100, 100_000
	series := histogramSeries(nSeries)
	ids := hexTraceIDs(1 << 16)
	for _, impl := range impls {
		b.Run("impl="+impl, func(b *testing.B) {
			opts := tsdb.DefaultOptions()
			opts.EnableExemplarStorage = impl == "prometheus"
			opts.MaxExemplars = capacity
			db, err := tsdb.Open(b.TempDir(), nil, nil, opts, nil)
			require.NoError(b, err)
			defer func() { require.NoError(b, db.Close()) }()
			var app storage.Appendable = db
			if impl == "leaksafe" {
				s, err := New(Options{MaxExemplars: capacity})
				require.NoError(b, err)
				defer s.Close()
				app = Appendable(db, s)
			}
			ctx := context.Background()
			next, ts := 0, int64(0)
			request := func() {
				a := app.Appender(ctx)
				ts++
				for range perRequest {
					l := series[next%nSeries]
					ref, err := a.Append(0, l, ts, float64(next))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := a.AppendExemplar(ref, l, exemplar.Exemplar{Labels: ids[next&(1<<16-1)], Value: float64(next), Ts: ts, HasTs: true}); err != nil {
						b.Fatal(err)
					}
					next++
				}
				if err := a.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			for range capacity / perRequest { // every series exists, the store is full
				request()
			}
			b.ReportAllocs()
			for b.Loop() {
				request()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perRequest), "ns/series")
		})
	}
}

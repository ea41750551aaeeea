package pool

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func newRegistry() *prometheus.Registry { return prometheus.NewPedanticRegistry() }

func TestTwoPoolsWithDifferentNamesShareARegistry(t *testing.T) {
	reg := newRegistry()
	chunks := newPool[byte](t, Options{Name: "chunks", MinSize: 1024, MaxSize: 4096, Factor: 2, MaxTotal: 8192, Registerer: reg})
	series := newPool[uint64](t, Options{Name: "series", MinSize: 16, MaxSize: 64, Factor: 2, Registerer: reg})

	c, err := chunks.Get(1500)
	require.NoError(t, err)
	_, err = chunks.Get(8000) // past MaxTotal
	require.ErrorIs(t, err, ErrExhausted)
	s1, _ := series.Get(16)
	s2, _ := series.Get(16)
	series.Put(s1)
	series.Put(s1) // double

	want := `
# HELP leaksafe_pool_bad_puts_total Puts of a lease already returned or never leased by this pool; counted and ignored.
# TYPE leaksafe_pool_bad_puts_total counter
leaksafe_pool_bad_puts_total{pool="chunks"} 0
leaksafe_pool_bad_puts_total{pool="series"} 1
# HELP leaksafe_pool_exhausted_total Gets refused because the lease would pass MaxTotal.
# TYPE leaksafe_pool_exhausted_total counter
leaksafe_pool_exhausted_total{pool="chunks"} 1
leaksafe_pool_exhausted_total{pool="series"} 0
# HELP leaksafe_pool_gets_total Leases handed out by Get.
# TYPE leaksafe_pool_gets_total counter
leaksafe_pool_gets_total{pool="chunks"} 1
leaksafe_pool_gets_total{pool="series"} 2
# HELP leaksafe_pool_in_use_elements Elements (capacity) charged to outstanding leases.
# TYPE leaksafe_pool_in_use_elements gauge
leaksafe_pool_in_use_elements{pool="chunks"} 2048
leaksafe_pool_in_use_elements{pool="series"} 16
# HELP leaksafe_pool_max_total_elements The MaxTotal budget in elements; 0 means unlimited.
# TYPE leaksafe_pool_max_total_elements gauge
leaksafe_pool_max_total_elements{pool="chunks"} 8192
leaksafe_pool_max_total_elements{pool="series"} 0
# HELP leaksafe_pool_outstanding_leases Leases handed out and not yet returned.
# TYPE leaksafe_pool_outstanding_leases gauge
leaksafe_pool_outstanding_leases{pool="chunks"} 1
leaksafe_pool_outstanding_leases{pool="series"} 1
# HELP leaksafe_pool_puts_total Leases returned by Put.
# TYPE leaksafe_pool_puts_total counter
leaksafe_pool_puts_total{pool="chunks"} 0
leaksafe_pool_puts_total{pool="series"} 1
# HELP leaksafe_pool_undersized_puts_total Puts of a slice smaller than the array the lease was handed; it was not pooled, the lease's own array was.
# TYPE leaksafe_pool_undersized_puts_total counter
leaksafe_pool_undersized_puts_total{pool="chunks"} 0
leaksafe_pool_undersized_puts_total{pool="series"} 0
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"leaksafe_pool_bad_puts_total", "leaksafe_pool_exhausted_total", "leaksafe_pool_gets_total",
		"leaksafe_pool_in_use_elements", "leaksafe_pool_max_total_elements", "leaksafe_pool_outstanding_leases",
		"leaksafe_pool_puts_total", "leaksafe_pool_undersized_puts_total"))
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems)

	chunks.Put(c)
	*s2 = nil // a smaller slice than the lease was handed
	series.Put(s2)
	require.Equal(t, 2.0, gathered(t, reg, "leaksafe_pool_puts_total", "series"))
	require.Equal(t, 1.0, gathered(t, reg, "leaksafe_pool_undersized_puts_total", "series"))
	require.Equal(t, 1.0, gathered(t, reg, "leaksafe_pool_puts_total", "chunks"))
	require.Equal(t, 0.0, gathered(t, reg, "leaksafe_pool_in_use_elements", "chunks"))
}

func TestSecondPoolWithTheSameNameIsRefused(t *testing.T) {
	reg := newRegistry()
	newPool[byte](t, Options{Name: "chunks", MinSize: 1, MaxSize: 2, Factor: 2, Registerer: reg})
	p, err := New[byte](Options{Name: "chunks", MinSize: 1, MaxSize: 2, Factor: 2, Registerer: reg})
	require.Nil(t, p)
	require.ErrorContains(t, err, `pool "chunks": registering metrics`)
	var already prometheus.AlreadyRegisteredError
	require.ErrorAs(t, err, &already)
}

// gathered returns the value of metric{pool=name} from reg.
func gathered(t *testing.T, reg *prometheus.Registry, metric, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "pool" && l.GetValue() == name {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{pool=%q}", metric, name)
	return 0
}

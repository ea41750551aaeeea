package pool

import "github.com/prometheus/client_golang/prometheus"

// poolMetrics exports Stats on scrape: the hot path updates nothing but the
// per-lease records, and a scrape sums them. Every series carries a constant
// pool="<Name>" label, so several pools can share one registry.
type poolMetrics struct {
	stats func() Stats

	gets, puts, badPuts, exhausted, discarded, leaked, undersized *prometheus.Desc
	inUse, outstanding, maxTotal                                  *prometheus.Desc
}

func newPoolMetrics(name string, stats func() Stats) *poolMetrics {
	labels := prometheus.Labels{"pool": name}
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("leaksafe", "pool", metric), help, nil, labels)
	}
	return &poolMetrics{
		stats:       stats,
		gets:        d("gets_total", "Leases handed out by Get."),
		puts:        d("puts_total", "Leases returned by Put."),
		badPuts:     d("bad_puts_total", "Puts of a lease already returned or never leased by this pool; counted and ignored."),
		exhausted:   d("exhausted_total", "Gets refused because the lease would pass MaxTotal."),
		discarded:   d("discarded_total", "Puts whose array was not pooled (leases above MaxSize)."),
		leaked:      d("leaked_total", "Tracked leases garbage-collected without Put; their charge was released."),
		undersized:  d("undersized_puts_total", "Puts of a slice smaller than the array the lease was handed; it was not pooled, the lease's own array was."),
		inUse:       d("in_use_elements", "Elements (capacity) charged to outstanding leases."),
		outstanding: d("outstanding_leases", "Leases handed out and not yet returned."),
		maxTotal:    d("max_total_elements", "The MaxTotal budget in elements; 0 means unlimited."),
	}
}

func (m *poolMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.gets, m.puts, m.badPuts, m.exhausted, m.discarded, m.leaked, m.undersized, m.inUse, m.outstanding, m.maxTotal} {
		ch <- d
	}
}

func (m *poolMetrics) Collect(ch chan<- prometheus.Metric) {
	s := m.stats()
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(m.gets, s.Gets)
	counter(m.puts, s.Puts)
	counter(m.badPuts, s.BadPuts)
	counter(m.exhausted, s.Exhausted)
	counter(m.discarded, s.Discarded)
	counter(m.leaked, s.Leaked)
	counter(m.undersized, s.Undersized)
	gauge(m.inUse, s.InUse)
	gauge(m.outstanding, s.Outstanding)
	gauge(m.maxTotal, s.MaxTotal)
}

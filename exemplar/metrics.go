package exemplar

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The store's metrics keep Prometheus' prometheus_tsdb_exemplar_* names where
// the meaning is the same, so existing dashboards and alerts keep working, and
// add the byte, eviction and refusal series under the same prefix. They are
// read from Stats at scrape time: the add path pays nothing for them.

var (
	descAppended = prometheus.NewDesc("prometheus_tsdb_exemplar_exemplars_appended_total",
		"Total number of appended exemplars.", nil, nil)
	descInStorage = prometheus.NewDesc("prometheus_tsdb_exemplar_exemplars_in_storage",
		"Number of exemplars currently in storage.", nil, nil)
	descSeries = prometheus.NewDesc("prometheus_tsdb_exemplar_series_with_exemplars_in_storage",
		"Number of series with exemplars currently in storage.", nil, nil)
	descLastTs = prometheus.NewDesc("prometheus_tsdb_exemplar_last_exemplars_timestamp_seconds",
		"The timestamp of the oldest exemplar stored, i.e. the next one to be evicted.", nil, nil)
	descMaxExemplars = prometheus.NewDesc("prometheus_tsdb_exemplar_max_exemplars",
		"Total number of exemplars the exemplar storage can store, resizeable.", nil, nil)
	descOutOfOrder = prometheus.NewDesc("prometheus_tsdb_exemplar_out_of_order_exemplars_total",
		"Total number of out of order exemplar ingestion failed attempts (stale re-adds included).", nil, nil)
	descBytes = prometheus.NewDesc("prometheus_tsdb_exemplar_bytes_in_storage",
		"Heap bytes held by the exemplar storage: slots, labels, index.", nil, nil)
	descMaxBytes = prometheus.NewDesc("prometheus_tsdb_exemplar_max_bytes",
		"Byte limit of the exemplar storage; 0 when only the count limit applies.", nil, nil)
	descEvicted = prometheus.NewDesc("prometheus_tsdb_exemplar_evicted_exemplars_total",
		"Total number of exemplars evicted, by the limit that required it.", []string{"reason"}, nil)
	descRefused = prometheus.NewDesc("prometheus_tsdb_exemplar_refused_exemplars_total",
		"Total number of stale re-adds refused (returned as out of order), by reason.", []string{"reason"}, nil)

	descBudgetUsed = prometheus.NewDesc("prometheus_tsdb_exemplar_budget_used_bytes",
		"Bytes held by all stores sharing the exemplar byte budget.", nil, nil)
	descBudgetMax = prometheus.NewDesc("prometheus_tsdb_exemplar_budget_max_bytes",
		"Size of the shared exemplar byte budget.", nil, nil)
	descBudgetFloor = prometheus.NewDesc("prometheus_tsdb_exemplar_budget_floor_bytes",
		"Bytes each store keeps before the budget evicts from it for another store.", nil, nil)
	descBudgetStores = prometheus.NewDesc("prometheus_tsdb_exemplar_budget_stores",
		"Number of stores sharing the exemplar byte budget.", nil, nil)
)

// storeMetrics collects a Store's metrics from its Stats.
type storeMetrics struct{ s *Store }

func newStoreCollector(s *Store) prometheus.Collector { return storeMetrics{s} }

func (storeMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAppended, descInStorage, descSeries, descLastTs, descMaxExemplars,
		descOutOfOrder, descBytes, descMaxBytes, descEvicted, descRefused} {
		ch <- d
	}
}

func (m storeMetrics) Collect(ch chan<- prometheus.Metric) {
	st := m.s.Stats()
	ch <- prometheus.MustNewConstMetric(descAppended, prometheus.CounterValue, float64(st.Appended))
	ch <- prometheus.MustNewConstMetric(descInStorage, prometheus.GaugeValue, float64(st.Exemplars))
	ch <- prometheus.MustNewConstMetric(descSeries, prometheus.GaugeValue, float64(st.Series))
	ch <- prometheus.MustNewConstMetric(descLastTs, prometheus.GaugeValue, float64(st.OldestTimestamp)/1000)
	ch <- prometheus.MustNewConstMetric(descMaxExemplars, prometheus.GaugeValue, float64(st.MaxExemplars))
	ch <- prometheus.MustNewConstMetric(descOutOfOrder, prometheus.CounterValue, float64(st.OutOfOrder))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(descMaxBytes, prometheus.GaugeValue, float64(st.MaxBytes))
	ev := st.Evicted
	for i, v := range [numReasons]uint64{ev.Count, ev.Bytes, ev.Age, ev.PerSeries, ev.Budget} {
		ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(v), reasonNames[i])
	}
	rf := st.Refused
	for i, v := range [numRefusals]uint64{rf.StaleFull, rf.StaleAge, rf.StaleSeries} {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(v), refusalNames[i])
	}
}

// budgetMetrics collects a Budget's metrics.
type budgetMetrics struct{ b *Budget }

func newBudgetCollector(b *Budget) prometheus.Collector { return budgetMetrics{b} }

func (budgetMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBudgetUsed
	ch <- descBudgetMax
	ch <- descBudgetFloor
	ch <- descBudgetStores
}

func (m budgetMetrics) Collect(ch chan<- prometheus.Metric) {
	st := m.b.Stats()
	ch <- prometheus.MustNewConstMetric(descBudgetUsed, prometheus.GaugeValue, float64(st.UsedBytes))
	ch <- prometheus.MustNewConstMetric(descBudgetMax, prometheus.GaugeValue, float64(st.MaxBytes))
	ch <- prometheus.MustNewConstMetric(descBudgetFloor, prometheus.GaugeValue, float64(st.FloorBytes))
	ch <- prometheus.MustNewConstMetric(descBudgetStores, prometheus.GaugeValue, float64(st.Stores))
}

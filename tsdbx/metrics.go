package tsdbx

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Trigger label values: why a compaction ran.
const (
	triggerIdle = "idle" // CompactIfIdle (and so Run)
	triggerNow  = "now"  // CompactNow
)

// idleMetrics are the collectors of one IdleCompactor. With several compactors
// on one registry, give each its own labels (prometheus.WrapRegistererWith).
type idleMetrics struct {
	compactions       *prometheus.CounterVec
	failures          *prometheus.CounterVec
	duration          prometheus.Histogram
	seriesBefore      prometheus.Gauge
	seriesAfter       prometheus.Gauge
	lastSuccess       prometheus.Gauge
	appendersRejected prometheus.Counter
	appendersInFlight prometheus.GaugeFunc
	waiting           []prometheus.GaugeFunc

	registerer prometheus.Registerer
	registered []prometheus.Collector
}

func newIdleMetrics(c *IdleCompactor) *idleMetrics {
	m := &idleMetrics{
		compactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaksafe_tsdbx_head_compactions_total",
			Help: "Full head compactions (in-order and out-of-order) started, by trigger.",
		}, []string{"trigger"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leaksafe_tsdbx_head_compaction_failures_total",
			Help: "Head compaction attempts that returned an error (cancellation excluded), by trigger, including attempts refused before starting because appenders stayed open past DrainTimeout, which head_compactions_total does not count. The next attempt retries.",
		}, []string{"trigger"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "leaksafe_tsdbx_head_compaction_duration_seconds",
			Help:    "Duration of full head compactions, including waiting for in-flight appenders.",
			Buckets: []float64{0.01, 0.05, 0.25, 1, 5, 15, 60, 300, 1200},
		}),
		seriesBefore: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leaksafe_tsdbx_head_series_before_compaction",
			Help: "Series in the head when the last full head compaction started.",
		}),
		seriesAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leaksafe_tsdbx_head_series_after_compaction",
			Help: "Series left in the head when the last full head compaction ended; 0 unless appends raced it or it failed.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "leaksafe_tsdbx_last_successful_head_compaction_timestamp_seconds",
			Help: "Unix time of the last full head compaction that succeeded.",
		}),
		appendersRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "leaksafe_tsdbx_appenders_rejected_total",
			Help: "Appenders refused with ErrCompactionInProgress because a head compaction was running.",
		}),
		appendersInFlight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "leaksafe_tsdbx_appenders_in_flight",
			Help: "Appenders opened through Appendable and not yet committed or rolled back. A value that never drops is a leaked appender.",
		}, func() float64 { return float64(c.gate.appendersInFlight()) }),
	}
	// Export every trigger from the start, so rate() and absent() work before the first compaction.
	for _, trigger := range []string{triggerIdle, triggerNow} {
		m.compactions.WithLabelValues(trigger)
		m.failures.WithLabelValues(trigger)
	}
	for _, p := range phases {
		m.waiting = append(m.waiting, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "leaksafe_tsdbx_compaction_waiting_seconds",
			Help:        "How long the running head compaction has been in this phase; 0 when not in it. Phases after drain_appenders wait, without cancellation, for open queriers overlapping the head: a value that keeps growing is a leaked querier.",
			ConstLabels: prometheus.Labels{"phase": string(p)},
		}, func() float64 { return c.phaseSeconds(p) }))
	}
	return m
}

func (m *idleMetrics) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{
		m.compactions, m.failures, m.duration, m.seriesBefore, m.seriesAfter,
		m.lastSuccess, m.appendersRejected, m.appendersInFlight,
	}
	for _, w := range m.waiting {
		cs = append(cs, w)
	}
	return cs
}

// register registers every collector, or none: on error it undoes what it did.
func (m *idleMetrics) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	m.registerer = r
	for _, c := range m.collectors() {
		if err := r.Register(c); err != nil {
			m.unregister()
			return fmt.Errorf("tsdbx: register metrics: %w", err)
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

func (m *idleMetrics) unregister() {
	for _, c := range m.registered {
		m.registerer.Unregister(c)
	}
	m.registered = nil
}

// isAlreadyRegistered tells a duplicate registration (two compactors sharing
// a registry without distinct labels) from other registry errors.
func isAlreadyRegistered(err error) bool {
	var are prometheus.AlreadyRegisteredError
	return errors.As(err, &are)
}

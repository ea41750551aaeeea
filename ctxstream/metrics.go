package ctxstream

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts streams for a whole process. The saw-tooth of the v0.35.1 incident shows up
// here first: ctxstream_streams_open climbs and never returns to its floor when streams are not
// released; ctxstream_streams_ended_total{reason="timeout"} shows stores that stall.
//
// Updated once when a stream starts and once when it ends, never per item.
type Metrics struct {
	open  prometheus.Gauge
	ended [reasonCount]prometheus.Counter
}

// Labels of ctxstream_streams_ended_total.
var reasonLabel = [reasonCount]string{
	reasonNone:     "",
	reasonEOF:      "eof",
	reasonError:    "error",
	reasonCanceled: "canceled",
	reasonTimeout:  "timeout",
	reasonClosed:   "closed",
}

// NewMetrics creates the collectors and registers them with reg. reg may be nil: the metrics
// are then kept but not exported. Registering again with the same Registerer (a reload, a
// second component) shares the collectors already there, so the counts continue; any other
// registration error is returned.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	open := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ctxstream_streams_open",
		Help: "Streams (Lazy, Eager) started and not yet ended.",
	})
	ended := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ctxstream_streams_ended_total",
		Help: "Streams ended, by the first reason: eof, error (from the source), canceled (context), timeout (WithRecvTimeout), closed (Close before the end).",
	}, []string{"reason"})
	if reg != nil {
		var err error
		if open, err = register(reg, open); err != nil {
			return nil, err
		}
		if ended, err = register(reg, ended); err != nil {
			return nil, err
		}
	}
	m := &Metrics{open: open}
	for r := reasonEOF; r < reasonCount; r++ {
		m.ended[r] = ended.WithLabelValues(reasonLabel[r])
	}
	return m, nil
}

// register registers c, or returns the identical collector registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

func (m *Metrics) started() {
	if m != nil {
		m.open.Inc()
	}
}

func (m *Metrics) endedBy(r reason) {
	if m != nil {
		m.open.Dec()
		if r > reasonNone && r < reasonCount {
			m.ended[r].Inc()
		}
	}
}

package slogx

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are the counters of one file sink, shared by a handler and everything derived from it.
type Stats struct {
	Records     uint64 // lines written
	Bytes       uint64 // bytes written
	WriteErrors uint64 // records not written (or written partly) because of an I/O error
	Rotations   uint64 // MaxBytes rotations
	Reopens     uint64 // Reopen calls and automatic re-creations of a removed file
	Truncations uint64 // lines or With prefixes cut at their cap
	Closed      uint64 // records refused with ErrClosed
}

// handlerMetrics keeps the counters twice: atomics for Stats (always) and client_golang
// counters (when a Registerer is given). Both are single atomic adds.
type handlerMetrics struct {
	records, bytes, writeErrors, rotations, reopens, truncations, closed atomic.Uint64

	prom *promMetrics // nil without a Registerer
}

type promMetrics struct {
	records     prometheus.Counter
	bytes       prometheus.Counter
	writeErrors prometheus.Counter
	rotations   prometheus.Counter
	reopens     prometheus.Counter
	truncations prometheus.Counter
	closed      prometheus.Counter
}

func newHandlerMetrics(reg prometheus.Registerer) (*handlerMetrics, error) {
	m := &handlerMetrics{}
	if reg == nil {
		return m, nil
	}
	counter := func(name, help string) (prometheus.Counter, error) {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "slogx_" + name, Help: help})
		if err := reg.Register(c); err != nil {
			// A config reload opens the new file before closing the old one, with the same
			// Registerer: keep counting on the counter already there.
			if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
				if existing, ok := are.ExistingCollector.(prometheus.Counter); ok {
					return existing, nil
				}
			}
			return nil, err
		}
		return c, nil
	}
	p := &promMetrics{}
	var err error
	for _, c := range []struct {
		dst        *prometheus.Counter
		name, help string
	}{
		{&p.records, "records_written_total", "Log records written as one JSON line each."},
		{&p.bytes, "bytes_written_total", "Bytes written to the log file."},
		{&p.writeErrors, "write_errors_total", "Log records not written because of an I/O error."},
		{&p.rotations, "rotations_total", "Log file rotations by size (MaxBytes)."},
		{&p.reopens, "reopens_total", "Log file reopens: Reopen calls and re-creation of a removed file."},
		{&p.truncations, "truncations_total", "Log lines and With prefixes cut at their size cap."},
		{&p.closed, "records_after_close_total", "Log records refused because the handler was closed."},
	} {
		if *c.dst, err = counter(c.name, c.help); err != nil {
			return nil, err
		}
	}
	m.prom = p
	return m, nil
}

func (m *handlerMetrics) wrote(n int) {
	m.records.Add(1)
	m.bytes.Add(uint64(n))
	if m.prom != nil {
		m.prom.records.Inc()
		m.prom.bytes.Add(float64(n))
	}
}

func (m *handlerMetrics) partial(n int) {
	m.bytes.Add(uint64(n))
	if m.prom != nil {
		m.prom.bytes.Add(float64(n))
	}
}

func (m *handlerMetrics) writeError() {
	m.writeErrors.Add(1)
	if m.prom != nil {
		m.prom.writeErrors.Inc()
	}
}

func (m *handlerMetrics) rotation() {
	m.rotations.Add(1)
	if m.prom != nil {
		m.prom.rotations.Inc()
	}
}

func (m *handlerMetrics) reopen() {
	m.reopens.Add(1)
	if m.prom != nil {
		m.prom.reopens.Inc()
	}
}

func (m *handlerMetrics) truncation() {
	m.truncations.Add(1)
	if m.prom != nil {
		m.prom.truncations.Inc()
	}
}

func (m *handlerMetrics) refused() {
	m.closed.Add(1)
	if m.prom != nil {
		m.prom.closed.Inc()
	}
}

func (m *handlerMetrics) stats() Stats {
	return Stats{
		Records:     m.records.Load(),
		Bytes:       m.bytes.Load(),
		WriteErrors: m.writeErrors.Load(),
		Rotations:   m.rotations.Load(),
		Reopens:     m.reopens.Load(),
		Truncations: m.truncations.Load(),
		Closed:      m.closed.Load(),
	}
}

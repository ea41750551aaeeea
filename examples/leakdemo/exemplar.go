package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/prometheus/client_golang/prometheus"
	promexemplar "github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/leaksafe/leaksafe/exemplar"
)

var exemplarScenario = scenario{
	name:  "exemplar",
	about: "Thanos Receive, max-exemplars=1,000,000: exemplars only in memory, bounded by count alone; heap grew to OOM",
	run:   runExemplar,
}

// The stream: remote-write requests of exemplarBatch exemplars, each for a series with
// Kubernetes-sized labels; pods churn, so every series gets only exemplarsPerSeries exemplars
// before it is replaced by a new one, and every exemplar carries a trace and a span id.
const (
	exemplarBatch       = 500
	exemplarsPerSeries  = 3
	exemplarHeapSamples = 20
)

func runExemplar(ctx context.Context, e *env) (*result, error) {
	maxExemplars := int64(e.scaled(300_000, 5_000)) // the count cap both stores are given
	total := 2 * maxExemplars                       // the ring wraps once: eviction is exercised
	maxBytes := max(int64(float64(16<<20)*e.cfg.scale), 1<<20)

	naive, err := exemplarVariant(ctx, total, func() (tsdb.ExemplarStorage, error) {
		return tsdb.NewCircularExemplarStorage(maxExemplars, tsdb.NewExemplarMetrics(prometheus.NewRegistry()), 0)
	})
	if err != nil {
		return nil, fmt.Errorf("naive: %w", err)
	}
	var kept exemplar.Stats
	safe, err := exemplarVariant(ctx, total, func() (tsdb.ExemplarStorage, error) {
		s, err := exemplar.New(exemplar.Options{MaxExemplars: maxExemplars, MaxBytes: maxBytes})
		if err != nil {
			return nil, err
		}
		return statsOnClose{s, &kept}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("leaksafe: %w", err)
	}
	bound := float64(maxBytes) * 1.1
	return &result{
		Metrics: []metric{
			{Name: "peak heap of the exemplar store", Unit: unitBytes, Naive: naive.peak, Leaksafe: safe.peak,
				Bound: atMost(bound), Symptom: true},
			{Name: "heap of the exemplar store at the end", Unit: unitBytes, Naive: naive.end, Leaksafe: safe.end,
				Bound: atMost(bound), Symptom: true},
			{Name: "newest exemplar queryable", Unit: unitBool, Naive: b2f(naive.newestFound), Leaksafe: b2f(safe.newestFound),
				Bound: exactly(1)},
		},
		// The table rounds MaxBytes and its bound to a tenth of a MiB; the note gives the
		// leaksafe peak's distance to both in bytes, which is what a reader of a near miss needs.
		Notes: []string{fmt.Sprintf("%d exemplars over %d churning series, both stores capped at %d exemplars; exemplar.Store also at MaxBytes %s (bound: +10%%); it ended holding %d exemplars of %d series in %s (Stats); its peak live heap after GC was MaxBytes %+d B, %d B under the bound",
			total, total/exemplarsPerSeries, maxExemplars, formatBytes(float64(maxBytes)), kept.Exemplars, kept.Series, formatBytes(float64(kept.Bytes)),
			int64(safe.peak)-maxBytes, int64(bound-safe.peak))},
		Panels: []panel{{
			Title: "exemplar: heap of the store while a remote-write stream churns series", X: "exemplars appended", Y: "live heap growth", Unit: unitBytes,
			Naive: naive.heap, Leaksafe: safe.heap, Marks: []refLine{{Label: "MaxBytes", Y: float64(maxBytes)}},
		}},
	}, nil
}

// statsOnClose keeps the store's final Stats when the variant closes it.
type statsOnClose struct {
	*exemplar.Store
	stats *exemplar.Stats
}

func (s statsOnClose) Close() error {
	*s.stats = s.Stats()
	if c, ok := any(s.Store).(io.Closer); ok {
		return c.Close()
	}
	return nil
}

type exemplarRun struct {
	peak, end   float64
	heap        []point
	newestFound bool
}

// exemplarVariant streams total exemplars into a fresh store and samples the live heap as it
// goes, measured from before the store was created (Prometheus' store allocates its ring up
// front: that is part of its cost).
func exemplarVariant(ctx context.Context, total int64, open func() (tsdb.ExemplarStorage, error)) (run exemplarRun, err error) {
	base := liveHeap()
	store, err := open()
	if err != nil {
		return run, err
	}
	defer func() {
		if c, ok := store.(io.Closer); ok {
			err = errors.Join(err, c.Close())
		}
	}()
	sample := func(n int64) {
		h := float64(liveHeap() - base)
		run.heap = append(run.heap, point{float64(n), h})
		run.peak = max(run.peak, h)
	}
	sample(0)

	rng := rand.New(rand.NewPCG(7, 11))
	const t0 = 1_700_000_000_000
	every := max(exemplarBatch, total/exemplarHeapSamples/exemplarBatch*exemplarBatch)
	var series labels.Labels
	var last promexemplar.Exemplar
	for i := range total {
		if i%exemplarsPerSeries == 0 {
			series = remoteWriteSeries(i / exemplarsPerSeries)
		}
		last = promexemplar.Exemplar{
			Labels: labels.FromStrings("span_id", fmt.Sprintf("%016x", rng.Uint64()),
				"trace_id", fmt.Sprintf("%016x%016x", rng.Uint64(), rng.Uint64())),
			Value: float64(i%100) / 100, Ts: t0 + i, HasTs: true,
		}
		if err := store.AddExemplar(series, last); err != nil {
			return run, fmt.Errorf("exemplar %d: %w", i, err)
		}
		if (i+1)%exemplarBatch == 0 && ctx.Err() != nil {
			return run, ctx.Err()
		}
		if (i+1)%every == 0 || i+1 == total {
			sample(i + 1)
		}
	}
	run.end = run.heap[len(run.heap)-1][1]

	q, err := store.ExemplarQuerier(ctx)
	if err != nil {
		return run, err
	}
	res, err := q.Select(last.Ts, last.Ts, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "pod", series.Get("pod"))})
	if err != nil {
		return run, err
	}
	for _, r := range res {
		for _, ex := range r.Exemplars {
			run.newestFound = run.newestFound || ex.Equals(last)
		}
	}
	return run, nil
}

// remoteWriteSeries is the label set of the n-th series: a histogram bucket of a pod that
// lives for a few exemplars, with the labels a Kubernetes scrape attaches.
func remoteWriteSeries(n int64) labels.Labels {
	return labels.FromStrings(
		"__name__", "http_server_request_duration_seconds_bucket",
		"cluster", "prod-eu-west-1",
		"container", "checkout",
		"endpoint", "http-metrics",
		"instance", fmt.Sprintf("10.%d.%d.%d:8080", n>>16&255, n>>8&255, n&255),
		"job", "shop/checkout",
		"le", "0.25",
		"method", "POST",
		"namespace", "shop",
		"pod", fmt.Sprintf("checkout-7d9c8b%05d-%05d", n/1000, n%100000),
		"route", "/api/v1/orders/{id}/items",
		"service", "checkout",
		"status", "200",
	)
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/leaksafe/leaksafe/slogx"
)

var slogxScenario = scenario{
	name:  "slogx",
	about: "Prometheus 3.0.0 query log: the logger's With() mutated shared state, every query's attributes piled up",
	run:   runSlogx,
}

// The queries a dashboard sends. Real ones are long (Grafana templating expands label
// matchers), and the 3.0.0 logger kept every one of them: their length is what it retained.
var slogxQueries = []string{
	`sum by (job, instance) (rate(demo_requests_total{job=~"api|web|batch",instance!~"canary-.*",code!~"5.."}[5m]))`,
	`histogram_quantile(0.99, sum by (le, job) (rate(demo_latency_seconds_bucket{job=~"api|web"}[5m])))`,
	`topk(5, sum by (instance) (rate(demo_requests_total{code=~"5.."}[1m])) / sum by (instance) (rate(demo_requests_total[1m])))`,
	`max_over_time(demo_inflight{job="api"}[10m]) > on (instance) group_left avg_over_time(demo_inflight{job="api"}[1h])`,
}

// slogxQueryPadding makes every query as long as a templated dashboard query (~1.5 KiB).
var slogxQueryPadding = " unless on (instance) demo_up{instance=~\"" + strings.Repeat("host-[0-9]+|", 110) + "none\"} == 0"

func runSlogx(ctx context.Context, e *env) (*result, error) {
	queries := e.scaled(400, 40)
	db, end, err := openQueryTSDB(ctx, filepath.Join(e.dir, "data"))
	if err != nil {
		return nil, err
	}
	defer db.Close()

	naivePath := filepath.Join(e.dir, "naive-query.log")
	naive, err := slogxVariant(ctx, db, end, queries, func() (promql.QueryLogger, func() int64, error) {
		l, err := openMutatingQueryLogger(naivePath)
		if err != nil {
			return nil, nil, err
		}
		return l, func() int64 { return fileSize(naivePath) }, nil
	})
	if err != nil {
		return nil, fmt.Errorf("naive: %w", err)
	}
	// The naive log can reach hundreds of MiB; it has been measured, give the disk back.
	if err := os.Remove(naivePath); err != nil {
		return nil, err
	}

	safe, err := slogxVariant(ctx, db, end, queries, func() (promql.QueryLogger, func() int64, error) {
		h, err := slogx.OpenJSONFile(filepath.Join(e.dir, "query.log"), nil)
		if err != nil {
			return nil, nil, err
		}
		return h, func() int64 { return int64(h.Stats().Bytes) }, nil
	})
	if err != nil {
		return nil, fmt.Errorf("leaksafe: %w", err)
	}

	n := float64(queries)
	return &result{
		Metrics: []metric{
			{Name: fmt.Sprintf("heap retained per query (%d queries)", queries), Unit: unitBytes,
				Naive: naive.heapDelta / n, Leaksafe: safe.heapDelta / n, Bound: atMost(math.Round(slogxHeapSlack / n)), Symptom: true},
			{Name: "query log bytes per query", Unit: unitBytes,
				Naive: naive.logBytes / n, Leaksafe: safe.logBytes / n, Bound: atMost(4 << 10), Symptom: true},
			{Name: "longest query log line", Unit: unitBytes,
				Naive: naive.lastLine, Leaksafe: safe.lastLine, Bound: atMost(4 << 10), Symptom: true},
		},
		Notes: []string{fmt.Sprintf("naive wrote %s of query log for %d queries of ~%s each, slogx %s",
			formatBytes(naive.logBytes), queries, formatBytes(float64(len(slogxQueries[0])+len(slogxQueryPadding))), formatBytes(safe.logBytes))},
		Panels: []panel{
			{Title: "slogx: heap retained while the engine logs queries", X: "queries", Y: "live heap growth", Unit: unitBytes,
				Naive: naive.heap, Leaksafe: safe.heap},
			{Title: "slogx: query log size", X: "queries", Y: "query log", Unit: unitBytes,
				Naive: naive.log, Leaksafe: safe.log},
		},
	}, nil
}

// slogxHeapSlack is what a run of queries may leave on the heap without a leak: the engine's and
// the TSDB's own caches and measurement noise. The 3.0.0 logger keeps ~1.5 KiB per query.
const slogxHeapSlack = 64 << 10

type slogxRun struct {
	heapDelta, logBytes, lastLine float64
	heap, log                     []point
}

// slogxVariant runs the queries through a fresh engine with the logger as its query log, and
// samples the live heap and the log size as it goes. The engine closes the logger at the end.
func slogxVariant(ctx context.Context, db *tsdb.DB, end time.Time, queries int,
	open func() (promql.QueryLogger, func() int64, error),
) (run slogxRun, err error) {
	engine := promql.NewEngine(promql.EngineOpts{
		Reg: prometheus.NewRegistry(), MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute,
	})
	defer func() { err = errors.Join(err, engine.Close()) }()
	logger, size, err := open()
	if err != nil {
		return run, err
	}
	engine.SetQueryLogger(logger)
	defer engine.SetQueryLogger(nil) // closes logger

	query := func(i int) error {
		q, err := engine.NewRangeQuery(ctx, db, nil, slogxQueries[i%len(slogxQueries)]+slogxQueryPadding,
			end.Add(-time.Hour), end, time.Minute)
		if err != nil {
			return err
		}
		defer q.Close()
		return q.Exec(ctx).Err
	}
	// A first query warms the engine up (parser, pools) before the baseline.
	if err := query(0); err != nil {
		return run, err
	}
	base, baseSize := liveHeap(), size()
	run.heap = append(run.heap, point{0, 0})
	run.log = append(run.log, point{0, 0})
	every := max(1, queries/25)
	for i := 1; i <= queries; i++ {
		var before int64
		if i == queries {
			before = size()
		}
		if err := query(i); err != nil {
			return run, err
		}
		if i == queries {
			run.lastLine = float64(size() - before)
		}
		if i%every == 0 || i == queries {
			run.heap = append(run.heap, point{float64(i), float64(liveHeap() - base)})
			run.log = append(run.log, point{float64(i), float64(size() - baseSize)})
		}
	}
	run.heapDelta = run.heap[len(run.heap)-1][1]
	run.logBytes = run.log[len(run.log)-1][1]
	return run, nil
}

// mutatingQueryLogger is a small, faithful model of Prometheus 3.0.0's query logger
// (util/logging.JSONFileLogger) together with the engine's use of it. In 3.0.0 the engine
// called l.With(attrs...) and then l.Log(msg) for every query, and With was
//
//	func (l *JSONFileLogger) With(args ...any) { l.logger = l.logger.With(args...) }
//
// so every query's attributes were added to the one shared logger, kept in memory forever and
// written again with every later line. Today's engine hands a QueryLogger the record instead;
// Handle does with it exactly what 3.0.0 did.
type mutatingQueryLogger struct {
	mu     sync.Mutex // 3.0.0 had none (a data race too); this model only keeps -race quiet
	file   *os.File
	logger *slog.Logger
}

func openMutatingQueryLogger(path string) (*mutatingQueryLogger, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o666)
	if err != nil {
		return nil, err
	}
	return &mutatingQueryLogger{file: f, logger: slog.New(slog.NewJSONHandler(f, nil))}, nil
}

// With is 3.0.0's: it replaces the shared logger by one that carries args too.
func (l *mutatingQueryLogger) With(args ...any) {
	l.logger = l.logger.With(args...)
}

func (l *mutatingQueryLogger) Enabled(context.Context, slog.Level) bool { return true }

// Handle is 3.0.0's engine code: l.With(f...); l.Log(ctx, level, "promql query logged").
func (l *mutatingQueryLogger) Handle(ctx context.Context, r slog.Record) error {
	args := make([]any, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool { args = append(args, a); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.With(args...)
	l.logger.Log(ctx, r.Level, r.Message)
	return nil
}

// WithAttrs and WithGroup mutate as With did; the engine does not call them.
func (l *mutatingQueryLogger) WithAttrs(attrs []slog.Attr) slog.Handler {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logger = slog.New(l.logger.Handler().WithAttrs(attrs))
	return l
}

func (l *mutatingQueryLogger) WithGroup(name string) slog.Handler {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.logger = l.logger.WithGroup(name)
	return l
}

func (l *mutatingQueryLogger) Close() error { return l.file.Close() }

var _ promql.QueryLogger = (*mutatingQueryLogger)(nil)

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// openQueryTSDB opens an on-disk TSDB holding two hours of a few dashboard series at a 15 s
// scrape interval, and returns it with the time of the last sample.
func openQueryTSDB(ctx context.Context, dir string) (*tsdb.DB, time.Time, error) {
	db, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	end := time.Now().Truncate(time.Minute)
	start := end.Add(-2 * time.Hour)
	app := db.Appender(ctx)
	var series []labels.Labels
	for _, job := range []string{"api", "web", "batch"} {
		for inst := range 4 {
			instance := fmt.Sprintf("host-%d", inst)
			series = append(series,
				labels.FromStrings("__name__", "demo_requests_total", "job", job, "instance", instance, "code", "200"),
				labels.FromStrings("__name__", "demo_requests_total", "job", job, "instance", instance, "code", "500"),
				labels.FromStrings("__name__", "demo_inflight", "job", job, "instance", instance),
				labels.FromStrings("__name__", "demo_up", "job", job, "instance", instance),
			)
			for _, le := range []string{"0.1", "0.5", "1", "+Inf"} {
				series = append(series, labels.FromStrings("__name__", "demo_latency_seconds_bucket", "job", job, "instance", instance, "le", le))
			}
		}
	}
	for i, ls := range series {
		v := 0.0
		for t := start; !t.After(end); t = t.Add(15 * time.Second) {
			v += float64(i%7 + 1)
			if _, err := app.Append(0, ls, t.UnixMilli(), v); err != nil {
				_ = app.Rollback()
				return nil, time.Time{}, errors.Join(err, db.Close())
			}
		}
	}
	if err := app.Commit(); err != nil {
		return nil, time.Time{}, errors.Join(err, db.Close())
	}
	return db, end, nil
}

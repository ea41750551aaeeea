package slogx

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/stretchr/testify/require"
)

// *FileHandler is what promql.Engine.SetQueryLogger takes.
var _ promql.QueryLogger = (*FileHandler)(nil)

func TestPromQLEngineLogsQueriesThroughFileHandler(t *testing.T) {
	storage := promqltest.LoadedStorage(t, `
load 1m
  http_requests_total{job="api", instance="a"} 0+10x60
  http_requests_total{job="api", instance="b"} 0+20x60
`)
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	dir := t.TempDir()
	first, err := OpenJSONFile(filepath.Join(dir, "query.log"), &Options{MaxBytes: 1 << 20, MaxBackups: 2})
	require.NoError(t, err)
	engine.SetQueryLogger(first)

	ctx := context.WithValue(context.Background(), promql.QueryOrigin{}, map[string]any{
		"httpRequest": map[string]any{"clientIP": "10.0.0.1", "path": "/api/v1/query"},
	})
	at := time.Unix(0, 0).Add(30 * time.Minute)
	queries := []string{`sum(rate(http_requests_total[5m]))`, `http_requests_total{instance="b"}`, `up`}
	for _, q := range queries {
		qry, err := engine.NewInstantQuery(ctx, storage, nil, q, at)
		require.NoError(t, err)
		require.NoError(t, qry.Exec(ctx).Err)
		qry.Close()
	}
	rq, err := engine.NewRangeQuery(ctx, storage, nil, `rate(http_requests_total[5m])`, at.Add(-10*time.Minute), at, time.Minute)
	require.NoError(t, err)
	require.NoError(t, rq.Exec(ctx).Err)
	rq.Close()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	failing, err := engine.NewInstantQuery(canceled, storage, nil, `sum(http_requests_total)`, at)
	require.NoError(t, err)
	require.Error(t, failing.Exec(canceled).Err)
	failing.Close()

	lines := readLines(t, first.Path())
	require.Len(t, lines, len(queries)+2)
	t.Logf("a query log line: %s", lines[0])
	for i, q := range queries {
		m := requireJSONLine(t, lines[i])
		require.Equal(t, "promql query logged", m["msg"])
		require.Equal(t, "INFO", m["level"])
		params := m["params"].(map[string]any)
		require.Equal(t, q, params["query"], "each line holds its own query")
		require.Equal(t, "1970-01-01T00:30:00.000Z", params["start"])
		require.Contains(t, m, "stats")
		require.Equal(t, "/api/v1/query", m["httpRequest"].(map[string]any)["path"])
		require.NotContains(t, m, "error")
	}
	rangeLine := requireJSONLine(t, lines[len(queries)])
	require.Equal(t, float64(60), rangeLine["params"].(map[string]any)["step"])
	failed := requireJSONLine(t, lines[len(queries)+1])
	require.Contains(t, failed["error"], "canceled")

	// A config reload: promql opens the new logger, SetQueryLogger closes the old one.
	// Anything still holding the old handler gets ErrClosed, not a write to a dead file.
	second, err := OpenJSONFile(filepath.Join(dir, "query-reloaded.log"), nil)
	require.NoError(t, err)
	engine.SetQueryLogger(second)
	require.ErrorIs(t, first.WithAttrs([]slog.Attr{slog.Int("late", 1)}).Handle(ctx, slog.NewRecord(at, slog.LevelInfo, "late", 0)), ErrClosed)
	qry, err := engine.NewInstantQuery(ctx, storage, nil, `count(http_requests_total)`, at)
	require.NoError(t, err)
	require.NoError(t, qry.Exec(ctx).Err)
	qry.Close()
	require.Len(t, readLines(t, first.Path()), len(queries)+2, "nothing more in the old file")
	reloaded := readLines(t, second.Path())
	require.Len(t, reloaded, 1)
	require.Equal(t, "count(http_requests_total)", requireJSONLine(t, reloaded[0])["params"].(map[string]any)["query"])

	engine.SetQueryLogger(nil) // closes second
	require.ErrorIs(t, second.Handle(ctx, slog.NewRecord(at, slog.LevelInfo, "x", 0)), ErrClosed)
	require.NoError(t, engine.Close())
}

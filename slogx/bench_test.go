package slogx

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/prometheus/util/logging"
	"github.com/stretchr/testify/require"
)

// Each benchmark runs this handler beside its anchors in the same run, all writing to a
// real file in b.TempDir(): slog.JSONHandler on an *os.File opened O_APPEND (as ours), and
// Prometheus' util/logging.JSONFileLogger (the query logger of the incident).
var benchImpls = []struct {
	name string
	open func(b *testing.B, path string) (slog.Handler, io.Closer)
}{
	{"slogx", func(b *testing.B, path string) (slog.Handler, io.Closer) {
		h, err := OpenJSONFile(path, nil)
		require.NoError(b, err)
		return h, h
	}},
	{"slog", func(b *testing.B, path string) (slog.Handler, io.Closer) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
		require.NoError(b, err)
		return slog.NewJSONHandler(f, nil), f
	}},
	{"prometheus", func(b *testing.B, path string) (slog.Handler, io.Closer) {
		l, err := logging.NewJSONFileLogger(path)
		require.NoError(b, err)
		return l, l
	}},
}

func benchOpen(b *testing.B, i int) slog.Handler {
	h, c := benchImpls[i].open(b, filepath.Join(b.TempDir(), "query.log"))
	b.Cleanup(func() { _ = c.Close() })
	return h
}

const benchQuery = `sum by (instance) (rate(http_requests_total{job="api",code=~"5.."}[5m]))`

// BenchmarkRecord: one record with 5 attrs on a logger with 3 With attrs.
func BenchmarkRecord(b *testing.B) {
	ctx := context.Background()
	for i, impl := range benchImpls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			l := slog.New(benchOpen(b, i)).With("component", "query engine", "tenant", "team-a", "shard", 3)
			b.ReportAllocs()
			for b.Loop() {
				l.LogAttrs(ctx, slog.LevelInfo, "promql query logged",
					slog.String("query", benchQuery),
					slog.Int64("samples", 123456),
					slog.Float64("seconds", 0.01234),
					slog.Duration("took", 12*time.Millisecond),
					slog.Bool("cached", false),
				)
			}
		})
	}
}

// BenchmarkPerQueryWith: the incident's pattern, base.With(k, v).Info(...) per query.
func BenchmarkPerQueryWith(b *testing.B) {
	for i, impl := range benchImpls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			base := slog.New(benchOpen(b, i)).With("component", "query engine", "tenant", "team-a", "shard", 3)
			b.ReportAllocs()
			for b.Loop() {
				base.With("query", benchQuery).Info("promql query logged",
					"samples", 123456, "seconds", 0.01234, "took", 12*time.Millisecond, "cached", false, "step", 15)
			}
		})
	}
}

// BenchmarkDerivedHandlerHeap reports the live heap each derived handler holds
// (heap-B/handler), measured with ReadMemStats after GC over b.N live handlers.
func BenchmarkDerivedHandlerHeap(b *testing.B) {
	own := []slog.Attr{slog.String("query", benchQuery)}
	for i, impl := range benchImpls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			base := benchOpen(b, i).WithAttrs([]slog.Attr{slog.String("component", "query engine"), slog.String("tenant", "team-a"), slog.Int("shard", 3)})
			kept := make([]slog.Handler, b.N)
			b.ReportAllocs()
			before := heapInUse()
			b.ResetTimer()
			for n := range b.N {
				kept[n] = base.WithAttrs(own)
			}
			b.StopTimer()
			b.ReportMetric(float64(heapInUse()-before)/float64(b.N), "heap-B/handler")
			runtime.KeepAlive(kept)
		})
	}
}

func benchRec() slog.Record {
	var pcs [1]uintptr
	runtime.Callers(1, pcs[:])
	r := slog.NewRecord(time.Now(), slog.LevelInfo, "promql query logged", pcs[0])
	r.AddAttrs(slog.String("query", benchQuery),
		slog.Int64("samples", 123456),
		slog.Float64("seconds", 0.01234),
		slog.Duration("took", 12*time.Millisecond),
		slog.Bool("cached", false))
	return r
}

var benchWithAttrs = []slog.Attr{slog.String("component", "query engine"), slog.String("tenant", "team-a"), slog.Int("shard", 3)}

// BenchmarkEncodeOnly isolates the encoder from the write(2) both pay: ours into its
// buffer, slog.JSONHandler into io.Discard (its Handle minus the syscall).
func BenchmarkEncodeOnly(b *testing.B) {
	r := benchRec()
	b.Run("impl=slogx", func(b *testing.B) {
		h, _ := openTemp(b, nil)
		d := h.WithAttrs(benchWithAttrs).(*FileHandler)
		b.ReportAllocs()
		for b.Loop() {
			e := getEncoder()
			d.encode(e, r)
			putEncoder(e)
		}
	})
	b.Run("impl=slog", func(b *testing.B) {
		d := slog.NewJSONHandler(io.Discard, nil).WithAttrs(benchWithAttrs)
		b.ReportAllocs()
		for b.Loop() {
			d.Handle(context.Background(), r)
		}
	})
}

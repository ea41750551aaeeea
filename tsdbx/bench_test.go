package tsdbx

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
)

// The head of the benchmark: 10k series scraped 120 times in order,
// 30% of them also holding out-of-order samples.
const (
	benchSeries          = 10_000
	benchSamplesInOrder  = 120
	benchOOOSeries       = 3_000
	benchSamplesOOO      = 30
	benchStart           = 10 * hour
	benchOOOWindow       = 2 * hour
	benchScrapeIntervals = scrape
)

// BenchmarkCompactHead compares, on the same head, CompactHead with the two
// calls people make by hand today: db.CompactHead over the whole head plus
// db.CompactOOOHead (the anchor), and db.CompactHead alone (the incident).
//
// Each iteration measures the second active-then-idle cycle of a tenant DB:
// the first cycle (load, CompactHead) leaves the high-water marks every DB
// keeps once it has held that many series (Go maps in the head's series
// stripes never shrink; the chunk write buffer is allocated at the first
// m-map). Then the head is loaded again and compacted by the implementation
// under test. Besides time and allocations it reports heap in use after GC
// with the idle DB, with the head loaded, and after compaction, the share of
// the head's heap still held afterwards, and the series left in the head.
//
//	go test -run '^$' -bench BenchmarkCompactHead -benchmem -count 6 ./tsdbx/
func BenchmarkCompactHead(b *testing.B) {
	for _, impl := range []struct {
		name    string
		compact func(context.Context, *tsdb.DB) error
	}{
		{"tsdbx", CompactHead},
		{"manual", func(ctx context.Context, db *tsdb.DB) error {
			h := db.Head()
			if err := db.CompactHead(tsdb.NewRangeHead(h, h.MinTime(), h.MaxTime())); err != nil {
				return err
			}
			return db.CompactOOOHead(ctx)
		}},
		{"incident", func(_ context.Context, db *tsdb.DB) error {
			h := db.Head()
			return db.CompactHead(tsdb.NewRangeHead(h, h.MinTime(), h.MaxTime()))
		}},
	} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			b.ReportAllocs()
			lset := benchLabels()
			var heapIdle, heapBefore, heapAfter, seriesAfter float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir, db := openBenchDB(b)
				loadBenchHead(b, db, lset, benchStart)
				if err := CompactHead(context.Background(), db); err != nil {
					b.Fatal(err)
				}
				idle := heapInUse()
				loadBenchHead(b, db, lset, benchStart+2*tsdb.DefaultBlockDuration)
				before := heapInUse()
				b.StartTimer()

				if err := impl.compact(context.Background(), db); err != nil {
					b.Fatal(err)
				}

				b.StopTimer()
				heapIdle += float64(idle)
				heapBefore += float64(before)
				heapAfter += float64(heapInUse())
				seriesAfter += float64(db.Head().NumSeries())
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(heapIdle/n/(1<<20), "MiB-heap-idle")
			b.ReportMetric(heapBefore/n/(1<<20), "MiB-heap-before")
			b.ReportMetric(heapAfter/n/(1<<20), "MiB-heap-after")
			b.ReportMetric((heapAfter-heapIdle)/(heapBefore-heapIdle), "head-heap-after/before")
			b.ReportMetric(seriesAfter/n, "series-left")
		})
	}
}

func benchLabels() []labels.Labels {
	out := make([]labels.Labels, benchSeries)
	for i := range out {
		out[i] = labels.FromStrings("__name__", "http_requests_total", "instance", "host-"+strconv.Itoa(i%500), "path", "/api/v1/"+strconv.Itoa(i))
	}
	return out
}

func openBenchDB(b *testing.B) (string, *tsdb.DB) {
	dir, err := os.MkdirTemp("", "tsdbx-bench")
	if err != nil {
		b.Fatal(err)
	}
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = benchOOOWindow
	db, err := tsdb.Open(dir, slog.New(slog.DiscardHandler), nil, opts, nil)
	if err != nil {
		b.Fatal(err)
	}
	db.DisableCompactions()
	return dir, db
}

// loadBenchHead appends one scrape of every series per commit, then the
// out-of-order samples, each between two in-order ones.
func loadBenchHead(b *testing.B, db *tsdb.DB, lset []labels.Labels, start int64) {
	ctx := context.Background()
	for j := range benchSamplesInOrder {
		app := db.Appender(ctx)
		ts := start + int64(j)*benchScrapeIntervals
		for i := range lset {
			if _, err := app.Append(0, lset[i], ts, float64(j)); err != nil {
				b.Fatal(err)
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	for j := range benchSamplesOOO {
		app := db.Appender(ctx)
		ts := start + int64(benchSamplesInOrder-benchSamplesOOO+j)*benchScrapeIntervals - benchScrapeIntervals/2
		for i := range benchOOOSeries {
			if _, err := app.Append(0, lset[i], ts, float64(j)+0.5); err != nil {
				b.Fatal(err)
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

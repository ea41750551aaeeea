package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/leaksafe/leaksafe/tsdbx"
)

var tsdbxScenario = scenario{
	name:  "tsdbx",
	about: "Cortex ingester: idle compaction called CompactHead but not CompactOOOHead; OOO series never left the head",
	run:   runTsdbx,
}

const (
	tsdbxInOrderSamples = 120 // per series: one hour at 30 s
	tsdbxOOOSamples     = 30  // per out-of-order series, between the in-order ones, sent late
	tsdbxBatches        = 8
)

func runTsdbx(ctx context.Context, e *env) (*result, error) {
	series := e.scaled(4000, 200)
	naive, err := tsdbxVariant(ctx, filepath.Join(e.dir, "naive"), series, false)
	if err != nil {
		return nil, fmt.Errorf("naive: %w", err)
	}
	safe, err := tsdbxVariant(ctx, filepath.Join(e.dir, "leaksafe"), series, true)
	if err != nil {
		return nil, fmt.Errorf("leaksafe: %w", err)
	}
	if naive.appended != safe.appended {
		return nil, fmt.Errorf("the variants appended %d and %d samples", naive.appended, safe.appended)
	}
	appended := float64(safe.appended)
	return &result{
		Metrics: []metric{
			{Name: "head series after idle compaction", Unit: unitCount, Naive: naive.headSeries, Leaksafe: safe.headSeries,
				Bound: exactly(0), Symptom: true},
			{Name: "heap held by the DB after idle compaction", Unit: unitBytes, Naive: naive.heap, Leaksafe: safe.heap,
				Bound: atMost(tsdbxHeapFixed + tsdbxHeapPerSeries*float64(series)), Symptom: true},
			{Name: "samples readable after compaction", Unit: unitCount, Naive: float64(naive.readable), Leaksafe: float64(safe.readable),
				Bound: exactly(appended)},
			{Name: "samples readable after a restart", Unit: unitCount, Naive: float64(naive.readableAfterRestart), Leaksafe: float64(safe.readableAfterRestart),
				Bound: exactly(appended)},
		},
		Notes: []string{fmt.Sprintf("%d series × %d in-order samples, then %d out-of-order samples for each (and one in-order warm-up series, m-mapped before the heap baseline as a running DB does every minute); naive: db.CompactHead over the head's block ranges (Cortex before #6108); leaksafe: tsdbx.IdleCompactor.CompactIfIdle once idle (fake clock)",
			series, tsdbxInOrderSamples, tsdbxOOOSamples)},
		Panels: []panel{
			{Title: "tsdbx: head series — appends, then idle compaction", X: "seconds", Y: "head series", Unit: unitCount,
				Naive: naive.seriesPts, Leaksafe: safe.seriesPts},
			{Title: "tsdbx: heap held by the DB", X: "seconds", Y: "live heap growth", Unit: unitBytes,
				Naive: naive.heapPts, Leaksafe: safe.heapPts},
		},
	}, nil
}

// What a DB whose head was emptied may still hold on the heap, measured from the baseline (an
// open DB whose chunk disk mapper has its write buffer, see warmUpChunkMapper): a little fixed
// and a little per series it once had (the new blocks' in-memory index parts; Go maps do not
// shrink) — about 0.5 KiB per series, measured at 200 to 4,000 series. The head that keeps
// out-of-order series holds about 3.5 KiB per series, so the bound separates the two at every
// -scale, smoke included.
const (
	tsdbxHeapFixed     = 256 << 10
	tsdbxHeapPerSeries = 1 << 10
)

type tsdbxRun struct {
	headSeries, heap     float64
	appended, readable   int64
	readableAfterRestart int64
	seriesPts, heapPts   []point
}

// tsdbxVariant fills a fresh on-disk TSDB (out-of-order window on) with in-order samples and
// late out-of-order ones, lets it go idle, compacts it the variant's way, and measures the
// head, the heap and what is readable, also after reopening the DB.
func tsdbxVariant(ctx context.Context, dir string, nSeries int, safe bool) (run tsdbxRun, err error) {
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = (2 * time.Hour).Milliseconds()
	logger := slog.New(slog.DiscardHandler)
	db, err := tsdb.Open(dir, logger, nil, opts, nil)
	if err != nil {
		return run, err
	}
	defer func() {
		if db != nil {
			err = errors.Join(err, db.Close())
		}
	}()

	var app storage.Appendable = db
	var clock fakeClock
	clock.set(time.Now())
	var idle *tsdbx.IdleCompactor
	if safe {
		idle, err = tsdbx.NewIdleCompactor(db, tsdbx.IdleOptions{IdleTimeout: time.Minute, CheckInterval: time.Minute, Logger: logger, Now: clock.now})
		if err != nil {
			return run, err
		}
		app = idle.Appendable()
	}

	end := time.Now().Truncate(time.Minute)
	t0 := end.Add(-tsdbxInOrderSamples * 30 * time.Second).UnixMilli()
	// A running DB m-maps its full head chunks every minute (tsdb.DB's run loop), and the
	// first m-map allocates the chunk disk mapper's 4 MiB write buffer for the life of the DB.
	// Every ingester that has run for a minute has paid it; this demo runs for seconds, so
	// pay it here, before the baseline, in both variants alike. Without this the leaksafe
	// variant, whose OOO compaction m-maps chunks, is charged 4 MiB that the naive one never
	// allocates, and at small scale that fixed cost hides the naive head's per-series leak.
	warmUp, err := warmUpChunkMapper(ctx, app, t0)
	if err != nil {
		return run, err
	}
	run.appended += warmUp
	db.ForceHeadMMap()

	base := liveHeap()
	start := time.Now()
	sample := func() {
		t := time.Since(start).Seconds()
		run.heapPts = append(run.heapPts, point{t, float64(liveHeap() - base)})
		run.seriesPts = append(run.seriesPts, point{t, float64(db.Head().NumSeries())})
	}
	sample()

	lsets := make([]labels.Labels, nSeries)
	for i := range lsets {
		lsets[i] = labels.FromStrings("__name__", "demo_active_requests", "tenant", "team-a",
			"pod", fmt.Sprintf("ingest-%d", i/50), "series", fmt.Sprintf("%05d", i))
	}
	appendBatch := func(from, to int, ooo bool) error {
		a := app.Appender(ctx)
		for i := from; i < to; i++ {
			if ooo {
				for k := range tsdbxOOOSamples {
					// Between two in-order samples: older than the head's max time, so out of order.
					if _, err := a.Append(0, lsets[i], t0+int64(k)*30_000+15_000, float64(k)); err != nil {
						return errors.Join(err, a.Rollback())
					}
					run.appended++
				}
				continue
			}
			for k := range tsdbxInOrderSamples {
				if _, err := a.Append(0, lsets[i], t0+int64(k)*30_000, float64(k)); err != nil {
					return errors.Join(err, a.Rollback())
				}
				run.appended++
			}
		}
		return a.Commit()
	}
	for _, ooo := range []bool{false, true} {
		for b := range tsdbxBatches {
			if err := appendBatch(b*nSeries/tsdbxBatches, (b+1)*nSeries/tsdbxBatches, ooo); err != nil {
				return run, err
			}
			sample()
		}
	}

	// The tenant goes idle.
	clock.set(clock.now().Add(2 * time.Minute))
	if safe {
		compacted, err := idle.CompactIfIdle(ctx)
		if err != nil {
			return run, err
		}
		if !compacted {
			return run, errors.New("CompactIfIdle did not compact an idle DB")
		}
	} else if err := compactHeadOnly(db); err != nil {
		return run, err
	}
	sample()
	run.headSeries = float64(db.Head().NumSeries())
	run.heap = run.heapPts[len(run.heapPts)-1][1]
	if run.readable, err = countSamples(ctx, db); err != nil {
		return run, err
	}

	// A restart: everything must come back from blocks, WAL and WBL.
	err = db.Close()
	db = nil
	if err != nil {
		return run, err
	}
	if db, err = tsdb.Open(dir, logger, nil, opts, nil); err != nil {
		return run, err
	}
	if run.readableAfterRestart, err = countSamples(ctx, db); err != nil {
		return run, err
	}
	return run, nil
}

// warmUpChunkMapper appends one in-order series with enough samples over the demo's hour for
// its head to cut a second chunk, so that the first one can be m-mapped. Both variants compact
// it like every other in-order series.
func warmUpChunkMapper(ctx context.Context, app storage.Appendable, t0 int64) (int64, error) {
	a := app.Appender(ctx)
	ls := labels.FromStrings("__name__", "demo_active_requests", "tenant", "team-a", "pod", "warm-up", "series", "warm-up")
	const samples = 3 * tsdbxInOrderSamples // three chunks' worth: Prometheus cuts at ~120
	for k := range samples {
		if _, err := a.Append(0, ls, t0+int64(k)*10_000, float64(k)); err != nil {
			return 0, errors.Join(err, a.Rollback())
		}
	}
	return samples, a.Commit()
}

// compactHeadOnly is Cortex's idle compaction before the fix: the in-order head, one block
// range at a time, through db.CompactHead, and nothing for the out-of-order head.
func compactHeadOnly(db *tsdb.DB) error {
	blockRange := tsdb.DefaultBlockDuration
	h := db.Head()
	for range 16 { // a head spans a few block ranges at most
		mint, maxt := h.MinTime(), h.MaxTime()
		if mint > maxt || h.NumSeries() == 0 {
			return nil
		}
		blockMax := (mint/blockRange+1)*blockRange - 1
		if err := db.CompactHead(tsdb.NewRangeHead(h, mint, min(maxt, blockMax))); err != nil {
			return err
		}
		if blockMax >= maxt {
			return nil
		}
	}
	return errors.New("head did not shrink")
}

// countSamples reads every sample of every series back.
func countSamples(ctx context.Context, db *tsdb.DB) (int64, error) {
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	set := q.Select(ctx, false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	var n int64
	var it chunkenc.Iterator
	for set.Next() {
		it = set.At().Iterator(it)
		for it.Next() != chunkenc.ValNone {
			n++
		}
		if err := it.Err(); err != nil {
			return n, err
		}
	}
	return n, set.Err()
}

// fakeClock is the compactor's clock: the demo cannot wait an hour for a tenant to be idle.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

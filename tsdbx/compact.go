package tsdbx

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"weak"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
)

// phase names one step of a full head compaction. They label the waiting metric.
type phase string

const (
	phaseDrain    phase = "drain_appenders" // waiting for appenders opened before the compaction
	phaseInOrder  phase = "in_order"        // db.CompactHead per block range; waits for overlapping queriers
	phaseOOO      phase = "out_of_order"    // db.CompactOOOHead; waits for queriers on OOO chunks
	phaseEvict    phase = "evict_empty"     // dropping series that hold no sample; waits for queriers
	phaseFinished phase = ""
)

var phases = []phase{phaseDrain, phaseInOrder, phaseOOO, phaseEvict}

// The DB calls that write blocks, as variables so tests can inject faults.
var (
	dbCompactHead    = (*tsdb.DB).CompactHead
	dbCompactOOOHead = (*tsdb.DB).CompactOOOHead
)

// CompactHead persists everything the head of db holds to blocks and empties
// the head: the whole in-order head (not only the part older than 1.5 block
// ranges, as db.Compact does), then always the out-of-order head, then series
// left without any sample (created by rolled-back appenders). Afterwards
// db.Head().NumSeries() is 0 unless something was appended meanwhile.
//
// This is the fix of Cortex PR #6108 / Mimir #4180 for the incident where idle
// compaction called db.CompactHead but never db.CompactOOOHead, so a tenant
// that had ingested out-of-order samples kept its series in memory forever.
//
// The in-order head is written in block-aligned ranges no longer than the DB's
// block range (tsdb.Options.MinBlockDuration). An in-order head that holds no
// sample is not touched: db.CompactHead on it would still move the head's
// MinTime forward by 1 ms per call and reject appends in that millisecond.
//
// Every phase runs even if an earlier one failed; the errors are joined. ctx is
// checked before each phase and between block ranges; a DB call that has
// started runs to its end, because Prometheus' head truncation waits without
// cancellation for open queriers overlapping the truncated range. A querier
// that is never closed therefore blocks CompactHead forever: IdleCompactor
// exposes that wait as the leaksafe_tsdbx_compaction_waiting_seconds metric.
//
// Appends made directly through db while CompactHead runs are not coordinated:
// an appender opened before the call and committed during it can write into
// the range just truncated and lose samples, with or without isolation. Route
// appends through IdleCompactor.Appendable, or stop them, before calling it.
func CompactHead(ctx context.Context, db *tsdb.DB) error {
	return fullCompaction{db: db}.run(ctx)
}

// fullCompaction is one CompactHead call with optional hooks.
type fullCompaction struct {
	db *tsdb.DB
	// enter is told each phase as it starts (the waiting metric); may be nil.
	enter func(phase)
}

func (fc fullCompaction) run(ctx context.Context) error {
	if fc.db == nil {
		return ErrNilDB
	}
	if fc.enter == nil {
		fc.enter = func(phase) {}
	}
	defer fc.enter(phaseFinished)

	var errs []error
	for _, step := range []struct {
		phase phase
		run   func(context.Context, *tsdb.DB) error
	}{
		{phaseInOrder, compactInOrderHead},
		{phaseOOO, compactOOOHead},
		{phaseEvict, evictEmptySeries},
	} {
		fc.enter(step.phase)
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("tsdbx: head compaction stopped before %s phase: %w", step.phase, err))
			break
		}
		if err := step.run(ctx, fc.db); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// compactInOrderHead writes the in-order head up to its MaxTime at the start
// of the call, one block range at a time, and truncates the head behind it.
// Only block ranges that hold samples are compacted: a far-future sample makes
// the head span thousands of empty ranges, and the head's own MinTime cannot
// be used to skip them because a series with only out-of-order data pins it.
func compactInOrderHead(ctx context.Context, db *tsdb.DB) error {
	head := db.Head()
	mint, maxt := head.MinTime(), head.MaxTime()
	if mint > maxt {
		// A head that never received a sample has MinTime MaxInt64 and MaxTime MinInt64.
		return nil
	}
	// A head without in-order samples must not reach db.CompactHead at all,
	// but finding that out needs no block range: scan with the widest one.
	if has, err := hasInOrderSamples(ctx, head, mint, maxt); err != nil || !has {
		if err != nil {
			return fmt.Errorf("tsdbx: scan in-order head: %w", err)
		}
		return nil
	}
	width, err := blockRange(ctx, db)
	if err != nil {
		return fmt.Errorf("tsdbx: read block range: %w", err)
	}
	ends, err := blocksWithSamples(ctx, head, mint, maxt, width)
	if err != nil {
		return fmt.Errorf("tsdbx: scan in-order head: %w", err)
	}
	for _, hi := range ends {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tsdbx: in-order head compaction stopped before range ending at %d: %w", hi, err)
		}
		lo := max(blockFirstMillisecond(hi, width), mint)
		hi = min(hi, maxt)
		// RangeHead's bounds are inclusive on both ends; the block it yields is
		// [lo, hi+1) and db.CompactHead truncates the head below hi+1.
		if err := dbCompactHead(db, tsdb.NewRangeHead(head, lo, hi)); err != nil {
			return fmt.Errorf("tsdbx: compact in-order head range [%d, %d]: %w", lo, hi, err)
		}
	}
	return nil
}

func compactOOOHead(ctx context.Context, db *tsdb.DB) error {
	if err := dbCompactOOOHead(db, ctx); err != nil {
		return fmt.Errorf("tsdbx: compact out-of-order head: %w", err)
	}
	return nil
}

// evictEmptySeries removes series that hold no sample at all. A rolled-back
// appender leaves the series it created in the head; Prometheus drops them only
// at the next head truncation, which never comes for an idle tenant, so its
// series count would never reach zero. db.CompactSelectedSeries evicts them
// without moving the head's MinTime, and itself skips series with pending
// commits or out-of-order data.
func evictEmptySeries(ctx context.Context, db *tsdb.DB) error {
	head := db.Head()
	if head.NumSeries() == 0 {
		return nil
	}
	refs, err := seriesWithoutInOrderSamples(ctx, head)
	if err != nil {
		return fmt.Errorf("tsdbx: scan head for empty series: %w", err)
	}
	if len(refs) == 0 {
		return nil
	}
	if err := db.CompactSelectedSeries(refs); err != nil {
		return fmt.Errorf("tsdbx: evict %d empty series: %w", len(refs), err)
	}
	return nil
}

// hasInOrderSamples reports whether any series has an in-order chunk
// overlapping [mint, maxt]. A chunk's MaxTime is its newest sample, so an
// overlapping chunk always has a sample inside the range when maxt is the
// head's MaxTime. The scan stops at the first hit.
func hasInOrderSamples(ctx context.Context, head *tsdb.Head, mint, maxt int64) (bool, error) {
	found := false
	err := forEachSeries(ctx, head, mint, maxt, func(_ storage.SeriesRef, chks []chunks.Meta) bool {
		found = len(chks) > 0
		return !found
	})
	return found, err
}

// blocksWithSamples returns, ascending, the last millisecond of every
// block-aligned range of the given width that holds an in-order sample in
// [mint, maxt]. A chunk whose first sample and the range's end (maxt, or the
// chunk's MaxTime, which the head reports as MaxInt64 for the open chunk) fall
// in the same block range is settled from its metadata; only a chunk that may
// cross a block boundary is read, to find the ranges its samples are in.
func blocksWithSamples(ctx context.Context, head *tsdb.Head, mint, maxt, width int64) ([]int64, error) {
	rh := tsdb.NewRangeHead(head, mint, maxt)
	cr, err := rh.Chunks()
	if err != nil {
		return nil, err
	}
	// Closing ends the read registered for isolation: head truncation,
	// which comes next, would otherwise wait for this very scan.
	defer cr.Close()

	ends := map[int64]struct{}{}
	var (
		it      chunkenc.Iterator
		readErr error
	)
	err = forEachSeries(ctx, head, mint, maxt, func(_ storage.SeriesRef, chks []chunks.Meta) bool {
		for _, meta := range chks {
			first := blockLastMillisecond(max(meta.MinTime, mint), width)
			if first >= min(meta.MaxTime, maxt) {
				ends[first] = struct{}{}
				continue
			}
			chk, iterable, err := cr.ChunkOrIterable(meta)
			if err != nil {
				readErr = err
				return false
			}
			if chk != nil {
				it = chk.Iterator(it)
			} else {
				it = iterable.Iterator(it)
			}
			last := int64(math.MinInt64)
			for it.Next() != chunkenc.ValNone {
				t := it.AtT()
				if t < mint || t <= last {
					continue
				}
				if t > maxt {
					break
				}
				last = blockLastMillisecond(t, width)
				ends[last] = struct{}{}
			}
			if err := it.Err(); err != nil {
				readErr = err
				return false
			}
		}
		return true
	})
	if err == nil {
		err = readErr
	}
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(ends)), nil
}

func seriesWithoutInOrderSamples(ctx context.Context, head *tsdb.Head) ([]storage.SeriesRef, error) {
	var refs []storage.SeriesRef
	err := forEachSeries(ctx, head, math.MinInt64, math.MaxInt64, func(ref storage.SeriesRef, chks []chunks.Meta) bool {
		if len(chks) == 0 {
			refs = append(refs, ref)
		}
		return true
	})
	return refs, err
}

// forEachSeries calls fn with every head series and its in-order chunks
// overlapping [mint, maxt], until fn returns false.
func forEachSeries(ctx context.Context, head *tsdb.Head, mint, maxt int64, fn func(storage.SeriesRef, []chunks.Meta) bool) error {
	ir, err := tsdb.NewRangeHead(head, mint, maxt).Index()
	if err != nil {
		return err
	}
	defer ir.Close()
	name, value := index.AllPostingsKey()
	p, err := ir.Postings(ctx, name, value)
	if err != nil {
		return err
	}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
	)
	for p.Next() {
		err := ir.Series(p.At(), &builder, &chks)
		if errors.Is(err, storage.ErrNotFound) {
			continue // garbage-collected since the postings were read
		}
		if err != nil {
			return err
		}
		if !fn(p.At(), chks) {
			return nil
		}
	}
	return p.Err()
}

// blockRanges caches each open DB's block range, keyed weakly so that a DB
// that is closed and dropped leaves no entry behind.
var blockRanges sync.Map // weak.Pointer[tsdb.DB] -> int64

// blockRange returns the head's chunk range, which tsdb.Open sets to
// Options.MinBlockDuration: the width of the blocks head compaction writes.
// tsdb.DB exposes it only through the out-of-order compaction head. Building
// one cuts (and fsyncs) a new WBL segment and m-maps the open out-of-order
// head chunks: steps the out-of-order phase takes next anyway, and nothing is
// truncated until a compaction head is passed to the DB. The range never
// changes while the DB is open, so this happens once per DB.
func blockRange(ctx context.Context, db *tsdb.DB) (int64, error) {
	key := weak.Make(db)
	if w, ok := blockRanges.Load(key); ok {
		return w.(int64), nil
	}
	och, err := tsdb.NewOOOCompactionHead(ctx, db.Head())
	if err != nil {
		return 0, err
	}
	w := och.ChunkRange()
	if w <= 0 {
		return 0, fmt.Errorf("head chunk range is %d", w)
	}
	if _, loaded := blockRanges.LoadOrStore(key, w); !loaded {
		runtime.AddCleanup(db, func(k weak.Pointer[tsdb.DB]) { blockRanges.Delete(k) }, key)
	}
	return w, nil
}

// blockFirstMillisecond returns the first millisecond of the block-aligned
// range of the given width whose last millisecond is end.
func blockFirstMillisecond(end, width int64) int64 {
	if end < math.MinInt64+(width-1) {
		return math.MinInt64
	}
	return end - (width - 1)
}

// blockLastMillisecond returns the last millisecond of the block-aligned range
// of the given width that holds t, without overflowing at the ends of int64.
func blockLastMillisecond(t, width int64) int64 {
	q := t / width
	if t%width < 0 {
		q-- // floor, not truncation toward zero
	}
	if q >= math.MaxInt64/width {
		return math.MaxInt64
	}
	return (q+1)*width - 1
}

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
// MinTime forward by 1 ms per call and reject appends in that millisecond. A
// head without series is a no-op: no DB call, no new WBL segment.
//
// Samples Prometheus cannot write to a block (see ErrUnpersistableTimestamp)
// stay in the head, and CompactHead reports them.
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
	if fc.db.Head().NumSeries() == 0 {
		// Every sample, in order or out of order, belongs to a head series,
		// so there is nothing to write. db.CompactOOOHead would still cut and
		// fsync a new WBL segment, at every idle check of an idle tenant.
		return nil
	}

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
func compactInOrderHead(ctx context.Context, db *tsdb.DB) error {
	head := db.Head()
	mint, maxt := head.MinTime(), head.MaxTime()
	if maxt == math.MaxInt64 {
		// A block ends at its last sample + 1 (RangeHead.BlockMaxTime), which
		// overflows here: db.CompactHead would write a block that ends before
		// it starts, again at every call. Compact everything below it.
		return errors.Join(
			compactInOrderRange(ctx, db, mint, maxt-1),
			fmt.Errorf("%w: an in-order sample at math.MaxInt64", ErrUnpersistableTimestamp))
	}
	return compactInOrderRange(ctx, db, mint, maxt)
}

// compactInOrderRange compacts the in-order head's samples in [mint, maxt].
// Only block ranges that hold samples are compacted: a far-future sample makes
// the head span thousands of empty ranges, and the head's own MinTime cannot
// be used to skip them because a series with only out-of-order data pins it.
func compactInOrderRange(ctx context.Context, db *tsdb.DB, mint, maxt int64) error {
	head := db.Head()
	if mint > maxt {
		// A head that never received a sample has MinTime MaxInt64 and MaxTime MinInt64.
		return nil
	}
	width, err := blockRange(ctx, db)
	if err != nil {
		return fmt.Errorf("tsdbx: read block range: %w", err)
	}
	// No range without samples may reach db.CompactHead, which would move
	// the head's MinTime forward even with nothing to write.
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

// compactOOOHead runs db.CompactOOOHead unless the out-of-order head holds a
// sample Prometheus cannot write to a block (see checkOOOTimestamps).
func compactOOOHead(ctx context.Context, db *tsdb.DB) error {
	if err := checkOOOTimestamps(ctx, db); err != nil {
		return err
	}
	if err := dbCompactOOOHead(db, ctx); err != nil {
		return fmt.Errorf("tsdbx: compact out-of-order head: %w", err)
	}
	return nil
}

// checkOOOTimestamps returns ErrUnpersistableTimestamp if db.CompactOOOHead
// would mishandle the out-of-order head. In Prometheus v0.315.0 it steps
// through block ranges from the oldest sample rounded toward zero: before 1970
// that skips the samples below the first range and then truncates them from
// the head, so acknowledged samples vanish; in the last block range before
// math.MaxInt64 the loop overflows and never ends, holding the DB's compaction
// lock (and, under IdleCompactor, refusing appends) forever.
//
// The head's own out-of-order bounds are cheap but loose (the minimum drops to
// MaxTime - OutOfOrderTimeWindow at each truncation, the maximum never drops),
// so the exact bounds are read only when the loose ones cross a limit.
func checkOOOTimestamps(ctx context.Context, db *tsdb.DB) error {
	head := db.Head()
	mint, maxt := head.MinOOOTime(), head.MaxOOOTime()
	if mint > maxt {
		return nil // never held an out-of-order sample
	}
	width, err := blockRange(ctx, db)
	if err != nil {
		return fmt.Errorf("tsdbx: read block range: %w", err)
	}
	if mint >= 0 && blockLastMillisecond(maxt, width) < math.MaxInt64 {
		return nil
	}
	och, err := tsdb.NewOOOCompactionHead(ctx, head)
	if err != nil {
		return fmt.Errorf("tsdbx: read out-of-order head: %w", err)
	}
	mint, maxt = och.MinTime(), och.MaxTime()
	switch {
	case mint > maxt:
		return nil // no out-of-order sample left
	case mint < 0:
		return fmt.Errorf("%w: an out-of-order sample at %d, before 1970", ErrUnpersistableTimestamp, mint)
	case blockLastMillisecond(maxt, width) == math.MaxInt64:
		return fmt.Errorf("%w: an out-of-order sample at %d, in the last block range before math.MaxInt64", ErrUnpersistableTimestamp, maxt)
	}
	return nil
}

// evictEmptySeries removes series that hold no sample at all. A rolled-back
// appender leaves the series it created in the head; Prometheus drops them only
// at the next head truncation, which never comes for an idle tenant, so its
// series count would never reach zero. db.CompactSelectedSeries evicts them
// without moving the head's MinTime, and itself skips series with pending
// commits or out-of-order data.
//
// CompactSelectedSeries writes one view per block range from the head's
// MinTime to its MaxTime, so it runs only when no in-order sample is left.
// Otherwise the in-order phase failed (or ungated appends raced it), the head
// may span thousands of ranges, and its next truncation drops these series
// anyway.
func evictEmptySeries(ctx context.Context, db *tsdb.DB) error {
	head := db.Head()
	if head.NumSeries() == 0 {
		return nil
	}
	var (
		empty        []storage.SeriesRef
		holdsSamples bool
	)
	err := forEachSeries(ctx, head, math.MinInt64, math.MaxInt64, func(ref storage.SeriesRef, chks []chunks.Meta) bool {
		holdsSamples = len(chks) > 0
		if !holdsSamples {
			empty = append(empty, ref)
		}
		return !holdsSamples
	})
	if err != nil {
		return fmt.Errorf("tsdbx: scan head for empty series: %w", err)
	}
	if holdsSamples || len(empty) == 0 {
		return nil
	}
	if err := db.CompactSelectedSeries(empty); err != nil {
		return fmt.Errorf("tsdbx: evict %d empty series: %w", len(empty), err)
	}
	return nil
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
// range of the given width whose last millisecond is end, as returned by
// blockLastMillisecond.
func blockFirstMillisecond(end, width int64) int64 {
	if end == math.MaxInt64 {
		// blockLastMillisecond saturates here: the last, partial range.
		return math.MaxInt64 / width * width
	}
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

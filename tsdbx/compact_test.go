package tsdbx

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"weak"

	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
)

// incidentWorkload is a tenant that ingested in order and, for a third of its
// series, out of order too: the shape of the Cortex incident.
var incidentWorkload = workload{series: 60, samplesPerSeries: 40, oooSeries: 20, oooPerSeries: 10, start: 10 * hour}

func TestCompactHeadEmptiesInOrderAndOutOfOrderHeadAndLosesNothing(t *testing.T) {
	for _, mode := range isolationModes {
		t.Run(mode.name, func(t *testing.T) {
			db := openTestDB(t, dbConfig{isolationDisabled: mode.disabled, oooWindow: oooWindow})
			want := incidentWorkload.load(t, db)
			require.EqualValues(t, incidentWorkload.series, db.Head().NumSeries())

			require.NoError(t, CompactHead(context.Background(), db.DB))

			require.Zero(t, db.Head().NumSeries(), "head still holds series")
			requireExactly(t, db.DB, want, "after CompactHead")
			db.reopen()
			requireExactly(t, db.DB, want, "after restart")
			// Prometheus does not persist how far out-of-order chunks were
			// truncated, so a restart reloads them from chunks_head: served once
			// (deduplicated with the blocks) and emptied by the next compaction.
			require.NoError(t, CompactHead(context.Background(), db.DB))
			require.Zero(t, db.Head().NumSeries())
			requireExactly(t, db.DB, want, "after restart and compaction")
		})
	}
}

// The incident itself: the same data compacted the way Cortex' idle
// compaction did (db.CompactHead over the whole head, no CompactOOOHead)
// leaves every series with out-of-order samples in memory; CompactHead does not.
func TestIncidentDBCompactHeadAloneLeavesOutOfOrderSeriesInHead(t *testing.T) {
	naive := openTestDB(t, dbConfig{oooWindow: oooWindow})
	naiveWant := incidentWorkload.load(t, naive)
	head := naive.Head()
	require.NoError(t, naive.CompactHead(tsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())))
	require.EqualValues(t, incidentWorkload.oooSeries, head.NumSeries(),
		"db.CompactHead alone should leave exactly the series with out-of-order samples in the head")
	requireExactly(t, naive.DB, naiveWant)

	fixed := openTestDB(t, dbConfig{oooWindow: oooWindow})
	fixedWant := incidentWorkload.load(t, fixed)
	require.NoError(t, CompactHead(context.Background(), fixed.DB))
	require.Zero(t, fixed.Head().NumSeries())
	requireExactly(t, fixed.DB, fixedWant)
}

func TestCompactHeadRejectsNilDB(t *testing.T) {
	require.ErrorIs(t, CompactHead(context.Background(), nil), ErrNilDB)
}

// countDBCompactHead counts the db.CompactHead calls made during the test.
func countDBCompactHead(t *testing.T) *int {
	calls := new(int)
	orig := dbCompactHead
	dbCompactHead = func(db *tsdb.DB, rh *tsdb.RangeHead) error {
		*calls++
		return orig(db, rh)
	}
	t.Cleanup(func() { dbCompactHead = orig })
	return calls
}

// countDBCompactOOOHead counts the db.CompactOOOHead calls made during the test.
func countDBCompactOOOHead(t *testing.T) *int {
	calls := new(int)
	orig := dbCompactOOOHead
	dbCompactOOOHead = func(db *tsdb.DB, ctx context.Context) error {
		*calls++
		return orig(db, ctx)
	}
	t.Cleanup(func() { dbCompactOOOHead = orig })
	return calls
}

// wblSegments lists the DB's WBL segment files.
func wblSegments(t *testing.T, db *testDB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(db.dir, "wbl"))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// db.CompactHead on a head without samples still truncates it at MaxTime+1:
// MinTime creeps forward 1 ms per call and appends in that millisecond start
// failing. CompactHead must leave such a head alone, and a head without any
// series (an idle tenant checked again and again) must not even reach
// db.CompactOOOHead, which cuts and fsyncs a new WBL segment at every call.
func TestCompactHeadLeavesHeadWithoutSamplesUntouched(t *testing.T) {
	t.Run("prometheus behaviour this guards against", func(t *testing.T) {
		db := openTestDB(t, dbConfig{})
		appendCommitted(t, db, newDataset(), sample{0, 1000})
		head := db.Head()
		require.NoError(t, db.CompactHead(tsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())))
		emptied := head.MinTime()
		require.NoError(t, db.CompactHead(tsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())))
		require.Equal(t, emptied+1, head.MinTime(), "db.CompactHead on an empty head no longer moves MinTime; the guard may be unnecessary")
	})

	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, db *testDB)
		empty   bool // no series at all: nothing may be touched
	}{
		{"never appended", func(*testing.T, *testDB) {}, true},
		{"already compacted", func(t *testing.T, db *testDB) {
			appendCommitted(t, db, newDataset(), sample{0, 1000}, sample{1, 1000})
			appendCommitted(t, db, newDataset(), sample{0, 500})
			require.NoError(t, CompactHead(context.Background(), db.DB))
		}, true},
		{"only out-of-order samples left", func(t *testing.T, db *testDB) {
			appendCommitted(t, db, newDataset(), sample{0, 10 * minute})
			require.NoError(t, CompactHead(context.Background(), db.DB))
			appendCommitted(t, db, newDataset(), sample{0, 5 * minute})
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, dbConfig{oooWindow: oooWindow})
			tc.prepare(t, db)
			calls, oooCalls := countDBCompactHead(t), countDBCompactOOOHead(t)
			minT, maxT := db.Head().MinTime(), db.Head().MaxTime()
			segments := wblSegments(t, db)

			for range 3 {
				require.NoError(t, CompactHead(context.Background(), db.DB))
			}

			require.Zero(t, *calls, "db.CompactHead called on an in-order head without samples")
			if tc.empty {
				require.Zero(t, *oooCalls, "db.CompactOOOHead called on a head without series")
				require.Equal(t, segments, wblSegments(t, db), "a WBL segment was cut for a head without series")
			} else {
				require.Equal(t, 1, *oooCalls, "the out-of-order samples must be compacted, and then the head is empty")
			}
			require.Equal(t, minT, db.Head().MinTime(), "head MinTime moved")
			require.Equal(t, maxT, db.Head().MaxTime(), "head MaxTime moved")
			require.Zero(t, db.Head().NumSeries())
		})
	}
}

func TestCompactHeadWritesBlockAlignedRangesNoLongerThanTheBlockRange(t *testing.T) {
	const blockRange = hour
	db := openTestDB(t, dbConfig{blockRange: blockRange, oooWindow: oooWindow})
	// 2.5 block ranges of in-order data, starting mid-range, plus out-of-order samples.
	w := workload{series: 6, samplesPerSeries: int(5 * blockRange / 2 / (4 * scrape)), oooSeries: 2, oooPerSeries: 30, start: 7*blockRange + blockRange/3}
	want := newDataset()
	for _, s := range w.inOrder() {
		s.t = w.start + (s.t-w.start)*4 // one sample per minute
		appendCommitted(t, db, want, s)
	}
	appendCommitted(t, db, want, w.outOfOrder()...)
	calls := countDBCompactHead(t)

	require.NoError(t, CompactHead(context.Background(), db.DB))

	require.Equal(t, 3, *calls, "one db.CompactHead per block range the head spans")
	require.Zero(t, db.Head().NumSeries())
	requireExactly(t, db.DB, want)
	blocks := db.Blocks()
	require.NotEmpty(t, blocks)
	for _, b := range blocks {
		m := b.Meta()
		require.LessOrEqual(t, m.MaxTime-m.MinTime, blockRange, "block [%d, %d) longer than the block range", m.MinTime, m.MaxTime)
		require.Equal(t, floorDiv(m.MinTime, blockRange), floorDiv(m.MaxTime-1, blockRange), "block [%d, %d) crosses a block-range boundary", m.MinTime, m.MaxTime)
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// A sample far in the future makes the head span thousands of block ranges;
// the ranges between are empty and must be skipped, not compacted one by one.
func TestCompactHeadSkipsEmptyRangesUpToAFarFutureSample(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []sample
	}{
		{"in-order only", []sample{{0, 1000}, {1, 1000}, {0, 10 * 365 * 24 * hour}}},
		// A series holding only out-of-order data pins the head's MinTime,
		// so the head's own MinTime cannot be used to skip the gap.
		{"with out-of-order data", []sample{{0, 5 * hour}, {1, 5 * hour}, {1, 4 * hour}, {0, 400 * 24 * hour}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, dbConfig{oooWindow: 1000 * 24 * hour})
			want := newDataset()
			for _, s := range tc.samples {
				appendCommitted(t, db, want, s)
			}
			calls := countDBCompactHead(t)

			require.NoError(t, CompactHead(context.Background(), db.DB))

			require.LessOrEqual(t, *calls, 2, "one db.CompactHead per block range holding samples")
			require.Zero(t, db.Head().NumSeries())
			requireExactly(t, db.DB, want)
		})
	}
}

func TestBlockLastMillisecondIsAlignedAndNeverOverflows(t *testing.T) {
	const w = 2 * hour
	for _, tc := range []struct{ t, want int64 }{
		{0, w - 1},
		{w - 1, w - 1},
		{w, 2*w - 1},
		{-1, -1},
		{-w, -1},
		{-w - 1, -w - 1},
		{math.MaxInt64, math.MaxInt64},
		{math.MaxInt64 - w, math.MaxInt64/w*w - 1},
		{math.MinInt64, math.MinInt64/w*w - 1},
	} {
		got := blockLastMillisecond(tc.t, w)
		require.Equal(t, tc.want, got, "t=%d", tc.t)
		require.GreaterOrEqual(t, got, tc.t)
		first := blockFirstMillisecond(got, w)
		require.LessOrEqual(t, first, tc.t)
		if first != math.MinInt64 { // the range below it starts before math.MinInt64
			require.Zero(t, first%w, "t=%d: range [%d, %d] is not block-aligned", tc.t, first, got)
		}
	}
}

// Remote-write timestamps are untrusted, and Prometheus v0.315.0 cannot write
// some of them to a block: a block ends at its last sample + 1, so a sample at
// math.MaxInt64 gets a block that ends before it starts (written again at
// every call); its out-of-order compaction starts at the oldest sample
// rounded toward zero, so out-of-order samples before 1970 are truncated from
// the head without reaching a block, and in the last block range before
// math.MaxInt64 its loop overflows and never ends. CompactHead must compact
// the rest, leave those samples in the head and say so.
func TestCompactHeadLeavesSamplesNoBlockCanHoldInTheHeadAndSaysSo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		commits [][]sample
	}{
		{"in order at math.MaxInt64", [][]sample{{{0, 1000}, {1, 1000}}, {{0, math.MaxInt64}}}},
		{"out of order before 1970", [][]sample{{{0, -10 * minute}, {1, -10 * minute}}, {{0, -5 * minute}}, {{0, -7 * minute}}}},
		{"out of order in the last block range before math.MaxInt64", [][]sample{{{0, 1000}, {1, 1000}}, {{0, math.MaxInt64 - minute}}, {{0, math.MaxInt64 - 2*minute}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, dbConfig{oooWindow: oooWindow})
			want := newDataset()
			for _, commit := range tc.commits {
				appendCommitted(t, db, want, commit...)
			}

			require.ErrorIs(t, CompactHead(context.Background(), db.DB), ErrUnpersistableTimestamp)
			blocks := len(db.Blocks())
			require.ErrorIs(t, CompactHead(context.Background(), db.DB), ErrUnpersistableTimestamp)

			require.Len(t, db.Blocks(), blocks, "the second call wrote a block again")
			for _, b := range db.Blocks() {
				m := b.Meta()
				require.Less(t, m.MinTime, m.MaxTime, "block ends before it starts")
				w := tsdb.DefaultBlockDuration
				require.Equal(t, floorDiv(m.MinTime, w), floorDiv(m.MaxTime-1, w), "block [%d, %d) crosses a block-range boundary", m.MinTime, m.MaxTime)
			}
			require.EqualValues(t, 1, db.Head().NumSeries(), "only the series holding the sample no block can hold stays in the head")
			requireExactly(t, db.DB, want)
			db.reopen()
			requireExactly(t, db.DB, want, "after restart")
		})
	}
}

// Series created by an appender that was rolled back hold no sample; Prometheus
// would drop them at the next head truncation, which never comes for an idle
// tenant.
func TestCompactHeadEvictsSeriesLeftByRolledBackAppenders(t *testing.T) {
	db := openTestDB(t, dbConfig{oooWindow: oooWindow})
	want := newDataset()
	appendCommitted(t, db, want, sample{0, 1000})
	require.NoError(t, CompactHead(context.Background(), db.DB))
	minT := db.Head().MinTime()

	app := db.Appender(context.Background())
	for i := 1; i <= 5; i++ {
		require.NoError(t, appendSample(app, i, minT+1000))
	}
	require.NoError(t, app.Rollback())
	require.EqualValues(t, 5, db.Head().NumSeries())

	require.NoError(t, CompactHead(context.Background(), db.DB))

	require.Zero(t, db.Head().NumSeries())
	require.Equal(t, minT, db.Head().MinTime())
	requireExactly(t, db.DB, want)
}

// When the in-order phase fails, the head keeps its whole span, and the next
// successful truncation drops the series rolled-back appenders left anyway.
// Evicting them now with db.CompactSelectedSeries would write one empty view
// per block range the head spans, holding the DB's compaction lock (and the
// gate) for minutes when a far-future sample makes that thousands of ranges.
func TestFailedInOrderPhaseDoesNotWriteAViewPerBlockRangeToEvictEmptySeries(t *testing.T) {
	db := openTestDB(t, dbConfig{blockRange: hour, oooWindow: oooWindow})
	want := newDataset()
	appendCommitted(t, db, want, sample{0, 1000}, sample{1, 1000})
	appendCommitted(t, db, want, sample{0, 500 * hour})
	app := db.Appender(context.Background())
	require.NoError(t, appendSample(app, 2, 500*hour))
	require.NoError(t, app.Rollback())
	errDisk := errors.New("disk on fire")
	orig := dbCompactHead
	t.Cleanup(func() { dbCompactHead = orig })
	dbCompactHead = func(*tsdb.DB, *tsdb.RangeHead) error { return errDisk }
	blockWrites := func() float64 { return metricValue(t, db.reg, "prometheus_tsdb_compactions_total") }
	before := blockWrites()

	require.ErrorIs(t, CompactHead(context.Background(), db.DB), errDisk)

	require.Less(t, blockWrites()-before, 10.0, "block writes for a head spanning 500 block ranges")
	requireExactly(t, db.DB, want)

	dbCompactHead = orig
	require.NoError(t, CompactHead(context.Background(), db.DB), "the next attempt")
	require.Zero(t, db.Head().NumSeries())
	requireExactly(t, db.DB, want)
}

func TestCompactHeadChecksContextBetweenPhases(t *testing.T) {
	t.Run("canceled before the call", func(t *testing.T) {
		db := openTestDB(t, dbConfig{oooWindow: oooWindow})
		want := incidentWorkload.load(t, db)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()

		require.ErrorIs(t, CompactHead(ctx, db.DB), context.Canceled)

		require.EqualValues(t, incidentWorkload.series, db.Head().NumSeries(), "compacted despite a canceled context")
		require.Empty(t, db.Blocks())
		requireExactly(t, db.DB, want)
	})

	t.Run("canceled between the in-order and out-of-order phases", func(t *testing.T) {
		db := openTestDB(t, dbConfig{oooWindow: oooWindow})
		want := incidentWorkload.load(t, db)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		err := fullCompaction{db: db.DB, enter: func(p phase) {
			if p == phaseOOO {
				cancel()
			}
		}}.run(ctx)

		require.ErrorIs(t, err, context.Canceled)
		require.EqualValues(t, incidentWorkload.oooSeries, db.Head().NumSeries(),
			"the in-order phase should have run and the out-of-order phase not")
		requireExactly(t, db.DB, want)

		require.NoError(t, CompactHead(context.Background(), db.DB), "the next attempt")
		require.Zero(t, db.Head().NumSeries())
		requireExactly(t, db.DB, want)
	})

	t.Run("canceled between block ranges", func(t *testing.T) {
		db := openTestDB(t, dbConfig{blockRange: hour, oooWindow: oooWindow})
		want := newDataset()
		for ts := int64(0); ts < 3*hour; ts += 10 * minute {
			appendCommitted(t, db, want, sample{0, ts}, sample{1, ts})
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		calls := 0
		orig := dbCompactHead
		dbCompactHead = func(db *tsdb.DB, rh *tsdb.RangeHead) error {
			calls++
			defer cancel()
			return orig(db, rh)
		}
		t.Cleanup(func() { dbCompactHead = orig })

		require.ErrorIs(t, CompactHead(ctx, db.DB), context.Canceled)

		require.Equal(t, 1, calls, "a block range was compacted after cancellation")
		require.Len(t, db.Blocks(), 1)
		require.EqualValues(t, 2, db.Head().NumSeries())
		requireExactly(t, db.DB, want)

		require.NoError(t, CompactHead(context.Background(), db.DB), "the next attempt")
		require.Equal(t, 3, calls)
		require.Zero(t, db.Head().NumSeries())
		requireExactly(t, db.DB, want)
	})
}

// When one phase fails the next still runs, and every error is returned.
func TestCompactHeadRunsEveryPhaseAndJoinsTheirErrors(t *testing.T) {
	errInOrder, errOOO := errors.New("in-order: disk on fire"), errors.New("ooo: disk on fire")
	for _, tc := range []struct {
		name           string
		failOOO        bool
		wantOOOBlocks  bool
		wantSeriesLeft int
	}{
		{"in-order phase fails", false, true, incidentWorkload.series},
		{"both phases fail", true, false, incidentWorkload.series},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, dbConfig{oooWindow: oooWindow})
			want := incidentWorkload.load(t, db)
			origHead, origOOO := dbCompactHead, dbCompactOOOHead
			t.Cleanup(func() { dbCompactHead, dbCompactOOOHead = origHead, origOOO })
			dbCompactHead = func(*tsdb.DB, *tsdb.RangeHead) error { return errInOrder }
			if tc.failOOO {
				dbCompactOOOHead = func(*tsdb.DB, context.Context) error { return errOOO }
			}

			err := CompactHead(context.Background(), db.DB)

			require.ErrorIs(t, err, errInOrder)
			// errors.Unwrap does not see through errors.Join: count the joined
			// errors instead, one per failed phase.
			joined, ok := err.(interface{ Unwrap() []error })
			require.True(t, ok, "CompactHead should join the errors of its phases: %v", err)
			if tc.failOOO {
				require.ErrorIs(t, err, errOOO)
				require.Len(t, joined.Unwrap(), 2, "one error per failed phase: %v", err)
			} else {
				require.Len(t, joined.Unwrap(), 1, "only the in-order phase failed: %v", err)
			}
			require.EqualValues(t, tc.wantSeriesLeft, db.Head().NumSeries(), "in-order data must stay in the head")
			require.Equal(t, tc.wantOOOBlocks, len(db.Blocks()) > 0, "did the out-of-order phase run")
			requireExactly(t, db.DB, want)

			dbCompactHead, dbCompactOOOHead = origHead, origOOO
			require.NoError(t, CompactHead(context.Background(), db.DB), "the next attempt")
			require.Zero(t, db.Head().NumSeries())
			requireExactly(t, db.DB, want)
		})
	}
}

// The block-range cache is keyed weakly: closing and dropping a DB (a tenant
// that went away) must not leave its entry behind.
func TestBlockRangeCacheForgetsDroppedDBs(t *testing.T) {
	db := openTestDB(t, dbConfig{blockRange: hour})
	appendCommitted(t, db, newDataset(), sample{0, 1000})
	require.NoError(t, CompactHead(context.Background(), db.DB))
	key := weak.Make(db.DB)
	w, ok := blockRanges.Load(key)
	require.True(t, ok)
	require.Equal(t, hour, w)

	require.NoError(t, db.Close())
	db.DB, db.reg = nil, nil // the DB's metrics reference it too
	for i := 0; ; i++ {
		runtime.GC()
		if _, ok := blockRanges.Load(key); !ok {
			return
		}
		require.Less(t, i, 1000, "cache entry of a dropped DB was never removed")
		runtime.Gosched() // cleanups run on their own goroutine
	}
}

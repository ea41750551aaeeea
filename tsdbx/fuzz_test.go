package tsdbx

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// FuzzAppendCompactNoLoss drives Appendable and the compactor with arbitrary
// sequences of appends (in order, out of order, far-future jumps; floats and
// native histograms), commits, rollbacks and compactions, some of them while
// an appender is still open. Remote-write input is untrusted: whatever it is,
// the DB must serve exactly the acknowledged samples afterwards, after a
// final compaction (with an empty head) and after a restart, and never panic.
//
// Each 3 bytes are one operation: kind, series, amount.
func FuzzAppendCompactNoLoss(f *testing.F) {
	f.Fuzz(fuzzAppendCompact)
}

func fuzzAppendCompact(t *testing.T, ops []byte) {
	if len(ops) > 3*64 {
		ops = ops[:3*64] // each operation may write blocks: keep one run short
	}
	db := openTestDB(t, dbConfig{oooWindow: hour, isolationDisabled: len(ops) > 0 && ops[0]&1 == 1})
	clock := newFakeClock()
	c, _ := newTestCompactor(t, db, clock, IdleOptions{DrainTimeout: time.Millisecond})
	acked := newDataset()
	ctx := context.Background()

	now := 10 * hour
	var (
		app     storage.Appender
		pending []sample
	)
	finish := func(commit bool) {
		if app == nil {
			return
		}
		if !commit {
			require.NoError(t, app.Rollback())
		} else if err := app.Commit(); err == nil {
			for _, s := range pending {
				acked.add(s.series, s.t)
			}
		} else {
			require.ErrorIs(t, err, ErrCompactionInProgress)
		}
		app, pending = nil, pending[:0]
	}
	appendOne := func(s sample) {
		if app == nil {
			app = c.Appendable().Appender(ctx)
		}
		if err := appendSample(app, s.series, s.t); err == nil {
			pending = append(pending, s)
		}
	}

	for len(ops) >= 3 {
		op, series, amount := ops[0]%8, int(ops[1]%12), int64(ops[2])
		ops = ops[3:]
		switch op {
		case 0, 1: // the next scrape
			now += (amount + 1) * 1000
			appendOne(sample{series, now})
		case 2: // a late sample, possibly out of the out-of-order window
			appendOne(sample{series, now - amount*amount*1000})
		case 3:
			finish(true)
		case 4:
			finish(false)
		case 5: // a compaction; with an appender open it must wait, then give up
			clock.Advance(idleTimeout)
			_, err := c.CompactIfIdle(ctx)
			if app != nil {
				require.True(t, err == nil || errors.Is(err, ErrAppendersInFlight), "%v", err)
			} else {
				require.NoError(t, err)
			}
		case 6: // commit, then flush
			finish(true)
			require.NoError(t, c.CompactNow(ctx))
		case 7: // a jump far ahead: the head spans many empty block ranges
			now += amount * 24 * hour
			appendOne(sample{series, now})
		}
	}
	finish(true)

	requireExactly(t, db.DB, acked, "before the final compaction")
	require.NoError(t, c.CompactNow(ctx))
	require.Zero(t, db.Head().NumSeries())
	requireExactly(t, db.DB, acked, "after the final compaction")
	db.reopen()
	requireExactly(t, db.DB, acked, "after restart")

}

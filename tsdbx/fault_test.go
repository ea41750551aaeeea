package tsdbx

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// fault breaks compaction until the returned function repairs it.
type fault struct {
	name string
	// inject returns the context to compact with and the repair.
	inject func(t *testing.T, db *testDB) (context.Context, func())
	// counted: the failure shows in the failures metric (cancellation does not).
	counted bool
	// skip, when it returns a reason, skips the case before any work is done.
	skip func() string
}

var faults = []fault{
	{
		// Works as root too: no permission bit stops root, but nothing can
		// create a block directory under a path that is a regular file.
		name: "DB directory replaced by a file",
		inject: func(t *testing.T, db *testDB) (context.Context, func()) {
			away := db.dir + ".away"
			require.NoError(t, os.Rename(db.dir, away))
			require.NoError(t, os.WriteFile(db.dir, []byte("not a directory"), 0o600))
			return context.Background(), func() {
				require.NoError(t, os.Remove(db.dir))
				require.NoError(t, os.Rename(away, db.dir))
			}
		},
		counted: true,
	},
	{
		name: "DB directory read-only",
		skip: func() string {
			if os.Geteuid() == 0 {
				return "root ignores directory permissions; 'DB directory replaced by a file' covers this failure as root"
			}
			return ""
		},
		inject: func(t *testing.T, db *testDB) (context.Context, func()) {
			require.NoError(t, os.Chmod(db.dir, 0o500))
			return context.Background(), func() { require.NoError(t, os.Chmod(db.dir, 0o755)) }
		},
		counted: true,
	},
	{
		name: "context canceled",
		inject: func(*testing.T, *testDB) (context.Context, func()) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, func() {}
		},
	},
}

func TestFailedCompactionKeepsDBUsableLosesNothingAndNextAttemptSucceeds(t *testing.T) {
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			if f.skip != nil && f.skip() != "" {
				t.Skip(f.skip())
			}
			db := openTestDB(t, dbConfig{oooWindow: oooWindow})
			clock := newFakeClock()
			c, reg := newTestCompactor(t, db, clock, IdleOptions{})
			want := incidentWorkload.load(t, c.Appendable())
			// A healthy compaction first, so the fault hits a DB that already
			// has blocks and whose block range is known: the failure is in
			// writing blocks, not in the first look at the DB.
			require.NoError(t, c.CompactNow(context.Background()))
			later := incidentWorkload
			later.start += 3 * hour
			later.loadInto(t, c.Appendable(), want)
			ctx, repair := f.inject(t, db)
			repaired := false
			defer func() {
				if !repaired {
					repair()
				}
			}()

			err := c.CompactNow(ctx)
			require.Error(t, err)
			t.Logf("compaction failed as expected: %v", err)

			wantFailures := 0.0
			if f.counted {
				wantFailures = 1
			}
			require.Equal(t, wantFailures, metricValue(t, reg, "leaksafe_tsdbx_head_compaction_failures_total", "trigger", "now"))
			require.Zero(t, c.gate.appendersInFlight())
			// Still usable while broken: appends are accepted and everything is readable.
			appendCommitted(t, c.Appendable(), want, sample{0, incidentWorkload.start + time.Hour.Milliseconds()})
			requireExactly(t, db.DB, want, "after the failed compaction")

			repair()
			repaired = true
			require.NoError(t, c.CompactNow(context.Background()), "the attempt after the fault is gone")
			require.Zero(t, db.Head().NumSeries())
			requireExactly(t, db.DB, want, "after the successful compaction")
			db.reopen()
			requireExactly(t, db.DB, want, "after restart")
		})
	}
}

// An appender that is never committed must not wedge compaction forever, nor
// keep appends out: after DrainTimeout the compaction gives up, reopens the
// gate and reports it; the next attempt succeeds once the appender is done.
func TestLeakedAppenderFailsCompactionAfterDrainTimeoutWithoutBlockingAppends(t *testing.T) {
	db := openTestDB(t, dbConfig{oooWindow: oooWindow})
	clock := newFakeClock()
	c, reg := newTestCompactor(t, db, clock, IdleOptions{DrainTimeout: time.Millisecond})
	want := incidentWorkload.load(t, c.Appendable())
	leaked := c.Appendable().Appender(context.Background())
	late := sample{1, incidentWorkload.start + 2*scrape + scrape/4}
	require.NoError(t, appendSample(leaked, late.series, late.t))
	clock.Advance(idleTimeout)

	compacted, err := c.CompactIfIdle(context.Background())

	require.ErrorIs(t, err, ErrAppendersInFlight)
	require.False(t, compacted)
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compaction_failures_total", "trigger", "idle"))
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_appenders_in_flight"))
	require.EqualValues(t, incidentWorkload.series, db.Head().NumSeries(), "nothing should have been compacted")
	appendCommitted(t, c.Appendable(), want, sample{2, incidentWorkload.start + time.Hour.Milliseconds()})

	require.NoError(t, leaked.Commit())
	want.add(late.series, late.t)
	clock.Advance(idleTimeout)
	compacted, err = c.CompactIfIdle(context.Background())
	require.NoError(t, err)
	require.True(t, compacted)
	require.Zero(t, db.Head().NumSeries())
	requireExactly(t, db.DB, want)
}

// A leaked appender fails every drain after DrainTimeout, and the pushes
// refused meanwhile are not activity, so the tenant stays idle and Run drains
// again at every check. After each failed drain Run must leave the gate open a
// whole CheckInterval: a tick that fell due while the drain waited must not
// shut it again at once (with DrainTimeout equal to CheckInterval, that
// refused nearly every push for as long as the appender stayed leaked).
func TestRunLeavesTheGateOpenACheckIntervalAfterADrainGaveUpOnALeakedAppender(t *testing.T) {
	const (
		checkInterval = time.Minute
		drainTimeout  = 45 * time.Second
		probes        = 600 // one a second
	)
	db := openTestDB(t, dbConfig{})
	appendCommitted(t, db, newDataset(), sample{0, 10 * hour})
	// In the bubble, Run's ticker, the drain's timeout and IdleOptions.Now
	// all follow the bubble's fake clock, which moves only when every
	// goroutine in it waits: the run below is deterministic.
	synctest.Test(t, func(t *testing.T) {
		c, err := NewIdleCompactor(db.DB, IdleOptions{IdleTimeout: checkInterval, CheckInterval: checkInterval, DrainTimeout: drainTimeout})
		require.NoError(t, err)
		leaked := c.Appendable().Appender(context.Background())
		require.NoError(t, appendSample(leaked, 1, 10*hour))
		var (
			mu             sync.Mutex
			shut, reopened []time.Time
			checkErrs      []error
		)
		c.onPhase = func(p phase) {
			mu.Lock()
			defer mu.Unlock()
			switch p {
			case phaseDrain:
				shut = append(shut, time.Now())
			case phaseFinished:
				reopened = append(reopened, time.Now())
			}
		}
		c.onCheck = func(_ bool, err error) {
			mu.Lock()
			defer mu.Unlock()
			checkErrs = append(checkErrs, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan error, 1)
		go func() { stopped <- c.Run(ctx) }()

		// Probe the gate every second, half a second off the ticks and
		// timeouts so that no probe ties with them. Probes roll back: a
		// committed push would be activity and end the tenant's idleness.
		var accepted, refused []time.Time
		time.Sleep(time.Second / 2)
		for range probes {
			app := c.Appendable().Appender(context.Background())
			err := appendSample(app, 2, 10*hour)
			require.NoError(t, app.Rollback())
			if errors.Is(err, ErrCompactionInProgress) {
				refused = append(refused, time.Now())
			} else {
				require.NoError(t, err)
				accepted = append(accepted, time.Now())
			}
			time.Sleep(time.Second)
		}
		cancel()
		require.NoError(t, <-stopped)
		require.NoError(t, leaked.Rollback())

		mu.Lock()
		defer mu.Unlock()
		require.GreaterOrEqual(t, len(shut), 3, "Run should keep retrying the idle tenant")
		require.Len(t, reopened, len(shut))
		for i := 1; i < len(shut); i++ {
			open := shut[i].Sub(reopened[i-1])
			require.GreaterOrEqual(t, open, checkInterval, "attempt %d shut the gate %v after attempt %d gave up", i+1, open, i)
		}
		for _, at := range refused {
			during := false
			for i := range shut {
				during = during || !at.Before(shut[i]) && !at.After(reopened[i])
			}
			require.True(t, during, "a probe at %v was refused outside a drain", at)
		}
		require.Greater(t, len(accepted), len(refused), "the gate was shut most of the time")
		for _, err := range checkErrs {
			require.ErrorIs(t, err, ErrAppendersInFlight)
		}
		require.EqualValues(t, 3, db.Head().NumSeries(), "nothing should have been compacted")
	})
}

func TestRunLogsCountsAndRetriesAFailedCompaction(t *testing.T) {
	db := openTestDB(t, dbConfig{oooWindow: oooWindow})
	clock := newFakeClock()
	var logs syncBuffer
	c, reg := newTestCompactor(t, db, clock, IdleOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	want := incidentWorkload.load(t, c.Appendable())
	ticks, checks := manualTicks(c)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-stopped)
	}()
	_, repair := faults[0].inject(t, db)
	clock.Advance(idleTimeout)

	ticks <- clock.Now()
	require.Error(t, <-checks)
	require.Equal(t, 1, strings.Count(logs.String(), "head compaction failed"), "one line per failure, not one from Run and one from the compaction: %s", logs.String())
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compaction_failures_total", "trigger", "idle"))

	repair()
	ticks <- clock.Now()
	require.NoError(t, <-checks)
	require.Zero(t, db.Head().NumSeries())
	requireExactly(t, db.DB, want)
	require.Equal(t, 2.0, metricValue(t, reg, "leaksafe_tsdbx_head_compactions_total", "trigger", "idle"))
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compaction_failures_total", "trigger", "idle"))
}

// An operator reads failures in the log whatever started the compaction: the
// shutdown flush (CompactNow) fails as silently otherwise as a direct
// CompactIfIdle does.
func TestEveryFailedCompactionIsLoggedOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compact func(c *IdleCompactor) error
	}{
		{"CompactNow", func(c *IdleCompactor) error { return c.CompactNow(context.Background()) }},
		{"CompactIfIdle", func(c *IdleCompactor) error {
			_, err := c.CompactIfIdle(context.Background())
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, dbConfig{oooWindow: oooWindow})
			clock := newFakeClock()
			var logs syncBuffer
			c, _ := newTestCompactor(t, db, clock, IdleOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			incidentWorkload.load(t, c.Appendable())
			_, repair := faults[0].inject(t, db)
			defer repair()
			clock.Advance(idleTimeout)

			require.Error(t, tc.compact(c))

			require.Equal(t, 1, strings.Count(logs.String(), "level=ERROR"), "log: %s", logs.String())
			require.Contains(t, logs.String(), "head compaction failed")
		})
	}
}

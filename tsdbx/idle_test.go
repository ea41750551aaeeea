package tsdbx

import (
	"bytes"
	"context"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

const idleTimeout = 10 * time.Minute

// newTestCompactor returns an IdleCompactor on db driven by clock, with its
// metrics in a fresh registry.
func newTestCompactor(t testing.TB, db *testDB, clock *fakeClock, o IdleOptions) (*IdleCompactor, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if o.IdleTimeout == 0 {
		o.IdleTimeout = idleTimeout
	}
	o.Registerer, o.Now = reg, clock.Now
	c, err := NewIdleCompactor(db.DB, o)
	require.NoError(t, err)
	return c, reg
}

// metricValue reads one sample of a gathered metric; labels (name, value,
// ...) select the series.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		return 0 // a vector with no child for these labels yet
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestNewIdleCompactorRejectsInvalidOptions(t *testing.T) {
	db := openTestDB(t, dbConfig{})
	for _, tc := range []struct {
		name string
		db   *testDB
		o    IdleOptions
		want error
	}{
		{"nil DB", nil, IdleOptions{}, ErrNilDB},
		{"negative IdleTimeout", db, IdleOptions{IdleTimeout: -time.Second}, ErrInvalidOptions},
		{"negative CheckInterval", db, IdleOptions{CheckInterval: -1}, ErrInvalidOptions},
		{"negative DrainTimeout", db, IdleOptions{DrainTimeout: -time.Minute}, ErrInvalidOptions},
		// A leaked appender refuses pushes for DrainTimeout at every check.
		{"DrainTimeout as long as CheckInterval", db, IdleOptions{CheckInterval: time.Minute, DrainTimeout: time.Minute}, ErrInvalidOptions},
		{"DrainTimeout longer than the default CheckInterval", db, IdleOptions{DrainTimeout: 2 * DefaultCheckInterval}, ErrInvalidOptions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.db == nil {
				_, err = NewIdleCompactor(nil, tc.o)
			} else {
				_, err = NewIdleCompactor(tc.db.DB, tc.o)
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestZeroIdleCompactorIsRefusedNotPanicking(t *testing.T) {
	ctx := context.Background()
	for name, c := range map[string]*IdleCompactor{"zero value": {}, "nil pointer": nil} {
		t.Run(name, func(t *testing.T) {
			compacted, err := c.CompactIfIdle(ctx)
			require.ErrorIs(t, err, ErrNotConstructed)
			require.False(t, compacted)
			require.ErrorIs(t, c.CompactNow(ctx), ErrNotConstructed)
			require.ErrorIs(t, c.Run(ctx), ErrNotConstructed)
			c.Touch()
			c.Unregister()
			require.True(t, c.LastActivity().IsZero())

			app := c.Appendable().Appender(ctx)
			_, err = app.Append(0, labels.FromStrings("a", "b"), 1, 1)
			require.ErrorIs(t, err, ErrNotConstructed)
			require.ErrorIs(t, app.Commit(), ErrNotConstructed)
			appV2 := c.Appendable().(storage.AppendableV2).AppenderV2(ctx)
			_, err = appV2.Append(0, labels.FromStrings("a", "b"), 0, 1, 1, nil, nil, storage.AppendV2Options{})
			require.ErrorIs(t, err, ErrNotConstructed)
			require.ErrorIs(t, appV2.Commit(), ErrNotConstructed)
		})
	}
}

func TestNewIdleCompactorFillsZeroOptionsWithDefaults(t *testing.T) {
	db := openTestDB(t, dbConfig{})
	c, err := NewIdleCompactor(db.DB, IdleOptions{})
	require.NoError(t, err)
	require.Equal(t, DefaultIdleTimeout, c.opts.IdleTimeout)
	require.Equal(t, DefaultCheckInterval, c.opts.CheckInterval)
	require.Equal(t, DefaultDrainTimeout, c.opts.DrainTimeout)
	require.NotNil(t, c.opts.Logger)
	require.NotNil(t, c.opts.Now)
}

// A leaked appender refuses a tenant's pushes for DrainTimeout at every
// check, so the default drain must be a small part of the check interval,
// also when only CheckInterval is set.
func TestDefaultDrainTimeoutIsWellUnderCheckInterval(t *testing.T) {
	for _, checkInterval := range []time.Duration{0, time.Hour, 20 * time.Millisecond} {
		t.Run(checkInterval.String(), func(t *testing.T) {
			db := openTestDB(t, dbConfig{})
			c, err := NewIdleCompactor(db.DB, IdleOptions{CheckInterval: checkInterval})
			require.NoError(t, err)
			require.Positive(t, c.opts.DrainTimeout)
			require.LessOrEqual(t, c.opts.DrainTimeout, c.opts.CheckInterval/4)
		})
	}
}

func TestOneCompactorPerRegistryUnlessLabelsDiffer(t *testing.T) {
	a, b := openTestDB(t, dbConfig{}), openTestDB(t, dbConfig{})
	reg := prometheus.NewRegistry()
	tenant := func(id string) prometheus.Registerer {
		return prometheus.WrapRegistererWith(prometheus.Labels{"tenant": id}, reg)
	}
	first, err := NewIdleCompactor(a.DB, IdleOptions{Registerer: tenant("a")})
	require.NoError(t, err)

	_, err = NewIdleCompactor(b.DB, IdleOptions{Registerer: tenant("a")})
	require.ErrorContains(t, err, "WrapRegistererWith", "a second compactor with the same labels must be refused, with a hint")

	_, err = NewIdleCompactor(b.DB, IdleOptions{Registerer: tenant("b")})
	require.NoError(t, err)

	first.Unregister()
	_, err = NewIdleCompactor(a.DB, IdleOptions{Registerer: tenant("a")})
	require.NoError(t, err, "Unregister should free the tenant's metrics")
}

func TestCompactIfIdleCompactsOnlyAfterIdleTimeoutWithoutActivity(t *testing.T) {
	db := openTestDB(t, dbConfig{oooWindow: oooWindow})
	clock := newFakeClock()
	c, reg := newTestCompactor(t, db, clock, IdleOptions{})
	want := incidentWorkload.load(t, c.Appendable())
	ctx := context.Background()

	clock.Advance(idleTimeout - time.Nanosecond)
	compacted, err := c.CompactIfIdle(ctx)
	require.NoError(t, err)
	require.False(t, compacted, "compacted before IdleTimeout")
	require.EqualValues(t, incidentWorkload.series, db.Head().NumSeries())

	clock.Advance(time.Nanosecond)
	compacted, err = c.CompactIfIdle(ctx)
	require.NoError(t, err)
	require.True(t, compacted)
	require.Zero(t, db.Head().NumSeries())
	requireExactly(t, db.DB, want)

	clock.Advance(time.Hour)
	compacted, err = c.CompactIfIdle(ctx)
	require.NoError(t, err)
	require.False(t, compacted, "compacted an empty head")
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compactions_total", "trigger", "idle"))
}

// Idleness is checked before the gate shuts; a push that commits after that
// check (here: one opened earlier and committed while the drain waits for
// it) means the tenant is sending again, and its head must stay in memory.
func TestCompactIfIdleDoesNotCompactWhenAPushCommitsAfterTheIdlenessCheck(t *testing.T) {
	db := openTestDB(t, dbConfig{oooWindow: oooWindow})
	clock := newFakeClock()
	c, reg := newTestCompactor(t, db, clock, IdleOptions{})
	want := incidentWorkload.load(t, c.Appendable())
	push := c.Appendable().Appender(context.Background())
	late := sample{0, incidentWorkload.start + int64(incidentWorkload.samplesPerSeries)*scrape}
	require.NoError(t, appendSample(push, late.series, late.t))
	clock.Advance(idleTimeout)
	var commitErr error
	c.onPhase = func(p phase) {
		if p == phaseDrain {
			commitErr = push.Commit()
		}
	}

	compacted, err := c.CompactIfIdle(context.Background())

	require.NoError(t, commitErr)
	want.add(late.series, late.t)
	require.NoError(t, err)
	require.False(t, compacted, "compacted the head of a tenant that pushed after the idleness check")
	require.EqualValues(t, incidentWorkload.series, db.Head().NumSeries())
	require.Empty(t, db.Blocks())
	require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_head_compactions_total", "trigger", "idle"))
	require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_head_compaction_failures_total", "trigger", "idle"))
	for _, p := range phases {
		require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_compaction_waiting_seconds", "phase", string(p)))
	}
	c.onPhase = nil
	appendCommitted(t, c.Appendable(), want, sample{1, late.t}) // the gate is open again
	requireExactly(t, db.DB, want)
}

func TestSuccessfulCommitOfSamplesMarksActivityAndNothingElseDoes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		do       func(t *testing.T, c *IdleCompactor, ts int64)
		activity bool
	}{
		{"Commit after a stored sample", func(t *testing.T, c *IdleCompactor, ts int64) {
			app := c.Appendable().Appender(context.Background())
			require.NoError(t, appendSample(app, 0, ts))
			require.NoError(t, app.Commit())
		}, true},
		{"AppenderV2 Commit after a stored sample", func(t *testing.T, c *IdleCompactor, ts int64) {
			app := c.Appendable().(storage.AppendableV2).AppenderV2(context.Background())
			_, err := app.Append(0, seriesLabels(0), 0, ts, floatValue(ts), nil, nil, storage.AppendV2Options{})
			require.NoError(t, err)
			require.NoError(t, app.Commit())
		}, true},
		{"AppenderV2 Commit after a sample stored without its exemplar", func(t *testing.T, c *IdleCompactor, ts int64) {
			app := c.Appendable().(storage.AppendableV2).AppenderV2(context.Background())
			tooLong := exemplar.Exemplar{Labels: labels.FromStrings("trace_id", strings.Repeat("x", exemplar.ExemplarMaxLabelSetLength)), Value: 1, Ts: ts, HasTs: true}
			_, err := app.Append(0, seriesLabels(0), 0, ts, floatValue(ts), nil, nil, storage.AppendV2Options{Exemplars: []exemplar.Exemplar{tooLong}})
			var partial *storage.AppendPartialError
			require.ErrorAs(t, err, &partial, "the sample is stored, its exemplar rejected")
			require.NoError(t, app.Commit())
		}, true},
		{"Touch", func(_ *testing.T, c *IdleCompactor, _ int64) { c.Touch() }, true},
		{"Rollback", func(t *testing.T, c *IdleCompactor, ts int64) {
			app := c.Appendable().Appender(context.Background())
			require.NoError(t, appendSample(app, 0, ts))
			require.NoError(t, app.Rollback())
		}, false},
		{"Commit without samples", func(t *testing.T, c *IdleCompactor, _ int64) {
			require.NoError(t, c.Appendable().Appender(context.Background()).Commit())
		}, false},
		{"Commit after every Append failed", func(t *testing.T, c *IdleCompactor, _ int64) {
			app := c.Appendable().Appender(context.Background())
			require.Error(t, appendSample(app, 0, 0), "a sample far below the head's range")
			require.NoError(t, app.Commit())
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, dbConfig{exemplars: true})
			clock := newFakeClock()
			c, _ := newTestCompactor(t, db, clock, IdleOptions{})
			appendCommitted(t, c.Appendable(), newDataset(), sample{1, 10 * hour})
			clock.Advance(idleTimeout)
			before := c.LastActivity()

			tc.do(t, c, 10*hour+scrape)

			require.Equal(t, tc.activity, c.LastActivity().After(before), "activity marked")
			compacted, err := c.CompactIfIdle(context.Background())
			require.NoError(t, err)
			require.Equal(t, !tc.activity, compacted)
		})
	}
}

// A DB just opened holds its replayed WAL, and no append has gone through the
// new compactor yet: it must not count as idle since the Unix epoch.
func TestNewCompactorCountsAsActivity(t *testing.T) {
	db := openTestDB(t, dbConfig{})
	appendCommitted(t, db, newDataset(), sample{0, 1000})
	clock := newFakeClock()
	c, _ := newTestCompactor(t, db, clock, IdleOptions{})
	clock.Advance(idleTimeout - time.Nanosecond)

	compacted, err := c.CompactIfIdle(context.Background())

	require.NoError(t, err)
	require.False(t, compacted, "compacted a DB that was opened less than IdleTimeout ago")
	require.True(t, c.LastActivity().Equal(clock.Now().Add(-(idleTimeout - time.Nanosecond))), "last activity %v", c.LastActivity())
}

// Cortex looks series references up with storage.GetRef on the appender; the
// wrapper must not hide it behind a reference that is always 0.
func TestGatedAppendersKeepGetRef(t *testing.T) {
	db := openTestDB(t, dbConfig{})
	c, _ := newTestCompactor(t, db, newFakeClock(), IdleOptions{})
	lset := seriesLabels(0)
	app := c.Appendable().Appender(context.Background())
	ref, err := app.Append(0, lset, 1000, 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	require.NotZero(t, ref)

	for name, app := range map[string]any{
		"Appender":   c.Appendable().Appender(context.Background()),
		"AppenderV2": c.Appendable().(storage.AppendableV2).AppenderV2(context.Background()),
	} {
		g, ok := app.(storage.GetRef)
		require.True(t, ok, "%s does not implement storage.GetRef", name)
		got, gotLabels := g.GetRef(lset, lset.Hash())
		require.Equal(t, ref, got, name)
		require.Equal(t, lset, gotLabels, name)
		require.NoError(t, app.(interface{ Rollback() error }).Rollback())
	}
}

// Commit and Rollback called twice must not release the gate twice: the
// in-flight count would go negative and a later compaction would not wait
// for a real appender.
func TestFinishingAnAppenderTwiceLeavesTheGateOnce(t *testing.T) {
	db := openTestDB(t, dbConfig{})
	c, _ := newTestCompactor(t, db, newFakeClock(), IdleOptions{})
	held := c.Appendable().Appender(context.Background())
	app := c.Appendable().Appender(context.Background())
	require.NoError(t, appendSample(app, 0, 1000))
	require.NoError(t, app.Commit())
	require.Error(t, app.Commit())
	require.Error(t, app.Rollback())
	require.Equal(t, 1, c.gate.appendersInFlight())
	require.NoError(t, held.Rollback())
	require.Zero(t, c.gate.appendersInFlight())
}

func TestMetricsDescribeTheLastCompaction(t *testing.T) {
	db := openTestDB(t, dbConfig{oooWindow: oooWindow})
	clock := newFakeClock()
	c, reg := newTestCompactor(t, db, clock, IdleOptions{})
	incidentWorkload.load(t, c.Appendable())
	clock.Advance(idleTimeout)

	compacted, err := c.CompactIfIdle(context.Background())
	require.NoError(t, err)
	require.True(t, compacted)

	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compactions_total", "trigger", "idle"))
	require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_head_compaction_failures_total", "trigger", "idle"))
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compaction_duration_seconds"))
	require.Equal(t, float64(incidentWorkload.series), metricValue(t, reg, "leaksafe_tsdbx_head_series_before_compaction"))
	require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_head_series_after_compaction"))
	require.Equal(t, float64(clock.Now().Unix()), metricValue(t, reg, "leaksafe_tsdbx_last_successful_head_compaction_timestamp_seconds"))
	require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_appenders_in_flight"))
	for _, p := range phases {
		require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_compaction_waiting_seconds", "phase", string(p)))
	}

	require.NoError(t, c.CompactNow(context.Background()))
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compactions_total", "trigger", "now"))
}

// Head truncation waits, without cancellation, for queriers overlapping the
// head, in both phases. A querier that is never closed would block compaction
// forever; the waiting metric makes that visible, for as long as it lasts.
func TestWaitingMetricShowsCompactionHeldByOpenQuerier(t *testing.T) {
	for _, held := range []phase{phaseInOrder, phaseOOO} {
		// Prometheus polls for open queriers with time.Sleep. In the bubble
		// that sleep is durable blocking, so synctest.Wait returns only once
		// the compaction is stuck there (or finished): "still running" below
		// means held by the querier, not merely slow. The DB is opened in the
		// bubble too: its compactor's context would otherwise be tied to the
		// bubble by the compaction and break DB.Close outside it.
		t.Run(string(held), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				db := openTestDB(t, dbConfig{oooWindow: oooWindow})
				clock := newFakeClock()
				c, reg := newTestCompactor(t, db, clock, IdleOptions{})
				want := incidentWorkload.load(t, c.Appendable())
				var q storage.Querier
				var entered []phase
				c.onPhase = func(p phase) {
					entered = append(entered, p)
					if p == held {
						// Opened as the phase starts, so that it overlaps
						// what this phase, and no earlier one, truncates.
						var err error
						q, err = db.Querier(math.MinInt64, math.MaxInt64)
						require.NoError(t, err)
					}
				}
				done := make(chan error, 1)
				go func() { done <- c.CompactNow(context.Background()) }()
				synctest.Wait()

				select {
				case err := <-done:
					t.Fatalf("compaction finished (err=%v) while a querier overlapping the %s phase was open", err, held)
				default:
				}
				require.Equal(t, held, entered[len(entered)-1], "phases entered: %v", entered)
				clock.Advance(5 * time.Minute)
				require.Equal(t, 300.0, metricValue(t, reg, "leaksafe_tsdbx_compaction_waiting_seconds", "phase", string(held)))
				synctest.Wait()
				select {
				case err := <-done:
					t.Fatalf("compaction finished (err=%v) after its wait was read, with the querier still open", err)
				default:
				}
				// The gate stays shut while the truncation waits: an appender
				// let in now would take the pre-truncation min valid time and
				// write into the range just persisted. A leaked querier
				// therefore refuses appends, too.
				refused := c.Appendable().Appender(context.Background())
				require.ErrorIs(t, appendSample(refused, 0, incidentWorkload.start+time.Hour.Milliseconds()), ErrCompactionInProgress)
				require.NoError(t, refused.Rollback())

				require.NoError(t, q.Close())
				require.NoError(t, <-done)
				require.Equal(t, 0.0, metricValue(t, reg, "leaksafe_tsdbx_compaction_waiting_seconds", "phase", string(held)))
				require.Zero(t, db.Head().NumSeries())
				requireExactly(t, db.DB, want)
			})
		})
	}
}

// manualTicks replaces Run's ticker with a channel the test sends on, and
// reports the result of each check Run makes.
func manualTicks(c *IdleCompactor) (ticks chan<- time.Time, checks <-chan error) {
	tc := make(chan time.Time)
	results := make(chan error)
	c.newTicker = func(time.Duration) (<-chan time.Time, func()) { return tc, func() {} }
	c.onCheck = func(_ bool, err error) { results <- err }
	return tc, results
}

// syncBuffer collects log output written from Run's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunCompactsAtTheFirstIdleCheckAndReturnsNilWhenContextEnds(t *testing.T) {
	db := openTestDB(t, dbConfig{oooWindow: oooWindow})
	clock := newFakeClock()
	c, reg := newTestCompactor(t, db, clock, IdleOptions{})
	want := incidentWorkload.load(t, c.Appendable())
	ticks, checks := manualTicks(c)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()

	ticks <- clock.Now()
	require.NoError(t, <-checks)
	require.EqualValues(t, incidentWorkload.series, db.Head().NumSeries(), "compacted a busy head")

	clock.Advance(idleTimeout)
	ticks <- clock.Now()
	require.NoError(t, <-checks)
	require.Zero(t, db.Head().NumSeries())
	requireExactly(t, db.DB, want)

	ticks <- clock.Now()
	require.NoError(t, <-checks)
	require.Equal(t, 1.0, metricValue(t, reg, "leaksafe_tsdbx_head_compactions_total", "trigger", "idle"))

	cancel()
	require.NoError(t, <-stopped)
}

func TestRunWithRealTickerStopsCleanly(t *testing.T) {
	db := openTestDB(t, dbConfig{})
	c, err := NewIdleCompactor(db.DB, IdleOptions{CheckInterval: time.Millisecond})
	require.NoError(t, err)
	checked := make(chan struct{}, 1)
	c.onCheck = func(bool, error) {
		select {
		case checked <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(ctx) }()
	<-checked
	cancel()
	require.NoError(t, <-stopped)
	// goleak in TestMain checks that the ticker goroutine-free loop left nothing behind.
}

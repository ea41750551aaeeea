package tsdbx

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	minute    = int64(time.Minute / time.Millisecond)
	hour      = int64(time.Hour / time.Millisecond)
	scrape    = 15 * int64(time.Second/time.Millisecond)
	oooWindow = 24 * hour
)

// dbConfig is what differs between the TSDBs the tests open.
type dbConfig struct {
	isolationDisabled bool
	oooWindow         int64 // 0: out-of-order ingestion off
	blockRange        int64 // 0: tsdb.DefaultBlockDuration
}

func (c dbConfig) options() *tsdb.Options {
	o := tsdb.DefaultOptions()
	if c.blockRange != 0 {
		o.MinBlockDuration, o.MaxBlockDuration = c.blockRange, c.blockRange
	}
	o.OutOfOrderTimeWindow = c.oooWindow
	o.IsolationDisabled = c.isolationDisabled
	o.RetentionDuration = 0 // keep every block, whatever its age: tests read them all back
	return o
}

// testDB is an on-disk TSDB that can be closed and reopened (WAL replay).
type testDB struct {
	*tsdb.DB
	t   testing.TB
	dir string
	cfg dbConfig
}

func openTestDB(t testing.TB, cfg dbConfig) *testDB {
	t.Helper()
	d := &testDB{t: t, dir: t.TempDir(), cfg: cfg}
	d.open()
	t.Cleanup(func() {
		if d.DB != nil {
			require.NoError(t, d.DB.Close())
		}
	})
	return d
}

func (d *testDB) open() {
	d.t.Helper()
	db, err := tsdb.Open(d.dir, slog.New(slog.DiscardHandler), nil, d.cfg.options(), nil)
	require.NoError(d.t, err)
	// Only the code under test compacts: the background loop would otherwise
	// compact a head spanning more than 1.5 block ranges on its own.
	db.DisableCompactions()
	d.DB = db
}

// reopen closes the DB and opens it again from disk, replaying WAL and WBL.
func (d *testDB) reopen() {
	d.t.Helper()
	require.NoError(d.t, d.DB.Close())
	d.DB = nil
	d.open()
}

// kind is the sample type of a test series.
type kind int

const (
	kindFloat kind = iota
	kindHistogram
	kindFloatHistogram
	numKinds
)

// seriesLabels names series i; its kind is i % numKinds.
func seriesLabels(i int) labels.Labels {
	return labels.FromStrings("__name__", "m", "series", strconv.Itoa(i), "kind", strconv.Itoa(i%int(numKinds)))
}

func kindOf(i int) kind { return kind(i % int(numKinds)) }

// appendSample appends the deterministic value of series i at t.
func appendSample(app storage.Appender, i int, t int64) error {
	var err error
	switch kindOf(i) {
	case kindFloat:
		_, err = app.Append(0, seriesLabels(i), t, floatValue(t))
	case kindHistogram:
		_, err = app.AppendHistogram(0, seriesLabels(i), t, tsdbutil.GenerateTestHistogram(t%1000), nil)
	case kindFloatHistogram:
		_, err = app.AppendHistogram(0, seriesLabels(i), t, nil, tsdbutil.GenerateTestFloatHistogram(t%1000))
	}
	return err
}

func floatValue(t int64) float64 { return float64(t)/7 + 0.5 }

// canonical is the comparable form of the value series i holds at t.
func canonical(i int, t int64) string {
	switch kindOf(i) {
	case kindHistogram:
		return canonicalHistogram(tsdbutil.GenerateTestHistogram(t % 1000))
	case kindFloatHistogram:
		return canonicalFloatHistogram(tsdbutil.GenerateTestFloatHistogram(t % 1000))
	default:
		return canonicalFloat(floatValue(t))
	}
}

func canonicalFloat(v float64) string { return "f:" + strconv.FormatUint(math.Float64bits(v), 16) }

// Counter-reset hints are rewritten by chunk encoding and compaction; the
// sample is the same, so the hint is not part of its identity.
func canonicalHistogram(h *histogram.Histogram) string {
	h = h.Copy()
	h.CounterResetHint = histogram.UnknownCounterReset
	return "h:" + h.String()
}

func canonicalFloatHistogram(fh *histogram.FloatHistogram) string {
	fh = fh.Copy()
	fh.CounterResetHint = histogram.UnknownCounterReset
	return "fh:" + fh.String()
}

// dataset is the set of samples a test expects to read back: series labels
// -> timestamp -> canonical value. Safe for concurrent use.
type dataset struct {
	mu      sync.Mutex
	samples map[string]map[int64]string
}

func newDataset() *dataset { return &dataset{samples: map[string]map[int64]string{}} }

func (d *dataset) add(i int, t int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := seriesLabels(i).String()
	if d.samples[key] == nil {
		d.samples[key] = map[int64]string{}
	}
	d.samples[key][t] = canonical(i, t)
}

func (d *dataset) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, s := range d.samples {
		n += len(s)
	}
	return n
}

// sample is one point of the generated workloads.
type sample struct {
	series int
	t      int64
}

// appendCommitted appends samples in one transaction through app and records
// them as expected; it fails the test on any error.
func appendCommitted(t testing.TB, a storage.Appendable, want *dataset, samples ...sample) {
	t.Helper()
	app := a.Appender(context.Background())
	for _, s := range samples {
		require.NoError(t, appendSample(app, s.series, s.t), "series %d at %d", s.series, s.t)
	}
	require.NoError(t, app.Commit())
	for _, s := range samples {
		want.add(s.series, s.t)
	}
}

// workload is the shape of the incident: every series scraped in order, some
// of them also receiving out-of-order samples (late remote-write shards).
type workload struct {
	series, samplesPerSeries int
	oooSeries                int // the first oooSeries series also get out-of-order samples
	oooPerSeries             int
	start                    int64
}

func (w workload) inOrder() []sample {
	out := make([]sample, 0, w.series*w.samplesPerSeries)
	for j := range w.samplesPerSeries {
		for i := range w.series {
			out = append(out, sample{i, w.start + int64(j)*scrape})
		}
	}
	return out
}

// outOfOrder returns samples between the in-order ones, so they are older
// than their series' newest sample and can only go to the out-of-order head.
func (w workload) outOfOrder() []sample {
	out := make([]sample, 0, w.oooSeries*w.oooPerSeries)
	for j := range w.oooPerSeries {
		for i := range w.oooSeries {
			out = append(out, sample{i, w.start + int64(j)*scrape + scrape/2})
		}
	}
	return out
}

// load appends the workload through a in batches and returns what it stored.
func (w workload) load(t testing.TB, a storage.Appendable) *dataset {
	t.Helper()
	want := newDataset()
	w.loadInto(t, a, want)
	return want
}

// loadInto is load adding to an existing dataset.
func (w workload) loadInto(t testing.TB, a storage.Appendable, want *dataset) {
	t.Helper()
	for _, batch := range [][]sample{w.inOrder(), w.outOfOrder()} {
		for len(batch) > 0 {
			n := min(len(batch), 5000)
			appendCommitted(t, a, want, batch[:n]...)
			batch = batch[n:]
		}
	}
}

// readAll returns every sample the DB serves through db.Querier, in canonical form.
func readAll(t testing.TB, db *tsdb.DB) map[string]map[int64]string {
	t.Helper()
	q, err := db.Querier(math.MinInt64, math.MaxInt64)
	require.NoError(t, err)
	defer func() { require.NoError(t, q.Close()) }()

	got := map[string]map[int64]string{}
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		key := s.Labels().String()
		points := got[key]
		if points == nil {
			points = map[int64]string{}
			got[key] = points
		}
		it = s.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			var (
				ts    int64
				value string
			)
			switch vt {
			case chunkenc.ValFloat:
				var v float64
				ts, v = it.At()
				value = canonicalFloat(v)
			case chunkenc.ValHistogram:
				var h *histogram.Histogram
				ts, h = it.AtHistogram(nil)
				value = canonicalHistogram(h)
			case chunkenc.ValFloatHistogram:
				var fh *histogram.FloatHistogram
				ts, fh = it.AtFloatHistogram(nil)
				value = canonicalFloatHistogram(fh)
			default:
				t.Fatalf("unexpected value type %v", vt)
			}
			_, dup := points[ts]
			require.False(t, dup, "series %s served twice at %d", key, ts)
			points[ts] = value
		}
		require.NoError(t, it.Err())
	}
	require.NoError(t, ss.Err())
	return got
}

// requireExactly asserts the DB serves exactly the samples in want: none
// missing, none changed, none extra.
func requireExactly(t testing.TB, db *tsdb.DB, want *dataset, msgAndArgs ...any) {
	t.Helper()
	got := readAll(t, db)
	want.mu.Lock()
	defer want.mu.Unlock()
	missing, extra := 0, 0
	var first string
	for key, points := range want.samples {
		for ts, v := range points {
			if got[key][ts] != v {
				missing++
				if first == "" {
					first = fmt.Sprintf("%s@%d: want %q, got %q", key, ts, v, got[key][ts])
				}
			}
		}
	}
	for key, points := range got {
		for ts := range points {
			if _, ok := want.samples[key][ts]; !ok {
				extra++
				if first == "" {
					first = fmt.Sprintf("%s@%d: unexpected", key, ts)
				}
			}
		}
	}
	require.Zero(t, missing+extra, "%d samples missing or changed, %d unexpected (first: %s) %v", missing, extra, first, fmt.Sprint(msgAndArgs...))
}

// fakeClock is IdleOptions.Now for tests: it moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// isolationModes runs a test with Prometheus' isolation on and off: Cortex and
// Mimir run with it off, where Prometheus' own append guard does nothing.
var isolationModes = []struct {
	name     string
	disabled bool
}{
	{"isolation=on", false},
	{"isolation=off", true},
}

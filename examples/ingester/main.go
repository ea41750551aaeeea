// Command ingester shows how a Cortex or Thanos Receive fork wires
// tsdbx.IdleCompactor: one TSDB per tenant, opened on its first push, with an
// IdleCompactor whose Run loop empties the head (in-order and out-of-order)
// once the tenant stops sending. Pushes go through the compactor's
// Appendable, so a compaction never races them; a push refused with
// tsdbx.ErrCompactionInProgress stored nothing and is retried, as a
// remote-write client retries a 503.
//
// It pushes in-order and out-of-order samples for a few tenants, lets them go
// idle, shows the heads emptied, checks every pushed sample is still
// queryable from the blocks, and shuts down cleanly (flush, close).
//
//	go run ./examples/ingester -tenants 3 -series 200 -idle 300ms
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"golang.org/x/sync/errgroup"

	"github.com/leaksafe/leaksafe/tsdbx"
)

type config struct {
	tenants       int
	series        int
	samples       int           // in-order samples per series
	oooSeries     int           // series that also get out-of-order samples
	idleTimeout   time.Duration // tsdbx.IdleOptions.IdleTimeout
	checkInterval time.Duration // tsdbx.IdleOptions.CheckInterval
	wait          time.Duration // how long to wait for the heads to empty
	dir           string        // data directory; a temporary one when empty
}

func main() {
	cfg := config{}
	flag.IntVar(&cfg.tenants, "tenants", 3, "tenants, one TSDB each")
	flag.IntVar(&cfg.series, "series", 200, "series per tenant")
	flag.IntVar(&cfg.samples, "samples", 60, "in-order samples per series (15s apart)")
	flag.IntVar(&cfg.oooSeries, "ooo-series", 60, "series per tenant that also receive out-of-order samples")
	flag.DurationVar(&cfg.idleTimeout, "idle", 300*time.Millisecond, "idle timeout before a tenant's head is compacted")
	flag.DurationVar(&cfg.checkInterval, "check", 50*time.Millisecond, "how often each compactor checks for idleness")
	flag.DurationVar(&cfg.wait, "wait", time.Minute, "give up if the heads are not empty after this long")
	flag.StringVar(&cfg.dir, "dir", "", "data directory (default: a temporary directory, removed on exit)")
	flag.Parse()

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := run(ctx, os.Stdout, cfg); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer, cfg config) (err error) {
	if cfg.dir == "" {
		dir, err := os.MkdirTemp("", "leaksafe-ingester")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.dir = dir
	}
	ing := newIngester(ctx, cfg)
	defer func() { err = errors.Join(err, ing.close()) }()

	pushed := map[string]int{}
	for t := range cfg.tenants {
		id := fmt.Sprintf("tenant-%d", t)
		n, err := ing.pushTenant(ctx, id)
		if err != nil {
			return err
		}
		pushed[id] = n
	}
	fmt.Fprintln(out, "pushed; heads before the tenants go idle:")
	ing.report(out, pushed)

	if err := ing.waitForEmptyHeads(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nidle for %v; heads after idle compaction:\n", cfg.idleTimeout)
	ing.report(out, pushed)
	for id, want := range pushed {
		got, err := ing.countSamples(id)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: %d samples pushed, %d queryable", id, want, got)
		}
	}
	fmt.Fprintln(out, "\nevery pushed sample is queryable from the blocks")
	return nil
}

// ingester holds one TSDB and one IdleCompactor per tenant, like Cortex'
// userTSDB map.
type ingester struct {
	cfg     config
	reg     *prometheus.Registry
	runs    errgroup.Group // one IdleCompactor.Run per tenant
	runCtx  context.Context
	stopRun context.CancelFunc

	mu      sync.Mutex
	tenants map[string]*tenantDB
}

type tenantDB struct {
	db        *tsdb.DB
	compactor *tsdbx.IdleCompactor
}

func newIngester(ctx context.Context, cfg config) *ingester {
	runCtx, stop := context.WithCancel(ctx)
	return &ingester{cfg: cfg, reg: prometheus.NewRegistry(), runCtx: runCtx, stopRun: stop, tenants: map[string]*tenantDB{}}
}

// tenant returns the tenant's DB, opening it and starting its compactor on
// the first push.
func (ing *ingester) tenant(id string) (*tenantDB, error) {
	ing.mu.Lock()
	defer ing.mu.Unlock()
	if t, ok := ing.tenants[id]; ok {
		return t, nil
	}
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = time.Hour.Milliseconds()
	opts.IsolationDisabled = true // as Cortex and Mimir run it
	db, err := tsdb.Open(filepath.Join(ing.cfg.dir, id), nil, nil, opts, nil)
	if err != nil {
		return nil, err
	}
	c, err := tsdbx.NewIdleCompactor(db, tsdbx.IdleOptions{
		IdleTimeout:   ing.cfg.idleTimeout,
		CheckInterval: ing.cfg.checkInterval,
		Registerer:    prometheus.WrapRegistererWith(prometheus.Labels{"tenant": id}, ing.reg),
	})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	t := &tenantDB{db: db, compactor: c}
	ing.tenants[id] = t
	ing.runs.Go(func() error { return c.Run(ing.runCtx) })
	return t, nil
}

// pushTenant sends the tenant's series: one request per scrape, then the
// late (out-of-order) samples. It returns how many samples were stored.
func (ing *ingester) pushTenant(ctx context.Context, id string) (int, error) {
	t, err := ing.tenant(id)
	if err != nil {
		return 0, err
	}
	const scrape = 15 * time.Second
	start := time.Now().Add(-time.Duration(ing.cfg.samples) * scrape).UnixMilli()
	stored := 0
	request := func(ts int64, seriesCount int) error {
		for {
			err := appendScrape(t, id, ts, seriesCount)
			if !errors.Is(err, tsdbx.ErrCompactionInProgress) {
				if err == nil {
					stored += seriesCount
				}
				return err
			}
			// Nothing was stored; a remote-write client backs off and retries.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(ing.cfg.checkInterval):
			}
		}
	}
	for j := range ing.cfg.samples {
		if err := request(start+int64(j)*scrape.Milliseconds(), ing.cfg.series); err != nil {
			return stored, err
		}
	}
	for j := range ing.cfg.samples / 2 { // late samples between two scrapes
		if err := request(start+int64(j)*scrape.Milliseconds()+scrape.Milliseconds()/2, ing.cfg.oooSeries); err != nil {
			return stored, err
		}
	}
	return stored, nil
}

func appendScrape(t *tenantDB, id string, ts int64, seriesCount int) error {
	app := t.compactor.Appendable().Appender(context.Background())
	for s := range seriesCount {
		lset := labels.FromStrings("__name__", "http_requests_total", "tenant", id, "path", fmt.Sprintf("/api/%d", s))
		if _, err := app.Append(0, lset, ts, float64(ts%1000)); err != nil {
			return errors.Join(err, app.Rollback())
		}
	}
	return app.Commit()
}

// waitForEmptyHeads waits until every tenant's compactor has emptied its head.
func (ing *ingester) waitForEmptyHeads(ctx context.Context) error {
	deadline := time.After(ing.cfg.wait)
	tick := time.NewTicker(ing.cfg.checkInterval)
	defer tick.Stop()
	for {
		busy := 0
		for _, t := range ing.snapshot() {
			if t.db.Head().NumSeries() > 0 {
				busy++
			}
		}
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%d tenant heads still hold series after %v", busy, ing.cfg.wait)
		case <-tick.C:
		}
	}
}

func (ing *ingester) snapshot() map[string]*tenantDB {
	ing.mu.Lock()
	defer ing.mu.Unlock()
	out := make(map[string]*tenantDB, len(ing.tenants))
	for id, t := range ing.tenants {
		out[id] = t
	}
	return out
}

func (ing *ingester) report(out io.Writer, pushed map[string]int) {
	tenants := ing.snapshot()
	ids := make([]string, 0, len(tenants))
	for id := range tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "tenant\tsamples pushed\thead series\tblocks\tidle compactions")
	for _, id := range ids {
		t := tenants[id]
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%.0f\n", id, pushed[id], t.db.Head().NumSeries(), len(t.db.Blocks()), ing.compactions(id))
	}
	w.Flush()
}

// compactions reads the tenant's leaksafe_tsdbx_head_compactions_total{trigger="idle"}.
func (ing *ingester) compactions(id string) float64 {
	families, err := ing.reg.Gather()
	if err != nil {
		return math.NaN()
	}
	for _, f := range families {
		if f.GetName() != "leaksafe_tsdbx_head_compactions_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var tenant, trigger string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "tenant":
					tenant = l.GetValue()
				case "trigger":
					trigger = l.GetValue()
				}
			}
			if tenant == id && trigger == "idle" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func (ing *ingester) countSamples(id string) (int, error) {
	t := ing.snapshot()[id]
	q, err := t.db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "tenant", id))
	n := 0
	var it chunkenc.Iterator
	for ss.Next() {
		it = ss.At().Iterator(it)
		for it.Next() != chunkenc.ValNone {
			n++
		}
		if err := it.Err(); err != nil {
			return n, err
		}
	}
	return n, ss.Err()
}

// close stops every compactor loop, flushes each head (what an ingester does
// on shutdown), unregisters the tenant's metrics and closes its DB.
func (ing *ingester) close() error {
	ing.stopRun()
	errs := []error{ing.runs.Wait()}
	for _, t := range ing.snapshot() {
		errs = append(errs, t.compactor.CompactNow(context.Background()))
		t.compactor.Unregister()
		errs = append(errs, t.db.Close())
	}
	return errors.Join(errs...)
}

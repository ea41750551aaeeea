// Command receive shows how a Thanos Receive fork bounds exemplar memory across
// tenants with github.com/leaksafe/leaksafe/exemplar.
//
// Thanos Receive runs one TSDB per tenant, each with its own in-memory
// exemplar storage sized by --tsdb.max-exemplars, so exemplar memory is
// tenants × max-exemplars × whatever each exemplar really costs — the OOM of
// the incident. Here each tenant's TSDB keeps its own exemplar storage off;
// writes go through exemplar.Appendable, which sends samples to the TSDB and
// exemplars to the tenant's exemplar.Store; all stores draw from one
// exemplar.Budget with a per-tenant floor, so a noisy tenant cannot evict the
// others; exemplar queries are answered by the tenant's store.
//
//	go run ./examples/receive -tenants 5 -budget 4MiB -floor 256KiB
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"text/tabwriter"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/leaksafe/leaksafe/exemplar"

	promexemplar "github.com/prometheus/prometheus/model/exemplar"
)

type config struct {
	tenants   int
	budget    int64
	floor     int64
	requests  int // per quiet tenant; the noisy tenant sends noisyX times more
	noisyX    int
	perSeries int // MaxPerSeries for every tenant
}

func main() {
	cfg := config{}
	budget, floor := bytesFlag(4<<20), bytesFlag(256<<10)
	flag.IntVar(&cfg.tenants, "tenants", 5, "tenants, one TSDB and one exemplar store each (the last one is noisy)")
	flag.Var(&budget, "budget", "exemplar bytes shared by all tenants (e.g. 4MiB)")
	flag.Var(&floor, "floor", "exemplar bytes no other tenant can evict from a tenant (e.g. 256KiB)")
	flag.IntVar(&cfg.requests, "requests", 200, "remote-write requests per quiet tenant")
	flag.IntVar(&cfg.noisyX, "noisy", 20, "how many times more the noisy tenant sends")
	flag.IntVar(&cfg.perSeries, "max-per-series", 16, "exemplars kept per series (0: no cap)")
	flag.Parse()
	cfg.budget, cfg.floor = int64(budget), int64(floor)

	dir, err := os.MkdirTemp("", "receive-example")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := run(context.Background(), os.Stdout, dir, cfg); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "receive:", err)
	os.Exit(1)
}

// receiver is the part of a Thanos Receive ingester that matters here: a
// TSDB per tenant, opened on first write.
type receiver struct {
	dir       string
	budget    *exemplar.Budget
	perSeries int
	tenants   map[string]*tenant
}

type tenant struct {
	db        *tsdb.DB
	exemplars *exemplar.Store
	appender  storage.Appendable // what the remote-write handler writes to
}

func (r *receiver) tenant(name string) (*tenant, error) {
	if t, ok := r.tenants[name]; ok {
		return t, nil
	}
	opts := tsdb.DefaultOptions()
	opts.EnableExemplarStorage = false // the tenant's store holds them, once
	db, err := tsdb.Open(filepath.Join(r.dir, name), nil, nil, opts, nil)
	if err != nil {
		return nil, err
	}
	store, err := exemplar.New(exemplar.Options{
		MaxExemplars: 1_000_000, // the old --tsdb.max-exemplars: now a cap per tenant, not the memory bound
		MaxPerSeries: r.perSeries,
		Budget:       r.budget, // the memory bound, shared
	})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	t := &tenant{db: db, exemplars: store, appender: exemplar.Appendable(db, store)}
	r.tenants[name] = t
	return t, nil
}

// write is one remote-write request: a sample and an exemplar per series.
func (r *receiver) write(ctx context.Context, tenantName string, req request) error {
	t, err := r.tenant(tenantName)
	if err != nil {
		return err
	}
	app := t.appender.Appender(ctx)
	for _, ts := range req {
		ref, err := app.Append(0, ts.series, ts.t, ts.v)
		if err != nil {
			return errors.Join(err, app.Rollback())
		}
		if _, err := app.AppendExemplar(ref, ts.series, ts.exemplar); err != nil &&
			!errors.Is(err, storage.ErrOutOfOrderExemplar) { // counted by the store, like Thanos counts them
			return errors.Join(err, app.Rollback())
		}
	}
	return app.Commit()
}

func (r *receiver) Close() error {
	var errs []error
	for _, t := range r.tenants {
		errs = append(errs, t.exemplars.Close(), t.db.Close())
	}
	return errors.Join(errs...)
}

type timeSeries struct {
	series   labels.Labels
	t        int64
	v        float64
	exemplar promexemplar.Exemplar
}

type request []timeSeries

// makeRequest builds the i-th request of a tenant: 20 histogram buckets of one
// of its pods, each with a sample and an exemplar carrying a fresh trace id.
func makeRequest(b *labels.ScratchBuilder, tenantName string, pods, i int) request {
	req := make(request, 0, 20)
	ts := int64(1_700_000_000_000) + int64(i)*1000
	for le := range 20 {
		b.Reset()
		b.Add("__name__", "http_server_request_duration_seconds_bucket")
		b.Add("le", strconv.FormatFloat(0.005*math.Pow(2, float64(le)), 'g', -1, 64))
		b.Add("pod", fmt.Sprintf("%s-api-%d", tenantName, i%pods))
		b.Sort()
		req = append(req, timeSeries{
			series: b.Labels(),
			t:      ts,
			v:      float64(i),
			exemplar: promexemplar.Exemplar{
				Labels: labels.FromStrings("trace_id", fmt.Sprintf("%016x%016x", i, le)),
				Value:  0.004 * float64(le+1), Ts: ts, HasTs: true,
			},
		})
	}
	return req
}

// tenantReport is what run prints for one tenant.
type tenantReport struct {
	name    string
	stats   exemplar.Stats
	queried int // exemplars an exemplar query over the whole range returns
}

type report struct {
	budget  exemplar.BudgetStats
	tenants []tenantReport
}

func run(ctx context.Context, out io.Writer, dir string, cfg config) (report, error) {
	budget, err := exemplar.NewBudget(exemplar.BudgetOptions{MaxBytes: cfg.budget, FloorBytes: cfg.floor})
	if err != nil {
		return report{}, err
	}
	r := &receiver{dir: dir, budget: budget, perSeries: cfg.perSeries, tenants: map[string]*tenant{}}
	defer r.Close()

	names := make([]string, cfg.tenants)
	for i := range names {
		names[i] = fmt.Sprintf("tenant-%d", i)
	}
	noisy := names[len(names)-1]
	b := labels.NewScratchBuilder(3)
	// Interleave tenants as concurrent remote writes would arrive, the noisy
	// one sending noisyX requests for every request of the others, from a
	// deployment that churns through pods (new series all the time).
	for i := range cfg.requests * cfg.noisyX {
		for _, name := range names {
			pods := 7
			if name == noisy {
				pods = 1000
			} else if i%cfg.noisyX != 0 {
				continue
			}
			if err := r.write(ctx, name, makeRequest(&b, name, pods, i)); err != nil {
				return report{}, fmt.Errorf("%s: %w", name, err)
			}
		}
	}

	rep := report{budget: budget.Stats()}
	for _, name := range names {
		t := r.tenants[name]
		q, err := t.exemplars.ExemplarQuerier(ctx) // what /api/v1/query_exemplars would use
		if err != nil {
			return report{}, err
		}
		res, err := q.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{
			labels.MustNewMatcher(labels.MatchEqual, "__name__", "http_server_request_duration_seconds_bucket")})
		if err != nil {
			return report{}, err
		}
		n := 0
		for _, s := range res {
			n += len(s.Exemplars)
		}
		rep.tenants = append(rep.tenants, tenantReport{name: name, stats: t.exemplars.Stats(), queried: n})
	}
	sort.Slice(rep.tenants, func(i, j int) bool { return rep.tenants[i].name < rep.tenants[j].name })

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tenant\texemplars\tseries\tKiB\tevicted for budget\tevicted per series\t")
	for _, t := range rep.tenants {
		name := t.name
		if name == noisy {
			name += " (noisy)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", name, t.stats.Exemplars, t.stats.Series, t.stats.Bytes>>10,
			t.stats.Evicted.Budget, t.stats.Evicted.PerSeries)
	}
	if err := tw.Flush(); err != nil {
		return report{}, err
	}
	fmt.Fprintf(out, "shared budget: %d KiB used of %d KiB (floor %d KiB per tenant)\n",
		rep.budget.UsedBytes>>10, rep.budget.MaxBytes>>10, rep.budget.FloorBytes>>10)
	return rep, r.Close()
}

// bytesFlag parses sizes such as 4MiB, 256KiB or 1048576.
type bytesFlag int64

func (b *bytesFlag) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *bytesFlag) Set(s string) error {
	in, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if len(s) > len(u.suffix) && s[len(s)-len(u.suffix):] == u.suffix {
			s, mult = s[:len(s)-len(u.suffix)], u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("invalid size %q", in)
	}
	if n > math.MaxInt64/mult { // would wrap to a negative or tiny budget
		return fmt.Errorf("size %q is too large", in)
	}
	*b = bytesFlag(n * mult)
	return nil
}

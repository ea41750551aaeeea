package exemplar_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/leaksafe/leaksafe/exemplar"

	promexemplar "github.com/prometheus/prometheus/model/exemplar"
)

func ExampleNew() {
	store, err := exemplar.New(exemplar.Options{
		MaxExemplars: 1_000_000, // what --tsdb.max-exemplars said, now a cap rather than an allocation
		MaxBytes:     256 << 20, // and what it may really cost
		MaxAge:       2 * time.Hour,
	})
	if err != nil {
		panic(err)
	}
	defer store.Close()

	series := labels.FromStrings("__name__", "http_request_duration_seconds_bucket", "le", "0.5")
	_ = store.AddExemplar(series, promexemplar.Exemplar{
		Labels: labels.FromStrings("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
		Value:  0.42, Ts: 1_700_000_000_000, HasTs: true,
	})
	res, _ := store.Select(math.MinInt64, math.MaxInt64, []*labels.Matcher{
		labels.MustNewMatcher(labels.MatchEqual, "le", "0.5"),
	})
	fmt.Println(res[0].SeriesLabels, res[0].Exemplars[0].Labels, res[0].Exemplars[0].Value)
	// Output: {__name__="http_request_duration_seconds_bucket", le="0.5"} {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.42
}

// Replacing a TSDB head's exemplar storage without patching Prometheus: keep
// the head's own exemplar storage off, write through Appendable, and answer
// exemplar queries from the store (it is a storage.ExemplarQueryable).
func ExampleAppendable() {
	dir, err := os.MkdirTemp("", "exemplar-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	opts := tsdb.DefaultOptions() // EnableExemplarStorage stays false
	db, err := tsdb.Open(dir, nil, nil, opts, nil)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	store, err := exemplar.New(exemplar.Options{MaxExemplars: 100_000, MaxBytes: 64 << 20})
	if err != nil {
		panic(err)
	}
	defer store.Close()

	var appendable = exemplar.Appendable(db, store) // hand this to the scrape loop or remote-write handler
	app := appendable.Appender(context.Background())
	series := labels.FromStrings("__name__", "rpc_duration_seconds_bucket", "le", "0.1")
	ref, _ := app.Append(0, series, 1_700_000_000_000, 17)
	_, _ = app.AppendExemplar(ref, series, promexemplar.Exemplar{
		Labels: labels.FromStrings("trace_id", "00f067aa0ba902b7"), Value: 0.07, Ts: 1_700_000_000_000, HasTs: true,
	})
	if err := app.Commit(); err != nil {
		panic(err)
	}

	var queryable storage.ExemplarQueryable = store // e.g. for Prometheus' web API / Thanos' exemplars API
	q, _ := queryable.ExemplarQuerier(context.Background())
	res, _ := q.Select(0, math.MaxInt64, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "rpc_duration_seconds_bucket")})
	fmt.Println(len(res), res[0].Exemplars[0].Labels.Get("trace_id"), store.Stats().Exemplars)
	// Output: 1 00f067aa0ba902b7 1
}

// Thanos Receive runs one TSDB per tenant, so exemplar memory is tenants ×
// max-exemplars. A Budget caps them together; each tenant keeps a floor that
// a noisy neighbour cannot take.
func ExampleBudget() {
	budget, err := exemplar.NewBudget(exemplar.BudgetOptions{MaxBytes: 1 << 20, FloorBytes: 128 << 10})
	if err != nil {
		panic(err)
	}
	tenants := map[string]*exemplar.Store{}
	for _, name := range []string{"team-a", "team-b", "team-c"} {
		s, err := exemplar.New(exemplar.Options{MaxExemplars: 1_000_000, Budget: budget})
		if err != nil {
			panic(err)
		}
		defer s.Close()
		tenants[name] = s
	}
	add := func(tenant string, i int) {
		series := labels.FromStrings("__name__", "requests_bucket", "pod", fmt.Sprintf("pod-%d", i%50))
		_ = tenants[tenant].AddExemplar(series, promexemplar.Exemplar{
			Labels: labels.FromStrings("trace_id", fmt.Sprintf("%032x", i)), Value: 1, Ts: int64(i), HasTs: true,
		})
	}
	for i := range 100 {
		add("team-b", i)
	}
	for i := range 100_000 { // team-a floods
		add("team-a", 1000+i)
	}
	fmt.Println("within budget:", budget.Stats().UsedBytes <= budget.Stats().MaxBytes)
	fmt.Println("team-b kept its exemplars:", tenants["team-b"].Stats().Exemplars)
	fmt.Println("team-a evicted its own oldest:", tenants["team-a"].Stats().Evicted.Budget > 0)
	// Output:
	// within budget: true
	// team-b kept its exemplars: 100
	// team-a evicted its own oldest: true
}

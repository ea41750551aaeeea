package tsdbx_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"golang.org/x/sync/errgroup"

	"github.com/leaksafe/leaksafe/tsdbx"
)

// openTenantDB opens an on-disk TSDB with out-of-order ingestion, the way an
// ingester opens one per tenant. The caller removes dir.
func openTenantDB(dir string) *tsdb.DB {
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = time.Hour.Milliseconds()
	db, err := tsdb.Open(dir, nil, nil, opts, nil)
	if err != nil {
		log.Fatal(err)
	}
	return db
}

// push appends one sample per timestamp and commits, as a remote-write handler does.
func push(a storage.Appendable, series string, ts ...int64) error {
	app := a.Appender(context.Background())
	for _, t := range ts {
		if _, err := app.Append(0, labels.FromStrings("__name__", "up", "instance", series), t, 1); err != nil {
			_ = app.Rollback()
			return err
		}
	}
	return app.Commit()
}

// CompactHead is the fix for the incident: the in-order and the out-of-order
// head both end up in blocks, and the head is empty.
func ExampleCompactHead() {
	dir, _ := os.MkdirTemp("", "tsdbx-example")
	defer os.RemoveAll(dir)
	db := openTenantDB(dir)
	defer db.Close()

	_ = push(db, "a", 60_000, 120_000, 180_000)
	_ = push(db, "a", 90_000) // out of order
	_ = push(db, "b", 60_000)

	if err := tsdbx.CompactHead(context.Background(), db); err != nil {
		log.Fatal(err)
	}
	fmt.Println("series in head:", db.Head().NumSeries())
	// Output: series in head: 0
}

// An ingester runs one IdleCompactor per tenant DB, appends through its
// Appendable, and flushes with CompactNow on shutdown.
func ExampleIdleCompactor() {
	dir, _ := os.MkdirTemp("", "tsdbx-example")
	defer os.RemoveAll(dir)
	db := openTenantDB(dir)
	defer db.Close() // the caller owns the DB; stop Run before closing it

	compactor, err := tsdbx.NewIdleCompactor(db, tsdbx.IdleOptions{
		IdleTimeout:   time.Hour,   // Cortex' head-compaction-idle-timeout
		CheckInterval: time.Minute, // Cortex' head-compaction-interval
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- compactor.Run(ctx) }()

	// The push path: every append goes through Appendable, so a compaction
	// never races it, and a successful Commit counts as activity.
	err = push(compactor.Appendable(), "a", 60_000, 120_000)
	if errors.Is(err, tsdbx.ErrCompactionInProgress) {
		// Nothing was stored: answer 503 and let the client retry.
		fmt.Println("retry later")
	}
	_ = push(compactor.Appendable(), "a", 90_000) // out of order

	// Shutdown: stop the loop, then flush whatever the head still holds.
	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	if err := compactor.CompactNow(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println("series in head after flush:", db.Head().NumSeries())
	// Output: series in head after flush: 0
}

// Many tenants: one DB and one IdleCompactor each, metrics told apart by a
// tenant label, all loops stopped together.
func ExampleIdleCompactor_perTenant() {
	root, _ := os.MkdirTemp("", "tsdbx-example")
	defer os.RemoveAll(root)
	reg := prometheus.NewRegistry()

	tenants := []string{"team-a", "team-b"}
	dbs := map[string]*tsdb.DB{}
	compactors := map[string]*tsdbx.IdleCompactor{}
	for _, id := range tenants {
		db := openTenantDB(root + "/" + id)
		defer db.Close()
		c, err := tsdbx.NewIdleCompactor(db, tsdbx.IdleOptions{
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"tenant": id}, reg),
		})
		if err != nil {
			log.Fatal(err)
		}
		dbs[id], compactors[id] = db, c
	}

	ctx, stop := context.WithCancel(context.Background())
	var g errgroup.Group
	for _, id := range tenants {
		g.Go(func() error { return compactors[id].Run(ctx) })
	}

	for _, id := range tenants {
		_ = push(compactors[id].Appendable(), id, 60_000, 120_000)
		_ = push(compactors[id].Appendable(), id, 90_000)
	}

	stop()
	if err := g.Wait(); err != nil { // every Run has returned: no goroutine left
		log.Fatal(err)
	}
	for _, id := range tenants {
		if err := compactors[id].CompactNow(context.Background()); err != nil {
			log.Fatal(err)
		}
		compactors[id].Unregister() // the tenant is gone; so are its metrics
		fmt.Printf("%s: %d series in head\n", id, dbs[id].Head().NumSeries())
	}
	// Output:
	// team-a: 0 series in head
	// team-b: 0 series in head
}

// Command querylog wires slogx as a promql engine's query logger, the way Prometheus does
// with --query.log-file: size rotation by the handler itself, and Reopen on SIGHUP for
// logrotate's "create" mode. It runs queries against a small TSDB in a temporary
// directory, rotates the log externally halfway (rename + SIGHUP to itself), and prints
// what ended up on disk.
//
//	go run ./examples/querylog -queries 500 -max-bytes 65536 -max-backups 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/leaksafe/leaksafe/slogx"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "querylog:", err)
		os.Exit(1)
	}
}

type config struct {
	dir        string
	queries    int
	maxBytes   int64
	maxBackups int
}

func parseFlags(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("querylog", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.dir, "dir", "", "directory for the TSDB and the query log (default: a temporary directory, removed at exit)")
	fs.IntVar(&c.queries, "queries", 200, "number of queries to run")
	fs.Int64Var(&c.maxBytes, "max-bytes", 16<<10, "rotate the query log when it would pass this size")
	fs.IntVar(&c.maxBackups, "max-backups", 3, "rotated query logs kept (query.log.1 … query.log.N)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.queries < 2 {
		return c, errors.New("-queries must be at least 2")
	}
	return c, nil
}

func run(ctx context.Context, args []string, out io.Writer) (err error) {
	c, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "querylog"); err != nil {
			return err
		}
		defer os.RemoveAll(c.dir)
	}

	db, err := tsdb.Open(filepath.Join(c.dir, "data"), slog.New(slog.DiscardHandler), nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		return fmt.Errorf("opening TSDB: %w", err)
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	end, err := loadSamples(ctx, db)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	logPath := filepath.Join(c.dir, "query.log")
	h, err := slogx.OpenJSONFile(logPath, &slogx.Options{MaxBytes: c.maxBytes, MaxBackups: c.maxBackups, Registerer: reg})
	if err != nil {
		return err
	}
	engine := promql.NewEngine(promql.EngineOpts{Reg: reg, MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	engine.SetQueryLogger(h)
	defer func() {
		engine.SetQueryLogger(nil) // closes h, as a reload to "no query log" would
		err = errors.Join(err, engine.Close())
	}()

	stopHUP, reopened := reopenOnSIGHUP(h, out)
	defer stopHUP()

	fmt.Fprintf(out, "running %d queries, query log %s (MaxBytes %d, MaxBackups %d)\n", c.queries, logPath, c.maxBytes, c.maxBackups)
	if err := runQueries(ctx, engine, db, end, 0, c.queries/2); err != nil {
		return err
	}

	// logrotate "create": rename, then signal the process, which reopens the path.
	if err := os.Rename(logPath, logPath+".rotated"); err != nil {
		return err
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		return err
	}
	if err := <-reopened; err != nil {
		return fmt.Errorf("reopen on SIGHUP: %w", err)
	}
	if err := runQueries(ctx, engine, db, end, c.queries/2, c.queries); err != nil {
		return err
	}

	st := h.Stats()
	fmt.Fprintf(out, "records %d, bytes %d, rotations %d, reopens %d, write errors %d, truncations %d\n",
		st.Records, st.Bytes, st.Rotations, st.Reopens, st.WriteErrors, st.Truncations)
	return listFiles(out, logPath)
}

// reopenOnSIGHUP calls h.Reopen on every SIGHUP and reports each result on the returned
// channel. stop ends the signal handling and waits for its goroutine.
func reopenOnSIGHUP(h *slogx.FileHandler, out io.Writer) (stop func(), reopened <-chan error) {
	hup := make(chan os.Signal, 1)
	results := make(chan error, 1)
	done := make(chan struct{})
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer close(done)
		for range hup {
			err := h.Reopen()
			fmt.Fprintln(out, "SIGHUP: reopened the query log:", errOrOK(err))
			select {
			case results <- err:
			default: // nobody waiting (a SIGHUP from outside)
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(hup)
		<-done
	}, results
}

func errOrOK(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

// loadSamples writes an hour of two counters at a 15s interval and returns the last timestamp.
func loadSamples(ctx context.Context, db *tsdb.DB) (time.Time, error) {
	end := time.Now().Truncate(time.Minute)
	app := db.Appender(ctx)
	for _, inst := range []string{"a", "b"} {
		ls := labels.FromStrings("__name__", "http_requests_total", "job", "api", "instance", inst)
		for i := range 240 {
			ts := end.Add(time.Duration(i-239) * 15 * time.Second)
			if _, err := app.Append(0, ls, ts.UnixMilli(), float64(i*10)); err != nil {
				_ = app.Rollback()
				return end, fmt.Errorf("appending samples: %w", err)
			}
		}
	}
	return end, app.Commit()
}

var queries = []string{
	`sum(rate(http_requests_total[5m]))`,
	`http_requests_total{instance="a"}`,
	`topk(1, rate(http_requests_total[1m]))`,
	`sum by (instance) (increase(http_requests_total[10m]))`,
}

func runQueries(ctx context.Context, engine *promql.Engine, db *tsdb.DB, end time.Time, from, to int) error {
	for i := from; i < to; i++ {
		var q promql.Query
		var err error
		// The comment numbers the query in the log (promql logs the query text as given).
		if i%5 == 4 {
			q, err = engine.NewRangeQuery(ctx, db, nil, fmt.Sprintf("rate(http_requests_total[5m]) # query %d", i), end.Add(-30*time.Minute), end, time.Minute)
		} else {
			q, err = engine.NewInstantQuery(ctx, db, nil, fmt.Sprintf("%s # query %d", queries[i%len(queries)], i), end)
		}
		if err != nil {
			return err
		}
		res := q.Exec(ctx)
		q.Close()
		if res.Err != nil {
			return fmt.Errorf("query %d: %w", i, res.Err)
		}
	}
	return nil
}

func listFiles(out io.Writer, logPath string) error {
	names, err := filepath.Glob(logPath + "*")
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "file\tbytes\t")
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%d\t\n", filepath.Base(name), fi.Size())
	}
	return tw.Flush()
}

package slogx_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/teststorage"

	"github.com/leaksafe/leaksafe/slogx"
)

// noTime drops the time so the examples' output is stable.
func noTime(groups []string, a slog.Attr) slog.Attr {
	if groups == nil && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func ExampleOpenJSONFile() {
	dir, _ := os.MkdirTemp("", "slogx")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "query.log")

	h, err := slogx.OpenJSONFile(path, &slogx.Options{ReplaceAttr: noTime})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()

	base := slog.New(h).With("engine", "promql")
	for _, q := range []string{"up", "rate(http_requests_total[5m])"} {
		base.With("query", q).Info("promql query logged") // each line: its own query only
	}

	b, _ := os.ReadFile(path)
	fmt.Print(string(b))
	// Output:
	// {"level":"INFO","msg":"promql query logged","engine":"promql","query":"up"}
	// {"level":"INFO","msg":"promql query logged","engine":"promql","query":"rate(http_requests_total[5m])"}
}

// As promql's query logger: SetQueryLogger closes the previous logger on every reload,
// and anything still holding it gets ErrClosed.
func Example_queryLogger() {
	dir, _ := os.MkdirTemp("", "slogx")
	defer os.RemoveAll(dir)
	storage, err := teststorage.NewWithError()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer storage.Close()

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute})
	h, err := slogx.OpenJSONFile(filepath.Join(dir, "query.log"), &slogx.Options{MaxBytes: 64 << 20, MaxBackups: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	engine.SetQueryLogger(h)

	ctx := context.Background()
	q, _ := engine.NewInstantQuery(ctx, storage, nil, `vector(1) + 1`, time.Unix(0, 0))
	fmt.Println("result:", q.Exec(ctx).Value)
	q.Close()

	engine.SetQueryLogger(nil) // a reload without query log: closes h
	fmt.Println("after close:", h.Handle(ctx, slog.NewRecord(time.Now(), slog.LevelInfo, "late", 0)))

	b, _ := os.ReadFile(filepath.Join(dir, "query.log"))
	var line struct {
		Msg    string
		Params struct{ Query string }
	}
	_ = json.Unmarshal(b, &line)
	fmt.Printf("logged: %s %q\n", line.Msg, line.Params.Query)
	// Output:
	// result: {} => 2 @[0]
	// after close: slogx: log file closed: file already closed
	// logged: promql query logged "vector(1) + 1"
}

// With MaxBytes the handler rotates by itself: query.log.1 is the newest backup, and no
// file exceeds MaxBytes.
func Example_rotation() {
	dir, _ := os.MkdirTemp("", "slogx")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "query.log")

	h, err := slogx.OpenJSONFile(path, &slogx.Options{MaxBytes: 4096, MaxBackups: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	logger := slog.New(h)
	for i := range 200 {
		logger.Info("promql query logged", "query", "sum(rate(http_requests_total[5m]))", "i", i)
	}

	names, _ := filepath.Glob(path + "*")
	for _, name := range names {
		fi, _ := os.Stat(name)
		fmt.Println(filepath.Base(name), fi.Size() <= 4096)
	}
	fmt.Println("rotations > 2:", h.Stats().Rotations > 2)
	// Output:
	// query.log true
	// query.log.1 true
	// query.log.2 true
	// rotations > 2: true
}

// logrotate in "create" mode renames the file and sends SIGHUP; Reopen moves every
// derived handler to the new file at once.
func ExampleFileHandler_Reopen() {
	dir, _ := os.MkdirTemp("", "slogx")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "query.log")

	h, err := slogx.OpenJSONFile(path, &slogx.Options{ReplaceAttr: noTime})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reopened := make(chan error)
	go func() {
		for range hup {
			reopened <- h.Reopen()
		}
		close(reopened)
	}()
	defer func() {
		signal.Stop(hup)
		close(hup)
		<-reopened // the goroutine is gone
	}()

	logger := slog.New(h).With("engine", "promql")
	logger.Info("before rotation")
	_ = os.Rename(path, path+".1")                // what logrotate does…
	_ = syscall.Kill(os.Getpid(), syscall.SIGHUP) // …then its postrotate script
	fmt.Println("reopen:", <-reopened)
	logger.Info("after rotation")

	before, _ := os.ReadFile(path + ".1")
	after, _ := os.ReadFile(path)
	fmt.Print(string(before), string(after))
	// Output:
	// reopen: <nil>
	// {"level":"INFO","msg":"before rotation","engine":"promql"}
	// {"level":"INFO","msg":"after rotation","engine":"promql"}
}

// Command leakdemo replays the five production incidents leaksafe exists for, each twice: the
// naive way it happened, and with leaksafe. Every scenario runs on real parts — a chunk pool
// under a simulated store gateway, gRPC streams on loopback, a promql engine writing its query
// log, an on-disk TSDB, Prometheus' own exemplar storage — and measures what the incident
// measured: pool elements in use, goroutines, query latency, heap, log size, head series.
//
//	go run ./examples/leakdemo                       # all five, about 20 s on 2 cores
//	go run ./examples/leakdemo -scenario pool -scenario slogx
//	go run ./examples/leakdemo -duration 10s -scale 4 -plot /tmp/leakdemo
//	go run ./examples/leakdemo -smoke -json          # what CI runs: small, fast, machine-readable
//
// It ends with a table (scenario, metric, naive, leaksafe, the bound leaksafe must hold,
// verdict) and exits non-zero, saying why, when a leaksafe variant breaks its bound. The naive
// variants are bounded (by count, by -duration, by timeouts) and cleaned up: when the program
// returns, nothing it started is still running.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var usage usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, &usage):
		fmt.Fprintln(os.Stderr, "leakdemo:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "leakdemo:", err)
		os.Exit(1)
	}
}

// usageError is a bad command line (exit status 2), as opposed to a failed run (1).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// config is the parsed command line.
type config struct {
	scenarios []string      // empty: all, in the order of allScenarios
	duration  time.Duration // the pool and ctxstream load phases, and the naive querier's hang
	scale     float64       // multiplies sizes: requests, streams, queries, series, exemplars
	json      bool
	plotDir   string
	smoke     bool
}

const (
	defaultDuration = 2 * time.Second
	smokeDuration   = 500 * time.Millisecond
	smokeScale      = 0.05
)

func parseFlags(args []string, out io.Writer, known []scenario) (config, error) {
	c := config{duration: defaultDuration, scale: 1}
	fs := flag.NewFlagSet("leakdemo", flag.ContinueOnError)
	fs.SetOutput(out)
	names := make([]string, len(known))
	for i, s := range known {
		names[i] = s.name
	}
	fs.Func("scenario", "run only this scenario (repeatable): "+strings.Join(names, ", "), func(v string) error {
		for _, n := range names {
			if v == n {
				c.scenarios = append(c.scenarios, v)
				return nil
			}
		}
		return fmt.Errorf("unknown scenario %q (have %s)", v, strings.Join(names, ", "))
	})
	fs.DurationVar(&c.duration, "duration", c.duration, "how long each variant's pool and ctxstream load runs; also the frontend timeout the naive querier hangs until (at least 1s)")
	fs.Float64Var(&c.scale, "scale", c.scale, "multiply every size (requests, streams, queries, series, exemplars) by this")
	fs.BoolVar(&c.json, "json", false, "print the results as JSON on stdout (progress goes to stderr)")
	fs.StringVar(&c.plotDir, "plot", "", "write one PNG per scenario (metric over time, both variants) into this directory")
	fs.BoolVar(&c.smoke, "smoke", false, fmt.Sprintf("small, fast settings for CI (-duration %v -scale %v unless given)", smokeDuration, smokeScale))
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			c.duration = smokeDuration
		}
		if !set["scale"] {
			c.scale = smokeScale
		}
	}
	if c.duration < 100*time.Millisecond {
		return c, fmt.Errorf("-duration %v: must be at least 100ms", c.duration)
	}
	if !(c.scale > 0) || c.scale > 1000 {
		return c, fmt.Errorf("-scale %v: must be in (0, 1000]", c.scale)
	}
	return c, nil
}

// scenario is one incident, replayed naive and leaksafe. run returns the measurements; the
// verdicts are computed from them by the harness (report.go), never by the scenario itself.
type scenario struct {
	name  string
	about string // the incident in one line
	run   func(ctx context.Context, e *env) (*result, error)
}

// allScenarios is the default set, in the order they run.
func allScenarios() []scenario {
	return []scenario{poolScenario, ctxstreamScenario, slogxScenario, tsdbxScenario, exemplarScenario}
}

// env is what a scenario gets from the harness.
type env struct {
	cfg config
	dir string // a fresh directory, removed after the scenario
}

// scaled returns n times -scale, at least min.
func (e *env) scaled(n, min int) int {
	return max(min, int(float64(n)*e.cfg.scale))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runScenarios(ctx, args, stdout, stderr, allScenarios())
}

// runScenarios is run with the scenario set as a parameter, so that a test can add one whose
// leaksafe variant breaks its bound.
func runScenarios(ctx context.Context, args []string, stdout, stderr io.Writer, known []scenario) error {
	cfg, err := parseFlags(args, stderr, known)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	progress := stdout
	if cfg.json {
		progress = stderr
	}
	selected := known
	if len(cfg.scenarios) > 0 {
		selected = nil
		for _, s := range known {
			for _, n := range cfg.scenarios {
				if s.name == n {
					selected = append(selected, s)
					break
				}
			}
		}
	}

	rep := &report{Duration: cfg.duration.String(), Scale: cfg.scale, Smoke: cfg.smoke}
	start := time.Now()
	fmt.Fprintf(progress, "leakdemo: %d scenario(s), -duration %v -scale %g, Go %s, %d CPU\n",
		len(selected), cfg.duration, cfg.scale, runtime.Version(), runtime.NumCPU())
	for i, s := range selected {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(progress, "[%d/%d] %-9s %s\n", i+1, len(selected), s.name, s.about)
		res := runOne(ctx, cfg, s)
		rep.add(res)
		fmt.Fprintf(progress, "      %-9s %s (%.1fs)\n", "", res.summary(), res.Seconds)
	}
	rep.Seconds = time.Since(start).Seconds()
	if err := ctx.Err(); err != nil {
		rep.Failures = append(rep.Failures, "interrupted: "+err.Error())
	}
	rep.Pass = len(rep.Failures) == 0

	if cfg.plotDir != "" {
		files, err := writePlots(cfg.plotDir, rep.Scenarios)
		if err != nil {
			rep.Failures = append(rep.Failures, "plots: "+err.Error())
			rep.Pass = false
		}
		for _, f := range files {
			fmt.Fprintf(progress, "wrote %s\n", f)
		}
	}
	if cfg.json {
		err = rep.writeJSON(stdout)
	} else {
		err = rep.writeTable(stdout)
	}
	if err != nil {
		return err
	}
	if !rep.Pass {
		return fmt.Errorf("%d failure(s):\n  %s", len(rep.Failures), strings.Join(rep.Failures, "\n  "))
	}
	return nil
}

// runOne runs a scenario in its own directory and checks that it left no goroutine behind: the
// naive variants leak on purpose, and each must clean up what it leaked before it returns.
func runOne(ctx context.Context, cfg config, s scenario) *result {
	start := time.Now()
	before := runtime.NumGoroutine()
	res, err := func() (*result, error) {
		dir, err := os.MkdirTemp("", "leakdemo-"+s.name+"-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		return s.run(ctx, &env{cfg: cfg, dir: dir})
	}()
	if res == nil {
		res = &result{}
	}
	res.Scenario = s.name
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	if left := settleGoroutines(before, goroutineSettle) - before; left > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("the scenario left %d goroutine(s) running", left))
	}
	return res
}

// goroutineSettle is how long a scenario's goroutines may take to exit after it returned.
var goroutineSettle = 5 * time.Second

// settleGoroutines waits, up to limit, for the number of goroutines to fall to want (goroutines
// that were told to exit take a moment to do so) and returns the last count.
func settleGoroutines(want int, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(wait)
	}
}

// sampleEvery calls f now and every d on its own goroutine until stop is called. stop calls f
// a last time and returns once the goroutine has exited; calling it again does nothing.
func sampleEvery(d time.Duration, f func()) (stop func()) {
	f()
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(d)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				f()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-exited
			f()
		})
	}
}

// liveHeap is the heap in use after full collections: what the process retains. It collects
// until the heap stops shrinking, because objects with finalizers or cleanups (tracked pool
// leases, gRPC and TSDB internals) are freed only by a cycle after their finalizer has run,
// and the first cycle only moves sync.Pool contents to the victim cache.
func liveHeap() int64 {
	var ms runtime.MemStats
	prev := int64(-1)
	for i := 0; i < 10; i++ {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		h := int64(ms.HeapAlloc)
		if i > 0 && h > prev-liveHeapTolerance {
			return min(h, prev)
		}
		prev = h
		time.Sleep(time.Millisecond) // let the finalizer goroutine run
	}
	return prev
}

// liveHeapTolerance is how much a further collection must free for liveHeap to try another.
const liveHeapTolerance = 4 << 10

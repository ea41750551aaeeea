package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The shape -json promises: what CI and scripts read.
type jsonReport struct {
	Pass      *bool    `json:"pass"`
	Failures  []string `json:"failures"`
	Seconds   float64  `json:"seconds"`
	Duration  string   `json:"duration"`
	Scale     float64  `json:"scale"`
	Smoke     bool     `json:"smoke"`
	Scenarios []struct {
		Scenario string   `json:"scenario"`
		Seconds  float64  `json:"seconds"`
		Errors   []string `json:"errors"`
		Notes    []string `json:"notes"`
		Metrics  []struct {
			Metric      string   `json:"metric"`
			Unit        string   `json:"unit"`
			Naive       *float64 `json:"naive"`
			Leaksafe    *float64 `json:"leaksafe"`
			Bound       *bound   `json:"bound"`
			Symptom     *bool    `json:"symptom"`
			NaiveBreaks bool     `json:"naive_breaks_bound"`
			Pass        bool     `json:"pass"`
			Verdict     string   `json:"verdict"`
		} `json:"metrics"`
		Series []struct {
			Title    string    `json:"title"`
			X        string    `json:"x"`
			Y        string    `json:"y"`
			Unit     string    `json:"unit"`
			Naive    []point   `json:"naive"`
			Leaksafe []point   `json:"leaksafe"`
			Marks    []refLine `json:"marks"`
		} `json:"series"`
	} `json:"scenarios"`
}

func TestSmokeRunReplaysEveryIncidentAndEveryLeaksafeVariantHoldsItsBound(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-smoke", "-json"}, &stdout, &stderr)
	require.NoError(t, err, "stderr:\n%s", stderr.String())
	// The demo's own cleanup: nothing a naive variant leaked on purpose is still running.
	goleak.VerifyNone(t)

	var rep jsonReport
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&rep), "stdout must be exactly one JSON document")
	require.False(t, dec.More(), "nothing after the JSON document on stdout")

	require.NotNil(t, rep.Pass)
	require.True(t, *rep.Pass, "failures: %v", rep.Failures)
	require.Empty(t, rep.Failures)
	require.True(t, rep.Smoke)
	require.Equal(t, smokeScale, rep.Scale)
	require.Equal(t, smokeDuration.String(), rep.Duration)

	var names []string
	for _, s := range rep.Scenarios {
		names = append(names, s.Scenario)
		require.Empty(t, s.Errors, s.Scenario)
		require.NotEmpty(t, s.Metrics, s.Scenario)
		require.NotEmpty(t, s.Series, "%s: a chart for -plot", s.Scenario)
		symptoms := 0
		for _, m := range s.Metrics {
			require.NotEmpty(t, m.Metric)
			require.Contains(t, []string{unitBytes, unitCount, unitSeconds, unitBool}, m.Unit)
			require.NotNil(t, m.Naive, m.Metric)
			require.NotNil(t, m.Leaksafe, m.Metric)
			require.NotNil(t, m.Bound, m.Metric)
			require.NotNil(t, m.Symptom, m.Metric)
			require.True(t, m.Pass, "%s: %s: leaksafe %v breaks %+v", s.Scenario, m.Metric, *m.Leaksafe, *m.Bound)
			require.NotEqual(t, "FAIL", m.Verdict)
			// The run's exit code is about leaksafe only; this test also holds the naive
			// models to their incident: every symptom row must show it, even in smoke mode,
			// or the leaksafe verdict beside it proves nothing.
			if *m.Symptom {
				symptoms++
				require.True(t, m.NaiveBreaks, "%s: %s: the naive variant must show the incident: naive %v holds %+v",
					s.Scenario, m.Metric, *m.Naive, *m.Bound)
				require.Equal(t, "fixed", m.Verdict)
			}
		}
		require.NotZero(t, symptoms, "%s: a row where the incident shows", s.Scenario)
		if s.Scenario == "tsdbx" {
			// The heap row once compared the leaksafe DB, charged the chunk disk mapper's
			// 4 MiB write buffer, with a naive DB that never allocated it: at smoke scale the
			// leaksafe heap looked six times the naive one. Measured soundly, the naive head's
			// out-of-order series break the bound at every scale.
			found := false
			for _, m := range s.Metrics {
				if m.Metric == "heap held by the DB after idle compaction" {
					found = true
					require.True(t, m.NaiveBreaks, "tsdbx heap: naive %v, leaksafe %v, bound %+v", *m.Naive, *m.Leaksafe, *m.Bound)
					require.Less(t, *m.Leaksafe, *m.Naive)
				}
			}
			require.True(t, found, "tsdbx reports the heap held after idle compaction")
		}
		for _, p := range s.Series {
			require.NotEmpty(t, p.Naive, "%s: %s", s.Scenario, p.Title)
			require.NotEmpty(t, p.Leaksafe, "%s: %s", s.Scenario, p.Title)
		}
	}
	require.Equal(t, []string{"pool", "ctxstream", "slogx", "tsdbx", "exemplar"}, names)

	// With -json, progress goes to stderr: one line per scenario as it starts.
	for _, n := range names {
		require.Contains(t, stderr.String(), "] "+n)
	}
}

// fakeScenario measures fixed values, so the harness's verdicts can be checked.
func fakeScenario(name string, leaksafe float64, b bound) scenario {
	return scenario{name: name, about: "test", run: func(context.Context, *env) (*result, error) {
		return &result{Metrics: []metric{{Name: "leased", Unit: unitCount, Naive: 10, Leaksafe: leaksafe, Bound: b, Symptom: true}}}, nil
	}}
}

func TestLeaksafeVariantBreakingItsBoundFailsTheRunWithTheReason(t *testing.T) {
	known := []scenario{fakeScenario("good", 0, exactly(0)), fakeScenario("bad", 3, exactly(0))}
	var stdout, stderr bytes.Buffer
	err := runScenarios(context.Background(), nil, &stdout, &stderr, known)
	require.Error(t, err)
	require.Contains(t, err.Error(), "bad: leased: leaksafe 3, bound = 0")
	require.NotContains(t, err.Error(), "good")
	require.Regexp(t, `good\s+leased\s+10\s+0\s+= 0\s+fixed`, stdout.String())
	require.Regexp(t, `bad\s+leased\s+10\s+3\s+= 0\s+FAIL`, stdout.String())
	require.Contains(t, stdout.String(), "FAIL (")

	stdout.Reset()
	err = runScenarios(context.Background(), []string{"-json", "-scenario", "bad"}, &stdout, &stderr, known)
	require.Error(t, err)
	var rep jsonReport
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	require.False(t, *rep.Pass)
	require.Len(t, rep.Scenarios, 1)
	require.Equal(t, []string{"bad: leased: leaksafe 3, bound = 0"}, rep.Failures)
}

// A naive model that stops showing its incident does not change the exit code, which is about
// the leaksafe variants (CI's contract), but the table warns and -json says which rows are
// symptoms, so the smoke test can hold the naive models to their incident.
func TestNaiveVariantHoldingItsBoundWarnsWithoutFailingTheRun(t *testing.T) {
	held := scenario{name: "held", run: func(context.Context, *env) (*result, error) {
		return &result{Metrics: []metric{
			{Name: "leased", Unit: unitCount, Naive: 0, Leaksafe: 0, Bound: exactly(0), Symptom: true},
			{Name: "readable", Unit: unitCount, Naive: 5, Leaksafe: 5, Bound: exactly(5)},
		}}, nil
	}}
	var stdout, stderr bytes.Buffer
	require.NoError(t, runScenarios(context.Background(), nil, &stdout, &stderr, []scenario{held}))
	require.Regexp(t, `held\s+leased\s+0\s+0\s+= 0\s+ok \(naive held too\)`, stdout.String())
	require.Contains(t, stdout.String(), "WARNING: the naive variant did not show its incident on 1 row(s): held: leased\n")
	require.Contains(t, stdout.String(), "PASS: ")

	stdout.Reset()
	require.NoError(t, runScenarios(context.Background(), []string{"-json"}, &stdout, &stderr, []scenario{held}))
	var rep jsonReport
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	require.True(t, *rep.Pass)
	ms := rep.Scenarios[0].Metrics
	require.True(t, *ms[0].Symptom)
	require.False(t, ms[0].NaiveBreaks)
	require.False(t, *ms[1].Symptom)
}

func TestScenarioErrorOrLeftoverGoroutineFailsTheRun(t *testing.T) {
	release := make(chan struct{})
	exited := make(chan struct{})
	leaky := scenario{name: "leaky", run: func(context.Context, *env) (*result, error) {
		go func() { <-release; close(exited) }()
		return &result{Metrics: []metric{{Name: "m", Unit: unitCount, Bound: exactly(0)}}}, nil
	}}
	broken := scenario{name: "broken", run: func(context.Context, *env) (*result, error) {
		return nil, os.ErrNotExist
	}}
	defer func(d time.Duration) { goroutineSettle = d }(goroutineSettle)
	goroutineSettle = 50 * time.Millisecond
	var stdout, stderr bytes.Buffer
	err := runScenarios(context.Background(), nil, &stdout, &stderr, []scenario{broken, leaky})
	close(release)
	<-exited
	require.Error(t, err)
	require.Contains(t, err.Error(), "broken: "+os.ErrNotExist.Error())
	require.Contains(t, err.Error(), "leaky: the scenario left 1 goroutine(s) running")
}

func TestFlagsAreValidated(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "nope"},
		{"-duration", "1ms"},
		{"-scale", "0"},
		{"-scale", "NaN"},
		{"extra"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), args, &out, &out)
		var usage usageError
		require.ErrorAs(t, err, &usage, "%v", args)
	}
}

func TestVerdicts(t *testing.T) {
	for _, c := range []struct {
		m    metric
		want string
		pass bool
	}{
		{metric{Naive: 5, Leaksafe: 0, Bound: exactly(0), Symptom: true}, "fixed", true},
		{metric{Naive: 0, Leaksafe: 0, Bound: exactly(0), Symptom: true}, "ok (naive held too)", true},
		{metric{Naive: 7, Leaksafe: 7, Bound: exactly(7)}, "ok", true},
		{metric{Naive: 5, Leaksafe: 1, Bound: atMost(0), Symptom: true}, "FAIL", false},
		{metric{Naive: 1, Leaksafe: 1, Bound: atLeast(1)}, "ok", true},
		{metric{Naive: 0, Leaksafe: 1, Bound: atLeast(1)}, "fixed", true},
		{metric{Naive: 0, Leaksafe: 0, Bound: atLeast(1)}, "FAIL", false},
	} {
		c.m.judge()
		require.Equal(t, c.want, c.m.Verdict, "%+v", c.m)
		require.Equal(t, c.pass, c.m.Pass, "%+v", c.m)
	}
}

func TestValuesPrintInTheirUnit(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{0, unitBytes, "0 B"},
		{1536, unitBytes, "1.5 KiB"},
		{58.6 * (1 << 20), unitBytes, "58.6 MiB"},
		{-877, unitBytes, "-877 B"},
		{1234567, unitCount, "1,234,567"},
		{0.5, unitCount, "0.5"},
		{2.0014, unitSeconds, "2.001s"},
		{0.2034, unitSeconds, "203ms"},
		{1, unitBool, "yes"},
		{0, unitBool, "no"},
	} {
		require.Equal(t, c.want, formatValue(c.v, c.unit))
	}
}

func TestPlotsAreOnePNGPerScenarioWithCharts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plots")
	results := []*result{
		{Scenario: "a", Panels: []panel{
			{Title: "bytes", X: "s", Y: "heap", Unit: unitBytes, Naive: []point{{0, 0}, {1, 3 << 20}}, Leaksafe: []point{{0, 0}, {1, 1 << 10}},
				Marks: []refLine{{Label: "cap", Y: 2 << 20}}},
			{Title: "count", X: "s", Y: "n", Unit: unitCount, Naive: []point{{0, 1}, {1, 5}}, Leaksafe: []point{{0, 1}, {1, 1}}},
		}},
		{Scenario: "no-chart"},
	}
	files, err := writePlots(dir, results)
	require.NoError(t, err)
	require.Equal(t, []string{filepath.Join(dir, "a.png")}, files)
	f, err := os.Open(files[0])
	require.NoError(t, err)
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	require.NoError(t, err)
	require.Greater(t, cfg.Height, cfg.Width/2, "two charts stacked")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.True(t, strings.HasSuffix(entries[0].Name(), ".png"))
}

func TestScenarioFlagIsRepeatableAndRunsInTheDefaultOrder(t *testing.T) {
	known := []scenario{fakeScenario("a", 0, exactly(0)), fakeScenario("b", 0, exactly(0)), fakeScenario("c", 0, exactly(0))}
	var stdout, stderr bytes.Buffer
	require.NoError(t, runScenarios(context.Background(), []string{"-json", "-scenario", "c", "-scenario", "a"}, &stdout, &stderr, known))
	var rep jsonReport
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	var names []string
	for _, s := range rep.Scenarios {
		names = append(names, s.Scenario)
	}
	require.Equal(t, []string{"a", "c"}, names)
	require.Contains(t, stderr.String(), "2 scenario(s)")
}

func TestPlotFlagWritesAPNGPerScenarioAndFailsTheRunWhenItCannot(t *testing.T) {
	charted := scenario{name: "charted", run: func(context.Context, *env) (*result, error) {
		return &result{
			Metrics: []metric{{Name: "m", Unit: unitCount, Naive: 1, Leaksafe: 0, Bound: exactly(0), Symptom: true}},
			Panels:  []panel{{Title: "t", X: "s", Y: "n", Unit: unitCount, Naive: []point{{0, 0}, {1, 1}}, Leaksafe: []point{{0, 0}, {1, 0}}}},
		}, nil
	}}
	dir := filepath.Join(t.TempDir(), "plots")
	var stdout, stderr bytes.Buffer
	require.NoError(t, runScenarios(context.Background(), []string{"-plot", dir}, &stdout, &stderr, []scenario{charted}))
	f, err := os.Open(filepath.Join(dir, "charted.png"))
	require.NoError(t, err)
	defer f.Close()
	_, err = png.DecodeConfig(f)
	require.NoError(t, err)
	require.Contains(t, stdout.String(), "wrote "+filepath.Join(dir, "charted.png"))

	notADir := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(notADir, nil, 0o644))
	err = runScenarios(context.Background(), []string{"-plot", notADir}, &stdout, &stderr, []scenario{charted})
	require.ErrorContains(t, err, "plots: ")
}

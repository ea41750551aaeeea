package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The naive "leak report names the leaking Get" is read from the naive pool's own Check, as the
// leaksafe one is: with Track off, as production runs, the report cannot name the line (nobody
// knew which path leaked); the very same pool with Track on does. The row was once a constant
// 0, so it showed "fixed" whatever the naive pool could do.
func TestPoolNaiveLeakReportRowIsMeasuredFromTheNaivePoolsCheck(t *testing.T) {
	e := &env{cfg: config{duration: smokeDuration, scale: smokeScale}}
	for _, track := range []bool{false, true} {
		res, err := runPool(context.Background(), e, track)
		require.NoError(t, err)
		require.Empty(t, res.Errors)
		m := metricNamed(t, res, "leak report names the leaking Get")
		require.Equal(t, b2f(track), m.Naive, "naive Track %v; notes: %v", track, res.Notes)
		require.Equal(t, 1.0, m.Leaksafe)
		note := noteWithPrefix(t, res, "naive Check (Track "+onOff(track)+"): ")
		if track {
			require.Contains(t, note, "leaking Get at pool.go:")
		} else {
			require.Contains(t, note, "no Get named: ")
			require.Contains(t, note, "set Options.Track")
		}
	}
}

func metricNamed(t *testing.T, res *result, name string) metric {
	t.Helper()
	for _, m := range res.Metrics {
		if m.Name == name {
			return m
		}
	}
	require.Failf(t, "no such metric", "%s: %q", res.Scenario, name)
	return metric{}
}

func noteWithPrefix(t *testing.T, res *result, prefix string) string {
	t.Helper()
	for _, n := range res.Notes {
		if strings.HasPrefix(n, prefix) {
			return n
		}
	}
	require.Failf(t, "no such note", "%q in %v", prefix, res.Notes)
	return ""
}

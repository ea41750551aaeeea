package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The leaksafe chain at smoke settings, a few times: once every query has returned, no store
// stream is still open and no goroutine is left above the baseline. The demo used to take its
// baseline while the warm-up query's server handlers were still ending and to read the open
// streams as soon as the goroutine count dipped to that inflated baseline; a loaded CI run
// then reported a store stream still open (a FAIL of -smoke) now and then.
func TestLeaksafeChainClosesEveryStoreStream(t *testing.T) {
	cfg := chainConfig{queries: 6, spread: 500 * time.Millisecond, outer: time.Second, respTimeout: 100 * time.Millisecond}
	for i := range 3 {
		run, err := runChain(context.Background(), cfg, true)
		require.NoError(t, err)
		require.Zero(t, run.storeStreamsOpen, "run %d: store streams open", i)
		require.Zero(t, run.goroutinesLeft, "run %d: goroutines left", i)
		require.Equal(t, cfg.queries, run.errs["cancelled"]+run.errs["store response timeout"], "run %d: %v", i, run.errs)
	}
}

// The leaksafe query must end at a per-Recv timeout, not later: at smoke and default settings
// the bound admits a query that ends at the store response timeout with scheduling slack, and
// refuses one that ends 4.5 response timeouts in. The bound was half the frontend timeout
// (five response timeouts), which let a query up to ~1 s late pass at default settings.
func TestSlowestQueryBoundIsThePerRecvTimeoutNotTheFrontendTimeout(t *testing.T) {
	for _, c := range []config{{duration: smokeDuration, scale: smokeScale}, {duration: defaultDuration, scale: 1}} {
		cfg := newChainConfig(&env{cfg: c})
		b := slowestQueryBound(cfg)
		ends := func(d time.Duration) bool { return b.holds(d.Seconds()) }
		require.True(t, ends(cfg.respTimeout+ctxLatencySlack), "%v: at the store response timeout, late by the slack", c.duration)
		require.True(t, ends(topRecvTimeout(cfg.respTimeout)), "%v: at querier A's own Recv timeout", c.duration)
		require.False(t, ends(cfg.respTimeout*9/2), "%v: 4.5 response timeouts in", c.duration)
		require.False(t, ends(cfg.outer), "%v: at the frontend timeout (the naive hang)", c.duration)
	}
}

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

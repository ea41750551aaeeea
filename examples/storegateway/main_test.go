package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leaksafe/leaksafe/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunLeavesNoLeaseReaderOrGoroutineBehind(t *testing.T) {
	var out strings.Builder
	g, err := run(context.Background(), &out, 100, true)
	require.NoError(t, err)
	require.Contains(t, out.String(), "outstanding 0 in use 0 bytes, bad puts 0")
	pool.VerifyNone(t, g.checkers()...)
}

// A reader that never finishes (the incident's missing Close) makes block
// sync give up at its deadline, naming the line that acquired the block.
func TestBlockSyncNamesAReaderThatNeverFinishes(t *testing.T) {
	b := makeBlock("01HZC", 1, 10)
	g, err := newGateway(true, b)
	require.NoError(t, err)
	_, _, line, _ := runtime.Caller(0)
	stuck := b.readers.Acquire() // a Series that forgot its deferred release
	defer stuck()

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the sync deadline has passed (no clocks in tests)
	err = g.dropBlock(ctx, "01HZC")
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, `refs "block 01HZC": 1 holders`)
	require.ErrorContains(t, err, fmt.Sprintf("main_test.go:%d", line+1))
}

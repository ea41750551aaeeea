package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestQuerierEndsAtStoreTimeoutAndCancelsTheSilentStore(t *testing.T) {
	var out bytes.Buffer
	// 500ms, not less: under load a real loopback Recv can take longer than a tight
	// timeout, and a healthy store would be taken for a silent one.
	require.NoError(t, run(context.Background(), &out, 500*time.Millisecond, 4))
	got := out.String()
	t.Log("\n" + got)

	first, second, ok := strings.Cut(got, "query 2:")
	require.True(t, ok)
	require.Equal(t, 12, strings.Count(first, "from store-"), "query 1 merges every series of the three stores")
	require.Less(t, strings.Index(first, `up{job="api-0",replica="c"}`), strings.Index(first, `up{job="api-1",replica="a"}`), "in label order")
	require.Equal(t, 5, strings.Count(second, "from store-"), "query 2 returns what sorts before the silent store's next series")
	require.Contains(t, second, "ctxstream: Recv timed out: no item within 500ms")
	require.Contains(t, second, "store-b: call cancelled by the querier after 2 series (context canceled)")
}

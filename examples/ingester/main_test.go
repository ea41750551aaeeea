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

// The program itself, small: tenants go idle, their heads are emptied by
// their IdleCompactors, every pushed sample stays queryable, and shutdown
// leaves no goroutine behind (goleak in TestMain).
func TestIngesterEmptiesIdleTenantHeadsAndKeepsTheirSamples(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), &out, config{
		tenants:       2,
		series:        30,
		samples:       20,
		oooSeries:     10,
		idleTimeout:   100 * time.Millisecond,
		checkInterval: 10 * time.Millisecond,
		wait:          time.Minute,
		dir:           t.TempDir(),
	})
	require.NoError(t, err)
	t.Log("\n" + out.String())

	before, after, ok := strings.Cut(out.String(), "heads after idle compaction:")
	require.True(t, ok)
	// The heads before idling are not asserted: a tenant may already go idle
	// while the next one is being pushed on a slow machine.
	require.Regexp(t, `tenant-1\s+700\s`, before)
	for _, tenant := range []string{"tenant-0", "tenant-1"} {
		require.Regexp(t, tenant+`\s+700\s+0\s+[1-9]\d*\s+[1-9]`, after, "head emptied by at least one idle compaction")
	}
	require.Contains(t, after, "every pushed sample is queryable")
}

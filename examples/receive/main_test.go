package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNoisyTenantStaysInsideTheSharedBudgetAndOthersKeepTheirFloor(t *testing.T) {
	cfg := config{tenants: 5, budget: 2 << 20, floor: 128 << 10, requests: 40, noisyX: 20, perSeries: 16}
	var out bytes.Buffer
	rep, err := run(context.Background(), &out, t.TempDir(), cfg)
	require.NoError(t, err)
	t.Log("\n" + out.String())

	require.LessOrEqual(t, rep.budget.UsedBytes, cfg.budget)
	require.Len(t, rep.tenants, cfg.tenants)
	noisy := rep.tenants[len(rep.tenants)-1]
	require.Positive(t, noisy.stats.Evicted.Budget, "the noisy tenant ran into the budget")
	for _, ten := range rep.tenants[:len(rep.tenants)-1] {
		require.Positive(t, ten.stats.Exemplars, "%s lost its exemplars", ten.name)
		require.Equal(t, int(ten.stats.Exemplars), ten.queried, "%s: queries see what the store holds", ten.name)
		require.Greater(t, ten.stats.Bytes, cfg.floor/2, "%s was pushed far below its floor", ten.name)
	}
	require.Contains(t, out.String(), "tenant-4 (noisy)")
	require.Contains(t, out.String(), "shared budget:")
}

func TestSizesParse(t *testing.T) {
	for in, want := range map[string]int64{"4MiB": 4 << 20, "256KiB": 256 << 10, "1GiB": 1 << 30, "123": 123} {
		var b bytesFlag
		require.NoError(t, b.Set(in))
		require.Equal(t, want, int64(b))
	}
	var b bytesFlag
	require.Error(t, b.Set("lots"))
	require.Error(t, b.Set(strings.Repeat("9", 30)))
	require.Error(t, b.Set("9223372036854775807GiB"), "overflows int64")
	require.Error(t, b.Set("8589934592GiB"), "2^33 GiB is 2^63 bytes: one past MaxInt64")
	require.NoError(t, b.Set("8589934591GiB"))
	require.Equal(t, int64(8589934591)<<30, int64(b))
}

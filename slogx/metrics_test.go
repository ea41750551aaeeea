package slogx

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestMetricsCountWhatHappened(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	h, err := OpenJSONFile(filepath.Join(dir, "q.log"), &Options{Registerer: reg, MaxBytes: 2048, MaxBackups: 1})
	require.NoError(t, err)
	ctx := context.Background()
	for i := range 20 {
		require.NoError(t, h.Handle(ctx, record(time.Time{}, i, 200)))
	}
	slog.New(h).Info("cut", "big", strings.Repeat("x", 4096))
	require.NoError(t, h.Close())
	require.ErrorIs(t, h.Handle(ctx, record(time.Time{}, 99, 0)), ErrClosed)

	st := h.Stats()
	require.Equal(t, uint64(21), st.Records)
	require.Equal(t, uint64(1), st.Truncations)
	require.Equal(t, uint64(1), st.Closed)
	require.NotZero(t, st.Rotations)
	for name, want := range map[string]uint64{
		"slogx_records_written_total":     st.Records,
		"slogx_bytes_written_total":       st.Bytes,
		"slogx_rotations_total":           st.Rotations,
		"slogx_truncations_total":         st.Truncations,
		"slogx_write_errors_total":        0,
		"slogx_reopens_total":             0,
		"slogx_records_after_close_total": 1,
	} {
		mf, err := reg.Gather()
		require.NoError(t, err)
		var got float64
		found := false
		for _, f := range mf {
			if f.GetName() == name {
				got, found = f.GetMetric()[0].GetCounter().GetValue(), true
			}
		}
		require.True(t, found, name)
		require.Equal(t, float64(want), got, name)
	}

	// A reload opens the next handler with the same Registerer before closing the old one:
	// no registration error, and the counters carry on.
	h2, err := OpenJSONFile(filepath.Join(dir, "q2.log"), &Options{Registerer: reg})
	require.NoError(t, err)
	require.NoError(t, h2.Handle(ctx, record(time.Time{}, 0, 0)))
	require.NoError(t, h2.Close())
	require.Equal(t, 22.0, testutil.ToFloat64(h2.sink.metrics.prom.records))
	require.Equal(t, uint64(1), h2.Stats().Records, "Stats are per file")
}

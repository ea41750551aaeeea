package slogx

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// perQueryLogging replays promql's pattern: one derived logger per query, one record.
func perQueryLogging(base *slog.Logger, from, to int) {
	for i := from; i < to; i++ {
		base.With("query", "rate(http_requests_total[5m])", "id", i).Info("promql query logged", "i", i)
	}
}

// heapGrowth runs f and returns how much the live heap grew.
func heapGrowth(f func()) int64 {
	before := heapInUse()
	f()
	return heapInUse() - before
}

// TestHeapStaysFlatOver100kPerQueryWiths is the incident's proof: 100,000 queries, each
// logged through base.With(...), leave the heap where it was, and every line carries its
// own query's attributes only.
func TestHeapStaysFlatOver100kPerQueryWiths(t *testing.T) {
	n := 100_000
	if raceEnabled {
		n = 20_000
	}
	h, path := openTemp(t, nil)
	base := slog.New(h).With("engine", "promql")
	perQueryLogging(base, 0, 1000) // warm pools and the file

	grown := heapGrowth(func() { perQueryLogging(base, 1000, 1000+n) })
	t.Logf("heap growth after %d per-query With+Info: %d bytes", n, grown)
	require.Less(t, grown, int64(256<<10), "heap must stay flat")

	f := openFile(t, path)
	dec := json.NewDecoder(f)
	for i := range 1000 + n {
		var line map[string]any
		require.NoError(t, dec.Decode(&line))
		delete(line, "time")
		require.Equal(t, map[string]any{
			"level": "INFO", "msg": "promql query logged", "engine": "promql",
			"query": "rate(http_requests_total[5m])", "id": float64(i), "i": float64(i),
		}, line, "line %d", i)
	}
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF)
}

// accumulatingHandler is the 3.0.0 bug in miniature: With mutates shared state.
type accumulatingHandler struct {
	slog.Handler
	attrs *[]slog.Attr
}

func (h accumulatingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*h.attrs = append(*h.attrs, as...)
	return h
}

// The measurement above must be able to fail: on the incident's handler it does.
func TestHeapMeasurementCatchesAccumulatingWith(t *testing.T) {
	const n = 20_000
	bad := accumulatingHandler{Handler: slog.DiscardHandler, attrs: new([]slog.Attr)}
	base := slog.New(bad).With("engine", "promql")
	grown := heapGrowth(func() { perQueryLogging(base, 0, n) })
	t.Logf("accumulating handler: heap growth after %d queries: %d bytes", n, grown)
	require.Greater(t, grown, int64(256<<10))
	runtime.KeepAlive(bad)
}

// TestDerivedHandlerHeapIsItsOwnAttrs measures the heap each live derived handler holds:
// its own encoded attrs plus a fixed overhead, whatever the size of what it derives from.
func TestDerivedHandlerHeapIsItsOwnAttrs(t *testing.T) {
	const n = 10_000
	own := []slog.Attr{slog.String("query", "up"), slog.Int("id", 12345)} // `"query":"up","id":12345`: 23 bytes
	for _, baseAttrs := range []int{0, 10, 300} {
		t.Run(fmt.Sprintf("base_attrs=%d", baseAttrs), func(t *testing.T) {
			h, _ := openTemp(t, nil)
			var base slog.Handler = h
			for i := range baseAttrs {
				base = base.WithAttrs([]slog.Attr{slog.String("base"+strconv.Itoa(i), strings.Repeat("v", 40))})
			}
			kept := make([]slog.Handler, n)
			grown := heapGrowth(func() {
				for i := range kept {
					kept[i] = base.WithAttrs(own)
				}
			})
			perHandler := float64(grown) / n
			t.Logf("heap per derived handler: %.0f bytes (base chain %d bytes)", perHandler, base.(*FileHandler).size)
			require.Less(t, perHandler, 112.0, "64-byte handler + 32-byte attrs, nothing of the base")
			require.NoError(t, kept[n-1].Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)))
			runtime.KeepAlive(kept)
		})
	}
}

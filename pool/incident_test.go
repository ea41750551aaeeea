package pool

// The incident (../shared/incidents/001): a refactor of the Thanos store
// gateway's Series dropped a deferred Close, so on some paths the chunk
// buffers of a request were never returned. Gets outran Puts until the pool
// sat at its 30 GB cap, and nothing said where the buffers had gone.

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type seriesRef struct {
	id      int
	chunk   []byte
	corrupt bool
}

var errCorruptChunk = errors.New("corrupt chunk")

// leakyGetLine is the line of the Get whose buffer loadSeries leaks.
var leakyGetLine int

// loadSeries is a store gateway's series loop with the bug: when a chunk
// fails to decode it returns without putting the buffer back.
func loadSeries(chunks *Pool[byte], series []seriesRef) (int, error) {
	total := 0
	for _, s := range series {
		leakyGetLine = thisLine() + 1
		buf, err := chunks.Get(len(s.chunk))
		if err != nil {
			return total, err
		}
		*buf = append(*buf, s.chunk...)
		if s.corrupt {
			return total, fmt.Errorf("series %d: %w", s.id, errCorruptChunk) // forgets chunks.Put(buf)
		}
		total += len(*buf)
		chunks.Put(buf)
	}
	return total, nil
}

// loadSeriesFixed returns the buffer on every path.
func loadSeriesFixed(chunks *Pool[byte], series []seriesRef) (int, error) {
	total := 0
	for _, s := range series {
		n, err := func() (int, error) {
			buf, err := chunks.Get(len(s.chunk))
			if err != nil {
				return 0, err
			}
			defer chunks.Put(buf)
			*buf = append(*buf, s.chunk...)
			if s.corrupt {
				return 0, fmt.Errorf("series %d: %w", s.id, errCorruptChunk)
			}
			return len(*buf), nil
		}()
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// serveRequests runs 200 Series requests of 20 series each; every tenth
// request meets a corrupt chunk.
func serveRequests(t *testing.T, chunks *Pool[byte], load func(*Pool[byte], []seriesRef) (int, error)) (failed int) {
	t.Helper()
	for req := range 200 {
		series := make([]seriesRef, 20)
		for i := range series {
			series[i] = seriesRef{id: i, chunk: make([]byte, 900), corrupt: req%10 == 9 && i == 7}
		}
		if _, err := load(chunks, series); err != nil {
			require.ErrorIs(t, err, errCorruptChunk)
			failed++
		}
	}
	return failed
}

func chunkPool(t *testing.T, track bool) *Pool[byte] {
	return newPool[byte](t, Options{Name: "chunks", MinSize: 1 << 10, MaxSize: 16 << 10, Factor: 2, MaxTotal: 64 << 10, Track: track})
}

func TestIncidentForgottenPutIsCaughtWithTheLeakingLine(t *testing.T) {
	chunks := chunkPool(t, true)
	failed := serveRequests(t, chunks, loadSeries)
	require.Equal(t, 20, failed)

	// The imbalance is visible at once, not when the cap is hit. With Track
	// the leaked buffers, dropped by loadSeries, are also found by the
	// garbage collector: counted as Leaked and their budget released.
	st := chunks.Stats()
	require.Equal(t, int64(20), st.Gets-st.Puts)
	require.Equal(t, int64(20), st.Outstanding+st.Leaked)
	collectUntil(t, func() bool { return chunks.Stats().Leaked == 20 })

	var rec recorder
	VerifyNone(&rec, chunks)
	report := rec.String()
	require.Len(t, rec.errs, 1)
	require.Contains(t, report, `pool "chunks": 0 leases outstanding (0 elements in use), 20 leases garbage-collected without Put`)
	require.Contains(t, report, "20 leases (20480 elements) garbage-collected without Put, from Get at:")
	require.Contains(t, report, "pool.loadSeries\n")
	require.Contains(t, report, fmt.Sprintf("incident_test.go:%d\n", leakyGetLine), "the report names the leaking line:\n%s", report)
	require.Equal(t, 1, strings.Count(report, "from Get at:"), "20 leases from one line are one entry")
}

func TestIncidentLeaseHeldPastTheRequestIsReportedWithItsLine(t *testing.T) {
	chunks := chunkPool(t, true)
	var stuck []*[]byte // a consumer that still holds what it was handed
	for range 5 {
		leakyGetLine = thisLine() + 1
		b, err := chunks.Get(900)
		require.NoError(t, err)
		stuck = append(stuck, b)
	}
	var rec recorder
	VerifyNone(&rec, chunks)
	require.Contains(t, rec.String(), `pool "chunks": 5 leases outstanding (5120 elements in use)`)
	require.Contains(t, rec.String(), "5 leases (5120 elements) from Get at:")
	require.Contains(t, rec.String(), fmt.Sprintf("incident_test.go:%d\n", leakyGetLine))
	for _, b := range stuck {
		chunks.Put(b)
	}
	VerifyNone(t, chunks)
}

func TestIncidentWithoutTrackingFailsTheTestAndExhaustsTheBudget(t *testing.T) {
	chunks := chunkPool(t, false)
	serveRequests(t, chunks, loadSeries)
	st := chunks.Stats()
	require.Equal(t, int64(20), st.Outstanding, "untracked leases stay counted until Put")
	require.Equal(t, st.Gets-st.Puts, st.Outstanding)
	require.Equal(t, int64(20<<10), st.InUse)

	var rec recorder
	VerifyNone(&rec, chunks)
	require.Len(t, rec.errs, 1)
	require.Contains(t, rec.String(), `pool "chunks": 20 leases outstanding (20480 elements in use)`)
	require.Contains(t, rec.String(), "set Options.Track (tests)")

	// Left alone, the leak fills the budget and the pool refuses service,
	// as the store gateway did at its 30 GB cap.
	for range 44 {
		_, _ = loadSeries(chunks, []seriesRef{{chunk: make([]byte, 900), corrupt: true}})
	}
	_, err := loadSeries(chunks, []seriesRef{{chunk: make([]byte, 900)}})
	require.ErrorIs(t, err, ErrExhausted)
}

func TestIncidentFixedLoopPassesVerifyNone(t *testing.T) {
	chunks := chunkPool(t, true)
	require.Equal(t, 20, serveRequests(t, chunks, loadSeriesFixed))
	var rec recorder
	VerifyNone(&rec, chunks)
	require.Empty(t, rec.errs)
	VerifyNone(t, chunks)
	require.Equal(t, int64(200*20-20*12), chunks.Stats().Puts) // a corrupt request stops after its 8th series
}

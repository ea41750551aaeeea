package exemplar

import (
	"flag"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// Memory claims are measured with runtime.ReadMemStats after runtime.GC(),
// never derived from the store's own arithmetic.

var churnSeries = flag.Int("exemplar.churn-series", 0,
	"distinct series in TestHeapStaysWithinMaxBytesUnderSeriesChurn (default 1,000,000; 100,000 under -short)")

func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func TestAllocSizeMatchesTheRuntime(t *testing.T) {
	for _, size := range []int64{24, 100, 257, 513, 1000, 4095, 9000, 16384, 18432, 20440, 20480, 32760, 32768, 40000, 100000, 1 << 20} {
		for _, pointers := range []bool{false, true} {
			// Enough allocations that the runtime's own (a few KB) are noise.
			n := max(64, int(4<<20/size))
			sink, psink := make([][]byte, 0, n), make([][]*int, 0, n)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range n {
				if pointers {
					psink = append(psink, make([]*int, size/8))
				} else {
					sink = append(sink, make([]byte, size))
				}
			}
			runtime.ReadMemStats(&after)
			got := int64(after.TotalAlloc-before.TotalAlloc) / int64(n)
			want := allocSize(size/8*8, pointers)
			if !pointers {
				want = allocSize(size, false)
			}
			// Adjacent size classes are at least 6% apart.
			require.InEpsilon(t, want, got, 0.02, "size %d pointers %v", size, pointers)
			runtime.KeepAlive(sink)
			runtime.KeepAlive(psink)
		}
	}
}

// churnLabels returns the i-th series with about 200 bytes of labels.
func churnLabels(b *labels.ScratchBuilder, pad string, i int) labels.Labels {
	b.Reset()
	b.Add("__name__", "http_server_request_duration_seconds_bucket")
	b.Add("id", fmt.Sprintf("%010d", i))
	b.Add("pod", pad)
	return b.Labels()
}

func TestHeapStaysWithinMaxBytesUnderSeriesChurn(t *testing.T) {
	// The incident: Thanos Receive with max-exemplars=1,000,000 grew until OOM.
	// Here 1M distinct series (200-byte labels, distinct trace ids) flow through
	// a store capped at 32 MiB; the heap it holds is measured as it churns.
	// CI runs only under -race: keep the 1M series there too (about
	// 15 s), with a smaller cap so the store churns as hard.
	n, maxBytes := 1_000_000, int64(32<<20)
	if raceEnabled {
		maxBytes = 8 << 20
	}
	if testing.Short() {
		n, maxBytes = 100_000, 8<<20
	}
	if *churnSeries > 0 {
		n = *churnSeries
	}
	sb := labels.NewScratchBuilder(3)
	pad := strings.Repeat("p", 200-len("__name__http_server_request_duration_seconds_bucketid0000000000pod"))
	labelBytes := 0
	churnLabels(&sb, pad, 0).Range(func(l labels.Label) { labelBytes += len(l.Name) + len(l.Value) })
	require.Equal(t, 200, labelBytes, "labels are 200 bytes of names and values")

	base := liveHeap()
	s := mustNew(t, Options{MaxExemplars: int64(n), MaxBytes: maxBytes})
	var peak int64
	checks := 10
	for i := range n {
		if i%10_000 == 0 {
			// With dedupelabels the builder interns every value it sees in its
			// symbol table: that is the test's memory, not the store's.
			sb.SetSymbolTable(labels.NewSymbolTable())
		}
		l := churnLabels(&sb, pad, i)
		require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: int64(i), HasTs: true}))
		if (i+1)%(n/checks) == 0 {
			grown := liveHeap() - base
			peak = max(peak, grown)
			st := s.Stats()
			require.LessOrEqual(t, st.Bytes, maxBytes)
			require.LessOrEqual(t, grown, maxBytes*12/10, "after %d series: heap grew %d bytes for MaxBytes %d", i+1, grown, maxBytes)
		}
	}
	st := s.Stats()
	grown := liveHeap() - base
	t.Logf("%d series churned: heap grew %.1f MiB (peak %.1f MiB) for MaxBytes %.1f MiB; store accounts %.1f MiB for %d exemplars (%.0f B each, series labels included)",
		n, mib(grown), mib(peak), mib(maxBytes), mib(st.Bytes), st.Exemplars, float64(st.Bytes)/float64(st.Exemplars))
	require.Positive(t, st.Evicted.Bytes)
	require.Greater(t, st.Bytes, maxBytes*9/10, "the budget is used")
	require.InDelta(t, float64(st.Bytes), float64(grown), float64(maxBytes)/10, "what the store accounts is what the heap holds")
	runtime.KeepAlive(s)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func TestIndexAndSeriesMemoryIsReleasedAfterChurn(t *testing.T) {
	// Prometheus' index map never shrinks: 1M distinct series then one hot
	// series retain 167.7 MB for ~112 MB live. Here the churned series' labels,
	// table pages and index go back to the heap.
	n := 200_000
	if raceEnabled || testing.Short() {
		n = 50_000
	}
	sb := labels.NewScratchBuilder(3)
	pad := strings.Repeat("p", 100)
	base := liveHeap()
	s := mustNew(t, Options{MaxExemplars: int64(n)})
	for i := range n {
		require.NoError(t, s.AddExemplar(churnLabels(&sb, pad, i), exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
	}
	churned := s.Stats()
	hot := labels.FromStrings("__name__", "hot")
	for i := range n {
		require.NoError(t, s.AddExemplar(hot, exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(n + i), HasTs: true}))
	}
	st := s.Stats()
	require.Equal(t, int64(1), st.Series)
	require.Len(t, s.series.index, minIndexSize, "the index shrank back")
	grown := liveHeap() - base
	exemplarsOnly := int64(n/pageSlots+1) * pageBytes
	t.Logf("after %d series: %.1f MiB; after one hot series replaced them: heap %.1f MiB, store %.1f MiB, slot pages alone %.1f MiB",
		n, mib(churned.Bytes), mib(grown), mib(st.Bytes), mib(exemplarsOnly))
	require.Less(t, st.Bytes, exemplarsOnly+64<<10, "nothing but the hot series' slots remains accounted")
	require.Less(t, grown, st.Bytes*11/10+256<<10, "nothing but the hot series' slots remains on the heap")
	runtime.KeepAlive(s)
}

func TestSeriesLabelsAreHeldOncePerSeries(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 100_000})
	l := labels.FromStrings("__name__", "m", "pod", strings.Repeat("p", 10_000))
	base := liveHeap()
	for i := range 50_000 {
		require.NoError(t, s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: 1, Ts: int64(i), HasTs: true}))
	}
	grown := liveHeap() - base
	perExemplar := float64(grown) / 50_000
	t.Logf("%.1f heap bytes per exemplar with 10 KB series labels", perExemplar)
	require.Less(t, perExemplar, 70.0, "a 64-byte slot per exemplar; the 10 KB labels once")
	runtime.KeepAlive(s)
}

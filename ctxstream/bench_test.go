package ctxstream_test

import (
	"container/heap"
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/leaksafe/leaksafe/ctxstream"
)

// countSource returns 0, 1, 2, ... n-1 and then io.EOF, optionally burning about spin
// iterations of arithmetic per Recv to stand in for decoding a message.
type countSource struct {
	i, n, step int
	spin       int
	sink       uint64
}

func (s *countSource) Recv() (int, error) {
	if s.i >= s.n {
		return 0, io.EOF
	}
	v := s.i * s.step
	s.i++
	if s.spin > 0 {
		x := s.sink
		for range s.spin {
			x = x*6364136223846793005 + 1442695040888963407
		}
		s.sink = x
	}
	return v, nil
}

// newSource hides the concrete type from both sides of every benchmark, so that neither the
// raw loop nor ctxstream gets its Recv devirtualized or inlined.
//
//go:noinline
func newSource(n, step, spin int) ctxstream.Source[int] {
	return &countSource{n: n, step: step, spin: spin}
}

// rawLoop is what code does today: Recv, then look at the context for every item.
func rawLoop(ctx context.Context, src ctxstream.Source[int]) (sum int, err error) {
	for {
		v, err := src.Recv()
		if err == io.EOF {
			return sum, nil
		}
		if err != nil {
			return sum, err
		}
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		sum += v
	}
}

func drain(it *ctxstream.Iter[int]) (sum int, err error) {
	for it.Next() {
		sum += it.At()
	}
	it.Close()
	return sum, it.Err()
}

var sink int

func benchPerItem(b *testing.B, spin int, wrap func(context.Context, ctxstream.Source[int]) *ctxstream.Iter[int]) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := newSource(b.N, 1, spin)
	b.ReportAllocs()
	b.ResetTimer()
	var sum int
	var err error
	if wrap == nil {
		sum, err = rawLoop(ctx, src)
	} else {
		sum, err = drain(wrap(ctx, src))
	}
	if err != nil {
		b.Fatal(err)
	}
	sink = sum
}

func lazy(ctx context.Context, src ctxstream.Source[int]) *ctxstream.Iter[int] {
	return ctxstream.Lazy(ctx, src)
}

func eager(ctx context.Context, src ctxstream.Source[int]) *ctxstream.Iter[int] {
	return ctxstream.Eager(ctx, src)
}

// BenchmarkLazy: per item, over a cancellable context, against the raw Recv + ctx.Err() loop.
// impl=ctxstream-all ranges over All instead of calling Next/At.
func BenchmarkLazy(b *testing.B) {
	b.Run("impl=rawloop", func(b *testing.B) { benchPerItem(b, 0, nil) })
	b.Run("impl=ctxstream", func(b *testing.B) { benchPerItem(b, 0, lazy) })
	b.Run("impl=ctxstream-all", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		it := ctxstream.Lazy(ctx, newSource(b.N, 1, 0))
		b.ReportAllocs()
		b.ResetTimer()
		sum := 0
		for v := range it.All() {
			sum += v
		}
		if it.Err() != nil {
			b.Fatal(it.Err())
		}
		sink = sum
	})
}

// rawLoopWithTimer is the hand-written per-Recv timeout: a timer reset around every Recv.
func rawLoopWithTimer(ctx context.Context, src ctxstream.Source[int], d time.Duration) (sum int, err error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	t := time.AfterFunc(d, func() { cancel(ctxstream.ErrRecvTimeout) })
	t.Stop()
	for {
		t.Reset(d)
		v, err := src.Recv()
		t.Stop()
		if err == io.EOF {
			return sum, nil
		}
		if err != nil {
			return sum, err
		}
		if err := rctx.Err(); err != nil {
			return sum, context.Cause(rctx)
		}
		sum += v
	}
}

// BenchmarkLazyRecvTimeout: the price of WithRecvTimeout, against a raw loop that resets a
// timer around every Recv.
func BenchmarkLazyRecvTimeout(b *testing.B) {
	run := func(b *testing.B, f func(ctx context.Context, src ctxstream.Source[int]) (int, error)) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		src := newSource(b.N, 1, 0)
		b.ReportAllocs()
		b.ResetTimer()
		sum, err := f(ctx, src)
		if err != nil {
			b.Fatal(err)
		}
		sink = sum
	}
	b.Run("impl=rawloop+timer", func(b *testing.B) {
		run(b, func(ctx context.Context, src ctxstream.Source[int]) (int, error) {
			return rawLoopWithTimer(ctx, src, time.Minute)
		})
	})
	b.Run("impl=ctxstream", func(b *testing.B) {
		run(b, func(ctx context.Context, src ctxstream.Source[int]) (int, error) {
			return drain(ctxstream.Lazy(ctx, src, ctxstream.WithRecvTimeout(time.Minute)))
		})
	})
}

// recvSpin makes one Recv cost about a microsecond on the project's machine.
const recvSpin = 1000

// BenchmarkEager: per item, on a source whose Recv costs about 1µs, against the raw loop.
func BenchmarkEager(b *testing.B) {
	b.Run("recv=1us/impl=rawloop", func(b *testing.B) { benchPerItem(b, recvSpin, nil) })
	b.Run("recv=1us/impl=ctxstream", func(b *testing.B) { benchPerItem(b, recvSpin, eager) })
}

// heapMerge is the usual container/heap k-way merge over Recv sources.
type heapItem struct {
	v   int
	idx int
	src ctxstream.Source[int]
}
type mergeHeap []heapItem

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if h[i].v != h[j].v {
		return h[i].v < h[j].v
	}
	return h[i].idx < h[j].idx
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(heapItem)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func heapMergeSum(ctx context.Context, srcs []ctxstream.Source[int]) (int, error) {
	h := make(mergeHeap, 0, len(srcs))
	for i, s := range srcs {
		v, err := s.Recv()
		if err == io.EOF {
			continue
		}
		if err != nil {
			return 0, err
		}
		h = append(h, heapItem{v: v, idx: i, src: s})
	}
	heap.Init(&h)
	sum := 0
	for len(h) > 0 {
		top := &h[0]
		sum += top.v
		v, err := top.src.Recv()
		switch {
		case err == io.EOF:
			heap.Pop(&h)
			continue
		case err != nil:
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		top.v = v
		heap.Fix(&h, 0)
	}
	return sum, nil
}

func mergeSources(n, k int) []ctxstream.Source[int] {
	srcs := make([]ctxstream.Source[int], k)
	for i := range srcs {
		per := n / k
		if i < n%k {
			per++
		}
		// Interleaved values: child i holds i, i+k, i+2k...: every step changes the winner.
		s := newSource(per, k, 0).(*countSource)
		s.i = 0
		srcs[i] = &offsetSource{countSource: s, off: i}
	}
	return srcs
}

type offsetSource struct {
	*countSource
	off int
}

func (s *offsetSource) Recv() (int, error) {
	v, err := s.countSource.Recv()
	return v + s.off, err
}

// BenchmarkMerge: per merged item, 16 sorted streams, against container/heap.
func BenchmarkMerge(b *testing.B) {
	for _, k := range []int{16} {
		name := "streams=" + strconv.Itoa(k)
		b.Run(name+"/impl=heap", func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srcs := mergeSources(b.N, k)
			b.ReportAllocs()
			b.ResetTimer()
			sum, err := heapMergeSum(ctx, srcs)
			if err != nil {
				b.Fatal(err)
			}
			sink = sum
		})
		b.Run(name+"/impl=ctxstream", func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srcs := mergeSources(b.N, k)
			b.ReportAllocs()
			b.ResetTimer()
			its := make([]*ctxstream.Iter[int], k)
			for i, s := range srcs {
				its[i] = ctxstream.Lazy(ctx, s)
			}
			sum, err := drain(ctxstream.Merge(func(a, b int) bool { return a < b }, its...))
			if err != nil {
				b.Fatal(err)
			}
			sink = sum
		})
	}
}

// BenchmarkPaired runs anchor and ctxstream in alternating chunks of the same benchmark, so
// that load from other processes (the project's machine is shared) hits both alike, and
// reports ctxstream's time per item as a ratio to the anchor's ("x-anchor"; lower is better).
func BenchmarkPaired(b *testing.B) {
	paired := func(b *testing.B, anchor, ours func(n int) int) {
		chunk := 1 << 14 // items per stream; each chunk opens a new stream on both sides
		var ta, to time.Duration
		items := 0
		for done := 0; done < b.N; done += chunk {
			n := min(chunk, b.N-done)
			t0 := time.Now()
			sink += anchor(n)
			t1 := time.Now()
			sink += ours(n)
			to += time.Since(t1)
			ta += t1.Sub(t0)
			items += n
		}
		b.ReportMetric(float64(to)/float64(ta), "x-anchor")
		b.ReportMetric(float64(ta.Nanoseconds())/float64(items), "anchor-ns/item")
		b.ReportMetric(float64(to.Nanoseconds())/float64(items), "ours-ns/item")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must := func(sum int, err error) int {
		if err != nil {
			b.Fatal(err)
		}
		return sum
	}
	b.Run("lazy", func(b *testing.B) {
		paired(b,
			func(n int) int { return must(rawLoop(ctx, newSource(n, 1, 0))) },
			func(n int) int { return must(drain(ctxstream.Lazy(ctx, newSource(n, 1, 0)))) })
	})
	b.Run("lazy-all", func(b *testing.B) {
		paired(b,
			func(n int) int { return must(rawLoop(ctx, newSource(n, 1, 0))) },
			func(n int) int {
				it, sum := ctxstream.Lazy(ctx, newSource(n, 1, 0)), 0
				for v := range it.All() {
					sum += v
				}
				return must(sum, it.Err())
			})
	})
	b.Run("eager/recv=1us", func(b *testing.B) {
		paired(b,
			func(n int) int { return must(rawLoop(ctx, newSource(n, 1, recvSpin))) },
			func(n int) int { return must(drain(ctxstream.Eager(ctx, newSource(n, 1, recvSpin)))) })
	})
	b.Run("merge/streams=16", func(b *testing.B) {
		less := func(a, b int) bool { return a < b }
		paired(b,
			func(n int) int { return must(heapMergeSum(ctx, mergeSources(n, 16))) },
			func(n int) int {
				srcs := mergeSources(n, 16)
				its := make([]*ctxstream.Iter[int], len(srcs))
				for i, s := range srcs {
					its[i] = ctxstream.Lazy(ctx, s)
				}
				return must(drain(ctxstream.Merge(less, its...)))
			})
	})
}

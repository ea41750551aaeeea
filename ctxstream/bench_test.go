package ctxstream_test

import (
	"container/heap"
	"context"
	"io"
	"strconv"
	"testing"

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
func BenchmarkLazy(b *testing.B) {
	b.Run("impl=rawloop", func(b *testing.B) { benchPerItem(b, 0, nil) })
	b.Run("impl=ctxstream", func(b *testing.B) { benchPerItem(b, 0, lazy) })
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

package pool

import (
	"fmt"
	"math/bits"
	"sync"
	"testing"

	prompool "github.com/prometheus/prometheus/util/pool"
)

// The benchmarks put this pool beside what people use today, in one run:
//
//	syncpool  a bare bucketed sync.Pool of *[]byte: no counting at all, the floor
//	promutil  Prometheus util/pool (its Put boxes the slice: one allocation per op)
//	leaksafe  this pool, Track off, no MaxTotal
//	budget    this pool with MaxTotal
//	sampled   this pool with TrackEvery=1000, MaxTotal
//	track     this pool with Track (every lease remembers its stack)
//	track+budget
//
// Each op is Get(size), one append, Put. Besides wall time per op, each
// reports cpu-ns/op, the process CPU time per op (all threads): on a shared
// machine it is the steadier figure to compare.

const (
	benchMin    = 256
	benchMax    = 1 << 20
	benchFactor = 2
)

type getPutter interface {
	getPut(n int)
}

// floorPool is the floor: a bare sync.Pool per power-of-two bucket, no
// counting, and the cheapest bucket lookup there is (a bit length), so that
// no leaksafe ratio is flattered by a slow anchor.
type floorPool struct {
	sizes   []int
	buckets []sync.Pool
}

func newFloorPool() *floorPool {
	sizes := bucketSizes(benchMin, benchMax, benchFactor, maxBuckets)
	return &floorPool{sizes: sizes, buckets: make([]sync.Pool, len(sizes))}
}

// minShift is log2(benchMin): bucket i holds capacity benchMin<<i.
var minShift = bits.Len(benchMin) - 1

func (f *floorPool) getPut(n int) {
	i := max(bits.Len(uint(n-1))-minShift, 0) // smallest bucket >= n
	var b *[]byte
	if v := f.buckets[i].Get(); v != nil {
		b = v.(*[]byte)
	} else {
		s := make([]byte, 0, f.sizes[i])
		b = &s
	}
	*b = append(*b, 1)
	*b = (*b)[:0]
	j := bits.Len(uint(cap(*b))) - 1 - minShift // largest bucket <= cap
	f.buckets[j].Put(b)
}

type promPool struct{ p *prompool.Pool }

func (pp promPool) getPut(n int) {
	b := pp.p.Get(n).([]byte)
	b = append(b, 1)
	pp.p.Put(b[:0])
}

type leaksafePool struct{ p *Pool[byte] }

func (lp leaksafePool) getPut(n int) {
	b, err := lp.p.Get(n)
	if err != nil {
		panic(err)
	}
	*b = append(*b, 1)
	lp.p.Put(b)
}

func benchImpls(b *testing.B) []struct {
	name string
	p    getPutter
} {
	mk := func(o Options) getPutter {
		o.MinSize, o.MaxSize, o.Factor = benchMin, benchMax, benchFactor
		p, err := New[byte](o)
		if err != nil {
			b.Fatal(err)
		}
		return leaksafePool{p}
	}
	return []struct {
		name string
		p    getPutter
	}{
		{"syncpool", newFloorPool()},
		{"promutil", promPool{prompool.New(benchMin, benchMax, benchFactor, func(sz int) any { return make([]byte, 0, sz) })}},
		{"leaksafe", mk(Options{})},
		{"budget", mk(Options{MaxTotal: 1 << 40})},
		{"sampled", mk(Options{MaxTotal: 1 << 40, TrackEvery: 1000})},
		{"track", mk(Options{Track: true})},
		{"track+budget", mk(Options{Track: true, MaxTotal: 1 << 40})},
	}
}

func BenchmarkGetPut(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		for _, size := range []int{1 << 10, 64 << 10} {
			for _, impl := range benchImpls(b) {
				name := fmt.Sprintf("mode=%s/size=%dKiB/impl=%s", mode, size>>10, impl.name)
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					cpu0, ok := processCPU()
					if mode == "serial" {
						for b.Loop() {
							impl.p.getPut(size)
						}
					} else {
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								impl.p.getPut(size)
							}
						})
					}
					if cpu1, _ := processCPU(); ok {
						b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
					}
				})
			}
		}
	}
}

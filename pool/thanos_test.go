package pool

// The four things Thanos' pool.BucketedPool gets wrong, each reproduced as
// it happens there and shown not to happen here.

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// (a) BucketedPool.Put files a slice in the first bucket at least its size,
// so a slice that grew to ~20000 sits in the 64000 bucket and a later
// Get(60000) returns it: the likely cause of Thanos store panics #7206 and
// #6934. Here a returned slice goes to the largest bucket it fills.
func TestGetNeverReturnsLessCapacityThanAsked(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1000, MaxSize: 64000, Factor: 4}) // 1000 4000 16000 64000

	grown, _ := p.Get(16000)
	*grown = append((*grown)[:16000], 1) // append moves it to a bigger array
	require.Greater(t, cap(*grown), 16000)
	require.Less(t, cap(*grown), 64000)
	p.Put(grown)

	shrunk, _ := p.Get(60000)
	*shrunk = (*shrunk)[:0:100] // below MinSize
	p.Put(shrunk)

	offset, _ := p.Get(4000)
	*offset = (*offset)[1000:1000] // no longer starts where it was handed out
	p.Put(offset)

	foreign := make([]byte, 0, 20000)
	p.Put(&foreign)

	var held []*[]byte
	defer func() {
		for _, b := range held {
			p.Put(b)
		}
		err := p.Check() // reports the foreign Put, and nothing else
		require.ErrorIs(t, err, ErrBadPut)
		require.NotErrorIs(t, err, ErrLeak)
	}()
	for _, n := range []int{0, 999, 1000, 1001, 3999, 4000, 4001, 15999, 16000, 16001, 20000, 60000, 63999, 64000, 64001, 100000} {
		for range 3 { // hold them, so every pooled array is handed out in turn
			b, err := p.Get(n)
			require.NoError(t, err)
			require.GreaterOrEqual(t, cap(*b), n, "Get(%d)", n)
			held = append(held, b)
		}
	}
	require.Equal(t, int64(1), p.Stats().BadPuts, "the foreign slice is counted, not pooled")
}

// The other half of (a): a Put whose slice was replaced by a smaller one, or
// resliced, never makes a later Get return less than it asked for. A smaller
// array than the lease was handed is counted in Undersized and not pooled
// (the lease's own array is), and nothing of a lease above MaxSize is pooled,
// not even a bucket-sized window of it.
func TestPutOfASmallerSliceIsCountedAndNeverHandedOut(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1000, MaxSize: 64000, Factor: 4}) // 1000 4000 16000 64000
	var foreign []unsafe.Pointer                                             // arrays no later Get may return
	first := func(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b[:1])) }

	replaced, _ := p.Get(4000)
	smaller := make([]byte, 0, 2000) // fills the 1000 bucket
	*replaced = smaller
	p.Put(replaced)
	foreign = append(foreign, first(smaller))

	tiny, _ := p.Get(16000)
	*tiny = make([]byte, 0, 100) // fills no bucket
	foreign = append(foreign, first(*tiny))
	p.Put(tiny)

	offset, _ := p.Get(4000)
	*offset = (*offset)[3000:3000] // cap 1000, no longer where it was handed out
	p.Put(offset)

	emptied, _ := p.Get(4000)
	*emptied = nil
	p.Put(emptied)

	big, _ := p.Get(100000)
	window := (*big)[:0:64000]
	foreign = append(foreign, first(window))
	*big = window
	p.Put(big)

	capped, _ := p.Get(4000) // same array, capacity cut: the pool still has the whole array
	*capped = (*capped)[:0:10]
	p.Put(capped)

	st := p.Stats()
	require.Equal(t, int64(4), st.Undersized, "replaced, tiny, offset and emptied")
	require.Equal(t, int64(1), st.Discarded, "the lease above MaxSize")
	require.Zero(t, st.BadPuts)

	var held []*[]byte
	defer func() {
		for _, b := range held {
			p.Put(b)
		}
		require.NoError(t, p.Check())
	}()
	for _, n := range []int{0, 1, 999, 1000, 1001, 2000, 3999, 4000, 16000, 60000, 64000} {
		for range 3 { // hold them, so every pooled array is handed out in turn
			b, err := p.Get(n)
			require.NoError(t, err)
			require.GreaterOrEqual(t, cap(*b), n, "Get(%d)", n)
			for _, f := range foreign {
				require.NotEqual(t, f, first(*b), "Get(%d) returned an array the pool did not hand out at that size", n)
			}
			held = append(held, b)
		}
	}
}

// (b) BucketedPool checks the budget against n but charges the bucket: with
// a 200 KiB limit two 65 KiB Gets, each handed a 128 KiB slice, both succeed
// and 256 KiB is in use. Here the charge is the capacity handed out, and it
// is reserved with compare-and-swap before the Get returns.
func TestMaxTotalCountsTheCapacityHandedOut(t *testing.T) {
	p := newPool[byte](t, Options{Name: "chunks", MinSize: 1 << 10, MaxSize: 1 << 20, Factor: 2, MaxTotal: 200 << 10})
	a, err := p.Get(65 << 10)
	require.NoError(t, err)
	require.Equal(t, 128<<10, cap(*a))

	b, err := p.Get(65 << 10)
	require.Nil(t, b)
	require.ErrorIs(t, err, ErrExhausted)
	require.EqualError(t, err, `pool exhausted: pool "chunks": Get(66560) needs 131072 elements, 131072 of MaxTotal 204800 in use`)
	st := p.Stats()
	require.Equal(t, int64(128<<10), st.InUse)
	require.Equal(t, int64(1), st.Exhausted)

	p.Put(a) // Put releases the budget
	b, err = p.Get(65 << 10)
	require.NoError(t, err)
	p.Put(b)
	require.NoError(t, p.Check())
}

// The figure in an ErrExhausted error is what Stats calls InUse: the charge
// of leases still out, not the budget that free handles keep parked for
// their next Get.
func TestExhaustedErrorCountsOnlyLeasesStillOut(t *testing.T) {
	p := newPool[byte](t, Options{Name: "chunks", MinSize: 32, MaxSize: 64, Factor: 2, MaxTotal: 100})
	idle, err := p.Get(64)
	require.NoError(t, err)
	p.Put(idle) // its handle parks 64 of credit
	_, err = p.Get(101)
	require.ErrorIs(t, err, ErrExhausted)
	require.EqualError(t, err, `pool exhausted: pool "chunks": Get(101) needs 101 elements, 0 of MaxTotal 100 in use`)

	held, err := p.Get(64)
	require.NoError(t, err)
	small, err := p.Get(32)
	require.NoError(t, err)
	p.Put(small) // parks 32
	_, err = p.Get(101)
	require.EqualError(t, err, `pool exhausted: pool "chunks": Get(101) needs 101 elements, 64 of MaxTotal 100 in use`)
	require.Equal(t, int64(64), p.Stats().InUse)
	p.Put(held)
	require.NoError(t, p.Check())
}

func TestGetLargerThanMaxTotalFailsWithoutAllocating(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1, MaxSize: 8, Factor: 2, MaxTotal: 100})
	b, err := p.Get(1 << 30) // would be a 1 GiB allocation
	require.Nil(t, b)
	require.ErrorIs(t, err, ErrExhausted)
}

// TestInUseNeverExceedsMaxTotalUnderConcurrency races Gets and Puts of
// mixed sizes against a budget they keep running into. Each worker adds a
// lease's capacity to a shared counter after Get succeeds and subtracts it
// before Put, so the counter is a lower bound of what the pool has charged
// at that instant: it must never pass MaxTotal.
func TestInUseNeverExceedsMaxTotalUnderConcurrency(t *testing.T) {
	const maxTotal = 64 << 10
	p := newPool[byte](t, Options{MinSize: 1 << 10, MaxSize: 16 << 10, Factor: 2, MaxTotal: maxTotal})
	var held, peak atomic.Int64
	workers, iters := 8, 4000
	if raceEnabled {
		iters = 800
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var mine []*[]byte
			for i := range iters {
				n := 1<<10 + (i*7919+w*104729)%(20<<10) // some above MaxSize
				if b, err := p.Get(n); err == nil {
					now := held.Add(int64(cap(*b)))
					for {
						old := peak.Load()
						if now <= old || peak.CompareAndSwap(old, now) {
							break
						}
					}
					mine = append(mine, b)
				} else if !isExhausted(err) {
					panic(err)
				}
				// Let the other workers in while this one holds its leases: with one
				// P a worker would otherwise run its whole loop alone, and three
				// leases never fill the budget, so nothing would be contended.
				runtime.Gosched()
				if len(mine) == 3 || i%5 == 0 {
					for _, b := range mine {
						held.Add(-int64(cap(*b)))
						p.Put(b)
					}
					mine = mine[:0]
				}
			}
			for _, b := range mine {
				held.Add(-int64(cap(*b)))
				p.Put(b)
			}
		})
	}
	wg.Wait()
	st := p.Stats()
	require.LessOrEqual(t, peak.Load(), int64(maxTotal))
	require.Greater(t, st.Exhausted, int64(0), "the budget was never contended: the test proves nothing")
	require.Zero(t, st.InUse)
	require.Zero(t, st.Outstanding)
	require.Equal(t, st.Gets, st.Puts)

	// No budget was lost along the way: one lease can still take all of it.
	all, err := p.Get(maxTotal)
	require.NoError(t, err)
	p.Put(all)
	require.NoError(t, p.Check())
}

func isExhausted(err error) bool { return err != nil && errorIs(err, ErrExhausted) }

// Parked credit (the budget a free handle keeps for its next Get) must never
// make a Get fail while the budget is really free.
func TestBudgetParkedInFreeLeasesIsReclaimedBeforeRefusing(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1 << 10, MaxSize: 4 << 10, Factor: 2, MaxTotal: 4 << 10})
	var small []*[]byte
	for range 4 {
		b, err := p.Get(1 << 10)
		require.NoError(t, err)
		small = append(small, b)
	}
	for _, b := range small {
		p.Put(b) // each free handle keeps 1 KiB of credit
	}
	big, err := p.Get(4 << 10)
	require.NoError(t, err, "the whole budget is free")
	p.Put(big)
	require.NoError(t, p.Check())
}

// The other side of the budget: a Get it can hold is never refused, even
// while other goroutines cycle their leases through the credit that free
// handles park. Four workers each hold at most one small lease while one
// more keeps taking the rest of the budget in one large lease: every Get
// fits, so none may fail. (Before Put stopped parking credit while a Get
// was starved, one large Get in seven failed here under -race.)
func TestGetTheBudgetCanHoldIsNeverRefusedUnderChurn(t *testing.T) {
	const small, large, workers = 1 << 10, 32 << 10, 4
	p := newPool[byte](t, Options{MinSize: small, MaxSize: large, Factor: 2, MaxTotal: large + workers*small})
	iters := 20000
	if raceEnabled {
		iters = 4000
	}
	var done atomic.Int32
	errs := make(chan error, workers+1)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			defer done.Add(1)
			for range iters {
				b, err := p.Get(small)
				if err != nil {
					errs <- err
					return
				}
				p.Put(b)
			}
		})
	}
	largeGets := 0
	for done.Load() < workers {
		b, err := p.Get(large)
		if err != nil {
			errs <- err
			break
		}
		largeGets++
		p.Put(b)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err, "after %d large Gets", largeGets)
	}
	st := p.Stats()
	require.Zero(t, st.Exhausted)
	require.Equal(t, st.Gets, st.Puts)
	require.Equal(t, int64(workers*iters+largeGets), st.Gets)
}

// (c) BucketedPool un-charges a slice at its size at Put time. A slice that
// grew while leased un-charges more than it was charged, and the counter is
// clamped at zero, hiding the leases still out. Here each lease remembers
// its charge.
func TestGrownLeaseIsUnchargedByWhatItWasCharged(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1 << 10, MaxSize: 64 << 10, Factor: 2, MaxTotal: 1 << 20})
	a, _ := p.Get(1000)
	b, _ := p.Get(1000)
	*a = append(*a, make([]byte, 5000)...)
	require.Greater(t, cap(*a), 5000)

	p.Put(a)
	st := p.Stats()
	require.Equal(t, int64(1<<10), st.InUse, "b is still out; Thanos would report 0 here")
	require.Equal(t, int64(1), st.Outstanding)
	// Stats sums what each lease was charged, so it cannot see the budget
	// itself over-released: a Get of one element more than b leaves must be
	// refused, and one of exactly that must not be.
	rest := 1<<20 - 1<<10
	_, err := p.Get(rest + 1)
	require.ErrorIs(t, err, ErrExhausted, "a's Put released more than a was charged")
	fits, err := p.Get(rest)
	require.NoError(t, err)
	p.Put(fits)

	p.Put(b)
	require.Zero(t, p.Stats().InUse)
	all, err := p.Get(1 << 20) // and the budget is whole again
	require.NoError(t, err)
	p.Put(all)
	require.NoError(t, p.Check())
}

// (d) BucketedPool pools a slice every time it is Put, so a double Put hands
// one array to the next two Gets.
func TestDoublePutIsCountedAndNeverHandsOneArrayToTwoCallers(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprintf("track=%v", track), func(t *testing.T) {
			p := newPool[byte](t, Options{MinSize: 64, MaxSize: 64, Factor: 2, MaxTotal: 1 << 10, Track: track})
			getLine := thisLine() + 1
			a, _ := p.Get(64)
			firstPutLine := thisLine() + 1
			p.Put(a)
			secondPutLine := thisLine() + 1
			p.Put(a)

			st := p.Stats()
			require.Equal(t, int64(1), st.Puts)
			require.Equal(t, int64(1), st.BadPuts)
			require.Zero(t, st.InUse, "the budget was released once, not twice")

			x, _ := p.Get(64)
			y, _ := p.Get(64)
			require.NotSame(t, unsafe.SliceData((*x)[:1]), unsafe.SliceData((*y)[:1]), "two callers got one array")
			p.Put(x)
			p.Put(y)

			err := p.Check()
			require.ErrorIs(t, err, ErrBadPut)
			require.NotErrorIs(t, err, ErrLeak)
			require.ErrorContains(t, err, "1 Put of a lease already Put")
			require.ErrorContains(t, err, fmt.Sprintf("thanos_test.go:%d", secondPutLine))
			if track {
				require.ErrorContains(t, err, fmt.Sprintf("thanos_test.go:%d", getLine), "the Get of the lease")
				require.ErrorContains(t, err, fmt.Sprintf("thanos_test.go:%d", firstPutLine), "its first Put")
			} else {
				require.ErrorContains(t, err, "set Options.Track for the Get and the first Put")
			}
		})
	}
}

func TestConcurrentPutsOfOneLeaseEndItExactlyOnce(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprintf("track=%v", track), func(t *testing.T) {
			p := newPool[byte](t, Options{MinSize: 64, MaxSize: 64, Factor: 2, MaxTotal: 1 << 10, Track: track})
			for range 50 {
				a, _ := p.Get(64)
				start := make(chan struct{})
				var wg sync.WaitGroup
				for range 4 {
					wg.Go(func() {
						<-start
						p.Put(a)
					})
				}
				close(start)
				wg.Wait()
				x, _ := p.Get(64)
				y, _ := p.Get(64)
				require.NotSame(t, unsafe.SliceData((*x)[:1]), unsafe.SliceData((*y)[:1]), "two callers got one array")
				p.Put(x)
				p.Put(y)
			}
			st := p.Stats()
			require.Equal(t, int64(150), st.Puts)
			require.Equal(t, int64(150), st.BadPuts)
			require.Zero(t, st.InUse)
			require.Zero(t, st.Outstanding)
		})
	}
}

package pool

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newPool builds a pool for a test and fails the test if New refuses.
func newPool[T any](t testing.TB, o Options) *Pool[T] {
	t.Helper()
	if o.Name == "" {
		o.Name = t.Name()
	}
	p, err := New[T](o)
	require.NoError(t, err)
	return p
}

// recorder is a TestingT that keeps what VerifyNone reports.
type recorder struct {
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) String() string { return strings.Join(r.errs, "\n") }

// thisLine returns the line it is called from.
func thisLine() int {
	_, _, line, _ := runtime.Caller(1)
	return line
}

func TestNewRejectsInvalidOptionsWithAReason(t *testing.T) {
	valid := Options{Name: "x", MinSize: 1, MaxSize: 8, Factor: 2}
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"zero options", func(o *Options) { *o = Options{} }, "MinSize must be > 0"},
		{"negative MinSize", func(o *Options) { o.MinSize = -1 }, "MinSize must be > 0, got -1"},
		{"MaxSize below MinSize", func(o *Options) { o.MinSize, o.MaxSize = 16, 8 }, "MaxSize (8) must be >= MinSize (16)"},
		{"Factor 1", func(o *Options) { o.Factor = 1 }, "Factor must be a finite number > 1, got 1"},
		{"Factor below 1", func(o *Options) { o.Factor = 0.5 }, "Factor must be a finite number > 1"},
		{"Factor NaN", func(o *Options) { o.Factor = nan() }, "Factor must be a finite number > 1, got NaN"},
		{"negative MaxTotal", func(o *Options) { o.MaxTotal = -1 }, "MaxTotal must be >= 0"},
		{"negative TrackEvery", func(o *Options) { o.TrackEvery = -3 }, "TrackEvery must be >= 0"},
		{"too many buckets", func(o *Options) { o.MaxSize, o.Factor = 1<<30, 1.0001 }, "more than 255 buckets"},
		{"registry without name", func(o *Options) { o.Name = ""; o.Registerer = newRegistry() }, "Name is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := valid
			c.edit(&o)
			p, err := New[byte](o)
			require.Nil(t, p)
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.ErrorContains(t, err, c.want)
		})
	}
}

func nan() float64 { var zero float64; return zero / zero }

func TestBucketsEndExactlyAtMaxSize(t *testing.T) {
	cases := []struct {
		min, max int
		factor   float64
		want     []int
	}{
		{1, 1, 2, []int{1}},
		{1000, 64000, 4, []int{1000, 4000, 16000, 64000}},
		{1000, 50000, 4, []int{1000, 4000, 16000, 50000}},
		{1, 5, 1.1, []int{1, 2, 3, 4, 5}}, // a factor too small to move an integer still advances
	}
	for _, c := range cases {
		require.Equal(t, c.want, bucketSizes(c.min, c.max, c.factor, maxBuckets), "%+v", c)
	}
}

func TestGetReturnsEmptySliceWithCapacityOfItsBucket(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1000, MaxSize: 64000, Factor: 4})
	cases := []struct{ n, wantCap int }{
		{0, 1000}, {1, 1000}, {1000, 1000}, {1001, 4000}, {16000, 16000},
		{60000, 64000}, {64000, 64000}, {64001, 64001}, {1 << 20, 1 << 20},
	}
	for _, c := range cases {
		b, err := p.Get(c.n)
		require.NoError(t, err)
		require.Len(t, *b, 0)
		require.Equal(t, c.wantCap, cap(*b), "Get(%d)", c.n)
		p.Put(b)
	}
	require.NoError(t, p.Check())
}

func TestGetRejectsImpossibleSizes(t *testing.T) {
	p := newPool[int64](t, Options{Name: "chunks", MinSize: 1, MaxSize: 8, Factor: 2})
	for _, n := range []int{-1, math.MaxInt} {
		b, err := p.Get(n)
		require.Nil(t, b)
		require.ErrorIs(t, err, ErrInvalidSize)
		require.ErrorContains(t, err, fmt.Sprintf(`pool "chunks": Get(%d)`, n))
	}
	require.Equal(t, Stats{}, p.Stats())
}

func TestStatsCountEveryLease(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 8, MaxSize: 64, Factor: 2})
	a, _ := p.Get(8)
	b, _ := p.Get(20)
	big, _ := p.Get(100)
	require.Equal(t, Stats{Gets: 3, Outstanding: 3, InUse: 8 + 32 + 100}, p.Stats())
	p.Put(a)
	p.Put(big)
	require.Equal(t, Stats{Gets: 3, Puts: 2, Outstanding: 1, InUse: 32, Discarded: 1}, p.Stats())
	p.Put(b)
	p.Put(nil) // a no-op, not a bad Put
	require.Equal(t, Stats{Gets: 3, Puts: 3, Discarded: 1}, p.Stats())
	require.NoError(t, p.Check())
}

func TestPutOfAForeignPointerIsCountedAndNotPooled(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprintf("track=%v", track), func(t *testing.T) {
			p := newPool[byte](t, Options{MinSize: 8, MaxSize: 64, Factor: 2, Track: track})
			foreign := make([]byte, 0, 64)
			putForeignLine := thisLine() + 1
			p.Put(&foreign)
			other := newPool[byte](t, Options{MinSize: 8, MaxSize: 64, Factor: 2, Track: track})
			theirs, _ := other.Get(64)
			p.Put(theirs) // a lease of another pool is foreign here

			require.Equal(t, int64(2), p.Stats().BadPuts)
			b, _ := p.Get(64)
			require.NotSame(t, unsafe.SliceData(foreign[:1]), unsafe.SliceData((*b)[:1]), "a foreign array was pooled")
			require.NotSame(t, unsafe.SliceData((*theirs)[:1]), unsafe.SliceData((*b)[:1]), "another pool's array was pooled")
			p.Put(b)
			other.Put(theirs)
			require.NoError(t, other.Check())

			err := p.Check()
			require.ErrorIs(t, err, ErrBadPut)
			require.NotErrorIs(t, err, ErrLeak)
			require.ErrorContains(t, err, "2 bad Puts")
			require.ErrorContains(t, err, "1 Put of a pointer this pool did not lease")
			require.ErrorContains(t, err, fmt.Sprintf("pool_test.go:%d", putForeignLine), "the bad Put's stack is reported even without Track")
		})
	}
}

func TestGetAndPutDoNotAllocateWithoutTracking(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops Puts at random under -race")
	}
	for _, o := range []Options{
		{MinSize: 1024, MaxSize: 1 << 20, Factor: 2},
		{MinSize: 1024, MaxSize: 1 << 20, Factor: 2, MaxTotal: 1 << 30},
	} {
		p := newPool[byte](t, o)
		for _, n := range []int{1 << 10, 64 << 10} {
			getPut := func() {
				b, err := p.Get(n)
				if err != nil {
					panic(err)
				}
				*b = append(*b, 1)
				p.Put(b)
			}
			getPut() // warm the bucket
			require.Zero(t, testing.AllocsPerRun(1000, getPut), "MaxTotal=%d n=%d", o.MaxTotal, n)
		}
	}
}

// TestConcurrentLeasesNeverShareAnArray hammers one pool from many
// goroutines; each writes its own mark over its whole lease and checks it is
// intact before Put. Two holders of one array would overwrite each other's
// mark (and -race would flag the writes).
func TestConcurrentLeasesNeverShareAnArray(t *testing.T) {
	for _, o := range []Options{
		{MinSize: 16, MaxSize: 1024, Factor: 2},
		{MinSize: 16, MaxSize: 1024, Factor: 2, MaxTotal: 1 << 20},
		{MinSize: 16, MaxSize: 1024, Factor: 2, TrackEvery: 7},
		{MinSize: 16, MaxSize: 1024, Factor: 2, Track: true},
	} {
		t.Run(fmt.Sprintf("MaxTotal=%d/Track=%v/TrackEvery=%d", o.MaxTotal, o.Track, o.TrackEvery), func(t *testing.T) {
			p := newPool[uint32](t, o)
			const workers = 8
			iters := 3000
			if raceEnabled {
				iters = 500
			}
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					mark := uint32(w + 1)
					held := make([]*[]uint32, 0, 4)
					for i := range iters {
						n := (i*37 + w*11) % 1500 // some above MaxSize
						b, err := p.Get(n)
						if err != nil {
							errs <- err
							return
						}
						*b = (*b)[:n]
						for j := range *b {
							(*b)[j] = mark
						}
						held = append(held, b)
						if len(held) == cap(held) || i == iters-1 {
							for _, h := range held {
								for _, v := range *h {
									if v != mark {
										errs <- fmt.Errorf("worker %d found %d in its lease: two holders share an array", mark, v)
										return
									}
								}
								p.Put(h)
							}
							held = held[:0]
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			st := p.Stats()
			require.Equal(t, int64(workers*iters), st.Gets)
			require.Equal(t, st.Gets, st.Puts)
			require.Zero(t, st.Outstanding)
			require.Zero(t, st.InUse)
			require.Zero(t, st.BadPuts)
			require.NoError(t, p.Check())
		})
	}
}

func TestCheckIsNilForAnUnusedPool(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1, MaxSize: 1, Factor: 2})
	require.NoError(t, p.Check())
	VerifyNone(t, p)
	var nilChecker Checker
	VerifyNone(t, nilChecker) // nil checkers are skipped
}

// countingChecker counts the Check calls it passes on.
type countingChecker struct {
	c     Checker
	calls int
}

func (c *countingChecker) Check() error { c.calls++; return c.c.Check() }

// A nil *Pool or *Refs in a Checker is not a nil interface: VerifyNone
// cannot skip it, and it must say what is wrong rather than panic.
func TestVerifyNoneReportsANilPoolOrRefsInsteadOfPanicking(t *testing.T) {
	var nilPool *Pool[byte]
	var nilRefs *Refs
	for _, c := range []struct {
		checker Checker
		want    string
	}{
		{nilPool, "nil *Pool; build one with New"},
		{nilRefs, "nil *Refs"},
	} {
		err := c.checker.Check()
		require.ErrorIs(t, err, ErrInvalidOptions)
		require.ErrorContains(t, err, c.want)

		var rec recorder
		counted := &countingChecker{c: c.checker}
		VerifyNone(&rec, counted)
		require.Contains(t, rec.String(), c.want)
		require.Equal(t, 1, counted.calls, "nothing to wait for: reported at once, not after the grace period")
	}
}

func TestCheckCountsUntrackedLeasesAndSaysHowToFindThem(t *testing.T) {
	p := newPool[byte](t, Options{Name: "chunks", MinSize: 1024, MaxSize: 4096, Factor: 2})
	b1, _ := p.Get(10)
	b2, _ := p.Get(3000)
	err := p.Check()
	require.ErrorIs(t, err, ErrLeak)
	require.NotErrorIs(t, err, ErrBadPut)
	require.True(t, errors.Is(err, ErrLeak))
	require.ErrorContains(t, err, `pool "chunks": 2 leases outstanding (5120 elements in use)`)
	require.ErrorContains(t, err, "set Options.Track")
	p.Put(b1)
	p.Put(b2)
	require.NoError(t, p.Check())
}

func errorIs(err, target error) bool { return errors.Is(err, target) }

func TestBucketForFindsTheSmallestBucketThatFits(t *testing.T) {
	for _, o := range []Options{
		{MinSize: 1, MaxSize: 1000, Factor: 1.1},
		{MinSize: 1000, MaxSize: 64000, Factor: 4},
		{MinSize: 256, MaxSize: 1 << 20, Factor: 2},
		{MinSize: 3, MaxSize: 1e6, Factor: 1.5},
		{MinSize: 7, MaxSize: 7, Factor: 3},
	} {
		p := newPool[byte](t, o)
		for n := 0; n <= 2*o.MaxSize; n += 1 + n/64 {
			require.Equal(t, bucketAtLeast(p.sizes, n), p.bucketFor(n), "%+v n=%d", o, n)
		}
		require.Equal(t, len(p.sizes), p.bucketFor(p.maxElems))
	}
}

// Put's lookup relies on the record layout: one record per 64 bytes, the
// slice header (what Get hands out) at offset 0, whatever T is.
func TestRecordLayoutIsOneCacheLineWithTheSliceFirst(t *testing.T) {
	check := func(size, off uintptr) {
		require.Equal(t, uintptr(recordSize), size)
		require.Zero(t, off)
	}
	check(unsafe.Sizeof(record[byte]{}), unsafe.Offsetof(record[byte]{}.buf))
	check(unsafe.Sizeof(record[[64]uint64]{}), unsafe.Offsetof(record[[64]uint64]{}.buf))
	check(unsafe.Sizeof(record[struct{}]{}), unsafe.Offsetof(record[struct{}]{}.buf))
	check(unsafe.Sizeof(record[*int]{}), unsafe.Offsetof(record[*int]{}.buf))
}

// A Pool or Group that was not built by New or NewGroup is refused with an
// error, never a nil-pointer panic; Stats and Check of an unused zero Pool
// are simply empty.
func TestZeroPoolAndGroupAreRejectedNotPanicking(t *testing.T) {
	var p Pool[byte]
	for _, n := range []int{0, 1, 1 << 10} {
		b, err := p.Get(n)
		require.Nil(t, b)
		require.ErrorIs(t, err, ErrInvalidOptions, "Get(%d)", n)
		require.ErrorContains(t, err, "zero Pool; build one with New")
	}
	require.Equal(t, Stats{}, p.Stats())
	require.NoError(t, p.Check())
	VerifyNone(t, &p)

	var g Group[byte]
	b, err := g.Get(8)
	require.Nil(t, b)
	require.ErrorIs(t, err, ErrInvalidOptions)
	require.ErrorContains(t, err, "zero Group; build one with Pool.NewGroup")
	release, err := g.Retain()
	require.Nil(t, release)
	require.ErrorIs(t, err, ErrInvalidOptions)
	g.Release()
	require.Zero(t, g.Len())
}

// Put decides by address alone whether a pointer is one of its leases; a
// pointer into the middle of a lease's record is foreign, not a lease, and
// is never converted to a record and read.
func TestPutOfAPointerIntoALeaseRecordIsForeign(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 8, MaxSize: 64, Factor: 2})
	b, err := p.Get(65) // above MaxSize: the record keeps an odd charge, which read as a state word looks leased
	require.NoError(t, err)
	for off := uintptr(8); off < recordSize; off += 8 {
		p.Put((*[]byte)(unsafe.Add(unsafe.Pointer(b), off)))
	}
	st := p.Stats()
	require.Equal(t, int64(recordSize/8-1), st.BadPuts)
	require.Equal(t, int64(1), st.Outstanding, "the lease itself is untouched")
	require.Equal(t, int64(65), st.InUse)
	require.Equal(t, 65, cap(*b))
	p.Put(b)
	require.ErrorIs(t, p.Check(), ErrBadPut)
	require.NotErrorIs(t, p.Check(), ErrLeak)
}

package pool

import (
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// leakFrom leaks n leases of p, all from one line; it returns that line.
func leakFrom(p *Pool[byte], n int, keep *[]*[]byte) int {
	line := thisLine() + 2
	for range n {
		b, _ := p.Get(100)
		*keep = append(*keep, b)
	}
	return line
}

func leakOneFrom(p *Pool[byte], keep *[]*[]byte) int {
	line := thisLine() + 1
	b, _ := p.Get(100)
	*keep = append(*keep, b)
	return line
}

func TestCheckGroupsTrackedLeasesByStackMostFrequentFirst(t *testing.T) {
	p := newPool[byte](t, Options{Name: "chunks", MinSize: 128, MaxSize: 128, Factor: 2, Track: true})
	many := 10000
	if raceEnabled {
		many = 2000
	}
	var held []*[]byte
	rare := leakOneFrom(p, &held)
	frequent := leakFrom(p, many, &held)

	err := p.Check()
	require.ErrorIs(t, err, ErrLeak)
	msg := err.Error()
	require.Equal(t, 2, strings.Count(msg, "from Get at:"), "one entry per stack, not one per lease:\n%s", msg)
	head := fmt.Sprintf("%d leases (%d elements) from Get at:", many, many*128)
	require.Contains(t, msg, head)
	require.Contains(t, msg, "1 lease (128 elements) from Get at:")
	iFrequent := strings.Index(msg, fmt.Sprintf("track_test.go:%d", frequent))
	iRare := strings.Index(msg, fmt.Sprintf("track_test.go:%d", rare))
	require.True(t, iFrequent >= 0 && iRare >= 0, msg)
	require.Less(t, iFrequent, iRare, "most frequent first")
	require.Contains(t, msg[strings.Index(msg, head):], "pool.leakFrom", "the stack names the function that leaked")

	for _, b := range held {
		p.Put(b)
	}
	require.NoError(t, p.Check())
}

func TestSampledTrackingKeepsStacksForSomeLeases(t *testing.T) {
	p := newPool[byte](t, Options{Name: "canary", MinSize: 128, MaxSize: 128, Factor: 2, TrackEvery: 10})
	var held []*[]byte
	line := leakFrom(p, 1000, &held)
	msg := p.Check().Error()

	m := regexp.MustCompile(`(\d+) leases? \(\d+ elements\) from Get at:`).FindStringSubmatch(msg)
	require.NotNil(t, m, msg)
	sampled, _ := strconv.Atoi(m[1])
	require.Contains(t, msg, fmt.Sprintf("track_test.go:%d", line))
	// 1000 new handles, each first lease tracked with probability 1/10: the
	// count is Binomial(1000, 0.1), mean 100, sd 9.5; outside [40, 200] has
	// probability below 1e-9.
	require.GreaterOrEqual(t, sampled, 40)
	require.LessOrEqual(t, sampled, 200)
	require.Contains(t, msg, fmt.Sprintf("%d leases more without a stack (TrackEvery tracks 1 lease in 10)", 1000-sampled))

	for _, b := range held {
		p.Put(b)
	}
	st := p.Stats()
	require.Equal(t, int64(1000), st.Puts)
	require.Zero(t, st.BadPuts)
	require.NoError(t, p.Check())
}

// A busy handle, leased over and over, is tracked 1 lease in TrackEvery too,
// not only on its first lease.
func TestSampledTrackingTracksOneLeaseInNOfABusyHandle(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 128, MaxSize: 128, Factor: 2, TrackEvery: 10})
	const leases = 10000
	tracked := 0
	for range leases {
		b, err := p.Get(100)
		require.NoError(t, err)
		if p.lookup(b) == nil { // not &record.buf: a tracker's box
			tracked++
		}
		p.Put(b)
	}
	// Binomial(10000, 0.1): mean 1000, sd 30; outside [700, 1300] has
	// probability below 1e-20.
	require.GreaterOrEqual(t, tracked, 700)
	require.LessOrEqual(t, tracked, 1300)
	st := p.Stats()
	require.Equal(t, int64(leases), st.Puts)
	require.Zero(t, st.BadPuts)
	require.NoError(t, p.Check())
}

// dropLease takes a lease and loses it: nothing references it afterwards.
func dropLease(p *Pool[byte]) int {
	line := thisLine() + 1
	b, err := p.Get(100)
	if err != nil {
		panic(err)
	}
	(*b) = append(*b, 1)
	return line
}

// collectUntil runs the garbage collector until cond holds, giving the
// cleanup goroutine a chance to run in between.
func collectUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		runtime.GC()
		runtime.Gosched()
	}
	t.Fatal("condition not reached after 1000 garbage collections")
}

func TestTrackedLeaseDroppedWithoutPutIsReportedAndItsBudgetReleased(t *testing.T) {
	p := newPool[byte](t, Options{Name: "chunks", MinSize: 128, MaxSize: 128, Factor: 2, MaxTotal: 128, Track: true})
	line := dropLease(p)
	_, err := p.Get(1)
	require.ErrorIs(t, err, ErrExhausted, "the dropped lease still holds the budget until it is collected")

	collectUntil(t, func() bool { return p.Stats().Leaked == 1 })
	st := p.Stats()
	require.Zero(t, st.Outstanding)
	require.Zero(t, st.InUse)
	b, err := p.Get(1)
	require.NoError(t, err, "the collected lease's budget was released")
	p.Put(b)

	err = p.Check()
	require.ErrorIs(t, err, ErrLeak)
	require.ErrorContains(t, err, "1 lease garbage-collected without Put")
	require.ErrorContains(t, err, "1 lease (128 elements) garbage-collected without Put, from Get at:")
	require.ErrorContains(t, err, fmt.Sprintf("track_test.go:%d", line))
}

// Puts is exported as the counter puts_total, derived from the records and
// Leaked. A lease garbage-collected while Stats walks the records must not
// make one snapshot count it as Put and the next not (Prometheus reads a
// counter that goes down as a reset), whether it is collected before the
// walk reaches its record or after. The finalizer is run by hand at those
// two instants: the garbage collector cannot be made to.
func TestPutsNeverGoDownWhileLeasesAreCollected(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 8, MaxSize: 8, Factor: 2, Track: true})
	for range 3 {
		b, err := p.Get(8)
		require.NoError(t, err)
		p.Put(b)
	}
	early, _ := p.Get(8)
	late, _ := p.Get(8)
	last := p.Stats()
	require.Equal(t, int64(3), last.Puts)

	collectAt := func(box *[]byte, when func(r *record[byte], first bool) bool) {
		first, done := true, false
		mid := p.stats(func(r *record[byte]) {
			if !done && when(r, first) {
				p.boxFinalized(box)
				done = true
			}
			first = false
		})
		require.True(t, done)
		now := p.Stats()
		require.LessOrEqual(t, last.Puts, mid.Puts, "puts went down")
		require.LessOrEqual(t, mid.Puts, now.Puts, "puts went down")
		require.Equal(t, int64(3), now.Puts, "a collected lease is not a Put")
		require.Equal(t, now.Gets, now.Puts+now.Outstanding+now.Leaked)
		last = now
	}
	collectAt(early, func(_ *record[byte], first bool) bool { return first }) // before its record is read
	require.Equal(t, int64(1), last.Leaked)
	collectAt(late, func(r *record[byte], _ bool) bool { return r == nil }) // after
	require.Equal(t, int64(2), last.Leaked)
	require.Zero(t, last.Outstanding)
}

func TestCollectedHandlesReturnTheirRecordsAndBudget(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 128, MaxSize: 1024, Factor: 2, MaxTotal: 1 << 20})
	var held []*[]byte
	for i := range 200 {
		b, err := p.Get(128 << (i % 4))
		require.NoError(t, err)
		held = append(held, b)
	}
	for _, b := range held {
		p.Put(b) // 200 free handles in the buckets, each keeping its credit
	}
	held = nil
	slabsBefore := len(*p.slabs.Load())
	// sync.Pool drops its contents over two collections; the handles' cleanups
	// then give back the records and their parked budget.
	collectUntil(t, func() bool {
		p.growMu.Lock()
		defer p.growMu.Unlock()
		return len(p.spare) == 200
	})
	require.Equal(t, int64(1<<20), p.avail.Load(), "every parked credit came back")
	for range 200 {
		b, err := p.Get(128)
		require.NoError(t, err)
		held = append(held, b)
	}
	require.Len(t, *p.slabs.Load(), slabsBefore, "new leases reuse the spare records")
	for _, b := range held {
		p.Put(b)
	}
	require.NoError(t, p.Check())
}

// Pooled arrays are ordinary garbage, as with sync.Pool: once the leases
// are back and the garbage collector has run, the heap shrinks to what it
// was (measured, not assumed: records are the only thing the pool keeps).
func TestPooledMemoryIsReturnedToTheHeapAfterGC(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 64 << 10, MaxSize: 64 << 10, Factor: 2, MaxTotal: 1 << 30})
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	var held []*[]byte
	for range 1024 { // 64 MiB
		b, err := p.Get(64 << 10)
		require.NoError(t, err)
		held = append(held, b)
	}
	for _, b := range held {
		p.Put(b)
	}
	held = nil
	require.Greater(t, heap(), before+32<<20, "the arrays are pooled after Put")
	collectUntil(t, func() bool { return heap() < before+4<<20 })
	require.NoError(t, p.Check())
}

// With TrackEvery, a record's untracked lease and its next, tracked lease are
// different pointers (&record.buf and a box), so a second Put of the first
// can be told from the second's Put: it is a bad Put, and the tracked lease
// stays out, its array with its holder alone.
func TestStalePutOfAnUntrackedLeaseCannotEndTheSampledLeaseAfterIt(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 64, MaxSize: 64, Factor: 2, TrackEvery: 2})
	var stale, sampled *[]byte
	for range 10000 {
		u, err := p.Get(64)
		require.NoError(t, err)
		rec := p.lookup(u) // nil when u itself is tracked
		p.Put(u)
		if rec == nil {
			continue
		}
		b, err := p.Get(64)
		require.NoError(t, err)
		if p.lookup(b) == nil && rec.state.Load()&leasedBit != 0 {
			stale, sampled = u, b // b is tracked, on the record u was
			break
		}
		p.Put(b)
	}
	require.NotNil(t, sampled, "never got a tracked lease on the record of an untracked one")
	before := p.Stats()

	p.Put(stale)
	st := p.Stats()
	require.Equal(t, before.BadPuts+1, st.BadPuts)
	require.Equal(t, int64(1), st.Outstanding, "the sampled lease is still out")
	require.Equal(t, before.Puts, st.Puts)
	other, err := p.Get(64)
	require.NoError(t, err)
	require.NotSame(t, unsafe.SliceData((*sampled)[:1]), unsafe.SliceData((*other)[:1]), "the sampled lease's array went to a second caller")
	p.Put(other)

	p.Put(sampled)
	st = p.Stats()
	require.Zero(t, st.Outstanding)
	require.Equal(t, before.BadPuts+1, st.BadPuts, "the sampled lease's own Put is good")
	err = p.Check()
	require.ErrorIs(t, err, ErrBadPut)
	require.NotErrorIs(t, err, ErrLeak)
	require.ErrorContains(t, err, "1 Put of a lease already Put")
}

package pool

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ErrExhausted is wrapped by the error Get returns when a lease would take
// the pool past Options.MaxTotal.
var ErrExhausted = errors.New("pool exhausted")

// ErrInvalidSize is wrapped by the error Get returns for a negative size or
// one too large to allocate.
var ErrInvalidSize = errors.New("invalid lease size")

var errNilPool = fmt.Errorf("%w: nil *Pool; build one with New", ErrInvalidOptions)

// Pool is a bucketed pool of slices that counts every lease. Get and Put
// have the shape of Thanos' pool.Pool[T], so a Pool drops into a fork.
//
// A Pool must be created with New. It is safe for concurrent use.
type Pool[T any] struct {
	name       string
	sizes      []int       // bucket capacities, ascending; the last is MaxSize
	firstOfLen [65]uint8   // firstOfLen[bits.Len(n)]: the first bucket that can fit such an n
	buckets    []sync.Pool // buckets[i] holds *handle[T] whose array has cap sizes[i]
	bare       sync.Pool   // *handle[T] without an array (records waiting for one)
	maxTotal   int64
	track      bool
	trackEvery uint32
	maxElems   int // largest n Get accepts: beyond it make would panic
	maxSize    int // sizes[len(sizes)-1]
	// plain: no MaxTotal and no tracking, so Get and Put can take the
	// short path that touches only the lease's own record.
	plain bool

	// starving counts Gets that avail could not pay and that are taking
	// back parked credit; while it is not 0, Put does not keep credit. It
	// sits with the read-only fields: Put reads it, and only a Get about to
	// be refused writes it.
	starving atomic.Int32

	// avail is the part of MaxTotal not reserved by any record. A record
	// reserves its lease's charge and, once free, keeps it as parked credit
	// so the next Get on the same handle touches no shared memory.
	avail atomic.Int64

	slabs    atomic.Pointer[[]*slab[T]] // copy-on-write, newest first; for Stats and reclaim
	nRanges  atomic.Int32               // slabs published in ranges
	ranges   [maxSlabs]slabRange        // address ranges of the slabs, oldest first; Put's lookup
	growMu   sync.Mutex                 // guards slab growth and spare
	spare    []*record[T]               // records whose handle was garbage-collected
	lastUsed int                        // records handed out of the newest slab

	// Rare events: a shared counter each is fine.
	exhausted  atomic.Int64
	badPuts    atomic.Int64
	discarded  atomic.Int64
	undersized atomic.Int64
	leaked     atomic.Int64
	statsPuts  atomic.Int64 // the Puts Stats last returned: see stats

	events  events      // bad Puts and collected leases, grouped by stack
	tracker *tracker[T] // nil unless Track or TrackEvery
}

// record is the charge record of one lease. Records live in slabs that the
// pool never frees, so Put can tell whether a *[]T is one of its own by an
// address-range test alone, without reading memory it did not allocate.
// Untracked leases hand out &record.buf. A record is padded to a cache line
// so two cores cycling their own leases never share one, and everything a
// Get or Put must change atomically lives in one word: a Get is one atomic
// store (a compare-and-swap with MaxTotal), a Put one compare-and-swap.
type record[T any] struct {
	buf    []T        // must stay first: Get returns &buf
	handle *handle[T] // while leased: what Put hands back to the buckets
	state  atomic.Uint64
	big    atomic.Int64 // the charge of a lease above MaxSize (bucket bigBucket)
	// Four words then two 8-byte counters: the counters are 8-aligned and
	// the record is recordSize bytes on 32- and 64-bit platforms alike.
	_ [recordSize - 4*ptrSize - 16]byte
}

// The state word of a record:
//
//	bit 0      leased
//	bit 1      parked credit (free records of a MaxTotal pool): the budget
//	           of bucket idx stays reserved for the next Get on this handle
//	bits 2-9   idx: the bucket of the lease (or of the parked credit);
//	           bigBucket for a lease above MaxSize, charged rec.big
//	bit 10     tracked: the lease was handed out as a tracker's box, not
//	           as &record.buf, so only the box's Put may end it
//	bits 11-63 leases handed out by this record, ever (wraps after 2^53,
//	           which Prometheus reads as a counter reset)
const (
	leasedBit  = 1
	creditBit  = 2
	idxShift   = 2
	idxMask    = 0xff << idxShift
	trackedBit = 1 << 10
	countShift = 11
	countOne   = 1 << countShift
	lowMask    = countOne - 1
	bigBucket  = 0xff

	recordSize    = 64
	firstSlabSize = 64
	ptrSize       = unsafe.Sizeof(uintptr(0))
)

func stateIdx(s uint64) int { return int(s&idxMask) >> idxShift }

// chargeOf returns what the lease (or parked credit) in state s is charged.
func (p *Pool[T]) chargeOf(rec *record[T], s uint64) int64 {
	if i := stateIdx(s); i != bigBucket {
		return int64(p.sizes[i])
	}
	return rec.big.Load()
}

// slab is a block of records; recs never changes after the slab is built.
type slab[T any] struct {
	recs []record[T]
}

// slabRange is where a slab's records are: [lo, lo+size).
type slabRange struct {
	lo, size atomic.Uintptr
}

// maxSlabs bounds the slab table. Slabs double in size from firstSlabSize
// records, so this many can hold more records than memory can.
const maxSlabs = 48

// handle is what the buckets hold. Handles are ordinary garbage: when
// sync.Pool drops one, a cleanup returns its record (and parked credit) to
// the pool, so pooled memory shrinks after GC exactly as with sync.Pool.
type handle[T any] struct {
	rec    *record[T]
	buf    []T // the array this handle carries; cap == sizes[bucket]
	bucket int
	// sampleIn counts down the leases of this handle until the next one
	// TrackEvery tracks. Only the handle's current owner touches it.
	sampleIn int
}

// New validates o and returns an empty pool. Invalid options return an error
// that names the field; registering metrics can fail if another collector
// already uses the same pool name on o.Registerer.
func New[T any](o Options) (*Pool[T], error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	sizes := bucketSizes(o.MinSize, o.MaxSize, o.Factor, maxBuckets)
	p := &Pool[T]{
		name:       o.Name,
		sizes:      sizes,
		buckets:    make([]sync.Pool, len(sizes)),
		maxTotal:   o.MaxTotal,
		track:      o.Track,
		trackEvery: uint32(min(o.TrackEvery, math32)),
	}
	p.avail.Store(o.MaxTotal)
	p.maxSize = sizes[len(sizes)-1]
	p.plain = o.MaxTotal == 0 && !o.Track && o.TrackEvery == 0
	for l := range p.firstOfLen {
		least := 0 // the smallest n with bit length l
		if l > 0 {
			least = 1 << (l - 1)
		}
		p.firstOfLen[l] = uint8(bucketAtLeast(sizes, least))
	}
	if elem := unsafe.Sizeof(*new(T)); elem > 0 {
		p.maxElems = int(min(maxAlloc, math.MaxInt) / uint64(elem))
	} else {
		p.maxElems = int(^uint(0) >> 2)
	}
	if o.Track || o.TrackEvery > 0 {
		p.tracker = newTracker(p)
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(newPoolMetrics(o.Name, p.Stats)); err != nil {
			return nil, fmt.Errorf("pool %q: registering metrics: %w", o.Name, err)
		}
	}
	return p, nil
}

const (
	math32   = 1<<31 - 1
	maxAlloc = 1 << 47 // a conservative bound under the runtime's own limit
)

// Get returns a slice with len 0 and cap >= n. Every successful Get must be
// paired with exactly one Put of the returned pointer. With MaxTotal set, a
// Get that would pass it returns an error wrapping ErrExhausted and nil.
//
// The capacity handed out is the bucket size for n (n itself above MaxSize);
// that capacity is what InUse and MaxTotal count.
//
// A negative n, or one make would refuse, is an error wrapping
// ErrInvalidSize. Without MaxTotal nothing else bounds n: like make, a Get
// of more memory than the machine has crashes the process. When n comes
// from data (a chunk length read from an index), set MaxTotal: a Get whose
// charge exceeds it is refused before anything is allocated.
func (p *Pool[T]) Get(n int) (*[]T, error) {
	// The short path is acquire and get for the common case, kept in one
	// small frame: each call and spilled register costs a visible share of
	// a lease that the floor serves in about 12 ns.
	if p.plain && n >= 0 && n <= p.maxSize {
		i := p.bucketFor(n)
		if v := p.buckets[i].Get(); v != nil {
			h := v.(*handle[T])
			h.rec.leaseUncharged(uint64(i)<<idxShift | leasedBit)
			return handOut(h), nil
		}
	}
	return p.get(n, 1)
}

func (p *Pool[T]) get(n int, skip int) (*[]T, error) {
	h, tracked, err := p.acquire(n)
	if err != nil {
		return nil, err
	}
	if tracked {
		return p.tracker.lease(h, skip+1), nil
	}
	return handOut(h), nil
}

// handOut hands out h's array as an untracked lease: &record.buf.
func handOut[T any](h *handle[T]) *[]T {
	rec := h.rec
	rec.handle = h
	rec.buf = h.buf
	return &rec.buf
}

// leaseUncharged leases a free record of a pool without MaxTotal (so it
// holds no credit); lease is the low bits of the leased state. Only the
// goroutine holding the record's handle calls it.
func (rec *record[T]) leaseUncharged(lease uint64) {
	s := rec.state.Load()
	rec.state.Store(s&^lowMask + countOne | lease)
}

// sample reports whether this lease of h is one TrackEvery tracks. Gaps
// between tracked leases are geometric, so every lease — the first of a new
// handle as much as the thousandth of a busy one — is tracked with
// probability 1/TrackEvery, and the hot path is one decrement of a field
// only the handle's owner touches.
func (p *Pool[T]) sample(h *handle[T]) bool {
	if h.sampleIn > 1 {
		h.sampleIn--
		return false
	}
	first := h.sampleIn == 0 // a new handle: draw its first gap
	q := 1 - 1/float64(p.trackEvery)
	h.sampleIn = 1 + int(math.Log(1-rand.Float64())/math.Log(q))
	if q == 0 {
		h.sampleIn = 1 // TrackEvery 1: every lease
	}
	if first {
		return p.sample(h)
	}
	return true
}

// acquire finds a handle with an array of the right capacity and charges
// its record; the record is leased when acquire returns, and tracked says
// whether the lease must be handed out by the tracker. That is decided here,
// so the state word says it from the instant the record is leased: a stale
// Put of the record's previous, untracked lease can then never end it.
func (p *Pool[T]) acquire(n int) (h *handle[T], tracked bool, err error) {
	if n < 0 || n > p.maxElems || p.sizes == nil {
		if p.sizes == nil {
			return nil, false, fmt.Errorf("%w: zero Pool; build one with New", ErrInvalidOptions)
		}
		return nil, false, fmt.Errorf("%w: pool %q: Get(%d)", ErrInvalidSize, p.name, n)
	}
	i := p.bucketFor(n)
	if i < len(p.sizes) {
		if v := p.buckets[i].Get(); v != nil {
			h = v.(*handle[T])
		}
	} else {
		i = bigBucket
	}
	if h == nil {
		h = p.bareHandle()
	}
	rec := h.rec
	if i == bigBucket {
		rec.big.Store(int64(n))
	}
	tracked = p.tracker != nil && (p.track || p.sample(h))
	lease := uint64(i)<<idxShift | leasedBit
	if tracked {
		lease |= trackedBit
	}
	if p.maxTotal == 0 {
		rec.leaseUncharged(lease)
	} else if err := p.chargeBudget(rec, i, n, lease); err != nil {
		p.park(h)
		return nil, false, err
	}
	if h.buf == nil {
		c := n
		if i != bigBucket {
			c = p.sizes[i]
		}
		h.buf = make([]T, 0, c)
		h.bucket = i
	}
	return h, tracked, nil
}

// bucketFor returns the smallest bucket whose capacity is >= n, or
// len(p.sizes) when n is above MaxSize. It starts from the first bucket that
// can hold any n of the same bit length, so it scans about log_Factor(2)
// buckets, not all of them.
func (p *Pool[T]) bucketFor(n int) int {
	i := int(p.firstOfLen[bits.Len(uint(n))])
	for i < len(p.sizes) && p.sizes[i] < n {
		i++
	}
	return i
}

// bucketAtLeast returns the smallest i with sizes[i] >= n, or len(sizes).
func bucketAtLeast(sizes []int, n int) int {
	lo, hi := 0, len(sizes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if sizes[m] < n {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// bucketFilledBy returns the largest bucket whose capacity is <= c, or -1.
func (p *Pool[T]) bucketFilledBy(c int) int {
	lo, hi := 0, len(p.sizes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.sizes[m] <= c {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo - 1
}

// chargeBudget moves the lease's charge from the record's parked credit and,
// for the rest, from avail, with compare-and-swap so the sum of charges never
// passes MaxTotal, not even for an instant.
// lease is the low bits of the leased state (see record).
func (p *Pool[T]) chargeBudget(rec *record[T], i int, n int, lease uint64) error {
	charge := int64(n)
	if i != bigBucket {
		charge = int64(p.sizes[i])
	}
	if p.tryCharge(rec, charge, lease) || (charge <= p.maxTotal && p.chargeStarved(rec, charge, lease)) {
		return nil
	}
	p.exhausted.Add(1)
	// Not MaxTotal-avail: that also counts the credit free handles park,
	// and would tell a user hunting a leak that idle buffers are in use.
	// Summing the records is a walk, but only a refused Get pays for it.
	inUse := p.Stats().InUse
	return fmt.Errorf("%w: pool %q: Get(%d) needs %d elements, %d of MaxTotal %d in use",
		ErrExhausted, p.name, n, charge, inUse, p.maxTotal)
}

// tryCharge leases rec (state low bits lease) at charge, paid from the
// record's own parked credit and, for the rest, from avail. It fails,
// leaving rec free, when avail cannot pay the rest.
func (p *Pool[T]) tryCharge(rec *record[T], charge int64, lease uint64) bool {
	for {
		s := rec.state.Load()
		leased := s&^lowMask + countOne | lease
		var credit int64
		if s&creditBit != 0 {
			credit = p.chargeOf(rec, s)
		}
		if credit >= charge {
			if rec.state.CompareAndSwap(s, leased) {
				if credit > charge {
					p.avail.Add(credit - charge)
				}
				return true
			}
			continue
		}
		need := charge - credit
		if !p.take(need) {
			return false
		}
		if rec.state.CompareAndSwap(s, leased) {
			return true
		}
		p.avail.Add(need)
	}
}

// maxReclaims bounds the walks one starved Get makes over the records.
const maxReclaims = 3

// chargeStarved is tryCharge for a Get that avail could not pay: it takes
// back the credit parked in free records and tries again. While it runs,
// Puts give their charge back to avail instead of parking it (see release):
// otherwise other goroutines cycling their leases would park again, behind
// the walk, the credit it just took back, and a Get the budget can hold
// would be refused (under -race, where sync.Pool drops handles with their
// credit, one large Get in seven was). The walk repeats, a few times at
// most, while it still finds credit: a Put's credit can be on its way back
// to avail while the walk passes.
func (p *Pool[T]) chargeStarved(rec *record[T], charge int64, lease uint64) bool {
	p.starving.Add(1)
	defer p.starving.Add(-1)
	for range maxReclaims {
		got := p.reclaim()
		if p.tryCharge(rec, charge, lease) {
			return true
		}
		if got == 0 {
			return false
		}
	}
	return false
}

func (p *Pool[T]) take(need int64) bool {
	for {
		a := p.avail.Load()
		if a < need {
			return false
		}
		if p.avail.CompareAndSwap(a, a-need) {
			return true
		}
	}
}

// reclaim returns every free record's parked credit to avail, and how much
// that was. It walks all records, so it runs only when a Get would otherwise
// fail.
func (p *Pool[T]) reclaim() int64 {
	var got int64
	for _, sl := range p.allSlabs() {
		for i := range sl.recs {
			got += p.dropCredit(&sl.recs[i])
		}
	}
	return got
}

// dropCredit returns rec's parked credit, if any, to avail, and how much.
func (p *Pool[T]) dropCredit(rec *record[T]) int64 {
	for {
		s := rec.state.Load()
		if s&creditBit == 0 || s&leasedBit != 0 {
			return 0
		}
		if rec.state.CompareAndSwap(s, s&^creditBit) {
			c := p.chargeOf(rec, s)
			p.avail.Add(c)
			return c
		}
	}
}

// park returns an unused handle after a failed Get.
func (p *Pool[T]) park(h *handle[T]) {
	if h.buf != nil && h.bucket != bigBucket {
		p.buckets[h.bucket].Put(h)
	} else {
		h.buf = nil
		p.bare.Put(h)
	}
}

// bareHandle returns a handle without an array: a pooled one, or a new one
// with a record from the spare list or a slab.
func (p *Pool[T]) bareHandle() *handle[T] {
	if v := p.bare.Get(); v != nil {
		return v.(*handle[T])
	}
	h := &handle[T]{rec: p.newRecord()}
	runtime.AddCleanup(h, p.handleCollected, h.rec)
	return h
}

// handleCollected runs after the garbage collector freed a pooled handle.
// A leased record keeps its handle reachable, so rec is free here.
func (p *Pool[T]) handleCollected(rec *record[T]) {
	if rec.state.Load()&leasedBit != 0 {
		return // unreachable in correct use; never recycle a leased record
	}
	p.dropCredit(rec)
	rec.buf = nil
	p.growMu.Lock()
	p.spare = append(p.spare, rec)
	p.growMu.Unlock()
}

func (p *Pool[T]) newRecord() *record[T] {
	p.growMu.Lock()
	defer p.growMu.Unlock()
	if n := len(p.spare); n > 0 {
		rec := p.spare[n-1]
		p.spare = p.spare[:n-1]
		return rec
	}
	slabs := p.allSlabs()
	if len(slabs) > 0 && p.lastUsed < len(slabs[0].recs) {
		p.lastUsed++
		return &slabs[0].recs[p.lastUsed-1]
	}
	n := firstSlabSize
	if len(slabs) > 0 {
		n = 2 * len(slabs[0].recs)
	}
	recs := make([]record[T], n)
	s := &slab[T]{recs: recs}
	i := p.nRanges.Load()
	p.ranges[i].lo.Store(uintptr(unsafe.Pointer(unsafe.SliceData(recs))))
	p.ranges[i].size.Store(uintptr(n) * recordSize)
	p.nRanges.Store(i + 1)
	grown := make([]*slab[T], len(slabs)+1)
	copy(grown[1:], slabs)
	grown[0] = s // newest (largest) first: most records live there
	p.slabs.Store(&grown)
	p.lastUsed = 1
	return &s.recs[0]
}

// allSlabs returns the slabs, newest first; none for a zero Pool.
func (p *Pool[T]) allSlabs() []*slab[T] {
	if s := p.slabs.Load(); s != nil {
		return *s
	}
	return nil
}

// lookup returns the record whose buf b points to, or nil if b is not an
// untracked lease of this pool. It compares addresses only, and converts b
// only once it is known to point at a record of one of the pool's own slabs:
// b may be a pointer the pool never saw, and the pool never reads through
// such a pointer.
func (p *Pool[T]) lookup(b *[]T) *record[T] {
	a := uintptr(unsafe.Pointer(b))
	for i := p.nRanges.Load() - 1; i >= 0; i-- { // newest, largest first
		r := &p.ranges[i]
		if off := a - r.lo.Load(); off < r.size.Load() {
			if off%recordSize != 0 {
				return nil
			}
			return (*record[T])(unsafe.Pointer(b))
		}
	}
	return nil
}

// Put returns a lease. A nil pointer is a no-op. A pointer that is not an
// outstanding lease of this pool — put twice, or never leased here — is
// counted in Stats.BadPuts with the stack of the Put, and nothing is pooled,
// so one array is never handed to two callers (see the package doc for the
// one case only Track catches).
//
// Put pools the array the lease was handed, whatever *b says now; if *b
// points to a larger array (it grew with append), that array is filed in
// the largest bucket it fills instead. If *b points to a smaller array than
// the lease was handed (or into it, past its start), that slice is not
// pooled and the Put is counted in Stats.Undersized. Put does not clear the
// slice.
func (p *Pool[T]) Put(b *[]T) {
	if b == nil {
		return
	}
	if rec := p.lookup(b); rec != nil {
		if p.plain {
			// release's short path (see there): an untracked lease of a
			// pool without MaxTotal, put with the array it was handed.
			s := rec.state.Load()
			if s&(leasedBit|trackedBit) == leasedBit && rec.state.CompareAndSwap(s, s&^leasedBit) {
				h := rec.handle
				rec.handle = nil
				if h == nil || !p.refile(h, b) {
					p.returnArray(rec, h, b)
				}
				return
			}
		}
		p.release(rec, b, 0, 1)
		return
	}
	if p.tracker != nil && p.tracker.put(p, b) {
		return
	}
	p.badPut(badForeign, 1)
}

// release ends the lease held by rec and returns its array to the buckets;
// b is what the holder passed to Put, and tracked is trackedBit when b is a
// tracker's box, else 0. Only the state word is read before the
// compare-and-swap that ends the lease, so of two racing Puts of one lease
// the loser touches nothing the winner writes. skip counts the pool frames
// from release's caller up to the user's Put.
func (p *Pool[T]) release(rec *record[T], b *[]T, tracked uint64, skip int) {
	var s, free uint64
	for {
		s = rec.state.Load()
		if s&leasedBit == 0 || s&trackedBit != tracked {
			// Not leased, or leased as a box while b is &rec.buf: b is a
			// stale pointer from an earlier, untracked lease of rec (with
			// TrackEvery), put a second time. Ending the box's lease would
			// hand its array to a second caller.
			p.badPut(badDouble, skip+1)
			return
		}
		free = s &^ (leasedBit | trackedBit)
		if p.maxTotal > 0 && stateIdx(s) != bigBucket {
			free |= creditBit // keep the budget for the next Get of this handle
		}
		if rec.state.CompareAndSwap(s, free) {
			break
		}
	}
	switch {
	case p.maxTotal == 0:
	case free&creditBit == 0:
		p.avail.Add(p.chargeOf(rec, s))
	case p.starving.Load() != 0:
		// A Get is taking back parked credit and its walk may have passed
		// rec already: give the credit back to avail, or it would be refused
		// a budget that is free. Reading starving after parking means no
		// credit escapes a walk that began after starving was raised.
		p.dropCredit(rec)
	}
	h := rec.handle
	rec.handle = nil
	p.returnArray(rec, h, b)
}

// refile returns h to its bucket if b still holds the array h was handed,
// the common case, and reports whether it did.
func (p *Pool[T]) refile(h *handle[T], b *[]T) bool {
	if h.bucket == bigBucket || cap(*b) == 0 || unsafe.SliceData(*b) != unsafe.SliceData(h.buf) {
		return false
	}
	p.buckets[h.bucket].Put(h)
	return true
}

// returnArray returns to the buckets the array of the lease rec just
// ended, which was handed out with h; b is what the holder passed to Put.
func (p *Pool[T]) returnArray(rec *record[T], h *handle[T], b *[]T) {
	if h == nil {
		return // a Put racing the Get of a reused record: the holder broke the contract
	}
	if p.refile(h, b) {
		return
	}
	keep, bucket, undersized := p.chooseArray(h.buf, h.bucket, *b)
	if cap(keep) == 0 || unsafe.SliceData(keep) != unsafe.SliceData(rec.buf) {
		rec.buf = nil // do not keep alive an array the buckets do not hold
	}
	h.buf, h.bucket = keep, bucket
	p.park(h)
	if undersized {
		p.undersized.Add(1)
	}
	if keep == nil {
		p.discarded.Add(1)
	}
}

// chooseArray decides what a lease returns to the buckets when cur is not
// simply the array it was handed (orig, from bucket). Only a slice that grew
// past orig (append moved it) replaces it, filed in the largest bucket it
// fills: it is the array the holder kept, and it serves every Get of that
// bucket. Anything else goes back as orig, which the pool handed out and
// the lease is done with. A smaller array in cur — put in its place, or a
// slice that no longer starts where orig did — is not pooled but counted as
// undersized: it is not what the pool handed out (someone may still hold
// it), and filing it would trade a full array for a smaller one. nil means
// nothing is pooled: a lease above MaxSize never is, not even a window of
// it, which would pin the whole array.
func (p *Pool[T]) chooseArray(orig []T, bucket int, cur []T) (keep []T, kbucket int, undersized bool) {
	c := cap(cur)
	undersized = c < cap(orig) && unsafe.SliceData(cur) != unsafe.SliceData(orig)
	if c > cap(orig) && c <= p.sizes[len(p.sizes)-1] {
		if j := p.bucketFilledBy(c); j >= 0 {
			return cur[:0:p.sizes[j]], j, false
		}
	}
	if orig == nil || bucket == bigBucket {
		return nil, 0, undersized
	}
	return orig[:0], bucket, undersized
}

// Stats is a snapshot of a pool's counters.
type Stats struct {
	Gets        int64 // successful Gets
	Puts        int64 // Puts that ended a lease
	Outstanding int64 // leases handed out and not yet Put
	InUse       int64 // elements (capacity) charged to outstanding leases
	MaxTotal    int64 // the budget; 0 = unlimited
	Exhausted   int64 // Gets refused with ErrExhausted
	BadPuts     int64 // double or foreign Puts, counted and ignored
	Discarded   int64 // Puts whose array was not pooled (leases above MaxSize)
	Leaked      int64 // tracked leases garbage-collected without Put; their charge was released
	// Undersized counts Puts whose slice had less capacity than the lease
	// was handed and was not that array any more (a smaller one put in its
	// place, or resliced to start later). That slice was not pooled; the
	// lease's own array was (unless above MaxSize), so no Get ever receives
	// less than it asked for.
	Undersized int64
}

// Stats sums the per-lease counters. Each field is exact when the pool is
// quiet; under concurrent traffic the records are read one after another,
// so the snapshot may mix instants. Gets and Puts, exported as Prometheus
// counters, never go down from one call to the next (until a record wraps;
// see the package doc); Puts may lag by the leases being garbage-collected
// at that instant. InUse can never really exceed MaxTotal (the budget is
// reserved before a lease is handed out); the snapshot is clamped to it so
// a racing read never shows an impossible figure.
func (p *Pool[T]) Stats() Stats { return p.stats(nil) }

// stats is Stats. visit, if not nil, runs before each record is read and
// once more, with nil, after the last: tests use it to end leases in the
// middle of the walk.
func (p *Pool[T]) stats(visit func(*record[T])) Stats {
	st := Stats{
		MaxTotal:   p.maxTotal,
		Exhausted:  p.exhausted.Load(),
		BadPuts:    p.badPuts.Load(),
		Discarded:  p.discarded.Load(),
		Undersized: p.undersized.Load(),
	}
	for _, sl := range p.allSlabs() {
		for i := range sl.recs {
			r := &sl.recs[i]
			if visit != nil {
				visit(r)
			}
			s := r.state.Load()
			st.Gets += int64(s >> countShift)
			if s&leasedBit != 0 {
				st.Outstanding++
				st.InUse += p.chargeOf(r, s)
			}
		}
	}
	if visit != nil {
		visit(nil)
	}
	// Leaked is read after the walk, and a finalizer counts a leak before
	// it ends the lease (see boxFinalized): so every collected lease the
	// walk saw end is in Leaked, and Puts is never more than were made.
	// Read before the walk, a lease collected during it was an end the walk
	// saw but not a leak, Puts came out one too many, and the next scrape
	// showed puts_total going down. It can still come out short (a leak
	// counted whose end the walk missed), so it is held at the last value
	// returned: a counter must not go down.
	st.Leaked = p.leaked.Load()
	st.Puts = p.monotonicPuts(st.Gets - st.Outstanding - st.Leaked)
	if p.maxTotal > 0 && st.InUse > p.maxTotal {
		st.InUse = p.maxTotal
	}
	return st
}

// monotonicPuts returns puts, or the Puts an earlier Stats returned if that
// was more. A drop of 2^52 or more is a record's count wrapping, not a race:
// that one is passed on, as the package doc says.
func (p *Pool[T]) monotonicPuts(puts int64) int64 {
	for {
		last := p.statsPuts.Load()
		if puts < last && last-puts < 1<<52 {
			return last
		}
		if puts == last || p.statsPuts.CompareAndSwap(last, puts) {
			return puts
		}
	}
}

// Name returns Options.Name.
func (p *Pool[T]) Name() string { return p.name }

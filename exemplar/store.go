package exemplar

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// Store is a bounded, evicting, in-memory exemplar store. It implements
// tsdb.ExemplarStorage and accepts, refuses and returns exactly what
// Prometheus' tsdb.CircularExemplarStorage does for the same calls, except for
// the stale re-adds described in the package documentation. All methods are
// safe for concurrent use.
type Store struct {
	// Fields every add touches come first, so a store costs few cache lines
	// per add when a process runs hundreds of them (one per tenant).
	mu         sync.RWMutex
	lim        limits
	bytes      int64        // heap held: ring, series, symbols, age heap and the Store itself
	seed       maphash.Seed // of the series index hash: see seriesHash
	seriesGen  uint64       // bumped whenever a series is removed (ids may move)
	compactGen uint64       // bumped whenever compaction moves exemplars (positions change)
	newestTs   int64        // largest timestamp accepted; MaxAge is relative to it
	haveNewest bool
	closed     bool
	budget     *Budget
	ring       ring
	series     seriesTable
	c          counters
	w          work // scratch for writers (mu held)

	age        ageHeap
	ageBytes   int64
	symBytes   int64
	registerer prometheus.Registerer
	collector  prometheus.Collector
	// Published for the Budget's victim choice, which must not take locks.
	pubOldest atomic.Int64
	pubBytes  atomic.Int64
	pubLive   atomic.Int64
	pubFixed  atomic.Int64 // fixedBytes: what the store holds even when empty
	syms      symbolTable  // names first; its 512-byte hash table is only read past 8 names
}

var _ tsdb.ExemplarStorage = (*Store)(nil)

// Eviction and refusal reasons, as reported by Stats and metrics.
const (
	reasonCount = iota
	reasonBytes
	reasonAge
	reasonPerSeries
	reasonBudget
	numReasons
)

var reasonNames = [numReasons]string{"count", "bytes", "age", "per_series", "budget"}

const (
	refusedStaleFull = iota
	refusedStaleAge
	refusedStaleSeries
	numRefusals
)

var refusalNames = [numRefusals]string{"stale_full", "stale_age", "stale_series"}

type counters struct {
	appended   uint64
	outOfOrder uint64
	evicted    [numReasons]uint64
	refused    [numRefusals]uint64
}

// work holds scratch buffers so the hot paths do not allocate, and the
// insertion point judge found for an out-of-order exemplar, so insert need
// not walk the series again (valid while no series and no slot moved).
type work struct {
	enc, stored []byte

	hint        uint32
	hintOK      bool
	hintSeries  uint64 // seriesGen when found
	hintCompact uint64 // compactGen when found
}

var workPool = sync.Pool{New: func() any { return new(work) }}

// trim drops scratch a huge input grew (a megabyte label value is encoded
// before it is refused), so bad input leaves no unaccounted memory behind.
func (w *work) trim() {
	const keep = 2 * maxEncodedLabels
	if cap(w.enc) > keep {
		w.enc = nil
	}
	if cap(w.stored) > keep {
		w.stored = nil
	}
}

var storeBytes = allocSize(int64(unsafe.Sizeof(Store{})), true)

// New returns an empty store. It allocates nothing for MaxExemplars up front.
// The caller owns the store; Close releases its memory, its share of a Budget
// and its metrics.
func New(o Options) (*Store, error) {
	lim, err := o.limits()
	if err != nil {
		return nil, err
	}
	s := &Store{lim: lim, bytes: storeBytes, seed: maphash.MakeSeed(), budget: o.Budget}
	if s.budget != nil {
		s.publish()
		if err := s.budget.join(s); err != nil {
			return nil, err
		}
	}
	if o.Registerer != nil {
		c := newStoreCollector(s)
		if err := o.Registerer.Register(c); err != nil {
			if s.budget != nil {
				s.budget.leave(s)
			}
			return nil, fmt.Errorf("exemplar: registering metrics: %w", err)
		}
		s.registerer, s.collector = o.Registerer, c
	}
	return s, nil
}

// AddExemplar stores e for the series l. Like Prometheus it returns nil for a
// duplicate of the series' newest exemplar (and stores nothing), and
// storage.ErrOutOfOrderExemplar, storage.ErrExemplarLabelLength or
// storage.ErrExemplarsDisabled (after Close or Resize(0)) for the same input.
// It copies every label it keeps. It evicts, oldest first, whatever the limits
// require before it returns.
func (s *Store) AddExemplar(l labels.Labels, e exemplar.Exemplar) error {
	seriesErr := checkSeriesLabels(l)
	var buf [keyBuffer]byte
	key := newSeriesKey(l, buf[:0])
	var hash uint64
	if seriesErr == nil {
		hash = s.seriesHash(key)
	}
	for {
		s.mu.Lock()
		var victim *Store
		err := storage.ErrExemplarsDisabled
		if s.lim.maxExemplars != 0 {
			if err = seriesErr; err == nil {
				victim, err = s.add(l, key, hash, &e) // never panics on input: bad input is an error
			}
		}
		// Whatever add did before it returned (aged exemplars dropped, evictions
		// for a refused exemplar), other members of the budget must see it: a
		// stale publication sends them here to evict what is no longer held.
		s.publish()
		s.w.trim()
		s.mu.Unlock()
		if victim == nil {
			return err
		}
		// Another store holds the budget's oldest exemplar and is busy: evict from
		// it without holding our lock (two stores evicting from each other must
		// not deadlock), then judge e again against whatever changed meanwhile.
		victim.evictForBudget()
	}
}

// seriesHash keys the index, seeded per store so label sets crafted to
// collide in the index cannot be precomputed.
func (s *Store) seriesHash(k seriesKey) uint64 { return hashSeriesKey(s.seed, k) }

// keyBuffer is the stack space a series key takes before it needs the heap.
const keyBuffer = 256

// ValidateExemplar returns the error AddExemplar would return for the same
// input now, or storage.ErrDuplicateExemplar where AddExemplar would store
// nothing and return nil — exactly as Prometheus does. It changes nothing.
func (s *Store) ValidateExemplar(l labels.Labels, e exemplar.Exemplar) error {
	seriesErr := checkSeriesLabels(l)
	var buf [keyBuffer]byte
	key := newSeriesKey(l, buf[:0])
	var hash uint64
	if seriesErr == nil {
		hash = s.seriesHash(key)
	}
	w := workPool.Get().(*work)
	defer workPool.Put(w)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.lim.maxExemplars == 0 {
		return storage.ErrExemplarsDisabled
	}
	if seriesErr != nil {
		return seriesErr
	}
	enc, newNames, err := encodeLabels(w.enc[:0], e.Labels, &s.syms)
	w.enc = enc
	if err != nil {
		return err
	}
	_, err = s.judge(w, s.lookup(hash, key), l, &e, enc, newNames, false)
	return err
}

// add runs with s.mu held. A non-nil victim asks the caller to evict from that
// store without holding s.mu and to call add again.
func (s *Store) add(l labels.Labels, key seriesKey, hash uint64, e *exemplar.Exemplar) (victim *Store, err error) {
	w := &s.w
	enc, newNames, err := encodeLabels(w.enc[:0], e.Labels, &s.syms)
	w.enc = enc
	if err != nil {
		return nil, err
	}
	id, found := s.series.find(hash, key)
	var ser *series
	if found {
		ser = s.series.at(id)
		if s.appendInOrder(key, hash, id, ser, e, enc, newNames) {
			return nil, nil
		}
	}
	noop, err := s.judge(w, ser, l, e, enc, newNames, true)
	if err == storage.ErrDuplicateExemplar || noop {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}

	// ser stays valid while no series is removed (removal keeps the table
	// dense by moving another series into the hole); serGen tells.
	serGen := s.seriesGen
	if !s.haveNewest || e.Ts > s.newestTs {
		s.newestTs, s.haveNewest = e.Ts, true
		if s.aging() {
			s.evictAged()
			s.syncBytes() // the byte limits below must see what aging freed
		}
	}
	if newNames > 0 {
		s.symBytes += internExemplarLabelNames(e.Labels, &s.syms)
		enc, _, _ = encodeLabels(w.enc[:0], e.Labels, &s.syms)
		w.enc = enc
		s.syncBytes()
	}
	if s.seriesGen != serGen {
		id, found = s.series.find(hash, key)
	}
	// A series at MaxPerSeries makes room by dropping its own oldest.
	if found && s.lim.maxPerSeries > 0 {
		gen := s.seriesGen
		for cur := s.series.at(id); int64(cur.count) >= s.lim.maxPerSeries && s.seriesGen == gen; {
			s.removeExemplar(cur.oldest, reasonPerSeries)
		}
	}
	for s.ring.live >= s.lim.maxExemplars {
		s.removeExemplar(s.ring.head, reasonCount)
	}
	slots := 1 + contSlotsFor(len(enc))
	var reserved int64
	if s.lim.maxBytes > 0 || s.budget != nil {
		// The byte limits must see what those removals freed (a series'
		// labels, a page): judged by the count from before, they evict another
		// series' exemplar for room that is already there.
		s.syncBytes()
		a := addition{l: l, key: key, hash: hash, id: id, found: found, slots: slots, labelCost: -1, gen: serGen}
		if s.lim.maxBytes > 0 {
			if err := s.makeRoom(&a); err != nil {
				return nil, err
			}
		}
		if s.budget != nil {
			var victim *Store
			if reserved, victim, err = s.reserveBudget(&a); victim != nil || err != nil {
				return victim, err
			}
		}
	}
	if s.seriesGen != serGen {
		id, found = s.series.find(hash, key)
		ser = nil
		if found {
			ser = s.series.at(id)
		}
	}
	if !found {
		id = s.series.add(l, hash)
		ser = s.series.at(id)
	}
	s.insert(w, id, ser, e, enc, slots)
	if s.ring.holes > s.ring.live/4+pageSlots {
		s.compact()
	}
	s.c.appended++
	s.syncBytes()
	if reserved != 0 {
		s.budget.used.Add(-reserved)
	}
	s.publish()
	return nil, nil
}

// lookup returns the series with key k, or nil.
func (s *Store) lookup(hash uint64, k seriesKey) *series {
	if id, ok := s.series.find(hash, k); ok {
		return s.series.at(id)
	}
	return nil
}

// appendInOrder is add's fast path for the common case — an existing series,
// an exemplar newer than its newest and so neither a duplicate nor out of
// order, labels that fit inline, only the count limit set — with the same
// outcome as the general path (the differential and model tests run both).
// It reports whether it handled e.
func (s *Store) appendInOrder(key seriesKey, hash uint64, id uint32, ser *series, e *exemplar.Exemplar, enc []byte, newNames int) bool {
	if newNames > 0 || len(enc) > inlineLabelBytes || s.lim.maxAgeMs > 0 || s.lim.maxPerSeries > 0 || s.lim.maxBytes > 0 || s.budget != nil {
		return false
	}
	r := &s.ring
	newest := r.at(ser.newest)
	// Equals needs the labels only when neither has a timestamp and the
	// values are equal; leave that to the general path.
	if e.Ts <= newest.ts || !(e.HasTs || newest.hasTs() || e.Value != newest.value) {
		return false
	}
	if r.live >= s.lim.maxExemplars {
		if e.Ts < r.at(r.head).ts {
			return false // a stale re-add: the general path refuses and counts it
		}
		if r.at(r.head).seriesID() == id && ser.count == 1 {
			return false // the series would go with its only exemplar
		}
		gen := s.seriesGen
		s.removeExemplar(r.head, reasonCount)
		if s.seriesGen != gen {
			// Another series went and the table moved one into its id: maybe ours.
			id, _ = s.series.find(hash, key)
			ser = s.series.at(id)
		}
	}
	pos := r.reserve(1)
	sl := r.at(pos)
	sl.set(e.Ts, e.Value, id, e.HasTs)
	sl.setInline(enc)
	r.live++
	ser.count++
	sl.prev, sl.next = ser.newest, pos
	r.at(ser.newest).next = pos
	ser.newest = pos
	if !s.haveNewest || e.Ts > s.newestTs {
		s.newestTs, s.haveNewest = e.Ts, true
	}
	s.c.appended++
	s.syncBytes()
	return true
}

// addition is an exemplar on its way in, between judging and inserting.
type addition struct {
	l         labels.Labels
	key       seriesKey
	hash      uint64
	id        uint32 // its series, if found
	found     bool
	slots     int    // slots it takes in the ring
	labelCost int64  // bytes a copy of its series labels takes; -1 until needed
	gen       uint64 // seriesGen when id was looked up
}

// refresh looks the series up again if evictions removed series since
// (ids move when the table is kept dense).
func (s *Store) refresh(a *addition) {
	if s.seriesGen != a.gen {
		a.id, a.found = s.series.find(a.hash, a.key)
		a.gen = s.seriesGen
	}
}

// need is the bytes storing a would add now.
func (s *Store) need(a *addition) int64 {
	s.refresh(a)
	c := s.ring.growCost(a.slots)
	if !a.found {
		if a.labelCost < 0 {
			a.labelCost = seriesLabelCost(a.l)
		}
		c += s.series.addCost(a.labelCost) + s.heapGrowCost()
	}
	return c
}

// makeRoom evicts, oldest first, until a fits in MaxBytes. Memory that holds
// no exemplar (the spare page, holes) goes before any exemplar does, so a
// series replacing its own oldest (MaxPerSeries) never costs another series
// an exemplar.
func (s *Store) makeRoom(a *addition) error {
	for {
		n := s.need(a)
		if s.bytes+n <= s.lim.maxBytes {
			return nil
		}
		switch {
		case s.ring.dropSpare():
		case s.ring.compactionHelps(a.slots):
			s.compact()
		case s.ring.live == 0 && s.ring.holdsPages():
			// Emptied, the ring still holds the page its head stopped in; judge's
			// minimalFootprint counts none, and must be right: everything has been
			// evicted for this exemplar.
			s.ring.releaseAll()
		case s.ring.live == 0:
			return fmt.Errorf("%w: needs %d bytes, MaxBytes is %d", ErrExemplarTooLarge, n, s.lim.maxBytes)
		default:
			s.removeExemplar(s.ring.head, reasonBytes)
		}
		s.syncBytes()
	}
}

// reserveBudget takes the bytes a needs from the shared budget, evicting the
// oldest exemplar above the floor across its stores until they are free. A
// non-nil victim is a store whose lock was busy: the caller evicts from it
// without holding ours and tries the add again.
func (s *Store) reserveBudget(a *addition) (reserved int64, victim *Store, err error) {
	b := s.budget
	for {
		n := s.need(a)
		if n == 0 || b.tryReserve(n) {
			return n, nil, nil
		}
		v := b.victim(s)
		switch {
		case v == nil:
			return 0, nil, fmt.Errorf("%w: needs %d bytes, the shared budget has %d of %d free and nothing above its floor to evict",
				ErrExemplarTooLarge, n, b.max-b.used.Load(), b.max)
		case v == s:
			switch {
			case s.ring.dropSpare():
			case s.ring.live == 0:
				s.ring.releaseAll() // victim picks an empty self only for pages it holds
			case s.ring.compactionHelps(a.slots):
				s.compact()
			default:
				s.removeExemplar(s.ring.head, reasonBudget)
			}
			s.syncBytes()
		case v.mu.TryLock():
			v.evictForBudgetLocked()
			v.mu.Unlock()
		default:
			s.syncBytes()
			s.publish()
			return 0, v, nil
		}
	}
}

// judge decides what adding e would do, changing nothing but counters (and
// those only when appended). It mirrors Prometheus' validateExemplar and the
// out-of-order duplicate check of its AddExemplar, then applies the refusals
// this store adds.
func (s *Store) judge(w *work, ser *series, l labels.Labels, e *exemplar.Exemplar, enc []byte, newNames int, appended bool) (noop bool, err error) {
	r := &s.ring
	w.hintOK = false
	found := ser != nil
	if !found {
		if err := checkNewSeriesLabels(l); err != nil {
			return false, err
		}
	} else {
		newest := r.at(ser.newest)
		if s.equalsStored(w, newest, ser.newest, e, enc) {
			return false, storage.ErrDuplicateExemplar
		}
		// Prometheus orders exemplars with equal timestamps by value, then by
		// label hash, so duplicates are found without a scan.
		if (e.Ts < newest.ts && e.Ts <= newest.ts-s.lim.oooWindowMs) ||
			(e.Ts == newest.ts && e.Value < newest.value) ||
			(e.Ts == newest.ts && e.Value == newest.value && e.Labels.Hash() < s.storedLabelsHash(w, ser.newest)) {
			if appended {
				s.c.outOfOrder++
			}
			return false, storage.ErrOutOfOrderExemplar
		}
		if e.Ts < newest.ts && e.Ts >= r.at(ser.oldest).ts {
			at, pos, _ := s.insertAfter(ser, e.Ts)
			w.hint, w.hintOK, w.hintSeries, w.hintCompact = pos, true, s.seriesGen, s.compactGen
			if at.ts == e.Ts {
				// Prometheus treats an out-of-order exemplar with a timestamp already
				// held as a duplicate without comparing more.
				return true, nil
			}
		}
	}
	if s.lim.maxAgeMs > 0 && s.haveNewest && e.Ts < s.ageCutoff() {
		return false, s.refuse(refusedStaleAge, appended)
	}
	// A series at MaxPerSeries makes room by dropping its own oldest, which
	// keeps the store within MaxExemplars; the byte limits may still need more
	// than those slots, so the checks below apply to it too: nothing is
	// dropped for an exemplar that is then refused.
	freed := 0
	if found && s.lim.maxPerSeries > 0 && int64(ser.count) >= s.lim.maxPerSeries {
		if e.Ts < r.at(ser.oldest).ts {
			return false, s.refuse(refusedStaleSeries, appended)
		}
		freed = s.slotsOfOldest(ser, int64(ser.count)-s.lim.maxPerSeries+1)
	}
	switch {
	case r.live == 0:
	case freed == 0 && r.live >= s.lim.maxExemplars:
		if e.Ts < r.at(r.head).ts {
			return false, s.refuse(refusedStaleFull, appended)
		}
	case s.lim.maxBytes > 0 || s.budget != nil:
		if victimTs, full := s.nextVictimTs(found, l, e, len(enc), newNames, freed); full && e.Ts < victimTs {
			return false, s.refuse(refusedStaleFull, appended)
		}
	}
	if s.lim.maxBytes > 0 || s.budget != nil {
		// Refuse what cannot fit even alone before evicting anything for it: the
		// store's own limit, and what the budget could give it with every other
		// member evicted down to its floor.
		min := s.minimalFootprint(l, e, len(enc), newNames)
		if s.lim.maxBytes > 0 && min > s.lim.maxBytes {
			return false, fmt.Errorf("%w: needs %d bytes with the store empty, MaxBytes is %d", ErrExemplarTooLarge, min, s.lim.maxBytes)
		}
		if s.budget != nil {
			if room := s.budget.room(s); min > room {
				return false, fmt.Errorf("%w: needs %d bytes with the store empty, the shared budget can give it at most %d", ErrExemplarTooLarge, min, room)
			}
		}
	}
	return false, nil
}

func (s *Store) refuse(reason int, appended bool) error {
	if appended {
		s.c.refused[reason]++
		s.c.outOfOrder++
	}
	return storage.ErrOutOfOrderExemplar
}

// slotsOfOldest is how many ring slots the n oldest exemplars of ser take.
func (s *Store) slotsOfOldest(ser *series, n int64) int {
	r := &s.ring
	k := 0
	for p := ser.oldest; n > 0; n-- {
		sl := r.at(p)
		k += int(sl.width())
		if sl.next == p {
			break
		}
		p = sl.next
	}
	return k
}

// nextVictimTs reports whether storing e needs an eviction and, if so, the
// timestamp of the exemplar that would go first. freed is the slots e's
// series gives up for it first (MaxPerSeries); a series that gives up its
// last exemplar is counted as kept, since it is added straight back.
func (s *Store) nextVictimTs(found bool, l labels.Labels, e *exemplar.Exemplar, encLen, newNames, freed int) (int64, bool) {
	r := &s.ring
	if freed == 0 && r.live >= s.lim.maxExemplars {
		return r.at(r.head).ts, true
	}
	if s.lim.maxBytes <= 0 && s.budget == nil {
		return 0, false
	}
	need := r.bestGrowCost(1+contSlotsFor(encLen), freed)
	if !found {
		need += s.series.addCost(seriesLabelCost(l)) + s.heapGrowCost()
	}
	if newNames > 0 {
		need += newSymbolsCost(e.Labels, &s.syms)
	}
	if s.lim.maxBytes > 0 {
		if s.bytes+need > s.lim.maxBytes {
			return r.at(r.head).ts, true
		}
	}
	if b := s.budget; b != nil && b.used.Load()+need > b.max {
		// Another tenant's timestamps say nothing about whether e is stale for
		// this one (its exemplars may lag by minutes): judge e against this
		// store's own oldest, and only when this store is what is full — it
		// gives up its own oldest, or holds more than its floor. Below its
		// floor the store is entitled to the room and takes it.
		switch v := b.victim(s); {
		case v == nil:
			return 0, false // nothing to evict: judge's room check refuses it
		case v == s, s.bytes > b.floor && v.pubLive.Load() > 0:
			return r.at(r.head).ts, true // judge calls this only with r.live > 0
		}
	}
	return 0, false
}

// minimalFootprint is what the store would hold with only e in it.
func (s *Store) minimalFootprint(l labels.Labels, e *exemplar.Exemplar, encLen, newNames int) int64 {
	slots := 1 + contSlotsFor(encLen)
	n := storeBytes + s.symBytes +
		int64((slots+pageSlots-1)/pageSlots)*pageBytes + pageTableBytes(4) +
		seriesPageBytes + seriesTableBytes(4) + indexBytes(minIndexSize) + seriesLabelCost(l)
	if newNames > 0 {
		n += newSymbolsCost(e.Labels, &s.syms)
	}
	if s.aging() {
		n += ageHeapBytes(16)
	}
	return n
}

func (s *Store) ageCutoff() int64 {
	if s.newestTs < math.MinInt64+s.lim.maxAgeMs {
		return math.MinInt64
	}
	return s.newestTs - s.lim.maxAgeMs
}

// equalsStored is exemplar.Exemplar.Equals against sl, the stored exemplar at pos.
func (s *Store) equalsStored(w *work, sl *slot, pos uint32, e *exemplar.Exemplar, enc []byte) bool {
	if (e.HasTs || sl.hasTs()) && e.Ts != sl.ts {
		return false
	}
	if e.Value != sl.value {
		return false
	}
	return bytes.Equal(s.ring.labelBytesOf(sl, pos, &w.stored), enc)
}

// storedLabelsHash is labels.Labels.Hash of the stored exemplar's labels. Only
// needed to order two exemplars with equal timestamp and value, so it may
// allocate.
func (s *Store) storedLabelsHash(w *work, pos uint32) uint64 {
	d := newLabelDecoder()
	ls, err := d.decode(s.ring.labelBytes(pos, &w.stored), &s.syms)
	if err != nil {
		panic(err) // a bug in this package, not bad input
	}
	return ls.Hash()
}

// insertAfter returns the newest exemplar of ser with a timestamp <= ts, or
// false if every exemplar of ser is newer.
func (s *Store) insertAfter(ser *series, ts int64) (*slot, uint32, bool) {
	r := &s.ring
	p := ser.newest
	if sl := r.at(p); sl.ts <= ts {
		return sl, p, true // in order: the common case
	}
	if r.at(ser.oldest).ts > ts {
		return nil, ser.oldest, false // before everything: no walk (reverse-ordered senders)
	}
	for {
		sl := r.at(p)
		if sl.ts <= ts {
			return sl, p, true
		}
		if sl.prev == p {
			return nil, ser.oldest, false
		}
		p = sl.prev
	}
}

// insert writes e at the ring's tail and links it into its series, which is
// kept sorted by timestamp (stable for equal timestamps, as in Prometheus).
func (s *Store) insert(w *work, id uint32, ser *series, e *exemplar.Exemplar, enc []byte, slots int) {
	r := &s.ring
	pos := r.reserve(slots)
	sl := r.at(pos)
	sl.set(e.Ts, e.Value, id, e.HasTs)
	r.writeLabels(sl, pos, enc)
	r.live++

	ser.count++
	if ser.count == 1 {
		sl.prev, sl.next = pos, pos
		ser.oldest, ser.newest = pos, pos
		if s.aging() {
			s.heapPush(id)
		}
		return
	}
	var a *slot
	var after uint32
	var ok bool
	if w.hintOK && w.hintSeries == s.seriesGen && w.hintCompact == s.compactGen && r.inRing(w.hint) && r.at(w.hint).seriesID() == id {
		// judge's insertion point survived the evictions: every exemplar after
		// it in the series is still newer than e.
		after, ok = w.hint, true
		a = r.at(after)
	} else {
		a, after, ok = s.insertAfter(ser, e.Ts)
	}
	if !ok {
		sl.prev, sl.next = pos, ser.oldest
		r.at(ser.oldest).prev = pos
		ser.oldest = pos
		if s.aging() {
			s.heapFix(id)
		}
		return
	}
	sl.prev = after
	if a.next == after {
		sl.next = pos
		ser.newest = pos
	} else {
		sl.next = a.next
		r.at(a.next).prev = pos
	}
	a.next = pos
}

// removeExemplar drops the live exemplar at pos and, with its last exemplar,
// its series.
func (s *Store) removeExemplar(pos uint32, reason int) {
	r := &s.ring
	sl := r.at(pos)
	id := sl.seriesID()
	ser := s.series.at(id)
	prev, next := sl.prev, sl.next
	hasPrev, hasNext := prev != pos, next != pos
	switch {
	case hasPrev && hasNext:
		r.at(prev).next = next
		r.at(next).prev = prev
	case hasPrev:
		r.at(prev).next = prev
		ser.newest = prev
	case hasNext:
		r.at(next).prev = next
		ser.oldest = next
	}
	ser.count--
	sl.setSeries(deadSeries)
	r.live--
	width := sl.width()
	if pos == r.head {
		r.head += width
		for r.head != r.tail {
			h := r.at(r.head)
			if h.seriesID() != deadSeries {
				break
			}
			w := h.width()
			r.holes -= int64(w)
			r.head += w
		}
		r.releaseFront()
	} else {
		switch {
		case r.holes == 0:
			r.holeFrom = pos
		case !r.inRing(r.holeFrom):
			// The head moved past the first hole we knew of; the others are
			// somewhere after it.
			r.holeFrom = r.head
		case pos-r.head < r.holeFrom-r.head:
			r.holeFrom = pos
		}
		r.holes += int64(width)
	}
	s.c.evicted[reason]++
	switch {
	case ser.count == 0:
		if s.aging() {
			s.heapRemove(id)
		}
		s.removeSeries(id)
	case !hasPrev && s.aging():
		s.heapFix(id) // its oldest changed
	}
}

func (s *Store) removeSeries(id uint32) {
	if s.series.remove(id) {
		if s.aging() {
			s.age.ids[s.series.at(id).heapPos] = id
		}
		ser := s.series.at(id)
		r := &s.ring
		for p := ser.oldest; ; {
			sl := r.at(p)
			sl.setSeries(id)
			if sl.next == p {
				break
			}
			p = sl.next
		}
	}
	s.seriesGen++
}

// compact slides live exemplars down over the holes, in order, and frees the
// pages left empty at the tail.
func (s *Store) compact() {
	r := &s.ring
	if r.holes == 0 {
		return
	}
	w := r.head
	if r.inRing(r.holeFrom) {
		w = r.holeFrom
	}
	for w != r.tail && r.at(w).seriesID() != deadSeries {
		w += r.at(w).width()
	}
	for rd := w; rd != r.tail; {
		sl := r.at(rd)
		k := sl.width()
		if sl.seriesID() != deadSeries {
			s.move(rd, w, k)
			w += k
		}
		rd += k
	}
	s.compactGen++
	r.tail = w
	r.holes = 0
	r.releaseBack()
}

// move copies the k slots of the exemplar at from down to to (to < from) and
// repoints its neighbours and series.
func (s *Store) move(from, to, k uint32) {
	r := &s.ring
	for i := range k {
		*r.at(to + i) = *r.at(from + i)
	}
	d := r.at(to)
	if d.prev == from {
		d.prev = to
	} else {
		r.at(d.prev).next = to
	}
	if d.next == from {
		d.next = to
	} else {
		r.at(d.next).prev = to
	}
	ser := s.series.at(d.seriesID())
	if ser.oldest == from {
		ser.oldest = to
	}
	if ser.newest == from {
		ser.newest = to
	}
}

// evictForBudget is the budget eviction for a victim whose lock the caller
// could not take without waiting.
func (s *Store) evictForBudget() {
	s.mu.Lock()
	s.evictForBudgetLocked()
	s.mu.Unlock()
}

// evictForBudgetLocked gives up one step of memory for the budget. It
// publishes even when it finds nothing to give (the publication the caller
// chose it by was stale), so the caller's next choice is a different one.
func (s *Store) evictForBudgetLocked() {
	b := s.budget
	if b == nil || s.closed || s.bytes <= b.floor {
		s.publish()
		return
	}
	switch {
	case s.ring.dropSpare():
	case s.ring.live == 0:
		if s.ring.holdsPages() {
			s.ring.releaseAll()
		}
	case s.ring.compactionHelps(0):
		s.compact()
	default:
		s.removeExemplar(s.ring.head, reasonBudget)
		if s.ring.live == 0 {
			s.ring.releaseAll() // an emptied victim keeps nothing the budget cannot take back
		}
	}
	s.syncBytes()
	s.publish()
}

func (s *Store) syncBytes() {
	n := storeBytes + s.ring.bytes + s.series.bytes + s.symBytes + s.ageBytes
	if s.closed {
		n = 0
	}
	if d := n - s.bytes; d != 0 {
		s.bytes = n
		if s.budget != nil {
			s.budget.used.Add(d)
		}
	}
}

// fixedBytes is what the store holds with no exemplar and no page: itself and
// its symbol table.
func (s *Store) fixedBytes() int64 { return storeBytes + s.symBytes }

func (s *Store) publish() {
	if s.budget == nil {
		return
	}
	if f := s.fixedBytes(); s.pubFixed.Load() != f {
		s.pubFixed.Store(f)
	}
	oldest := int64(math.MaxInt64)
	if s.ring.live > 0 {
		oldest = s.ring.at(s.ring.head).ts
	}
	// Stores are full barriers on amd64; most adds change only one value.
	if s.pubOldest.Load() != oldest {
		s.pubOldest.Store(oldest)
	}
	if s.pubBytes.Load() != s.bytes {
		s.pubBytes.Store(s.bytes)
	}
	if s.pubLive.Load() != s.ring.live {
		s.pubLive.Store(s.ring.live)
	}
}

// ExemplarQuerier returns the store itself; it implements storage.ExemplarQueryable.
func (s *Store) ExemplarQuerier(context.Context) (storage.ExemplarQuerier, error) {
	return s, nil
}

// Querier is ExemplarQuerier, as on Prometheus' store.
func (s *Store) Querier(ctx context.Context) (storage.ExemplarQuerier, error) {
	return s.ExemplarQuerier(ctx)
}

// Select returns, for every series matching at least one of the matcher sets,
// its exemplars with start <= timestamp <= end, oldest first, series sorted by
// labels — as Prometheus does. With MaxAge, exemplars older than the cutoff
// are never returned. Nothing returned shares memory the store can change.
func (s *Store) Select(start, end int64, matchers ...[]*labels.Matcher) ([]exemplar.QueryResult, error) {
	return s.selectLocked(start, end, matchers), nil
}

type selectHit struct {
	id   uint32
	n    int
	lbls labels.Labels // the series', as Select returns them
}

func (s *Store) selectLocked(start, end int64, matchers [][]*labels.Matcher) []exemplar.QueryResult {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := &s.ring
	if s.lim.maxExemplars == 0 || r.live == 0 || len(matchers) == 0 {
		return make([]exemplar.QueryResult, 0)
	}
	lo := start
	if s.lim.maxAgeMs > 0 && s.haveNewest {
		lo = max(lo, s.ageCutoff())
	}
	var hits []selectHit
	total := 0
	for id := 0; id < s.series.n; id++ {
		ser := s.series.at(uint32(id))
		if r.at(ser.oldest).ts > end || r.at(ser.newest).ts < lo {
			continue
		}
		if !matchesSomeSet(ser.lbls, matchers) {
			continue
		}
		n := 0
		for p := ser.oldest; ; {
			sl := r.at(p)
			if sl.ts > end {
				break
			}
			if sl.ts >= lo {
				n++
			}
			if sl.next == p {
				break
			}
			p = sl.next
		}
		if n > 0 {
			hits = append(hits, selectHit{id: uint32(id), n: n})
			total += n
		}
	}
	ret := make([]exemplar.QueryResult, 0, len(hits))
	if len(hits) == 0 {
		return ret
	}
	d := newLabelDecoder()
	// Sort the hits, not the results, which are bigger to move; by labels
	// decoded once each, not once per comparison.
	for i := range hits {
		hits[i].lbls = storedLabels(s.series.at(hits[i].id).lbls, &d)
	}
	order := sortHits(hits)
	all := make([]exemplar.Exemplar, total)
	w := workPool.Get().(*work)
	defer workPool.Put(w)
	for _, o := range order {
		h := &hits[o.hit]
		ser := s.series.at(h.id)
		exs := all[:h.n:h.n]
		all = all[h.n:]
		i := 0
		for p := ser.oldest; i < h.n; {
			sl := r.at(p)
			if sl.ts >= lo {
				ls, err := d.decode(r.labelBytes(p, &w.stored), &s.syms)
				if err != nil {
					panic(err) // a bug in this package, not bad input
				}
				exs[i] = exemplar.Exemplar{Labels: ls, Value: sl.value, Ts: sl.ts, HasTs: sl.hasTs()}
				i++
			}
			p = sl.next
		}
		ret = append(ret, exemplar.QueryResult{SeriesLabels: h.lbls, Exemplars: exs})
	}
	return ret
}

func matchesSomeSet(ls storedSeriesLabels, sets [][]*labels.Matcher) bool {
outer:
	for _, ms := range sets {
		for _, m := range ms {
			if !m.Matches(storedGet(ls, m.Name)) {
				continue outer
			}
		}
		return true
	}
	return false
}

// IterateExemplars calls f for every exemplar held (except aged ones), in the
// order they were added, oldest first, and stops at the first error, which it
// returns. f runs under the store's read lock: it must not add to the store.
// The labels passed to f share no memory the store can change.
func (s *Store) IterateExemplars(f func(seriesLabels labels.Labels, e exemplar.Exemplar) error) error {
	w := workPool.Get().(*work)
	defer workPool.Put(w)
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := &s.ring
	cutoff := int64(math.MinInt64)
	if s.lim.maxAgeMs > 0 && s.haveNewest {
		cutoff = s.ageCutoff()
	}
	d := newLabelDecoder()
	for p := r.head; p != r.tail; {
		sl := r.at(p)
		if sl.seriesID() != deadSeries && sl.ts >= cutoff {
			ls, err := d.decode(r.labelBytes(p, &w.stored), &s.syms)
			if err != nil {
				return err
			}
			e := exemplar.Exemplar{Labels: ls, Value: sl.value, Ts: sl.ts, HasTs: sl.hasTs()}
			if err := f(storedLabels(s.series.at(sl.seriesID()).lbls, &d), e); err != nil {
				return err
			}
		}
		p += sl.width()
	}
	return nil
}

// Stats is a snapshot of a store.
type Stats struct {
	Exemplars int64 // exemplars held
	Series    int64 // series with at least one exemplar held
	Bytes     int64 // heap held by the store, as the Go heap counts it

	MaxExemplars int64 // 0 after Close or Resize(0)
	MaxBytes     int64
	// OldestTimestamp is the timestamp of the exemplar the store would evict
	// next (Prometheus' last_exemplars_timestamp_seconds); NewestTimestamp the
	// largest accepted. Both are 0 when nothing was held / accepted.
	OldestTimestamp int64
	NewestTimestamp int64

	Appended   uint64 // exemplars stored (duplicates excluded)
	OutOfOrder uint64 // AddExemplar calls refused with storage.ErrOutOfOrderExemplar, for any reason
	Evicted    Evictions
	Refused    Refusals
}

// Evictions counts exemplars evicted, by the limit that required it.
type Evictions struct {
	Count     uint64 // MaxExemplars
	Bytes     uint64 // MaxBytes
	Age       uint64 // MaxAge
	PerSeries uint64 // MaxPerSeries: a series dropped its own oldest
	Budget    uint64 // the shared Budget needed room (for this or another store)
}

// Refusals counts the stale re-adds this store refuses where Prometheus would
// evict newer exemplars to keep them (all returned as storage.ErrOutOfOrderExemplar).
type Refusals struct {
	StaleFull   uint64 // store full and the exemplar older than the one it would evict
	StaleAge    uint64 // older than the MaxAge cutoff
	StaleSeries uint64 // series at MaxPerSeries and the exemplar older than its oldest
}

// Stats returns a consistent snapshot.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := Stats{
		Exemplars:    s.ring.live,
		Series:       int64(s.series.n),
		Bytes:        s.bytes,
		MaxExemplars: s.lim.maxExemplars,
		MaxBytes:     s.lim.maxBytes,
		Appended:     s.c.appended,
		OutOfOrder:   s.c.outOfOrder,
		Evicted: Evictions{
			Count:     s.c.evicted[reasonCount],
			Bytes:     s.c.evicted[reasonBytes],
			Age:       s.c.evicted[reasonAge],
			PerSeries: s.c.evicted[reasonPerSeries],
			Budget:    s.c.evicted[reasonBudget],
		},
		Refused: Refusals{
			StaleFull:   s.c.refused[refusedStaleFull],
			StaleAge:    s.c.refused[refusedStaleAge],
			StaleSeries: s.c.refused[refusedStaleSeries],
		},
	}
	if s.ring.live > 0 {
		st.OldestTimestamp = s.ring.at(s.ring.head).ts
	}
	if s.haveNewest {
		st.NewestTimestamp = s.newestTs
	}
	return st
}

// SetLimits applies o's limits (MaxExemplars, MaxBytes, MaxAge, MaxPerSeries,
// OOOWindow) at once, evicting oldest first until the store fits, keeping the
// newest. Registerer and Budget are fixed at New and ignored here.
func (s *Store) SetLimits(o Options) error {
	lim, err := o.limits()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("%w: store is closed", ErrInvalidOptions)
	}
	s.lim = lim
	s.enforce()
	return nil
}

// enforce evicts until every limit holds.
func (s *Store) enforce() {
	r := &s.ring
	// The age heap exists exactly while MaxAge is set; build or drop it before
	// anything below evicts.
	switch {
	case s.aging() && s.age.ids == nil && s.series.n > 0:
		s.buildAgeHeap()
	case !s.aging() && s.age.ids != nil:
		s.dropAgeHeap()
	}
	if m := s.lim.maxPerSeries; m > 0 {
		for id := 0; id < s.series.n; id++ {
			for ser := s.series.at(uint32(id)); int64(ser.count) > m; {
				s.removeExemplar(ser.oldest, reasonPerSeries)
			}
		}
	}
	if s.aging() && s.haveNewest {
		s.evictAged()
	}
	for r.live > s.lim.maxExemplars {
		s.removeExemplar(r.head, reasonCount)
	}
	s.compact()
	r.dropSpare() // limits changed: give memory back now rather than keep it for growth
	s.syncBytes()
	for s.lim.maxBytes > 0 && s.bytes > s.lim.maxBytes && r.live > 0 {
		if r.compactionHelps(0) {
			s.compact()
		} else {
			s.removeExemplar(r.head, reasonBytes)
		}
		s.syncBytes()
	}
	s.publish()
}

// Resize sets MaxExemplars like Prometheus' CircularExemplarStorage.Resize:
// n <= 0 drops everything and disables the store (AddExemplar then returns
// storage.ErrExemplarsDisabled until a later Resize or SetLimits). It returns
// the number of exemplars kept — 0 when n is the current size, as Prometheus
// returns.
func (s *Store) Resize(n int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0
	}
	if n <= 0 {
		s.dropAll()
		s.lim.maxExemplars = 0
		return 0
	}
	n = min(n, MaxExemplarsLimit)
	if n == s.lim.maxExemplars {
		return 0
	}
	s.lim.maxExemplars = n
	s.enforce()
	return int(s.ring.live)
}

// SetOutOfOrderTimeWindow sets the out-of-order window in milliseconds, like
// Prometheus' store; negative means 0.
func (s *Store) SetOutOfOrderTimeWindow(ms int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lim.oooWindowMs = max(0, ms)
}

func (s *Store) dropAll() {
	for s.ring.live > 0 {
		s.removeExemplar(s.ring.head, reasonCount)
	}
	s.compact()
	s.ring.releaseAll() // a disabled store keeps no page for exemplars it will not take
	s.syncBytes()
	s.publish()
}

// Close drops every exemplar, returns the store's bytes to its Budget, leaves
// the Budget and unregisters its metrics. Afterwards AddExemplar and
// ValidateExemplar return storage.ErrExemplarsDisabled and Select returns
// nothing. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.dropAll()
	s.lim.maxExemplars = 0
	s.closed = true
	s.ring = ring{}
	s.series = seriesTable{}
	s.syms = symbolTable{}
	s.symBytes = 0
	s.age, s.ageBytes = ageHeap{}, 0
	s.syncBytes()
	s.publish()
	b, reg, c := s.budget, s.registerer, s.collector
	s.mu.Unlock()
	if b != nil {
		b.leave(s)
	}
	if reg != nil {
		reg.Unregister(c)
	}
	return nil
}

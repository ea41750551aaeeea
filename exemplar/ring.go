package exemplar

import (
	"unsafe"
)

// The ring holds exemplars in insertion order, oldest at head, in pages of
// fixed-size slots that are allocated as the ring grows and freed as its head
// passes them: no capacity is allocated up front, and memory held is the pages
// in use.
//
// A slot is 56 bytes and pointer-free, so the GC never scans the ring, and a
// page of 256 slots is exactly a malloc size class (14336 bytes). Each
// exemplar takes one slot; labels longer than its 28 inline bytes spill into
// continuation slots that follow it (raw bytes, 56 per slot). 28 bytes hold a
// trace_id and a span_id, hex-packed (see labels.go).
//
// Exemplars removed from the middle (a series at MaxPerSeries dropping its
// oldest, an aged exemplar behind a younger head) leave holes. compact slides
// live exemplars down over the holes, keeping their order, once holes are worth
// a quarter of what is live (or sooner, before a byte-limit eviction would
// otherwise hit another series).
//
// Positions are uint32 logical indexes that wrap; every position between head
// and tail is less than 2^31 away from head. Per-series links use positions
// and mark "none" by pointing at the slot itself.

const (
	pageShift        = 8
	pageSlots        = 1 << pageShift
	pageMask         = pageSlots - 1
	inlineLabelBytes = 28
	slotBytes        = 56
	maxContSlots     = 63

	// A slot's meta word packs its series id with the layout of its labels:
	//
	//	bits 0-23   series id; deadSeries once removed
	//	bit 24      the exemplar has a timestamp (exemplar.Exemplar.HasTs)
	//	bit 25      labels continue in the slots after this one
	//	bits 26-31  without continuation: label bytes inline (0-28);
	//	            with it: continuation slots (1-63), and then lbl[0] is
	//	            the label bytes in the last of them and lbl[1:] the first
	//	            inlineContBytes bytes
	//
	// Packing them is what lets a slot be 56 bytes and still hold a trace
	// and a span id inline; it caps a store at 2^24-1 series (see
	// MaxExemplarsLimit).
	seriesBits      = 24
	seriesMask      = 1<<seriesBits - 1
	deadSeries      = seriesMask
	metaHasTs       = 1 << 24
	metaCont        = 1 << 25
	metaNShift      = 26
	inlineContBytes = inlineLabelBytes - 1
)

type slot struct {
	ts    int64
	value float64
	meta  uint32 // series id, timestamp flag, label layout: see above
	prev  uint32 // older exemplar of the same series; own position if none
	next  uint32 // newer exemplar of the same series; own position if none
	lbl   [inlineLabelBytes]byte
}

// Compile-time checks: a slot is exactly slotBytes, and a page exactly a size class.
var (
	_ [slotBytes - unsafe.Sizeof(slot{})]struct{}
	_ [unsafe.Sizeof(slot{}) - slotBytes]struct{}
	_ [allocClassPage - unsafe.Sizeof(page{})]struct{}
	_ [unsafe.Sizeof(page{}) - allocClassPage]struct{}
)

// allocClassPage is the malloc size class a page fills exactly.
const allocClassPage = 14336

type page [pageSlots]slot

var pageBytes = allocSize(int64(unsafe.Sizeof(page{})), false)

func (s *slot) seriesID() uint32    { return s.meta & seriesMask }
func (s *slot) setSeries(id uint32) { s.meta = s.meta&^seriesMask | id }
func (s *slot) hasTs() bool         { return s.meta&metaHasTs != 0 }
func (s *slot) width() uint32       { return 1 + s.cont() }

func (s *slot) cont() uint32 {
	if s.meta&metaCont == 0 {
		return 0
	}
	return s.meta >> metaNShift
}

// set writes everything but the labels, which writeLabels (or the caller,
// with setInline) writes next.
func (s *slot) set(ts int64, value float64, id uint32, hasTs bool) {
	s.ts, s.value, s.meta = ts, value, id
	if hasTs {
		s.meta |= metaHasTs
	}
}

// setInline stores enc, which fits inline (len(enc) <= inlineLabelBytes).
func (s *slot) setInline(enc []byte) {
	s.meta = s.meta&(seriesMask|metaHasTs) | uint32(len(enc))<<metaNShift
	copy(s.lbl[:], enc)
}

// contSlotsFor is how many continuation slots n label bytes need.
func contSlotsFor(n int) int {
	if n <= inlineLabelBytes {
		return 0
	}
	return (n - inlineContBytes + slotBytes - 1) / slotBytes
}

type ring struct {
	// pages cover positions base, base+pageSlots, ...; dropping the first
	// page reslices, so tableCap remembers the allocation for accounting.
	pages    []*page
	tableCap int
	base     uint32
	head     uint32 // oldest live exemplar, or tail if empty
	tail     uint32 // next position to write
	live     int64  // live exemplars
	holes    int64  // dead slots between head and tail
	holeFrom uint32 // no hole before this position (when holes > 0 and it is not behind head)
	// spare is the last page released, kept (and accounted) for the next one
	// needed: in steady state the ring frees a page at its head as often as it
	// needs one at its tail, and recycling it spares the allocator and the GC.
	// The byte limits drop it before they evict anything.
	spare *page
	bytes int64 // heap held: pages, the spare, the page table
}

func (r *ring) npages() int { return len(r.pages) }

func (r *ring) at(pos uint32) *slot {
	i := pos - r.base
	return &r.pages[i>>pageShift][i&pageMask]
}

// raw returns the slotBytes bytes of the slot at pos, for continuation data.
func (r *ring) raw(pos uint32) *[slotBytes]byte {
	return (*[slotBytes]byte)(unsafe.Pointer(r.at(pos)))
}

func (r *ring) span() uint32 { return r.tail - r.head }

// inRing says whether pos lies between head and tail.
func (r *ring) inRing(pos uint32) bool { return pos-r.head < r.tail-r.head }

// pagesToAdd is how many pages writing k more slots needs.
func (r *ring) pagesToAdd(k int) int {
	last := int((r.tail + uint32(k) - 1 - r.base) >> pageShift)
	if n := last + 1 - r.npages(); n > 0 {
		return n
	}
	return 0
}

func pageTableBytes(capacity int) int64 {
	return allocSize(int64(capacity)*int64(unsafe.Sizeof((*page)(nil))), true)
}

// compactionHelps says whether compacting would free a page or spare the
// page writing k more slots would otherwise add.
func (r *ring) compactionHelps(k int) bool {
	if r.holes == 0 {
		return false
	}
	if r.holes >= pageSlots {
		return true
	}
	last := int((r.tail - uint32(r.holes) + uint32(k) - 1 - r.base) >> pageShift)
	return last+1 < r.npages()+r.pagesToAdd(k)
}

// bestGrowCost is growCost, or what writing k slots would cost after a
// compaction if that is less (negative when compaction frees pages), with
// freed more slots about to become holes.
func (r *ring) bestGrowCost(k, freed int) int64 {
	c := r.growCost(k)
	holes := r.holes + int64(freed)
	if holes == 0 {
		return c
	}
	last := int((r.tail - uint32(holes) + uint32(k) - 1 - r.base) >> pageShift)
	return min(c, int64(last+1-r.npages())*pageBytes)
}

// growCost is the bytes writing k more slots would add.
func (r *ring) growCost(k int) int64 {
	n := r.pagesToAdd(k)
	if n == 0 {
		return 0
	}
	c := int64(n) * pageBytes
	if r.spare != nil {
		c -= pageBytes
	}
	if len(r.pages)+n > cap(r.pages) {
		c += pageTableBytes(r.newTableCap(n)) - pageTableBytes(r.tableCap)
	}
	return c
}

func (r *ring) newTableCap(add int) int {
	need := r.npages() + add
	c := 4
	for c < need*2 {
		c *= 2
	}
	return c
}

// reserve makes room for k slots at tail and returns the first position.
func (r *ring) reserve(k int) uint32 {
	if r.live == 0 && r.holes == 0 && r.npages() == 0 {
		r.base = r.tail
		r.head = r.tail
	}
	if n := r.pagesToAdd(k); n > 0 {
		if len(r.pages)+n > cap(r.pages) {
			t := make([]*page, len(r.pages), r.newTableCap(n))
			copy(t, r.pages)
			clear(r.pages)
			r.pages = t
			r.bytes += pageTableBytes(cap(t)) - pageTableBytes(r.tableCap)
			r.tableCap = cap(t)
		}
		for range n {
			if p := r.spare; p != nil {
				// Stale slot contents are harmless: every field of a slot is
				// written before it is read.
				r.pages, r.spare = append(r.pages, p), nil
				continue
			}
			r.pages = append(r.pages, new(page))
			r.bytes += pageBytes
		}
	}
	pos := r.tail
	r.tail += uint32(k)
	return pos
}

// releaseFront frees pages wholly before head.
func (r *ring) releaseFront() {
	if r.head-r.base < pageSlots {
		return
	}
	for len(r.pages) > 0 && r.head-r.base >= pageSlots {
		r.release(r.pages[0])
		r.pages[0] = nil
		r.pages = r.pages[1:]
		r.base += pageSlots
	}
	r.shrinkTable()
}

// releaseBack frees pages wholly at or after tail.
func (r *ring) releaseBack() {
	keep := 0
	if r.tail != r.base {
		keep = int((r.tail-1-r.base)>>pageShift) + 1
	}
	for len(r.pages) > keep {
		r.release(r.pages[len(r.pages)-1])
		r.pages[len(r.pages)-1] = nil
		r.pages = r.pages[:len(r.pages)-1]
	}
	r.shrinkTable()
}

// releaseAll frees every page of an empty ring, the spare included, so that
// writing into it costs exactly what it costs a new store (judge's
// minimalFootprint relies on that). An empty ring otherwise keeps the page
// its head stopped in. Only the byte limits call it: a store that merely
// empties and refills keeps recycling its page.
func (r *ring) releaseAll() {
	if r.live != 0 {
		panic("exemplar: internal error: releaseAll on a ring that holds exemplars")
	}
	r.bytes -= int64(len(r.pages)) * pageBytes
	clear(r.pages)
	r.pages = r.pages[:0]
	r.dropSpare()
	r.base, r.tail, r.holes = r.head, r.head, 0
	r.shrinkTable()
}

// holdsPages says whether the ring holds any page (the spare included).
func (r *ring) holdsPages() bool { return len(r.pages) > 0 || r.spare != nil }

// release keeps p as the spare or frees it.
func (r *ring) release(p *page) {
	if r.spare == nil {
		r.spare = p
		return
	}
	r.bytes -= pageBytes
}

// dropSpare frees the spare page; it reports whether there was one.
func (r *ring) dropSpare() bool {
	if r.spare == nil {
		return false
	}
	r.spare = nil
	r.bytes -= pageBytes
	return true
}

// shrinkTable keeps the page table proportional to the pages in use, so churn
// does not leave a large table behind.
func (r *ring) shrinkTable() {
	n := len(r.pages)
	switch {
	case n == 0 && r.tableCap > 0:
		r.bytes -= pageTableBytes(r.tableCap)
		r.pages, r.tableCap = nil, 0
	case r.tableCap > 16 && r.tableCap > 4*n:
		t := make([]*page, n, max(4, 2*n))
		copy(t, r.pages)
		clear(r.pages)
		r.pages = t
		r.bytes += pageTableBytes(cap(t)) - pageTableBytes(r.tableCap)
		r.tableCap = cap(t)
	}
}

// writeLabels stores enc into s, the slot at pos, and its continuation slots.
func (r *ring) writeLabels(s *slot, pos uint32, enc []byte) {
	cont := contSlotsFor(len(enc))
	if cont == 0 {
		s.setInline(enc)
		return
	}
	s.meta = s.meta&(seriesMask|metaHasTs) | metaCont | uint32(cont)<<metaNShift
	copy(s.lbl[1:], enc[:inlineContBytes])
	rest := enc[inlineContBytes:]
	for i := 1; i <= cont; i++ {
		n := copy(r.raw(pos + uint32(i))[:], rest)
		rest = rest[n:]
		if i == cont {
			s.lbl[0] = uint8(n)
		}
	}
}

// labelBytes returns the encoded labels of the exemplar at pos: a view of the
// slot when they fit inline, else a copy assembled in scratch.
func (r *ring) labelBytes(pos uint32, scratch *[]byte) []byte {
	return r.labelBytesOf(r.at(pos), pos, scratch)
}

// labelBytesOf is labelBytes for s, the slot at pos.
func (r *ring) labelBytesOf(s *slot, pos uint32, scratch *[]byte) []byte {
	if s.meta&metaCont == 0 {
		return s.lbl[:s.meta>>metaNShift]
	}
	cont := s.meta >> metaNShift
	b := append((*scratch)[:0], s.lbl[1:]...)
	for i := uint32(1); i <= cont; i++ {
		raw := r.raw(pos + i)
		if i == cont {
			b = append(b, raw[:s.lbl[0]]...)
		} else {
			b = append(b, raw[:]...)
		}
	}
	*scratch = b
	return b
}

// maxEncodedLabels is the longest label encoding a slot chain can hold. Only
// label sets Prometheus' own parsers never produce (hundreds of labels with
// empty names) come near it.
const maxEncodedLabels = inlineContBytes + maxContSlots*slotBytes

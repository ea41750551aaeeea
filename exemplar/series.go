package exemplar

import (
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
)

// Series are kept once each, in a dense table (ids 0..n-1; removing a series
// moves the last one into its place) addressed through an open-addressing
// index of 32-bit ids keyed by the labels' hash. Per series that is 40 bytes
// of table, 4-8 bytes of index and one private copy of its labels; the index
// shrinks again when series go, so churn leaves nothing behind.

type series struct {
	lbls   storedSeriesLabels
	hash   uint64
	oldest uint32 // ring position of the exemplar with the smallest timestamp
	newest uint32 // ring position of the exemplar with the largest timestamp
	count  uint32
	// heapPos is the series' place in the age heap (while MaxAge is set).
	heapPos uint32
}

// seriesPerPage is a power of two so finding a series is a shift and a mask
// (this runs several times per add); a page is 20 KiB plus the runtime's
// malloc header, which the accounting includes.
const (
	seriesPageShift = 9
	seriesPerPage   = 1 << seriesPageShift
	minIndexSize    = 16
)

type seriesPage [seriesPerPage]series

var seriesPageBytes = allocSize(int64(unsafe.Sizeof(seriesPage{})), true)

type seriesTable struct {
	pages []*seriesPage
	n     int
	index []uint32 // id+1; 0 is empty
	bytes int64    // heap held: pages, page table, index, label copies
}

func (t *seriesTable) at(id uint32) *series {
	return &t.pages[id>>seriesPageShift][id&(seriesPerPage-1)]
}

func seriesTableBytes(capacity int) int64 {
	return allocSize(int64(capacity)*int64(unsafe.Sizeof((*seriesPage)(nil))), true)
}

func indexBytes(size int) int64 { return allocSize(int64(size)*4, false) }

// find returns the id of the series with key k.
func (t *seriesTable) find(hash uint64, k seriesKey) (uint32, bool) {
	if t.n == 0 {
		return 0, false
	}
	mask := uint64(len(t.index) - 1)
	for i := hash & mask; ; i = (i + 1) & mask {
		v := t.index[i]
		if v == 0 {
			return 0, false
		}
		s := t.at(v - 1)
		if s.hash == hash && storedEqual(s.lbls, k) {
			return v - 1, true
		}
	}
}

// addCost is the bytes adding a series whose labels take labelBytes would add.
func (t *seriesTable) addCost(labelBytes int64) int64 {
	c := labelBytes
	if t.n == len(t.pages)*seriesPerPage {
		c += seriesPageBytes
		if len(t.pages) == cap(t.pages) {
			c += seriesTableBytes(max(4, 2*cap(t.pages))) - seriesTableBytes(cap(t.pages))
		}
	}
	if size := t.indexSizeFor(t.n + 1); size != len(t.index) {
		c += indexBytes(size) - indexBytes(len(t.index))
	}
	return c
}

// indexSizeFor keeps the load factor in (1/8, 3/4], with hysteresis.
func (t *seriesTable) indexSizeFor(n int) int {
	size := len(t.index)
	if n == 0 {
		return 0
	}
	if size == 0 {
		size = minIndexSize
	}
	for n*4 > size*3 {
		size *= 2
	}
	for size > minIndexSize && n*8 < size {
		size /= 2
	}
	return size
}

func (t *seriesTable) add(ls labels.Labels, hash uint64) uint32 {
	if t.n == len(t.pages)*seriesPerPage {
		if len(t.pages) == cap(t.pages) {
			old := cap(t.pages)
			p := make([]*seriesPage, len(t.pages), max(4, 2*old))
			copy(p, t.pages)
			t.pages = p
			t.bytes += seriesTableBytes(cap(p)) - seriesTableBytes(old)
		}
		t.pages = append(t.pages, new(seriesPage))
		t.bytes += seriesPageBytes
	}
	id := uint32(t.n)
	if id >= deadSeries {
		// A store never holds more series than MaxExemplarsLimit exemplars.
		panic("exemplar: internal error: series id past the slot's 24 bits")
	}
	t.n++
	stored, size := storeSeriesLabels(ls)
	*t.at(id) = series{lbls: stored, hash: hash}
	t.bytes += size
	if !t.resizeIndex() {
		t.insertIndex(id, hash)
	}
	return id
}

func (t *seriesTable) insertIndex(id uint32, hash uint64) {
	mask := uint64(len(t.index) - 1)
	i := hash & mask
	for t.index[i] != 0 {
		i = (i + 1) & mask
	}
	t.index[i] = id + 1
}

// slotOf returns the index slot holding id.
func (t *seriesTable) slotOf(id uint32, hash uint64) uint64 {
	mask := uint64(len(t.index) - 1)
	i := hash & mask
	for t.index[i] != id+1 {
		i = (i + 1) & mask
	}
	return i
}

// deleteIndex removes id with backward-shift deletion: no tombstones, so
// lookups never slow down after churn.
func (t *seriesTable) deleteIndex(id uint32, hash uint64) {
	mask := uint64(len(t.index) - 1)
	i := t.slotOf(id, hash)
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		v := t.index[j]
		if v == 0 {
			break
		}
		home := t.at(v-1).hash & mask
		// Move v back to i if its home is not cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j)) {
			t.index[i] = v
			i = j
		}
	}
	t.index[i] = 0
}

// resizeIndex rebuilds the index (from every series in the table) if its
// size should change, and reports whether it did.
func (t *seriesTable) resizeIndex() bool {
	size := t.indexSizeFor(t.n)
	if size == len(t.index) {
		return false
	}
	t.bytes += indexBytes(size) - indexBytes(len(t.index))
	if size == 0 {
		t.index = nil
		return true
	}
	t.index = make([]uint32, size)
	for id := 0; id < t.n; id++ {
		t.insertIndex(uint32(id), t.at(uint32(id)).hash)
	}
	return true
}

// remove deletes series id. If the last series moves into id to keep the
// table dense, it returns true so the caller can repoint its exemplars.
func (t *seriesTable) remove(id uint32) (moved bool) {
	s := t.at(id)
	t.deleteIndex(id, s.hash)
	t.bytes -= storedSize(s.lbls)
	last := uint32(t.n - 1)
	if id != last {
		ls := t.at(last)
		t.index[t.slotOf(last, ls.hash)] = id + 1
		*s = *ls
		moved = true
	}
	*t.at(last) = series{}
	t.n--
	// Keep at most a quarter page of slack beyond the last page in use.
	for len(t.pages) > 0 && (t.n == 0 || t.n+seriesPerPage/4 <= (len(t.pages)-1)*seriesPerPage) {
		t.pages[len(t.pages)-1] = nil
		t.pages = t.pages[:len(t.pages)-1]
		t.bytes -= seriesPageBytes
	}
	if c := cap(t.pages); (c > 8 && c > 4*len(t.pages)) || (len(t.pages) == 0 && c > 0) {
		var p []*seriesPage
		if len(t.pages) > 0 {
			p = make([]*seriesPage, len(t.pages), 2*len(t.pages))
			copy(p, t.pages)
		}
		t.pages = p
		t.bytes += seriesTableBytes(cap(p)) - seriesTableBytes(c)
	}
	t.resizeIndex()
	return moved
}

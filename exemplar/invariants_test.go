package exemplar

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// checkInvariants verifies every structural invariant of the store and that
// the bytes it accounts equal a recount from scratch. Tests call it after
// every step of randomised sequences.
func (s *Store) checkInvariants() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := &s.ring
	if r.live > 0 && r.at(r.head).seriesID() == deadSeries {
		return fmt.Errorf("head %d is dead", r.head)
	}
	if r.span() >= 1<<31 {
		return fmt.Errorf("span %d", r.span())
	}
	var live, holes int64
	perSeries := make(map[uint32]int64)
	for p := r.head; p != r.tail; {
		if !r.inRing(p) {
			return fmt.Errorf("walk left the ring at %d", p)
		}
		sl := r.at(p)
		if sl.seriesID() == deadSeries {
			holes += int64(sl.width())
		} else {
			live++
			if int(sl.seriesID()) >= s.series.n {
				return fmt.Errorf("slot %d: series %d >= %d", p, sl.seriesID(), s.series.n)
			}
			perSeries[sl.seriesID()]++
		}
		p += sl.width()
	}
	if live != r.live || holes != r.holes {
		return fmt.Errorf("live %d/%d holes %d/%d", live, r.live, holes, r.holes)
	}
	if int(r.tail-r.base) > r.npages()*pageSlots || (r.npages() > 0 && r.head-r.base >= pageSlots) {
		return fmt.Errorf("pages %d do not fit base %d head %d tail %d", r.npages(), r.base, r.head, r.tail)
	}
	if len(perSeries) != s.series.n {
		return fmt.Errorf("%d series hold exemplars, table has %d", len(perSeries), s.series.n)
	}
	indexed := 0
	for _, v := range s.series.index {
		if v != 0 {
			indexed++
		}
	}
	if indexed != s.series.n {
		return fmt.Errorf("index holds %d, table %d", indexed, s.series.n)
	}
	var labelBytes int64
	for id := 0; id < s.series.n; id++ {
		ser := s.series.at(uint32(id))
		labelBytes += storedSize(ser.lbls)
		mask := uint64(len(s.series.index) - 1)
		found := false
		for i := ser.hash & mask; s.series.index[i] != 0; i = (i + 1) & mask {
			if s.series.index[i] == uint32(id)+1 {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("series %d not reachable from its hash", id)
		}
		if int64(ser.count) != perSeries[uint32(id)] {
			return fmt.Errorf("series %d count %d, ring has %d", id, ser.count, perSeries[uint32(id)])
		}
		if s.lim.maxPerSeries > 0 && int64(ser.count) > s.lim.maxPerSeries {
			return fmt.Errorf("series %d holds %d > MaxPerSeries %d", id, ser.count, s.lim.maxPerSeries)
		}
		n := int64(0)
		prev := ser.oldest
		if r.at(ser.oldest).prev != ser.oldest {
			return fmt.Errorf("series %d oldest has a prev", id)
		}
		for p := ser.oldest; ; {
			sl := r.at(p)
			if sl.seriesID() != uint32(id) {
				return fmt.Errorf("series %d list reaches slot of series %d", id, sl.seriesID())
			}
			if p != ser.oldest && (sl.prev != prev || r.at(prev).ts > sl.ts) {
				return fmt.Errorf("series %d list broken or unsorted at %d", id, p)
			}
			n++
			if n > int64(ser.count) {
				return fmt.Errorf("series %d list longer than count", id)
			}
			if sl.next == p {
				if p != ser.newest {
					return fmt.Errorf("series %d list ends at %d, newest is %d", id, p, ser.newest)
				}
				break
			}
			prev, p = p, sl.next
		}
		if n != int64(ser.count) {
			return fmt.Errorf("series %d list has %d, count %d", id, n, ser.count)
		}
	}
	if s.aging() {
		if len(s.age.ids) != s.series.n {
			return fmt.Errorf("age heap holds %d series, table %d", len(s.age.ids), s.series.n)
		}
		for i, id := range s.age.ids {
			if s.series.at(id).heapPos != uint32(i) {
				return fmt.Errorf("age heap position of series %d is %d, found at %d", id, s.series.at(id).heapPos, i)
			}
			if i > 0 && s.ageKey(s.age.ids[(i-1)/2]) > s.ageKey(id) {
				return fmt.Errorf("age heap order broken at %d", i)
			}
		}
		if s.haveNewest && s.ring.live > 0 && s.ageKey(s.age.ids[0]) < s.ageCutoff() {
			return fmt.Errorf("aged exemplar held: oldest %d < cutoff %d", s.ageKey(s.age.ids[0]), s.ageCutoff())
		}
	} else if s.age.ids != nil {
		return fmt.Errorf("age heap kept without MaxAge")
	}
	if s.closed {
		return nil
	}
	spare := int64(0)
	if r.spare != nil {
		spare = pageBytes
	}
	want := storeBytes + int64(r.npages())*pageBytes + spare + pageTableBytes(r.tableCap) +
		int64(len(s.series.pages))*seriesPageBytes + seriesTableBytes(cap(s.series.pages)) +
		indexBytes(len(s.series.index)) + labelBytes + s.symBytes + ageHeapBytes(cap(s.age.ids))
	if want != s.bytes {
		return fmt.Errorf("accounted %d bytes, recount %d", s.bytes, want)
	}
	if s.lim.maxBytes > 0 && s.bytes > s.lim.maxBytes {
		return fmt.Errorf("bytes %d > MaxBytes %d", s.bytes, s.lim.maxBytes)
	}
	if r.live > s.lim.maxExemplars {
		return fmt.Errorf("live %d > MaxExemplars %d", r.live, s.lim.maxExemplars)
	}
	return nil
}

func requireInvariants(t testing.TB, s *Store) {
	t.Helper()
	require.NoError(t, s.checkInvariants())
}

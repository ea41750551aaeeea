package exemplar

import "unsafe"

// MaxAge must find every exemplar older than the cutoff, not only those at the
// ring's head (ingestion order and timestamp order differ across series). A
// series keeps its exemplars sorted by timestamp, so its aged exemplars are a
// prefix of its list; a min-heap of series keyed by their oldest timestamp
// finds them all in O(log series) each. The heap exists only while MaxAge is
// set and costs 4 bytes per series.

type ageHeap struct {
	ids []uint32
}

func ageHeapBytes(capacity int) int64 {
	return allocSize(int64(capacity)*int64(unsafe.Sizeof(uint32(0))), false)
}

func (s *Store) aging() bool { return s.lim.maxAgeMs > 0 }

func (s *Store) ageKey(id uint32) int64 { return s.ring.at(s.series.at(id).oldest).ts }

func (s *Store) heapSet(i int, id uint32) {
	s.age.ids[i] = id
	s.series.at(id).heapPos = uint32(i)
}

func (s *Store) heapUp(i int) {
	h := s.age.ids
	id := h[i]
	key := s.ageKey(id)
	for i > 0 {
		p := (i - 1) / 2
		if s.ageKey(h[p]) <= key {
			break
		}
		s.heapSet(i, h[p])
		i = p
	}
	s.heapSet(i, id)
}

func (s *Store) heapDown(i int) {
	h := s.age.ids
	n := len(h)
	id := h[i]
	key := s.ageKey(id)
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && s.ageKey(h[c+1]) < s.ageKey(h[c]) {
			c++
		}
		if key <= s.ageKey(h[c]) {
			break
		}
		s.heapSet(i, h[c])
		i = c
	}
	s.heapSet(i, id)
}

// heapGrowCost is what pushing one more series would add.
func (s *Store) heapGrowCost() int64 {
	if !s.aging() || len(s.age.ids) < cap(s.age.ids) {
		return 0
	}
	return ageHeapBytes(max(16, 2*cap(s.age.ids))) - ageHeapBytes(cap(s.age.ids))
}

func (s *Store) heapPush(id uint32) {
	if len(s.age.ids) == cap(s.age.ids) {
		old := cap(s.age.ids)
		ids := make([]uint32, len(s.age.ids), max(16, 2*old))
		copy(ids, s.age.ids)
		s.age.ids = ids
		s.ageBytes += ageHeapBytes(cap(ids)) - ageHeapBytes(old)
	}
	s.age.ids = append(s.age.ids, id)
	s.heapUp(len(s.age.ids) - 1)
}

func (s *Store) heapRemove(id uint32) {
	i := int(s.series.at(id).heapPos)
	last := len(s.age.ids) - 1
	if i != last {
		s.heapSet(i, s.age.ids[last])
	}
	s.age.ids = s.age.ids[:last]
	if i != last {
		s.heapDown(i)
		s.heapUp(i)
	}
	if last == 0 {
		// Empty: free it, so an empty store holds exactly what minimalFootprint
		// assumes (heapPush allocates it again).
		s.ageBytes -= ageHeapBytes(cap(s.age.ids))
		s.age.ids = nil
		return
	}
	if c := cap(s.age.ids); c > 64 && c > 4*len(s.age.ids) {
		ids := make([]uint32, len(s.age.ids), 2*len(s.age.ids))
		copy(ids, s.age.ids)
		s.age.ids = ids
		s.ageBytes += ageHeapBytes(cap(ids)) - ageHeapBytes(c)
	}
}

// heapFix restores order after the oldest timestamp of series id changed.
func (s *Store) heapFix(id uint32) {
	i := int(s.series.at(id).heapPos)
	s.heapDown(i)
	s.heapUp(int(s.series.at(id).heapPos))
}

func (s *Store) buildAgeHeap() {
	s.dropAgeHeap()
	for id := 0; id < s.series.n; id++ {
		s.heapPush(uint32(id))
	}
}

func (s *Store) dropAgeHeap() {
	s.ageBytes -= ageHeapBytes(cap(s.age.ids))
	s.age.ids = nil
}

// evictAged drops every exemplar older than the cutoff.
func (s *Store) evictAged() {
	cutoff := s.ageCutoff()
	for len(s.age.ids) > 0 {
		ser := s.series.at(s.age.ids[0])
		if s.ring.at(ser.oldest).ts >= cutoff {
			return
		}
		s.removeExemplar(ser.oldest, reasonAge)
	}
}

package pool

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// stack is a fixed-size call stack: comparable, so reports can group by it
// with a map, and free of allocation beyond its own storage.
type stack [stackDepth]uintptr

const stackDepth = 32

// callers returns the stack starting skip frames above its caller.
func callers(skip int) stack {
	var s stack
	runtime.Callers(skip+2, s[:])
	return s
}

// write prints s the way a Go traceback does, so editors link file:line.
func (s *stack) write(b *strings.Builder, indent string) {
	n := 0
	for n < len(s) && s[n] != 0 {
		n++
	}
	frames := runtime.CallersFrames(s[:n])
	shown := 0
	for {
		f, more := frames.Next()
		if f.Function == "runtime.goexit" {
			break
		}
		if shown == maxFramesShown {
			fmt.Fprintf(b, "%s...\n", indent)
			break
		}
		fmt.Fprintf(b, "%s%s\n%s\t%s:%d\n", indent, f.Function, indent, f.File, f.Line)
		shown++
		if !more {
			break
		}
	}
}

const (
	maxFramesShown = 12
	maxGroupsShown = 10
	maxBadGroups   = 64 // distinct bad-Put stacks remembered; the rest are only counted
)

// plural returns "1 lease" or "n leases".
func plural(n int64, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %ss", n, one)
}

// counted is one line of a report: how many events share a stack.
type counted[K comparable] struct {
	key   K
	n     int64
	elems int64
}

// tally counts one event of key k, worth elems elements, in *m (made on
// first use).
func tally[K comparable](m *map[K]*counted[K], k K, elems int64) {
	if *m == nil {
		*m = make(map[K]*counted[K])
	}
	c := (*m)[k]
	if c == nil {
		c = &counted[K]{key: k}
		(*m)[k] = c
	}
	c.n++
	c.elems += elems
}

// writeGroups writes the first maxGroupsShown groups, each as what(g) and
// its stack, and says how many more there are.
func writeGroups(b *strings.Builder, groups []*counted[stack], what func(g *counted[stack]) string) {
	for i, g := range groups {
		if i == maxGroupsShown {
			fmt.Fprintf(b, "... and %d more stacks\n", len(groups)-i)
			return
		}
		b.WriteString(what(g))
		b.WriteString("\n")
		g.key.write(b, "\t")
	}
}

// byCount orders groups most frequent first, so a leak of 10,000 leases from
// one line heads the report as one entry.
func byCount[K comparable](m map[K]*counted[K]) []*counted[K] {
	out := make([]*counted[K], 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b *counted[K]) int { return cmp.Compare(b.n, a.n) })
	return out
}

type badKind uint8

const (
	badDouble  badKind = iota + 1 // Put of a lease already Put
	badForeign                    // Put of a pointer this pool did not lease
)

// badKey identifies one kind of bad Put: where it happened and, when the
// lease was tracked, where it was taken and first returned.
type badKey struct {
	kind          badKind
	put, get, fst stack
}

// events remembers the rare things a report must name: bad Puts and leases
// collected without Put. Only the slow paths touch it.
type events struct {
	mu       sync.Mutex
	bad      map[badKey]*counted[badKey]
	badOther int64
	leaked   map[stack]*counted[stack]
}

func (e *events) addBad(k badKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.bad[k]; c != nil {
		c.n++
		return
	}
	if len(e.bad) >= maxBadGroups {
		e.badOther++
		return
	}
	if e.bad == nil {
		e.bad = make(map[badKey]*counted[badKey])
	}
	e.bad[k] = &counted[badKey]{key: k, n: 1}
}

func (e *events) addLeaked(get stack, elems int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	tally(&e.leaked, get, elems)
}

// badPut counts a Put that did not end a lease, with its stack; skip counts
// the pool frames from badPut's caller up to the user's Put.
func (p *Pool[T]) badPut(kind badKind, skip int) {
	p.badPutAt(badKey{kind: kind, put: callers(skip + 1)})
}

func (p *Pool[T]) badPutAt(k badKey) {
	p.badPuts.Add(1)
	p.events.addBad(k)
}

// tracker remembers tracked leases. A tracked lease is handed a fresh *[]T
// (a "box") instead of a slab pointer, so a box is never reused while anyone
// still holds it: every double or foreign Put of a box is caught.
//
// Leases are keyed by the box's address. A finalizer (not a cleanup) watches
// each box: a finalizer runs before the box's memory can be reused, and it
// deletes the entry, so an address in the table always belongs to the box
// it was made for and a foreign pointer can never be mistaken for one.
type tracker[T any] struct {
	shards   [trackShards]trackShard[T]
	finalize func(*[]T)
}

const trackShards = 16

type trackShard[T any] struct {
	mu sync.Mutex
	m  map[uintptr]*trackedLease[T]
	_  [48]byte
}

type trackedLease[T any] struct {
	rec *record[T]
	get stack
	put *stack // the first Put (its top frames); nil while leased
}

// putDepth is how many frames of a tracked lease's first Put are kept, to
// name it if a second Put comes: fewer than a Get's, to keep Put cheap.
const putDepth = 8

func newTracker[T any](p *Pool[T]) *tracker[T] {
	t := &tracker[T]{finalize: p.boxFinalized}
	for i := range t.shards {
		t.shards[i].m = make(map[uintptr]*trackedLease[T])
	}
	return t
}

func (t *tracker[T]) shard(key uintptr) *trackShard[T] {
	return &t.shards[(key>>4)%trackShards]
}

// lease hands out h as a tracked lease; skip counts the pool frames from
// lease's caller up to the user's Get.
func (t *tracker[T]) lease(h *handle[T], skip int) *[]T {
	rec := h.rec
	rec.handle = h
	box := new([]T)
	*box = h.buf
	e := &trackedLease[T]{rec: rec, get: callers(skip + 1)}
	key := uintptr(unsafe.Pointer(box))
	sh := t.shard(key)
	sh.mu.Lock()
	sh.m[key] = e
	sh.mu.Unlock()
	runtime.SetFinalizer(box, t.finalize)
	return box
}

// put ends the tracked lease b, or reports a double Put of it. It returns
// false when b is not a tracked lease at all.
func (t *tracker[T]) put(p *Pool[T], b *[]T) bool {
	var st stack
	runtime.Callers(3, st[:putDepth]) // Put's caller
	key := uintptr(unsafe.Pointer(b))
	sh := t.shard(key)
	sh.mu.Lock()
	e := sh.m[key]
	if e == nil {
		sh.mu.Unlock()
		return false
	}
	if e.put != nil {
		k := badKey{kind: badDouble, put: st, get: e.get, fst: *e.put}
		sh.mu.Unlock()
		p.badPutAt(k)
		return true
	}
	e.put = &st
	sh.mu.Unlock()
	p.release(e.rec, b, trackedBit, 2)
	return true
}

// boxFinalized runs once a tracked box is garbage. If it was never Put the
// lease can never end: release its charge, count it as leaked and keep its
// Get stack for Check. Its array is not pooled — the holder may still
// reference it through a copy of the slice.
func (p *Pool[T]) boxFinalized(box *[]T) {
	key := uintptr(unsafe.Pointer(box))
	sh := p.tracker.shard(key)
	sh.mu.Lock()
	e := sh.m[key]
	delete(sh.m, key)
	sh.mu.Unlock()
	if e == nil || e.put != nil {
		return
	}
	rec := e.rec
	s := rec.state.Load()
	if s&leasedBit == 0 || s&trackedBit == 0 {
		return // unreachable: only this box's Put could end the lease, and there was none
	}
	// Count the leak before the lease ends. Stats derives Puts as the lease
	// ends it sees in the records minus Leaked, which it reads after its
	// walk: counted first, a leak can at worst be subtracted before its end
	// is seen (Puts one short, which Stats holds at its last value), never
	// seen ending before it is counted (Puts one too many, then one fewer at
	// the next scrape: a counter reset to Prometheus). Nothing else writes a
	// leased, tracked record's state, so the loop ends the lease.
	p.leaked.Add(1)
	for !rec.state.CompareAndSwap(s, s&^(leasedBit|trackedBit)) {
		s = rec.state.Load()
	}
	charge := p.chargeOf(rec, s)
	if p.maxTotal > 0 {
		p.avail.Add(charge)
	}
	p.events.addLeaked(e.get, charge)
	h := rec.handle
	rec.handle, rec.buf = nil, nil
	if h != nil {
		h.buf = nil
		p.bare.Put(h)
	}
}

// Check returns nil if no lease is outstanding and no lease was misused
// (put twice, put without being leased, or garbage-collected without Put).
// Otherwise the error, which wraps ErrLeak and/or ErrBadPut, lists them
// grouped by stack, most frequent first; stacks are known for tracked
// leases (Options.Track, Options.TrackEvery) and for every bad Put.
func (p *Pool[T]) Check() error {
	if p == nil {
		// A nil *Pool in a Checker interface is not a nil Checker, so
		// VerifyNone cannot skip it; say so rather than panic in a test's
		// deferred check, where the panic hides the test's own failure.
		return errNilPool
	}
	st := p.Stats()
	if st.Outstanding == 0 && st.BadPuts == 0 && st.Leaked == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pool %q: %s outstanding (%d elements in use)", p.name, plural(st.Outstanding, "lease"), st.InUse)
	if st.Leaked > 0 {
		fmt.Fprintf(&b, ", %s garbage-collected without Put", plural(st.Leaked, "lease"))
	}
	if st.BadPuts > 0 {
		fmt.Fprintf(&b, ", %s", plural(st.BadPuts, "bad Put"))
	}
	b.WriteString("\n")

	if st.Outstanding > 0 {
		groups, tracked := p.outstandingByStack()
		writeGroups(&b, groups, func(g *counted[stack]) string {
			return fmt.Sprintf("%s (%d elements) from Get at:", plural(g.n, "lease"), g.elems)
		})
		switch untracked := st.Outstanding - tracked; {
		case untracked <= 0:
		case p.tracker == nil:
			fmt.Fprintf(&b, "%s without a stack: set Options.Track (tests) or Options.TrackEvery (production) to see the Get that took them\n", plural(untracked, "lease"))
		default:
			fmt.Fprintf(&b, "%s more without a stack (TrackEvery tracks 1 lease in %d)\n", plural(untracked, "lease"), p.trackEvery)
		}
	}

	p.events.mu.Lock()
	leaked := byCount(p.events.leaked)
	bad := byCount(p.events.bad)
	badOther := p.events.badOther
	p.events.mu.Unlock()
	writeGroups(&b, leaked, func(g *counted[stack]) string {
		return fmt.Sprintf("%s (%d elements) garbage-collected without Put, from Get at:", plural(g.n, "lease"), g.elems)
	})
	for i, g := range bad {
		if i == maxGroupsShown {
			fmt.Fprintf(&b, "... and %d more bad Put stacks\n", len(bad)-i)
			break
		}
		k := g.key
		switch {
		case k.kind == badForeign:
			fmt.Fprintf(&b, "%s of a pointer this pool did not lease (or one already Put and collected), at:\n", plural(g.n, "Put"))
		case k.get[0] == 0:
			fmt.Fprintf(&b, "%s of a lease already Put, at (set Options.Track for the Get and the first Put):\n", plural(g.n, "Put"))
		default:
			fmt.Fprintf(&b, "%s of a lease already Put, at:\n", plural(g.n, "Put"))
		}
		k.put.write(&b, "\t")
		if k.get[0] != 0 {
			b.WriteString("    leased by Get at:\n")
			k.get.write(&b, "\t")
			b.WriteString("    first Put at:\n")
			k.fst.write(&b, "\t")
		}
	}
	if badOther > 0 {
		fmt.Fprintf(&b, "%s at other stacks\n", plural(badOther, "more bad Put"))
	}
	return &leakError{
		msg:   strings.TrimRight(b.String(), "\n"),
		leak:  st.Outstanding > 0 || st.Leaked > 0,
		bad:   st.BadPuts > 0,
		final: st.Outstanding == 0,
	}
}

// outstandingByStack groups tracked outstanding leases by the stack of their
// Get, and returns how many leases it grouped.
func (p *Pool[T]) outstandingByStack() ([]*counted[stack], int64) {
	if p.tracker == nil {
		return nil, 0
	}
	var m map[stack]*counted[stack]
	var total int64
	for i := range p.tracker.shards {
		sh := &p.tracker.shards[i]
		sh.mu.Lock()
		for _, e := range sh.m {
			if e.put != nil {
				continue
			}
			v := e.rec.state.Load()
			if v&leasedBit == 0 || v&trackedBit == 0 {
				continue
			}
			tally(&m, e.get, p.chargeOf(e.rec, v))
			total++
		}
		sh.mu.Unlock()
	}
	return byCount(m), total
}

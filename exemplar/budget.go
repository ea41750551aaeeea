package exemplar

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// BudgetOptions configure a Budget.
type BudgetOptions struct {
	// MaxBytes is what all member stores together may hold (>= MinBytes).
	MaxBytes int64
	// FloorBytes protects each member: a store holding at most this many bytes
	// is never evicted to make room for another store. New refuses a member
	// whose floor the budget could not honour (members × FloorBytes > MaxBytes).
	FloorBytes int64
	// Registerer, when set, receives the budget's metrics.
	Registerer prometheus.Registerer
}

// Budget is a byte budget shared by several stores — typically one per tenant
// in a Thanos Receive or Cortex ingester, where memory would otherwise be
// tenants × max-exemplars. When a member needs room and the budget is spent,
// the member holding the oldest exemplar among those above the floor evicts
// it, whichever store that is. A member pays for everything it holds, its own
// fixed overhead included.
type Budget struct {
	max, floor int64
	used       atomic.Int64

	mu      sync.Mutex               // serialises membership changes
	members atomic.Pointer[[]*Store] // copy-on-write: read without locks
}

// NewBudget returns an empty budget.
func NewBudget(o BudgetOptions) (*Budget, error) {
	if o.MaxBytes < MinBytes {
		return nil, fmt.Errorf("%w: budget MaxBytes must be at least MinBytes (%d), got %d", ErrInvalidOptions, MinBytes, o.MaxBytes)
	}
	if o.FloorBytes < 0 || o.FloorBytes > o.MaxBytes {
		return nil, fmt.Errorf("%w: budget FloorBytes must be in [0, MaxBytes], got %d", ErrInvalidOptions, o.FloorBytes)
	}
	b := &Budget{max: o.MaxBytes, floor: o.FloorBytes}
	b.members.Store(new([]*Store))
	if o.Registerer != nil {
		if err := o.Registerer.Register(newBudgetCollector(b)); err != nil {
			return nil, fmt.Errorf("exemplar: registering budget metrics: %w", err)
		}
	}
	return b, nil
}

// BudgetStats is a snapshot of a budget.
type BudgetStats struct {
	MaxBytes   int64
	FloorBytes int64
	UsedBytes  int64 // sum of the members' Stats().Bytes (plus in-flight reservations)
	Stores     int
}

// Stats returns a snapshot.
func (b *Budget) Stats() BudgetStats {
	st := BudgetStats{MaxBytes: b.max, FloorBytes: b.floor, UsedBytes: b.used.Load()}
	if m := b.members.Load(); m != nil {
		st.Stores = len(*m)
	}
	return st
}

func (b *Budget) join(s *Store) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	members := b.members.Load()
	if members == nil {
		// A zero Budget has no limit to share: joining it would either panic
		// or let the store grow unbounded.
		return fmt.Errorf("%w: Budget was not made by NewBudget", ErrInvalidOptions)
	}
	old := *members
	if b.floor > 0 && int64(len(old)+1) > b.max/b.floor {
		return fmt.Errorf("%w: a budget of %d bytes cannot give %d stores a floor of %d bytes each", ErrInvalidOptions, b.max, len(old)+1, b.floor)
	}
	m := append(slices.Clip(old), s)
	b.members.Store(&m)
	b.used.Add(s.bytes)
	return nil
}

func (b *Budget) leave(s *Store) {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.members.Load()
	if i := slices.Index(old, s); i >= 0 {
		m := slices.Delete(slices.Clone(old), i, i+1)
		b.members.Store(&m)
	}
}

// tryReserve takes n bytes if they are free.
func (b *Budget) tryReserve(n int64) bool {
	for {
		cur := b.used.Load()
		if cur+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// victim picks the member that gives up memory for self: among members above
// the floor, the one holding the oldest exemplar, else one holding only the
// pages of an emptied ring. If there is none, self gives up its own (its floor
// protects it from others, not from itself); nil if self has nothing to give.
// Others are judged by what they published, self by its own fields: the
// caller holds self's lock, and self's publication may be stale mid-add.
func (b *Budget) victim(self *Store) *Store {
	var best *Store
	bestTs := int64(math.MaxInt64)
	for _, m := range *b.members.Load() {
		var live, bytes, fixed, oldest int64
		if m == self {
			live, bytes, fixed, oldest = self.ring.live, self.bytes, self.fixedBytes(), math.MaxInt64
			if live > 0 {
				oldest = self.ring.at(self.ring.head).ts
			}
		} else {
			live, bytes, fixed, oldest = m.pubLive.Load(), m.pubBytes.Load(), m.pubFixed.Load(), m.pubOldest.Load()
		}
		if bytes <= b.floor || (live == 0 && bytes <= fixed) {
			continue
		}
		if best == nil || oldest < bestTs {
			best, bestTs = m, oldest
		}
	}
	if best == nil && (self.ring.live > 0 || self.bytes > self.fixedBytes()) {
		return self
	}
	return best
}

// room is the most self could hold if every other member were evicted down to
// its floor (an emptied member keeps only its fixed bytes): an exemplar that
// needs more is refused before anything is evicted for it.
func (b *Budget) room(self *Store) int64 {
	n := b.max
	for _, m := range *b.members.Load() {
		if m != self {
			n -= min(m.pubBytes.Load(), max(b.floor, m.pubFixed.Load()))
		}
	}
	return n
}

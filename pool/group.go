package pool

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrGroupReleased is returned by Group.Get and Group.Retain once the group's
// leases have been returned to the pool.
var ErrGroupReleased = errors.New("lease group already released")

var errZeroGroup = fmt.Errorf("%w: zero Group; build one with Pool.NewGroup", ErrInvalidOptions)

// Group is a set of leases that belong to one request and go back to the
// pool together, exactly once, when the last of its users is done.
//
// It keeps two lifetimes apart that the Thanos store gateway mixed up
// (#7821, #7883, #7885, #7915): the request handler, which takes the chunk
// buffers and may return early, and the consumers that still read them —
// a response being sent, a merge still iterating. Returning the buffers at
// the end of the handler hands memory still being read back to the pool;
// returning them only when everything has been closed leaks them when one
// close is forgotten. With a Group, the handler calls Release when it
// returns, each consumer calls Retain before it outlives the handler and its
// release when done, and whoever finishes last returns every lease.
//
// Leases from a Group must not be Put individually.
type Group[T any] struct {
	p        *Pool[T]
	refs     atomic.Int64 // the creator plus each Retain not yet released
	creator  atomic.Bool  // the creator's Release has run
	mu       sync.Mutex
	leases   []*[]T
	returned bool
}

// NewGroup returns a group holding one reference, its creator's; the
// creator must call Release.
func (p *Pool[T]) NewGroup() *Group[T] {
	g := &Group[T]{p: p}
	g.refs.Store(1)
	return g
}

// Get leases a slice that the group will Put when it is released.
func (g *Group[T]) Get(n int) (*[]T, error) {
	if g.p == nil {
		return nil, errZeroGroup
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.returned {
		return nil, fmt.Errorf("pool %q: Group.Get(%d): %w", g.p.name, n, ErrGroupReleased)
	}
	b, err := g.p.get(n, 1)
	if err != nil {
		return nil, err
	}
	g.leases = append(g.leases, b)
	return b, nil
}

// Retain adds a user that will read the group's slices after the creator
// may have released it. release is idempotent. Retain fails with
// ErrGroupReleased if the leases are already back in the pool: the caller
// was too late and must not touch them.
func (g *Group[T]) Retain() (release func(), err error) {
	if g.p == nil {
		return nil, errZeroGroup
	}
	for {
		n := g.refs.Load()
		if n <= 0 {
			return nil, fmt.Errorf("pool %q: Group.Retain: %w", g.p.name, ErrGroupReleased)
		}
		if g.refs.CompareAndSwap(n, n+1) {
			break
		}
	}
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			g.drop()
		}
	}, nil
}

// Release drops the creator's reference; later calls do nothing.
func (g *Group[T]) Release() {
	if g.creator.CompareAndSwap(false, true) {
		g.drop()
	}
}

// Len returns the number of leases the group holds.
func (g *Group[T]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.leases)
}

func (g *Group[T]) drop() {
	if g.refs.Add(-1) != 0 {
		return
	}
	g.mu.Lock()
	leases := g.leases
	g.leases = nil
	g.returned = true
	g.mu.Unlock()
	for _, b := range leases {
		g.p.Put(b)
	}
}

package pool

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
)

// Refs counts the holders of a resource — the readers of a block, say — so
// its owner can wait for them before dropping it. It is the fix for a Thanos
// store gateway whose blocks' pendingReaders never reached zero and whose
// block sync hung with no one able to say who held them.
//
// The zero value is ready to use. Set Name and Track before the first
// Acquire. A Refs must not be copied after first use.
type Refs struct {
	// Name identifies the resource in Check and Wait errors.
	Name string
	// Track remembers the stack of every Acquire still held, so Check names
	// the holders. It also reports (and releases) holders whose release
	// function was garbage-collected without being called.
	Track bool

	n       atomic.Int64
	mu      sync.Mutex
	zero    chan struct{} // closed when n drops to 0; made by the first waiter
	nextID  uint64
	holders map[uint64]stack
	leaked  map[stack]*counted[stack]
	nLeaked int64
}

var errNilRefs = fmt.Errorf("%w: nil *Refs; pass the address of a Refs (its zero value is ready)", ErrInvalidOptions)

// refHolder is one Acquire; its release method is what the caller holds.
type refHolder struct {
	r    *Refs
	id   uint64
	done atomic.Bool
}

// Acquire adds a holder and returns the function that removes it. Calling
// release more than once is harmless: only the first call counts.
func (r *Refs) Acquire() (release func()) {
	r.n.Add(1)
	h := &refHolder{r: r}
	if r.Track {
		st := callers(1)
		r.mu.Lock()
		r.nextID++
		h.id = r.nextID
		if r.holders == nil {
			r.holders = make(map[uint64]stack)
		}
		r.holders[h.id] = st
		r.mu.Unlock()
		runtime.AddCleanup(h, r.collected, h.id)
	}
	return h.release
}

func (h *refHolder) release() {
	if !h.done.CompareAndSwap(false, true) {
		return
	}
	r := h.r
	if h.id != 0 {
		r.mu.Lock()
		delete(r.holders, h.id)
		r.mu.Unlock()
	}
	r.dec()
}

// collected runs when a tracked holder's release function became garbage
// without being called: nobody can release it any more, so release it here
// and remember where it was acquired, for Check.
func (r *Refs) collected(id uint64) {
	r.mu.Lock()
	st, ok := r.holders[id]
	if ok {
		delete(r.holders, id)
		tally(&r.leaked, st, 0)
		r.nLeaked++
	}
	r.mu.Unlock()
	if ok {
		r.dec()
	}
}

func (r *Refs) dec() {
	if r.n.Add(-1) != 0 {
		return
	}
	r.mu.Lock()
	if r.zero != nil {
		close(r.zero)
		r.zero = nil
	}
	r.mu.Unlock()
}

// Count returns the number of current holders.
func (r *Refs) Count() int64 { return r.n.Load() }

// Wait returns nil once Count is zero, or, if ctx ends first, an error that
// wraps context.Cause(ctx) and says how many holders remain (and where they
// acquired it, with Track).
func (r *Refs) Wait(ctx context.Context) error {
	for {
		if r.n.Load() == 0 {
			return nil
		}
		r.mu.Lock()
		if r.n.Load() == 0 {
			r.mu.Unlock()
			return nil
		}
		if r.zero == nil {
			r.zero = make(chan struct{})
		}
		zero := r.zero
		r.mu.Unlock()
		select {
		case <-zero:
		case <-ctx.Done():
			if r.n.Load() == 0 {
				return nil
			}
			report := ""
			if err := r.Check(); err != nil {
				report = ": " + err.Error()
			}
			return fmt.Errorf("refs %q: gave up waiting for holders: %w%s", r.Name, context.Cause(ctx), report)
		}
	}
}

// Check returns nil if nobody holds the resource and no tracked holder was
// lost; otherwise an error wrapping ErrLeak that counts the holders and,
// with Track, groups them by the stack of their Acquire, most frequent first.
func (r *Refs) Check() error {
	if r == nil {
		return errNilRefs // see Pool.Check
	}
	n := r.n.Load()
	r.mu.Lock()
	nLeaked := r.nLeaked
	var held map[stack]*counted[stack]
	for _, st := range r.holders {
		tally(&held, st, 0)
	}
	leaked := byCount(r.leaked)
	r.mu.Unlock()
	if n == 0 && nLeaked == 0 {
		return nil
	}

	var b strings.Builder
	fmt.Fprintf(&b, "refs %q: %d holders", r.Name, n)
	if nLeaked > 0 {
		fmt.Fprintf(&b, ", %d released by the garbage collector (release never called)", nLeaked)
	}
	b.WriteString("\n")
	if n > 0 && !r.Track {
		b.WriteString("set Refs.Track to see where they were acquired\n")
	}
	writeGroups(&b, byCount(held), func(g *counted[stack]) string {
		return fmt.Sprintf("%d held, acquired at:", g.n)
	})
	writeGroups(&b, leaked, func(g *counted[stack]) string {
		return fmt.Sprintf("%d never released (release garbage-collected), acquired at:", g.n)
	})
	return &leakError{msg: strings.TrimRight(b.String(), "\n"), leak: true, final: n == 0}
}

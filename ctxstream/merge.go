package ctxstream

import (
	"errors"
	"fmt"
	"slices"
)

// Merge merges sorted iterators into one sorted iterator, with a loser tree over less: each
// item costs one Next on one child and about log2(len(its)) calls of less.
//
// Items that compare equal come out in child order (the item of its[0] first), and each
// child's own order is kept, so the merge is stable. The merge owns its children: a child that
// is exhausted is closed at once (which releases its source while the others are still being
// read), a child's error ends the merge with that same error and closes every child, and Close
// closes every child; each child's closer runs exactly once. Zero children make an empty
// stream.
//
// Merge does not check that the children are sorted: an unsorted child gives an unsorted
// output, never lost or repeated items.
//
// The merge stops within checkEvery items once the context of any child has ended, and
// reports that child's Err.
func Merge[T any](less func(a, b T) bool, its ...*Iter[T]) *Iter[T] {
	it := &Iter[T]{kind: kindMerge}
	m := &mergeState[T]{
		less: less,
		kids: slices.Clone(its),
		tree: make([]int32, len(its)),
		out:  make([]bool, len(its)),
		own:  make([]bool, len(its)),
	}
	it.merge = m
	var bad error
	if less == nil {
		bad = fmt.Errorf("%w: Merge with a nil less function", ErrInvalid)
	}
	for i, k := range m.kids {
		switch {
		case k == nil:
			bad = cmpOr(bad, fmt.Errorf("%w: Merge child %d is nil", ErrInvalid, i))
		case k.inMerge:
			bad = cmpOr(bad, fmt.Errorf("%w: Merge child %d is already merged (given twice, or to another Merge)", ErrInvalid, i))
		default:
			k.inMerge, m.own[i] = true, true
		}
	}
	if bad != nil {
		it.mergeFail(bad)
	}
	return it
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

type mergeState[T any] struct {
	less    func(a, b T) bool
	kids    []*Iter[T]
	tree    []int32 // tree[0]: the current winner; tree[1:]: the loser kept at each inner node
	out     []bool  // child exhausted: it loses to everything
	own     []bool  // child taken by this merge (not a duplicate, not another merge's)
	started bool
}

// beats orders children by (current item, child index), a total order that makes the merge
// stable with a single call of less.
func (m *mergeState[T]) beats(a, b int32) bool {
	if m.out[a] {
		return false
	}
	if m.out[b] {
		return true
	}
	if a < b {
		return !m.less(m.kids[b].cur, m.kids[a].cur)
	}
	return m.less(m.kids[a].cur, m.kids[b].cur)
}

// build plays the whole tournament. Leaves are implicit at len(kids)+i; node p's children are
// 2p and 2p+1, which is a complete binary tree for any number of leaves.
func (m *mergeState[T]) build() {
	k := len(m.kids)
	win := make([]int32, 2*k)
	for i := range k {
		win[k+i] = int32(i)
	}
	for p := k - 1; p >= 1; p-- {
		a, b := win[2*p], win[2*p+1]
		if m.beats(a, b) {
			win[p], m.tree[p] = a, b
		} else {
			win[p], m.tree[p] = b, a
		}
	}
	if k == 1 {
		m.tree[0] = 0
	} else {
		m.tree[0] = win[1]
	}
}

// replay re-runs the matches on the path of child w, whose item changed.
func (m *mergeState[T]) replay(w int32) {
	for p := (len(m.kids) + int(w)) / 2; p >= 1; p /= 2 {
		if l := m.tree[p]; m.beats(l, w) {
			m.tree[p], w = w, l
		}
	}
	m.tree[0] = w
}

// advance moves child i on; false means the merge failed.
func (m *mergeState[T]) advance(i int32) error {
	k := m.kids[i]
	if k.Next() {
		return nil
	}
	if err := k.Err(); err != nil {
		return err
	}
	m.out[i] = true
	k.Close() // exhausted: release its source now, not when the whole merge ends
	return nil
}

func (it *Iter[T]) nextMerge() bool {
	m := it.merge
	if it.halt.Load() {
		return it.stop(nil)
	}
	if !m.started {
		m.started = true
		for i := range m.kids {
			if err := m.advance(int32(i)); err != nil {
				return it.mergeFail(err)
			}
		}
		if len(m.kids) == 0 {
			return it.stop(nil)
		}
		m.build()
	} else {
		if it.n%checkEvery == 0 {
			if err := it.checkCtx(); err != nil {
				return it.mergeFail(err)
			}
		}
		w := m.tree[0]
		if err := m.advance(w); err != nil {
			return it.mergeFail(err)
		}
		m.replay(w)
	}
	w := m.tree[0]
	if m.out[w] {
		return it.stop(nil) // every child is exhausted, and closed
	}
	it.cur = m.kids[w].cur
	it.n++
	return true
}

// checkCtx ends the iterator if its context has ended or it was interrupted, without calling
// Recv, and returns the error it ended with. Merge uses it to bound how many items it may
// return after a cancellation when children check only every checkEvery of their own items.
func (it *Iter[T]) checkCtx() error {
	if it.done {
		return nil
	}
	switch it.kind {
	case kindMerge:
		for i, k := range it.merge.kids {
			if !it.merge.out[i] {
				if err := k.checkCtx(); err != nil {
					return err
				}
			}
		}
		return nil
	case kindEager:
		if it.ctx.Err() != nil {
			return it.stopWith(it.ctxEnded())
		}
	default:
		if it.life.Err() != nil {
			return it.stopWith(it.recvEnding(nil).err)
		}
	}
	if it.halt.Load() {
		if err := it.haltErr(); err != nil {
			return it.stopWith(err)
		}
	}
	return nil
}

func (it *Iter[T]) stopWith(err error) error {
	it.stop(err)
	return err
}

func (it *Iter[T]) mergeFail(err error) bool {
	it.closeKids()
	return it.stop(err)
}

func (it *Iter[T]) closeKids() error {
	var errs []error
	for i, k := range it.merge.kids {
		if it.merge.own[i] {
			if err := k.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (it *Iter[T]) closeMerge() error {
	it.halt.Store(true)
	return it.closeKids()
}

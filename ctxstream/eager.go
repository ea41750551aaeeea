package ctxstream

import (
	"context"
	"math/bits"
	"sync/atomic"
)

// MaxBuffer caps WithBuffer: Eager allocates its ring up front.
const MaxBuffer = 1 << 20

// Eager iterates over src with one prefetch goroutine that calls Recv ahead of the consumer,
// into a ring of at most WithBuffer items (DefaultBuffer when not given). When the ring is full
// the goroutine waits; it never holds more. This is what Thanos' eagerRespSet does, minus the
// unbounded buffer and the wait that ignored the context.
//
// Next never waits on anything the context cannot interrupt: it returns as soon as ctx ends or
// a Recv times out, even while the goroutine is stuck in Recv. Close stops the goroutine and
// returns only after it has exited (see Close for a source without closer).
//
// An Eager iterator whose owner forgets Close keeps its goroutine, and holds its source open,
// until ctx ends (or the source ends by itself with room left in the buffer): with a
// long-lived ctx that is a leak, so Close it, or range over All, on every path.
func Eager[T any](ctx context.Context, src Source[T], opts ...Option) *Iter[T] {
	c := newConfig(opts)
	it := &Iter[T]{kind: kindEager}
	e := &eagerState[T]{
		wake:  make(chan struct{}, 1),
		space: make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	it.eager = e
	if !it.start(ctx, src, c, true) || it.halt.Load() {
		close(e.done)
		return it
	}
	n := min(c.buffer, MaxBuffer)
	ringLen := 1 << bits.Len(uint(n-1)) // the next power of two >= n
	e.ring = make([]T, ringLen)
	e.mask = uint64(ringLen - 1)
	e.size = uint64(n)
	e.lowWater = max(1, e.size/4)
	go it.produce(e.ring) // its own reference: the consumer drops e.ring when it stops
	return it
}

// eagerState is a single-producer single-consumer ring. The producer publishes tail after
// writing a slot, the consumer publishes head after clearing one; each side reads the other's
// index only when it looks full (producer) or empty (consumer). A side sleeps on a one-token
// channel only after announcing it (cwaiting, pwaiting) and looking again; the other side
// publishes its index before reading the announcement, so a wake-up is never lost, and none is
// needed while both sides are busy.
type eagerState[T any] struct {
	ring     []T
	mask     uint64
	size     uint64 // at most this many items received and not yet returned by Next
	lowWater uint64 // free this many slots before waking a producer that waits for space

	// consumer-owned
	h    uint64 // next slot to read
	snap uint64 // tail as last seen

	// producer-owned
	headSeen uint64 // head as last seen: the producer reads head only when it looks full

	_        [64]byte
	tail     atomic.Uint64 // written by the producer
	_        [56]byte
	head     atomic.Uint64 // written by the consumer
	_        [56]byte
	cwaiting atomic.Bool
	pwaiting atomic.Bool

	wake  chan struct{} // producer -> consumer: items published
	space chan struct{} // consumer -> producer: slots freed
	done  chan struct{} // closed when the producer has exited
}

func (it *Iter[T]) produce(ring []T) {
	e := it.eager
	defer close(e.done)
	var tail uint64
	for {
		if it.ending.Load() != nil { // not only halt: a Recv timeout ends the stream without it
			return
		}
		if tail-e.headSeen >= e.size {
			if e.headSeen = e.head.Load(); tail-e.headSeen < e.size {
				continue
			}
			e.pwaiting.Store(true)
			if tail-e.head.Load() >= e.size { // look again after announcing: no lost wake-up
				select {
				case <-e.space:
				case <-it.life.Done():
					it.end(it.interruptedBy(context.Cause(it.life)))
					return
				}
			}
			e.pwaiting.Store(false)
			continue
		}
		if it.timer != nil {
			it.timer.Reset(it.recvTimeout)
		}
		v, err := it.src.Recv()
		if it.timer != nil {
			it.timer.Stop()
		}
		if err != nil {
			it.recvEnding(err)
			return
		}
		ring[tail&e.mask] = v
		tail++
		e.tail.Store(tail)
		if e.cwaiting.Load() && e.cwaiting.CompareAndSwap(true, false) {
			select {
			case e.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (it *Iter[T]) nextEager() bool {
	if it.halt.Load() {
		return it.stop(it.haltErr())
	}
	if it.n%checkEvery == 0 && it.ctx.Err() != nil {
		return it.stop(it.ctxEnded())
	}
	e := it.eager
	if e.h == e.snap && !it.eagerWait() {
		return false
	}
	slot := &e.ring[e.h&e.mask]
	it.cur = *slot
	var zero T
	*slot = zero // the ring must not keep a returned response alive
	e.h++
	it.n++
	e.head.Store(e.h)
	// A producer waiting for space is woken once a quarter of the ring is free, not per item.
	if e.pwaiting.Load() && e.size-(e.tail.Load()-e.h) >= e.lowWater {
		e.wakeProducer()
	}
	return true
}

// ctxEnded is the consumer's verdict when it finds the caller's context done.
func (it *Iter[T]) ctxEnded() error {
	w := it.end(it.interruptedBy(context.Cause(it.ctx)))
	switch w.reason {
	case reasonCanceled, reasonTimeout:
		return w.err
	case reasonClosed:
		return nil
	}
	// The source had already finished; the consumer was still draining the buffer.
	return context.Cause(it.ctx)
}

func (e *eagerState[T]) wakeProducer() {
	if e.pwaiting.Load() && e.pwaiting.CompareAndSwap(true, false) {
		select {
		case e.space <- struct{}{}:
		default:
		}
	}
}

// eagerWait waits until items are published, the producer is done, or the stream is
// interrupted. Everything it waits on is closed by ctx, the Recv timeout or Close.
func (it *Iter[T]) eagerWait() bool {
	e := it.eager
	for {
		if t := e.tail.Load(); t != e.h {
			e.snap = t
			return true
		}
		e.wakeProducer() // all consumed: the whole ring is free
		e.cwaiting.Store(true)
		if t := e.tail.Load(); t != e.h {
			e.cwaiting.Store(false)
			e.snap = t
			return true
		}
		select {
		case <-e.wake:
		case <-e.done:
			e.cwaiting.Store(false)
			if t := e.tail.Load(); t != e.h {
				e.snap = t
				return true
			}
			return it.stop(it.ending.Load().err) // the producer exits only after an ending
		case <-it.life.Done():
			e.cwaiting.Store(false)
			w := it.end(it.interruptedBy(context.Cause(it.life)))
			if w.reason.interrupts() {
				return it.stop(it.haltErr())
			}
			if w.reason == reasonTimeout {
				// Items received before the stalled Recv are still the consumer's. The producer
				// may be stuck in that Recv (no closer): do not wait for it.
				if t := e.tail.Load(); t != e.h {
					e.snap = t
					return true
				}
				return it.stop(w.err)
			}
			// The producer ended the stream itself (EOF or error) and cancelled life on its way
			// out; it is past Recv and about to close done.
			<-e.done
		}
	}
}

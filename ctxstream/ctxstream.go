package ctxstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Source is anything with a gRPC-style Recv: io.EOF ends the stream, any other error fails it.
// A generated gRPC client stream (Recv() (*Resp, error)) already is a Source[*Resp].
type Source[T any] interface {
	Recv() (T, error)
}

var (
	// ErrRecvTimeout is wrapped by Err when a single Recv took longer than WithRecvTimeout allows.
	// The wrapping error says how long it waited.
	ErrRecvTimeout = errors.New("ctxstream: Recv timed out")

	// ErrInvalid is wrapped by Err when an iterator was built from bad arguments (a nil context,
	// Source or less function, a nil child or a child given to Merge twice). Such an iterator
	// ends at once, releasing whatever it was given; it never panics.
	ErrInvalid = errors.New("ctxstream: invalid argument")
)

// errEnded is the cause given to an iterator's own derived context once the stream has ended
// normally; nobody outside sees it.
var errEnded = errors.New("ctxstream: stream ended")

// reason tells how a stream ended; the first one wins.
type reason uint8

const (
	reasonNone reason = iota
	reasonEOF
	reasonError
	reasonCanceled // the context ended
	reasonTimeout  // a Recv took longer than WithRecvTimeout
	reasonClosed   // Close before the end
	reasonCount
)

// interrupts reports whether the ending stops the consumer at once, even with items buffered:
// the consumer is gone (cancellation) or asked to stop (Close). A Recv timeout is not one: it
// says the source stalled, not that the items Eager received before the stall are unwanted, so
// they are handed out first, as Lazy would have returned them, however slow the consumer.
func (r reason) interrupts() bool { return r == reasonCanceled || r == reasonClosed }

type ending struct {
	reason reason
	err    error // what Err reports after this ending
}

var (
	endedByEOF   = &ending{reason: reasonEOF}
	endedByClose = &ending{reason: reasonClosed}
)

// recvTimeoutError is the cause an iterator gives its own derived context when one of its
// Recv calls timed out. Only that very value counts as a timeout: a caller may well cancel ctx
// with a cause that wraps ErrRecvTimeout (a querier passing a store's error on), and that is a
// cancellation, which stops the consumer at once and is counted as such.
type recvTimeoutError struct{ d time.Duration }

func (e *recvTimeoutError) Error() string {
	return fmt.Sprintf("%v: no item within %v", ErrRecvTimeout, e.d)
}

func (e *recvTimeoutError) Unwrap() error { return ErrRecvTimeout }

func (it *Iter[T]) interruptedBy(cause error) *ending {
	if it.timedOut != nil && cause == error(it.timedOut) {
		return &ending{reason: reasonTimeout, err: cause}
	}
	return &ending{reason: reasonCanceled, err: cause}
}

type kind uint8

const (
	kindLazy kind = iota
	kindEager
	kindMerge
)

// Iter iterates over a stream. Build one with Lazy, Eager or Merge.
//
// Next, At, Err and All belong to one goroutine at a time (the consumer). Close may be called
// from any goroutine, at any time, also while Next is blocked in Recv: that is how a querier
// abandons a stream it is not reading.
type Iter[T any] struct {
	// The hot path of Lazy reads only these fields.
	budget int32 // items Next may return before it looks at the context; 0 = take the slow path
	halt   atomic.Bool
	src    Source[T]
	cur    T
	n      uint32 // items returned by Eager and Merge, which look at the context when n%checkEvery == 0

	kind kind
	done bool  // the consumer has seen the end
	err  error // what Err returns once done

	ctx         context.Context // the caller's
	life        context.Context // ctx, or a child of it that the Recv timeout and the end cancel
	cancelLife  context.CancelCauseFunc
	stopMu      sync.Mutex // stopAfter is set while its AfterFunc may already be running
	stopAfter   func() bool
	timer       *time.Timer
	recvTimeout time.Duration
	timedOut    *recvTimeoutError // the cause recvTimedOut cancels life with
	closer      func() error
	metrics     *Metrics

	ending    atomic.Pointer[ending] // the first reason the stream ended
	release   sync.Once
	closerErr error
	inMerge   bool

	eager *eagerState[T]
	merge *mergeState[T]
}

// afterFunc is time.AfterFunc; a test replaces it to stand for a goroutine preempted just after
// creating the Recv timer.
var afterFunc = time.AfterFunc

// checkEvery bounds how many items Next may still return after the context ended, for a
// source that never blocks: the hot path reads an atomic flag set by context.AfterFunc, and
// looks at ctx.Err() itself once every checkEvery items, in case that callback has not run yet.
const checkEvery = 64

// Lazy iterates over src, calling Recv only when Next is called, on the caller's goroutine. It
// starts no goroutine: cancellation reaches a blocked Recv through context.AfterFunc, which
// runs the closer (WithCloser, WithCancel) on the runtime's goroutine once ctx is done.
//
// The iterator owns src from now on: the closer runs exactly once, as soon as the stream ends.
// Call Close (or range over All) when done with it; Close is harmless after the end.
func Lazy[T any](ctx context.Context, src Source[T], opts ...Option) *Iter[T] {
	it := &Iter[T]{kind: kindLazy}
	it.start(ctx, src, newConfig(opts), false)
	return it
}

// start validates and wires the context; false means the stream already ended.
func (it *Iter[T]) start(ctx context.Context, src Source[T], c config, derive bool) bool {
	it.closer, it.metrics = c.closer, c.metrics
	it.metrics.started()
	if ctx == nil {
		it.fail(fmt.Errorf("%w: nil context", ErrInvalid))
		return false
	}
	if src == nil {
		it.fail(fmt.Errorf("%w: nil Source", ErrInvalid))
		return false
	}
	it.ctx, it.src, it.life = ctx, src, ctx
	if derive || c.recvTimeout > 0 {
		it.life, it.cancelLife = context.WithCancelCause(ctx)
	}
	if c.recvTimeout > 0 {
		it.recvTimeout = c.recvTimeout
		it.timedOut = &recvTimeoutError{d: c.recvTimeout}
		// Created for a time it cannot reach: armed with recvTimeout, it could fire before Stop
		// if this goroutine were held up in between, ending the stream before its first Recv.
		// Every Recv Resets it to recvTimeout. Stopped so that no timer waits while idle.
		it.timer = afterFunc(math.MaxInt64, it.recvTimedOut)
		it.timer.Stop()
	}
	// The AfterFunc may run, and end the stream, before AfterFunc has returned; releaseSource
	// then finds no stop function, which is right: there is nothing left to stop.
	stop := context.AfterFunc(it.life, it.interrupt)
	it.stopMu.Lock()
	it.stopAfter = stop
	it.stopMu.Unlock()
	if ctx.Err() != nil {
		it.interrupt() // now, rather than when the runtime gets to the AfterFunc
	}
	return true
}

// fail ends a stream that could not start.
func (it *Iter[T]) fail(err error) {
	it.end(&ending{reason: reasonError, err: err})
	it.stop(err)
}

// interrupt ends the stream because its context ended or a Recv timed out. It runs from
// context.AfterFunc, so possibly while Recv is blocked on another goroutine.
func (it *Iter[T]) interrupt() { it.end(it.interruptedBy(context.Cause(it.life))) }

// recvTimedOut fires when a Recv has run for recvTimeout. It cancels life with a cause, and
// the AfterFunc on life does the rest: a timeout is told apart from cancellation by
// context.Cause, never by reading a timer's channel (Thanos #7553 waited on a nil one).
func (it *Iter[T]) recvTimedOut() {
	it.cancelLife(it.timedOut)
}

// end records why the stream ended (the first caller wins) and releases the source exactly
// once. It returns the winning ending. Safe from any goroutine.
func (it *Iter[T]) end(e *ending) *ending {
	if it.ending.CompareAndSwap(nil, e) && e.reason.interrupts() {
		it.halt.Store(true)
	}
	it.release.Do(it.releaseSource)
	return it.ending.Load()
}

func (it *Iter[T]) releaseSource() {
	it.stopMu.Lock()
	stopAfter := it.stopAfter
	it.stopMu.Unlock()
	if stopAfter != nil {
		stopAfter()
	}
	if it.timer != nil {
		it.timer.Stop()
	}
	if it.cancelLife != nil {
		it.cancelLife(errEnded) // unregisters life from the caller's context
	}
	if it.closer != nil {
		it.closerErr = it.closer()
	}
	it.metrics.endedBy(it.ending.Load().reason)
}

// stop is the consumer's side of the end: Next returns false from now on.
func (it *Iter[T]) stop(err error) bool {
	it.done, it.budget, it.err = true, 0, err
	var zero T
	it.cur = zero
	if it.eager != nil {
		it.eager.ring = nil // items prefetched and never returned are garbage now
	}
	return false
}

// haltErr is what Err reports when the consumer stops on the halt flag.
func (it *Iter[T]) haltErr() error {
	if e := it.ending.Load(); e != nil && (e.reason == reasonCanceled || e.reason == reasonTimeout) {
		return e.err
	}
	return nil // Close
}

// recvEnding classifies a Recv error. Once ctx or life has ended, the error is only the echo
// of the closer or of the stream's own context (a gRPC stream says "context canceled"):
// report the cause instead. ctx is looked at first: a context records its error before it
// cancels its children, in no set order, so a stream opened on a child of ctx can fail before
// life (another child, for Eager and WithRecvTimeout) is cancelled.
func (it *Iter[T]) recvEnding(err error) *ending {
	switch {
	case it.ctx.Err() != nil:
		return it.end(it.interruptedBy(context.Cause(it.ctx)))
	case it.life.Err() != nil:
		return it.end(it.interruptedBy(context.Cause(it.life)))
	case err == io.EOF:
		return it.end(endedByEOF)
	default:
		return it.end(&ending{reason: reasonError, err: err})
	}
}

// Next advances to the next item and reports whether there is one. It returns false at the
// end of the stream, after the context ended (within checkEvery items even if the source never
// blocks), after a Recv timeout, after Close, and after a source error. Err tells which.
func (it *Iter[T]) Next() bool {
	if it.budget > 0 && !it.halt.Load() {
		v, err := it.src.Recv()
		if err != nil {
			return it.stop(it.recvEnding(err).err)
		}
		it.cur = v
		it.budget--
		return true
	}
	return it.next()
}

func (it *Iter[T]) next() bool {
	if it.done {
		return false
	}
	switch it.kind {
	case kindEager:
		return it.nextEager()
	case kindMerge:
		return it.nextMerge()
	}
	if it.life == nil {
		return it.stop(fmt.Errorf("%w: zero Iter; build one with Lazy, Eager or Merge", ErrInvalid))
	}
	if it.halt.Load() {
		return it.stop(it.haltErr())
	}
	if it.budget == 0 {
		if it.life.Err() != nil {
			return it.stop(it.recvEnding(nil).err)
		}
		if it.timer == nil {
			it.budget = checkEvery // the next checkEvery-1 items take Next's short path
		}
	}
	if it.timer != nil {
		it.timer.Reset(it.recvTimeout)
	}
	v, err := it.src.Recv()
	if it.timer != nil {
		it.timer.Stop() // if it fired meanwhile, life is cancelled and the next call sees it
	}
	if err != nil {
		return it.stop(it.recvEnding(err).err)
	}
	it.cur = v
	if it.budget > 0 {
		it.budget--
	}
	return true
}

// At returns the current item: valid after Next returned true, the zero value after the end.
func (it *Iter[T]) At() T { return it.cur }

// Err returns why Next returned false: nil after a clean io.EOF or after Close;
// context.Cause(ctx) when the context ended first; an error wrapping ErrRecvTimeout when a
// Recv took too long; the source's own error otherwise. Nil while the stream is running.
func (it *Iter[T]) Err() error { return it.err }

// Close ends the stream if it has not ended and releases the source: the closer has run when
// Close returns, and so has Close of every Merge child. It is idempotent and safe from any
// goroutine. It returns the closer's error (joined over children for Merge).
//
// Eager's Close also waits for its prefetch goroutine to exit. That goroutine may be inside
// Recv: with a closer, the closer unblocks it; WITHOUT a closer, a Recv that never returns
// cannot be interrupted, so Eager's Close blocks until it does, and Lazy's Close returns at
// once while the goroutine that called Next stays blocked in Recv. A gRPC stream opened with
// the iterator's ctx is unblocked by gRPC itself when ctx ends, but not by Close or by
// WithRecvTimeout: give it WithCancel.
func (it *Iter[T]) Close() error {
	if it.kind == kindMerge {
		return it.closeMerge()
	}
	it.end(endedByClose)
	it.halt.Store(true) // stop the consumer even with buffered items; after end: halt implies an ending
	if it.eager != nil {
		<-it.eager.done
	}
	return it.closerErr
}

// All returns the items as a range-over-func sequence. The iterator is closed when the loop
// ends, however it ends: EOF, error, break, return, or a panic in the loop body. Check Err
// afterwards. Close's error (the closer's) is dropped; call Close yourself if it matters.
func (it *Iter[T]) All() iter.Seq[T] {
	return func(yield func(T) bool) {
		defer it.Close()
		for {
			if it.budget > 0 && !it.halt.Load() { // Next's short path, without a call per item
				v, err := it.src.Recv()
				if err != nil {
					it.stop(it.recvEnding(err).err)
					return
				}
				it.cur = v
				it.budget--
				if !yield(v) {
					return
				}
				continue
			}
			if !it.next() || !yield(it.cur) {
				return
			}
		}
	}
}

package ctxstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leaksafe/leaksafe/ctxstream"
)

func TestEOFEndsCleanlyAndReleasesSourceBeforeNextReturnsFalse(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := newFake(seq(100))
			it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close))
			require.Equal(t, seq(100), collect(it))
			require.NoError(t, it.Err())
			require.EqualValues(t, 1, src.closes.Load(), "the closer runs as soon as the stream ends, not only at Close")
			require.False(t, it.Next(), "Next stays false")
			require.NoError(t, it.Close())
			require.EqualValues(t, 1, src.closes.Load())
		})
	}
}

func TestSourceErrorIsReportedAfterItsItems(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			boom := errors.New("store: chunk decode failed")
			src := failingAfter(seq(10), boom)
			it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close))
			require.Equal(t, seq(10), collect(it))
			require.ErrorIs(t, it.Err(), boom)
			require.EqualValues(t, 1, src.closes.Load())
			require.NoError(t, it.Close())
			require.EqualValues(t, 1, src.closes.Load())
		})
	}
}

func TestCancelReleasesBlockedRecvAndReportsContextCause(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			cause := errors.New("query cancelled by the frontend")
			ctx, cancel := context.WithCancelCause(context.Background())
			src := stallingAfter(seq(5))
			it := impl.new(ctx, src, ctxstream.WithCloser(src.Close))
			for range 5 {
				require.True(t, it.Next())
			}
			go func() {
				<-src.stalled // Recv is blocked now (on the consumer's or the prefetch goroutine)
				cancel(cause)
			}()
			require.False(t, it.Next(), "Next returns once the context ends, though Recv was blocked")
			require.ErrorIs(t, it.Err(), cause)
			require.NotErrorIs(t, it.Err(), errReleased, "the closer's echo is not reported")
			require.EqualValues(t, 1, src.closes.Load())
			require.NoError(t, it.Close())
			require.EqualValues(t, 1, src.closes.Load())
		})
	}
}

// synctest: the deadline passes when every goroutine waits, and Next returns exactly then.
func TestDeadlineEndsStalledStream(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				src := stallingAfter(seq(3))
				it := impl.new(ctx, src, ctxstream.WithCloser(src.Close))
				require.Equal(t, seq(3), collect(it))
				require.ErrorIs(t, it.Err(), context.DeadlineExceeded)
				require.Equal(t, time.Second, time.Since(start), "Next returned when the deadline passed")
				require.EqualValues(t, 1, src.closes.Load(), "the deadline released the stalled Recv")
				require.NoError(t, it.Close())
				require.EqualValues(t, 1, src.closes.Load())
			})
		})
	}
}

// A deadline is a cancellation, unlike a Recv timeout: the query is over, so a consumer that
// comes back after it gets nothing more, even the items Eager received before.
func TestDeadlineStopsTheConsumerEvenWithItemsReceived(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				src := stallingAfter(seq(3))
				it := impl.new(ctx, src, ctxstream.WithCloser(src.Close))
				defer it.Close()
				require.True(t, it.Next())
				time.Sleep(time.Minute) // the consumer is busy past the deadline
				require.Empty(t, collect(it))
				require.ErrorIs(t, it.Err(), context.DeadlineExceeded)
				require.EqualValues(t, 1, src.closes.Load())
			})
		})
	}
}

func TestRecvTimeoutEndsStalledRecvWithErrRecvTimeout(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				src := stallingAfter(seq(3))
				it := impl.new(ctx, src, ctxstream.WithCloser(src.Close), ctxstream.WithRecvTimeout(20*time.Millisecond))
				require.Equal(t, seq(3), collect(it))
				require.ErrorIs(t, it.Err(), ctxstream.ErrRecvTimeout)
				require.Equal(t, 20*time.Millisecond, time.Since(start), "Next returned when the stalled Recv timed out")
				require.Contains(t, it.Err().Error(), "20ms", "the error says how long it waited")
				require.NoError(t, ctx.Err(), "the caller's context is not touched")
				require.EqualValues(t, 1, src.closes.Load(), "the timeout released the stalled Recv")
				require.NoError(t, it.Close())
				require.EqualValues(t, 1, src.closes.Load())
			})
		})
	}
}

// A Recv timeout says the source stalled, not that what came before is unwanted: items Eager
// prefetched before the stall are handed out first, however late the consumer asks, exactly
// as Lazy would have returned them. (synctest: the consumer's minute passes at once.)
func TestRecvTimeoutStillHandsOutItemsReceivedBeforeTheStall(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := stallingAfter(seq(3))
				it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close), ctxstream.WithRecvTimeout(time.Second))
				defer it.Close()
				time.Sleep(time.Minute) // the consumer is busy before its first Next
				require.Equal(t, seq(3), collect(it))
				require.ErrorIs(t, it.Err(), ctxstream.ErrRecvTimeout)
				require.EqualValues(t, 1, src.closes.Load(), "the timeout released the stalled Recv")
			})
		})
	}
}

// A caller may cancel ctx with a cause that wraps ErrRecvTimeout: a querier passing on the
// error of a store that timed out, even that store iterator's own Err. For every other stream
// on ctx that is a cancellation, not a timeout of its own: the consumer stops at once though
// Eager holds items received before, and the metrics count it under reason="canceled".
func TestCallerCauseWrappingErrRecvTimeoutIsACancellation(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				wrapped := fmt.Errorf("x: %w", ctxstream.ErrRecvTimeout)
				stalled := stallingAfter(nil)
				other := ctxstream.Lazy(context.Background(), stalled, ctxstream.WithCloser(stalled.Close), ctxstream.WithRecvTimeout(time.Second))
				require.False(t, other.Next())
				require.ErrorIs(t, other.Err(), ctxstream.ErrRecvTimeout, "another stream's own timeout")

				for _, cause := range []error{wrapped, other.Err()} {
					reg := prometheus.NewRegistry()
					m, err := ctxstream.NewMetrics(reg)
					require.NoError(t, err)
					ctx, cancel := context.WithCancelCause(context.Background())
					src := stallingAfter(seq(3))
					it := impl.new(ctx, src, ctxstream.WithCloser(src.Close), ctxstream.WithRecvTimeout(time.Hour), ctxstream.WithMetrics(m))
					require.True(t, it.Next())
					synctest.Wait() // Eager has received what its buffer holds and stalls in Recv
					cancel(cause)
					synctest.Wait() // the context's AfterFunc has run
					require.Empty(t, collect(it), "%v: items after the cancellation", cause)
					require.Equal(t, cause, it.Err())
					require.EqualValues(t, 1, src.closes.Load())
					require.Equal(t, map[string]float64{"canceled": 1}, endedByReason(t, reg), "%v", cause)
					require.NoError(t, it.Close())
				}
			})
		})
	}
}

// endedByReason returns the non-zero ctxstream_streams_ended_total counters by reason.
func endedByReason(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "ctxstream_streams_ended_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				out[m.GetLabel()[0].GetValue()] = v
			}
		}
	}
	return out
}

// The Recv timer must not run before the first Recv, however long the constructing goroutine
// is held up after creating it (preempted on a loaded machine): a source that answers at once
// would otherwise end with ErrRecvTimeout without Recv ever being called.
func TestRecvTimerCannotFireBeforeTheFirstRecv(t *testing.T) {
	restore := ctxstream.SetAfterFunc(func(d time.Duration, f func()) *time.Timer {
		tm := time.AfterFunc(d, f)
		time.Sleep(time.Hour) // preempted right after the timer was created
		return tm
	})
	defer restore()
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := newFake(seq(3))
				it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close), ctxstream.WithRecvTimeout(time.Millisecond))
				defer it.Close()
				require.Equal(t, seq(3), collect(it))
				require.NoError(t, it.Err())
			})
		})
	}
}

// Each Recv takes 3/4 of the timeout, and the consumer twice the timeout between items: neither
// the time spent in several Recv calls together nor the consumer's own work is a timeout.
func TestRecvTimeoutCountsOnlyTimeInsideRecv(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const timeout = time.Second
				src := newFake(seq(3))
				src.delay = timeout * 3 / 4
				it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close), ctxstream.WithRecvTimeout(timeout))
				defer it.Close()
				n := 0
				for it.Next() {
					n++
					time.Sleep(2 * timeout) // the consumer's own work, between Recv calls
				}
				require.NoError(t, it.Err())
				require.Equal(t, 3, n)
			})
		})
	}
}

func TestBreakOutOfAllReleasesSource(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := endless()
			it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close))
			n := 0
			for range it.All() {
				n++
				if n == 10 {
					break
				}
			}
			require.EqualValues(t, 1, src.closes.Load())
			require.NoError(t, it.Err(), "breaking out is not an error")
			require.False(t, it.Next())
		})
	}
}

func TestPanicInsideAllReleasesSource(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := endless()
			it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close))
			func() {
				defer func() { require.Equal(t, "consumer bug", recover()) }()
				for v := range it.All() {
					if v == 3 {
						panic("consumer bug")
					}
				}
			}()
			require.EqualValues(t, 1, src.closes.Load())
		})
	}
}

func TestCloseWithoutReadingReleasesSource(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := stallingAfter(seq(1000))
			it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close))
			require.NoError(t, it.Close())
			require.EqualValues(t, 1, src.closes.Load())
			require.Zero(t, src.inRecv.Load(), "no Recv is running once Close returned")
			recvs := src.recvs.Load()
			require.False(t, it.Next())
			require.NoError(t, it.Err())
			require.Equal(t, recvs, src.recvs.Load(), "no Recv after Close")
			if impl.name == "lazy" {
				require.Zero(t, recvs, "Lazy never called Recv")
			}
		})
	}
}

func TestCloseTwiceRunsCloserOnceAndReturnsItsError(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			closeErr := errors.New("CloseSend: transport is closing")
			var calls atomic.Int32
			it := impl.new(context.Background(), newFake(seq(3)), ctxstream.WithCloser(func() error {
				calls.Add(1)
				return closeErr
			}))
			require.True(t, it.Next())
			require.ErrorIs(t, it.Close(), closeErr)
			require.ErrorIs(t, it.Close(), closeErr)
			require.EqualValues(t, 1, calls.Load())
		})
	}
}

func TestCloseFromAnotherGoroutineUnblocksNext(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := stallingAfter(seq(2))
			it := impl.new(context.Background(), src, ctxstream.WithCloser(src.Close))
			closed := make(chan error, 1)
			go func() {
				<-src.stalled
				closed <- it.Close()
			}()
			got := collect(it)
			// Lazy has returned both items before Recv stalls; Eager stops at once on Close,
			// even with items already prefetched.
			require.True(t, slices.Equal(seq(len(got)), got), "a prefix of the stream: %v", got)
			if impl.name == "lazy" {
				require.Len(t, got, 2)
			}
			require.NoError(t, <-closed)
			require.NoError(t, it.Err(), "the consumer asked to stop: not an error")
			require.EqualValues(t, 1, src.closes.Load())
		})
	}
}

func TestContextDoneBeforeStartNeverCallsRecv(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			src := endless()
			it := impl.new(ctx, src, ctxstream.WithCloser(src.Close))
			require.EqualValues(t, 1, src.closes.Load(), "released at construction")
			require.False(t, it.Next())
			require.ErrorIs(t, it.Err(), context.Canceled)
			require.Zero(t, src.recvs.Load())
			require.NoError(t, it.Close())
		})
	}
}

func TestNextStopsWithin64ItemsAfterCancelOnNeverBlockingSource(t *testing.T) {
	merged := func(ctx context.Context, src ctxstream.Source[int], opts ...ctxstream.Option) *ctxstream.Iter[int] {
		other := endless()
		return ctxstream.Merge(func(a, b int) bool { return a < b },
			ctxstream.Lazy(ctx, src, opts...), ctxstream.Eager(ctx, other, ctxstream.WithCloser(other.Close)))
	}
	all := append(impls[:len(impls):len(impls)], struct {
		name string
		new  newIter
	}{"merge", merged})
	for _, impl := range all {
		t.Run(impl.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			for start := range 130 { // cancel at every phase of the 64-item check
				ctx, cancel := context.WithCancel(context.Background())
				src := endless()
				it := impl.new(ctx, src, ctxstream.WithCloser(src.Close))
				for range start {
					require.True(t, it.Next())
				}
				cancel()
				after := 0
				for it.Next() {
					after++
				}
				require.LessOrEqual(t, after, 64, "items returned after cancel() returned")
				require.ErrorIs(t, it.Err(), context.Canceled)
				require.NoError(t, it.Close())
				require.EqualValues(t, 1, src.closes.Load())
			}
		})
	}
}

func TestLazyStartsNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const streams = 1000
	before := runtime.NumGoroutine()
	its := make([]*ctxstream.Iter[int], streams)
	for i := range its {
		src := newFake(seq(3))
		its[i] = ctxstream.Lazy(ctx, src, ctxstream.WithCloser(src.Close), ctxstream.WithRecvTimeout(time.Hour))
		require.True(t, its[i].Next()) // arms and stops the Recv timer
	}
	grown := runtime.NumGoroutine() - before
	require.Less(t, grown, 10, "%d streams grew the goroutine count by %d", streams, grown)
	for _, it := range its {
		require.NoError(t, it.Close())
	}
}

func TestLazyAllocatesNothingPerItem(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, opts := range [][]ctxstream.Option{nil, {ctxstream.WithRecvTimeout(time.Hour)}} {
		src := endless()
		it := ctxstream.Lazy(ctx, src, append(opts, ctxstream.WithCloser(src.Close))...)
		allocs := testing.AllocsPerRun(10000, func() {
			if !it.Next() {
				t.Fatal("endless source ended")
			}
		})
		require.Zero(t, allocs)
		require.NoError(t, it.Close())
	}
}

// boundedSource checks, at each Recv, that the prefetch never runs further ahead of the
// consumer than the buffer allows.
type boundedSource struct {
	started  *atomic.Int64 // Next calls the consumer has started
	received atomic.Int64
	maxAhead atomic.Int64
	reached  chan int64 // every Recv reports its number
}

func (s *boundedSource) Recv() (int, error) {
	r := s.received.Add(1)
	ahead := r - s.started.Load()
	for {
		m := s.maxAhead.Load()
		if ahead <= m || s.maxAhead.CompareAndSwap(m, ahead) {
			break
		}
	}
	s.reached <- r
	return int(r), nil
}

func TestEagerNeverHoldsMoreThanBuffer(t *testing.T) {
	for _, buffer := range []int{1, 3, 64} {
		t.Run("buffer="+itoa(buffer), func(t *testing.T) {
			defer goleak.VerifyNone(t)
			var started atomic.Int64
			src := &boundedSource{started: &started, reached: make(chan int64, 1<<12)}
			it := ctxstream.Eager(context.Background(), src, ctxstream.WithBuffer(buffer))
			refill := int64(buffer) - max(1, int64(buffer)/4) + 1 // the prefetch resumes once a quarter is free
			var seen int64
			for round := range 20 {
				// Pause like a slow consumer until the prefetch has refilled the buffer.
				want := started.Load() + refill
				if round == 0 {
					want = int64(buffer)
				}
				for seen < want {
					seen = <-src.reached
				}
				started.Add(1)
				require.True(t, it.Next())
				require.EqualValues(t, round+1, it.At())
			}
			require.NoError(t, it.Close())
			require.LessOrEqual(t, src.maxAhead.Load(), int64(buffer), "received and not yet returned")
			require.Equal(t, int64(buffer), src.maxAhead.Load(), "the prefetch does fill the buffer")
		})
	}
}

func TestInvalidArgumentsEndAtOnceWithErrInvalid(t *testing.T) {
	defer goleak.VerifyNone(t)
	var nilCtx context.Context
	for _, impl := range impls {
		var calls atomic.Int32
		closer := ctxstream.WithCloser(func() error { calls.Add(1); return nil })
		it := impl.new(nilCtx, newFake(seq(1)), closer)
		require.False(t, it.Next())
		require.ErrorIs(t, it.Err(), ctxstream.ErrInvalid)
		require.NoError(t, it.Close())
		it = impl.new(context.Background(), nil, closer)
		require.False(t, it.Next())
		require.ErrorIs(t, it.Err(), ctxstream.ErrInvalid)
		require.NoError(t, it.Close())
		require.EqualValues(t, 2, calls.Load(), "%s: what it was given is released", impl.name)
	}
}

func TestMetricsCountStreamsByHowTheyEnded(t *testing.T) {
	synctest.Test(t, metricsCountStreamsByHowTheyEnded) // the Recv timeout passes when all wait
}

func metricsCountStreamsByHowTheyEnded(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := ctxstream.NewMetrics(reg)
	require.NoError(t, err)
	// A second component (or a reload) registering on the same Registerer shares the
	// counters instead of panicking or failing.
	again, err := ctxstream.NewMetrics(reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	eof := ctxstream.Lazy(ctx, newFake(seq(2)), ctxstream.WithMetrics(m))
	collect(eof)
	failed := ctxstream.Eager(ctx, failingAfter(nil, errors.New("boom")), ctxstream.WithMetrics(m))
	collect(failed)
	stalled := stallingAfter(nil)
	timedOut := ctxstream.Lazy(ctx, stalled, ctxstream.WithMetrics(m), ctxstream.WithCloser(stalled.Close),
		ctxstream.WithRecvTimeout(time.Millisecond))
	collect(timedOut)
	closed := ctxstream.Eager(ctx, endless(), ctxstream.WithMetrics(again))
	open := ctxstream.Lazy(ctx, endless(), ctxstream.WithMetrics(m))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ctxstream_streams_open Streams (Lazy, Eager) started and not yet ended.
# TYPE ctxstream_streams_open gauge
ctxstream_streams_open 2
`), "ctxstream_streams_open"), "the two streams not yet ended")
	require.NoError(t, closed.Close())
	cancel()
	collect(open)

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP ctxstream_streams_ended_total Streams ended, by the first reason: eof, error (from the source), canceled (context), timeout (WithRecvTimeout), closed (Close before the end).
# TYPE ctxstream_streams_ended_total counter
ctxstream_streams_ended_total{reason="canceled"} 1
ctxstream_streams_ended_total{reason="closed"} 1
ctxstream_streams_ended_total{reason="eof"} 1
ctxstream_streams_ended_total{reason="error"} 1
ctxstream_streams_ended_total{reason="timeout"} 1
# HELP ctxstream_streams_open Streams (Lazy, Eager) started and not yet ended.
# TYPE ctxstream_streams_open gauge
ctxstream_streams_open 0
`)))
	for _, it := range []*ctxstream.Iter[int]{eof, failed, timedOut, closed, open} {
		it.Close()
	}
}

// Test1000ConcurrentStreamsWithRandomCancelPoints: whatever the moment of cancellation, every
// stream ends with the cause (or cleanly if it had ended first), within 64 items, releases
// its source exactly once, and leaves no goroutine. Streams whose Recv stalls are cancelled
// from another goroutine; the others by the consumer itself at a random item.
func Test1000ConcurrentStreamsWithRandomCancelPoints(t *testing.T) {
	defer goleak.VerifyNone(t)
	const streams = 1000
	cause := errors.New("frontend gave up")
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		rng := rand.New(rand.NewPCG(uint64(i), 42))
		impl := impls[rng.IntN(len(impls))]
		items := rng.IntN(100)
		var src *fakeSource
		switch rng.IntN(3) {
		case 0:
			src = endless()
			items = 200
		case 1:
			src = stallingAfter(seq(items))
		default:
			src = newFake(seq(items)) // may end before the cancel comes
		}
		cancelAt := rng.IntN(items + 1)
		opts := []ctxstream.Option{ctxstream.WithCloser(src.Close)}
		if rng.IntN(2) == 0 {
			opts = append(opts, ctxstream.WithRecvTimeout(time.Hour))
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		reached := make(chan struct{})
		var cancelled atomic.Bool
		cancelNow := func() {
			cancel(cause)
			cancelled.Store(true)
		}
		if src.stall {
			wg.Add(1)
			go func() { // the canceller: elsewhere in the querier
				defer wg.Done()
				<-reached
				cancelNow()
			}()
		}
		wg.Add(1)
		go func() { // the consumer
			defer wg.Done()
			defer cancel(nil)
			it := impl.new(ctx, src, opts...)
			n, afterCancel := 0, 0
			signal := func() {
				if src.stall {
					close(reached)
				} else {
					cancelNow()
				}
			}
			if cancelAt == 0 {
				signal()
			}
			for it.Next() {
				n++
				if cancelled.Load() {
					afterCancel++
				}
				if n == cancelAt {
					signal()
				}
			}
			closeErr := it.Close()
			switch {
			case closeErr != nil:
				errs <- closeErr
			case src.closes.Load() != 1:
				errs <- errors.New(impl.name + ": closer ran " + itoa(int(src.closes.Load())) + " times")
			case afterCancel > 64:
				errs <- errors.New(impl.name + ": " + itoa(afterCancel) + " items after cancel")
			case it.Err() != nil && !errors.Is(it.Err(), cause):
				errs <- errors.New(impl.name + ": unexpected error: " + it.Err().Error())
			case it.Err() == nil && !(n == len(src.items) && !src.stall && !src.endless):
				errs <- errors.New(impl.name + ": nil error but the stream did not reach EOF")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// blockedSource blocks in Recv until unblock is closed, whatever happens to the iterator: a
// source without a closer.
type blockedSource struct {
	entered  chan struct{}
	unblock  chan struct{}
	returned atomic.Bool
}

func (s *blockedSource) Recv() (int, error) {
	close(s.entered)
	<-s.unblock
	s.returned.Store(true)
	return 0, errReleased
}

func TestEagerNextReturnsOnCancelEvenWhenRecvIgnoresIt(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	src := &blockedSource{entered: make(chan struct{}), unblock: make(chan struct{})}
	it := ctxstream.Eager(ctx, src) // no closer: nothing can interrupt this Recv
	go func() {
		<-src.entered
		cancel()
	}()
	require.False(t, it.Next(), "Next waits only on what the context can end")
	require.ErrorIs(t, it.Err(), context.Canceled)
	require.False(t, src.returned.Load(), "Recv is still stuck")

	// Close must wait for the prefetch goroutine, which is inside Recv: it returns only once
	// Recv has returned.
	closed := make(chan bool)
	go func() {
		it.Close()
		closed <- src.returned.Load()
	}()
	close(src.unblock)
	require.True(t, <-closed, "Close returned only after the stuck Recv returned")
}

func TestLazyCloseReturnsAtOnceWhenRecvIgnoresIt(t *testing.T) {
	defer goleak.VerifyNone(t)
	src := &blockedSource{entered: make(chan struct{}), unblock: make(chan struct{})}
	it := ctxstream.Lazy(context.Background(), src)
	nextDone := make(chan bool)
	go func() { nextDone <- it.Next() }()
	<-src.entered
	require.NoError(t, it.Close(), "Lazy has no goroutine to wait for")
	require.False(t, src.returned.Load(), "the consumer is still in Recv")
	close(src.unblock)
	require.False(t, <-nextDone)
	require.NoError(t, it.Err(), "closed by the caller")
}

func TestCloseRacingNextOnNeverBlockingSource(t *testing.T) {
	defer goleak.VerifyNone(t)
	less := func(a, b int) bool { return a < b }
	for round := range 50 {
		srcs := []*fakeSource{endless(), endless()}
		var it *ctxstream.Iter[int]
		switch round % 3 {
		case 0:
			it = ctxstream.Lazy(context.Background(), srcs[0], ctxstream.WithCloser(srcs[0].Close))
			srcs = srcs[:1]
		case 1:
			it = ctxstream.Eager(context.Background(), srcs[0], ctxstream.WithCloser(srcs[0].Close))
			srcs = srcs[:1]
		default:
			it = ctxstream.Merge(less,
				ctxstream.Lazy(context.Background(), srcs[0], ctxstream.WithCloser(srcs[0].Close)),
				ctxstream.Eager(context.Background(), srcs[1], ctxstream.WithCloser(srcs[1].Close)))
		}
		started := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			close(started)
			for it.Next() {
			}
		}()
		<-started
		require.NoError(t, it.Close())
		<-done
		require.NoError(t, it.Err())
		for _, s := range srcs {
			require.EqualValues(t, 1, s.closes.Load())
		}
	}
}

func TestZeroIterIsRejectedNotPanicking(t *testing.T) {
	var it ctxstream.Iter[int]
	require.False(t, it.Next())
	require.ErrorIs(t, it.Err(), ctxstream.ErrInvalid)
	require.NoError(t, it.Close())
}

// bigSource hands out 1 MiB responses and keeps a weak pointer to each.
type bigSource struct {
	sent []weak.Pointer[[1 << 20]byte]
}

func (s *bigSource) Recv() (*[1 << 20]byte, error) {
	b := new([1 << 20]byte)
	s.sent = append(s.sent, weak.Make(b))
	return b, nil
}

func TestEagerRingDoesNotKeepReturnedItemsAlive(t *testing.T) {
	defer goleak.VerifyNone(t)
	src := &bigSource{}
	it := ctxstream.Eager[*[1 << 20]byte](context.Background(), src, ctxstream.WithBuffer(4))
	for range 3 {
		require.True(t, it.Next())
	}
	require.NoError(t, it.Close()) // the goroutine has exited: src.sent is ours to read
	require.False(t, it.Next())
	require.True(t, it.At() == nil, "At is the zero value after the end")
	runtime.GC()
	for i, w := range src.sent {
		require.True(t, w.Value() == nil, "response %d of %d is still reachable", i, len(src.sent))
	}
	runtime.KeepAlive(it) // the iterator itself, with its ring, holds none of them
}

// runToEnd reads a stream of three items to its end and closes it; it returns a weak pointer
// to the source so that the caller can see whether anything still holds the stream.
func runToEnd(t *testing.T, ctx context.Context, impl newIter) weak.Pointer[fakeSource] {
	src := newFake(seq(3))
	it := impl(ctx, src, ctxstream.WithCloser(src.Close))
	require.Equal(t, seq(3), collect(it))
	require.NoError(t, it.Close())
	return weak.Make(src)
}

// A querier's streams are built on a context that can outlive them by far (the server's, or a
// long query's). Once a stream has ended, that context must not keep it, its source and its
// last response reachable: the context.AfterFunc registration is undone when the stream ends.
func TestEndedStreamIsNotKeptAliveByItsContext(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // only after the check: the context outlives every stream
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			w := runToEnd(t, ctx, impl.new)
			runtime.GC()
			require.Nil(t, w.Value(), "the ended stream is still reachable from its live context")
		})
	}
}

// pingPongSource hands out item i+1 only once the consumer has taken item i, so that every
// item finds one side asleep and must wake it: the consumer waiting for an item, and with a
// buffer of one, the prefetch waiting for space.
type pingPongSource struct {
	taken chan struct{}
	i, n  int
}

func (s *pingPongSource) Recv() (int, error) {
	if s.i > 0 {
		<-s.taken
	}
	if s.i == s.n {
		return 0, io.EOF
	}
	s.i++
	return s.i, nil
}

// A lost wake-up between Eager's prefetch goroutine and its consumer would leave both asleep
// with an item published: the stream would hang here (and go test's timeout would say so).
func TestEagerNeverLosesAWakeUp(t *testing.T) {
	const rounds = 50000
	for _, buffer := range []int{1, 2, 64} {
		t.Run("buffer="+itoa(buffer), func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := &pingPongSource{taken: make(chan struct{}, 1), n: rounds}
			it := ctxstream.Eager(context.Background(), src, ctxstream.WithBuffer(buffer))
			n := 0
			for it.Next() {
				n++
				require.Equal(t, n, it.At())
				src.taken <- struct{}{}
			}
			require.NoError(t, it.Err())
			require.Equal(t, rounds, n)
			require.NoError(t, it.Close())
		})
	}
}

// echoSource is a stream opened on its own context, as a gRPC client stream is: its Recv
// blocks until that context ends and then fails with an error of its own (gRPC's
// codes.Canceled), not with the cause.
type echoSource struct {
	ctx     context.Context
	entered chan struct{}
}

var errEcho = errors.New("rpc error: code = Canceled desc = context canceled")

func (s echoSource) Recv() (int, error) {
	close(s.entered)
	for s.ctx.Err() == nil { // poll, so Recv returns while the cancellation is still spreading
		runtime.Gosched()
	}
	return 0, errEcho
}

// When the caller's context ends, the context package cancels its children one after another
// in no set order: the stream's context (whose Recv then fails with its echo) may go before the
// iterator's own derived context (Eager, WithRecvTimeout). Err must be the cause all the same.
// The stream context's many children make its cancellation slow, which widens that window.
func TestCancelIsReportedAsTheCauseNotAsTheStreamsEcho(t *testing.T) {
	defer goleak.VerifyNone(t)
	withTimeout := func(ctx context.Context, src ctxstream.Source[int], opts ...ctxstream.Option) *ctxstream.Iter[int] {
		return ctxstream.Lazy(ctx, src, append(opts, ctxstream.WithRecvTimeout(time.Hour))...)
	}
	for _, impl := range append(impls[1:len(impls):len(impls)], struct {
		name string
		new  newIter
	}{"lazy/recv-timeout", withTimeout}) {
		t.Run(impl.name, func(t *testing.T) {
			for range 20 {
				cause := errors.New("query cancelled upstream")
				ctx, cancel := context.WithCancelCause(context.Background())
				sctx, scancel := context.WithCancel(ctx)
				for range 2000 {
					context.AfterFunc(sctx, func() {})
				}
				src := echoSource{ctx: sctx, entered: make(chan struct{})}
				it := impl.new(ctx, src, ctxstream.WithCancel(scancel))
				go func() {
					<-src.entered
					cancel(cause)
				}()
				require.False(t, it.Next())
				require.ErrorIs(t, it.Err(), cause)
				require.NoError(t, it.Close())
			}
		})
	}
}

package ctxstream_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leaksafe/leaksafe/ctxstream"
)

// errReleased is what a stalled fakeSource returns once its closer has run, the way a gRPC
// stream returns codes.Canceled once its context is cancelled.
var errReleased = errors.New("fake source: released by its closer")

// fakeSource plays a store: it returns items (each after delay), then ends with end (nil means
// io.EOF), or, with stall, blocks in Recv until its closer (Close) runs. With endless it never blocks and never
// ends. It counts Recv and Close calls; it is safe for Close to run while Recv is blocked.
type fakeSource struct {
	items   []int
	end     error
	stall   bool
	endless bool
	delay   time.Duration // each Recv of an item takes this long (use under synctest)

	i        int
	recvs    atomic.Int64
	closes   atomic.Int32
	inRecv   atomic.Int32
	released chan struct{}
	stalled  chan struct{} // closed when Recv first blocks
	stallMu  sync.Once
}

func newFake(items []int) *fakeSource {
	return &fakeSource{items: items, released: make(chan struct{}), stalled: make(chan struct{})}
}

func stallingAfter(items []int) *fakeSource { s := newFake(items); s.stall = true; return s }
func failingAfter(items []int, err error) *fakeSource {
	s := newFake(items)
	s.end = err
	return s
}
func endless() *fakeSource { s := newFake(nil); s.endless = true; return s }

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func (s *fakeSource) Recv() (int, error) {
	s.recvs.Add(1)
	s.inRecv.Add(1)
	defer s.inRecv.Add(-1)
	if s.endless {
		s.i++
		return s.i, nil
	}
	if s.i < len(s.items) {
		time.Sleep(s.delay)
		s.i++
		return s.items[s.i-1], nil
	}
	if s.stall {
		s.stallMu.Do(func() { close(s.stalled) })
		<-s.released
		return 0, errReleased
	}
	if s.end != nil {
		return 0, s.end
	}
	return 0, io.EOF
}

// Close is the closer given to ctxstream; it must run exactly once.
func (s *fakeSource) Close() error {
	if s.closes.Add(1) == 1 {
		close(s.released)
	}
	return nil
}

type newIter func(ctx context.Context, src ctxstream.Source[int], opts ...ctxstream.Option) *ctxstream.Iter[int]

// impls are run by every behaviour test: the guarantees are the same for both.
var impls = []struct {
	name string
	new  newIter
}{
	{"lazy", ctxstream.Lazy[int]},
	{"eager", ctxstream.Eager[int]},
	{"eager/buffer=1", func(ctx context.Context, src ctxstream.Source[int], opts ...ctxstream.Option) *ctxstream.Iter[int] {
		return ctxstream.Eager(ctx, src, append(opts, ctxstream.WithBuffer(1))...)
	}},
}

func collect(it *ctxstream.Iter[int]) []int {
	var out []int
	for it.Next() {
		out = append(out, it.At())
	}
	return out
}

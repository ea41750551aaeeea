package ctxstream

import (
	"context"
	"time"
)

// DefaultBuffer is how many items Eager prefetches when WithBuffer is not given.
// Items are whole responses (a Thanos SeriesResponse can hold many chunks), so the bound is
// deliberately small: it is there to overlap the network with the consumer, not to hold a
// store's whole answer the way Thanos' eagerRespSet did.
const DefaultBuffer = 64

// Option configures Lazy and Eager.
type Option func(*config)

type config struct {
	recvTimeout time.Duration
	buffer      int
	closer      func() error
	metrics     *Metrics
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.buffer <= 0 {
		c.buffer = DefaultBuffer
	}
	return c
}

// WithRecvTimeout ends the stream with an error wrapping ErrRecvTimeout when a single Recv
// takes longer than d. Only time spent inside Recv counts: the consumer may take as long as it
// likes between items. d <= 0 means no per-Recv timeout.
//
// This is Thanos' store.response-timeout. The timeout can only interrupt a stalled Recv through
// the closer (WithCloser or WithCancel), exactly like cancellation: without one, the stream
// still ends with ErrRecvTimeout, but only once the stalled Recv returns by itself (see Close).
func WithRecvTimeout(d time.Duration) Option {
	return func(c *config) { c.recvTimeout = d }
}

// WithBuffer bounds Eager's prefetch: at most n items are received from the source and not yet
// returned by Next. n <= 0 means DefaultBuffer, n > MaxBuffer means MaxBuffer. Once the buffer
// is full, the prefetch resumes when a quarter of it is free, so that a slow consumer wakes the
// prefetch goroutine once per n/4 items rather than once per item. Lazy ignores it.
func WithBuffer(n int) Option {
	return func(c *config) { c.buffer = n }
}

// WithCloser sets the function that releases the source, and unblocks a Recv in progress
// (for a gRPC client stream: cancel the stream's context). It is called exactly once, as soon as
// the stream ends for any reason (EOF, source error, cancellation, deadline, Recv timeout, Close),
// possibly from another goroutine while Recv is running: that is its purpose. It must not block
// and must not call back into the iterator. Its error is returned by Close.
func WithCloser(closer func() error) Option {
	return func(c *config) { c.closer = closer }
}

// WithCancel is WithCloser for the common case of a stream opened with its own cancellable
// context, such as a generated gRPC client stream:
//
//	sctx, cancel := context.WithCancel(ctx)
//	stream, err := client.Series(sctx, req)
//	...
//	it := ctxstream.Lazy(ctx, stream, ctxstream.WithCancel(cancel))
func WithCancel(cancel context.CancelFunc) Option {
	return func(c *config) {
		if cancel == nil {
			c.closer = nil
			return
		}
		c.closer = func() error { cancel(); return nil }
	}
}

// WithMetrics counts streams opened and ended, by how they ended, in m (see NewMetrics).
// Several streams, usually all of a process, share one Metrics.
func WithMetrics(m *Metrics) Option {
	return func(c *config) { c.metrics = m }
}

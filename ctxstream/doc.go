// Package ctxstream iterates over Recv-style streams (gRPC client streams, Thanos store
// responses) so that cancellation, deadlines and a per-Recv timeout always end the stream,
// release its source, and leave no goroutine behind.
//
// # The incident
//
// Thanos v0.35.1's querier stopped checking the context in eagerRespSet. With querier→querier
// chaining, a cancelled query upstream was not seen downstream: a goroutine waited on the
// channel of a time.AfterFunc timer (which is nil, Thanos #7553) while a silent store sent
// nothing, Next waited on a WaitGroup that ignored the context, goroutines leaked in a
// saw-tooth, and queries hung until the frontend's timeout instead of store.response-timeout.
//
// # Usage
//
//	sctx, cancel := context.WithCancel(ctx)
//	stream, err := client.Series(sctx, req) // a generated gRPC client stream is a Source
//	if err != nil {
//		cancel()
//		return err
//	}
//	it := ctxstream.Lazy(ctx, stream, ctxstream.WithCancel(cancel), ctxstream.WithRecvTimeout(10*time.Second))
//	for resp := range it.All() { // All closes the iterator, also on break and panic
//		handle(resp)
//	}
//	return it.Err() // nil, context.Cause(ctx), ErrRecvTimeout (wrapped) or the stream's error
//
// Merge(less, its...) merges sorted iterators (one per store) with a loser tree; Eager adds a
// bounded prefetch goroutine per stream.
//
// # Guarantees
//
//   - The closer (WithCloser, WithCancel) runs exactly once per stream, as soon as the stream
//     ends for any reason: EOF, source error, cancellation, deadline, Recv timeout, Close, or
//     the end of a range over All (break, return, panic). It is registered with
//     context.AfterFunc, so it reaches a Recv blocked on another goroutine; Lazy starts no
//     goroutine at all, and nothing starts one per Recv.
//   - Nothing waits on what the context cannot end: Lazy's Next waits only inside Recv, which
//     the closer releases; Eager's Next waits on channels that ctx, the Recv timeout and Close
//     all close, even while its goroutine is stuck in Recv. Once ctx is done, Next returns
//     false within 64 items even for a source that never blocks (the hot path reads an atomic
//     flag set by the AfterFunc, and ctx.Err() once every 64 items), and Err returns
//     context.Cause(ctx).
//   - WithRecvTimeout measures only time spent inside Recv; a timeout is recognised by
//     context.Cause of a derived context, never by reading a timer's channel, and only by the
//     iterator's own cause value: a caller's cause that wraps ErrRecvTimeout is a
//     cancellation like any other. A timeout ends the stream after the items received before
//     the stall: Eager hands out what it had prefetched, as Lazy would have returned it,
//     however slow the consumer.
//   - Eager holds at most WithBuffer items, and its Close returns only after its goroutine
//     has exited. Merge closes an exhausted child at once and every child exactly once; a
//     child's error ends the merge with that error; equal items keep child order.
//   - Lazy costs no allocation per item; Metrics are touched once per stream, never per item.
//
// # Limits
//
//   - Nothing can interrupt a Recv that ignores its closer, or a source without a closer whose
//     Recv never returns. Then Lazy's Close returns at once but the goroutine calling Next
//     stays in Recv, and Eager's Close waits for its goroutine, that is, for Recv. Give every
//     stream that can stall a closer: for gRPC, cancel the stream's own context (WithCancel).
//   - A Recv timeout without a closer can only report: the stream ends with ErrRecvTimeout
//     (at once for Eager, when Recv returns for Lazy), but the Recv itself goes on.
//   - An Iter is for one consumer goroutine; only Close may be called concurrently.
//   - Merge trusts its children to be sorted by less; unsorted input is merged greedily (never
//     losing or repeating an item), not sorted.
package ctxstream

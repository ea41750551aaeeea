// Package pool is a bucketed slice pool that counts every lease, and the
// reference counts that go with it.
//
// # The incident
//
// A refactor of the Thanos store gateway dropped a deferred Close, so some
// Series calls never returned their chunk buffers and never released their
// block's reader count. The chunk pool's usedTotal climbed to its 30 GB cap,
// gets far outnumbered puts, block sync waited forever on pendingReaders,
// and nothing said which code held what. With this package the imbalance is
// a number from the first leaked lease (Stats, metrics), a test fails with
// the stack of the Get that leaked (Check, VerifyNone), and a block's
// readers can be waited on with a deadline that names who still holds it
// (Refs).
//
// # Usage
//
//	chunks, err := pool.New[byte](pool.Options{
//		Name: "chunks", MinSize: 16 << 10, MaxSize: 1 << 20, Factor: 2,
//		MaxTotal: 2 << 30, Registerer: reg, // 2 GiB in flight, at most
//	})
//	buf, err := chunks.Get(n) // len 0, cap >= n; errors.Is(err, pool.ErrExhausted) past MaxTotal
//	if err != nil { return err }
//	defer chunks.Put(buf)
//	*buf = append(*buf, data...)
//
// and in tests, with Options.Track set:
//
//	defer pool.VerifyNone(t, chunks, &block.Readers)
//
// # Guarantees
//
//   - Get(n) returns len 0 and cap >= n, always: a returned slice that grew
//     is filed in the largest bucket it fills, never in one it does not; one
//     smaller than the array its lease was handed is counted in Undersized
//     and not pooled (the lease's own array is), and nothing of a lease
//     above MaxSize is pooled.
//   - The sum of the capacities handed out (InUse) never exceeds MaxTotal,
//     not even for an instant under concurrency: a lease's charge is its
//     capacity, reserved by compare-and-swap before Get returns.
//   - Each lease remembers what it was charged, so a slice that grew while
//     leased releases exactly that.
//   - A Put of anything but an outstanding lease of this pool is counted in
//     BadPuts with its stack, and nothing is pooled: a foreign slice is never
//     handed out, and one array is never handed to two callers (but see the
//     trade-off below).
//   - With Track, Check and VerifyNone report every outstanding lease
//     grouped by the stack of its Get, most frequent first; leases that
//     became garbage without a Put are reported as such and their charge
//     released. TrackEvery does the same for one lease in N: a canary cheap
//     enough for production.
//   - Group returns a request's leases once, when its last user is done;
//     Refs counts a resource's holders and Wait(ctx) waits for them.
//
// # Cost
//
// Without tracking, a Get is one sync.Pool Get and one atomic store, a Put
// an address-range test, one compare-and-swap and one sync.Pool Put; neither
// allocates. Each lease's counters live in its own cache-line-sized record,
// so two cores never write the same line, and Stats sums the records. With
// MaxTotal, a free handle keeps its budget as parked credit, so the next Get
// of a same-sized lease touches no shared memory either; parked credit is
// reclaimed, by a walk over all records, only when a Get would otherwise be
// refused, and while that Get walks, Puts give their credit back instead of
// parking it, so a Get the budget can hold is not refused. Track costs a
// stack capture and a few small allocations per Get (microseconds): it is
// for tests and debugging. BENCHMARKS.md has figures.
//
// # Limits and trade-offs
//
// Double Put without Track. An untracked lease is handed out as a pointer
// into the pool's own record of it, and the record is reused for a later
// lease. A second Put of a lease is caught, exactly, as long as that record
// has not been leased again; once it has, the stale Put looks like the new
// holder's and ends that lease early, whose array can then reach two users
// (unless the new lease is one TrackEvery tracks: its holder has a different
// pointer, and the stale Put is caught). Counters alone cannot tell the two
// apart; making each lease a fresh pointer costs an allocation per Get.
// Track does exactly that: every tracked lease is a new pointer, so every
// double or foreign Put is caught and reported with the stack of the Get,
// the first Put and the bad Put.
// Run tests with Track; run production canaries with TrackEvery.
//
// Untracked leases are not watched by the garbage collector: a lost one
// stays Outstanding (and charged) forever, which is the point — it shows.
//
// Put does not clear the slice. If T holds pointers, clear it before Put if
// retaining what it references matters. Do not make two leases share an
// array (*a = *b): Put returns the array *b points to if it grew, and the
// pool cannot see that another lease also returns it.
//
// The pool keeps a 64-byte record per lease at its high-water mark of
// handles (leased plus pooled); records are reused but never freed. Pooled
// arrays and their handles are ordinary garbage: as with sync.Pool, the
// garbage collector empties the buckets over two cycles, and the parked
// credit of a collected handle returns to the budget.
//
// Stats reads the records one after another: each field is exact when the
// pool is quiet, and under traffic the snapshot may mix instants, but Gets
// and Puts never go down from one call to the next (Puts may lag by a lease
// being garbage-collected at that instant). They wrap after 2^53 leases of
// one record; Prometheus reads that as a counter reset.
package pool

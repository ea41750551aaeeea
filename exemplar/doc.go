// Package exemplar is a bounded, evicting exemplar store: a drop-in for
// Prometheus' tsdb.CircularExemplarStorage whose memory never passes its budget.
//
// # The incident
//
// Thanos Receive with --tsdb.max-exemplars=1000000 grew until it was OOM-killed:
// exemplars live only in memory, are never flushed, and nothing bounded their
// real size — only their count, and each one kept the caller's labels (in
// Thanos, views of whole remote-write requests). The advice was "lower the
// limit or turn exemplars off". This store bounds count and bytes, evicts by
// age and per series, copies what it keeps, and lets tenants share one budget.
//
// # Usage
//
//	store, err := exemplar.New(exemplar.Options{
//		MaxExemplars: 1_000_000,     // a cap, not an allocation
//		MaxBytes:     256 << 20,     // what the heap really holds, labels included
//		MaxAge:       2 * time.Hour, // relative to the newest exemplar seen
//	})
//	if err != nil { ... }
//	defer store.Close()
//	// Samples to the TSDB (its own exemplar storage off), exemplars to the store:
//	app := exemplar.Appendable(db, store).Appender(ctx)
//	// Exemplar queries from the store: it is a storage.ExemplarQueryable.
//	res, err := store.Select(start, end, matchers...)
//
// # Guarantees
//
//   - Same answers as Prometheus v0.315.0's store for the same calls:
//     duplicates as exemplar.Exemplar.Equals defines them (AddExemplar
//     returns nil and stores nothing, ValidateExemplar returns
//     storage.ErrDuplicateExemplar), storage.ErrOutOfOrderExemplar outside
//     OOOWindow (with Prometheus' ordering of equal timestamps by value, then
//     label hash), storage.ErrExemplarLabelLength past 128 runes, the same
//     eviction order (oldest added first), the same Select and
//     IterateExemplars results. A differential test runs random sequences
//     against both stores. AddExemplar refuses exactly what ValidateExemplar
//     refuses.
//   - Every limit is enforced inside AddExemplar (and SetLimits), never by a
//     background goroutine: the store starts none. Stats().Bytes counts what
//     the Go heap holds for the store — slot pages, series table, index,
//     label copies, each rounded to its runtime size class — and never passes
//     MaxBytes. Measured: heap growth stays at MaxBytes while 1M distinct
//     series with 200-byte labels churn through.
//   - Nothing is preallocated for MaxExemplars. Memory is returned as
//     exemplars go: a series leaves the index with its last exemplar, and the
//     index, series table and slot pages shrink after churn.
//   - Series labels are held once per series; every label kept is a private
//     copy (both label builds: default stringlabels and -tags slicelabels), so
//     reusing a request buffer never changes stored labels and storing never
//     keeps it alive. Select and IterateExemplars return memory no later write
//     can change.
//   - MaxPerSeries: a series at its cap drops its own oldest exemplar; no
//     other series loses one for it. Gaps it leaves in the ring are compacted
//     before the byte limit would evict anyone. Only a new exemplar that needs
//     more room than the one it replaces (longer labels) can take more, and
//     it goes through the same checks as any other add first.
//   - MaxAge: exemplars older than the newest accepted timestamp minus MaxAge
//     are removed as soon as an add moves the newest timestamp, wherever they
//     sit, and are never returned.
//   - A Budget shares one byte limit among many stores (one per tenant). When
//     it is spent, the store holding the oldest exemplar among those above the
//     per-store floor gives it up — a noisy tenant cannot push the others below
//     their floor. An exemplar that could not fit even with every other store
//     at its floor is refused with ErrExemplarTooLarge before anything is
//     evicted for it (so is one larger than MaxBytes with the store empty):
//     AddExemplar never evicts for an exemplar it then refuses.
//
// # Deliberate differences from Prometheus
//
// Stale re-adds (prometheus/prometheus#9377): OpenMetrics targets keep exposing
// their last exemplar, and once a series' exemplars have been evicted
// Prometheus no longer sees the re-sent one as a duplicate and evicts a newer
// exemplar to store it again. This store refuses, with
// storage.ErrOutOfOrderExemplar (so callers need no new handling), counted in
// Stats().Refused and prometheus_tsdb_exemplar_refused_exemplars_total:
//   - stale_full: storing it needs an eviction and it is older than the
//     exemplar that would be evicted first. Under a Budget a store is judged
//     only against its own exemplars (tenants' clocks need not agree), and
//     only when it is the one that is full: it would give up its own oldest,
//     or it holds more than the floor. Below its floor it takes the room;
//   - stale_age: with MaxAge, it is already older than the cutoff.
//
// These are the only differences for input Prometheus' head would pass on.
// The new limits add their own refusals: stale_series (a series at
// MaxPerSeries gets an exemplar older than all it holds) and
// ErrExemplarTooLarge (one exemplar with its series labels exceeds MaxBytes
// or the budget). Series label sets the head never holds — empty, or with a
// repeated name — get ErrInvalidSeriesLabels. NaN and ±Inf values are kept
// exactly as Prometheus keeps them; like Prometheus, a re-sent NaN exemplar is
// never a duplicate (NaN != NaN).
//
// # Layout
//
// Exemplars sit in a ring of 56-byte pointer-free slots (14 KiB pages, never
// scanned by the GC) in the order they were added; labels are packed into the
// slot (a set of up to 27 bytes as its plain text, copied in one move;
// otherwise label names become one-byte symbols and, when a set does not fit
// the 28 inline bytes, lowercase hex values such as trace and span ids are
// stored as the bytes they spell, so a trace and a span id fit; what still
// does not fit spills into following slots). Each series is a 40-byte entry holding
// one copy of its labels, linked to its exemplars in timestamp order, found
// through an open-addressing index of 4-byte ids. Measured with distinct
// 32-hex trace ids: 56-57 heap bytes per exemplar with 1,000 series and 69
// with 100,000, series included; Prometheus' store holds 115-127
// (stringlabels) and 139-152 (slicelabels) for the same data. The price of
// the small slot is a hex-packing pass over each trace id as it is added
// (SSE2 on amd64; -tags purego, or another architecture, does it in Go) and
// a spelling-out as Select returns it. See BENCHMARKS.md.
//
// # Limits of this package
//
//   - Memory moves in pages: at the byte limit the store may evict up to a
//     page's worth (256) of the oldest exemplars at once.
//   - A store holds at most MaxExemplarsLimit (2^24-1) exemplars: a slot
//     names its series in 24 bits. Prometheus' store of that size would
//     preallocate 1 GiB.
//   - Compaction of the gaps MaxPerSeries and MaxAge leave is amortised, but a
//     single add can pay for sliding everything after the first gap.
//   - MaxAge trusts timestamps: one exemplar stamped far in the future ages out
//     everything else.
//   - IterateExemplars calls its function under the store's read lock; the
//     function must not add to the store (as with Prometheus).
//   - The exemplar labels Select and IterateExemplars return are pieces of
//     shared blocks (4 KiB of text in the default build; up to 256 labels and
//     4 KiB of values with slicelabels): a caller that keeps one exemplar's
//     labels keeps its block. Nothing in a block is shared with the store or
//     ever written again. In the default build each set is a view of its
//     block, made through unsafe after a load-time check that labels.Labels
//     is still one string of that text; if a Prometheus upgrade changes
//     that, each set is built and copied instead (one allocation per set).
//   - A Budget picks its victim by scanning its stores: fine for hundreds or a
//     few thousand tenants. It judges the other stores by what they last
//     published, so with tenants adding concurrently the up-front
//     ErrExemplarTooLarge check is best effort.
//
// # Metrics
//
// With Options.Registerer: Prometheus' prometheus_tsdb_exemplar_* series
// (exemplars_appended_total, exemplars_in_storage,
// series_with_exemplars_in_storage, last_exemplars_timestamp_seconds,
// max_exemplars, out_of_order_exemplars_total) plus bytes_in_storage,
// max_bytes, evicted_exemplars_total{reason} and
// refused_exemplars_total{reason}; a Budget adds budget_used_bytes,
// budget_max_bytes, budget_floor_bytes and budget_stores. They are read at
// scrape time; the add path pays nothing for them.
package exemplar

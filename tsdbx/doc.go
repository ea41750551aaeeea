// Package tsdbx empties the head of an idle Prometheus TSDB: the in-order and
// the out-of-order head, without losing a sample that was acknowledged.
//
// # The incident
//
// A Cortex ingester compacts a tenant's head once the tenant stops sending
// samples, so that its series leave memory. The idle path called
// db.CompactHead but never db.CompactOOOHead: a tenant that had ingested
// out-of-order samples kept those series in its head forever, its active
// series never dropped to zero and the memory was never released. Cortex
// fixed it in PR #6108, Mimir in #4180; Thanos Receive's flushHead still calls
// only CompactHead.
//
// # Usage
//
//	db, _ := tsdb.Open(dir, logger, reg, opts, nil) // one per tenant
//	c, err := tsdbx.NewIdleCompactor(db, tsdbx.IdleOptions{
//		IdleTimeout: time.Hour, CheckInterval: time.Minute,
//		Registerer:  prometheus.WrapRegistererWith(prometheus.Labels{"tenant": id}, reg),
//	})
//	go c.Run(ctx)                              // compacts when idle; returns nil when ctx ends
//	app := c.Appendable().Appender(ctx)        // the push path appends through the wrapper
//	app.Append(0, lset, ts, v)
//	err = app.Commit()                         // ErrCompactionInProgress: nothing stored, retry (503)
//	c.CompactNow(ctx)                          // flush on shutdown, after Run returned
//
// CompactHead(ctx, db) is the compaction alone, for callers that stop appends
// themselves.
//
// # Guarantees
//
//   - CompactHead writes the whole in-order head (not only the part older than
//     1.5 block ranges that db.Compact takes) in block-aligned ranges no
//     longer than the DB's block range, then always the out-of-order head,
//     then evicts series left without samples by rolled-back appenders.
//     Afterwards db.Head().NumSeries() is 0 unless something was appended
//     meanwhile. Errors of all phases are joined.
//   - An in-order head without samples is never passed to db.CompactHead,
//     which would move its MinTime forward 1 ms per call. A head without
//     series is a no-op: db.CompactOOOHead would cut a WBL segment each time.
//   - Every sample whose Append and Commit through Appendable returned nil is
//     served by db.Querier after the compaction and after a restart (WAL
//     replay), floats and native histograms, in-order and out-of-order, with
//     tsdb.Options.IsolationDisabled true or false.
//   - Idleness counts from the last Commit through Appendable that stored a
//     sample (or Touch). A Commit that stored nothing (every sample rejected,
//     or none sent) is not activity: a client whose requests are all refused
//     would otherwise keep an idle tenant's head in memory for ever, the
//     incident's very symptom.
//   - An idle compaction is abandoned, and the gate reopened, if a push
//     committed between the idleness check and the end of the drain.
//   - A failed compaction leaves the DB usable and its data in the head; the
//     next attempt retries. Every failure is logged once and counted,
//     whichever method started it. Run returns nil when its context ends,
//     leaving no goroutine behind.
//
// # Why appends are gated, and how
//
// In Prometheus v0.315.0 an appender fixes its minimum valid time when it is
// created. One opened before a full head compaction and committed after it
// writes into the range just persisted and truncated: Commit returns nil and
// the sample is gone after the next restart. Prometheus' guard,
// Head.WaitForAppendersOverlapping, is not called by db.CompactHead and does
// nothing when isolation is disabled, which is how Cortex and Mimir run.
//
// Mimir's answer refuses only samples at or before the compaction's max time;
// it needs the lowest timestamp of a request before the appender opens, and an
// appender opened earlier may already hold buffered samples in the range.
// storage.Appender learns timestamps one Append at a time, so tsdbx takes
// Cortex' answer, which holds for both phases with isolation on and off: a
// compaction closes a gate, waits for the appenders opened through Appendable
// before it (their samples land in the blocks it writes), and refuses new
// ones until it is done. A refused appender stores nothing and returns
// ErrCompactionInProgress from every method, rather than blocking: Appender()
// cannot return an error, a blocked push path queues requests without bound,
// and remote-write clients already retry 5xx. Idle tenants rarely append, so
// the refusal is rare. The cost is two mutex operations per appender (open
// and Commit/Rollback), none per sample.
//
// # Limits
//
//   - Appends made directly through db, not through Appendable, are not
//     coordinated with compaction. Use one IdleCompactor per DB.
//   - An appender never committed nor rolled back fails every compaction
//     attempt with ErrAppendersInFlight after IdleOptions.DrainTimeout, during
//     which new appenders are refused; appends never block on it. Run then
//     leaves the gate open a whole CheckInterval before it tries again (and
//     DrainTimeout must be shorter than CheckInterval), so such a tenant's
//     pushes are refused at most DrainTimeout out of every
//     DrainTimeout+CheckInterval. leaksafe_tsdbx_appenders_in_flight shows it.
//   - Head truncation waits, without cancellation, for queriers overlapping
//     the head: a querier that is never closed blocks compaction forever.
//     ctx is checked only between phases and block ranges;
//     leaksafe_tsdbx_compaction_waiting_seconds shows how long a phase has
//     been running. Under IdleCompactor, appends through Appendable are
//     refused for that whole wait (an appender opened before the truncation
//     ends would write into the range just persisted), so a leaked querier
//     turns into ErrCompactionInProgress for every push to that DB.
//   - Prometheus does not persist how far out-of-order chunks were truncated,
//     so after a restart it reloads already-compacted out-of-order chunks into
//     the head. They are served once (deduplicated against the blocks) and the
//     next idle compaction empties the head again.
//   - Prometheus cannot write a sample to a block in order at math.MaxInt64,
//     nor out of order before 1970 or in the last block range before
//     math.MaxInt64 (its compaction would write a corrupt block, drop the
//     samples, or loop forever). CompactHead compacts everything else, leaves
//     those in the head and returns ErrUnpersistableTimestamp, at every call:
//     reject such timestamps at ingestion.
//   - tsdb.DB does not expose its block range; tsdbx reads it once per DB
//     from tsdb.NewOOOCompactionHead, which cuts and fsyncs a WBL segment.
package tsdbx

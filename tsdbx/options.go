package tsdbx

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by NewIdleCompactor to zero-valued durations. The first two
// match the defaults of Cortex' -blocks-storage.tsdb.head-compaction-idle-timeout
// and -blocks-storage.tsdb.head-compaction-interval. DefaultDrainTimeout has no
// Cortex counterpart (Cortex waits for in-flight pushes without a bound); it is
// far above the life of a healthy push and far below DefaultCheckInterval,
// because a leaked appender refuses a tenant's pushes for up to DrainTimeout at
// every attempt.
const (
	DefaultIdleTimeout   = time.Hour
	DefaultCheckInterval = time.Minute
	DefaultDrainTimeout  = 10 * time.Second
)

var (
	// ErrNilDB is returned when a nil *tsdb.DB is passed in.
	ErrNilDB = errors.New("tsdbx: nil *tsdb.DB")

	// ErrInvalidOptions wraps every option validation error of NewIdleCompactor.
	ErrInvalidOptions = errors.New("tsdbx: invalid options")

	// ErrNotConstructed is returned by the methods of an IdleCompactor that
	// NewIdleCompactor did not make (a zero value or a nil pointer).
	ErrNotConstructed = errors.New("tsdbx: IdleCompactor not made by NewIdleCompactor")

	// ErrCompactionInProgress is returned by every method of an appender that
	// IdleCompactor.Appendable handed out while a compaction of its DB was running.
	// Nothing was stored; the append is safe to retry once the compaction is over
	// (map it to HTTP 503 / gRPC Unavailable so remote-write clients retry).
	ErrCompactionInProgress = errors.New("tsdbx: head compaction in progress, retry the append")

	// ErrUnpersistableTimestamp is returned by CompactHead when the head holds
	// a sample that Prometheus cannot write to a block: in order at
	// math.MaxInt64, or out of order before 1970 or in the last block range
	// before math.MaxInt64. Everything else is compacted; those samples and
	// their series stay in the head, so it never becomes empty. Reject such
	// timestamps at ingestion (Cortex' and Mimir's future/past grace periods).
	ErrUnpersistableTimestamp = errors.New("tsdbx: the head holds a sample no block can hold")

	// ErrAppendersInFlight is returned when appenders opened before a compaction
	// did not Commit or Rollback within IdleOptions.DrainTimeout. The compaction
	// did not start; the head is unchanged and the next attempt retries. It
	// usually means an appender was leaked (neither committed nor rolled back).
	ErrAppendersInFlight = errors.New("tsdbx: appenders opened before the compaction did not finish")
)

// IdleOptions configures an IdleCompactor. The zero value is usable: durations
// left at zero take the Default* values above.
type IdleOptions struct {
	// IdleTimeout is how long no successful append may have happened before
	// the DB counts as idle. 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// CheckInterval is how often Run calls CompactIfIdle. 0 means DefaultCheckInterval.
	CheckInterval time.Duration
	// DrainTimeout bounds how long a compaction waits for appenders that were
	// opened through Appendable before it started, and so how long new
	// appenders are refused when one of those is leaked. It must be shorter
	// than CheckInterval: after a drain gives up, Run keeps the gate open for a
	// whole CheckInterval before it shuts it again, so pushes are refused at
	// most DrainTimeout out of every DrainTimeout+CheckInterval. 0 means
	// DefaultDrainTimeout, or a quarter of CheckInterval if that is shorter.
	DrainTimeout time.Duration
	// Logger receives one line per compaction and one per failed attempt (each
	// one leaksafe_tsdbx_head_compaction_failures_total counts), whether Run,
	// CompactIfIdle or CompactNow started it. nil discards.
	Logger *slog.Logger
	// Registerer, when set, receives the metrics in metrics.go. Several
	// compactors (one per tenant) need distinct labels: wrap it with
	// prometheus.WrapRegistererWith(prometheus.Labels{"tenant": id}, reg).
	Registerer prometheus.Registerer
	// Now is the clock for idleness and durations (tests inject a fake one).
	// nil means time.Now.
	Now func() time.Time
}

func (o IdleOptions) withDefaults() (IdleOptions, error) {
	for _, d := range []struct {
		name  string
		value time.Duration
	}{
		{"IdleTimeout", o.IdleTimeout},
		{"CheckInterval", o.CheckInterval},
		{"DrainTimeout", o.DrainTimeout},
	} {
		if d.value < 0 {
			return o, fmt.Errorf("%w: %s is %v, must not be negative", ErrInvalidOptions, d.name, d.value)
		}
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = max(min(DefaultDrainTimeout, o.CheckInterval/4), 1)
	}
	if o.DrainTimeout >= o.CheckInterval {
		// Refused pushes are not activity, so a tenant with a leaked appender
		// stays idle and every check drains again: with drains as long as the
		// interval between checks, the gate would hardly ever be open.
		return o, fmt.Errorf("%w: DrainTimeout (%v) must be shorter than CheckInterval (%v): a leaked appender refuses pushes for DrainTimeout at every check",
			ErrInvalidOptions, o.DrainTimeout, o.CheckInterval)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

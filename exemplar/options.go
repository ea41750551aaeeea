package exemplar

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Store. MaxExemplars is required; every other limit is off
// at its zero value.
type Options struct {
	// MaxExemplars caps how many exemplars the store holds (> 0), like
	// Prometheus' --storage.exemplars.exemplars-limit / Thanos'
	// --tsdb.max-exemplars. It is a cap, not a preallocation: memory grows with
	// what is stored.
	MaxExemplars int64
	// MaxBytes caps the heap the store holds, counted the way the Go heap counts
	// it: slot pages, series labels, the index, size-class rounding. 0 means the
	// count cap only; otherwise it must be at least MinBytes.
	MaxBytes int64
	// MaxAge evicts exemplars older than the newest exemplar timestamp the store
	// has accepted minus MaxAge, and refuses exemplars already that old. 0 is off;
	// otherwise at least a millisecond (exemplar timestamps are milliseconds).
	MaxAge time.Duration
	// MaxPerSeries caps the exemplars kept per series: a series at its cap
	// evicts its own oldest exemplar, never another series'. 0 is no cap.
	MaxPerSeries int
	// OOOWindow accepts exemplars up to this much older than their series'
	// newest exemplar, exactly as Prometheus' out-of-order time window does.
	// 0 (Prometheus' default) accepts only in-order exemplars.
	OOOWindow time.Duration
	// Registerer, when set, receives the store's metrics (see metrics.go). Give
	// each store of a multi-tenant process its own wrapped Registerer, e.g.
	// prometheus.WrapRegistererWith(prometheus.Labels{"tenant": t}, reg).
	// Used by New only.
	Registerer prometheus.Registerer
	// Budget, when set, makes the store draw its bytes from a byte budget shared
	// with other stores (one per tenant, typically). MaxBytes still caps the
	// store on its own. It must come from NewBudget: New refuses a zero
	// Budget with ErrInvalidOptions. Used by New only.
	Budget *Budget
}

const (
	// MinBytes is the smallest non-zero MaxBytes: one slot page, one series
	// page, a small index and the store itself, with room to spare.
	MinBytes = 64 << 10
	// MaxExemplarsLimit is the largest MaxExemplars a store accepts: a
	// slot names its series in 24 bits, and a store never holds more series
	// than exemplars. (Prometheus preallocates 64 bytes per exemplar: such a
	// store would take 1 GiB before its first exemplar.)
	MaxExemplarsLimit = 1<<24 - 1
)

var (
	// ErrInvalidOptions is returned (wrapped, with the reason) by New,
	// SetLimits, NewBudget for options that cannot work.
	ErrInvalidOptions = errors.New("exemplar: invalid options")
	// ErrInvalidSeriesLabels is returned (wrapped) for an exemplar whose series
	// label set is empty or has a repeated label name. Prometheus' head never
	// holds such a series, so no exemplar Prometheus would keep is refused.
	ErrInvalidSeriesLabels = errors.New("exemplar: invalid series labels")
	// ErrUnknownSeriesRef is returned (wrapped, with the ref, in the head's
	// words) by an Appendable's AppendExemplar given a ref and no series
	// labels, when the ref is not one its wrapped appender returned in this
	// transaction: it cannot tell which series the exemplar belongs to.
	ErrUnknownSeriesRef = errors.New("exemplar: unknown HeadSeriesRef when trying to add exemplar")
	// ErrExemplarTooLarge is returned (wrapped) when one exemplar with its series
	// labels is larger than MaxBytes (or its budget) even with the store empty.
	ErrExemplarTooLarge = errors.New("exemplar: exemplar and its series labels exceed the byte limit")
)

// limits is Options reduced to what the store consults on every add.
type limits struct {
	maxExemplars int64 // 0: disabled (only through Resize(<=0) or Close, as in Prometheus)
	maxBytes     int64 // 0: off
	maxAgeMs     int64 // 0: off
	maxPerSeries int64 // 0: off
	oooWindowMs  int64
}

func (o Options) limits() (limits, error) {
	var errs []error
	if o.MaxExemplars <= 0 || o.MaxExemplars > MaxExemplarsLimit {
		errs = append(errs, fmt.Errorf("MaxExemplars must be in [1, %d], got %d", int64(MaxExemplarsLimit), o.MaxExemplars))
	}
	if o.MaxBytes < 0 || (o.MaxBytes > 0 && o.MaxBytes < MinBytes) {
		errs = append(errs, fmt.Errorf("MaxBytes must be 0 (off) or at least MinBytes (%d), got %d", MinBytes, o.MaxBytes))
	}
	if o.MaxAge < 0 || (o.MaxAge > 0 && o.MaxAge < time.Millisecond) {
		errs = append(errs, fmt.Errorf("MaxAge must be 0 (off) or at least 1ms, got %s", o.MaxAge))
	}
	if o.MaxPerSeries < 0 {
		errs = append(errs, fmt.Errorf("MaxPerSeries must be >= 0, got %d", o.MaxPerSeries))
	}
	if o.OOOWindow < 0 {
		errs = append(errs, fmt.Errorf("OOOWindow must be >= 0, got %s", o.OOOWindow))
	}
	if len(errs) > 0 {
		return limits{}, fmt.Errorf("%w: %w", ErrInvalidOptions, errors.Join(errs...))
	}
	return limits{
		maxExemplars: o.MaxExemplars,
		maxBytes:     o.MaxBytes,
		maxAgeMs:     o.MaxAge.Milliseconds(),
		maxPerSeries: int64(o.MaxPerSeries),
		oooWindowMs:  o.OOOWindow.Milliseconds(),
	}, nil
}

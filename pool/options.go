package pool

import (
	"errors"
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configures a Pool. There is no useful zero value: MinSize, MaxSize
// and Factor must be set, and New says which one is wrong.
type Options struct {
	// Name identifies the pool in metrics (label pool="...") and leak
	// reports. Required when Registerer is set.
	Name string
	// MinSize is the smallest bucket capacity, in elements (> 0).
	MinSize int
	// MaxSize is the largest bucket capacity (>= MinSize). Larger requests
	// are served by a fresh allocation that is counted like any lease but
	// never pooled.
	MaxSize int
	// Factor is the growth factor between bucket capacities (> 1). The last
	// bucket is always exactly MaxSize.
	Factor float64
	// MaxTotal bounds the elements leased at once, counted in the capacity
	// handed out. 0 means unlimited. A Get that would pass it returns an
	// error wrapping ErrExhausted.
	MaxTotal int64
	// Track remembers every outstanding lease with the stack of its Get, so
	// Check names the line that leaked, and catches every double or foreign
	// Put with both stacks. It allocates per Get: use it in tests.
	Track bool
	// TrackEvery, with Track off, tracks one lease in TrackEvery (chosen at
	// random) the same way: cheap enough for production canaries. 0 = none.
	TrackEvery int
	// Registerer, when set, receives the pool's metrics (see metrics.go).
	Registerer prometheus.Registerer
}

// maxBuckets bounds the bucket table: a Factor barely above 1 over a wide
// size range would otherwise build millions of buckets, and a lease records
// its bucket in 8 bits of its state word (see record).
const maxBuckets = 255

// ErrInvalidOptions is wrapped by every error New returns for bad Options,
// by Get on a Pool or Group that New or NewGroup did not build, and by Check
// on a nil *Pool or *Refs.
var ErrInvalidOptions = errors.New("invalid pool options")

func (o *Options) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	switch {
	case o.MinSize <= 0:
		return bad("MinSize must be > 0, got %d", o.MinSize)
	case o.MaxSize < o.MinSize:
		return bad("MaxSize (%d) must be >= MinSize (%d)", o.MaxSize, o.MinSize)
	case math.IsNaN(o.Factor) || math.IsInf(o.Factor, 0) || o.Factor <= 1:
		return bad("Factor must be a finite number > 1, got %v", o.Factor)
	case o.MaxTotal < 0:
		return bad("MaxTotal must be >= 0 (0 = unlimited), got %d", o.MaxTotal)
	case o.TrackEvery < 0:
		return bad("TrackEvery must be >= 0 (0 = off), got %d", o.TrackEvery)
	case o.Registerer != nil && o.Name == "":
		return bad("Name is required when Registerer is set (it is the pool label)")
	}
	if n := len(bucketSizes(o.MinSize, o.MaxSize, o.Factor, maxBuckets+1)); n > maxBuckets {
		return bad("MinSize %d, MaxSize %d and Factor %v make more than %d buckets; raise Factor",
			o.MinSize, o.MaxSize, o.Factor, maxBuckets)
	}
	return nil
}

// bucketSizes lists capacities from minSize growing by factor, always ending
// exactly at maxSize, and stops early once limit sizes are listed.
func bucketSizes(minSize, maxSize int, factor float64, limit int) []int {
	var sizes []int
	for s := minSize; len(sizes) < limit; {
		sizes = append(sizes, s)
		if s >= maxSize {
			break
		}
		next := float64(s) * factor
		switch {
		case next >= float64(maxSize):
			s = maxSize
		case int(next) <= s:
			s++ // a factor too small to move an integer size still makes progress
		default:
			s = int(next)
		}
	}
	return sizes
}

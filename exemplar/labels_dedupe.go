//go:build dedupelabels && !slicelabels

package exemplar

import (
	"errors"
	"hash/maphash"

	"github.com/prometheus/prometheus/model/labels"
)

// storedEqual compares in place, label by label, stopping at the first
// difference: this runs on every add.
func storedEqual(s storedSeriesLabels, ls labels.Labels, _ *[]byte) bool {
	p, i := string(s), 0
	err := ls.Validate(func(l labels.Label) error {
		if i >= len(p) {
			return errDiffer
		}
		var n, v string
		n, i = nextPacked(p, i)
		if n != l.Name {
			return errDiffer
		}
		v, i = nextPacked(p, i)
		if v != l.Value {
			return errDiffer
		}
		return nil
	})
	return err == nil && i == len(p)
}

var errDiffer = errors.New("labels differ")

// hashSeriesLabels mixes Prometheus' hash of l with the seed.
func hashSeriesLabels(seed maphash.Seed, l labels.Labels) uint64 {
	return maphash.Comparable(seed, l.Hash())
}

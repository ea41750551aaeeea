//go:build dedupelabels && !slicelabels

package exemplar

import (
	"errors"
	"hash/maphash"

	"github.com/prometheus/prometheus/model/labels"
)

// seriesKey is what finds a series: here its labels themselves.
type seriesKey = labels.Labels

func newSeriesKey(ls labels.Labels, _ []byte) seriesKey { return ls }

// storedEqual compares in place, label by label, stopping at the first
// difference: this runs on every add.
func storedEqual(s storedSeriesLabels, ls seriesKey) bool {
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

// hashSeriesKey mixes Prometheus' hash of the labels with the seed.
func hashSeriesKey(seed maphash.Seed, k seriesKey) uint64 {
	return maphash.Comparable(seed, k.Hash())
}

// appendHexIDs leaves every set to the general walk: labels here are symbol
// references that Range resolves.
func appendHexIDs(dst []byte, _ labels.Labels, _ *symbolTable) ([]byte, bool) { return dst, false }

//go:build slicelabels

package exemplar

import (
	"hash/maphash"

	"github.com/prometheus/prometheus/model/labels"
)

// With slicelabels a labels.Labels is a []labels.Label: these run on every
// add, so they walk it directly.

// storedEqual packs ls into scratch and compares the bytes: the hash has
// already matched, so this nearly always confirms equality.
func storedEqual(s storedSeriesLabels, ls labels.Labels, scratch *[]byte) bool {
	b := (*scratch)[:0]
	for _, l := range ls {
		b = appendUvarint(b, uint64(len(l.Name)))
		b = append(b, l.Name...)
		b = appendUvarint(b, uint64(len(l.Value)))
		b = append(b, l.Value...)
	}
	*scratch = b
	return string(b) == string(s)
}

// hashSeriesLabels hashes the labels packed as the store keeps them, with
// the seeded maphash (one AES-based pass where the CPU has it).
func hashSeriesLabels(seed maphash.Seed, ls labels.Labels) uint64 {
	var buf [256]byte
	b := buf[:0]
	for _, l := range ls {
		b = appendUvarint(b, uint64(len(l.Name)))
		b = append(b, l.Name...)
		b = appendUvarint(b, uint64(len(l.Value)))
		b = append(b, l.Value...)
	}
	return maphash.Bytes(seed, b)
}

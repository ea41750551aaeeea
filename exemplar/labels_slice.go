//go:build slicelabels

package exemplar

import (
	"hash/maphash"

	"github.com/prometheus/prometheus/model/labels"
)

// With slicelabels a labels.Labels is a []labels.Label: these run on every
// add, so they walk it directly.

// seriesKey is what finds a series: its labels packed as the store keeps
// them, packed once per add (into the caller's buffer) to hash and to compare.
type seriesKey []byte

func newSeriesKey(ls labels.Labels, buf []byte) seriesKey {
	b := buf[:0]
	for _, l := range ls {
		b = appendUvarint(b, uint64(len(l.Name)))
		b = append(b, l.Name...)
		b = appendUvarint(b, uint64(len(l.Value)))
		b = append(b, l.Value...)
	}
	return b
}

func storedEqual(s storedSeriesLabels, k seriesKey) bool { return string(k) == string(s) }

// hashSeriesKey hashes with the seeded maphash (one AES-based pass where the
// CPU has it).
func hashSeriesKey(seed maphash.Seed, k seriesKey) uint64 { return maphash.Bytes(seed, k) }

func appendHexIDs(dst []byte, ls labels.Labels, syms *symbolTable) ([]byte, bool) {
	at, plain, text := len(dst), 0, 0
	for _, l := range ls {
		var ok bool
		if dst, ok = appendHexID(dst, l.Name, l.Value, syms); !ok {
			return dst[:at], false
		}
		plain, text = plain+2+len(l.Value), text+len(l.Name)+len(l.Value)
	}
	if !hexIDsFit(plain, text) {
		return dst[:at], false
	}
	return dst, true
}

// The decoder hands out label sets as pieces of one slab: Select returned a
// []labels.Label allocation per exemplar (10,000 in a query over 1,000
// series), which Prometheus, handing out the caller's own labels, does not.

const slabLabels = 256

func newLabelDecoder() labelDecoder { return labelDecoder{} } // its builder is not used

func (d *labelDecoder) reset() { d.from = len(d.slab) }

func (d *labelDecoder) add(name, value string) {
	if len(d.slab) == cap(d.slab) {
		// Sets already handed out keep the old slab; this one moves along.
		// Slabs grow to slabLabels: a query for a few exemplars allocates little.
		partial := d.slab[d.from:]
		size := max(min(slabLabels, 2*cap(d.slab)), 8, 2*len(partial))
		d.slab = append(make([]labels.Label, 0, size), partial...)
		d.from = 0
	}
	d.slab = append(d.slab, labels.Label{Name: name, Value: value})
}

func (d *labelDecoder) finish() labels.Labels {
	if d.from == len(d.slab) {
		return labels.EmptyLabels()
	}
	return labels.Labels(d.slab[d.from:len(d.slab):len(d.slab)]) // capped: appending to it copies
}

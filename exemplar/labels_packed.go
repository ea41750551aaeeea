//go:build slicelabels || dedupelabels

package exemplar

import (
	"encoding/binary"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
)

// With -tags slicelabels (what Thanos builds with) a labels.Labels is a slice of
// string pairs whose strings usually alias a decoded request. The store packs
// series labels into one private string instead (uvarint length-prefixed names
// and values) and hands out labels whose strings are views of that immutable
// string.

type storedSeriesLabels string

func packedLen(ls labels.Labels) int {
	n := 0
	ls.Range(func(l labels.Label) {
		n += uvarintLen(uint64(len(l.Name))) + len(l.Name) + uvarintLen(uint64(len(l.Value))) + len(l.Value)
	})
	return n
}

func appendPacked(dst []byte, ls labels.Labels) []byte {
	ls.Range(func(l labels.Label) {
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
		dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
		dst = append(dst, l.Value...)
	})
	return dst
}

func storeSeriesLabels(ls labels.Labels) (storedSeriesLabels, int64) {
	n := packedLen(ls)
	if n == 0 {
		return "", 0
	}
	buf := appendPacked(make([]byte, 0, n), ls)
	return storedSeriesLabels(unsafe.String(&buf[0], len(buf))), allocSize(int64(n), false)
}

func storedSize(s storedSeriesLabels) int64 { return allocSize(int64(len(s)), false) }

// nextPacked returns the string at i and the index after it. Packed strings are
// written by this package only, so they are well formed.
func nextPacked(s string, i int) (string, int) {
	var n uint64
	for shift := 0; ; shift += 7 {
		c := s[i]
		i++
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	return s[i : i+int(n)], i + int(n)
}

func storedGet(s storedSeriesLabels, name string) string {
	p := string(s)
	for i := 0; i < len(p); {
		var n, v string
		n, i = nextPacked(p, i)
		v, i = nextPacked(p, i)
		if n == name {
			return v
		}
	}
	return ""
}

// storedLabels returns the labels of s; their strings are views of s, which
// never changes.
func storedLabels(s storedSeriesLabels, d *labelDecoder) labels.Labels {
	p := string(s)
	d.reset()
	for i := 0; i < len(p); {
		var n, v string
		n, i = nextPacked(p, i)
		v, i = nextPacked(p, i)
		d.add(n, v)
	}
	return d.finish()
}

// encodeEach feeds e the labels of ls in order.
func encodeEach(e *labelEncoder, ls labels.Labels) {
	ls.Range(func(l labels.Label) { e.add(l.Name, l.Value) })
}

// seriesLabelCost is what storeSeriesLabels(ls) would hold.
func seriesLabelCost(ls labels.Labels) int64 { return allocSize(int64(packedLen(ls)), false) }

// plainLenHint estimates the plain encoding's length for encodeLabels: at
// least a name byte and a length byte per label besides its value.
// (ByteSize counts string headers here, and in the dedupelabels build
// symbol references: neither says how long the values are.)
func plainLenHint(ls labels.Labels) int {
	n := 0
	ls.Range(func(l labels.Label) { n += 2 + len(l.Value) })
	return n
}

// appendShortText appends textMark and the labels' plain text if that is
// between 1 and maxTextBytes long.
func appendShortText(dst []byte, ls labels.Labels) ([]byte, bool) {
	n := 0
	ls.Range(func(l labels.Label) { n += 2 + len(l.Name) + len(l.Value) })
	if n == 0 || n > maxTextBytes {
		return dst, false
	}
	dst = append(dst, textMark)
	ls.Range(func(l labels.Label) {
		dst = append(append(dst, byte(len(l.Name))), l.Name...)
		dst = append(append(dst, byte(len(l.Value))), l.Value...)
	})
	return dst, true
}

// appendLabelText appends the labels packed, as series labels are stored.
func appendLabelText(dst []byte, ls labels.Labels) []byte { return appendPacked(dst, ls) }

// nextTextField reads the name or value at i of appendLabelText's text.
func nextTextField(t string, i int) (string, int) { return nextPacked(t, i) }

// decodeText decodes a short set's plain text.
func (d *labelDecoder) decodeText(text []byte) (labels.Labels, error) {
	var field [2]string
	for i, f := 0, 0; i < len(text); f ^= 1 {
		n := int(text[i])
		if len(text)-i-1 < n {
			return labels.EmptyLabels(), errCorrupt
		}
		raw := text[i+1 : i+1+n]
		field[f] = d.arenaString(n, func(dst []byte) { copy(dst, raw) })
		i += 1 + n
		if f == 1 {
			d.add(field[0], field[1])
		} else if i == len(text) {
			return labels.EmptyLabels(), errCorrupt // a name without a value
		}
	}
	return d.finish(), nil
}

// addFilled adds the label name with the n-byte value fill writes.
func (d *labelDecoder) addFilled(name string, n int, fill func(dst []byte)) {
	d.add(name, d.arenaString(n, fill))
}

//go:build !slicelabels && !dedupelabels

package exemplar

import (
	"hash/maphash"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
)

// In the default (stringlabels) build a labels.Labels is one immutable string,
// the most compact form there is, so the store keeps a private copy of it:
// returning it from Select shares memory no later write can change.

type storedSeriesLabels = labels.Labels

// storeSeriesLabels returns a copy of ls that shares no memory with it, and
// the heap bytes the copy holds.
func storeSeriesLabels(ls labels.Labels) (storedSeriesLabels, int64) {
	c := ls.Copy() // strings.Clone of the encoded form
	return c, allocSize(int64(c.ByteSize()), false)
}

func storedSize(s storedSeriesLabels) int64 { return allocSize(int64(s.ByteSize()), false) }

// seriesKey is what finds a series: here its labels themselves, one string.
type seriesKey = labels.Labels

func newSeriesKey(ls labels.Labels, _ []byte) seriesKey { return ls }

func storedEqual(s storedSeriesLabels, k seriesKey) bool { return labels.Equal(s, k) }

func storedGet(s storedSeriesLabels, name string) string { return s.Get(name) }

func storedLabels(s storedSeriesLabels, _ *labelDecoder) labels.Labels { return s }

// encodeEach feeds e the labels of ls in order, walking their text in place
// where a labels.Labels is its text (a trace id is most of an add's work,
// and Range's callback was a fifth of encoding one).
func encodeEach(e *labelEncoder, ls labels.Labels) {
	if !viewLayoutHolds {
		ls.Range(func(l labels.Label) { e.add(l.Name, l.Value) })
		return
	}
	t := labelsText(ls)
	for i := 0; i < len(t); {
		var name, value string
		name, i = nextTextField(t, i)
		value, i = nextTextField(t, i)
		e.add(name, value)
	}
}

func appendHexIDs(dst []byte, ls labels.Labels, syms *symbolTable) ([]byte, bool) {
	if !viewLayoutHolds {
		return dst, false
	}
	t := labelsText(ls)
	at, plain, text := len(dst), 0, 0
	for i := 0; i < len(t); {
		var name, value string
		name, i = nextTextField(t, i)
		value, i = nextTextField(t, i)
		var ok bool
		if dst, ok = appendHexID(dst, name, value, syms); !ok {
			return dst[:at], false
		}
		plain, text = plain+2+len(value), text+len(name)+len(value)
	}
	if !hexIDsFit(plain, text) {
		return dst[:at], false
	}
	return dst, true
}

// seriesLabelCost is what storeSeriesLabels(ls) would hold.
func seriesLabelCost(ls labels.Labels) int64 { return allocSize(int64(ls.ByteSize()), false) }

// hashSeriesKey hashes the labels' single string in place (AES-based where
// the CPU has it), with no copy.
func hashSeriesKey(seed maphash.Seed, k seriesKey) uint64 { return maphash.Comparable(seed, k) }

// plainLenHint estimates the plain encoding's length for encodeLabels: the
// labels' own encoded size, which this build knows without a pass.
func plainLenHint(ls labels.Labels) int { return int(ls.ByteSize()) }

// appendShortText appends textMark and the labels' plain text if that is
// between 1 and maxTextBytes long.
func appendShortText(dst []byte, ls labels.Labels) ([]byte, bool) {
	n := int(ls.ByteSize())
	if n == 0 || n > maxTextBytes || !textLayoutHolds {
		return dst, false
	}
	return appendLabelText(append(dst, textMark), ls), true
}

// appendLabelText appends the labels' text: each name and value after its
// length, one byte up to 254, else 255 and three bytes little-endian. Where
// textLayoutHolds that is the labels' own bytes, copied in one move.
func appendLabelText(dst []byte, ls labels.Labels) []byte {
	if !textLayoutHolds {
		ls.Range(func(l labels.Label) { dst = appendText(appendText(dst, l.Name), l.Value) })
		return dst
	}
	at, n := len(dst), int(ls.ByteSize())
	dst = slices.Grow(dst, n)[:at+n]
	copy(dst[at:], ls.Bytes(dst[at:at])) // Bytes writes in place when it fits
	return dst
}

func appendText(b []byte, s string) []byte { return append(appendSize(b, len(s)), s...) }

func appendSize(b []byte, n int) []byte {
	if n < 255 {
		return append(b, byte(n))
	}
	return append(b, 255, byte(n), byte(n>>8), byte(n>>16))
}

// nextTextField reads the name or value at i of appendLabelText's text.
func nextTextField(t string, i int) (string, int) {
	n := int(t[i])
	i++
	if n == 255 {
		n = int(t[i]) | int(t[i+1])<<8 | int(t[i+2])<<16
		i += 3
	}
	return t[i : i+n], i + n
}

// textLayoutHolds says Labels.Bytes is the text appendLabelText writes, as the
// stringlabels build of Prometheus v0.315.0 writes it: Bytes is documented as
// opaque, so a Prometheus upgrade that changes it makes this package build
// the text label by label instead of misreading it.
var textLayoutHolds = string(probeLabels.Bytes(nil)) == probeText

// probeLabels and probeText are one label set and its text as appendText
// writes it: a long value (a four-byte length) and an empty one.
var (
	probeLabels = labels.FromStrings("a", strings.Repeat("v", 300), "d", "")
	probeText   = string(appendText(appendText(appendText(appendText(nil, "a"), strings.Repeat("v", 300)), "d"), ""))
)

//go:build !slicelabels && !dedupelabels

package exemplar

import (
	"hash/maphash"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
)

// In the default (stringlabels) build a labels.Labels is one immutable string,
// the most compact form there is, so the store keeps a private copy of it:
// returning it from Select shares memory no later write can change.

type storedSeriesLabels = labels.Labels

// builderCopiesStrings: ScratchBuilder.Labels copies what was added.
const builderCopiesStrings = true

// storeSeriesLabels returns a copy of ls that shares no memory with it, and
// the heap bytes the copy holds.
func storeSeriesLabels(ls labels.Labels) (storedSeriesLabels, int64) {
	c := ls.Copy() // strings.Clone of the encoded form
	return c, allocSize(int64(c.ByteSize()), false)
}

func storedSize(s storedSeriesLabels) int64 { return allocSize(int64(s.ByteSize()), false) }

func storedEqual(s storedSeriesLabels, ls labels.Labels, _ *[]byte) bool { return labels.Equal(s, ls) }

func storedGet(s storedSeriesLabels, name string) string { return s.Get(name) }

func storedLabels(s storedSeriesLabels, _ *labels.ScratchBuilder) labels.Labels { return s }

// seriesLabelCost is what storeSeriesLabels(ls) would hold.
func seriesLabelCost(ls labels.Labels) int64 { return allocSize(int64(ls.ByteSize()), false) }

// compareStored orders stored labels as labels.Compare orders labels.
func compareStored(a, b storedSeriesLabels) int { return labels.Compare(a, b) }

// hashSeriesLabels hashes the labels' single string in place (AES-based where
// the CPU has it), with no copy.
func hashSeriesLabels(seed maphash.Seed, l labels.Labels) uint64 { return maphash.Comparable(seed, l) }

// plainLenHint estimates the plain encoding's length for encodeLabels: the
// labels' own encoded size, which this build knows without a pass.
func plainLenHint(ls labels.Labels) int { return int(ls.ByteSize()) }

// appendShortText appends textMark and the labels' plain text if that is
// between 1 and maxTextBytes long. The text is the labels' own bytes, in the
// layout textLayoutHolds checked when the package loaded.
func appendShortText(dst []byte, ls labels.Labels) ([]byte, bool) {
	n := int(ls.ByteSize())
	if n == 0 || n > maxTextBytes || !textLayoutHolds {
		return dst, false
	}
	dst = append(dst, textMark)
	at := len(dst)
	dst = slices.Grow(dst, n)[:at+n]
	copy(dst[at:], ls.Bytes(dst[at:at])) // Bytes writes in place when it fits
	return dst, true
}

// textLayoutHolds says Labels.Bytes is each name and value after a length
// byte, as the stringlabels build of Prometheus v0.315.0 writes it: Bytes is
// documented as opaque, so a Prometheus upgrade that changes it turns the
// short form off rather than corrupting anything.
var textLayoutHolds = func() bool {
	return string(labels.FromStrings("a", "bc", "d", "").Bytes(nil)) == "\x01a\x02bc\x01d\x00"
}()

//go:build !slicelabels && !dedupelabels

package exemplar

import (
	"hash/maphash"

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

package exemplar

import (
	"cmp"
	"encoding/binary"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
)

// Select returns series in labels.Compare order, as Prometheus does. Series
// of one query usually share their first labels (a metric name, a job), so
// comparing whole sets walks the same bytes over and over: a fifth of a query
// over 1,000 series went to the sort. sortHits returns the order of the hits,
// comparing an 8-byte key taken where the query's sets start to differ, and
// whole sets only on a tie.
//
// A label set is read as the sequence name1, value1, name2, value2, ...;
// labels.Compare orders two sets by their first differing string, or puts the
// shorter first if one is a prefix of the other. If every set agrees on
// strings 0..k-1 and on the first c bytes of string k, comparing the 8 bytes
// after those c (zero padded; 0 for a set with no string k) never contradicts
// labels.Compare: a smaller key means a smaller set, an equal key decides
// nothing.
func sortHits(hits []selectHit) []hitOrder {
	order := make([]hitOrder, len(hits))
	for i := range order {
		order[i].hit = uint32(i)
	}
	if len(hits) < 2 {
		return order
	}
	ref := appendStrings(nil, hits[0].lbls)
	k, c := len(ref)+1, 0
	var s []string
	for _, h := range hits[1:] {
		s = appendStrings(s[:0], h.lbls)
		j := 0
		for j < len(s) && j < len(ref) && s[j] == ref[j] {
			j++
		}
		p := 0
		if j < len(s) && j < len(ref) {
			p = commonPrefix(s[j], ref[j])
		}
		if j < k || j == k && p < c {
			k, c = j, p
		}
	}
	for i := range order {
		s = appendStrings(s[:0], hits[i].lbls)
		if k < len(s) {
			order[i].key = prefixKey(s[k][min(c, len(s[k])):])
		}
	}
	// The order is sorted rather than the hits: it holds no pointers, so
	// moving it costs no write barriers while the GC runs.
	slices.SortFunc(order, func(a, b hitOrder) int {
		if a.key != b.key {
			return cmp.Compare(a.key, b.key)
		}
		return labels.Compare(hits[a.hit].lbls, hits[b.hit].lbls)
	})
	return order
}

// hitOrder is a hit's place in Select's result: hits[hit], sorted by key.
type hitOrder struct {
	key uint64
	hit uint32
}

func appendStrings(dst []string, ls labels.Labels) []string {
	ls.Range(func(l labels.Label) { dst = append(dst, l.Name, l.Value) })
	return dst
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// prefixKey is s's first 8 bytes as a big-endian number, zero padded: keys
// order as the strings do, except that equal keys can hide a difference.
func prefixKey(s string) uint64 {
	var b [8]byte
	copy(b[:], s)
	return binary.BigEndian.Uint64(b[:])
}

package exemplar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
	"unsafe"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Exemplar labels are packed into the slot that holds the exemplar (and, when
// longer than the slot has room for, into continuation slots right after it):
//
//	label := name value
//	name  := symbol(1..255) | 0 uvarint(len) bytes
//	value := uvarint(len<<1 | hex) bytes   // hex: len/2 bytes of lowercase hex decoded
//
// Label names repeat across nearly every exemplar ("trace_id", "span_id"), so a
// per-store symbol table of at most 255 short names turns them into one byte.
// Trace and span ids are lowercase hex (W3C trace context), so they are kept
// as the bytes they spell: a 32-character trace id takes 16 bytes. The encoding
// is canonical for a given symbol table, so two label sets are equal exactly
// when their encodings are.

const (
	maxSymbols   = 255
	maxSymbolLen = 32
	symbolSlots  = 512 // open addressing; at most half full
)

type symbolTable struct {
	names []string // symbol id-1 -> name; each a private copy
	slots [symbolSlots]uint8
}

func symbolHash(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return h
}

func (t *symbolTable) lookup(name string) uint8 {
	if len(name) > maxSymbolLen || len(t.names) == 0 {
		return 0
	}
	for h := symbolHash(name) & (symbolSlots - 1); ; h = (h + 1) & (symbolSlots - 1) {
		id := t.slots[h]
		if id == 0 {
			return 0
		}
		if t.names[id-1] == name {
			return id
		}
	}
}

// canAdd says whether add(name) would create a symbol.
func (t *symbolTable) canAdd(name string) bool {
	return len(name) <= maxSymbolLen && len(t.names) < maxSymbols && t.lookup(name) == 0
}

// add interns a copy of name and returns the bytes it newly holds.
func (t *symbolTable) add(name string) int64 {
	if !t.canAdd(name) {
		return 0
	}
	var grown int64
	if t.names == nil {
		t.names = make([]string, 0, maxSymbols)
		grown = allocSize(maxSymbols*int64(unsafe.Sizeof("")), true)
	}
	t.names = append(t.names, cloneString(name))
	id := uint8(len(t.names))
	h := symbolHash(name) & (symbolSlots - 1)
	for t.slots[h] != 0 {
		h = (h + 1) & (symbolSlots - 1)
	}
	t.slots[h] = id
	return grown + allocSize(int64(len(name)), false)
}

// costOfAdding is what add would charge for name.
func (t *symbolTable) costOfAdding(name string, pending int) int64 {
	if len(name) > maxSymbolLen || len(t.names)+pending >= maxSymbols {
		return 0
	}
	c := allocSize(int64(len(name)), false)
	if t.names == nil && pending == 0 {
		c += allocSize(maxSymbols*int64(unsafe.Sizeof("")), true)
	}
	return c
}

func cloneString(s string) string {
	if s == "" {
		return ""
	}
	b := make([]byte, len(s))
	copy(b, s)
	return unsafe.String(&b[0], len(b))
}

func isLowerHex(s string) bool {
	if len(s) < 2 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

const hexDigits = "0123456789abcdef"

// encodeExemplarLabels appends the encoding of ls to dst. Names without a
// symbol are written literally; newNames counts those that add() would turn
// into symbols (so the caller can intern them and encode again).
func encodeExemplarLabels(dst []byte, ls labels.Labels, syms *symbolTable) (out []byte, newNames int) {
	ls.Range(func(l labels.Label) {
		if id := syms.lookup(l.Name); id != 0 {
			dst = append(dst, id)
		} else {
			if len(l.Name) <= maxSymbolLen {
				newNames++
			}
			dst = append(dst, 0)
			dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
			dst = append(dst, l.Name...)
		}
		v := l.Value
		if isLowerHex(v) {
			dst = binary.AppendUvarint(dst, uint64(len(v))<<1|1)
			for i := 0; i < len(v); i += 2 {
				dst = append(dst, unhex(v[i])<<4|unhex(v[i+1]))
			}
		} else {
			dst = binary.AppendUvarint(dst, uint64(len(v))<<1)
			dst = append(dst, v...)
		}
	})
	return dst, newNames
}

// internExemplarLabelNames adds every symbol-worthy name of ls to syms and
// returns the bytes added.
func internExemplarLabelNames(ls labels.Labels, syms *symbolTable) (added int64) {
	ls.Range(func(l labels.Label) { added += syms.add(l.Name) })
	return added
}

// newSymbolsCost is what internExemplarLabelNames would charge.
func newSymbolsCost(ls labels.Labels, syms *symbolTable) (cost int64) {
	pending := 0
	ls.Range(func(l labels.Label) {
		if syms.lookup(l.Name) == 0 {
			if c := syms.costOfAdding(l.Name, pending); c > 0 {
				cost += c
				pending++
			}
		}
	})
	return cost
}

// labelDecoder turns packed exemplar labels back into labels.Labels. Strings
// handed to the builder are never views of store memory: names come from the
// immutable symbol table or are copied, values are copied into arena.
type labelDecoder struct {
	b     labels.ScratchBuilder
	arena []byte
}

// arenaString appends n bytes produced by fill to the arena and returns them as
// a string. The arena is only ever appended to while strings point into it, so
// those bytes never change; when the builder copies (stringlabels), the
// caller may reset the arena after each Labels().
func (d *labelDecoder) arenaString(n int, fill func(dst []byte)) string {
	if n == 0 {
		return ""
	}
	if cap(d.arena)-len(d.arena) < n {
		// Start a new block rather than growing: strings already handed out keep
		// pointing at the old one.
		size := 4096
		if n > size {
			size = n
		}
		d.arena = make([]byte, 0, size)
	}
	start := len(d.arena)
	d.arena = d.arena[:start+n]
	fill(d.arena[start:])
	return unsafe.String(&d.arena[start], n)
}

func (d *labelDecoder) decode(enc []byte, syms *symbolTable) (labels.Labels, error) {
	if len(enc) == 0 {
		return labels.EmptyLabels(), nil
	}
	d.b.Reset()
	for i := 0; i < len(enc); {
		var name string
		if id := enc[i]; id != 0 {
			if int(id) > len(syms.names) {
				return labels.EmptyLabels(), errCorrupt
			}
			name = syms.names[id-1]
			i++
		} else {
			n, w := binary.Uvarint(enc[i+1:])
			if w <= 0 || uint64(len(enc)-i-1-w) < n {
				return labels.EmptyLabels(), errCorrupt
			}
			raw := enc[i+1+w : i+1+w+int(n)]
			name = d.arenaString(len(raw), func(dst []byte) { copy(dst, raw) })
			i += 1 + w + int(n)
		}
		hdr, w := binary.Uvarint(enc[i:])
		if w <= 0 {
			return labels.EmptyLabels(), errCorrupt
		}
		i += w
		vlen := int(hdr >> 1)
		var value string
		if hdr&1 == 1 {
			if len(enc)-i < vlen/2 {
				return labels.EmptyLabels(), errCorrupt
			}
			raw := enc[i : i+vlen/2]
			value = d.arenaString(vlen, func(dst []byte) {
				for j, c := range raw {
					dst[2*j] = hexDigits[c>>4]
					dst[2*j+1] = hexDigits[c&15]
				}
			})
			i += vlen / 2
		} else {
			if len(enc)-i < vlen {
				return labels.EmptyLabels(), errCorrupt
			}
			raw := enc[i : i+vlen]
			value = d.arenaString(vlen, func(dst []byte) { copy(dst, raw) })
			i += vlen
		}
		d.b.Add(name, value)
	}
	ls := d.b.Labels()
	if builderCopiesStrings {
		d.arena = d.arena[:0]
	}
	return ls, nil
}

// errCorrupt can only come from a bug in this package; tests assert it never
// surfaces.
var errCorrupt = errors.New("exemplar: internal error: corrupt label encoding")

// checkExemplarLabels applies Prometheus' rule: the names and values together
// are at most exemplar.ExemplarMaxLabelSetLength runes.
func checkExemplarLabels(ls labels.Labels) error {
	n := 0
	return ls.Validate(func(l labels.Label) error {
		n += utf8.RuneCountInString(l.Name)
		n += utf8.RuneCountInString(l.Value)
		if n > exemplar.ExemplarMaxLabelSetLength {
			return storage.ErrExemplarLabelLength
		}
		return nil
	})
}

// checkSeriesLabels refuses what Prometheus' head refuses for a series: an
// empty label set or a repeated label name.
func checkSeriesLabels(ls labels.Labels) error {
	if ls.IsEmpty() {
		return fmt.Errorf("%w: empty label set", ErrInvalidSeriesLabels)
	}
	if name, dup := ls.HasDuplicateLabelNames(); dup {
		return fmt.Errorf("%w: label name %q is not unique", ErrInvalidSeriesLabels, name)
	}
	return nil
}

// copyLabels returns a deep copy of ls: no string of the result shares memory
// with ls, whatever the labels build.
func (d *labelDecoder) copyLabels(ls labels.Labels) labels.Labels {
	if ls.IsEmpty() {
		return labels.EmptyLabels()
	}
	d.b.Reset()
	ls.Range(func(l labels.Label) {
		name := d.arenaString(len(l.Name), func(dst []byte) { copy(dst, l.Name) })
		value := d.arenaString(len(l.Value), func(dst []byte) { copy(dst, l.Value) })
		d.b.Add(name, value)
	})
	out := d.b.Labels()
	if builderCopiesStrings {
		d.arena = d.arena[:0]
	}
	return out
}

package exemplar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
	"unsafe"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Exemplar labels are packed into the slot that holds the exemplar (and, when
// longer than the slot has room for, into continuation slots right after it).
// A set whose plain text (each name and value after a length byte) takes at
// most maxTextBytes is kept as that text, behind a mark:
//
//	short := 0xff (len bytes)...          // len < 255
//
// Copying it is one move, which is most of what adding such an exemplar
// costs. Any other set is encoded:
//
//	label := name value
//	name  := symbol(1..254) | 0 uvarint(len) bytes
//	value := uvarint(len<<1 | hex) bytes   // hex: len/2 bytes of lowercase hex decoded
//
// Label names repeat across nearly every exemplar ("trace_id", "span_id"), so a
// per-store symbol table of at most 254 short names turns them into one byte.
// Trace and span ids are lowercase hex (W3C trace context): when a set does not
// fit a slot's 28 inline bytes as is, hex values are kept as the bytes they
// spell (a 32-character trace id takes 16), so trace_id plus span_id still
// fits one slot. Short values are not packed, which keeps them cheap to
// encode and decode. Which form a set takes depends on the set alone, and
// each form is canonical for a given symbol table, so two label sets are
// equal exactly when their encodings are.

const (
	maxSymbols   = 254
	textMark     = 0xff // starts a short set's plain text; never a symbol
	maxTextBytes = inlineLabelBytes - 1
	maxSymbolLen = 32
	symbolSlots  = 512 // open addressing; at most half full
)

type symbolTable struct {
	// The first symbol's name is also kept here, in the Store itself: most
	// stores see one name ("trace_id"), and reaching it through names costs
	// two cache misses per add when a process runs a store per tenant.
	first    [maxSymbolLen]byte
	firstLen uint8    // of first, plus one; 0 before the first symbol
	names    []string // symbol id-1 -> name; each a private copy
	slots    [symbolSlots]uint8
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
	if len(name) > maxSymbolLen {
		return 0
	}
	if len(name)+1 == int(t.firstLen) && name == unsafe.String(&t.first[0], len(name)) {
		return 1
	}
	// Most stores see a handful of names: comparing beats hashing.
	const scan = 8
	for i, n := range t.names[:min(len(t.names), scan)] {
		if n == name {
			return uint8(i + 1)
		}
	}
	if len(t.names) <= scan {
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
	if id == 1 {
		t.firstLen = uint8(copy(t.first[:], name)) + 1
	}
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

// hexValue maps a lowercase hex digit to its value and anything else to 0xff.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// appendValue encodes a label value: lowercase hex of even length as the
// bytes it spells, anything else as is. One pass: decode optimistically (16
// digits a block, then 8, then pairs) and fall back to raw bytes if a digit
// was not lowercase hex.
func appendValue(dst []byte, v string) []byte {
	n := len(v)
	if n >= 2 && n%2 == 0 {
		mark := len(dst)
		dst = appendUvarint(dst, uint64(n)<<1|1)
		start := len(dst)
		dst = slices.Grow(dst, n/2)[:start+n/2]
		out := dst[start:]
		src := v
		var bad byte
		if blocks := n / 16; blocks > 0 {
			if !decodeHexBlocks(&out[0], unsafe.StringData(src), blocks) {
				bad = 0xff
			}
			src, out = src[16*blocks:], out[8*blocks:]
		}
		for bad == 0 && len(src) >= 8 {
			w, ok := decodeHex8(binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(src), 8)))
			if !ok {
				bad = 0xff
				break
			}
			binary.LittleEndian.PutUint32(out, w)
			src, out = src[8:], out[4:]
		}
		for bad&0xf0 == 0 && len(src) >= 2 && len(out) >= 1 {
			hi, lo := hexValue[src[0]], hexValue[src[1]]
			bad |= hi | lo
			out[0] = hi<<4 | lo
			src, out = src[2:], out[1:]
		}
		if bad&0xf0 == 0 {
			return dst
		}
		dst = dst[:mark]
	}
	dst = appendUvarint(dst, uint64(n)<<1)
	return append(dst, v...)
}

const hexDigits = "0123456789abcdef"

// encodeHex writes the lowercase hex of src to dst (2*len(src) bytes), 16
// bytes a block, then four a round in a word: Select spells out every
// packed trace id.
func encodeHex(dst, src []byte) {
	if blocks := min(len(src)/16, len(dst)/32); blocks > 0 {
		encodeHexBlocks(&dst[0], &src[0], blocks)
		src, dst = src[16*blocks:], dst[32*blocks:]
	}
	for len(src) >= 4 && len(dst) >= 8 {
		binary.LittleEndian.PutUint64(dst, encodeHex4(binary.LittleEndian.Uint32(src)))
		src, dst = src[4:], dst[8:]
	}
	for j, c := range src {
		dst[2*j] = hexDigits[c>>4]
		dst[2*j+1] = hexDigits[c&15]
	}
}

// encodeHex4 spells four bytes, the first in the lowest byte of x, as eight
// lowercase hex digits, the first in the lowest byte.
func encodeHex4(x uint32) uint64 {
	const ones = 0x0101010101010101
	y := uint64(x)
	y = (y | y<<16) & 0x0000ffff0000ffff
	y = (y | y<<8) & 0x00ff00ff00ff00ff // byte 2i holds input byte i
	nib := y>>4&0x000f000f000f000f | (y&0x000f000f000f000f)<<8
	// '0'+v for v < 10, 'a'+v-10 above: bit 7 of v+0x76 says v >= 10.
	letters := (nib + 0x76*ones) >> 7 & ones
	return nib + '0'*ones + letters*('a'-'0'-10)
}

// decodeHex8 decodes eight lowercase hex digits, the first in the lowest
// byte of x, into four bytes, the first in the lowest byte. ok is false if
// any byte of x is not a lowercase hex digit. It is small enough to inline.
func decodeHex8(x uint64) (w uint32, ok bool) {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	// Bit 7 of each byte: >= '0' and not > '9', or >= 'a' and not > 'f'. A
	// byte >= 0x80 can carry into the next, but is refused by x&high anyway.
	valid := (x+(0x80-'0')*ones)&^(x+(0x80-'9'-1)*ones) | (x+(0x80-'a')*ones)&^(x+(0x80-'f'-1)*ones)
	// A digit's low nibble is its value; a letter's is its value - 9, and
	// only letters have bit 6 set. Byte 2i is the high nibble of output i.
	nib := x&(0x0f*ones) + (x>>6&ones)*9
	p := (nib<<4 | nib>>8) & 0x00ff00ff00ff00ff
	p = (p | p>>8) & 0x0000ffff0000ffff
	return uint32(p | p>>16), x&high == 0 && valid&high == high
}

// encodeExemplarLabels appends the encoding of ls to dst and counts the runes
// of its names and values (Prometheus' length rule). Names without a symbol
// are written literally; newNames counts those add() would turn into symbols
// (so the caller can intern them and encode again). Values are hex-packed only
// with packHex: the caller asks for it when the plain encoding does not fit
// inline, which keeps the encoding a function of the labels and the symbol
// table alone. plainLen is the length of the plain encoding, whichever was
// written.
func encodeExemplarLabels(dst []byte, ls labels.Labels, syms *symbolTable, packHex bool) (out []byte, newNames, runes, plainLen int) {
	// Field by field: a composite literal is built aside and copied in 16-byte
	// moves that stall on the 8-byte stores that built it (a tenth of encoding
	// a trace id).
	var e labelEncoder
	e.dst, e.syms, e.packHex = dst, syms, packHex
	encodeEach(&e, ls)
	plainLen = len(e.dst) - len(dst) + e.valueDiff
	// A rune is at least a byte: only long label sets need counting.
	if e.textBytes <= exemplar.ExemplarMaxLabelSetLength {
		return e.dst, e.newNames, e.textBytes, plainLen
	}
	ls.Range(func(l labels.Label) { runes += utf8.RuneCountInString(l.Name) + utf8.RuneCountInString(l.Value) })
	return e.dst, e.newNames, runes, plainLen
}

// labelEncoder is encodeExemplarLabels' state, which each build's
// encodeEach feeds one label at a time.
type labelEncoder struct {
	dst       []byte
	syms      *symbolTable
	packHex   bool
	textBytes int // of names and values
	valueDiff int // plain minus written bytes of the values
	newNames  int
}

func (e *labelEncoder) add(name, value string) {
	e.textBytes += len(name) + len(value)
	if id := e.syms.lookup(name); id != 0 {
		e.dst = append(e.dst, id)
	} else {
		if len(name) <= maxSymbolLen && len(e.syms.names) < maxSymbols {
			e.newNames++
		}
		e.dst = appendUvarint(append(e.dst, 0), uint64(len(name)))
		e.dst = append(e.dst, name...)
	}
	if e.packHex {
		at := len(e.dst)
		e.dst = appendValue(e.dst, value)
		e.valueDiff += uvarintLen(uint64(len(value))<<1) + len(value) - (len(e.dst) - at)
	} else {
		e.dst = appendUvarint(e.dst, uint64(len(value))<<1)
		e.dst = append(e.dst, value...)
	}
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// appendUvarint is binary.AppendUvarint with the one-byte case inlined.
func appendUvarint(dst []byte, x uint64) []byte {
	if x < 0x80 {
		return append(dst, byte(x))
	}
	return binary.AppendUvarint(dst, x)
}

// encodeLabels is the store's encoding of an exemplar's labels, or
// storage.ErrExemplarLabelLength.
func encodeLabels(dst []byte, ls labels.Labels, syms *symbolTable) ([]byte, int, error) {
	if enc, ok := appendShortText(dst, ls); ok {
		return enc, 0, nil // at most maxTextBytes runes: within Prometheus' limit
	}
	if enc, ok := appendHexIDs(dst, ls, syms); ok {
		return enc, 0, nil
	}
	return encodeAnyLabels(dst, ls, syms)
}

// appendHexIDs (each build walks its labels its own way) is encodeLabels'
// answer, without the general walk, for the commonest exemplars: trace and
// span ids (W3C: 32 and 16 lowercase hex digits). It takes a set whose every
// name is a symbol and every value 16, 32 or 48 lowercase hex digits, and
// whose plain encoding would not fit inline; for it, encodeAnyLabels would
// write the same bytes. appendHexID encodes one of its labels; hexIDsFit
// judges the whole set: plainLen is its plain encoding's length and
// textBytes the bytes of its names and values (runes are counted only past
// Prometheus' limit in bytes).
func appendHexID(dst []byte, name, value string, syms *symbolTable) ([]byte, bool) {
	n := len(value)
	id := syms.lookup(name)
	if id == 0 || n == 0 || n%16 != 0 || n > 48 {
		return dst, false
	}
	dst = append(dst, id, byte(n<<1|1)) // n<<1|1 < 0x80: one uvarint byte
	k := len(dst)
	dst = slices.Grow(dst, n/2)[:k+n/2]
	return dst, decodeHexBlocks(&dst[k], unsafe.StringData(value), n/16)
}

func hexIDsFit(plainLen, textBytes int) bool {
	return plainLen > inlineLabelBytes && textBytes <= exemplar.ExemplarMaxLabelSetLength
}

// encodeAnyLabels is encodeLabels for a set that is neither short text nor
// only hex ids.
func encodeAnyLabels(dst []byte, ls labels.Labels, syms *symbolTable) ([]byte, int, error) {
	// Pack right away when the plain encoding probably does not fit (a
	// trace id) and learn its plain length in the same pass: then a trace id
	// is encoded once. A wrong guess costs a second pass, never the result.
	pack := plainLenHint(ls) > inlineLabelBytes
	enc, newNames, runes, plainLen := encodeExemplarLabels(dst, ls, syms, pack)
	if runes > exemplar.ExemplarMaxLabelSetLength {
		return enc, 0, storage.ErrExemplarLabelLength
	}
	switch {
	case pack && plainLen <= inlineLabelBytes: // long names that are symbols
		enc, _, _, _ = encodeExemplarLabels(enc[:0], ls, syms, false)
	case !pack && plainLen > inlineLabelBytes:
		enc, _, _, _ = encodeExemplarLabels(enc[:0], ls, syms, true)
	}
	if len(enc) > maxEncodedLabels {
		return enc, 0, storage.ErrExemplarLabelLength
	}
	return enc, newNames, nil
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

// labelDecoder turns packed exemplar labels back into labels.Labels. What it
// hands out is never a view of store memory: names come from the immutable
// symbol table or are copied, values are copied or spelled out.
type labelDecoder struct {
	b     labels.ScratchBuilder // dedupelabels, and stringlabels without views
	arena []byte
	// slab holds the labels handed out, many sets to an allocation, where a
	// labels.Labels is a slice (slicelabels); text holds their text where a
	// labels.Labels is that text (stringlabels). from is where the set being
	// decoded starts in either.
	slab []labels.Label
	text []byte
	from int
}

// arenaString appends n bytes produced by fill to the arena and returns them as
// a string. The arena is only ever appended to while strings point into it, so
// those bytes never change; where a set is copied when it is finished
// (stringlabels, or a builder that copies), finish resets the arena.
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
	d.reset()
	if enc[0] == textMark {
		return d.decodeText(enc[1:])
	}
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
		if hdr&1 == 1 {
			if len(enc)-i < vlen/2 {
				return labels.EmptyLabels(), errCorrupt
			}
			raw := enc[i : i+vlen/2]
			d.addFilled(name, vlen, func(dst []byte) { encodeHex(dst, raw) })
			i += vlen / 2
		} else {
			if len(enc)-i < vlen {
				return labels.EmptyLabels(), errCorrupt
			}
			raw := enc[i : i+vlen]
			d.addFilled(name, vlen, func(dst []byte) { copy(dst, raw) })
			i += vlen
		}
	}
	return d.finish(), nil
}

// errCorrupt can only come from a bug in this package; tests assert it never
// surfaces.
var errCorrupt = errors.New("exemplar: internal error: corrupt label encoding")

// checkSeriesLabels refuses an empty label set, which Prometheus' head never
// holds. The other check the head makes, repeated names, costs a scan and runs
// only when a series is created (checkNewSeriesLabels).
func checkSeriesLabels(ls labels.Labels) error {
	if ls.IsEmpty() {
		return fmt.Errorf("%w: empty label set", ErrInvalidSeriesLabels)
	}
	return nil
}

func checkNewSeriesLabels(ls labels.Labels) error {
	if name, dup := ls.HasDuplicateLabelNames(); dup {
		return fmt.Errorf("%w: label name %q is not unique", ErrInvalidSeriesLabels, name)
	}
	return nil
}

// labelsFromText sets *into to the labels whose text (appendLabelText) is
// text, in b's memory: into is valid until b is used again, and, where labels
// are slices (slicelabels), while text is unchanged.
func labelsFromText(text []byte, b *labels.ScratchBuilder, into *labels.Labels) {
	addTextTo(b, text)
	b.Overwrite(into)
}

// addTextTo resets b and adds the labels whose text is text.
func addTextTo(b *labels.ScratchBuilder, text []byte) {
	t := unsafe.String(unsafe.SliceData(text), len(text))
	b.Reset()
	for i := 0; i < len(t); {
		var name, value string
		name, i = nextTextField(t, i)
		value, i = nextTextField(t, i)
		b.Add(name, value)
	}
}

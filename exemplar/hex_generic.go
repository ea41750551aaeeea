//go:build !amd64 || purego

package exemplar

import (
	"encoding/binary"
	"unsafe"
)

// decodeHexBlocks decodes blocks×16 hex digits at src into blocks×8 bytes at
// dst and reports whether every digit was lowercase hex.
func decodeHexBlocks(dst, src *byte, blocks int) (valid bool) {
	in, out := unsafe.Slice(src, 16*blocks), unsafe.Slice(dst, 8*blocks)
	var bad bool
	for len(in) >= 8 {
		w, ok := decodeHex8(binary.LittleEndian.Uint64(in))
		bad = bad || !ok
		binary.LittleEndian.PutUint32(out, w)
		in, out = in[8:], out[4:]
	}
	return !bad
}

// encodeHexBlocks writes the lowercase hex of blocks×16 bytes at src to
// blocks×32 bytes at dst.
func encodeHexBlocks(dst, src *byte, blocks int) {
	in, out := unsafe.Slice(src, 16*blocks), unsafe.Slice(dst, 32*blocks)
	for len(in) >= 4 {
		binary.LittleEndian.PutUint64(out, encodeHex4(binary.LittleEndian.Uint32(in)))
		in, out = in[4:], out[8:]
	}
}

//go:build !purego

package exemplar

// decodeHexBlocks decodes blocks×16 hex digits at src into blocks×8 bytes at
// dst and reports whether every digit was lowercase hex. A trace id is two
// blocks; in Go they took a tenth of a steady-state add (hex_generic.go is
// the same in Go, for other architectures and -tags purego).
//
//go:noescape
func decodeHexBlocks(dst, src *byte, blocks int) (valid bool)

// encodeHexBlocks writes the lowercase hex of blocks×16 bytes at src to
// blocks×32 bytes at dst: Select spells out every packed trace id.
//
//go:noescape
func encodeHexBlocks(dst, src *byte, blocks int)

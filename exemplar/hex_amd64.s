//go:build !purego

#include "textflag.h"

// func decodeHexBlocks(dst, src *byte, blocks int) (valid bool)
//
// SSE2 only, which every amd64 CPU has. Per 16 digits c: digit = '0' <= c <=
// '9', letter = 'a' <= c <= 'f' (signed compares: bytes >= 0x80 are neither);
// value = c - '0' - (letter & 0x27); then each digit pair, a word with the
// first digit in its low byte, becomes (low<<4 | high) & 0xff, and PACKUSWB
// keeps those eight bytes.
TEXT ·decodeHexBlocks(SB), NOSPLIT, $0-25
	MOVQ  dst+0(FP), DI
	MOVQ  src+8(FP), SI
	MOVQ  blocks+16(FP), CX
	MOVOU hexConsts<>+0x00(SB), X8  // '0'-1
	MOVOU hexConsts<>+0x10(SB), X9  // '9'+1
	MOVOU hexConsts<>+0x20(SB), X10 // 'a'-1
	MOVOU hexConsts<>+0x30(SB), X11 // 'f'+1
	MOVOU hexConsts<>+0x40(SB), X12 // 'a'-'0'-10
	MOVOU hexConsts<>+0x50(SB), X13 // '0'
	MOVOU hexConsts<>+0x60(SB), X14 // 0x00ff in each word
	PCMPEQB X7, X7                  // every digit valid so far

loop:
	TESTQ CX, CX
	JZ    done
	MOVOU (SI), X0

	MOVO    X0, X1
	PCMPGTB X8, X1 // c > '0'-1
	MOVO    X9, X2
	PCMPGTB X0, X2 // '9'+1 > c
	PAND    X2, X1 // digit
	MOVO    X0, X3
	PCMPGTB X10, X3 // c > 'a'-1
	MOVO    X11, X4
	PCMPGTB X0, X4 // 'f'+1 > c
	PAND    X4, X3 // letter
	POR     X3, X1
	PAND    X1, X7

	PAND  X12, X3
	PSUBB X13, X0
	PSUBB X3, X0 // value of each digit

	MOVO     X0, X1
	PSLLW    $4, X0
	PSRLW    $8, X1
	POR      X1, X0
	PAND     X14, X0
	PACKUSWB X0, X0
	MOVQ     X0, (DI)

	ADDQ $16, SI
	ADDQ $8, DI
	DECQ CX
	JMP  loop

done:
	PMOVMSKB X7, AX
	CMPL     AX, $0xffff
	SETEQ    valid+24(FP)
	RET

// func encodeHexBlocks(dst, src *byte, blocks int)
//
// Per 16 bytes: split each into its high and low nibble, interleave them
// (high first), and make each nibble v a digit: v + '0', plus 'a'-'0'-10
// where v > 9.
TEXT ·encodeHexBlocks(SB), NOSPLIT, $0-24
	MOVQ  dst+0(FP), DI
	MOVQ  src+8(FP), SI
	MOVQ  blocks+16(FP), CX
	MOVOU hexConsts<>+0x70(SB), X8  // 0x0f
	MOVOU hexConsts<>+0x80(SB), X9  // 9
	MOVOU hexConsts<>+0x40(SB), X10 // 'a'-'0'-10
	MOVOU hexConsts<>+0x50(SB), X11 // '0'

encodeLoop:
	TESTQ CX, CX
	JZ    encodeDone
	MOVOU (SI), X0

	MOVO      X0, X1
	PSRLW     $4, X1
	PAND      X8, X1 // high nibbles
	PAND      X8, X0 // low nibbles
	MOVO      X1, X2
	PUNPCKLBW X0, X2 // digits of bytes 0-7
	PUNPCKHBW X0, X1 // digits of bytes 8-15

	MOVO    X2, X3
	PCMPGTB X9, X3
	PAND    X10, X3
	PADDB   X11, X2
	PADDB   X3, X2
	MOVO    X1, X4
	PCMPGTB X9, X4
	PAND    X10, X4
	PADDB   X11, X1
	PADDB   X4, X1
	MOVOU   X2, (DI)
	MOVOU   X1, 16(DI)

	ADDQ $16, SI
	ADDQ $32, DI
	DECQ CX
	JMP  encodeLoop

encodeDone:
	RET

DATA hexConsts<>+0x00(SB)/8, $0x2f2f2f2f2f2f2f2f
DATA hexConsts<>+0x08(SB)/8, $0x2f2f2f2f2f2f2f2f
DATA hexConsts<>+0x10(SB)/8, $0x3a3a3a3a3a3a3a3a
DATA hexConsts<>+0x18(SB)/8, $0x3a3a3a3a3a3a3a3a
DATA hexConsts<>+0x20(SB)/8, $0x6060606060606060
DATA hexConsts<>+0x28(SB)/8, $0x6060606060606060
DATA hexConsts<>+0x30(SB)/8, $0x6767676767676767
DATA hexConsts<>+0x38(SB)/8, $0x6767676767676767
DATA hexConsts<>+0x40(SB)/8, $0x2727272727272727
DATA hexConsts<>+0x48(SB)/8, $0x2727272727272727
DATA hexConsts<>+0x50(SB)/8, $0x3030303030303030
DATA hexConsts<>+0x58(SB)/8, $0x3030303030303030
DATA hexConsts<>+0x60(SB)/8, $0x00ff00ff00ff00ff
DATA hexConsts<>+0x68(SB)/8, $0x00ff00ff00ff00ff
DATA hexConsts<>+0x70(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA hexConsts<>+0x78(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA hexConsts<>+0x80(SB)/8, $0x0909090909090909
DATA hexConsts<>+0x88(SB)/8, $0x0909090909090909
GLOBL hexConsts<>(SB), RODATA|NOPTR, $0x90

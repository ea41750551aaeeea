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
GLOBL hexConsts<>(SB), RODATA|NOPTR, $0x70

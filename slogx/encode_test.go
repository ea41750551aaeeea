package slogx

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func jsonEncode(t *testing.T, v any) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(v))
	return string(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}))
}

// slogString is how slog.JSONHandler writes s as a string (which differs from
// encoding/json for \b and \f).
func slogString(t *testing.T, s string) string {
	t.Helper()
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(gs []string, a slog.Attr) slog.Attr {
		if gs == nil {
			return slog.Attr{}
		}
		return a
	}})
	r := slog.NewRecord(time.Time{}, 0, "", 0)
	r.AddAttrs(slog.String("k", s))
	require.NoError(t, h.Handle(context.Background(), r))
	out := buf.String()
	return out[len(`{"k":`) : len(out)-len("}\n")]
}

// The word-at-a-time fast path must agree with slog on every byte at every offset.
func TestStringEscapingMatchesSlog(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("abc\"\\\n\t\x00\x1f\x7f\x80\xff é😀\u2028<>&")
	for range 20_000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			if rng.IntN(3) == 0 {
				b[i] = byte(rng.Uint32())
			} else {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
		}
		s := string(b)
		require.Equal(t, slogString(t, s), string(appendJSONString(nil, s)), "%q", s)
	}
	for c := range 256 { // every byte value, at every offset in a word
		for off := range 9 {
			s := string(bytes.Repeat([]byte{'a'}, off)) + string([]byte{byte(c)}) + "tail-tail"
			require.Equal(t, slogString(t, s), string(appendJSONString(nil, s)), "%q", s)
		}
	}
}

func TestFloatFormattingMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fs := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1e-6, 1e-7, 9.999999e-7, 1e20, 1e21, 123456789.125, math.MaxFloat64, math.SmallestNonzeroFloat64, -1e-300}
	for range 20_000 {
		fs = append(fs, math.Float64frombits(rng.Uint64()))
	}
	e := &encoder{}
	for _, f := range fs {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		e.buf = e.buf[:0]
		e.float(f)
		require.Equal(t, jsonEncode(t, f), string(e.buf), "%v", f)
	}
}

// The per-second cache must not leak one record's seconds, zone or fraction into another.
func TestTimeFormattingMatchesRFC3339Nano(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("", 5*3600+30*60), time.FixedZone("", -3723), time.FixedZone("", 0)}
	e := &encoder{}
	now := time.Now()
	for i := range 50_000 {
		var tm time.Time
		switch i % 4 {
		case 0: // same second, other fractions: cache hits
			tm = now.Add(time.Duration(rng.IntN(1000)) * time.Microsecond)
		case 1:
			tm = time.Unix(rng.Int64N(253402300799), rng.Int64N(1e9))
		case 2:
			tm = time.Unix(rng.Int64N(1e10), int64(rng.IntN(10))*1e8) // few fraction digits
		default:
			tm = now.Truncate(time.Second)
		}
		tm = tm.In(zones[rng.IntN(len(zones))])
		e.buf = e.buf[:0]
		e.time(tm)
		want, err := tm.MarshalJSON()
		require.NoError(t, err)
		require.Equal(t, string(want), string(e.buf))
	}
}

// encoding/json's Encoder fails for good once its writer has failed: refusing one value at
// the cap must not cost the values after it, in this record or the next one of the pool.
func TestValueRefusedAtCapLeavesEncoderUsable(t *testing.T) {
	e := &encoder{}
	e.reset(100, 0, nil)
	require.False(t, e.any(make([]int, 1000)), "a value past the cap is refused")
	require.Empty(t, e.buf)
	require.True(t, e.any([]int{1, 2}))
	require.Equal(t, "[1,2]", string(e.buf))
}

// A string is escaped in chunks only when it may not fit; whether it fits or is cut, the
// result must be what escaping it whole writes, up to the last rune that fits.
func TestCappedEscapingIsAPrefixOfWholeEscaping(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	alphabet := []byte("abc\"\\\n\x01\x80\xbf\xe2\xff é😀\u2028")
	e := &encoder{}
	for range 2000 {
		b := make([]byte, rng.IntN(3000))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s := string(b)
		whole := appendEscaped(nil, s)
		// Where escaping s whole stands after each rune: escaping is per rune, as decoding
		// s whole steps through it.
		var cuts []int
		var byRune []byte
		for i := 0; i < len(s); {
			_, size := utf8.DecodeRuneInString(s[i:])
			byRune = appendEscaped(byRune, s[i:i+size])
			cuts = append(cuts, len(byRune))
			i += size
		}
		require.Equal(t, string(whole), string(byRune))
		for _, upTo := range []int{len(whole), len(whole) + rng.IntN(100), rng.IntN(len(whole) + 1)} {
			e.buf = e.buf[:0]
			complete := e.appendCapped(s, upTo)
			if upTo >= len(whole) {
				require.True(t, complete)
				require.Equal(t, string(whole), string(e.buf))
				continue
			}
			require.False(t, complete)
			want := 0
			for _, c := range cuts {
				if c <= upTo {
					want = c
				}
			}
			require.Equal(t, string(whole[:want]), string(e.buf), "cut at %d of %d", upTo, len(whole))
		}
	}
}

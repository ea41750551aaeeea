package slogx

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestRecordPastLineCapIsCutWithMarker(t *testing.T) {
	const lineCap = 4096
	for _, tc := range []struct {
		name      string
		big       slog.Attr
		keepsBig  bool // a string is cut to fit; any other value is dropped
		bigPrefix string
	}{
		{"ascii string", slog.String("big", strings.Repeat("x", 10_000)), true, "xxxx"},
		{"escapes are never split", slog.String("big", strings.Repeat("\n\"", 10_000)), true, "\n\""},
		{"runes are never split", slog.String("big", strings.Repeat("é😀", 10_000)), true, "é😀"},
		{"big slice is dropped", slog.Any("big", make([]int, 10_000)), false, ""},
		{"big key is dropped", slog.Int(strings.Repeat("k", 10_000), 1), false, ""},
		{"big group key is dropped", slog.Group(strings.Repeat("g", 10_000), slog.Int("a", 1)), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, path := openTemp(t, &Options{MaxLineBytes: lineCap})
			l := slog.New(h.WithAttrs([]slog.Attr{slog.String("query", "up")}))
			l.Info("m", "before", 1, tc.big, "after", 2)
			lines := readLines(t, path)
			require.Len(t, lines, 1)
			require.LessOrEqual(t, len(lines[0])+1, lineCap)
			m := requireJSONLine(t, lines[0])
			require.Equal(t, true, m["!TRUNCATED"], "marker")
			require.Equal(t, "up", m["query"], "With attrs always fit")
			require.Equal(t, float64(1), m["before"], "attrs before the cut are kept")
			require.NotContains(t, m, "after", "attrs after the cut are dropped")
			if tc.keepsBig {
				s := m["big"].(string)
				require.True(t, utf8.ValidString(s))
				require.True(t, strings.HasPrefix(tc.big.Value.String(), s), "a cut string is a prefix of the original")
				require.True(t, strings.HasPrefix(s, tc.bigPrefix))
				require.Greater(t, len(lines[0])+1, lineCap-16, "the cut string fills the line")
			} else {
				require.NotContains(t, m, "big")
			}
			require.Equal(t, uint64(1), h.Stats().Truncations)
		})
	}
}

func TestHugeMessageIsCutButWithAttrsSurvive(t *testing.T) {
	h, path := openTemp(t, nil)
	l := slog.New(h).With("query", "up").WithGroup("g").With("a", 1)
	l.Info(strings.Repeat("m", 3<<20), "b", 2)
	lines := scanLinesFile(t, path)
	require.Len(t, lines, 1)
	require.LessOrEqual(t, len(lines[0])+1, DefaultMaxLineBytes)
	m := requireJSONLine(t, lines[0])
	require.Equal(t, true, m["!TRUNCATED"])
	require.Equal(t, "up", m["query"])
	require.Equal(t, map[string]any{"a": float64(1)}, m["g"], "record attrs after a cut message are dropped")
	require.Greater(t, len(m["msg"].(string)), DefaultMaxLineBytes-1024, "the message fills the line")
}

func TestLinesNeverExceedMaxBytes(t *testing.T) {
	const maxBytes = 2048
	h, path := openTemp(t, &Options{MaxBytes: maxBytes, MaxBackups: 1})
	slog.New(h).Info("m", "big", strings.Repeat("x", 10_000))
	lines := readLines(t, path)
	require.Len(t, lines, 1)
	require.LessOrEqual(t, len(lines[0])+1, maxBytes)
	requireJSONLine(t, lines[0])
}

// The 3.0.0 bug, done on purpose: l = l.With(...) per query. The chain stops growing at
// MaxWithBytes, lines stay bounded and say they were cut, and memory stays bounded.
func TestRepeatedWithIsBoundedByMaxWithBytes(t *testing.T) {
	const withCap = 8 << 10
	n := 100_000
	if raceEnabled {
		n = 20_000
	}
	for _, tc := range []struct {
		name string
		with func(slog.Handler, int) slog.Handler
	}{
		{"WithAttrs", func(h slog.Handler, i int) slog.Handler {
			return h.WithAttrs([]slog.Attr{slog.Int("q", i)})
		}},
		{"WithGroup", func(h slog.Handler, i int) slog.Handler { return h.WithGroup("g") }},
		{"both", func(h slog.Handler, i int) slog.Handler {
			return h.WithGroup("g").WithAttrs([]slog.Attr{slog.String("query", "sum(rate(x[5m]))")})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, path := openTemp(t, &Options{MaxWithBytes: withCap})
			before := heapInUse()
			var l slog.Handler = h
			for i := range n {
				l = tc.with(l, i)
			}
			grown := heapInUse() - before
			runtime.KeepAlive(l)
			require.Less(t, grown, int64(4*withCap), "heap held by the chain of %d Withs", n)
			fh := l.(*FileHandler)
			require.True(t, fh.full)
			require.LessOrEqual(t, int(fh.size), withCap)

			r := slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.Int("last", 1))
			require.NoError(t, l.Handle(context.Background(), r))
			lines := readLines(t, path)
			require.Len(t, lines, 1)
			require.Less(t, len(lines[0]), 2*withCap)
			m := requireJSONLine(t, lines[0])
			require.Equal(t, true, m["!TRUNCATED"])
			require.Greater(t, h.Stats().Truncations, uint64(n/2), "every dropped With is counted")
		})
	}
}

// heapInUse is the live heap after a full GC.
func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func scanLinesFile(t testing.TB, path string) []string {
	t.Helper()
	f := openFile(t, path)
	return scanLines(t, f)
}

// The cap bounds the memory of encoding a record, not only the line: a value far past the
// cap is read only as far as the line can hold it. (The 64 MiB probe used to allocate
// 2.24 GiB for a string of control characters and 341 MiB for a []byte.)
func TestHugeValueHeapIsOnTheOrderOfTheLineCap(t *testing.T) {
	const lineCap = DefaultMaxLineBytes
	const huge = 64 << 20
	ctrl := strings.Repeat("\x01", huge) // escapes to six times its size
	blob := make([]byte, huge)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		log  func(h slog.Handler) error
	}{
		{"string attr", func(h slog.Handler) error {
			r := slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.String("v", ctrl))
			return h.Handle(ctx, r)
		}},
		{"[]byte attr", func(h slog.Handler) error {
			r := slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.Any("v", blob))
			return h.Handle(ctx, r)
		}},
		{"error attr", func(h slog.Handler) error {
			r := slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.Any("err", errors.New(ctrl)))
			return h.Handle(ctx, r)
		}},
		{"key", func(h slog.Handler) error {
			r := slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.Int(ctrl, 1))
			return h.Handle(ctx, r)
		}},
		{"message", func(h slog.Handler) error {
			return h.Handle(ctx, slog.NewRecord(time.Time{}, slog.LevelInfo, ctrl, 0))
		}},
		{"WithAttrs value", func(h slog.Handler) error {
			return h.WithAttrs([]slog.Attr{slog.String("v", ctrl)}).Handle(ctx, slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0))
		}},
		{"WithAttrs []byte", func(h slog.Handler) error {
			return h.WithAttrs([]slog.Attr{slog.Any("v", blob)}).Handle(ctx, slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0))
		}},
		{"WithGroup name", func(h slog.Handler) error {
			r := slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)
			r.AddAttrs(slog.Int("a", 1))
			return h.WithGroup(ctrl).Handle(ctx, r)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, path := openTemp(t, nil)
			require.NoError(t, tc.log(h)) // warm the pools
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := tc.log(h)
			runtime.ReadMemStats(&after)
			require.NoError(t, err)
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d bytes for a %d-byte value", allocated, huge)
			require.Less(t, allocated, uint64(2*lineCap), "bytes allocated by one record")

			lines := scanLinesFile(t, path)
			require.Len(t, lines, 2)
			for _, l := range lines {
				require.LessOrEqual(t, len(l)+1, lineCap)
				require.Equal(t, true, requireJSONLine(t, l)["!TRUNCATED"])
			}
		})
	}
	runtime.KeepAlive(ctrl)
	runtime.KeepAlive(blob)
}

// A WithGroup dropped at MaxWithBytes takes the attributes that belong in it along: written
// at the top level instead, they would change meaning and could collide with "msg" or
// "level". The line still says it was cut, and each such record is counted.
func TestDroppedGroupDropsTheAttrsMeantForIt(t *testing.T) {
	const withCap = 1024
	for _, tc := range []struct {
		name string
		with func(*slog.Logger) *slog.Logger
	}{
		{"group after a full chain", func(l *slog.Logger) *slog.Logger {
			return l.With("pad", strings.Repeat("x", 2*withCap)).WithGroup("g")
		}},
		{"group that does not fit", func(l *slog.Logger) *slog.Logger {
			return l.With("pad", strings.Repeat("x", withCap-200)).WithGroup(strings.Repeat("g", 300))
		}},
		{"group name past the cap", func(l *slog.Logger) *slog.Logger {
			return l.WithGroup(strings.Repeat("g", 2*withCap))
		}},
		{"attrs after the dropped group", func(l *slog.Logger) *slog.Logger {
			return l.With("pad", strings.Repeat("x", 2*withCap)).WithGroup("g").With("b", 2)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, path := openTemp(t, &Options{MaxWithBytes: withCap})
			l := tc.with(slog.New(h))
			before := h.Stats().Truncations
			l.Info("m", "a", 1, "msg", "spoofed", "level", "spoofed")
			l.Info("no attrs")
			lines := readLines(t, path)
			require.Len(t, lines, 2)
			for _, line := range lines {
				m := requireJSONLine(t, line)
				require.Equal(t, true, m["!TRUNCATED"])
				require.Equal(t, "INFO", m["level"])
				require.NotContains(t, m, "a", "an attr of the dropped group went to the top level")
				require.NotContains(t, m, "b")
				require.NotContains(t, line, "spoofed")
			}
			require.Equal(t, "m", requireJSONLine(t, lines[0])["msg"])
			require.Equal(t, before+1, h.Stats().Truncations, "the record that lost attrs is counted")
		})
	}

	// A chain that is full without losing a group still places record attrs where they belong.
	h, path := openTemp(t, &Options{MaxWithBytes: withCap})
	slog.New(h).With("pad", strings.Repeat("x", 2*withCap)).Info("m", "a", 1)
	m := requireJSONLine(t, readLines(t, path)[0])
	require.Equal(t, float64(1), m["a"])
	require.Equal(t, true, m["!TRUNCATED"])
}

package slogx

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

// This file generates slog records, With chains and ReplaceAttr functions from a byte
// string, so the differential test (random bytes) and the fuzz target (the fuzzer's bytes)
// share one generator. It also computes the oracle: what to give slog.JSONHandler so that
// its output must equal ours byte for byte.

// byteSource draws decisions from b; past its end every draw is 0, so any input is complete.
type byteSource struct {
	b []byte
	i int
}

func (s *byteSource) byte() byte {
	if s.i >= len(s.b) {
		return 0
	}
	c := s.b[s.i]
	s.i++
	return c
}

func (s *byteSource) intn(n int) int { return int(s.byte()) % n }

func (s *byteSource) uint64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(s.byte())
	}
	return v
}

// rawString is up to 15 arbitrary bytes (invalid UTF-8 included).
func (s *byteSource) rawString() string {
	n := s.intn(16)
	b := make([]byte, n)
	for i := range b {
		b[i] = s.byte()
	}
	return string(b)
}

// Keys and strings chosen to hit escaping, slog's built-in keys and ReplaceAttr rules.
var sampleStrings = []string{
	"", "a", "b", "k", "query", "drop", "dropped", "grp", "G", "time", "level", "msg", "source",
	`x"y`, `back\slash`, "line\nbreak", "tab\t", "\x00\x1f\x7f", "<html>&amp;", "é😀", "\u2028\u2029",
	"\xff\xfe", "a\xc3", "\b\f", strings.Repeat("long", 40),
}

type genMode struct {
	rawKeys bool // fuzzing: arbitrary key bytes too
}

type scenario struct {
	ops      []genOp
	rec      slog.Record
	unstable string // why only validity (not equality with slog) can be checked, if set
}

type genOp struct {
	group string
	attrs []slog.Attr // nil: WithGroup(group)
}

type gen struct {
	src      *byteSource
	mode     genMode
	unstable string
	depth    int
}

var testPC = func() uintptr {
	var pcs [1]uintptr
	runtime.Callers(1, pcs[:])
	return pcs[0]
}()

var baseTime = time.Date(2025, 4, 30, 13, 22, 2, 123456789, time.UTC)

func generate(b []byte, mode genMode) scenario {
	g := &gen{src: &byteSource{b: b}, mode: mode}
	var sc scenario
	for range g.src.intn(4) {
		if g.src.intn(3) == 0 {
			sc.ops = append(sc.ops, genOp{group: g.key()})
		} else {
			sc.ops = append(sc.ops, genOp{attrs: g.attrs(g.src.intn(4))})
		}
	}
	var t time.Time
	switch g.src.intn(4) {
	case 0: // zero time: omitted
	case 1:
		t = baseTime.In(time.FixedZone("", 5*3600+30*60))
	default:
		t = baseTime.Add(time.Duration(g.src.intn(256)) * time.Millisecond)
	}
	var pc uintptr
	if g.src.intn(2) == 0 {
		pc = testPC
	}
	levels := []slog.Level{slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelDebug, slog.LevelInfo + 2, -7}
	sc.rec = slog.NewRecord(t, levels[g.src.intn(len(levels))], g.str(), pc)
	sc.rec.AddAttrs(g.attrs(g.src.intn(9))...)
	sc.unstable = g.unstable
	return sc
}

func (g *gen) str() string {
	if g.mode.rawKeys && g.src.intn(4) == 0 {
		return g.src.rawString()
	}
	return sampleStrings[g.src.intn(len(sampleStrings))]
}

func (g *gen) key() string { return g.str() }

func (g *gen) attrs(n int) []slog.Attr {
	as := make([]slog.Attr, n)
	for i := range as {
		as[i] = g.attr()
	}
	return as
}

func (g *gen) attr() slog.Attr {
	k := g.key()
	if g.depth < 3 && g.src.intn(6) == 0 {
		g.depth++
		defer func() { g.depth-- }()
		if g.src.intn(8) == 0 {
			return slog.Attr{Key: k, Value: slog.GroupValue()} // an empty group
		}
		return slog.Attr{Key: k, Value: slog.GroupValue(g.attrs(g.src.intn(4))...)}
	}
	return slog.Attr{Key: k, Value: g.value()}
}

type (
	stringer   struct{ S string }
	lvString   string
	lvGroup    []slog.Attr
	lvChain    int
	lvPanic    struct{}
	nilDeref   struct{ msg *string }
	badMarshal struct{}
	panicJSON  struct{}
	both       struct{}
	cyclic     struct{ Next *cyclic }
)

func (v lvString) LogValue() slog.Value { return slog.StringValue(string(v)) }
func (v lvGroup) LogValue() slog.Value  { return slog.GroupValue(v...) }
func (v lvChain) LogValue() slog.Value {
	if v == 0 {
		return slog.IntValue(0)
	}
	return slog.AnyValue(v - 1)
}
func (lvPanic) LogValue() slog.Value { panic("LogValue boom") }

func (e *nilDeref) Error() string               { return *e.msg }
func (badMarshal) MarshalJSON() ([]byte, error) { return []byte("{not json"), nil }
func (panicJSON) MarshalJSON() ([]byte, error)  { panic("MarshalJSON boom") }
func (both) MarshalJSON() ([]byte, error)       { return []byte(`{"via":"json"}`), nil }
func (both) Error() string                      { return "via Error" }

func (g *gen) value() slog.Value {
	switch g.src.intn(40) {
	case 0, 1, 2:
		return slog.StringValue(g.str())
	case 3:
		return slog.Int64Value(int64(g.src.uint64()))
	case 4:
		return slog.Uint64Value(g.src.uint64())
	case 5:
		return slog.Float64Value(math.Float64frombits(g.src.uint64())) // NaN, Inf, subnormals…
	case 6:
		fs := []float64{0, 1, -1.5, 1e21, 1e20, 1e-6, 1e-7, 123456789.125, math.MaxFloat64, math.SmallestNonzeroFloat64, 0.1, 100}
		return slog.Float64Value(fs[g.src.intn(len(fs))])
	case 7:
		return slog.BoolValue(g.src.intn(2) == 0)
	case 8:
		return slog.DurationValue(time.Duration(g.src.uint64()))
	case 9:
		zones := []*time.Location{time.UTC, time.FixedZone("", -30*60), time.FixedZone("", 3723), time.FixedZone("X", -8*3600)}
		t := time.Date(g.src.intn(10000), time.Month(1+g.src.intn(12)), 1+g.src.intn(28), g.src.intn(24), 0, g.src.intn(60), g.src.intn(4)*250_000_000+g.src.intn(2), zones[g.src.intn(len(zones))])
		return slog.TimeValue(t)
	case 10:
		if g.mode.rawKeys && g.src.intn(2) == 0 {
			g.unstable = "time year outside [0,9999]: slog writes invalid JSON"
			return slog.TimeValue(time.Date(10000+g.src.intn(3), 1, 1, 0, 0, 0, 0, time.UTC))
		}
		return slog.AnyValue(map[string]any{"k": []int{1, 2}, "h": "<&>"})
	case 11:
		return slog.AnyValue(errors.New(g.str()))
	case 12:
		return slog.AnyValue(&nilDeref{}) // Error panics: "!PANIC: …"
	case 13:
		var e *nilDeref
		return slog.AnyValue(e) // nil pointer whose Error panics: "<nil>"
	case 14:
		return slog.AnyValue(make(chan int)) // unsupported type
	case 15:
		c := &cyclic{}
		c.Next = c
		return slog.AnyValue(c) // cycle
	case 16:
		return slog.AnyValue(badMarshal{})
	case 17:
		return slog.AnyValue(panicJSON{})
	case 18:
		return slog.AnyValue(both{})
	case 19:
		return slog.AnyValue(stringer{S: g.str()})
	case 20:
		return slog.AnyValue([]byte(g.str()))
	case 21:
		return slog.AnyValue(nil)
	case 22:
		return slog.AnyValue(slog.Level(g.src.intn(20) - 10))
	case 23:
		return slog.AnyValue(&slog.Source{Function: "f", File: g.str(), Line: g.src.intn(3)})
	case 24:
		return slog.AnyValue(&slog.Source{})
	case 25:
		return slog.AnyValue(lvString(g.str()))
	case 26:
		if g.depth < 3 {
			g.depth++
			defer func() { g.depth-- }()
			return slog.AnyValue(lvGroup(g.attrs(g.src.intn(3)))) // may be empty
		}
		return slog.AnyValue(lvGroup(nil))
	case 27:
		return slog.AnyValue(lvChain(90 + g.src.intn(20))) // past 100: slog's error value
	case 28:
		if g.mode.rawKeys {
			g.unstable = "LogValue panicked: the error carries a stack"
			return slog.AnyValue(lvPanic{})
		}
		return slog.AnyValue(json.Number("12.50"))
	case 29:
		return slog.AnyValue(json.Number(g.str())) // mostly invalid numbers
	case 30:
		return slog.AnyValue(fmt.Errorf("wrapped: %w", errors.New("inner")))
	case 31:
		return slog.AnyValue([]any{1, "two", 3.5, nil, math.Inf(1) > 0})
	case 32:
		return slog.AnyValue(struct {
			A int
			B string `json:"b"`
			c int
		}{A: 1, B: g.str(), c: 3})
	case 33:
		return slog.AnyValue(float32(1.1))
	case 34:
		return slog.AnyValue(time.Duration(g.src.uint64()))
	default:
		return slog.IntValue(g.src.intn(1000) - 500)
	}
}

// replaceAttrs are the ReplaceAttr modes every differential, slogtest and fuzz run covers.
// Dropping depends on the key only, so the oracle below can predict it.
var replaceAttrs = []struct {
	name string
	fn   func([]string, slog.Attr) slog.Attr
}{
	{"none", nil},
	{"identity", func(_ []string, a slog.Attr) slog.Attr { return a }},
	{"drop", func(_ []string, a slog.Attr) slog.Attr {
		if strings.HasPrefix(a.Key, "drop") {
			return slog.Attr{}
		}
		return a
	}},
	{"groups", func(gs []string, a slog.Attr) slog.Attr {
		if strings.HasPrefix(a.Key, "drop") {
			return slog.Attr{}
		}
		if a.Key == "G" { // exposes the exact groups slice, nil or empty included
			return slog.Any(a.Key, slices.Clone(gs))
		}
		if len(gs) > 0 {
			a.Key = strings.Join(gs, ".") + ":" + a.Key
		}
		return a
	}},
	{"regroup", func(gs []string, a slog.Attr) slog.Attr {
		switch {
		case strings.HasPrefix(a.Key, "drop"):
			return slog.Attr{}
		case a.Key == "grp":
			return slog.Group("grp", slog.Int("n", len(gs)), slog.String("dropme", "x"))
		case a.Key == "level" && gs == nil:
			return slog.String("severity", strings.ToLower(a.Value.String()))
		case a.Key == "msg" && gs == nil:
			return slog.Attr{}
		}
		return a
	}},
}

// oracle returns the ops and record to give slog.JSONHandler so that its output must equal
// ours: groups that end up with no attribute are removed beforehand, because slog botches
// exactly those (a missing comma and stale groups for ReplaceAttr). Everything else is
// passed unchanged (LogValuers resolved, which slog does first anyway).
func oracle(sc scenario, rep func([]string, slog.Attr) slog.Attr) ([]genOp, slog.Record) {
	groups := []string{} // non-builtin attrs get a non-nil slice, as in slog
	var ops []genOp
	for _, op := range sc.ops {
		if op.attrs == nil {
			// The slog.Handler contract: "If the name is empty, WithGroup returns the
			// receiver". slog.Logger.WithGroup honours it; slog.JSONHandler.WithGroup
			// called directly does not (it opens a group named ""). Ours honours it.
			if op.group != "" {
				groups = append(groups, op.group)
				ops = append(ops, op)
			}
			continue
		}
		ops = append(ops, genOp{attrs: keepWritten(rep, groups, op.attrs)})
	}
	r := slog.NewRecord(sc.rec.Time, sc.rec.Level, sc.rec.Message, sc.rec.PC)
	var as []slog.Attr
	sc.rec.Attrs(func(a slog.Attr) bool { as = append(as, a); return true })
	r.AddAttrs(keepWritten(rep, groups, as)...)
	return ops, r
}

// keepWritten returns the attrs of as that write something, empty groups pruned.
func keepWritten(rep func([]string, slog.Attr) slog.Attr, groups []string, as []slog.Attr) []slog.Attr {
	out := []slog.Attr{} // non-nil: a nil attrs in genOp means WithGroup
	for _, a := range as {
		a.Value = a.Value.Resolve()
		if a.Value.Kind() == slog.KindGroup {
			inner := groups
			if a.Key != "" {
				inner = append(groups[:len(groups):len(groups)], a.Key)
			}
			if kept := keepWritten(rep, inner, a.Value.Group()); len(kept) > 0 {
				out = append(out, slog.Attr{Key: a.Key, Value: slog.GroupValue(kept...)})
			}
			continue
		}
		if writes(rep, groups, a) {
			out = append(out, a)
		}
	}
	return out
}

// writes reports whether a non-group attr writes anything, following what ReplaceAttr
// turns it into.
func writes(rep func([]string, slog.Attr) slog.Attr, groups []string, a slog.Attr) bool {
	if rep != nil {
		a = rep(groups, a)
		a.Value = a.Value.Resolve()
	}
	switch a.Value.Kind() {
	case slog.KindGroup:
		inner := groups
		if a.Key != "" {
			inner = append(groups[:len(groups):len(groups)], a.Key)
		}
		for _, c := range a.Value.Group() {
			c.Value = c.Value.Resolve()
			if c.Value.Kind() == slog.KindGroup {
				if len(keepWritten(rep, inner, []slog.Attr{c})) > 0 {
					return true
				}
			} else if writes(rep, inner, c) {
				return true
			}
		}
		return false
	case slog.KindAny:
		x := a.Value.Any()
		if x == nil && a.Key == "" {
			return false
		}
		if src, ok := x.(*slog.Source); ok {
			return src != nil && *src != (slog.Source{})
		}
	}
	return true
}

package slogx

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// truncatedMarker ends every line that lost attributes to a cap (MaxLineBytes, MaxWithBytes).
const truncatedMarker = `"!TRUNCATED":true`

// encoder writes slog attributes as JSON exactly as slog.JSONHandler does (same keys, same
// value formatting, same ReplaceAttr calls), except that a group left without attributes is
// removed cleanly: slog leaves its separator and group name behind (see
// TestEmptiedGroupsLeaveNoTrace). It also enforces a byte cap, which slog has not.
type encoder struct {
	buf []byte

	comma     bool // a ',' must come before the next key
	closers   int  // groups open in buf, each owed a '}'
	tail      int  // bytes that must still fit after the attr being written
	limit     int  // cap on len(buf)+closers+tail
	truncated bool // an attr did not fit: everything after it is dropped

	rep     func([]string, slog.Attr) slog.Attr
	builtin bool     // slog passes nil groups to ReplaceAttr for time, level, source and msg
	groups  []string // open groups for ReplaceAttr; never nil, as in slog
	names   []string // scratch: a handler's WithGroup names

	js *jsonState // lazily made; for values encoding/json must format
	tc timeCache
}

type jsonState struct {
	w   capWriter
	enc *json.Encoder
}

// capWriter takes encoding/json's output straight into the line, refusing it whole when it
// would pass the cap: no second copy of a value the line cannot hold.
type capWriter struct {
	buf []byte
	max int // len(buf) may not pass it
}

// errPastCap is how capWriter refuses; it never leaves the encoder.
var errPastCap = errors.New("slogx: value past the cap")

func (w *capWriter) Write(p []byte) (int, error) {
	if len(p) > w.max-len(w.buf) {
		return 0, errPastCap
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// mark is a position encoding can roll back to.
type mark struct {
	n, closers, groups int
	comma              bool
}

// maxPooledBuffer keeps one huge record from pinning a megabyte in the pool.
const maxPooledBuffer = 64 << 10

var encoderPool = sync.Pool{New: func() any {
	return &encoder{buf: make([]byte, 0, 1024), groups: make([]string, 0, 8), names: make([]string, 0, 8)}
}}

func getEncoder() *encoder { return encoderPool.Get().(*encoder) }

func putEncoder(e *encoder) {
	if cap(e.buf) > maxPooledBuffer {
		return
	}
	// Drop the callers' strings, not only the ones still in use, so the pool pins none.
	clear(e.groups[:cap(e.groups)])
	e.groups = e.groups[:0]
	clear(e.names[:cap(e.names)])
	e.names = e.names[:0]
	e.rep = nil
	encoderPool.Put(e)
}

func (e *encoder) reset(limit, tail int, rep func([]string, slog.Attr) slog.Attr) {
	e.buf = e.buf[:0]
	e.comma, e.closers, e.truncated = false, 0, false
	e.limit, e.tail, e.rep = limit, tail, rep
	e.builtin = false
	e.groups = e.groups[:0]
}

func (e *encoder) mark() mark {
	return mark{n: len(e.buf), closers: e.closers, groups: len(e.groups), comma: e.comma}
}

// rollback restores the separator and the ReplaceAttr groups too: slog restores only the
// bytes, which is how an emptied group breaks its JSON and misleads ReplaceAttr.
func (e *encoder) rollback(m mark) {
	e.buf = e.buf[:m.n]
	e.closers = m.closers
	e.groups = e.groups[:m.groups]
	e.comma = m.comma
}

func (e *encoder) over() bool { return len(e.buf)+e.closers+e.tail > e.limit }

// room is how long e.buf may grow before it passes the cap.
func (e *encoder) room() int { return e.limit - e.closers - e.tail }

// key writes `"k":`, or nothing and false when k cannot fit: a huge key costs no more than
// the cap to refuse.
func (e *encoder) key(k string) bool {
	if free := e.room() - len(e.buf) - 4; free >= 0 && len(k) <= free/6 {
		// The common case, kept short: `,"k":` fits whatever k's escaping.
		if e.comma {
			e.buf = append(e.buf, ',')
		}
		e.buf = appendJSONString(e.buf, k)
		e.buf = append(e.buf, ':')
		e.comma = true
		return true
	}
	n := len(e.buf)
	if e.comma {
		e.buf = append(e.buf, ',')
	}
	if !e.quoted(k) {
		e.buf = e.buf[:n]
		return false
	}
	e.buf = append(e.buf, ':')
	e.comma = true
	return true
}

// quoted appends s as a JSON string and reports whether it fits; when it does not, it stops
// near the cap (what it wrote is for the caller to roll back).
func (e *encoder) quoted(s string) bool {
	e.buf = append(e.buf, '"')
	if !e.appendCapped(s, e.room()-1) {
		return false
	}
	e.buf = append(e.buf, '"')
	return true
}

// appendCapped appends s escaped, or as much of it as keeps len(e.buf) <= upTo, never
// splitting a rune or an escape, and reports whether all of s went in. Escaping can grow a
// string sixfold, so a string past the cap is escaped a chunk at a time and read only as
// far as the cap: its cost is the cap's, not its own. Escaping is per rune and chunks end
// at rune starts, so a string that fits comes out exactly as appendEscaped writes it.
func (e *encoder) appendCapped(s string, upTo int) bool {
	if len(s) <= (upTo-len(e.buf))/6 { // fits even if every byte needs a \u00XX
		e.buf = appendEscaped(e.buf, s)
		return true
	}
	const chunk = 512
	// One allocation for what can go in, rather than doublings up to it: the escaped string
	// is at least len(s) long and at most the cap (plus the chunk that overshoots it).
	// (Not slices.Grow: built with -race, it allocates that much twice.)
	if need := max(0, min(upTo-len(e.buf), len(s))) + 6*chunk; cap(e.buf)-len(e.buf) < need {
		b := make([]byte, len(e.buf), len(e.buf)+need)
		copy(b, e.buf)
		e.buf = b
	}
	for i := 0; i < len(s); {
		end := min(i+chunk, len(s))
		for end < len(s) && end > i && !utf8.RuneStart(s[end]) {
			end--
		}
		if end == i { // no rune start within chunk: take one rune
			_, size := utf8.DecodeRuneInString(s[i:])
			end = i + size
		}
		n := len(e.buf)
		e.buf = appendEscaped(e.buf, s[i:end])
		if len(e.buf) <= upTo {
			i = end
			continue
		}
		e.buf = e.buf[:n]
		// The chunk does not fit: take what does, rune by rune.
		for i < end {
			_, size := utf8.DecodeRuneInString(s[i:])
			n := len(e.buf)
			e.buf = appendEscaped(e.buf, s[i:i+size])
			if len(e.buf) > upTo {
				e.buf = e.buf[:n]
				return false
			}
			i += size
		}
		return i == len(s)
	}
	return true
}

// openGroup writes `"name":{`; false (and truncated) when that would pass the cap.
func (e *encoder) openGroup(name string) bool {
	m := e.mark()
	if !e.key(name) {
		e.truncated = true
		return false
	}
	e.buf = append(e.buf, '{')
	e.comma = false
	e.closers++
	if e.over() {
		e.rollback(m)
		e.truncated = true
		return false
	}
	if e.rep != nil && !e.builtin {
		e.groups = append(e.groups, name)
	}
	return true
}

func (e *encoder) closeGroup() {
	e.buf = append(e.buf, '}')
	e.closers--
	e.comma = true
	if e.rep != nil && !e.builtin {
		e.groups = e.groups[:len(e.groups)-1]
	}
}

func (e *encoder) closeAll() {
	for ; e.closers > 0; e.closers-- {
		e.buf = append(e.buf, '}')
	}
	e.comma = true
}

func (e *encoder) repGroups() []string {
	if e.builtin {
		return nil
	}
	return e.groups
}

// attr writes a (resolving it and applying ReplaceAttr as slog does) and reports whether
// anything was written.
func (e *encoder) attr(a slog.Attr) bool {
	if e.truncated {
		return false
	}
	k := a.Value.Kind()
	if k == slog.KindLogValuer {
		a.Value = a.Value.Resolve()
		k = a.Value.Kind()
	}
	if e.rep != nil && k != slog.KindGroup {
		a = e.rep(e.repGroups(), a)
		if k = a.Value.Kind(); k == slog.KindLogValuer {
			a.Value = a.Value.Resolve()
			k = a.Value.Kind()
		}
	}
	switch k {
	case slog.KindGroup:
		return e.group(a.Key, a.Value.Group())
	case slog.KindAny:
		x := a.Value.Any()
		if x == nil && a.Key == "" {
			return false // the empty Attr
		}
		if src, ok := x.(*slog.Source); ok {
			return e.source(a.Key, src)
		}
	}
	return e.leaf(a.Key, a.Value, k)
}

// group writes a group; one that ends up without attributes leaves no trace.
func (e *encoder) group(key string, as []slog.Attr) bool {
	if len(as) == 0 {
		return false
	}
	if key == "" { // inlined, as slog does
		wrote := false
		for _, a := range as {
			if e.attr(a) {
				wrote = true
			}
		}
		return wrote
	}
	m := e.mark()
	if !e.openGroup(key) {
		return false
	}
	wrote := false
	for _, a := range as {
		if e.attr(a) {
			wrote = true
		}
	}
	if !wrote {
		e.rollback(m)
		return false
	}
	e.closeGroup()
	return true
}

// source writes a *slog.Source as slog does: a group of its non-zero fields, omitted when
// all are zero (a record without PC).
func (e *encoder) source(key string, src *slog.Source) bool {
	if src == nil || *src == (slog.Source{}) {
		return false
	}
	var as [3]slog.Attr
	n := 0
	if src.Function != "" {
		as[n] = slog.String("function", src.Function)
		n++
	}
	if src.File != "" {
		as[n] = slog.String("file", src.File)
		n++
	}
	if src.Line != 0 {
		as[n] = slog.Int("line", src.Line)
		n++
	}
	return e.group(key, as[:n])
}

// leaf writes key and value; past the cap a string value is cut to fit, anything else dropped.
func (e *encoder) leaf(key string, v slog.Value, k slog.Kind) bool {
	m := e.mark()
	if e.key(key) {
		if k == slog.KindString {
			return e.cutString(v.String(), m)
		}
		if e.value(v, k) && !e.over() {
			return true
		}
	}
	e.rollback(m)
	e.truncated = true
	return false
}

// cutString writes s as a string value, cut at a rune boundary (and the record marked
// truncated) if it does not fit whole; nothing, back to m, if not even "" fits.
func (e *encoder) cutString(s string, m mark) bool {
	if free := e.room() - len(e.buf) - 2; free >= 0 && len(s) <= free/6 {
		e.buf = appendJSONString(e.buf, s) // the common case: it fits whatever its escaping
		return true
	}
	upTo := e.room() - 1 // the closing quote
	e.buf = append(e.buf, '"')
	if len(e.buf) > upTo {
		e.rollback(m)
		e.truncated = true
		return false
	}
	if !e.appendCapped(s, upTo) {
		e.truncated = true
	}
	e.buf = append(e.buf, '"')
	return true
}

// value writes v, except a string (see cutString); false if it stopped at the cap.
func (e *encoder) value(v slog.Value, k slog.Kind) bool {
	switch k {
	case slog.KindInt64:
		e.buf = strconv.AppendInt(e.buf, v.Int64(), 10)
	case slog.KindUint64:
		e.buf = strconv.AppendUint(e.buf, v.Uint64(), 10)
	case slog.KindFloat64:
		return e.float(v.Float64())
	case slog.KindBool:
		e.buf = strconv.AppendBool(e.buf, v.Bool())
	case slog.KindDuration:
		e.buf = strconv.AppendInt(e.buf, int64(v.Duration()), 10) // as encoding/json does
	case slog.KindTime:
		e.time(v.Time())
	default:
		return e.any(v.Any())
	}
	return true
}

// float formats like encoding/json (ES6 number formatting) without boxing f into an interface.
func (e *encoder) float(f float64) bool {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return e.marshal(f) // for encoding/json's own error text
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	e.buf = strconv.AppendFloat(e.buf, f, format, -1, 64)
	if format == 'e' { // e-07 -> e-7, as encoding/json
		n := len(e.buf)
		if n >= 4 && e.buf[n-4] == 'e' && e.buf[n-3] == '-' && e.buf[n-2] == '0' {
			e.buf[n-2] = e.buf[n-1]
			e.buf = e.buf[:n-1]
		}
	}
	return true
}

const yearRangeError = "!ERROR:time.Time year outside of range [0,9999]"

// time formats like time.Time.MarshalJSON (RFC 3339 with nanoseconds). For a year it
// cannot represent, slog writes the error and then the time as a second string, which is
// invalid JSON; this writes the error only.
func (e *encoder) time(t time.Time) {
	sec, loc := t.Unix(), t.Location()
	if sec != e.tc.sec || loc != e.tc.loc || e.tc.loc == nil {
		if y := t.Year(); y < 0 || y >= 10000 {
			e.buf = appendJSONString(e.buf, yearRangeError)
			return
		}
		// Seconds and zone are the same for every record of a second: format them once.
		b := t.AppendFormat(e.tc.text[:0], "2006-01-02T15:04:05Z07:00")
		e.tc.sec, e.tc.loc, e.tc.n = sec, loc, len(b)
	}
	const secLen = len("2006-01-02T15:04:05")
	e.buf = append(e.buf, '"')
	e.buf = append(e.buf, e.tc.text[:secLen]...)
	if ns := t.Nanosecond(); ns != 0 {
		e.buf = appendFraction(e.buf, ns)
	}
	e.buf = append(e.buf, e.tc.text[secLen:e.tc.n]...)
	e.buf = append(e.buf, '"')
}

// timeCache holds the last second formatted by an encoder.
type timeCache struct {
	sec  int64
	loc  *time.Location
	n    int
	text [40]byte
}

// appendFraction appends ".ddddddddd" with trailing zeros trimmed, as RFC3339Nano does.
func appendFraction(b []byte, ns int) []byte {
	var d [10]byte
	d[0] = '.'
	for i := 9; i >= 1; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	n := 10
	for d[n-1] == '0' {
		n--
	}
	return append(b, d[:n]...)
}

// any formats x as slog.JSONHandler does: an error (that is not a json.Marshaler) as its
// message, everything else through encoding/json without HTML escaping, and failures and
// panics as an "!ERROR:"/"!PANIC:" string so the line stays valid JSON. False if x does not
// fit under the cap.
func (e *encoder) any(x any) (ok bool) {
	n := len(e.buf)
	defer func() {
		if r := recover(); r != nil {
			e.buf = e.buf[:n]
			if rv := reflect.ValueOf(x); rv.Kind() == reflect.Pointer && rv.IsNil() {
				e.buf = appendJSONString(e.buf, "<nil>")
				ok = true
				return
			}
			ok = e.quoted(fmt.Sprintf("!PANIC: %v", r))
		}
	}()
	switch x := x.(type) {
	case slog.Level: // a json.Marshaler whose output is this string
		e.buf = appendJSONString(e.buf, x.String())
		return true
	case []byte:
		// encoding/json's base64, written here so that a slice past the cap is refused by
		// its length instead of being encoded (and copied twice) first.
		if x == nil {
			e.buf = append(e.buf, "null"...)
			return true
		}
		if room := e.room() - len(e.buf) - 2; len(x)/3 > room/4 || base64.StdEncoding.EncodedLen(len(x)) > room {
			return false
		}
		e.buf = append(e.buf, '"')
		e.buf = base64.StdEncoding.AppendEncode(e.buf, x)
		e.buf = append(e.buf, '"')
		return true
	case json.Marshaler:
	case error:
		return e.quoted(x.Error())
	}
	return e.marshal(x)
}

// marshal writes x with encoding/json. encoding/json builds the whole value in its own
// buffer before it can be refused: only that one copy is not bounded by the cap (see the
// package doc).
func (e *encoder) marshal(x any) bool {
	if e.js == nil {
		e.js = &jsonState{}
		e.js.enc = json.NewEncoder(&e.js.w)
		e.js.enc.SetEscapeHTML(false)
	}
	n := len(e.buf)
	e.js.w = capWriter{buf: e.buf, max: e.room() + 1} // + Encode's newline, cut below
	err := e.js.enc.Encode(x)
	e.buf = e.js.w.buf
	e.js.w.buf = nil
	switch {
	case err == nil:
		e.buf = e.buf[:len(e.buf)-1] // Encode's newline
		return true
	case errors.Is(err, errPastCap):
		e.js = nil // a json.Encoder keeps failing after its writer failed once
		e.buf = e.buf[:n]
		return false
	}
	e.buf = e.buf[:n]
	return e.quoted("!ERROR:" + err.Error()) // the text of a MarshalJSON error is the caller's
}

// appendJSONString appends s quoted with encoding/json's rules, HTML escaping off
// (the escaping slog.JSONHandler uses).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

func appendEscaped(b []byte, s string) []byte {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			// Eight bytes at a time: none a control character, '"', '\\' or >= 0x80?
			// (Word-at-a-time tests, exact as booleans; the loads combine into one.)
			x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
				uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
			quote := x ^ (ones * '"')
			slash := x ^ (ones * '\\')
			if ((x-ones*0x20)|(quote-ones)&^quote|(slash-ones)&^slash|x)&highs == 0 {
				i += 8
				continue
			}
		}
		c := s[i]
		if jsonSafe[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

// jsonSafe[c] is true for the bytes a JSON string holds as they are: ASCII but the control
// characters, '"' and '\\'. Bytes >= 0x80 need UTF-8 decoding.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

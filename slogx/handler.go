package slogx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
)

// ErrClosed is returned by Handle and Reopen on any handler whose file was closed by the
// handler OpenJSONFile returned. It matches os.ErrClosed with errors.Is.
var ErrClosed = fmt.Errorf("slogx: log file closed: %w", os.ErrClosed)

// ErrNotOpened is returned by a FileHandler that did not come from OpenJSONFile (a zero
// value): it has no file to write to.
var ErrNotOpened = errors.New("slogx: FileHandler not opened with OpenJSONFile")

var (
	_ slog.Handler = (*FileHandler)(nil)
	_ io.Closer    = (*FileHandler)(nil)
)

// FileHandler is a slog.Handler writing JSON lines to a file, byte for byte as
// slog.JSONHandler would. It is immutable: WithAttrs and WithGroup return a new
// *FileHandler and never touch the receiver. All handlers derived from one OpenJSONFile
// share its file.
//
// With Close and Reopen it implements promql.QueryLogger. It is safe for concurrent use.
type FileHandler struct {
	sink *sink

	// The attributes of WithAttrs calls, encoded once: own holds this handler's (no leading
	// comma), prev the handler whose attributes come before them. A derived handler holds
	// only its own bytes and a pointer, so its memory does not depend on what it extends.
	prev *FileHandler
	own  string
	// size is what the chain costs: its bytes plus linkCost per link (capped by MaxWithBytes).
	size int32
	// nOpen groups of groups are opened within the chain; the rest are pending: opened in a
	// record only if the record has attributes.
	nOpen  int32
	groups *group

	owner bool // returned by OpenJSONFile: its Close closes the file
	full  bool // MaxWithBytes reached: later With calls are dropped, records get the marker
	// lost: a WithGroup was dropped at the cap. Record attributes belong in that group, so
	// they are dropped too: at the top level they would mean something else, or pass for
	// msg or level.
	lost bool
}

// linkCost charges each WithAttrs link for its FileHandler, so MaxWithBytes bounds memory
// and not only bytes written, however small the attrs of each With.
const linkCost = 64

// groupCost charges each WithGroup for its list node.
const groupCost = 32

// group is an immutable list of WithGroup names, newest first; one allocation per WithGroup.
type group struct {
	parent *group
	name   string
	depth  int32
}

func (g *group) len() int {
	if g == nil {
		return 0
	}
	return int(g.depth)
}

// appendNames appends the group names, outermost first.
func (g *group) appendNames(dst []string) []string {
	n := g.len()
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	for x := g; x != nil; x = x.parent {
		dst[start+int(x.depth)-1] = x.name
	}
	return dst
}

// OpenJSONFile opens (creating if needed, appending) path and returns the handler that
// owns it: its Close closes the file for every handler derived from it. A nil o means
// default options. An empty path, a directory, a missing parent directory or invalid
// options are errors (invalid options wrap ErrInvalidOptions).
func OpenJSONFile(path string, o *Options) (*FileHandler, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: empty path", ErrInvalidOptions)
	}
	cfg, err := newConfig(o)
	if err != nil {
		return nil, err
	}
	var m *handlerMetrics
	if o != nil {
		m, err = newHandlerMetrics(o.Registerer)
	} else {
		m, err = newHandlerMetrics(nil)
	}
	if err != nil {
		return nil, fmt.Errorf("slogx: registering metrics: %w", err)
	}
	s, err := openSink(path, cfg, m)
	if err != nil {
		return nil, fmt.Errorf("slogx: opening log file: %w", err)
	}
	return &FileHandler{sink: s, owner: true}, nil
}

// Enabled reports whether level is at or above Options.Level (slog.LevelInfo by default).
func (h *FileHandler) Enabled(_ context.Context, level slog.Level) bool {
	if h.sink == nil {
		return false
	}
	return level >= h.sink.cfg.minLevel()
}

// Handle writes r as one JSON line with a single write. It returns ErrClosed after the
// owner's Close and the I/O error when the write fails; it never panics on attribute values
// (failures are written as "!ERROR:…" strings, as slog does).
func (h *FileHandler) Handle(_ context.Context, r slog.Record) error {
	s := h.sink
	if s == nil {
		return ErrNotOpened
	}
	if s.closed.Load() {
		s.metrics.refused()
		return ErrClosed
	}
	e := getEncoder()
	h.encode(e, r)
	if e.truncated {
		s.metrics.truncation()
	}
	err := s.write(e.buf, r.Time)
	putEncoder(e)
	return err
}

// Room always kept at the end of a line: ',' marker '}' '\n'.
const lineTail = 1 + len(truncatedMarker) + 1 + 1

func (h *FileHandler) encode(e *encoder, r slog.Record) {
	c := h.sink.cfg
	chainTail := 0
	if h.own != "" {
		chainTail = 1 + int(h.size) + int(h.nOpen)
	}
	e.reset(c.maxLine, lineTail+chainTail, c.replaceAttr)
	e.buf = append(e.buf, '{')

	// Built-in keys, in slog's order and with its ReplaceAttr calls (nil groups).
	e.builtin = true
	if !r.Time.IsZero() {
		if e.rep == nil {
			e.buf = append(e.buf, `"time":`...) // the first key: no comma
			e.comma = true
			e.time(r.Time)
		} else {
			e.attr(slog.Time(slog.TimeKey, r.Time.Round(0)))
		}
	}
	if e.rep == nil {
		if e.comma {
			e.buf = append(e.buf, ',')
		}
		e.buf = append(e.buf, `"level":`...)
		e.comma = true
		e.buf = appendJSONString(e.buf, r.Level.String())
	} else {
		e.attr(slog.Any(slog.LevelKey, r.Level))
	}
	if c.addSource {
		src := r.Source()
		if src == nil {
			src = &slog.Source{}
		}
		e.attr(slog.Any(slog.SourceKey, src))
	}
	if e.rep == nil {
		e.leaf(slog.MessageKey, slog.StringValue(r.Message), slog.KindString)
	} else {
		e.attr(slog.String(slog.MessageKey, r.Message))
	}
	e.builtin = false

	e.tail -= chainTail
	if h.own != "" {
		if e.comma {
			e.buf = append(e.buf, ',')
		}
		e.buf = h.appendChain(e.buf)
		e.comma = true
		e.closers = int(h.nOpen)
	}
	if r.NumAttrs() > 0 && h.lost {
		e.truncated = true
	} else if r.NumAttrs() > 0 {
		m := e.mark()
		wrote := false
		if e.enterGroups(h) {
			r.Attrs(func(a slog.Attr) bool {
				if e.attr(a) {
					wrote = true
				}
				return !e.truncated
			})
		}
		if !wrote {
			e.rollback(m)
		}
	}
	e.closeAll()
	if e.truncated || h.full {
		e.buf = append(e.buf, ',')
		e.buf = append(e.buf, truncatedMarker...)
	}
	e.buf = append(e.buf, '}', '\n')
}

// appendChain appends the pre-encoded attributes of h's chain, oldest first.
func (h *FileHandler) appendChain(b []byte) []byte {
	if h.prev != nil {
		b = h.prev.appendChain(b)
		b = append(b, ',')
	}
	return append(b, h.own...)
}

// enterGroups sets up h's groups before its attributes: the opened ones for ReplaceAttr,
// the pending ones written. False if they do not fit.
func (e *encoder) enterGroups(h *FileHandler) bool {
	if h.groups == nil {
		return true
	}
	e.names = h.groups.appendNames(e.names[:0])
	if e.rep != nil {
		e.groups = append(e.groups, e.names[:h.nOpen]...)
	}
	for _, g := range e.names[h.nOpen:] {
		if !e.openGroup(g) {
			return false
		}
	}
	return true
}

// WithAttrs returns a new *FileHandler whose records carry attrs after the receiver's
// attributes. The attrs are resolved, passed through ReplaceAttr and encoded now, once;
// the receiver is not modified. The result does not own the file: its Close does nothing.
func (h *FileHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := h.derive()
	if len(attrs) == 0 || h.sink == nil {
		return h2
	}
	if h.full {
		h.sink.metrics.truncation()
		return h2
	}
	c := h.sink.cfg
	e := getEncoder()
	tail := linkCost + h.groups.len()*groupCost
	if h.own != "" {
		tail += int(h.size) + 1
	}
	e.reset(c.maxWith, tail, c.replaceAttr)
	e.closers = int(h.nOpen)
	wrote := false
	if e.enterGroups(h) {
		for _, a := range attrs {
			if e.attr(a) {
				wrote = true
			}
			if e.truncated {
				break
			}
		}
	}
	if wrote {
		if h.own != "" {
			h2.prev = h
		}
		h2.own = string(e.buf)
		h2.size = int32(tail + len(e.buf))
		h2.nOpen = int32(h.groups.len())
	}
	if e.truncated {
		h2.full = true
		h.sink.metrics.truncation()
	}
	putEncoder(e)
	return h2
}

// WithGroup returns a new *FileHandler that nests later attributes under name; the
// receiver is not modified. An empty name adds no group (the slog.Handler contract).
func (h *FileHandler) WithGroup(name string) slog.Handler {
	h2 := h.derive()
	if name == "" || h.sink == nil {
		return h2
	}
	if h.full {
		h2.lost = true
		h.sink.metrics.truncation()
		return h2
	}
	// Groups count against the With cap too: pending ones by what they will write, all of
	// them by the list node they hold. A name longer than the cap cannot fit: refuse it
	// before escaping it costs its own size.
	if len(name) > h.sink.cfg.maxWith {
		h2.full, h2.lost = true, true
		h.sink.metrics.truncation()
		return h2
	}
	pending := jsonStringLen(name) + len(",:{}")
	for g := h.groups; g != nil && g.depth > h.nOpen; g = g.parent {
		pending += jsonStringLen(g.name) + len(",:{}")
	}
	if int(h.size)+int(h.nOpen)+(h.groups.len()+1)*groupCost+pending > h.sink.cfg.maxWith {
		h2.full, h2.lost = true, true
		h.sink.metrics.truncation()
		return h2
	}
	h2.groups = &group{parent: h.groups, name: name, depth: int32(h.groups.len() + 1)}
	return h2
}

func jsonStringLen(s string) int {
	var scratch [64]byte
	return len(appendJSONString(scratch[:0], s))
}

// derive copies h without ownership: only the handler OpenJSONFile returned closes the file.
func (h *FileHandler) derive() *FileHandler {
	h2 := *h
	h2.owner = false
	return &h2
}

// Close closes the file if h is the handler OpenJSONFile returned; for a derived handler it
// does nothing. It is idempotent and returns nil after the first call. After it, Handle on
// h and on every handler derived from it returns ErrClosed.
func (h *FileHandler) Close() error {
	if !h.owner || h.sink == nil {
		return nil
	}
	return h.sink.close()
}

// Reopen closes the file and opens the path again, for all handlers sharing it, typically on
// SIGHUP after logrotate renamed the file (its "create" mode). If the path cannot be opened,
// the handlers keep writing to the current file and the error is returned.
func (h *FileHandler) Reopen() error {
	if h.sink == nil {
		return ErrNotOpened
	}
	return h.sink.reopen()
}

// Stats returns the counters of the file h writes to (shared by all derived handlers).
func (h *FileHandler) Stats() Stats {
	if h.sink == nil {
		return Stats{}
	}
	return h.sink.metrics.stats()
}

// Path returns the path of the log file.
func (h *FileHandler) Path() string {
	if h.sink == nil {
		return ""
	}
	return h.sink.path
}

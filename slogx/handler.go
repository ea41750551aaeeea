package slogx

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
)

// ErrClosed is returned by Handle and Reopen on any handler whose file was closed by the
// handler OpenJSONFile returned. It matches os.ErrClosed with errors.Is.
var ErrClosed = fmt.Errorf("slogx: log file closed: %w", os.ErrClosed)

var (
	_ slog.Handler = (*FileHandler)(nil)
	_ io.Closer    = (*FileHandler)(nil)
)

// FileHandler is a slog.Handler writing JSON lines to a file, byte for byte as
// slog.JSONHandler would. It is immutable: WithAttrs and WithGroup return a new
// *FileHandler carrying the parent's pre-encoded attributes plus their own, and never
// touch the receiver. All handlers derived from one OpenJSONFile share its file.
//
// With Close and Reopen it implements promql.QueryLogger. It is safe for concurrent use.
type FileHandler struct {
	sink *sink

	// prefix holds the attributes of WithAttrs calls, encoded once, without a leading comma.
	// Its first nOpen groups are opened in it; the rest of groups are pending: opened in a
	// record only if the record has attributes.
	prefix string
	groups []string
	nOpen  int32
	// pending is what the pending groups will cost when opened, to cap WithGroup chains.
	pending int32
	owner   bool // returned by OpenJSONFile: its Close closes the file
	full    bool // MaxWithBytes reached: later With attrs are dropped, records get the marker
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
	return level >= h.sink.cfg.minLevel()
}

// Handle writes r as one JSON line with a single write. It returns ErrClosed after the
// owner's Close and the I/O error when the write fails; it never panics on attribute values
// (failures are written as "!ERROR:…" strings, as slog does).
func (h *FileHandler) Handle(_ context.Context, r slog.Record) error {
	s := h.sink
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
	prefixTail := 0
	if len(h.prefix) > 0 {
		prefixTail = 1 + len(h.prefix) + int(h.nOpen)
	}
	e.reset(c.maxLine, lineTail+prefixTail, c.replaceAttr)
	e.buf = append(e.buf, '{')

	// Built-in keys, in slog's order and with its ReplaceAttr calls (nil groups).
	e.builtin = true
	if !r.Time.IsZero() {
		if e.rep == nil {
			e.key(slog.TimeKey)
			e.time(r.Time)
		} else {
			e.attr(slog.Time(slog.TimeKey, r.Time.Round(0)))
		}
	}
	if e.rep == nil {
		e.key(slog.LevelKey)
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
		e.leaf(slog.MessageKey, slog.StringValue(r.Message))
	} else {
		e.attr(slog.String(slog.MessageKey, r.Message))
	}
	e.builtin = false

	e.tail -= prefixTail
	if len(h.prefix) > 0 {
		if e.comma {
			e.buf = append(e.buf, ',')
		}
		e.buf = append(e.buf, h.prefix...)
		e.comma = true
		e.closers = int(h.nOpen)
	}
	if r.NumAttrs() > 0 {
		if e.rep != nil {
			e.groups = append(e.groups, h.groups[:h.nOpen]...)
		}
		m := e.mark()
		wrote := false
		if e.openPending(h.groups[h.nOpen:]) {
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

func (e *encoder) openPending(groups []string) bool {
	for _, g := range groups {
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
	if len(attrs) == 0 {
		return h2
	}
	if h.full {
		h.sink.metrics.truncation()
		return h2
	}
	c := h.sink.cfg
	e := getEncoder()
	e.reset(c.maxWith, 0, c.replaceAttr)
	e.buf = append(e.buf, h.prefix...)
	e.comma = len(h.prefix) > 0
	e.closers = int(h.nOpen)
	if e.rep != nil {
		e.groups = append(e.groups, h.groups[:h.nOpen]...)
	}
	wrote := false
	if e.openPending(h.groups[h.nOpen:]) {
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
		h2.prefix = string(e.buf)
		h2.nOpen = int32(len(h.groups))
		h2.pending = 0
	}
	if e.truncated {
		h2.full = true
		h.sink.metrics.truncation()
	}
	putEncoder(e)
	return h2
}

// WithGroup returns a new *FileHandler that nests later attributes under name; the
// receiver is not modified. An empty name adds no group.
func (h *FileHandler) WithGroup(name string) slog.Handler {
	h2 := h.derive()
	if name == "" {
		return h2
	}
	if h.full {
		h.sink.metrics.truncation()
		return h2
	}
	cost := len(appendJSONString(nil, name)) + len(",:{}")
	if len(h.prefix)+int(h.nOpen)+int(h.pending)+cost > h.sink.cfg.maxWith {
		h2.full = true
		h.sink.metrics.truncation()
		return h2
	}
	h2.groups = append(slices.Clip(h.groups), name)
	h2.pending += int32(cost)
	return h2
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
	if !h.owner {
		return nil
	}
	return h.sink.close()
}

// Reopen closes the file and opens the path again, for all handlers sharing it, typically on
// SIGHUP after logrotate renamed the file (its "create" mode). If the path cannot be opened,
// the handlers keep writing to the current file and the error is returned.
func (h *FileHandler) Reopen() error {
	return h.sink.reopen()
}

// Stats returns the counters of the file h writes to (shared by all derived handlers).
func (h *FileHandler) Stats() Stats {
	return h.sink.metrics.stats()
}

// Path returns the path of the log file.
func (h *FileHandler) Path() string { return h.sink.path }

package slogx

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Default caps. They bound what a caller can make one line, or one derived handler, cost.
const (
	// DefaultMaxLineBytes caps one record's JSON line, newline included.
	DefaultMaxLineBytes = 1 << 20
	// DefaultMaxWithBytes caps the attributes and groups pre-encoded by WithAttrs/WithGroup
	// chains, so the 3.0.0 pattern (h = h.With(...) per query) cannot grow without bound.
	DefaultMaxWithBytes = 64 << 10

	// minLineBytes leaves room for the built-in keys, a truncated message and the marker.
	minLineBytes = 1 << 10
	// maxCapBytes bounds MaxLineBytes and MaxWithBytes: chain sizes are kept in int32 (a
	// derived handler stays small), and a cap past 2 GiB would wrap and cap nothing.
	maxCapBytes = 1 << 30
)

// Options configures a FileHandler. A nil *Options means all defaults.
type Options struct {
	// Level is the minimum level handled; nil means slog.LevelInfo (as slog.HandlerOptions).
	Level slog.Leveler
	// AddSource adds a "source" object (function, file, line) like slog.HandlerOptions.
	AddSource bool
	// ReplaceAttr has slog.HandlerOptions' semantics exactly. It is called for the attrs
	// of WithAttrs once, when WithAttrs is called, not for every record.
	ReplaceAttr func(groups []string, a slog.Attr) slog.Attr

	// MaxBytes rotates the file before a write would take it past this size; 0 = no cap.
	// Lines are capped at MaxBytes too, so no file ever exceeds it. When set, it must be at
	// least 1 KiB and the path must be a regular file.
	MaxBytes int64
	// MaxBackups is how many rotated files are kept as path.1 (newest) … path.N; the
	// oldest is removed, and so are path.N+1, path.N+2 … left by a run that kept more
	// (up to the first missing one). 0 keeps none: rotation starts the file afresh and
	// touches no path.N. Needs MaxBytes.
	MaxBackups int

	// MaxLineBytes caps one record's line (newline included); 0 = DefaultMaxLineBytes.
	// Attributes past the cap are dropped, a long string value is cut, and the line ends
	// with the marker "!TRUNCATED":true. At least 1 KiB, at most 1 GiB.
	MaxLineBytes int
	// MaxWithBytes caps the pre-encoded attributes and groups a derived handler carries;
	// 0 = DefaultMaxWithBytes, at most 1 GiB, and never more than half of the line cap.
	// Attributes past it are dropped and every record of that handler carries the marker;
	// past a dropped WithGroup, the records' own attributes are dropped as well (they
	// belong in it).
	MaxWithBytes int

	// Registerer, if set, receives the slogx_* metrics. Handlers opened with the same
	// Registerer share counters (so they survive a reopen on config reload); wrap it with
	// prometheus.WrapRegistererWith to tell several log files apart.
	Registerer prometheus.Registerer
}

// ErrInvalidOptions is wrapped by every error OpenJSONFile returns for bad options.
var ErrInvalidOptions = errors.New("slogx: invalid options")

// config is the validated, immutable form of Options shared by all handlers of one file.
type config struct {
	level       slog.Leveler
	addSource   bool
	replaceAttr func(groups []string, a slog.Attr) slog.Attr
	maxBytes    int64
	maxBackups  int
	maxLine     int
	maxWith     int
}

func newConfig(o *Options) (*config, error) {
	if o == nil {
		o = &Options{}
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	switch {
	case o.MaxBytes < 0:
		return nil, bad("MaxBytes %d is negative", o.MaxBytes)
	case o.MaxBytes > 0 && o.MaxBytes < minLineBytes:
		return nil, bad("MaxBytes %d is below the minimum of %d", o.MaxBytes, minLineBytes)
	case o.MaxBackups < 0:
		return nil, bad("MaxBackups %d is negative", o.MaxBackups)
	case o.MaxBackups > 0 && o.MaxBytes == 0:
		return nil, bad("MaxBackups %d needs MaxBytes: without it the file never rotates", o.MaxBackups)
	case o.MaxLineBytes < 0:
		return nil, bad("MaxLineBytes %d is negative", o.MaxLineBytes)
	case o.MaxLineBytes > 0 && o.MaxLineBytes < minLineBytes:
		return nil, bad("MaxLineBytes %d is below the minimum of %d", o.MaxLineBytes, minLineBytes)
	case o.MaxLineBytes > maxCapBytes:
		return nil, bad("MaxLineBytes %d is above the maximum of %d", o.MaxLineBytes, maxCapBytes)
	case o.MaxWithBytes < 0:
		return nil, bad("MaxWithBytes %d is negative", o.MaxWithBytes)
	case o.MaxWithBytes > maxCapBytes:
		return nil, bad("MaxWithBytes %d is above the maximum of %d", o.MaxWithBytes, maxCapBytes)
	}
	c := &config{
		level:       o.Level,
		addSource:   o.AddSource,
		replaceAttr: o.ReplaceAttr,
		maxBytes:    o.MaxBytes,
		maxBackups:  o.MaxBackups,
		maxLine:     o.MaxLineBytes,
		maxWith:     o.MaxWithBytes,
	}
	if c.maxLine == 0 {
		c.maxLine = DefaultMaxLineBytes
	}
	if c.maxBytes > 0 && int64(c.maxLine) > c.maxBytes {
		c.maxLine = int(c.maxBytes)
	}
	if c.maxWith == 0 {
		c.maxWith = DefaultMaxWithBytes
	}
	// The With prefix is written whole into every line, so it must leave room for the rest.
	c.maxWith = min(c.maxWith, c.maxLine/2)
	return c, nil
}

func (c *config) minLevel() slog.Level {
	if c.level == nil {
		return slog.LevelInfo
	}
	return c.level.Level()
}

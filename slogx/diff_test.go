package slogx

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// optionModes are the option combinations the differential test and slogtest run in.
type optionMode struct {
	name string
	opts slog.HandlerOptions
}

func optionModes() []optionMode {
	var modes []optionMode
	for _, rep := range replaceAttrs {
		for _, src := range []bool{false, true} {
			name := "replace=" + rep.name
			if src {
				name += "/source"
			}
			modes = append(modes, optionMode{name, slog.HandlerOptions{AddSource: src, ReplaceAttr: rep.fn, Level: slog.LevelDebug}})
		}
	}
	return modes
}

func applyOps(h slog.Handler, ops []genOp) slog.Handler {
	for _, op := range ops {
		if op.attrs == nil {
			h = h.WithGroup(op.group)
		} else {
			h = h.WithAttrs(op.attrs)
		}
	}
	return h
}

// checkAgainstSlog writes sc through ours (fh) and through slog.JSONHandler (given the
// oracle's input) and requires byte equality; ours must be one valid JSON line either way.
// It reports whether slog, given sc itself, writes something else: a case where slog is
// wrong (an emptied group) and ours deliberately differs.
func checkAgainstSlog(t testing.TB, fh *FileHandler, lr *lineReader, mode optionMode, sc scenario) (slogDiffers bool) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, applyOps(fh, sc.ops).Handle(ctx, sc.rec))
	got := lr.next(t)
	requireJSONLine(t, got)
	if sc.unstable != "" {
		return false
	}
	ops, rec := oracle(sc, mode.opts.ReplaceAttr)
	want := slogLine(t, mode.opts, ops, rec)
	if got != want {
		t.Fatalf("mode %s: output differs from slog.JSONHandler\n got: %s\nwant: %s\nops: %+v\nrecord: %v", mode.name, got, want, sc.ops, sc.rec)
	}
	return slogLine(t, mode.opts, sc.ops, sc.rec) != want
}

func slogLine(t testing.TB, opts slog.HandlerOptions, ops []genOp, rec slog.Record) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, applyOps(slog.NewJSONHandler(&buf, &opts), ops).Handle(context.Background(), rec))
	return strings.TrimSuffix(buf.String(), "\n")
}

func TestMatchesSlogJSONHandlerByteForByte(t *testing.T) {
	n := 2000
	if testing.Short() || raceEnabled {
		n = 400
	}
	for mi, mode := range optionModes() {
		t.Run(mode.name, func(t *testing.T) {
			fh, lr := openForDiff(t, mode)
			rng := rand.New(rand.NewPCG(uint64(mi), 1))
			input := make([]byte, 256)
			deviations := 0
			for range n {
				for i := range input {
					input[i] = byte(rng.Uint32())
				}
				if checkAgainstSlog(t, fh, lr, mode, generate(input, genMode{})) {
					deviations++
				}
			}
			// The generator must reach slog's empty-group cases, or the oracle is untested.
			require.NotZero(t, deviations, "no record hit an emptied group")
			t.Logf("%d of %d records hit a case where slog.JSONHandler is wrong", deviations, n)
		})
	}
}

func openForDiff(t testing.TB, mode optionMode) (*FileHandler, *lineReader) {
	t.Helper()
	fh, path := openTemp(t, &Options{AddSource: mode.opts.AddSource, ReplaceAttr: mode.opts.ReplaceAttr, Level: mode.opts.Level})
	return fh, openLineReader(t, path)
}

package slogx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openTemp opens a handler on a fresh file; the test closes it at cleanup.
func openTemp(t testing.TB, o *Options) (*FileHandler, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "query.log")
	h, err := OpenJSONFile(path, o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = h.Close() })
	return h, path
}

// readLines returns the lines of path, each without its '\n', and fails unless the file
// ends with a newline (no broken last line).
func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	if len(b) == 0 {
		return nil
	}
	require.Equal(t, byte('\n'), b[len(b)-1], "file must end with a complete line")
	return strings.Split(string(b[:len(b)-1]), "\n")
}

// requireJSONLine fails unless line is exactly one valid JSON object.
func requireJSONLine(t testing.TB, line string) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(line))
	require.NoError(t, dec.Decode(&m), "not JSON: %q", line)
	_, err := dec.Token()
	require.ErrorIs(t, err, io.EOF, "more than one JSON value on the line: %q", line)
	return m
}

func TestWithDoesNotMutateReceiver(t *testing.T) {
	h, path := openTemp(t, nil)
	base := h.WithAttrs([]slog.Attr{slog.String("component", "query engine")})
	ctx := context.Background()

	a := base.WithAttrs([]slog.Attr{slog.String("query", "up")})
	b := base.WithGroup("g").WithAttrs([]slog.Attr{slog.String("query", "rate(x[5m])")})
	_ = base.WithAttrs([]slog.Attr{slog.Int("unused", 1)})
	for _, hh := range []slog.Handler{a, b, base, h} {
		require.NoError(t, hh.Handle(ctx, slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)))
	}
	require.Equal(t, []string{
		`{"level":"INFO","msg":"m","component":"query engine","query":"up"}`,
		`{"level":"INFO","msg":"m","component":"query engine","g":{"query":"rate(x[5m])"}}`,
		`{"level":"INFO","msg":"m","component":"query engine"}`,
		`{"level":"INFO","msg":"m"}`,
	}, readLines(t, path))

	_, ok := a.(*FileHandler)
	require.True(t, ok, "WithAttrs must return *FileHandler (Prometheus type-asserts it)")
	_, ok = base.WithGroup("x").(*FileHandler)
	require.True(t, ok, "WithGroup must return *FileHandler")
}

// The 3.0.0 incident: every query did base.With(query attrs).Info(...). Each line must
// hold only its own query's attributes, whatever came before.
func TestEachLineHoldsOnlyItsOwnWithAttrs(t *testing.T) {
	h, path := openTemp(t, nil)
	base := slog.New(h).With("engine", "promql")
	const n = 1000
	for i := range n {
		base.With("query", i, "path", "/api/v1/query").Info("promql query logged", "took", i)
	}
	lines := readLines(t, path)
	require.Len(t, lines, n)
	for i, l := range lines {
		m := requireJSONLine(t, l)
		delete(m, "time")
		require.Equal(t, map[string]any{
			"level": "INFO", "msg": "promql query logged", "engine": "promql",
			"query": float64(i), "path": "/api/v1/query", "took": float64(i),
		}, m)
	}
}

func TestEmptyAndUnnamedWithsReturnNonOwners(t *testing.T) {
	h, path := openTemp(t, nil)
	for _, d := range []slog.Handler{h.WithAttrs(nil), h.WithGroup("")} {
		fh := d.(*FileHandler)
		require.NotSame(t, h, fh)
		require.NoError(t, fh.Close(), "a derived handler's Close is a no-op")
	}
	require.NoError(t, h.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "still open", 0)))
	require.Equal(t, []string{`{"level":"INFO","msg":"still open"}`}, readLines(t, path))
}

func TestEnabledFollowsLevel(t *testing.T) {
	var lvl slog.LevelVar
	lvl.Set(slog.LevelWarn)
	h, _ := openTemp(t, &Options{Level: &lvl})
	ctx := context.Background()
	require.False(t, h.Enabled(ctx, slog.LevelInfo))
	require.True(t, h.WithGroup("g").Enabled(ctx, slog.LevelWarn))
	lvl.Set(slog.LevelDebug)
	require.True(t, h.Enabled(ctx, slog.LevelDebug), "a LevelVar change applies at once")

	d, _ := openTemp(t, nil)
	require.False(t, d.Enabled(ctx, slog.LevelDebug), "default level is Info")
	require.True(t, d.Enabled(ctx, slog.LevelInfo))
}

func TestConcurrentWritersNeverInterleave(t *testing.T) {
	h, path := openTemp(t, &Options{MaxBytes: 256 << 10, MaxBackups: 50})
	const writers, perWriter = 8, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			l := slog.New(h).With("writer", w)
			for i := range perWriter {
				// Lines of very different lengths make a torn or interleaved write visible.
				l.Info("q", "i", i, "pad", strings.Repeat("x", (w*131+i*17)%3000))
			}
		})
	}
	wg.Wait()
	require.NoError(t, h.Close())

	seen := map[[2]int]bool{}
	files, err := filepath.Glob(path + "*")
	require.NoError(t, err)
	for _, f := range files {
		for _, l := range readLines(t, f) {
			m := requireJSONLine(t, l)
			key := [2]int{int(m["writer"].(float64)), int(m["i"].(float64))}
			require.False(t, seen[key], "duplicate line %v", key)
			seen[key] = true
		}
	}
	require.Len(t, seen, writers*perWriter, "every record is in exactly one file")
}

func TestErrClosedMatchesOSErrClosed(t *testing.T) {
	require.ErrorIs(t, ErrClosed, os.ErrClosed)
}

func TestCloseIsIdempotentAndEveryDerivedHandlerReturnsErrClosed(t *testing.T) {
	h, path := openTemp(t, nil)
	derived := []slog.Handler{h, h.WithAttrs([]slog.Attr{slog.Int("a", 1)}), h.WithGroup("g"), h.WithGroup("g").WithAttrs([]slog.Attr{slog.Int("b", 2)})}
	ctx := context.Background()
	rec := slog.NewRecord(time.Time{}, slog.LevelInfo, "before", 0)
	for _, d := range derived {
		require.NoError(t, d.Handle(ctx, rec))
	}
	for _, d := range derived[1:] {
		require.NoError(t, d.(io.Closer).Close(), "derived Close")
	}
	require.NoError(t, h.Handle(ctx, rec))
	require.Len(t, readLines(t, path), len(derived)+1, "derived Close must not close the shared file")

	require.NoError(t, h.Close())
	require.NoError(t, h.Close(), "second Close")
	after := slog.NewRecord(time.Time{}, slog.LevelInfo, "after", 0)
	after.AddAttrs(slog.String("k", "v"))
	for _, d := range append(derived, h.WithAttrs([]slog.Attr{slog.Int("made", 1)}), h.WithGroup("late")) {
		require.ErrorIs(t, d.Handle(ctx, after), ErrClosed)
	}
	require.ErrorIs(t, h.Reopen(), ErrClosed)
	require.Len(t, readLines(t, path), len(derived)+1, "nothing written after Close")

	// The closed descriptor's number is free for the next open file: nothing may reach it.
	other := filepath.Join(t.TempDir(), "other")
	f, err := os.OpenFile(other, os.O_WRONLY|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer f.Close()
	for _, d := range derived {
		require.ErrorIs(t, d.Handle(ctx, after), ErrClosed)
	}
	fi, err := os.Stat(other)
	require.NoError(t, err)
	require.Zero(t, fi.Size(), "a write went to a reused descriptor")
	require.Equal(t, uint64(2*len(derived)+2), h.Stats().Closed)
}

// promql's SetQueryLogger closes the old logger on every config reload while queries may
// still be logging through it. Handles racing the Close either succeed or get ErrClosed, and
// none of them opens the file again: Close waits until every writer is writing.
func TestCloseRacingHandlesNeverPanicsOrWritesAfterClose(t *testing.T) {
	for range 20 {
		h, path := openTemp(t, nil)
		var wg, writing sync.WaitGroup
		var mu sync.Mutex
		written := 0
		const writers = 4
		// A writer reports here, never through require: FailNow would end it before it
		// signals writing, and the test would hang instead of failing.
		errs := make(chan error, writers)
		for w := range writers {
			writing.Add(1)
			wg.Go(func() {
				first := sync.OnceFunc(writing.Done)
				defer first()
				l := h.WithAttrs([]slog.Attr{slog.Int("w", w)})
				for {
					err := l.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "q", 0))
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						errs <- fmt.Errorf("writer %d: %w", w, err)
						return
					}
					mu.Lock()
					written++
					mu.Unlock()
					first()
					runtime.Gosched() // with one P, let Close in
				}
			})
		}
		writing.Wait()
		require.NoError(t, h.Close())
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Nil(t, h.sink.f, "a Handle that was waiting for the file when Close ran opened it again")
		lines := readLines(t, path)
		require.Len(t, lines, written, "exactly the successful Handles are in the file")
		for _, l := range lines {
			requireJSONLine(t, l)
		}
	}
}

func TestOpenJSONFileRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ok.log")
	for _, tc := range []struct {
		name    string
		path    string
		opts    *Options
		invalid bool // errors.Is(err, ErrInvalidOptions)
		want    string
	}{
		{"empty path", "", nil, true, "empty path"},
		{"directory", dir, nil, false, "is a directory"},
		{"missing parent", filepath.Join(dir, "nope", "q.log"), nil, false, "no such file or directory"},
		{"negative MaxBytes", file, &Options{MaxBytes: -1}, true, "MaxBytes -1 is negative"},
		{"tiny MaxBytes", file, &Options{MaxBytes: 100}, true, "below the minimum"},
		{"negative MaxBackups", file, &Options{MaxBytes: 1 << 20, MaxBackups: -2}, true, "MaxBackups -2 is negative"},
		{"backups without MaxBytes", file, &Options{MaxBackups: 3}, true, "needs MaxBytes"},
		{"negative MaxLineBytes", file, &Options{MaxLineBytes: -1}, true, "negative"},
		{"tiny MaxLineBytes", file, &Options{MaxLineBytes: 10}, true, "below the minimum"},
		{"negative MaxWithBytes", file, &Options{MaxWithBytes: -1}, true, "negative"},
		// Sizes are kept in int32: a cap past 2 GiB would wrap and cap nothing.
		{"huge MaxLineBytes", file, &Options{MaxLineBytes: 1<<30 + 1}, true, "MaxLineBytes 1073741825 is above the maximum of 1073741824"},
		{"MaxLineBytes past int32", file, &Options{MaxLineBytes: math.MaxInt}, true, "above the maximum"},
		{"huge MaxWithBytes", file, &Options{MaxWithBytes: 1<<30 + 1}, true, "MaxWithBytes 1073741825 is above the maximum of 1073741824"},
		{"MaxWithBytes past int32", file, &Options{MaxWithBytes: math.MaxInt}, true, "above the maximum"},
		{"rotating a device", os.DevNull, &Options{MaxBytes: 1 << 20}, true, "needs a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := OpenJSONFile(tc.path, tc.opts)
			require.Error(t, err)
			require.Nil(t, h)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, tc.invalid, errors.Is(err, ErrInvalidOptions), "%v", err)
		})
	}
	_, err := os.Stat(file)
	require.ErrorIs(t, err, os.ErrNotExist, "rejected options must not create the file")
}

func TestOpenJSONFileAppendsToExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.log")
	require.NoError(t, os.WriteFile(path, []byte("{\"old\":1}\n"), 0o600))
	h, err := OpenJSONFile(path, nil)
	require.NoError(t, err)
	require.NoError(t, h.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "new", 0)))
	require.NoError(t, h.Close())
	require.Equal(t, []string{`{"old":1}`, `{"level":"INFO","msg":"new"}`}, readLines(t, path))
	require.Equal(t, path, h.Path())
}

// Values encoding/json cannot marshal still give one valid line with an error string,
// exactly where slog.JSONHandler puts its own.
func TestUnmarshalableValuesGiveValidLineWithErrorMarker(t *testing.T) {
	h, path := openTemp(t, nil)
	c := &cyclic{}
	c.Next = c
	var nilErr *nilDeref
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "bad values", 0)
	r.AddAttrs(
		slog.Any("chan", make(chan int)),
		slog.Any("cycle", c),
		slog.Float64("nan", nanValue()),
		slog.Any("panicking", lvPanic{}),
		slog.Any("marshal", panicJSON{}),
		slog.Any("invalid", badMarshal{}),
		slog.Any("nilerr", nilErr),
		slog.Time("y10k", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)),
		slog.String("after", "still here"),
	)
	require.NoError(t, h.Handle(context.Background(), r))
	lines := readLines(t, path)
	require.Len(t, lines, 1)
	m := requireJSONLine(t, lines[0])
	for key, want := range map[string]string{
		"chan":    "!ERROR:json: unsupported type: chan int",
		"cycle":   "!ERROR:json: unsupported value: encountered a cycle via *slogx.cyclic",
		"nan":     "!ERROR:json: unsupported value: NaN",
		"marshal": "!PANIC: MarshalJSON boom",
		"invalid": "!ERROR:json: error calling MarshalJSON for type slogx.badMarshal: invalid character 'n' looking for beginning of object key string",
		"nilerr":  "<nil>",
		"y10k":    "!ERROR:time.Time year outside of range [0,9999]",
		"after":   "still here",
	} {
		require.Equal(t, want, m[key], key)
	}
	require.True(t, strings.HasPrefix(m["panicking"].(string), "LogValue panicked\n"), m["panicking"])

	// slog's own output for the same record, minus the values whose text differs by design
	// (a stack trace) or where slog writes invalid JSON (the year 10000).
	var buf bytes.Buffer
	r2 := slog.NewRecord(time.Time{}, slog.LevelInfo, "bad values", 0)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "panicking" && a.Key != "y10k" {
			r2.AddAttrs(a)
		}
		return true
	})
	require.NoError(t, slog.NewJSONHandler(&buf, nil).Handle(context.Background(), r2))
	var want map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &want))
	delete(m, "panicking")
	delete(m, "y10k")
	require.Equal(t, want, m)
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

// scanLines is a bufio.Scanner allowing lines up to the line cap.
func scanLines(t testing.TB, r io.Reader) []string {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 4<<20)
	var out []string
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	require.NoError(t, sc.Err())
	return out
}

func TestZeroFileHandlerRefusesClearly(t *testing.T) {
	var h FileHandler
	ctx := context.Background()
	require.False(t, h.Enabled(ctx, slog.LevelError))
	require.ErrorIs(t, h.Handle(ctx, slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)), ErrNotOpened)
	d := h.WithAttrs([]slog.Attr{slog.Int("a", 1)}).WithGroup("g")
	require.ErrorIs(t, d.Handle(ctx, slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)), ErrNotOpened)
	require.ErrorIs(t, h.Reopen(), ErrNotOpened)
	require.NoError(t, h.Close())
	require.Equal(t, Stats{}, h.Stats())
	require.Empty(t, h.Path())
}

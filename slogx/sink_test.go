package slogx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// record makes a record with a sequence number; t is the record time (zero: none).
func record(t time.Time, seq int, pad int) slog.Record {
	r := slog.NewRecord(t, slog.LevelInfo, "q", 0)
	r.AddAttrs(slog.Int("seq", seq), slog.String("pad", strings.Repeat("p", pad)))
	return r
}

func seqOf(t testing.TB, line string) int {
	t.Helper()
	return int(requireJSONLine(t, line)["seq"].(float64))
}

func TestRotationKeepsMaxBackupsAndNeverSplitsALine(t *testing.T) {
	const maxBytes = 4096
	for _, backups := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("backups=%d", backups), func(t *testing.T) {
			h, path := openTemp(t, &Options{MaxBytes: maxBytes, MaxBackups: backups})
			d := h.WithAttrs([]slog.Attr{slog.String("derived", "yes")}) // rotation is shared
			const n = 400
			for i := range n {
				hh := slog.Handler(h)
				if i%2 == 1 {
					hh = d
				}
				require.NoError(t, hh.Handle(context.Background(), record(time.Time{}, i, (i*37)%300)))
			}
			files := []string{path}
			for i := 1; i <= backups; i++ {
				files = append([]string{fmt.Sprintf("%s.%d", path, i)}, files...)
			}
			_, err := os.Stat(fmt.Sprintf("%s.%d", path, backups+1))
			require.ErrorIs(t, err, os.ErrNotExist, "the oldest backup is removed")

			// Oldest to newest, the kept files hold one unbroken run of records ending
			// with the last one, each file under MaxBytes.
			var seqs []int
			for _, f := range files {
				fi, err := os.Stat(f)
				require.NoError(t, err)
				require.LessOrEqual(t, fi.Size(), int64(maxBytes))
				for _, l := range readLines(t, f) {
					seqs = append(seqs, seqOf(t, l))
				}
			}
			require.Equal(t, n-1, seqs[len(seqs)-1])
			for i := 1; i < len(seqs); i++ {
				require.Equal(t, seqs[i-1]+1, seqs[i], "no record lost or split between kept files")
			}
			st := h.Stats()
			require.Equal(t, uint64(n), st.Records)
			require.NotZero(t, st.Rotations)
			require.GreaterOrEqual(t, st.Bytes, uint64(st.Rotations)*maxBytes/2)
		})
	}
}

// logrotate's "create" mode renames the file and signals the process, which calls Reopen:
// every derived handler follows at once.
func TestReopenAfterExternalRenameMovesAllDerivedHandlers(t *testing.T) {
	h, path := openTemp(t, nil)
	derived := []slog.Handler{h, h.WithAttrs([]slog.Attr{slog.Int("d", 1)}), h.WithGroup("g")}
	ctx := context.Background()
	seq := 0
	writeAll := func() {
		for _, d := range derived {
			require.NoError(t, d.Handle(ctx, record(time.Time{}, seq, 0)))
			seq++
		}
	}
	writeAll()
	require.NoError(t, os.Rename(path, path+".1"))
	writeAll() // still to the renamed file: the descriptor follows the inode
	require.NoError(t, derived[1].(*FileHandler).Reopen(), "Reopen through any handler")
	writeAll()

	require.Len(t, readLines(t, path+".1"), 6)
	lines := readLines(t, path)
	require.Len(t, lines, 3)
	require.Equal(t, 6, seqOf(t, lines[0]))
	require.Equal(t, uint64(1), h.Stats().Reopens)
}

func TestReopenFailureKeepsWritingToCurrentFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "logs")
	require.NoError(t, os.Mkdir(sub, 0o755))
	path := filepath.Join(sub, "q.log")
	h, err := OpenJSONFile(path, nil)
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, os.Rename(sub, filepath.Join(dir, "moved")))
	require.ErrorIs(t, h.Reopen(), os.ErrNotExist)
	require.NoError(t, h.Handle(context.Background(), record(time.Time{}, 1, 0)), "the old file still takes writes")
	require.Len(t, readLines(t, filepath.Join(dir, "moved", "q.log")), 1)
}

// A file removed under an open descriptor takes writes silently (and keeps its disk space).
// The handler notices within a second of record time and re-creates it.
func TestRemovedFileIsNoticedAndRecreated(t *testing.T) {
	h, path := openTemp(t, nil)
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, h.Handle(ctx, record(t0, 0, 0)))
	require.NoError(t, os.Remove(path))
	require.NoError(t, h.Handle(ctx, record(t0.Add(500*time.Millisecond), 1, 0)), "within the check interval: not yet noticed")
	require.NoError(t, h.Handle(ctx, record(t0.Add(time.Second), 2, 0)))
	lines := readLines(t, path)
	require.Len(t, lines, 1)
	require.Equal(t, 2, seqOf(t, lines[0]))
	require.Equal(t, uint64(1), h.Stats().Reopens)
}

func TestRemovedFileIsNoticedForRecordsWithoutTime(t *testing.T) {
	h, path := openTemp(t, nil)
	require.NoError(t, os.Remove(path))
	for i := range checkRecords + 1 {
		require.NoError(t, h.Handle(context.Background(), record(time.Time{}, i, 0)))
	}
	lines := readLines(t, path)
	require.NotEmpty(t, lines)
	require.Equal(t, checkRecords, seqOf(t, lines[len(lines)-1]))
}

// Disk full: /dev/full fails every write with ENOSPC. The error comes back from Handle, is
// counted, never panics or blocks; once the path names a writable file again, writing resumes.
func TestWriteErrorsAreReturnedCountedAndRecover(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	path := filepath.Join(t.TempDir(), "q.log")
	require.NoError(t, os.Symlink("/dev/full", path))
	h, err := OpenJSONFile(path, nil)
	require.NoError(t, err)
	defer h.Close()
	l := h.WithAttrs([]slog.Attr{slog.String("query", "up")})
	ctx := context.Background()
	for i := range 3 {
		err := l.Handle(ctx, record(time.Time{}, i, 10))
		require.ErrorIs(t, err, syscall.ENOSPC)
		require.ErrorContains(t, err, path)
	}
	require.Equal(t, uint64(3), h.Stats().WriteErrors)
	require.Zero(t, h.Stats().Records)

	require.NoError(t, os.Remove(path)) // the cause goes away: the path is free again
	require.NoError(t, l.Handle(ctx, record(time.Time{}, 3, 10)))
	lines := readLines(t, path)
	require.Len(t, lines, 1)
	require.Equal(t, "up", requireJSONLine(t, lines[0])["query"])
	require.Equal(t, uint64(1), h.Stats().Records)
}

func TestDevFullDirectly(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	h, err := OpenJSONFile("/dev/full", nil)
	require.NoError(t, err)
	defer h.Close()
	require.ErrorIs(t, h.Handle(context.Background(), record(time.Time{}, 0, 0)), syscall.ENOSPC)
}

// The directory disappears: the re-creation fails, Handle says so and counts it; when the
// directory is back, the next record re-creates the file.
func TestRemovedDirectoryErrorsUntilItIsBack(t *testing.T) {
	sub := filepath.Join(t.TempDir(), "logs")
	require.NoError(t, os.Mkdir(sub, 0o755))
	path := filepath.Join(sub, "q.log")
	for _, tc := range []struct {
		name string
		opts *Options
		at   func(i int) time.Time // record times; zero-time records reach rotation first
	}{
		{"identity check", nil, func(i int) time.Time { return time.Unix(int64(1000+2*i), 0) }},
		{"rotation", &Options{MaxBytes: 1024, MaxBackups: 1}, func(int) time.Time { return time.Time{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := OpenJSONFile(path, tc.opts)
			require.NoError(t, err)
			defer h.Close()
			ctx := context.Background()
			require.NoError(t, h.Handle(ctx, record(tc.at(0), 0, 900)))
			require.NoError(t, os.RemoveAll(sub))
			i := 1
			for ; i <= 3; i++ {
				err := h.Handle(ctx, record(tc.at(i), i, 900))
				require.ErrorIs(t, err, os.ErrNotExist, "record %d", i)
			}
			require.Equal(t, uint64(3), h.Stats().WriteErrors)
			require.NoError(t, os.Mkdir(sub, 0o755))
			require.NoError(t, h.Handle(ctx, record(tc.at(i), i, 900)))
			lines := readLines(t, path)
			require.Len(t, lines, 1)
			require.Equal(t, i, seqOf(t, lines[0]))
		})
	}
}

// A write the kernel cuts short (here by RLIMIT_FSIZE; in production by a full disk) leaves
// no fragment behind to glue itself to the next line.
func TestPartialWriteIsUndone(t *testing.T) {
	h, path := openTemp(t, nil)
	ctx := context.Background()
	require.NoError(t, h.Handle(ctx, record(time.Time{}, 0, 0)))
	fi, err := os.Stat(path)
	require.NoError(t, err)

	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old))
	lim := old
	lim.Cur = uint64(fi.Size()) + 100
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim)) // SIGXFSZ is ignored by Go programs
	err = h.Handle(ctx, record(time.Time{}, 1, 500))
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old))
	require.Error(t, err)
	require.True(t, errors.Is(err, syscall.EFBIG), "%v", err)

	require.NoError(t, h.Handle(ctx, record(time.Time{}, 2, 0)))
	lines := readLines(t, path)
	require.Len(t, lines, 2)
	require.Equal(t, 0, seqOf(t, lines[0]))
	require.Equal(t, 2, seqOf(t, lines[1]))
}

// Reopen (and size rotation) while writers are busy: every record lands whole in exactly
// one file, none lost.
func TestReopenAndRotationRacingWritersLoseNothing(t *testing.T) {
	h, path := openTemp(t, &Options{MaxBytes: 16 << 10, MaxBackups: 1000})
	const writers, perWriter, reopens = 4, 500, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers) // writers report here: FailNow belongs to the test goroutine
	for w := range writers {
		wg.Go(func() {
			l := h.WithAttrs([]slog.Attr{slog.Int("w", w)})
			for i := range perWriter {
				if err := l.Handle(context.Background(), record(time.Time{}, w*perWriter+i, i%200)); err != nil {
					errs <- fmt.Errorf("writer %d, record %d: %w", w, i, err)
					return
				}
			}
		})
	}
	for i := range reopens {
		// A rotation may be between its rename and its open: then there is nothing to move.
		if err := os.Rename(path, fmt.Sprintf("%s.moved%d", path, i)); err != nil {
			require.ErrorIs(t, err, os.ErrNotExist)
		}
		require.NoError(t, h.Reopen())
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, h.Close())

	files, err := filepath.Glob(path + "*")
	require.NoError(t, err)
	seen := map[int]bool{}
	for _, f := range files {
		for _, l := range readLines(t, f) {
			seq := seqOf(t, l)
			require.False(t, seen[seq])
			seen[seq] = true
		}
	}
	require.Len(t, seen, writers*perWriter)
}

// logrotate's copytruncate empties the file under the open descriptor, and the tracked size
// learns of it only at the next identity check (up to a second later). Undoing a partial
// write in that second must cut the file where the write began, not where the stale size
// says: that would leave the fragment, or pad the file with NULs up to the old size.
func TestPartialWriteAfterCopytruncateIsUndone(t *testing.T) {
	h, path := openTemp(t, nil)
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, h.Handle(ctx, record(t0, 0, 2000)))
	require.NoError(t, os.Truncate(path, 0))

	var old syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old))
	lim := old
	lim.Cur = 100
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim))
	err := h.Handle(ctx, record(t0.Add(time.Millisecond), 1, 500))
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old))
	require.ErrorIs(t, err, syscall.EFBIG)

	require.NoError(t, h.Handle(ctx, record(t0.Add(2*time.Millisecond), 2, 0)))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotContains(t, string(b), "\x00")
	lines := readLines(t, path)
	require.Len(t, lines, 1, "%q", b)
	require.Equal(t, 2, seqOf(t, lines[0]))
}

// After a copytruncate the tracked size is stale until the next identity check; rotation
// must go by what the file really holds, or it rotates an almost empty file.
func TestCopytruncateDoesNotRotateEarly(t *testing.T) {
	const maxBytes = 4096
	h, path := openTemp(t, &Options{MaxBytes: maxBytes, MaxBackups: 1})
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, h.Handle(ctx, record(t0, 0, 3000)))
	require.NoError(t, os.Truncate(path, 0))
	require.NoError(t, h.Handle(ctx, record(t0.Add(time.Millisecond), 1, 2000)))

	require.Zero(t, h.Stats().Rotations)
	_, err := os.Stat(path + ".1")
	require.ErrorIs(t, err, os.ErrNotExist)
	lines := readLines(t, path)
	require.Len(t, lines, 1)
	require.Equal(t, 1, seqOf(t, lines[0]))
}

// A previous run kept more backups: lowering MaxBackups must not leave path.N+1 … behind
// for ever. The first rotation removes them, as it removes the oldest.
func TestLoweredMaxBackupsRemovesOlderBackupsOnRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.log")
	for i := 1; i <= 5; i++ {
		require.NoError(t, os.WriteFile(fmt.Sprintf("%s.%d", path, i), []byte("{\"old\":1}\n"), 0o600))
	}
	h, err := OpenJSONFile(path, &Options{MaxBytes: 1024, MaxBackups: 2})
	require.NoError(t, err)
	defer h.Close()
	for i := 0; h.Stats().Rotations == 0; i++ {
		require.NoError(t, h.Handle(context.Background(), record(time.Time{}, i, 300)))
	}
	for i := 1; i <= 2; i++ {
		_, err := os.Stat(fmt.Sprintf("%s.%d", path, i))
		require.NoError(t, err, "backup %d is kept", i)
	}
	for i := 3; i <= 5; i++ {
		_, err := os.Stat(fmt.Sprintf("%s.%d", path, i))
		require.ErrorIs(t, err, os.ErrNotExist, "backup %d is past MaxBackups", i)
	}
}

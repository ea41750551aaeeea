package slogx

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// lineReader reads what a handler appended to its file since the last call.
type lineReader struct {
	f   *os.File
	buf []byte
}

func openLineReader(t testing.TB, path string) *lineReader {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return &lineReader{f: f}
}

// next returns the one line written since the last call, without its newline.
func (r *lineReader) next(t testing.TB) string {
	t.Helper()
	b, err := io.ReadAll(r.f)
	require.NoError(t, err)
	require.NotEmpty(t, b, "nothing written")
	require.Equal(t, byte('\n'), b[len(b)-1], "line not terminated: %q", b)
	require.Equal(t, 1, bytes.Count(b, []byte{'\n'}), "expected exactly one line, got %q", b)
	return string(b[:len(b)-1])
}

func openFile(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

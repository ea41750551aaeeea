package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// queryNumbers returns the numbers of the queries logged in path, failing on any line
// that is not a complete JSON query-log line.
func queryNumbers(t *testing.T, path string) []int {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var ns []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Msg    string
			Params struct{ Query string }
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), "%s", sc.Bytes())
		require.Equal(t, "promql query logged", line.Msg)
		_, num, ok := strings.Cut(line.Params.Query, " # query ")
		require.True(t, ok, line.Params.Query)
		n, err := strconv.Atoi(num)
		require.NoError(t, err)
		ns = append(ns, n)
	}
	require.NoError(t, sc.Err())
	return ns
}

func TestRunLogsEveryQueryAcrossRotationAndSIGHUP(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	const n, maxBytes = 120, 8 << 10
	require.NoError(t, run(context.Background(), []string{"-dir", dir, "-queries", strconv.Itoa(n), "-max-bytes", strconv.Itoa(maxBytes), "-max-backups", "50"}, &out))
	t.Log(out.String())
	require.Contains(t, out.String(), "SIGHUP: reopened the query log: ok")

	logPath := filepath.Join(dir, "query.log")
	files := []string{logPath + ".rotated", logPath}
	backups, err := filepath.Glob(logPath + ".[0-9]*")
	require.NoError(t, err)
	require.NotEmpty(t, backups, "the log is large enough to rotate")
	for i := 1; i <= len(backups); i++ {
		files = append(files, logPath+"."+strconv.Itoa(i))
	}
	seen := map[int]string{}
	for _, name := range files {
		fi, err := os.Stat(name)
		require.NoError(t, err)
		require.LessOrEqual(t, fi.Size(), int64(maxBytes))
		nums := queryNumbers(t, name)
		require.True(t, slices.IsSorted(nums), "%s is in query order", name)
		for _, q := range nums {
			require.NotContains(t, seen, q, "query %d logged twice", q)
			seen[q] = filepath.Base(name)
		}
	}
	require.Len(t, seen, n, "every query logged once")
	for q := range n {
		switch {
		case q < n/2:
			require.NotEqual(t, "query.log", seen[q], "query %d ran before the rotation", q)
		default:
			require.NotEqual(t, "query.log.rotated", seen[q], "query %d ran after Reopen", q)
		}
	}
	require.Equal(t, "query.log.rotated", seen[n/2-1], "the last query before SIGHUP is in the renamed file")
	require.Equal(t, "query.log", seen[n-1])
}

func TestRunKeepsOnlyMaxBackups(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"-dir", dir, "-queries", "200", "-max-bytes", "4096", "-max-backups", "2"}, &out))
	names, err := filepath.Glob(filepath.Join(dir, "query.log.[0-9]*"))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{filepath.Join(dir, "query.log.1"), filepath.Join(dir, "query.log.2")}, names)
}

func TestRunRejectsBadFlags(t *testing.T) {
	var out bytes.Buffer
	require.Error(t, run(context.Background(), []string{"-queries", "1"}, &out))
	require.Error(t, run(context.Background(), []string{"-max-bytes", "-5"}, &out))
}

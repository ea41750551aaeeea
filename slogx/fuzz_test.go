package slogx

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzHandler feeds arbitrary keys, values, groups, With chains and ReplaceAttr modes to the
// handler. Every record must come out as exactly one valid JSON line, equal byte for byte
// to slog.JSONHandler's wherever slog is right (see oracle), and, under a small line cap,
// still one valid line within the cap.
func FuzzHandler(f *testing.F) {
	modes := optionModes()
	dir := f.TempDir()
	type target struct {
		h  *FileHandler
		lr *lineReader
	}
	targets := map[string]*target{}
	f.Cleanup(func() {
		for _, x := range targets {
			_ = x.h.Close()
			_ = x.lr.f.Close()
		}
	})
	open := func(t *testing.T, name string, o *Options) *target {
		if x := targets[name]; x != nil {
			return x
		}
		path := filepath.Join(dir, name+".log")
		h, err := OpenJSONFile(path, o)
		require.NoError(t, err)
		r, err := os.Open(path)
		require.NoError(t, err)
		x := &target{h, &lineReader{f: r}}
		targets[name] = x
		return x
	}

	f.Add(uint8(0), []byte("seed"))
	f.Fuzz(func(t *testing.T, modeIndex uint8, data []byte) {
		mode := modes[int(modeIndex)%len(modes)]
		sc := generate(data, genMode{rawKeys: true})

		x := open(t, fmt.Sprint(int(modeIndex)%len(modes)), &Options{AddSource: mode.opts.AddSource, ReplaceAttr: mode.opts.ReplaceAttr})
		checkAgainstSlog(t, x.h, x.lr, mode, sc)

		const lineCap = 1024
		small := open(t, fmt.Sprint("small-", int(modeIndex)%len(modes)), &Options{AddSource: mode.opts.AddSource, ReplaceAttr: mode.opts.ReplaceAttr, MaxLineBytes: lineCap, MaxWithBytes: 256})
		require.NoError(t, applyOps(small.h, sc.ops).Handle(context.Background(), sc.rec))
		line := small.lr.next(t)
		requireJSONLine(t, line)
		require.LessOrEqual(t, len(line)+1, lineCap)
	})
}

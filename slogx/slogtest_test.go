package slogx

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"testing/slogtest"

	"github.com/stretchr/testify/require"
)

// TestPassesSlogtestInEveryOptionMode runs the standard library's conformance suite (all 17
// cases, the empty-PC source case included) against each combination of options.
func TestPassesSlogtestInEveryOptionMode(t *testing.T) {
	identity := func(_ []string, a slog.Attr) slog.Attr { return a }
	for _, mode := range []struct {
		name string
		opts Options
	}{
		{"defaults", Options{}},
		{"level=debug", Options{Level: slog.LevelDebug}},
		{"source", Options{AddSource: true}},
		{"replace", Options{ReplaceAttr: identity}},
		{"rotation", Options{MaxBytes: 1024, MaxBackups: 2}},
		{"rotation-no-backups", Options{MaxBytes: 1024}},
		{"small-caps", Options{MaxLineBytes: 4096, MaxWithBytes: 1024}},
		{"everything", Options{Level: slog.LevelDebug, AddSource: true, ReplaceAttr: identity, MaxBytes: 4096, MaxBackups: 1, MaxLineBytes: 2048, MaxWithBytes: 512}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			var path string
			slogtest.Run(t, func(t *testing.T) slog.Handler {
				path = filepath.Join(t.TempDir(), "q.log")
				opts := mode.opts
				h, err := OpenJSONFile(path, &opts)
				require.NoError(t, err)
				t.Cleanup(func() { require.NoError(t, h.Close()) })
				return h
			}, func(t *testing.T) map[string]any {
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				var m map[string]any
				require.NoError(t, json.Unmarshal(b, &m), "%s", b)
				return m
			})
		})
	}
}

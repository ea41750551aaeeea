//go:build !dedupelabels

package exemplar

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// appendHexIDs is a shortcut past the general walk: whatever it encodes, the
// walk must encode to the same bytes. (With dedupelabels there is no
// shortcut.)
func TestHexIDsAreEncodedAsTheGeneralWalkEncodesThem(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var syms symbolTable
	for _, n := range []string{"trace_id", "span_id", ""} {
		syms.add(n)
	}
	names := []string{"trace_id", "span_id", "trace_id", "span_id", "", "parent_id", strings.Repeat("n", 40)}
	value := func() string {
		lens := []int{16, 32, 32, 48, 0, 2, 15, 17, 28, 30, 34, 64}
		n := lens[rng.IntN(len(lens))]
		b := []byte(fmt.Sprintf("%064x", rng.Uint64())[:n])
		if n > 0 && rng.IntN(4) == 0 {
			b[rng.IntN(n)] = "A:g/\x00\xff"[rng.IntN(6)] // not lowercase hex
		}
		return string(b)
	}
	shortcuts := 0
	for range 20000 {
		b := labels.NewScratchBuilder(4)
		for range 1 + rng.IntN(4) {
			b.Add(names[rng.IntN(len(names))], value())
		}
		ls := b.Labels()
		want, _, wantErr := encodeAnyLabels(nil, ls, &syms)
		got, ok := appendHexIDs(nil, ls, &syms)
		if !ok {
			continue
		}
		shortcuts++
		require.NoError(t, wantErr, "%v", ls)
		require.Equal(t, want, got, "%v", ls)
	}
	require.Greater(t, shortcuts, 500, "the sets the shortcut takes must be tested")
}

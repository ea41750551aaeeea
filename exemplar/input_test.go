package exemplar

import (
	"encoding/hex"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"
	"weak"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// Thanos Receive decodes remote-write requests into labels whose strings
// alias the pooled request buffer (thanos#8923: 20.7k stored exemplars pinned
// ~2.5 GB of requests). These tests build labels the same way, with both
// label builds: `go test ./exemplar/` and `go test -tags slicelabels ./exemplar/`.

// aliasedLabels builds labels whose bytes live in memory the caller will reuse:
// with slicelabels the strings point into buf, with stringlabels the labels'
// data points into the ScratchBuilder's overwrite buffer.
func aliasedLabels(buf []byte, b *labels.ScratchBuilder, pairs ...string) labels.Labels {
	b.Reset()
	for i := 0; i < len(pairs); i += 2 {
		start := len(buf)
		buf = append(buf, pairs[i]...)
		name := unsafe.String(&buf[start], len(pairs[i]))
		start = len(buf)
		buf = append(buf, pairs[i+1]...)
		value := unsafe.String(&buf[start], len(pairs[i+1]))
		b.Add(name, value)
	}
	var ls labels.Labels
	b.Overwrite(&ls)
	return ls
}

func TestReusingTheCallersBufferDoesNotChangeStoredLabels(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 10})
	buf := make([]byte, 0, 4096)
	sb, eb := labels.NewScratchBuilder(4), labels.NewScratchBuilder(2)
	series := aliasedLabels(buf, &sb, "__name__", "http_request_duration_seconds_bucket", "le", "0.25")
	trace := aliasedLabels(buf[256:256], &eb, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")
	require.NoError(t, s.AddExemplar(series, exemplar.Exemplar{Labels: trace, Value: 0.2, Ts: 1, HasTs: true}))

	// Reuse both: the request buffer and the builders' buffers.
	for i := range buf[:cap(buf)] {
		buf[:cap(buf)][i] = 'X'
	}
	aliasedLabels(buf[512:512], &sb, "__name__", strings.Repeat("Y", 36), "le", "9.99")
	aliasedLabels(buf[768:768], &eb, "trace_id", strings.Repeat("Z", 32))
	require.NotEqual(t, "http_request_duration_seconds_bucket", series.Get("__name__"), "the test's labels really alias reused memory")

	got := selectAll(t, s)
	require.Len(t, got, 1)
	require.Equal(t, `{__name__="http_request_duration_seconds_bucket", le="0.25"}`, got[0].SeriesLabels.String())
	require.Equal(t, `{trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}`, got[0].Exemplars[0].Labels.String())
	require.NoError(t, s.IterateExemplars(func(l labels.Labels, e exemplar.Exemplar) error {
		require.Equal(t, "http_request_duration_seconds_bucket", l.Get("__name__"))
		require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", e.Labels.Get("trace_id"))
		return nil
	}))
}

type exemplarAdder interface {
	AddExemplar(labels.Labels, exemplar.Exemplar) error
}

// addFromBuffer adds one exemplar whose labels alias a fresh 1 MiB "request"
// and returns weak pointers to the memory the labels alias.
func addFromBuffer(t *testing.T, s exemplarAdder) (series, trace weak.Pointer[byte]) {
	buf := make([]byte, 0, 1<<20)
	sb, eb := labels.NewScratchBuilder(4), labels.NewScratchBuilder(2)
	l := aliasedLabels(buf, &sb, "__name__", "http_request_duration_seconds_bucket", "le", "0.25")
	e := exemplar.Exemplar{Labels: aliasedLabels(buf[4096:4096], &eb, "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), Value: 1, Ts: 1}
	require.NoError(t, s.AddExemplar(l, e))
	return weak.Make(unsafe.StringData(l.Get("le"))), weak.Make(unsafe.StringData(e.Labels.Get("trace_id")))
}

func collected(ptrs ...weak.Pointer[byte]) bool {
	for range 3 {
		runtime.GC()
	}
	for _, p := range ptrs {
		if p.Value() != nil {
			return false
		}
	}
	return true
}

func TestStoringAnExemplarDoesNotKeepTheCallersBufferAlive(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 10})
	series, trace := addFromBuffer(t, s)
	require.True(t, collected(series, trace), "the store pins the caller's buffer")
	require.Len(t, selectAll(t, s), 1)

	// The same check catches a store that keeps the caller's labels: Prometheus'.
	theirs := newPrometheusStore(t, 10, 0)
	series, trace = addFromBuffer(t, theirs)
	require.False(t, collected(series, trace), "Prometheus' store keeps the caller's labels, so their buffer stays alive")
	runtime.KeepAlive(theirs)
}

func TestBadInputGetsASentinelErrorAndChangesNothing(t *testing.T) {
	manyEmptyNames := labels.NewScratchBuilder(3000)
	for range 3000 {
		manyEmptyNames.Add("", "")
	}
	valid := labels.FromStrings("__name__", "m")
	cases := []struct {
		name   string
		series labels.Labels
		e      exemplar.Exemplar
		opts   Options
		want   error
		// upstreamKeeps: Prometheus' store accepts this input (its head never
		// passes it such a series; our limits are our own).
		upstreamKeeps bool
	}{
		{name: "empty series label set", series: labels.EmptyLabels(), e: exemplar.Exemplar{Ts: 1}, want: ErrInvalidSeriesLabels, upstreamKeeps: true},
		{name: "repeated series label name", series: labels.FromStrings("a", "1", "a", "2"), e: exemplar.Exemplar{Ts: 1}, want: ErrInvalidSeriesLabels, upstreamKeeps: true},
		{name: "exemplar labels over 128 runes", series: valid,
			e: exemplar.Exemplar{Labels: labels.FromStrings("trace_id", strings.Repeat("é", 121)), Ts: 1}, want: storage.ErrExemplarLabelLength},
		{name: "thousands of empty-named exemplar labels", series: valid,
			e: exemplar.Exemplar{Labels: manyEmptyNames.Labels(), Ts: 1}, want: storage.ErrExemplarLabelLength, upstreamKeeps: true},
		{name: "series labels larger than MaxBytes", series: labels.FromStrings("__name__", "m", "blob", strings.Repeat("x", 1<<20)),
			e: exemplar.Exemplar{Ts: 1}, opts: Options{MaxExemplars: 10, MaxBytes: MinBytes}, want: ErrExemplarTooLarge, upstreamKeeps: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			if o.MaxExemplars == 0 {
				o = Options{MaxExemplars: 10}
			}
			s := mustNew(t, o)
			require.NoError(t, s.AddExemplar(valid, exemplar.Exemplar{Labels: traceID(1), Value: 1, Ts: 0}))
			before := s.Stats()
			require.ErrorIs(t, s.ValidateExemplar(tc.series, tc.e), tc.want)
			require.ErrorIs(t, s.AddExemplar(tc.series, tc.e), tc.want)
			require.Equal(t, before, s.Stats(), "counts unchanged")
			requireInvariants(t, s)

			theirs := newPrometheusStore(t, 10, 0)
			if tc.upstreamKeeps {
				require.NoError(t, theirs.AddExemplar(tc.series, tc.e), "Prometheus' store keeps it")
			} else {
				require.ErrorIs(t, theirs.AddExemplar(tc.series, tc.e), tc.want)
			}
		})
	}
}

func TestUnusualValuesAreKeptExactlyAsPrometheusKeepsThem(t *testing.T) {
	// NaN and ±Inf are floats a histogram can observe; Prometheus stores them,
	// so a drop-in must too. NaN never equals itself, so like Prometheus the
	// store does not treat a re-sent NaN exemplar as a duplicate.
	s := mustNew(t, Options{MaxExemplars: 20})
	theirs := newPrometheusStore(t, 20, 0)
	l := labels.FromStrings("__name__", "m")
	seq := []exemplar.Exemplar{
		{Labels: traceID(1), Value: math.Inf(1), Ts: 1, HasTs: true},
		{Labels: traceID(1), Value: math.Inf(1), Ts: 1, HasTs: true}, // duplicate
		{Labels: traceID(2), Value: math.Inf(-1), Ts: 2, HasTs: true},
		{Labels: traceID(3), Value: math.NaN(), Ts: 3, HasTs: true},
		{Labels: traceID(3), Value: math.NaN(), Ts: 3, HasTs: true}, // not a duplicate: NaN != NaN
		{Labels: traceID(4), Value: 1, Ts: 4},                       // no timestamp of its own
		{Labels: traceID(4), Value: 1, Ts: 9},                       // same exemplar, next scrape: duplicate
		{Labels: labels.FromStrings("trace_id", "\xff\xfe not utf-8"), Value: 2, Ts: 10},
		{Labels: traceID(5), Value: math.MaxFloat64, Ts: math.MaxInt64, HasTs: true},
	}
	for i, e := range seq {
		require.Equal(t, theirs.AddExemplar(l, e), s.AddExemplar(l, e), "exemplar %d", i)
	}
	requireSameContent(t, s, theirs, len(seq))
	require.Equal(t, int64(7), s.Stats().Exemplars)
}

func TestExtremeTimestampsDoNotOverflowTheWindows(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 10, MaxAge: math.MaxInt64, OOOWindow: math.MaxInt64})
	l := labels.FromStrings("__name__", "m")
	for _, ts := range []int64{math.MinInt64, math.MaxInt64, 0, math.MinInt64 + 1, -1} {
		err := s.AddExemplar(l, exemplar.Exemplar{Value: float64(ts), Ts: ts, HasTs: true})
		if err != nil {
			require.ErrorIs(t, err, storage.ErrOutOfOrderExemplar)
		}
		requireInvariants(t, s)
	}
	require.NotEmpty(t, selectAll(t, s))
}

func TestConcurrentAddsSelectsAndLimitChangesAreSafe(t *testing.T) {
	s := mustNew(t, Options{MaxExemplars: 500, MaxBytes: 256 << 10, MaxPerSeries: 20})
	writers, adds := 4, 3000
	if raceEnabled || testing.Short() {
		adds = 1000
	}
	var g errgroup.Group
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			for i := range adds {
				l := labels.FromStrings("__name__", "m", "writer", string(rune('a'+w)), "series", string(rune('a'+i%26)))
				err := s.AddExemplar(l, exemplar.Exemplar{Labels: traceID(i), Value: float64(i), Ts: int64(i), HasTs: true})
				if err != nil && err != storage.ErrOutOfOrderExemplar {
					return err
				}
			}
			return nil
		})
	}
	go func() { wg.Wait(); close(done) }()
	type snapshot struct {
		res  []exemplar.QueryResult
		text []string
	}
	for range 2 {
		g.Go(func() error {
			var kept []snapshot
			for {
				select {
				case <-done:
					// Results taken long ago still read exactly as when returned:
					// nothing in them is store memory a later add overwrote.
					for _, k := range kept {
						for i, r := range k.res {
							if got := r.SeriesLabels.String() + exemplarsString(r.Exemplars); got != k.text[i] {
								t.Errorf("a Select result changed after later adds: %q became %q", k.text[i], got)
							}
						}
					}
					return nil
				default:
				}
				res := selectAll(t, s)
				snap := snapshot{res: res}
				for _, r := range res {
					snap.text = append(snap.text, r.SeriesLabels.String()+exemplarsString(r.Exemplars))
				}
				if len(kept) < 50 {
					kept = append(kept, snap)
				}
				_ = s.ValidateExemplar(labels.FromStrings("__name__", "m"), exemplar.Exemplar{Ts: 1})
				_ = s.Stats()
				_ = s.IterateExemplars(func(labels.Labels, exemplar.Exemplar) error { return nil })
			}
		})
	}
	g.Go(func() error {
		for i := 0; ; i++ {
			select {
			case <-done:
				return nil
			default:
			}
			if err := s.SetLimits(Options{MaxExemplars: int64(200 + i%400), MaxBytes: 256 << 10, MaxPerSeries: 5 + i%20}); err != nil {
				return err
			}
		}
	})
	require.NoError(t, g.Wait())
	requireInvariants(t, s)
}

func exemplarsString(exs []exemplar.Exemplar) string {
	var b strings.Builder
	for _, e := range exs {
		b.WriteString(e.Labels.String())
	}
	return b.String()
}

var _ exemplarAdder = (*tsdb.CircularExemplarStorage)(nil)

// decodeHex8 checks eight digits at once with carry-free byte arithmetic;
// every byte value in every position must be judged as the table judges it.
func TestDecodeHex8AgreesWithTheDigitTable(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			b := []byte("0123abcd")
			b[pos] = byte(c)
			x := uint64(0)
			for i := 7; i >= 0; i-- {
				x = x<<8 | uint64(b[i])
			}
			w, ok := decodeHex8(x)
			var want [4]byte
			wantOK := true
			for i := range 4 {
				hi, lo := hexValue[b[2*i]], hexValue[b[2*i+1]]
				if hi|lo > 15 {
					wantOK = false
				}
				want[i] = hi<<4 | lo
			}
			if ok != wantOK || (ok && w != uint32(want[0])|uint32(want[1])<<8|uint32(want[2])<<16|uint32(want[3])<<24) {
				t.Fatalf("%q: got %x %v", b, w, ok)
			}
		}
	}
}

func TestEncodeHexAgreesWithTheDigitTable(t *testing.T) {
	src := make([]byte, 256+3)
	for i := range src {
		src[i] = byte(i * 7) // every value, in every position of a word
	}
	for n := range len(src) + 1 {
		dst := make([]byte, 2*n)
		encodeHex(dst, src[:n])
		require.Equal(t, hex.EncodeToString(src[:n]), string(dst))
	}
	// encodeHexBlocks (SSE2 on amd64): every byte value in every position.
	for c := range 256 {
		for pos := range 32 {
			src := []byte("\x00\x01\x09\x0a\x0f\x10\x90\x99\xa0\xaf\xf0\xfa\xff\x7f\x80\x5a" +
				"\xff\xfe\x55\xaa\x00\x11\x22\x33\x44\x66\x77\x88\xbb\xcc\xdd\xee")
			src[pos] = byte(c)
			dst := make([]byte, 64)
			encodeHexBlocks(&dst[0], &src[0], 2)
			require.Equal(t, hex.EncodeToString(src), string(dst))
		}
	}
}

// A set whose plain text fits maxTextBytes is kept as that text (one copy);
// one byte longer, it is encoded. Either way it decodes to the same labels,
// and equal sets encode to equal bytes whichever form they take.
func TestShortLabelSetsAreKeptAsTheirText(t *testing.T) {
	var syms symbolTable
	d := labelDecoder{b: labels.NewScratchBuilder(2)}
	for n := 0; n <= maxTextBytes+3; n++ {
		for _, mk := range []func(int) labels.Labels{
			func(n int) labels.Labels { return labels.FromStrings("a", strings.Repeat("v", max(0, n-3))) },
			func(n int) labels.Labels {
				return labels.FromStrings("k", "", "trace_id", strings.Repeat("0", max(0, n-14)))
			},
		} {
			ls := mk(n)
			text := 0
			ls.Range(func(l labels.Label) { text += 2 + len(l.Name) + len(l.Value) })
			enc, newNames, err := encodeLabels(nil, ls, &syms)
			require.NoError(t, err)
			if text <= maxTextBytes {
				require.Equal(t, 1+text, len(enc), "%v", ls)
				require.Equal(t, byte(textMark), enc[0], "%v", ls)
				require.Zero(t, newNames, "a short set needs no symbol")
			} else {
				require.NotEqual(t, byte(textMark), enc[0], "%v", ls)
			}
			again, _, err := encodeLabels(nil, mk(n), &syms)
			require.NoError(t, err)
			require.Equal(t, enc, again, "the form depends on the set alone")
			// A set with other values encodes differently, whichever form.
			b := labels.NewScratchBuilder(2)
			ls.Range(func(l labels.Label) { b.Add(l.Name, l.Value+"x") })
			other, _, err := encodeLabels(nil, b.Labels(), &syms)
			require.NoError(t, err)
			require.NotEqual(t, enc, other, "%v", ls)
			got, err := d.decode(enc, &syms)
			require.NoError(t, err)
			require.True(t, labels.Equal(ls, got), "%v decoded as %v", ls, got)
		}
	}
	for _, bad := range []string{"\xff\x01a", "\xff\x01a\x05bc", "\xff\x03ab"} {
		_, err := d.decode([]byte(bad), &syms)
		require.ErrorIs(t, err, errCorrupt, "%q", bad)
	}
}

// The symbol table answers the first name from an inline copy and the rest
// from its list and hash table: every name must get the id it was given, and
// no other name any id.
func TestSymbolLookupFindsExactlyTheInternedNames(t *testing.T) {
	for _, first := range []string{"", "trace_id", strings.Repeat("x", maxSymbolLen)} {
		var syms symbolTable
		ids := map[string]uint8{}
		names := []string{first, "trace_i", "trace_id\x00", "span_id", strings.Repeat("x", maxSymbolLen-1)}
		for i := range maxSymbols + 10 {
			names = append(names, fmt.Sprintf("n%d", i))
		}
		for _, n := range names {
			if syms.add(n) > 0 {
				ids[n] = uint8(len(syms.names))
			}
		}
		require.Equal(t, uint8(1), ids[first])
		require.Len(t, ids, maxSymbols)
		for _, n := range append(names, "x", "trace_idx", "", strings.Repeat("x", maxSymbolLen+1)) {
			require.Equal(t, ids[n], syms.lookup(n), "%q after %q", n, first)
		}
	}
}

// decodeHexBlocks (SSE2 on amd64, Go elsewhere and with -tags purego) must
// judge and decode every byte value in every position as the table does,
// with the other block valid or not.
func TestDecodeHexBlocksAgreesWithTheDigitTable(t *testing.T) {
	const digits = "0123456789abcdef"
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 32; pos++ {
			for _, otherBad := range []bool{false, true} {
				src := []byte(digits + digits)
				if otherBad {
					src[(pos+16)%32] = 'A'
				}
				src[pos] = byte(c)
				var got [16]byte
				ok := decodeHexBlocks(&got[0], &src[0], 2)
				var want [16]byte
				wantOK := true
				for i := range want {
					hi, lo := hexValue[src[2*i]], hexValue[src[2*i+1]]
					wantOK = wantOK && hi|lo <= 15
					want[i] = hi<<4 | lo
				}
				require.Equal(t, wantOK, ok, "%q", src)
				if ok {
					require.Equal(t, want, got, "%q", src)
				}
			}
		}
	}
	var out [8]byte
	require.True(t, decodeHexBlocks(&out[0], unsafe.StringData("x"), 0), "no blocks: nothing to refuse")
}

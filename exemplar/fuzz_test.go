package exemplar

import (
	"math"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
)

// FuzzStoreAgainstModel decodes the input into options and a sequence of
// adds, selects and limit changes, and requires the store to agree with the
// model (model_test.go) on every answer and on what it holds.
func FuzzStoreAgainstModel(f *testing.F) {
	f.Add([]byte{3, 10, 0, 0, 0, 0, 5, 1, 0, 0, 1, 1, 2, 0, 1, 0, 0, 2, 251, 3, 1, 1, 6, 0, 0, 0, 0})
	f.Add([]byte{1, 0, 8, 2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 7, 9, 3, 4, 5, 6, 0, 3, 200, 0, 4, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		o := Options{
			MaxExemplars: 1 + int64(data[0]%32),
			OOOWindow:    time.Duration(data[1]%50) * time.Millisecond,
			MaxPerSeries: int(data[3] % 5),
		}
		if data[2]%4 != 0 {
			o.MaxAge = time.Duration(data[2]%64+1) * time.Millisecond
		}
		s, err := New(o)
		require.NoError(t, err)
		defer s.Close()
		m := newModel(o)
		pool := []labels.Labels{
			labels.EmptyLabels(),
			labels.FromStrings("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
			labels.FromStrings("trace_id", "Z"),
			labels.FromStrings("span_id", "00f067aa0ba902b7", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
		}
		ts := int64(0)
		data = data[4:]
		for step := 0; len(data) >= 6; step, data = step+1, data[6:] {
			op := data[0] % 8
			switch {
			case op < 6:
				l := labels.FromStrings("__name__", "m", "job", string(rune('a'+data[1]%4)))
				ts += int64(int8(data[2]))
				e := exemplar.Exemplar{Labels: pool[data[4]%4], Value: float64(data[3] % 4), Ts: ts, HasTs: data[5]&1 == 1}
				switch data[3] {
				case 250:
					e.Value = math.NaN()
				case 251:
					e.Value = math.Inf(1)
				}
				_, _, wantValid := m.verdict(l, e)
				require.Equal(t, wantValid, s.ValidateExemplar(l, e), "step %d", step)
				require.Equal(t, m.add(l, e), s.AddExemplar(l, e), "step %d", step)
			case op == 6:
				start, end := ts-int64(data[1]), ts+int64(int8(data[2]))
				got, err := s.Select(start, end, []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "job", "[ab]")})
				require.NoError(t, err)
				var want []exemplar.QueryResult
				for _, r := range m.selectAll(start, end) {
					if j := r.SeriesLabels.Get("job"); j == "a" || j == "b" {
						want = append(want, r)
					}
				}
				requireSameResults(t, want, got, "step %d", step)
			default:
				no := Options{MaxExemplars: 1 + int64(data[1]%32), OOOWindow: time.Duration(data[2]%50) * time.Millisecond, MaxPerSeries: int(data[3] % 5)}
				if data[4]%2 == 1 {
					no.MaxAge = time.Duration(data[4]%64+1) * time.Millisecond
				}
				require.NoError(t, s.SetLimits(no))
				m.setLimits(no)
			}
		}
		requireAgreesWithModel(t, s, m, -1)
	})
}

// FuzzLabelsRoundTrip feeds arbitrary label bytes (invalid UTF-8, empty
// names, hex look-alikes, long values) and requires Select to return exactly
// what was stored, or the store to refuse it with Prometheus' length error.
func FuzzLabelsRoundTrip(f *testing.F) {
	f.Add("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736", "span_id", "00f067aa0ba902b7", "pod", "api-0")
	f.Add("", "", "a", "ABCDEF", "__name__", "x\xff")
	f.Add("trace_id", "0", "t", "00", "p", "ü")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2, sn, sv string) {
		s, err := New(Options{MaxExemplars: 4})
		require.NoError(t, err)
		defer s.Close()
		b := labels.NewScratchBuilder(2)
		b.Add(n1, v1)
		if n2 != n1 {
			b.Add(n2, v2)
		}
		b.Sort()
		el := b.Labels()
		series := labels.FromStrings("__name__", "m", "x"+sn, sv)
		e := exemplar.Exemplar{Labels: el, Value: 1, Ts: 1, HasTs: true}
		err = s.AddExemplar(series, e)
		if checkExemplarLabels(el) != nil {
			require.ErrorIs(t, err, storage.ErrExemplarLabelLength)
			require.Zero(t, s.Stats().Exemplars)
			return
		}
		require.NoError(t, err)
		got := selectAll(t, s)
		require.Len(t, got, 1)
		require.True(t, labels.Equal(series, got[0].SeriesLabels), "series %q came back as %q", series, got[0].SeriesLabels)
		require.True(t, labels.Equal(el, got[0].Exemplars[0].Labels), "labels %q came back as %q", el, got[0].Exemplars[0].Labels)
		require.Equal(t, storage.ErrDuplicateExemplar, s.ValidateExemplar(series, e), "equal labels encode equally")
		requireInvariants(t, s)
	})
}

// checkExemplarLabels is Prometheus' rule, restated: names and values
// together are at most exemplar.ExemplarMaxLabelSetLength runes.
func checkExemplarLabels(ls labels.Labels) error {
	n := 0
	ls.Range(func(l labels.Label) { n += utf8.RuneCountInString(l.Name) + utf8.RuneCountInString(l.Value) })
	if n > exemplar.ExemplarMaxLabelSetLength {
		return storage.ErrExemplarLabelLength
	}
	return nil
}

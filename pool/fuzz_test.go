package pool

import (
	"errors"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// FuzzPool drives a pool with a random sequence of Gets, Puts, double Puts,
// foreign Puts and slices grown or shrunk while leased, and checks every
// step against a model: the exact Stats, cap >= n, ErrExhausted exactly when
// the budget cannot hold the charge, and no array held by two leases.
func FuzzPool(f *testing.F) {
	f.Add([]byte{0, 0, 10, 3, 0, 3, 0})                                          // get, put, double put
	f.Add([]byte{3, 0, 70, 0, 63, 0, 64, 0, 65, 7, 0, 7, 0})                     // budget: oversize, exhaustion
	f.Add([]byte{1, 0, 5, 4, 0, 60, 3, 0, 0, 5, 3, 0, 0, 5})                     // tracked, grown, re-leased
	f.Add([]byte{2, 6, 1, 6, 2, 0, 33, 5, 0, 3, 7, 0, 3, 0})                     // foreign and nil Puts, shrink
	f.Add([]byte{4, 0, 9, 3, 0, 0, 9, 3, 0, 0, 9, 3, 0, 3, 1, 0, 9, 3, 0, 3, 2}) // sampled: stale Puts of re-leased records
	f.Add([]byte{6, 0, 60, 1, 60, 0, 60, 7, 0, 3, 0, 0, 60, 3, 1, 7, 0, 3, 2})   // sampled, budget
	f.Fuzz(runFuzzBody)
}

const maxOps = 400

// runFuzzBody is FuzzPool's body: see its doc.
func runFuzzBody(t *testing.T, data []byte) {
	if len(data) == 0 {
		return
	}
	if len(data) > 1+2*maxOps {
		data = data[:1+2*maxOps] // the model's checks are quadratic
	}
	const maxTotal = 256
	cfg := data[0]
	o := Options{Name: "fuzz", MinSize: 4, MaxSize: 64, Factor: 2, Track: cfg&1 != 0}
	if cfg&2 != 0 {
		o.MaxTotal = maxTotal
	}
	if cfg&4 != 0 && !o.Track {
		// Half the leases are boxes, half &record.buf, chosen at random (so
		// a failure may need a few runs to reproduce): a stale Put of one
		// kind must never end a lease of the other.
		o.TrackEvery = 2
	}
	p, err := New[uint16](o)
	require.NoError(t, err)

	var (
		want    Stats
		out     = map[*[]uint16]int64{}   // outstanding leases and their charge
		arrays  = map[*[]uint16]*uint16{} // the array each outstanding lease was handed
		order   []*[]uint16               // outstanding, oldest first
		history []*[]uint16               // every pointer ever handed out
	)
	want.MaxTotal = o.MaxTotal
	forget := func(b *[]uint16) {
		delete(out, b)
		for i, x := range order {
			if x == b {
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
	}
	put := func(b *[]uint16) {
		if charge, ok := out[b]; ok {
			want.Puts++
			want.Outstanding--
			want.InUse -= charge
			if charge > 64 {
				want.Discarded++ // never pooled, whatever *b says now
			}
			if cap(*b) < int(charge) && unsafe.SliceData(*b) != arrays[b] {
				want.Undersized++
			}
			delete(arrays, b)
			forget(b)
		} else if b != nil {
			want.BadPuts++
		}
		p.Put(b)
	}

	for i := 1; i+1 < len(data); i += 2 {
		op, arg := data[i]%8, int(data[i+1])
		switch op {
		case 0, 1, 2:
			n := arg % 80
			charge := int64(n)
			for _, s := range []int64{4, 8, 16, 32, 64} {
				if int64(n) <= s {
					charge = s
					break
				}
			}
			b, err := p.Get(n)
			if o.MaxTotal > 0 && want.InUse+charge > maxTotal {
				require.ErrorIs(t, err, ErrExhausted, "Get(%d) with %d in use", n, want.InUse)
				require.Nil(t, b)
				want.Exhausted++
				break
			}
			require.NoError(t, err)
			require.Len(t, *b, 0)
			require.Equal(t, int(charge), cap(*b), "Get(%d)", n)
			_, dup := out[b]
			require.False(t, dup, "a pointer handed out while still leased")
			for x := range out {
				if cap(*x) > 0 && cap(*b) > 0 {
					require.NotSame(t, unsafe.SliceData((*x)[:1]), unsafe.SliceData((*b)[:1]), "one array, two leases")
				}
			}
			if o.Track {
				for _, old := range history {
					require.NotSame(t, old, b, "a tracked pointer was reused while still referenced")
				}
			}
			out[b] = charge
			arrays[b] = unsafe.SliceData(*b)
			order = append(order, b)
			history = append(history, b)
			want.Gets++
			want.Outstanding++
			want.InUse += charge
		case 3:
			if len(history) > 0 {
				put(history[arg%len(history)])
			}
		case 4:
			if len(order) > 0 {
				b := order[arg%len(order)]
				*b = append(*b, make([]uint16, arg%100)...)
			}
		case 5:
			if len(order) > 0 {
				b := order[arg%len(order)]
				if c := cap(*b); c > 0 {
					*b = (*b)[: 0 : arg%c]
				}
			}
		case 6:
			if arg%2 == 0 {
				put(nil)
			} else {
				foreign := make([]uint16, 0, arg%80)
				put(&foreign)
			}
		case 7:
			if len(order) > 0 {
				put(order[len(order)-1])
			}
		}
		require.Equal(t, want, p.Stats(), "after op %d (%d, %d)", i/2, op, arg)
	}

	for len(order) > 0 {
		put(order[0])
	}
	require.Equal(t, want, p.Stats())
	err = p.Check()
	if want.BadPuts == 0 {
		require.NoError(t, err)
	} else {
		require.True(t, errors.Is(err, ErrBadPut) && !errors.Is(err, ErrLeak), "%v", err)
	}
}

package pool

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// The store gateway lesson (Thanos #7821 → #7883 → #7885/#7915): returning a
// request's buffers when the handler returns hands memory still being sent
// back to the pool; returning them only when everything is closed leaks them
// when one close is forgotten. A Group returns them once, when its last user
// is done, whichever that is.
func TestGroupReturnsItsLeasesOnceWhenTheLastUserIsDone(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 1024, MaxSize: 1024, Factor: 2, Track: true})
	g := p.NewGroup()
	for range 3 {
		b, err := g.Get(1000)
		require.NoError(t, err)
		*b = append(*b, "chunk"...)
	}
	require.Equal(t, 3, g.Len())
	sent, err := g.Retain() // the response stream still reads the chunks
	require.NoError(t, err)

	g.Release() // the handler returns first
	require.Equal(t, int64(3), p.Stats().Outstanding, "still in use by the stream: not back in the pool")

	sent() // the stream is done
	require.Zero(t, p.Stats().Outstanding)
	sent()
	g.Release()
	st := p.Stats()
	require.Equal(t, int64(3), st.Puts)
	require.Zero(t, st.BadPuts, "each lease was returned exactly once")
	require.NoError(t, p.Check())
}

func TestGroupRefusesUseAfterItsLeasesAreReturned(t *testing.T) {
	p := newPool[byte](t, Options{Name: "chunks", MinSize: 8, MaxSize: 8, Factor: 2})
	g := p.NewGroup()
	g.Release()
	b, err := g.Get(8)
	require.Nil(t, b)
	require.ErrorIs(t, err, ErrGroupReleased)
	require.ErrorContains(t, err, `pool "chunks": Group.Get(8)`)
	release, err := g.Retain()
	require.Nil(t, release)
	require.ErrorIs(t, err, ErrGroupReleased)
	require.Zero(t, p.Stats().Gets)
}

func TestGroupGetPassesOnExhaustion(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 8, MaxSize: 8, Factor: 2, MaxTotal: 8})
	g := p.NewGroup()
	defer g.Release()
	_, err := g.Get(8)
	require.NoError(t, err)
	_, err = g.Get(8)
	require.ErrorIs(t, err, ErrExhausted)
	require.Equal(t, 1, g.Len())
}

func TestGroupNeverReleasedIsReportedAtTheLineOfGroupGet(t *testing.T) {
	p := newPool[byte](t, Options{MinSize: 8, MaxSize: 8, Factor: 2, Track: true})
	g := p.NewGroup()
	line := thisLine() + 1
	_, err := g.Get(8)
	require.NoError(t, err)
	require.ErrorContains(t, p.Check(), fmt.Sprintf("group_test.go:%d", line))
	g.Release()
	require.NoError(t, p.Check())
}

// TestGroupWithConcurrentConsumers releases the handler's reference while
// consumers still read, and then takes more leases from the pool than the
// group holds, overwriting each, before the consumers read: a group that
// returned its leases before its last consumer was done would have its
// arrays handed to those Gets, and a consumer would read the overwrite.
func TestGroupWithConcurrentConsumers(t *testing.T) {
	const leases, consumers, rounds = 4, 8, 50
	const overwritten = ^uint64(0)
	p := newPool[uint64](t, Options{MinSize: 64, MaxSize: 64, Factor: 2, MaxTotal: 1 << 20})
	for round := range rounds {
		g := p.NewGroup()
		var held []*[]uint64
		for i := range leases {
			b, err := g.Get(64)
			require.NoError(t, err)
			*b = append(*b, uint64(round*10+i))
			held = append(held, b)
		}
		var wg sync.WaitGroup
		read := make(chan struct{})
		bad := make(chan string, consumers)
		for c := range consumers {
			release, err := g.Retain()
			require.NoError(t, err)
			wg.Go(func() {
				defer release()
				<-read
				for i, b := range held {
					if got := (*b)[0]; got != uint64(round*10+i) {
						bad <- fmt.Sprintf("round %d: consumer %d read %#x in lease %d: it was handed out again before the group was done", round, c, got, i)
						return
					}
				}
			})
		}
		g.Release() // the handler returns while consumers still read

		// Anything the group gave back by now goes to these Gets.
		var others []*[]uint64
		for range 2 * leases {
			b, err := p.Get(64)
			require.NoError(t, err)
			*b = append(*b, overwritten)
			others = append(others, b)
		}
		close(read)
		wg.Wait()
		close(bad)
		for msg := range bad {
			t.Fatal(msg)
		}
		for _, b := range others {
			p.Put(b)
		}
	}
	st := p.Stats()
	require.Equal(t, int64(rounds*3*leases), st.Puts)
	require.Zero(t, st.Outstanding)
	require.Zero(t, st.BadPuts)
}

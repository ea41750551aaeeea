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

func TestGroupWithConcurrentConsumers(t *testing.T) {
	p := newPool[uint64](t, Options{MinSize: 64, MaxSize: 64, Factor: 2, MaxTotal: 1 << 20})
	for round := range 50 {
		g := p.NewGroup()
		var leases []*[]uint64
		for i := range 4 {
			b, err := g.Get(64)
			require.NoError(t, err)
			*b = append(*b, uint64(round*10+i))
			leases = append(leases, b)
		}
		var wg sync.WaitGroup
		bad := make(chan string, 8)
		for c := range 8 {
			release, err := g.Retain()
			require.NoError(t, err)
			wg.Go(func() {
				defer release()
				for i, b := range leases {
					if (*b)[0] != uint64(round*10+i) {
						bad <- fmt.Sprintf("consumer %d read a lease already reused", c)
					}
				}
			})
		}
		g.Release() // the handler returns while consumers still read
		wg.Wait()
		close(bad)
		for msg := range bad {
			t.Fatal(msg)
		}
	}
	st := p.Stats()
	require.Equal(t, int64(200), st.Puts)
	require.Zero(t, st.Outstanding)
	require.Zero(t, st.BadPuts)
}

package ctxstream_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leaksafe/leaksafe/ctxstream"
)

// tagged is an item that remembers which child it came from, to check stability.
type tagged struct{ key, child, pos int }

func lessKey(a, b tagged) bool { return a.key < b.key }

type taggedSource struct {
	*fakeSource
	child int
}

func (s taggedSource) Recv() (tagged, error) {
	pos := s.i
	v, err := s.fakeSource.Recv()
	return tagged{key: v, child: s.child, pos: pos}, err
}

// children builds one Lazy child per key list, each with its own counted closer.
func children(ctx context.Context, keys [][]int) ([]*ctxstream.Iter[tagged], []*fakeSource) {
	its := make([]*ctxstream.Iter[tagged], len(keys))
	srcs := make([]*fakeSource, len(keys))
	for i, k := range keys {
		srcs[i] = newFake(k)
		its[i] = ctxstream.Lazy[tagged](ctx, taggedSource{srcs[i], i}, ctxstream.WithCloser(srcs[i].Close))
	}
	return its, srcs
}

func TestMergeIsSortedAndTiesKeepChildOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys [][]int
	}{
		{"one child", [][]int{{1, 2, 3}}},
		{"disjoint", [][]int{{1, 4, 7}, {2, 5, 8}, {3, 6, 9}}},
		{"all equal", [][]int{{5, 5}, {5, 5, 5}, {5}}},
		{"ties across children", [][]int{{1, 2, 2, 9}, {2, 2, 3}, {0, 2, 10}}},
		{"empty children", [][]int{{}, {1, 1}, {}, {0, 3}, {}}},
		{"odd count", [][]int{{3}, {1}, {2}, {1}, {3}, {0}, {2}}},
		{"one long", [][]int{{1}, seq(50), {25, 25}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			its, srcs := children(context.Background(), tc.keys)
			got := collect2(ctxstream.Merge(lessKey, its...))
			var want []tagged
			for c, ks := range tc.keys {
				for p, k := range ks {
					want = append(want, tagged{k, c, p})
				}
			}
			// The specification of a stable merge: sort by key, then child, then position.
			sort.SliceStable(want, func(i, j int) bool {
				if want[i].key != want[j].key {
					return want[i].key < want[j].key
				}
				return want[i].child < want[j].child
			})
			require.Equal(t, want, got)
			for i, s := range srcs {
				require.EqualValues(t, 1, s.closes.Load(), "child %d", i)
			}
		})
	}
}

func collect2(it *ctxstream.Iter[tagged]) []tagged {
	var out []tagged
	for v := range it.All() {
		out = append(out, v)
	}
	return out
}

func TestMergeOfZeroChildrenIsEmpty(t *testing.T) {
	it := ctxstream.Merge(lessKey)
	require.False(t, it.Next())
	require.NoError(t, it.Err())
	require.NoError(t, it.Close())
}

func TestMergeClosesExhaustedChildAtOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	its, srcs := children(context.Background(), [][]int{{1, 2}, {1, 5, 6, 7}, {}})
	m := ctxstream.Merge(lessKey, its...)
	require.True(t, m.Next())
	require.EqualValues(t, 1, srcs[2].closes.Load(), "an empty child is released by the first Next")
	for m.Next() && m.At().key < 5 {
	}
	require.Equal(t, 5, m.At().key)
	require.EqualValues(t, 1, srcs[0].closes.Load(), "child 0 ran out: released while the merge goes on")
	require.Zero(t, srcs[1].closes.Load())
	require.NoError(t, m.Close())
	require.EqualValues(t, 1, srcs[1].closes.Load())
}

func TestMergeEndsWithChildErrorAndClosesEveryChildOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	boom := errors.New("store 1: unexpected EOF in chunk")
	ctx := context.Background()
	okSrc, badSrc, stallSrc := newFake([]int{1, 2, 3, 4}), failingAfter([]int{2}, boom), stallingAfter([]int{0, 5})
	m := ctxstream.Merge(lessKey,
		ctxstream.Lazy[tagged](ctx, taggedSource{okSrc, 0}, ctxstream.WithCloser(okSrc.Close)),
		ctxstream.Eager[tagged](ctx, taggedSource{badSrc, 1}, ctxstream.WithCloser(badSrc.Close)),
		ctxstream.Eager[tagged](ctx, taggedSource{stallSrc, 2}, ctxstream.WithCloser(stallSrc.Close)),
	)
	var keys []int
	for v := range m.All() {
		keys = append(keys, v.key)
	}
	require.Equal(t, []int{0, 1, 2, 2}, keys, "items up to the failing child's next Recv")
	require.ErrorIs(t, m.Err(), boom)
	for _, s := range []*fakeSource{okSrc, badSrc, stallSrc} {
		require.EqualValues(t, 1, s.closes.Load())
	}
	require.NoError(t, m.Close())
	for _, s := range []*fakeSource{okSrc, badSrc, stallSrc} {
		require.EqualValues(t, 1, s.closes.Load())
	}
}

// A querier reading a merge with a plain Next loop may stop at the error and never call Close:
// the failing child must not leave the others open. Every closer has run, and the stalled
// prefetch goroutine has been released, by the time Next returns false.
func TestMergeChildErrorClosesEveryChildBeforeNextReturnsFalse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before []int // what the failing child sends before its error
		want   []int
	}{
		{"at the first Next", nil, nil},
		{"mid-stream", []int{2}, []int{0, 1, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			boom := errors.New("store 1: unexpected EOF in chunk")
			ctx := context.Background()
			okSrc, badSrc, stallSrc := newFake([]int{1, 2, 3, 4}), failingAfter(tc.before, boom), stallingAfter([]int{0, 5})
			srcs := []*fakeSource{okSrc, badSrc, stallSrc}
			m := ctxstream.Merge(lessKey,
				ctxstream.Lazy[tagged](ctx, taggedSource{okSrc, 0}, ctxstream.WithCloser(okSrc.Close)),
				ctxstream.Eager[tagged](ctx, taggedSource{badSrc, 1}, ctxstream.WithCloser(badSrc.Close)),
				ctxstream.Eager[tagged](ctx, taggedSource{stallSrc, 2}, ctxstream.WithCloser(stallSrc.Close)),
			)
			defer m.Close() // only so that a failure below leaks nothing; the checks come first
			var keys []int
			for m.Next() {
				keys = append(keys, m.At().key)
			}
			require.ErrorIs(t, m.Err(), boom)
			require.Equal(t, tc.want, keys)
			for i, s := range srcs {
				require.EqualValues(t, 1, s.closes.Load(), "child %d's closer, before any Close", i)
			}
			require.Zero(t, stallSrc.inRecv.Load(), "the stalled child's goroutine was released and waited for")
		})
	}
}

func TestMergeCloseClosesEveryChildOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, read := range []int{0, 1, 5} {
		srcs := []*fakeSource{endless(), stallingAfter(seq(3)), newFake(seq(2))}
		var its []*ctxstream.Iter[int]
		for i, s := range srcs {
			if i%2 == 0 {
				its = append(its, ctxstream.Lazy(context.Background(), s, ctxstream.WithCloser(s.Close)))
			} else {
				its = append(its, ctxstream.Eager(context.Background(), s, ctxstream.WithCloser(s.Close)))
			}
		}
		m := ctxstream.Merge(func(a, b int) bool { return a < b }, its...)
		for range read {
			require.True(t, m.Next())
		}
		require.NoError(t, m.Close())
		require.NoError(t, m.Close())
		require.False(t, m.Next())
		require.NoError(t, m.Err())
		for i, s := range srcs {
			require.EqualValues(t, 1, s.closes.Load(), "read %d, child %d", read, i)
		}
	}
}

func TestMergeEndsWithCauseWhenContextEndsWhileChildStalls(t *testing.T) {
	defer goleak.VerifyNone(t)
	cause := errors.New("querier shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	a, b := newFake([]int{1, 2, 3}), stallingAfter([]int{2})
	m := ctxstream.Merge(func(x, y int) bool { return x < y },
		ctxstream.Lazy(ctx, a, ctxstream.WithCloser(a.Close)),
		ctxstream.Eager(ctx, b, ctxstream.WithCloser(b.Close)))
	go func() {
		<-b.stalled
		cancel(cause)
	}()
	var got []int
	for v := range m.All() {
		got = append(got, v)
	}
	require.True(t, slices.IsSorted(got))
	require.ErrorIs(t, m.Err(), cause)
	require.EqualValues(t, 1, a.closes.Load())
	require.EqualValues(t, 1, b.closes.Load())
}

func TestMergeRejectsBadArgumentsWithoutPanic(t *testing.T) {
	defer goleak.VerifyNone(t)
	mk := func() (*ctxstream.Iter[int], *fakeSource) {
		s := newFake(seq(3))
		return ctxstream.Lazy(context.Background(), s, ctxstream.WithCloser(s.Close)), s
	}
	less := func(a, b int) bool { return a < b }

	a, as := mk()
	m := ctxstream.Merge(nil, a)
	require.False(t, m.Next())
	require.ErrorIs(t, m.Err(), ctxstream.ErrInvalid)
	require.EqualValues(t, 1, as.closes.Load(), "children are released")

	b, bs := mk()
	m = ctxstream.Merge(less, b, nil)
	require.False(t, m.Next())
	require.ErrorIs(t, m.Err(), ctxstream.ErrInvalid)
	require.EqualValues(t, 1, bs.closes.Load())

	c, cs := mk()
	m = ctxstream.Merge(less, c, c)
	require.False(t, m.Next())
	require.ErrorContains(t, m.Err(), "already merged")
	require.EqualValues(t, 1, cs.closes.Load())

	// A child owned by another merge is refused, and left to its owner.
	d, ds := mk()
	owner := ctxstream.Merge(less, d)
	thief := ctxstream.Merge(less, d)
	require.False(t, thief.Next())
	require.ErrorIs(t, thief.Err(), ctxstream.ErrInvalid)
	require.Zero(t, ds.closes.Load(), "not closed under its owner's feet")
	require.Equal(t, seq(3), collect(owner))
	require.EqualValues(t, 1, ds.closes.Load())
}

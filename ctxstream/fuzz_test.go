package ctxstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/leaksafe/leaksafe/ctxstream"
)

// fuzzChild is one child decoded from fuzz input: its items (sorted or not), whether it ends
// with an error, and whether it is read through Eager.
type fuzzChild struct {
	items []int
	err   error
	eager bool
}

func decodeChildren(data []byte) []fuzzChild {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return int(b)
	}
	kids := make([]fuzzChild, next()%9)
	for i := range kids {
		mode := next()
		n := next() % 16
		items := make([]int, n)
		for j := range items {
			items[j] = next() % 8 // few distinct values: many ties
		}
		if mode&1 == 0 {
			slices.Sort(items)
		}
		kids[i].items = items
		if mode&2 != 0 {
			kids[i].err = fmt.Errorf("store %d: broken stream", i)
		}
		kids[i].eager = mode&4 != 0
	}
	return kids
}

// modelMerge is the specification, in the simplest form: repeatedly take the smallest head by
// (value, child index), then advance that child; the first child error ends everything.
func modelMerge(kids []fuzzChild) (out []tagged, err error) {
	pos := make([]int, len(kids))
	live := make([]bool, len(kids))
	advance := func(i int) error {
		if pos[i] < len(kids[i].items) {
			live[i] = true
			return nil
		}
		live[i] = false
		return kids[i].err
	}
	for i := range kids {
		if err := advance(i); err != nil {
			return nil, err
		}
	}
	for {
		w := -1
		for i := range kids {
			if live[i] && (w < 0 || kids[i].items[pos[i]] < kids[w].items[pos[w]]) {
				w = i
			}
		}
		if w < 0 {
			return out, nil
		}
		out = append(out, tagged{key: kids[w].items[pos[w]], child: w, pos: pos[w]})
		pos[w]++
		if err := advance(w); err != nil {
			return out, err
		}
	}
}

// FuzzMerge checks Merge against the model on arbitrary children, sorted or not, failing or
// not, lazy or eager: same items in the same order, same error, every closer run once.
func FuzzMerge(f *testing.F) {
	f.Add([]byte{3, 0, 3, 1, 2, 3, 0, 2, 1, 1, 0, 4, 0, 0, 7, 7})
	f.Add([]byte{2, 3, 5, 9, 1, 0, 0, 2, 4, 1, 1, 1, 1})
	f.Add([]byte{8, 4, 1, 1, 2, 3, 0, 2, 6, 6, 5, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		kids := decodeChildren(data)
		want, wantErr := modelMerge(kids)

		ctx := context.Background()
		its := make([]*ctxstream.Iter[tagged], len(kids))
		srcs := make([]*fakeSource, len(kids))
		for i, k := range kids {
			srcs[i] = failingAfter(k.items, k.err)
			src := taggedSource{srcs[i], i}
			if k.eager {
				its[i] = ctxstream.Eager[tagged](ctx, src, ctxstream.WithCloser(srcs[i].Close), ctxstream.WithBuffer(1+i%3))
			} else {
				its[i] = ctxstream.Lazy[tagged](ctx, src, ctxstream.WithCloser(srcs[i].Close))
			}
		}
		m := ctxstream.Merge(lessKey, its...)
		var got []tagged
		for m.Next() {
			got = append(got, m.At())
		}
		if err := m.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("merged\n got %v\nwant %v", got, want)
		}
		if !errors.Is(m.Err(), wantErr) || (wantErr == nil) != (m.Err() == nil) {
			t.Fatalf("Err = %v, want %v", m.Err(), wantErr)
		}
		for i, s := range srcs {
			if c := s.closes.Load(); c != 1 {
				t.Fatalf("child %d closed %d times", i, c)
			}
		}
	})
}

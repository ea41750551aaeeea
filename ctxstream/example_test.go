package ctxstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/leaksafe/leaksafe/ctxstream"
)

// series stands in for a store's SeriesResponse.
type series struct {
	labels string
	store  string
}

// responses is an in-memory Source, as a store client would return.
type responses struct{ items []series }

func (r *responses) Recv() (series, error) {
	if len(r.items) == 0 {
		return series{}, io.EOF
	}
	s := r.items[0]
	r.items = r.items[1:]
	return s, nil
}

// silentStore answers with its items, then goes silent: Recv blocks until Close releases it,
// as a gRPC stream's Recv returns once its context is cancelled.
type silentStore struct {
	items    []int
	released chan struct{}
	once     sync.Once
}

func answeringThenSilent(items ...int) *silentStore {
	return &silentStore{items: items, released: make(chan struct{})}
}

func (s *silentStore) Recv() (int, error) {
	if len(s.items) > 0 {
		v := s.items[0]
		s.items = s.items[1:]
		return v, nil
	}
	<-s.released
	return 0, errors.New("stream released")
}

func (s *silentStore) Close() error {
	s.once.Do(func() { close(s.released) })
	return nil
}

func storeResponses(store string, labels ...string) *responses {
	r := &responses{}
	for _, l := range labels {
		r.items = append(r.items, series{labels: l, store: store})
	}
	return r
}

// Merging the sorted responses of three stores, as a querier does. Each store has its own
// iterator (and, with gRPC, its own closer); equal series come out in store order, and a store
// that runs out is released while the others are still being read.
func ExampleMerge() {
	ctx := context.Background()
	merged := ctxstream.Merge(
		func(a, b series) bool { return a.labels < b.labels },
		ctxstream.Eager(ctx, storeResponses("store-a", `up{job="api"}`, `up{job="web"}`)),
		ctxstream.Eager(ctx, storeResponses("store-b", `up{job="db"}`)),
		ctxstream.Eager(ctx, storeResponses("store-c", `up{job="api"}`, `up{job="cache"}`)),
	)
	defer merged.Close()
	for merged.Next() {
		s := merged.At()
		fmt.Printf("%-15s from %s\n", s.labels, s.store)
	}
	fmt.Println("err:", merged.Err())
	// Output:
	// up{job="api"}   from store-a
	// up{job="api"}   from store-c
	// up{job="cache"} from store-c
	// up{job="db"}    from store-b
	// up{job="web"}   from store-a
	// err: <nil>
}

// Cancellation ends the stream with the context's cause and releases the source through its
// closer, also while Recv is blocked on a store that went silent.
func ExampleLazy() {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	store := answeringThenSilent(1, 2)
	it := ctxstream.Lazy(ctx, store, ctxstream.WithCloser(func() error {
		fmt.Println("source released")
		return store.Close()
	}))
	defer it.Close()
	for it.Next() {
		fmt.Println(it.At())
		if it.At() == 2 {
			cancel(fmt.Errorf("frontend: client went away"))
		}
	}
	fmt.Println("err:", it.Err())
	// Output:
	// 1
	// 2
	// source released
	// err: frontend: client went away
}

// A store that answers then goes silent: the per-Recv timeout (Thanos' store.response-timeout)
// ends the stream, and its closer releases the stalled Recv.
func ExampleWithRecvTimeout() {
	stalled := answeringThenSilent(1, 2)
	it := ctxstream.Eager(context.Background(), stalled,
		ctxstream.WithCloser(stalled.Close), ctxstream.WithRecvTimeout(50*time.Millisecond))
	defer it.Close()
	for v := range it.All() {
		fmt.Println(v)
	}
	fmt.Println("err:", it.Err())
	// Output:
	// 1
	// 2
	// err: ctxstream: Recv timed out: no item within 50ms
}

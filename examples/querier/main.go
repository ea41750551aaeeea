// Command querier shows how a Thanos querier fork reads its stores with ctxstream: one gRPC
// Series stream per store, each wrapped in one line with its cancel function and a per-Recv
// timeout (store.response-timeout), merged in label order with ctxstream.Merge.
//
// It starts three stores on loopback and runs two queries: one where every store answers,
// and one where a store sends a few series and then goes silent, the Thanos v0.35.1 incident.
// The second query ends at the per-Recv timeout instead of hanging, the silent store's call is
// cancelled on the server too, and the goroutine count returns to where it started.
//
//	go run ./examples/querier -timeout 200ms
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leaksafe/leaksafe/ctxstream"
)

func main() {
	timeout := flag.Duration("timeout", 200*time.Millisecond, "per-Recv timeout for each store stream (Thanos' store.response-timeout)")
	seriesPerStore := flag.Int("series", 4, "series each store returns")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *timeout, *seriesPerStore); err != nil {
		log.Fatal(err)
	}
}

// run starts the stores, runs both queries, stops everything, and reports.
func run(ctx context.Context, w io.Writer, timeout time.Duration, seriesPerStore int) error {
	goroutinesBefore := runtime.NumGoroutine()
	calls := make(chan string, 16) // one line per store call that ended on the server
	var stores []*store
	for _, name := range []string{"store-a", "store-b", "store-c"} {
		s, err := startStore(name, seriesPerStore, calls)
		if err != nil {
			return err
		}
		stores = append(stores, s)
	}
	q, err := newQuerier(stores, timeout)
	if err != nil {
		return err
	}

	fmt.Fprintln(w, "query 1: every store answers")
	if err := q.query(ctx, w); err != nil {
		return fmt.Errorf("query 1: %w", err)
	}

	fmt.Fprintf(w, "\nquery 2: store-b goes silent after 2 series (per-Recv timeout %v)\n", timeout)
	stores[1].silentAfter.Store(2)
	start := time.Now()
	err = q.query(ctx, w)
	if !errors.Is(err, ctxstream.ErrRecvTimeout) {
		return fmt.Errorf("query 2 should end at the store timeout, got: %v", err)
	}
	fmt.Fprintf(w, "query 2 ended after ~%v: %v\n", time.Since(start).Round(100*time.Millisecond), err)
	for range 2 * len(stores) {
		if line := <-calls; strings.Contains(line, "cancel") {
			fmt.Fprintln(w, line)
		}
	}

	q.close()
	for _, s := range stores {
		s.srv.Stop()
	}
	// gRPC's transport goroutines exit shortly after Stop and Close; give them a moment.
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(2 * time.Second); after > goroutinesBefore && time.Now().Before(deadline); after = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(w, "\ngoroutines: %d before, %d after\n", goroutinesBefore, after)
	return nil
}

// querier holds one client connection per store.
type querier struct {
	conns   []*grpc.ClientConn
	names   []string
	timeout time.Duration
}

func newQuerier(stores []*store, timeout time.Duration) (*querier, error) {
	q := &querier{timeout: timeout}
	for _, s := range stores {
		cc, err := grpc.NewClient("passthrough:///"+s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			q.close()
			return nil, err
		}
		q.conns = append(q.conns, cc)
		q.names = append(q.names, s.name)
	}
	return q, nil
}

func (q *querier) close() {
	for _, cc := range q.conns {
		cc.Close()
	}
}

// query fans out to every store and merges their sorted answers.
func (q *querier) query(ctx context.Context, w io.Writer) error {
	its := make([]*ctxstream.Iter[seriesResponse], 0, len(q.conns))
	for i, cc := range q.conns {
		sctx, cancel := context.WithCancel(ctx)
		stream, err := openSeries(sctx, cc, q.names[i])
		if err != nil {
			cancel()
			for _, it := range its {
				it.Close()
			}
			return err
		}
		// The whole integration: the stream, its cancel function, the store timeout.
		its = append(its, ctxstream.Eager(ctx, stream, ctxstream.WithCancel(cancel), ctxstream.WithRecvTimeout(q.timeout)))
	}
	merged := ctxstream.Merge(func(a, b seriesResponse) bool { return a.labels < b.labels }, its...)
	for s := range merged.All() { // All closes every store stream, however the loop ends
		fmt.Fprintf(w, "  %-28s from %s\n", s.labels, s.store)
	}
	return merged.Err()
}

// seriesResponse stands in for storepb.SeriesResponse.
type seriesResponse struct{ labels, store string }

// seriesClient is what protoc-gen-go-grpc generates for a server-streaming Series call; its
// Recv makes it a ctxstream.Source.
type seriesClient struct {
	grpc.ClientStream
	store string
}

func (c seriesClient) Recv() (seriesResponse, error) {
	var b []byte
	if err := c.ClientStream.RecvMsg(&b); err != nil {
		return seriesResponse{}, err
	}
	return seriesResponse{labels: string(b), store: c.store}, nil
}

const seriesMethod = "/thanos.Store/Series"

var seriesDesc = grpc.StreamDesc{StreamName: "Series", ServerStreams: true}

func openSeries(ctx context.Context, cc *grpc.ClientConn, store string) (seriesClient, error) {
	s, err := cc.NewStream(ctx, &seriesDesc, seriesMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return seriesClient{}, err
	}
	if err := s.SendMsg([]byte(`{__name__="up"}`)); err != nil {
		return seriesClient{}, err
	}
	if err := s.CloseSend(); err != nil {
		return seriesClient{}, err
	}
	return seriesClient{ClientStream: s, store: store}, nil
}

// rawCodec sends []byte as is, so that the example needs no generated protobuf code.
type rawCodec struct{}

func (rawCodec) Name() string { return "raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

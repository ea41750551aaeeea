package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/leaksafe/leaksafe/ctxstream"
)

var ctxstreamScenario = scenario{
	name:  "ctxstream",
	about: "Thanos v0.35.1 querier chaining: eagerRespSet ignored the context; goroutines leaked, queries hung to the frontend timeout",
	run:   runCtxstream,
}

// The chain, all real gRPC on loopback: the query (querier A, the top) calls querier B's
// Series, and B fans out to ctxStores stores and merges their sorted series. Store 0 stalls
// after two frames: it keeps the stream open and sends nothing more, as a store gateway stuck
// on a slow bucket does.
const (
	ctxStores      = 3
	ctxFrames      = 16 // series per store
	ctxStallAfter  = 2
	storeMethod    = "/leakdemo.Store/Series"
	querierMethod  = "/leakdemo.Querier/Series"
	ctxStallMarker = "stall"
)

// newChainConfig is the chain a run of the demo queries.
func newChainConfig(e *env) chainConfig {
	outer := max(e.cfg.duration, time.Second) // the frontend's timeout
	return chainConfig{
		queries:     e.scaled(30, 6),
		spread:      e.cfg.duration,
		outer:       outer,
		respTimeout: outer / 10, // store.response-timeout
	}
}

// ctxLatencySlack is what scheduling may add to a query that ends at a per-Recv timeout: a
// loaded 2-core machine under -race was seen to add up to ~65 ms.
const ctxLatencySlack = 150 * time.Millisecond

// slowestQueryBound is when the leaksafe query must have ended: at the latest per-Recv timeout
// in the chain, querier A's own (twice B's store response timeout), plus scheduling slack. It
// ends in fact at B's timeout; anything later is a timeout that did not fire.
func slowestQueryBound(cfg chainConfig) bound {
	return atMost((topRecvTimeout(cfg.respTimeout) + ctxLatencySlack).Seconds())
}

// topRecvTimeout is querier A's per-Recv timeout: above B's, so that B's fires first and A
// reports B's error.
func topRecvTimeout(respTimeout time.Duration) time.Duration { return 2 * respTimeout }

func runCtxstream(ctx context.Context, e *env) (*result, error) {
	cfg := newChainConfig(e)
	naive, err := runChain(ctx, cfg, false)
	if err != nil {
		return nil, fmt.Errorf("naive: %w", err)
	}
	safe, err := runChain(ctx, cfg, true)
	if err != nil {
		return nil, fmt.Errorf("leaksafe: %w", err)
	}
	return &result{
		Metrics: []metric{
			{Name: "slowest query (one store stalled)", Unit: unitSeconds, Naive: naive.slowest.Seconds(), Leaksafe: safe.slowest.Seconds(),
				Bound: slowestQueryBound(cfg), Symptom: true},
			{Name: "goroutines left after the queries", Unit: unitCount, Naive: float64(naive.goroutinesLeft), Leaksafe: float64(safe.goroutinesLeft),
				Bound: atMost(0), Symptom: true},
			{Name: "store streams still open after the queries", Unit: unitCount, Naive: float64(naive.storeStreamsOpen), Leaksafe: float64(safe.storeStreamsOpen),
				Bound: exactly(0), Symptom: true},
		},
		Notes: []string{
			fmt.Sprintf("%d queries through querier A → querier B → %d stores; every other query cancelled by its user after %v; frontend timeout %v, store response timeout %v",
				cfg.queries, ctxStores, cfg.respTimeout/2, cfg.outer, cfg.respTimeout),
			"naive query errors: " + naive.errSummary() + "; leaksafe: " + safe.errSummary(),
		},
		Panels: []panel{{
			Title: "ctxstream: goroutines during chained queries with a stalled store", X: "seconds", Y: "goroutines above baseline", Unit: unitCount,
			Naive: naive.goroutines, Leaksafe: safe.goroutines,
		}},
	}, nil
}

type chainConfig struct {
	queries     int
	spread      time.Duration // queries start evenly over this
	outer       time.Duration
	respTimeout time.Duration
}

type chainRun struct {
	slowest          time.Duration
	goroutinesLeft   int
	storeStreamsOpen int64
	goroutines       []point
	errs             map[string]int
}

func (r *chainRun) errSummary() string {
	keys := make([]string, 0, len(r.errs))
	for k := range r.errs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d× %s", r.errs[k], k)
	}
	return b.String()
}

// runChain starts the stores and querier B, runs the queries through them, measures, and
// stops everything: the stalled store is released and both servers are stopped, so the
// goroutines the naive variant leaked exit before it returns.
func runChain(ctx context.Context, cfg chainConfig, safe bool) (run chainRun, err error) {
	// Stopped in reverse, after the stalled store is released: the naive querier waits on it.
	st := &store{stall: make(chan struct{})}
	var stops []func()
	release := sync.OnceFunc(func() { close(st.stall) })
	defer func() {
		release()
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}()
	storeSrv, storeAddr, err := serveSeries("leakdemo.Store", st.series)
	if err != nil {
		return run, err
	}
	stops = append(stops, storeSrv.Stop)
	storeConn, err := dial(storeAddr)
	if err != nil {
		return run, err
	}
	stops = append(stops, func() { _ = storeConn.Close() })
	qb := &querierB{stores: storeConn, respTimeout: cfg.respTimeout, safe: safe}
	qbSrv, qbAddr, err := serveSeries("leakdemo.Querier", qb.series)
	if err != nil {
		return run, err
	}
	stops = append(stops, qbSrv.Stop)
	qbConn, err := dial(qbAddr)
	if err != nil {
		return run, err
	}
	stops = append(stops, func() { _ = qbConn.Close() })

	// A healthy query first: connections up, the baseline taken with them. The query returns
	// at the EOF its client reads, while the servers' handler goroutines may still be ending:
	// counted in the baseline, they would hide as many leaked goroutines later.
	if _, err := topQuery(ctx, qbConn, nil, safe, cfg.respTimeout); err != nil {
		return run, fmt.Errorf("warm-up query: %w", err)
	}
	handlersDone := func() bool { return st.open.Load() == 0 && qb.open.Load() == 0 }
	if !waitUntil(ctxSettle, handlersDone) {
		return run, errors.New("warm-up query: its server handlers did not return")
	}
	baseline := settleGoroutines(0, 20*time.Millisecond)
	start := time.Now()
	stopSampling := sampleEvery(cfg.outer/40, func() {
		run.goroutines = append(run.goroutines, point{time.Since(start).Seconds(), float64(runtime.NumGoroutine() - baseline)})
	})
	defer stopSampling()

	var mu sync.Mutex
	run.errs = map[string]int{}
	var wg sync.WaitGroup
	for i := range cfg.queries {
		wait := time.Until(start.Add(cfg.spread * time.Duration(i) / time.Duration(cfg.queries)))
		select {
		case <-ctx.Done():
			return run, ctx.Err()
		case <-time.After(wait):
		}
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, cfg.outer) // the frontend's timeout
			defer cancel()
			if i%2 == 1 { // the user gives up
				t := time.AfterFunc(cfg.respTimeout/2, cancel)
				defer t.Stop()
			}
			took, err := topQuery(qctx, qbConn, []byte(ctxStallMarker), safe, cfg.respTimeout)
			mu.Lock()
			defer mu.Unlock()
			run.slowest = max(run.slowest, took)
			run.errs[errClass(err)]++
		})
	}
	wg.Wait()

	// Every query has returned. What is still running downstream was leaked. Cancelled
	// streams end on the servers a moment later (the RST_STREAM has to arrive), so wait for
	// that, bounded: the naive variant's handlers never end before the stall is released. The
	// sampler is one goroutine above the baseline while it runs.
	waitUntil(max(4*cfg.respTimeout, ctxSettle), func() bool {
		return handlersDone() && runtime.NumGoroutine() <= baseline+1
	})
	stopSampling()
	run.goroutinesLeft = max(0, runtime.NumGoroutine()-baseline)
	run.storeStreamsOpen = st.open.Load()
	return run, nil
}

// ctxSettle bounds the waits for servers to finish what a client has ended: generous, since
// on a loaded machine it is scheduling, not the library, that decides how long it takes.
const ctxSettle = 2 * time.Second

// waitUntil polls cond until it holds or limit has passed, and returns its last value.
func waitUntil(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for wait := time.Millisecond; ; wait = min(2*wait, 20*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(wait)
	}
}

// errClass names an error for the summary.
func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ctxstream.ErrRecvTimeout):
		return "querier response timeout"
	}
	switch status.Code(err) {
	case codes.Canceled:
		return "cancelled"
	case codes.DeadlineExceeded:
		if s, ok := status.FromError(err); ok && s.Message() == storeTimeoutMessage {
			return "store response timeout"
		}
		return "frontend timeout"
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "frontend timeout"
	}
	return err.Error()
}

// topQuery is querier A: it calls B's Series and reads every series. Naive, it loops over
// Recv, as Thanos did; leaksafe, it reads through ctxstream.Lazy with a Recv timeout above B's.
func topQuery(ctx context.Context, b *grpc.ClientConn, req []byte, safe bool, respTimeout time.Duration) (time.Duration, error) {
	start := time.Now()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := openSeries(sctx, b, querierMethod, req)
	if err != nil {
		return time.Since(start), err
	}
	if !safe {
		for {
			if _, err = s.Recv(); err != nil {
				if err == io.EOF {
					err = nil
				}
				return time.Since(start), err
			}
		}
	}
	it := ctxstream.Lazy(ctx, s, ctxstream.WithRecvTimeout(topRecvTimeout(respTimeout)), ctxstream.WithCloser(func() error { cancel(); return nil }))
	for range it.All() {
	}
	return time.Since(start), it.Err()
}

// store serves Series: ctxFrames sorted series; store 0 stalls after ctxStallAfter frames when
// the request asks for it, until its stream is cancelled or the demo releases it.
type store struct {
	stall chan struct{}
	open  atomic.Int64 // Series calls in progress
}

func (s *store) series(req []byte, ss grpc.ServerStream) error {
	s.open.Add(1)
	defer s.open.Add(-1)
	id, stall := 0, false
	if _, err := fmt.Sscanf(string(req), "store-%d", &id); err != nil {
		return status.Errorf(codes.InvalidArgument, "bad request %q", req)
	}
	stall = bytes.HasSuffix(req, []byte("/"+ctxStallMarker))
	for j := range ctxFrames {
		if stall && id == 0 && j == ctxStallAfter {
			select {
			case <-s.stall:
			case <-ss.Context().Done():
			}
			return ss.Context().Err()
		}
		if err := ss.SendMsg(fmt.Appendf(nil, "series-%04d@store-%d", j, id)); err != nil {
			return err
		}
	}
	return nil
}

// querierB serves Series by merging its stores' responses.
type querierB struct {
	stores      *grpc.ClientConn
	respTimeout time.Duration
	safe        bool
	open        atomic.Int64 // Series calls in progress
}

const storeTimeoutMessage = "store response timeout"

func (q *querierB) series(req []byte, ss grpc.ServerStream) error {
	q.open.Add(1)
	defer q.open.Add(-1)
	storeReq := func(i int) []byte {
		r := fmt.Appendf(nil, "store-%d", i)
		if len(req) > 0 {
			r = fmt.Appendf(r, "/%s", req)
		}
		return r
	}
	if !q.safe {
		return q.seriesNaive(ss, storeReq)
	}
	return q.seriesSafe(ss, storeReq)
}

// seriesNaive is a small model of v0.35.1's eagerRespSet in a chained querier: a goroutine
// per store drains its stream with no context check and no working response timeout, and
// the merge waits on a WaitGroup that ignores the context. The store streams do not see the
// query's cancellation (context.WithoutCancel): the effect of the lost check, made explicit.
func (q *querierB) seriesNaive(ss grpc.ServerStream, storeReq func(int) []byte) error {
	ctx := context.WithoutCancel(ss.Context())
	responses := make([][][]byte, ctxStores)
	errs := make([]error, ctxStores)
	var wg sync.WaitGroup
	for i := range ctxStores {
		wg.Go(func() {
			s, err := openSeries(ctx, q.stores, storeMethod, storeReq(i))
			if err != nil {
				errs[i] = err
				return
			}
			for {
				f, err := s.Recv()
				if err != nil {
					if err != io.EOF {
						errs[i] = err
					}
					return
				}
				responses[i] = append(responses[i], f)
			}
		})
	}
	wg.Wait() // the stalled store holds this handler, and its caller's stream, until it answers
	if err := errors.Join(errs...); err != nil {
		return err
	}
	all := slices.Concat(responses...)
	slices.SortStableFunc(all, bytes.Compare)
	for _, f := range all {
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
	return nil
}

// seriesSafe streams each store through ctxstream.Eager with a per-Recv timeout and a closer
// that cancels the store stream, and merges them with ctxstream.Merge.
func (q *querierB) seriesSafe(ss grpc.ServerStream, storeReq func(int) []byte) error {
	ctx := ss.Context()
	its := make([]*ctxstream.Iter[[]byte], 0, ctxStores)
	for i := range ctxStores {
		sctx, cancel := context.WithCancel(ctx)
		s, err := openSeries(sctx, q.stores, storeMethod, storeReq(i))
		if err != nil {
			cancel()
			for _, it := range its {
				_ = it.Close()
			}
			return err
		}
		its = append(its, ctxstream.Eager(ctx, s,
			ctxstream.WithRecvTimeout(q.respTimeout),
			ctxstream.WithCloser(func() error { cancel(); return nil })))
	}
	merged := ctxstream.Merge(func(a, b []byte) bool { return bytes.Compare(a, b) < 0 }, its...)
	defer merged.Close()
	for merged.Next() {
		if err := ss.SendMsg(merged.At()); err != nil {
			return err
		}
	}
	err := merged.Err()
	if errors.Is(err, ctxstream.ErrRecvTimeout) {
		return status.Error(codes.DeadlineExceeded, storeTimeoutMessage)
	}
	return err
}

// A hand-written gRPC service (no code generation): one server-streaming method moving []byte.

type rawCodec struct{}

func (rawCodec) Name() string { return "leakdemo-raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch b := v.(type) {
	case []byte:
		return b, nil
	case *[]byte:
		return *b, nil
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

var seriesStreamDesc = grpc.StreamDesc{StreamName: "Series", ServerStreams: true}

// seriesStream is what protoc-gen-go-grpc generates for a server-streaming client: its Recv
// makes it a ctxstream.Source.
type seriesStream struct{ grpc.ClientStream }

func (s seriesStream) Recv() ([]byte, error) {
	var b []byte
	if err := s.RecvMsg(&b); err != nil {
		return nil, err
	}
	return b, nil
}

func openSeries(ctx context.Context, cc *grpc.ClientConn, method string, req []byte) (seriesStream, error) {
	s, err := cc.NewStream(ctx, &seriesStreamDesc, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return seriesStream{}, err
	}
	if err := s.SendMsg(req); err != nil {
		return seriesStream{}, err
	}
	if err := s.CloseSend(); err != nil {
		return seriesStream{}, err
	}
	return seriesStream{s}, nil
}

func serveSeries(service string, h func(req []byte, ss grpc.ServerStream) error) (*grpc.Server, string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: service,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Series",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				var req []byte
				if err := ss.RecvMsg(&req); err != nil {
					return err
				}
				return h(req, ss)
			},
		}},
	}, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	return srv, lis.Addr().String(), nil
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

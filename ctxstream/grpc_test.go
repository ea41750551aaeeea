package ctxstream_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/leaksafe/leaksafe/ctxstream"
)

// A real gRPC stream on loopback, without code generation: a hand-written StreamDesc and the
// example's bytesCodec (example_grpc_test.go), which moves []byte as is.

const seriesMethod = "/leaksafe.test.Store/Series"

var seriesDesc = grpc.StreamDesc{StreamName: "Series", ServerStreams: true}

// seriesClient is what protoc-gen-go-grpc generates for
// `rpc Series(SeriesRequest) returns (stream SeriesResponse)`: its Recv makes it a Source.
type seriesClient struct{ grpc.ClientStream }

func (c seriesClient) Recv() ([]byte, error) {
	var b []byte
	if err := c.ClientStream.RecvMsg(&b); err != nil {
		return nil, err
	}
	return b, nil
}

// openSeries is the generated client method: open the stream, send the request.
func openSeries(ctx context.Context, cc *grpc.ClientConn, req []byte) (seriesClient, error) {
	s, err := cc.NewStream(ctx, &seriesDesc, seriesMethod, grpc.ForceCodec(bytesCodec{}))
	if err != nil {
		return seriesClient{}, err
	}
	if err := s.SendMsg(req); err != nil {
		return seriesClient{}, err
	}
	if err := s.CloseSend(); err != nil {
		return seriesClient{}, err
	}
	return seriesClient{s}, nil
}

// handler serves one Series call.
type handler func(req []byte, send func([]byte) error, ctx context.Context) error

// server is a gRPC server on loopback whose handler exits are reported on exited.
type server struct {
	srv    *grpc.Server
	addr   string
	exited chan error // one value per finished call: what the handler returned
}

func serve(t testing.TB, h handler) *server {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &server{srv: grpc.NewServer(grpc.ForceServerCodec(bytesCodec{})), addr: lis.Addr().String(), exited: make(chan error, 64)}
	s.srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "leaksafe.test.Store",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Series",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				var req []byte
				if err := ss.RecvMsg(&req); err != nil {
					return err
				}
				err := h(req, func(b []byte) error { return ss.SendMsg(b) }, ss.Context())
				s.exited <- err
				return err
			},
		}},
	}, struct{}{})
	go func() { _ = s.srv.Serve(lis) }()
	return s
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	return cc
}

// storeThatStalls sends n responses, then sends nothing until the call is cancelled: the
// silent store of Thanos #7553.
func storeThatStalls(n int, stalled chan<- struct{}) handler {
	return func(_ []byte, send func([]byte) error, ctx context.Context) error {
		for i := range n {
			if err := send([]byte(strconv.Itoa(i))); err != nil {
				return err
			}
		}
		if stalled != nil {
			close(stalled)
		}
		<-ctx.Done()
		return ctx.Err()
	}
}

// grpcRecvTimeout is meant to pass only when the store is silent, not while a response is on
// its way: a Recv on a real loopback call waits for the server's goroutines and gRPC's
// transport, which under -race on a loaded 2-core machine took over 50ms at times. No test
// depends on it, though: one that times out early ends on a prefix of the responses, which the
// tests accept (the exact items are checked on fake time, in TestRecvTimeout*). Each test waits
// it once, for the stall.
const grpcRecvTimeout = 500 * time.Millisecond

// requirePrefix checks that got is the start of the responses "0", "1", ..., up to n of them.
func requirePrefix(t *testing.T, n int, got []string) {
	t.Helper()
	require.LessOrEqual(t, len(got), n, "%q", got)
	for i, s := range got {
		require.Equal(t, strconv.Itoa(i), s, "%q", got)
	}
}

var iterKinds = []struct {
	name string
	new  func(ctx context.Context, src ctxstream.Source[[]byte], opts ...ctxstream.Option) *ctxstream.Iter[[]byte]
}{
	{"lazy", ctxstream.Lazy[[]byte]},
	{"eager", ctxstream.Eager[[]byte]},
}

func TestGRPCStreamEndsOnCancelAndServerSeesIt(t *testing.T) {
	for _, kind := range iterKinds {
		t.Run(kind.name, func(t *testing.T) {
			defer goleak.VerifyNone(t) // client and server side: both live in this process
			stalled := make(chan struct{})
			store := serve(t, storeThatStalls(5, stalled))
			defer store.srv.Stop()
			cc := dial(t, store.addr)
			defer cc.Close()

			cause := errors.New("query cancelled upstream")
			ctx, cancel := context.WithCancelCause(context.Background())
			sctx, scancel := context.WithCancel(ctx)
			stream, err := openSeries(sctx, cc, []byte("{job=\"api\"}"))
			require.NoError(t, err)
			it := kind.new(ctx, stream, ctxstream.WithCancel(scancel)) // the one line
			for i := range 5 {
				require.True(t, it.Next())
				require.Equal(t, strconv.Itoa(i), string(it.At()))
			}
			go func() {
				<-stalled
				cancel(cause)
			}()
			require.False(t, it.Next(), "Recv was blocked on a silent store; cancel ends it")
			require.ErrorIs(t, it.Err(), cause)
			require.NoError(t, it.Close())
			require.ErrorIs(t, <-store.exited, context.Canceled, "the store saw the cancellation")
		})
	}
}

func TestGRPCStreamEndsOnRecvTimeoutAndReleasesTheCall(t *testing.T) {
	for _, kind := range iterKinds {
		t.Run(kind.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			store := serve(t, storeThatStalls(3, nil))
			defer store.srv.Stop()
			cc := dial(t, store.addr)
			defer cc.Close()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sctx, scancel := context.WithCancel(ctx)
			stream, err := openSeries(sctx, cc, nil)
			require.NoError(t, err)
			it := kind.new(ctx, stream, ctxstream.WithCancel(scancel), ctxstream.WithRecvTimeout(grpcRecvTimeout))
			var got []string
			for resp := range it.All() {
				got = append(got, string(resp))
			}
			requirePrefix(t, 3, got)
			require.ErrorIs(t, it.Err(), ctxstream.ErrRecvTimeout)
			require.NoError(t, ctx.Err(), "only this stream ended, not the query")
			require.ErrorIs(t, <-store.exited, context.Canceled, "the stalled call was cancelled on the server too")
		})
	}
}

// querier forwards a Series call to the next hop through ctxstream, the way a Thanos querier
// forwards to a store or to another querier (query chaining).
func querier(next *grpc.ClientConn, recvTimeout time.Duration) handler {
	return func(req []byte, send func([]byte) error, ctx context.Context) error {
		sctx, cancel := context.WithCancel(ctx)
		down, err := openSeries(sctx, next, req)
		if err != nil {
			cancel()
			return err
		}
		it := ctxstream.Eager(ctx, down, ctxstream.WithCancel(cancel), ctxstream.WithRecvTimeout(recvTimeout))
		for resp := range it.All() {
			if err := send(resp); err != nil {
				return err
			}
		}
		if errors.Is(it.Err(), ctxstream.ErrRecvTimeout) {
			return status.Error(codes.DeadlineExceeded, it.Err().Error())
		}
		return it.Err()
	}
}

func TestChainedQuerierCancelledAtTopReleasesEveryHop(t *testing.T) {
	defer goleak.VerifyNone(t)
	stalled := make(chan struct{})
	store := serve(t, storeThatStalls(4, stalled))
	defer store.srv.Stop()
	toStore := dial(t, store.addr)
	defer toStore.Close()
	middle := serve(t, querier(toStore, time.Hour))
	defer middle.srv.Stop()
	toMiddle := dial(t, middle.addr)
	defer toMiddle.Close()

	ctx, cancel := context.WithCancel(context.Background())
	sctx, scancel := context.WithCancel(ctx)
	stream, err := openSeries(sctx, toMiddle, nil)
	require.NoError(t, err)
	top := ctxstream.Lazy(ctx, stream, ctxstream.WithCancel(scancel))
	for range 4 {
		require.True(t, top.Next())
	}
	go func() {
		<-stalled
		cancel()
	}()
	require.False(t, top.Next())
	require.ErrorIs(t, top.Err(), context.Canceled)
	require.NoError(t, top.Close())
	require.Error(t, <-middle.exited, "the middle querier's handler returned")
	require.ErrorIs(t, <-store.exited, context.Canceled, "and the store's call was cancelled through it")
}

func TestChainedQuerierEndsAtStoreResponseTimeoutNotAtFrontendTimeout(t *testing.T) {
	defer goleak.VerifyNone(t)
	store := serve(t, storeThatStalls(2, nil))
	defer store.srv.Stop()
	toStore := dial(t, store.addr)
	defer toStore.Close()
	middle := serve(t, querier(toStore, grpcRecvTimeout))
	defer middle.srv.Stop()
	toMiddle := dial(t, middle.addr)
	defer toMiddle.Close()

	// The top has no deadline at all: in v0.35.1 this query hung until the frontend gave up.
	ctx := context.Background()
	sctx, scancel := context.WithCancel(ctx)
	stream, err := openSeries(sctx, toMiddle, nil)
	require.NoError(t, err)
	top := ctxstream.Lazy(ctx, stream, ctxstream.WithCancel(scancel))
	var got []string
	for resp := range top.All() {
		got = append(got, string(resp))
	}
	requirePrefix(t, 2, got)
	require.Equal(t, codes.DeadlineExceeded, status.Code(top.Err()), "%v", top.Err())
	require.Contains(t, top.Err().Error(), ctxstream.ErrRecvTimeout.Error())
	require.Equal(t, codes.DeadlineExceeded, status.Code(<-middle.exited))
	require.ErrorIs(t, <-store.exited, context.Canceled)
}

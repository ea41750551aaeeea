package ctxstream_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leaksafe/leaksafe/ctxstream"
)

// storeClient stands for what protoc-gen-go-grpc generates for
//
//	service Store { rpc Series(SeriesRequest) returns (stream SeriesResponse); }
//
// with raw bytes for messages (bytesCodec), so that the example needs no .proto. Its Series
// returns a grpc.ServerStreamingClient, whose Recv() (*Resp, error) makes it a
// ctxstream.Source[*Resp] as it is.
type storeClient struct{ cc grpc.ClientConnInterface }

func (c storeClient) Series(ctx context.Context, req []byte) (grpc.ServerStreamingClient[[]byte], error) {
	s, err := c.cc.NewStream(ctx, &storeServiceDesc.Streams[0], "/example.Store/Series", grpc.ForceCodec(bytesCodec{}))
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(req); err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[[]byte, []byte]{ClientStream: s}, nil
}

// storeServiceDesc serves Series: a store that answers with two series.
var storeServiceDesc = grpc.ServiceDesc{
	ServiceName: "example.Store",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{StreamName: "Series", ServerStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
		var req []byte
		if err := ss.RecvMsg(&req); err != nil {
			return err
		}
		for _, s := range []string{`up{job="api"}`, `up{job="db"}`} {
			if err := ss.SendMsg([]byte(s)); err != nil {
				return err
			}
		}
		return nil
	}}},
}

// bytesCodec moves []byte messages as they are.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "example-bytes" }

func (bytesCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return nil, fmt.Errorf("bytesCodec: cannot marshal %T", v)
}

func (bytesCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bytesCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

// A generated gRPC client stream is a Source already. Open it with its own cancellable context
// and hand the cancel function over: cancellation of ctx, the per-Recv timeout and Close then
// all cancel the call, which is what unblocks a Recv waiting on a silent store.
func Example_grpcClientStream() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}))
	srv.RegisterService(&storeServiceDesc, struct{}{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	client := storeClient{cc}

	ctx := context.Background() // the query's context
	sctx, cancel := context.WithCancel(ctx)
	stream, err := client.Series(sctx, []byte(`{__name__="up"}`))
	if err != nil {
		cancel()
		fmt.Println(err)
		return
	}
	it := ctxstream.Lazy(ctx, stream, ctxstream.WithCancel(cancel), ctxstream.WithRecvTimeout(10*time.Second))

	for resp := range it.All() {
		fmt.Println(string(*resp))
	}
	fmt.Println("err:", it.Err())
	// Output:
	// up{job="api"}
	// up{job="db"}
	// err: <nil>
}

package main

import (
	"fmt"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
)

// store is a StoreAPI server on loopback whose Series returns sorted series. With silentAfter
// set, it sends that many and then sends nothing until the call is cancelled.
type store struct {
	name        string
	addr        string
	srv         *grpc.Server
	silentAfter atomic.Int64 // 0 = answer fully
}

func startStore(name string, series int, calls chan<- string) (*store, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &store{name: name, addr: lis.Addr().String(), srv: grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))}
	s.srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "thanos.Store",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Series",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				var matchers []byte
				if err := ss.RecvMsg(&matchers); err != nil {
					return err
				}
				silent := int(s.silentAfter.Load())
				for i := range series {
					if silent > 0 && i == silent {
						<-ss.Context().Done() // a store that stopped answering
						calls <- fmt.Sprintf("%s: call cancelled by the querier after %d series (%v)", s.name, i, ss.Context().Err())
						return ss.Context().Err()
					}
					series := fmt.Sprintf(`up{job="api-%d",replica="%s"}`, i, s.name[len(s.name)-1:])
					if err := ss.SendMsg([]byte(series)); err != nil {
						calls <- fmt.Sprintf("%s: send failed: %v", s.name, err)
						return err
					}
				}
				calls <- s.name + ": answered"
				return nil
			},
		}},
	}, struct{}{})
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

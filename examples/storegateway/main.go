// Command storegateway shows how a Thanos store-gateway fork wires
// leaksafe/pool: one chunk pool with a budget for the whole process, a Refs
// per block counting its pending readers (block sync waits for them, with a
// deadline that names who is stuck), and a lease Group per Series request, so
// chunk buffers go back to the pool once, when both the handler and the
// response stream that sends them are done.
//
//	go run ./examples/storegateway -requests 200
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/leaksafe/leaksafe/pool"
)

// block is a TSDB block the gateway serves. readers is Thanos'
// pendingReaders: a Series call holds it while it reads the block.
type block struct {
	id      string
	chunks  [][]byte
	readers pool.Refs
}

type gateway struct {
	chunks *pool.Pool[byte]
	mu     sync.Mutex
	blocks map[string]*block
}

func newGateway(track bool, blocks ...*block) (*gateway, error) {
	chunks, err := pool.New[byte](pool.Options{
		Name: "chunks", MinSize: 256, MaxSize: 64 << 10, Factor: 2,
		MaxTotal: 4 << 20, // bytes in flight across all requests
		Track:    track,
	})
	if err != nil {
		return nil, err
	}
	g := &gateway{chunks: chunks, blocks: map[string]*block{}}
	for _, b := range blocks {
		b.readers.Name, b.readers.Track = "block "+b.id, track
		g.blocks[b.id] = b
	}
	return g, nil
}

// Series sends every chunk of a block on stream. The handler leases a buffer
// per chunk in the request's group; the stream, which writes asynchronously
// and may still be writing when Series returns, retains the group until it
// has written everything.
func (g *gateway) Series(ctx context.Context, blockID string, stream *stream) error {
	g.mu.Lock()
	b := g.blocks[blockID]
	g.mu.Unlock()
	if b == nil {
		return fmt.Errorf("block %s: not found", blockID)
	}
	doneReading := b.readers.Acquire()
	defer doneReading()

	req := g.chunks.NewGroup()
	defer req.Release() // the handler's reference; the stream holds its own
	if err := stream.attach(req); err != nil {
		return err
	}
	for _, c := range b.chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf, err := req.Get(len(c))
		if err != nil {
			return err // pool.ErrExhausted: the budget protects the process
		}
		*buf = append(*buf, c...)
		stream.send(*buf)
	}
	return nil
}

// dropBlock is block sync removing a block: no new readers find it, and the
// block is released only when its current readers are done, or the deadline
// passes (the error then names who still reads it).
func (g *gateway) dropBlock(ctx context.Context, id string) error {
	g.mu.Lock()
	b := g.blocks[id]
	delete(g.blocks, id)
	g.mu.Unlock()
	if b == nil {
		return nil
	}
	return b.readers.Wait(ctx)
}

func (g *gateway) checkers() []pool.Checker {
	g.mu.Lock()
	defer g.mu.Unlock()
	cs := []pool.Checker{g.chunks}
	for _, b := range g.blocks {
		cs = append(cs, &b.readers)
	}
	return cs
}

// stream stands in for a gRPC server stream: frames are written by its own
// goroutine, after the handler may have returned.
type stream struct {
	frames  chan []byte
	done    chan struct{}
	release func() // the stream's hold on the request's leases, if attached
}

func newStream(w io.Writer) *stream {
	s := &stream{frames: make(chan []byte, 16), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for f := range s.frames {
			_, _ = w.Write(f)
		}
		if s.release != nil { // set by attach before frames was closed
			s.release()
		}
	}()
	return s
}

// attach makes the stream keep req's buffers leased until it has written
// the last frame.
func (s *stream) attach(req *pool.Group[byte]) error {
	release, err := req.Retain()
	if err != nil {
		return err
	}
	s.release = release
	return nil
}

func (s *stream) send(frame []byte) { s.frames <- frame }

// finish ends the stream after the handler returned, and waits for the writer.
func (s *stream) finish() {
	close(s.frames)
	<-s.done
}

func makeBlock(id string, chunks, size int) *block {
	b := &block{id: id}
	for i := range chunks {
		c := make([]byte, size+i*97)
		for j := range c {
			c[j] = byte(i + j)
		}
		b.chunks = append(b.chunks, c)
	}
	return b
}

// run serves requests concurrently, cancels every seventh mid-way, drops a
// block while requests are in flight, and reports the pool's counters.
func run(ctx context.Context, out io.Writer, requests int, track bool) (*gateway, error) {
	g, err := newGateway(track, makeBlock("01HZA", 40, 3000), makeBlock("01HZB", 40, 20000))
	if err != nil {
		return nil, err
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(8)
	var canceled, exhausted, gone int
	var mu sync.Mutex
	for i := range requests {
		eg.Go(func() error {
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			if i%7 == 6 {
				cancel() // the client went away
			}
			s := newStream(io.Discard)
			err := g.Series(rctx, []string{"01HZA", "01HZB"}[i%2], s)
			s.finish()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
			case errors.Is(err, context.Canceled):
				canceled++
			case errors.Is(err, pool.ErrExhausted):
				exhausted++
			default:
				gone++ // the block was dropped by sync
			}
			return nil
		})
		if i == requests/2 {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := g.dropBlock(sctx, "01HZB")
			cancel()
			if err != nil {
				return g, fmt.Errorf("block sync: %w", err)
			}
		}
	}
	if err := eg.Wait(); err != nil {
		return g, err
	}
	st := g.chunks.Stats()
	fmt.Fprintf(out, "requests %d (canceled %d, refused by budget %d, block gone %d)\n", requests, canceled, exhausted, gone)
	fmt.Fprintf(out, "chunk pool: gets %d puts %d outstanding %d in use %d bytes, bad puts %d\n",
		st.Gets, st.Puts, st.Outstanding, st.InUse, st.BadPuts)
	for _, c := range g.checkers() {
		if err := c.Check(); err != nil {
			return g, err
		}
	}
	return g, nil
}

func main() {
	requests := flag.Int("requests", 200, "Series requests to serve")
	track := flag.Bool("track", false, "remember the stack of every lease and reader")
	flag.Parse()
	if _, err := run(context.Background(), os.Stdout, *requests, *track); err != nil {
		log.Fatal(err)
	}
}

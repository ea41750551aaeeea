package pool_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/leaksafe/leaksafe/pool"
)

func ExamplePool() {
	chunks, err := pool.New[byte](pool.Options{
		Name:     "chunks",
		MinSize:  1 << 10,
		MaxSize:  1 << 20,
		Factor:   2,
		MaxTotal: 8 << 10, // elements leased at once, counted in capacity
	})
	if err != nil {
		panic(err)
	}

	buf, err := chunks.Get(3000)
	if err != nil {
		panic(err)
	}
	*buf = append(*buf, "chunk bytes"...)
	fmt.Println("len", len(*buf), "cap", cap(*buf))

	_, err = chunks.Get(5000) // would be charged 8192 more
	fmt.Println(errors.Is(err, pool.ErrExhausted))
	fmt.Println(err)

	chunks.Put(buf)
	st := chunks.Stats()
	fmt.Printf("gets %d puts %d outstanding %d in use %d\n", st.Gets, st.Puts, st.Outstanding, st.InUse)
	// Output:
	// len 11 cap 4096
	// true
	// pool exhausted: pool "chunks": Get(5000) needs 8192 elements, 4096 of MaxTotal 8192 in use
	// gets 1 puts 1 outstanding 0 in use 0
}

// A store gateway block: queries read it, block sync drops it only once
// every reader is done, and a reader that never finishes is named.
func ExampleRefs() {
	readers := pool.Refs{Name: "block 01HZX3"}

	done := readers.Acquire() // a Series call starts reading the block
	go func() {
		defer done()
		// ... read chunks ...
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := readers.Wait(ctx); err != nil {
		fmt.Println("block sync:", err) // names the holders (with Track, where they acquired it)
		return
	}
	fmt.Println("readers left:", readers.Count())
	// Output:
	// readers left: 0
}

// firstLineT stands in for the *testing.T of a test; it prints the first
// line of each failure.
type firstLineT struct{}

func (firstLineT) Helper() {}
func (firstLineT) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Println(strings.SplitN(msg, "\n", 2)[0])
}

func ExampleVerifyNone() {
	// In a test: defer pool.VerifyNone(t, chunks, &block.Readers)
	var t firstLineT
	chunks, _ := pool.New[byte](pool.Options{Name: "chunks", MinSize: 1 << 10, MaxSize: 1 << 20, Factor: 2, Track: true})

	buf, _ := chunks.Get(100)
	pool.VerifyNone(t, chunks) // fails: one lease is still out (the full report has its Get's stack)
	chunks.Put(buf)
	pool.VerifyNone(t, chunks) // passes
	// Output:
	// leaksafe: pool "chunks": 1 lease outstanding (1024 elements in use)
}

// A Series handler leases chunk buffers for one request; the stream that
// sends them outlives the handler. The buffers go back to the pool once,
// when the last of the two is done — not when the handler returns (the
// stream would send reused memory), and not never (a forgotten close).
func ExamplePool_NewGroup() {
	chunks, _ := pool.New[byte](pool.Options{Name: "chunks", MinSize: 512, MaxSize: 1 << 20, Factor: 2})

	responses := make(chan []byte, 1)
	sent := make(chan struct{})
	func() { // the handler
		req := chunks.NewGroup()
		defer req.Release()

		buf, err := req.Get(512)
		if err != nil {
			return
		}
		*buf = append(*buf, "series 1 chunks"...)

		streamDone, err := req.Retain() // the sender keeps the buffers alive
		if err != nil {
			return
		}
		go func() {
			defer close(sent)
			defer streamDone()
			for r := range responses {
				fmt.Printf("sent %q\n", r)
			}
		}()
		responses <- *buf
		close(responses)
	}()
	<-sent
	fmt.Println("outstanding:", chunks.Stats().Outstanding)
	// Output:
	// sent "series 1 chunks"
	// outstanding: 0
}

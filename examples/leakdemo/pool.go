package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leaksafe/leaksafe/pool"
)

var poolScenario = scenario{
	name:  "pool",
	about: "Thanos store gateway: a refactor dropped defer blockClient.Close(); chunk pool at its cap, block sync hung",
	run:   func(ctx context.Context, e *env) (*result, error) { return runPool(ctx, e, false) },
}

// The simulated store gateway. A Series request opens a client per block; each client takes a
// reader reference on its block and preloads its series' chunks into buffers leased from the
// chunk pool; the chunks are streamed to the querier; closing a client returns its buffers
// and its reader reference. The refactor lost the deferred close: when the querier goes away
// mid-stream (every gatewayFailEvery-th request here), the request returns early and its
// clients are never closed.
const (
	gatewayBlocks         = 4
	gatewaySeriesPerBlock = 8
	gatewayMaxChunk       = 16 << 10
	gatewayFailEvery      = 8
	gatewayWorkers        = 2
)

var errQuerierGone = errors.New("querier went away: context canceled")

// blockReaders is a block's count of running Series calls: Thanos' pendingReaders is a
// sync.WaitGroup (naive), leaksafe's a pool.Refs.
type blockReaders interface {
	acquire() (release func())
	held() int64
	// wait is block sync's wait before dropping the block, bounded by ctx.
	wait(ctx context.Context) error
}

type gatewayBlock struct {
	id      int
	chunks  [][]byte // the block's chunk data, as read from object storage
	readers blockReaders
}

type storeGateway struct {
	chunks *pool.Pool[byte]
	blocks []*gatewayBlock
	fixed  bool // the fix: every client is closed on every path
}

func newStoreGateway(chunks *pool.Pool[byte], newReaders func(id int) blockReaders, fixed bool) *storeGateway {
	g := &storeGateway{chunks: chunks, fixed: fixed}
	rng := rand.New(rand.NewPCG(1, 2))
	for id := range gatewayBlocks {
		b := &gatewayBlock{id: id, readers: newReaders(id)}
		for range gatewaySeriesPerBlock {
			b.chunks = append(b.chunks, make([]byte, 1<<10+rng.IntN(gatewayMaxChunk-1<<10)))
		}
		g.blocks = append(g.blocks, b)
	}
	return g
}

func (g *storeGateway) readersHeld() (n int64) {
	for _, b := range g.blocks {
		n += b.readers.held()
	}
	return n
}

// blockSeriesClient streams one block's series from pooled chunk buffers.
type blockSeriesClient struct {
	chunks  *pool.Pool[byte]
	release func()
	bufs    []*[]byte
	next    int
}

func newBlockSeriesClient(chunks *pool.Pool[byte], b *gatewayBlock) (*blockSeriesClient, error) {
	c := &blockSeriesClient{chunks: chunks, release: b.readers.acquire()}
	return c, c.preload(b)
}

// preload reads the block's chunks into leased buffers, as Thanos loads a batch of series.
func (c *blockSeriesClient) preload(b *gatewayBlock) error {
	for _, chunk := range b.chunks {
		buf, err := c.chunks.Get(len(chunk))
		if err != nil {
			return err
		}
		*buf = append(*buf, chunk...)
		c.bufs = append(c.bufs, buf)
	}
	return nil
}

func (c *blockSeriesClient) recv() ([]byte, bool) {
	if c.next == len(c.bufs) {
		return nil, false
	}
	c.next++
	return *c.bufs[c.next-1], true
}

// Close returns the client's buffers and its reader reference.
func (c *blockSeriesClient) Close() {
	for _, b := range c.bufs {
		c.chunks.Put(b)
	}
	c.bufs = nil
	c.release()
}

// series serves one Series request; send fails when the querier has gone away.
func (g *storeGateway) series(send func([]byte) error) error {
	var clients []*blockSeriesClient
	if g.fixed {
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
	}
	for _, b := range g.blocks {
		c, err := newBlockSeriesClient(g.chunks, b)
		clients = append(clients, c)
		if err != nil {
			return err // the bug: without the fix, no client is closed on this path
		}
	}
	for _, c := range clients {
		for chunk, ok := c.recv(); ok; chunk, ok = c.recv() {
			if err := send(chunk); err != nil {
				return err // the bug: without the fix, no client is closed on this path
			}
		}
	}
	if !g.fixed {
		for _, c := range clients {
			c.Close() // the happy path still closes them: why the leak went unnoticed
		}
	}
	return nil
}

// gatewayLoad is the traffic of one variant.
type gatewayLoad struct {
	requests int
	over     time.Duration // paced evenly over this; 0 = as fast as possible
	sample   func(t time.Duration)
}

// serve runs the requests on gatewayWorkers goroutines; every gatewayFailEvery-th querier goes
// away after two chunks. It returns how many requests the pool refused.
func (g *storeGateway) serve(ctx context.Context, load gatewayLoad) (refused int64, err error) {
	var next atomic.Int64
	var refusedN atomic.Int64
	errs := make(chan error, gatewayWorkers)
	start := time.Now()
	var wg sync.WaitGroup
	for range gatewayWorkers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= load.requests || ctx.Err() != nil {
					errs <- nil
					return
				}
				if load.over > 0 {
					if d := time.Until(start.Add(load.over * time.Duration(i) / time.Duration(load.requests))); d > 0 {
						time.Sleep(d)
					}
				}
				sent := 0
				err := g.series(func([]byte) error {
					sent++
					if i%gatewayFailEvery == gatewayFailEvery-1 && sent > 2 {
						return errQuerierGone
					}
					return nil
				})
				switch {
				case err == nil, errors.Is(err, errQuerierGone):
				case errors.Is(err, pool.ErrExhausted):
					refusedN.Add(1)
				default:
					errs <- err
					return
				}
			}
		})
	}
	stopSampling := sampleEvery(max(load.over/50, 10*time.Millisecond), func() { load.sample(time.Since(start)) })
	wg.Wait()
	stopSampling()
	for range gatewayWorkers {
		err = errors.Join(err, <-errs)
	}
	return refusedN.Load(), err
}

// runPool runs both variants. The naive pool is leaksafe's own with Track off, as a production
// pool runs: its leak report is measured like the leaksafe one, so naiveTrack (a test's switch)
// must turn the naive row to "yes".
func runPool(ctx context.Context, e *env, naiveTrack bool) (*result, error) {
	requests := e.scaled(3000, 160)
	// Room for a few requests in flight, and well below what the naive variant leaks.
	perRequest := int64(gatewayBlocks * gatewaySeriesPerBlock * gatewayMaxChunk)
	maxTotal := max(int64(requests)*20<<10, 8*perRequest)
	syncTimeout := min(e.cfg.duration/2, time.Second)
	newChunks := func(track bool) (*pool.Pool[byte], error) {
		return pool.New[byte](pool.Options{Name: "chunks", MinSize: 1 << 10, MaxSize: 64 << 10, Factor: 2, MaxTotal: maxTotal, Track: track})
	}
	inUse := func(p *pool.Pool[byte], pts *[]point) func(time.Duration) {
		return func(t time.Duration) { *pts = append(*pts, point{t.Seconds(), float64(p.Stats().InUse)}) }
	}
	res := &result{}

	// Naive: the refactored store gateway, with what Thanos had: a pool that counts bytes
	// against a cap (usedTotal), and a WaitGroup per block.
	naivePool, err := newChunks(naiveTrack)
	if err != nil {
		return nil, err
	}
	var naiveReaders []*waitGroupReaders
	naiveGW := newStoreGateway(naivePool, func(int) blockReaders {
		r := &waitGroupReaders{}
		naiveReaders = append(naiveReaders, r)
		return r
	}, false)
	var naiveInUse []point
	naiveRefused, err := naiveGW.serve(ctx, gatewayLoad{requests: requests, over: e.cfg.duration, sample: inUse(naivePool, &naiveInUse)})
	if err != nil {
		return nil, fmt.Errorf("naive: %w", err)
	}
	naiveStats := naivePool.Stats()
	naiveLocated, naiveReport := false, "Check found no leak"
	if leak := naivePool.Check(); leak != nil {
		var getAt, pathAt string
		naiveLocated, getAt, pathAt = leakSites(leak.Error())
		naiveReport = describeLeak(leak.Error(), naiveLocated, getAt, pathAt)
	}
	naiveHeld := naiveGW.readersHeld()
	naiveSync, naiveSyncErr := blockSync(ctx, naiveGW.blocks[0], syncTimeout)
	for _, r := range naiveReaders {
		r.releaseLeaked() // so the naive sync's goroutine can exit: the demo must not leak
	}

	// Leaksafe, in a test: the same code with Track names the leaking line.
	located, report, err := locatePoolLeak(ctx, newChunks, requests)
	if err != nil {
		return nil, fmt.Errorf("leaksafe, locating the leak: %w", err)
	}
	if report != "" {
		res.Notes = append(res.Notes, report)
	}

	// Leaksafe, fixed: the deferred close restored; the pool and pool.Refs prove it.
	safePool, err := newChunks(false)
	if err != nil {
		return nil, err
	}
	safeGW := newStoreGateway(safePool, func(id int) blockReaders {
		return &refsReaders{r: &pool.Refs{Name: fmt.Sprintf("block-%d", id)}}
	}, true)
	var safeInUse []point
	safeRefused, err := safeGW.serve(ctx, gatewayLoad{requests: requests, over: e.cfg.duration, sample: inUse(safePool, &safeInUse)})
	if err != nil {
		return nil, fmt.Errorf("leaksafe: %w", err)
	}
	safeStats := safePool.Stats()
	var verify errorRecorder
	checkers := []pool.Checker{safePool}
	for _, b := range safeGW.blocks {
		checkers = append(checkers, b.readers.(*refsReaders).r)
	}
	pool.VerifyNone(&verify, checkers...)
	if len(verify.errs) > 0 {
		res.Errors = append(res.Errors, "pool.VerifyNone after the fix: "+strings.Join(verify.errs, "; "))
	} else {
		res.Notes = append(res.Notes, "pool.VerifyNone(chunks, block readers…) after the fix: clean")
	}
	safeHeld := safeGW.readersHeld()
	safeSync, safeSyncErr := blockSync(ctx, safeGW.blocks[0], syncTimeout)
	if safeSyncErr != nil {
		res.Notes = append(res.Notes, "leaksafe block sync: "+safeSyncErr.Error())
	}
	res.Notes = append(res.Notes, fmt.Sprintf("naive: %d requests, %s of chunks leased and never returned, Gets−Puts %d; block sync gave up after %v (%v)",
		requests, formatBytes(float64(naiveStats.InUse)), naiveStats.Gets-naiveStats.Puts, syncTimeout, naiveSyncErr))
	res.Notes = append(res.Notes, fmt.Sprintf("naive Check (Track %s): %s", onOff(naiveTrack), naiveReport))

	res.Metrics = []metric{
		{Name: "chunk pool in use after the load", Unit: unitBytes, Naive: float64(naiveStats.InUse), Leaksafe: float64(safeStats.InUse),
			Bound: exactly(0), Symptom: true},
		{Name: "requests refused (pool exhausted)", Unit: unitCount, Naive: float64(naiveRefused), Leaksafe: float64(safeRefused),
			Bound: exactly(0), Symptom: true},
		{Name: "leak report names the leaking Get", Unit: unitBool, Naive: b2f(naiveLocated), Leaksafe: b2f(located),
			Bound: exactly(1), Symptom: true},
		{Name: "block readers still held after the load", Unit: unitCount, Naive: float64(naiveHeld), Leaksafe: float64(safeHeld),
			Bound: exactly(0), Symptom: true},
		{Name: "block sync completed", Unit: unitBool, Naive: b2f(naiveSync), Leaksafe: b2f(safeSync),
			Bound: exactly(1), Symptom: true},
	}
	res.Panels = []panel{{
		Title: "pool: chunk pool bytes in use while serving Series requests", X: "seconds", Y: "in use", Unit: unitBytes,
		Naive: naiveInUse, Leaksafe: safeInUse, Marks: []refLine{{Label: "MaxTotal", Y: float64(maxTotal)}},
	}}
	return res, nil
}

// locatePoolLeak runs the refactored gateway briefly with a tracking pool and tracking
// Refs, as a test would, and reports whether the pool's leak report names the Get in
// blockSeriesClient.preload, with the request path that leaked it.
func locatePoolLeak(ctx context.Context, newChunks func(track bool) (*pool.Pool[byte], error), requests int) (bool, string, error) {
	chunks, err := newChunks(true)
	if err != nil {
		return false, "", err
	}
	var refs []*pool.Refs
	gw := newStoreGateway(chunks, func(id int) blockReaders {
		r := &pool.Refs{Name: fmt.Sprintf("block-%d", id), Track: true}
		refs = append(refs, r)
		return &refsReaders{r: r}
	}, false)
	if _, err := gw.serve(ctx, gatewayLoad{requests: max(requests/10, 2*gatewayFailEvery), sample: func(time.Duration) {}}); err != nil {
		return false, "", err
	}
	// Check, not VerifyNone: a leak is certain here, and VerifyNone would wait out its grace period.
	leak := chunks.Check()
	if leak == nil {
		return false, "Check found no leak in the refactored gateway", nil
	}
	located, getAt, pathAt := leakSites(leak.Error())
	refsAt := ""
	if err := refs[0].Check(); err != nil {
		refsAt = callerIn(err.Error(), "newBlockSeriesClient")
	}
	return located, fmt.Sprintf("leaksafe Check (Track on): %s; block-0 Refs: reader acquired at %s",
		describeLeak(leak.Error(), located, getAt, pathAt), refsAt), nil
}

// leakSites reads a pool's leak report: located when it names both the Get in
// blockSeriesClient.preload and the request path that leaked it.
func leakSites(report string) (located bool, getAt, pathAt string) {
	getAt = callerIn(report, "(*blockSeriesClient).preload")
	pathAt = callerIn(report, "(*storeGateway).series")
	return getAt != "" && pathAt != "", getAt, pathAt
}

// describeLeak is a leak report in one line: its headline, then where the leak is, or, when
// the report cannot say, its own reason (an untracked pool's "set Options.Track").
func describeLeak(report string, located bool, getAt, pathAt string) string {
	first, rest, _ := strings.Cut(report, "\n")
	if located {
		return fmt.Sprintf("%s — leaking Get at %s, in the request path at %s", first, getAt, pathAt)
	}
	why, _, _ := strings.Cut(rest, "\n")
	return fmt.Sprintf("%s — no Get named: %s", first, strings.TrimSpace(why))
}

// callerIn finds the function fn of this package in a Go-traceback-style report and returns
// its file:line (base name). The package is "main" in the program and its import path in tests.
func callerIn(report, fn string) string {
	lines := strings.Split(report, "\n")
	for i, l := range lines {
		if strings.HasSuffix(strings.TrimSpace(l), "leakdemo."+fn) || strings.TrimSpace(l) == "main."+fn {
			if i+1 == len(lines) {
				break
			}
			loc := strings.TrimSpace(lines[i+1])
			if j := strings.LastIndex(loc, "/"); j >= 0 {
				loc = loc[j+1:]
			}
			return loc
		}
	}
	return ""
}

// blockSync drops a block the way Thanos' block sync does: it waits for the block's readers
// first. It reports whether the wait completed within limit.
func blockSync(ctx context.Context, b *gatewayBlock, limit time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := b.readers.wait(ctx)
	return err == nil, err
}

// waitGroupReaders is Thanos' pendingReaders: a sync.WaitGroup. Wait cannot take a deadline
// nor say who holds it; the count is kept beside it only so the demo can undo its leak.
type waitGroupReaders struct {
	wg sync.WaitGroup
	n  atomic.Int64
}

func (w *waitGroupReaders) acquire() func() {
	w.wg.Add(1)
	w.n.Add(1)
	var once sync.Once
	return func() { once.Do(func() { w.n.Add(-1); w.wg.Done() }) }
}

func (w *waitGroupReaders) held() int64 { return w.n.Load() }

func (w *waitGroupReaders) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }() // stays blocked until releaseLeaked
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pendingReaders.Wait() still blocked: %w", context.Cause(ctx))
	}
}

// releaseLeaked undoes the naive gateway's leak, which nothing in it can do.
func (w *waitGroupReaders) releaseLeaked() {
	for w.n.Add(-1) >= 0 {
		w.wg.Done()
	}
	w.n.Add(1)
}

type refsReaders struct{ r *pool.Refs }

func (r *refsReaders) acquire() func()                { return r.r.Acquire() }
func (r *refsReaders) held() int64                    { return r.r.Count() }
func (r *refsReaders) wait(ctx context.Context) error { return r.r.Wait(ctx) }

// errorRecorder is a pool.TestingT that keeps what VerifyNone reports.
type errorRecorder struct{ errs []string }

func (r *errorRecorder) Helper() {}
func (r *errorRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

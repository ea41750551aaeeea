package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"
)

func TestRefsZeroValueIsReady(t *testing.T) {
	var r Refs
	require.Zero(t, r.Count())
	require.NoError(t, r.Check())
	require.NoError(t, r.Wait(context.Background()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, r.Wait(ctx), "nothing to wait for beats a done context")
}

func TestRefsReleaseIsIdempotent(t *testing.T) {
	var r Refs
	a := r.Acquire()
	b := r.Acquire()
	a()
	a()
	a()
	require.Equal(t, int64(1), r.Count(), "a second release of a must not release b")
	b()
	require.Zero(t, r.Count())
	require.NoError(t, r.Check())
}

// In a synctest bubble, synctest.Wait returns only once the goroutine
// running Wait is blocked or has finished, so looking at done after it is a
// real check that Wait had not returned, not a race with the scheduler.
func TestRefsWaitReturnsWhenTheLastHolderReleases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r Refs
		releases := []func(){r.Acquire(), r.Acquire(), r.Acquire()}
		done := make(chan error, 1)
		go func() { done <- r.Wait(context.Background()) }()
		for i, release := range releases {
			synctest.Wait()
			select {
			case err := <-done:
				t.Fatalf("Wait returned %v with %d holders left", err, len(releases)-i)
			default:
			}
			release()
		}
		synctest.Wait()
		select {
		case err := <-done:
			require.NoError(t, err)
		default:
			t.Fatal("Wait still waits after the last holder released")
		}
	})
}

func TestRefsWaitGivesUpWithTheContextCause(t *testing.T) {
	r := Refs{Name: "block 01HXYZ"}
	release := r.Acquire()
	defer release()
	cause := errors.New("block sync deadline")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	err := r.Wait(ctx)
	require.ErrorIs(t, err, cause)
	require.ErrorContains(t, err, `refs "block 01HXYZ": gave up waiting for holders`)
	require.ErrorContains(t, err, "1 holders")
}

// The pendingReaders half of the incident: block sync waits for readers that
// never finish. Wait gives up with the context, and says who they are.
func TestRefsBlockSyncNamesTheReaderThatNeverFinished(t *testing.T) {
	readers := Refs{Name: "block 01HXYZ", Track: true}
	var releases []func()
	for range 3 {
		releases = append(releases, readers.Acquire()) // Series calls that finish
	}
	stuckLine := thisLine() + 1
	stuck := readers.Acquire() // a Series call whose iterator is never closed
	for _, release := range releases {
		release()
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the sync gives up (a deadline in production; no clock here)
	err := readers.Wait(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, `refs "block 01HXYZ": 1 holders`)
	require.ErrorContains(t, err, "1 held, acquired at:")
	require.ErrorContains(t, err, fmt.Sprintf("refs_test.go:%d", stuckLine))

	var rec recorder
	VerifyNone(&rec, &readers)
	require.Contains(t, rec.String(), fmt.Sprintf("refs_test.go:%d", stuckLine))
	require.ErrorIs(t, readers.Check(), ErrLeak)

	stuck()
	require.NoError(t, readers.Wait(context.Background()))
	VerifyNone(t, &readers)
}

func acquireFrom(r *Refs, n int, keep *[]func()) int {
	line := thisLine() + 2
	for range n {
		*keep = append(*keep, r.Acquire())
	}
	return line
}

func TestRefsCheckGroupsHoldersByStackMostFrequentFirst(t *testing.T) {
	r := Refs{Name: "block", Track: true}
	var held []func()
	rare := thisLine() + 1
	held = append(held, r.Acquire())
	frequent := acquireFrom(&r, 500, &held)
	err := r.Check()
	require.ErrorIs(t, err, ErrLeak)
	msg := err.Error()
	require.Equal(t, 2, strings.Count(msg, "acquired at:"))
	require.Contains(t, msg, "500 held, acquired at:")
	require.Less(t, strings.Index(msg, fmt.Sprintf("refs_test.go:%d", frequent)), strings.Index(msg, fmt.Sprintf("refs_test.go:%d", rare)))
	for _, release := range held {
		release()
	}
	require.NoError(t, r.Check())
}

func TestRefsWithoutTrackCountHoldersAndSayHowToNameThem(t *testing.T) {
	r := Refs{Name: "block"}
	release := r.Acquire()
	err := r.Check()
	require.ErrorIs(t, err, ErrLeak)
	require.ErrorContains(t, err, `refs "block": 1 holders`)
	require.ErrorContains(t, err, "set Refs.Track")
	release()
	require.NoError(t, r.Check())
}

func dropRelease(r *Refs) int {
	line := thisLine() + 1
	r.Acquire()
	return line
}

func TestRefsTrackedReleaseDroppedUncalledIsReportedAndReleased(t *testing.T) {
	r := Refs{Name: "block", Track: true}
	line := dropRelease(&r)
	collectUntil(t, func() bool { return r.Count() == 0 })
	require.NoError(t, r.Wait(context.Background()), "block sync is no longer stuck")
	err := r.Check()
	require.ErrorIs(t, err, ErrLeak)
	require.ErrorContains(t, err, "1 released by the garbage collector (release never called)")
	require.ErrorContains(t, err, "1 never released (release garbage-collected), acquired at:")
	require.ErrorContains(t, err, fmt.Sprintf("refs_test.go:%d", line))
}

func TestRefsConcurrentHoldersAndWaiters(t *testing.T) {
	for _, track := range []bool{false, true} {
		t.Run(fmt.Sprintf("track=%v", track), func(t *testing.T) {
			r := Refs{Track: track}
			gate := r.Acquire() // keeps waiters waiting until the end
			var holders, waiters sync.WaitGroup
			for range 8 {
				holders.Go(func() {
					for range 500 {
						release := r.Acquire()
						release()
						release()
					}
				})
			}
			errs := make(chan error, 4)
			for range 4 {
				waiters.Go(func() { errs <- r.Wait(context.Background()) })
			}
			holders.Wait()
			require.Equal(t, int64(1), r.Count())
			gate()
			waiters.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			require.Zero(t, r.Count())
			require.NoError(t, r.Check())
		})
	}
}

// acquireAtDepth acquires r from a stack d frames deeper than its caller's, so
// that each depth is a distinct stack in a report.
func acquireAtDepth(r *Refs, d int) func() {
	if d == 0 {
		return r.Acquire()
	}
	return acquireAtDepth(r, d-1)
}

func TestReportsShowTheTenMostFrequentStacksAndCountTheRest(t *testing.T) {
	r := Refs{Name: "block", Track: true}
	p := newPool[byte](t, Options{MinSize: 8, MaxSize: 8, Factor: 2, Track: true})
	var releases []func()
	var leases []*[]byte
	for d := range 12 {
		releases = append(releases, acquireAtDepth(&r, d))
		leases = append(leases, getAtDepth(p, d))
	}
	for _, err := range []error{r.Check(), p.Check()} {
		msg := err.Error()
		require.Equal(t, maxGroupsShown, strings.Count(msg, " at:\n"), msg)
		require.Contains(t, msg, "... and 2 more stacks")
	}
	for i := range releases {
		releases[i]()
		p.Put(leases[i])
	}
	VerifyNone(t, &r, p)
}

func getAtDepth(p *Pool[byte], d int) *[]byte {
	if d == 0 {
		b, err := p.Get(8)
		if err != nil {
			panic(err)
		}
		return b
	}
	return getAtDepth(p, d-1)
}

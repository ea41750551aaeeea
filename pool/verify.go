package pool

import (
	"errors"
	"runtime"
	"time"
)

// ErrLeak is wrapped by Check errors that report leases or references still
// held, or lost (garbage-collected without being returned).
var ErrLeak = errors.New("leak")

// ErrBadPut is wrapped by Check errors that report a Put of something that
// was not an outstanding lease (put twice, or never leased by that pool).
var ErrBadPut = errors.New("bad put")

type leakError struct {
	msg       string
	leak, bad bool
	// final: nothing is still held; what is reported (bad Puts, leases or
	// holders already garbage-collected) is history that waiting cannot
	// change.
	final bool
}

func (e *leakError) Error() string { return e.msg }

func (e *leakError) Is(target error) bool {
	return (target == ErrLeak && e.leak) || (target == ErrBadPut && e.bad)
}

// TestingT is the part of *testing.T (or *testing.B, or any test framework)
// VerifyNone needs; this package does not import "testing".
type TestingT interface {
	Helper()
	Errorf(format string, args ...any)
}

// Checker is anything that can say whether it still has something
// outstanding: *Pool[T], *Refs, or your own type.
type Checker interface {
	Check() error
}

// verifyBudget bounds how long VerifyNone waits for leases that are being
// returned by goroutines still winding down (a stream's deferred Put, a
// reader's release after the response is sent).
const verifyBudget = 2 * time.Second

// VerifyNone fails t (t.Errorf, like goleak.VerifyNone) for every checker
// whose Check still reports something after a short grace period. During the
// grace period it runs the garbage collector, so tracked leases that were
// dropped without Put are reported as such. A nil Checker is skipped; a nil
// *Pool or *Refs is reported at once. Use it at the end of a test:
//
//	defer pool.VerifyNone(t, chunks, block.pendingReaders)
func VerifyNone(t TestingT, cs ...Checker) {
	t.Helper()
	for _, c := range cs {
		if c == nil {
			continue
		}
		if err := settle(c); err != nil {
			t.Errorf("leaksafe: %v", err)
		}
	}
}

// settle retries c.Check with backoff while it fails, up to verifyBudget.
// Bad Puts and collected leases never heal: once nothing else is reported
// they are reported at once.
func settle(c Checker) error {
	err := c.Check()
	deadline := time.Now().Add(verifyBudget)
	for wait := time.Millisecond; err != nil && !isFinal(err) && time.Now().Before(deadline); wait = min(2*wait, 100*time.Millisecond) {
		runtime.GC() // let cleanups report tracked leases that became garbage
		time.Sleep(wait)
		err = c.Check()
	}
	return err
}

// isFinal reports whether waiting cannot change err: history (see
// leakError.final), or a checker that was never built (a nil *Pool), which
// no amount of waiting will build.
func isFinal(err error) bool {
	var le *leakError
	return errors.As(err, &le) && le.final || errors.Is(err, ErrInvalidOptions)
}

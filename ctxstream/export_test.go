package ctxstream

import "time"

// SetAfterFunc makes iterators create their Recv timer with f instead of time.AfterFunc, until
// the returned function is called.
func SetAfterFunc(f func(time.Duration, func()) *time.Timer) (restore func()) {
	afterFunc = f
	return func() { afterFunc = time.AfterFunc }
}

//go:build race

package pool

// raceEnabled: under -race, sync.Pool drops a quarter of its Puts on purpose,
// so allocation counts are meaningless there.
const raceEnabled = true

//go:build unix

package pool

import "syscall"

// processCPU returns the CPU time this process has used. Benchmarks report
// it per op beside wall time: on a shared machine, other processes inflate
// wall time but not the CPU this one spends.
func processCPU() (ns int64, ok bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return ru.Utime.Nano() + ru.Stime.Nano(), true
}

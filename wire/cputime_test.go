//go:build unix

package wire

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds the CPU time per op since start, and the bytes per CPU
// second: on a machine shared with other work, wall time (ns/op, MB/s)
// counts the waits for a core too, and CPU time does not.
func reportCPU(b *testing.B, start time.Duration, bytes int) {
	cpu := float64(cpuTime()-start) / float64(b.N)
	b.ReportMetric(cpu, "cpu-ns/op")
	b.ReportMetric(float64(bytes)/cpu*1e3, "cpu-MB/s")
}

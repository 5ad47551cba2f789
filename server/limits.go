package server

import (
	"sync"

	"golang.org/x/sys/unix"
)

// File descriptors are the one resource an anonymous client can exhaust
// without sending a byte: each connection takes one. The broker raises its
// soft RLIMIT_NOFILE to the hard limit at start (Go does so too on Linux,
// but says it may stop) and splits what it gets: fdReserve for its own
// use (listeners, pollers and their wake-up descriptors, HTTP, log files,
// directory syncs), then half each to connections (MaxConnections) and to
// the partitions' open files (MaxOpenFiles, an LRU of segment handles), so
// that neither can starve the other and accept(2) never meets EMFILE
// under the defaults.
const fdReserve = 128

var fdLimitOnce = sync.OnceValue(raiseFDLimit)

// raiseFDLimit raises the soft limit on open files to the hard limit and
// returns the soft limit in force.
func raiseFDLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur < rl.Max {
		raised := rl
		raised.Cur = rl.Max
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
			rl = raised
		}
	}
	if rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}

// FDLimit is the process's limit on open files, after raising it.
func FDLimit() int { return fdLimitOnce() }

// FDShare is half of what the limit leaves after the reserve: the default
// of MaxConnections and of MaxOpenFiles.
func FDShare() int { return max(64, (FDLimit()-fdReserve)/2) }

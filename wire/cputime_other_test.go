//go:build !unix

package wire

import (
	"testing"
	"time"
)

func cpuTime() time.Duration { return 0 }

// reportCPU reports nothing where getrusage is missing.
func reportCPU(*testing.B, time.Duration, int) {}

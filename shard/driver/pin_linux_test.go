package driver

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestPinnedThreadEndsWithTheShard: a shard whose thread was bound to one
// CPU leaves no thread so bound behind when it stops. Its goroutine used
// to unlock the thread on the way out, handing it back to the scheduler
// still bound, so that other goroutines ran confined to one CPU.
func TestPinnedThreadEndsWithTheShard(t *testing.T) {
	var allowed unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(os.Getpid(), &allowed))
	if allowed.Count() < 2 {
		t.Skip("one CPU: a thread bound to it is like any other")
	}
	pinned := func(cpu int) int { // threads of this process bound to cpu alone
		n := 0
		tasks, _ := filepath.Glob("/proc/self/task/*/status")
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			if err != nil {
				continue // the thread ended
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) == strconv.Itoa(cpu) {
					n++
				}
			}
		}
		return n
	}
	cpu := -1
	for c := 0; c < 1024 && cpu < 0; c++ {
		if allowed.IsSet(c) {
			cpu = c
		}
	}
	before := pinned(cpu)
	s := New(Config{Pin: func(int) (int, error) {
		var set unix.CPUSet
		set.Set(cpu)
		return cpu, unix.SchedSetaffinity(0, &set)
	}})
	s.Start()
	require.Eventually(t, func() bool { return pinned(cpu) == before+1 }, 10*time.Second, time.Millisecond,
		"the shard's thread is bound to cpu %d", cpu)
	s.Stop()
	require.Eventually(t, func() bool { return pinned(cpu) == before }, 10*time.Second, time.Millisecond,
		"no thread is left bound to cpu %d after the shard stopped", cpu)
}

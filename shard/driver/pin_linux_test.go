package driver

import (
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestPinnedThreadEndsWithTheShard: a shard whose thread was bound to one
// CPU leaves no thread so bound for other goroutines when it stops. Its
// goroutine used to unlock the thread on the way out, handing it back to
// the scheduler still bound, so that whatever ran there next was confined
// to one CPU. Goroutines that each hold a thread of their own at the same
// time take every idle thread the scheduler has; none may be bound.
func TestPinnedThreadEndsWithTheShard(t *testing.T) {
	var allowed unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(os.Getpid(), &allowed))
	if allowed.Count() < 2 {
		t.Skip("one CPU: a thread bound to it is like any other")
	}
	cpu := 0
	for !allowed.IsSet(cpu) {
		cpu++
	}
	pinned := make(chan int, 1)
	s := New(Config{Pin: func(int) (int, error) {
		var set unix.CPUSet
		set.Set(cpu)
		err := unix.SchedSetaffinity(0, &set)
		pinned <- cpu
		return cpu, err
	}})
	s.Start()
	require.Equal(t, cpu, <-pinned)
	s.Stop()

	const n = 32
	var (
		ready   sync.WaitGroup
		release = make(chan struct{})
		counts  = make(chan int, n)
	)
	ready.Add(n)
	for range n {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var mask unix.CPUSet
			_ = unix.SchedGetaffinity(0, &mask)
			counts <- mask.Count()
			ready.Done()
			<-release // hold the thread while the others take theirs
		}()
	}
	ready.Wait()
	close(release)
	for range n {
		require.Equal(t, allowed.Count(), <-counts, "a goroutine ran on a thread still bound to cpu %d", cpu)
	}
}

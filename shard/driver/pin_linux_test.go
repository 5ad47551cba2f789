package driver

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// startMask is the CPUs the process may use, read as the test binary
// starts: later, the thread a test runs on, or the main thread, may be one
// a shard bound (the main thread stays so once its goroutine ends locked).
var startMask = func() (m unix.CPUSet) {
	_ = unix.SchedGetaffinity(0, &m)
	return m
}()

// TestPinnedThreadEndsWithTheShard: a shard whose thread was bound to one
// CPU leaves no thread so bound for other goroutines when it stops. Its
// goroutine used to unlock the thread on the way out, handing it back to
// the scheduler still bound, so that whatever ran there next was confined
// to one CPU. Goroutines that each hold a thread of their own at the same
// time take every idle thread the scheduler has; none may be bound (on a
// machine of one CPU, binding changes nothing, and the thread's end is
// what tells).
func TestPinnedThreadEndsWithTheShard(t *testing.T) {
	allowed := startMask
	cpu := 0
	for !allowed.IsSet(cpu) {
		cpu++
	}
	tids := make(chan int, 1)
	s := New(Config{Pin: func(int) (int, error) {
		var set unix.CPUSet
		set.Set(cpu)
		err := unix.SchedSetaffinity(0, &set)
		tids <- unix.Gettid()
		return cpu, err
	}})
	s.Start()
	tid := <-tids
	s.Stop()
	// The thread exits; the main thread, which the runtime never ends,
	// is left idle for good instead.
	require.Eventually(t, func() bool {
		_, err := os.Stat("/proc/self/task/" + strconv.Itoa(tid))
		return tid == os.Getpid() || errors.Is(err, fs.ErrNotExist)
	}, 10*time.Second, time.Millisecond, "the pinned thread %d ends with the shard", tid)

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

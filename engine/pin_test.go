package engine

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// pinThread binds the calling thread to a CPU it may use, chosen by the
// shard's index among them.
func TestPinThread(t *testing.T) {
	var allowed unix.CPUSet
	require.NoError(t, unix.SchedGetaffinity(0, &allowed))
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Locked and never unlocked: the thread ends with the goroutine,
		// and its affinity with it.
		runtime.LockOSThread()
		cpu, err := pinThread(allowed.Count() + 1)
		require.NoError(t, err)
		require.True(t, allowed.IsSet(cpu), "cpu %d is one the process may use", cpu)
		var now unix.CPUSet
		require.NoError(t, unix.SchedGetaffinity(0, &now))
		require.Equal(t, 1, now.Count())
		require.True(t, now.IsSet(cpu))
	}()
	<-done
	require.Nil(t, pinner(false))
	require.NotNil(t, pinner(true))
}

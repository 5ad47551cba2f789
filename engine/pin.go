package engine

import (
	"errors"

	"golang.org/x/sys/unix"
)

// pinThread binds the calling thread to one of the CPUs the process may use,
// chosen by shard index.
func pinThread(id int) (int, error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return -1, err
	}
	cpus := make([]int, 0, allowed.Count())
	for c := 0; c < len(allowed)*64 && len(cpus) < allowed.Count(); c++ {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return -1, errors.New("no CPU in the affinity mask")
	}
	cpu := cpus[id%len(cpus)]
	var set unix.CPUSet
	set.Set(cpu)
	return cpu, unix.SchedSetaffinity(0, &set)
}

// pinner is the shards' Pin: pinThread when pinning is asked for.
func pinner(pin bool) func(int) (int, error) {
	if !pin {
		return nil
	}
	return pinThread
}

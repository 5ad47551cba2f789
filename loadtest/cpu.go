package loadtest

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSampler measures the CPU the tool (and optionally the broker) used
// over a run, in cores: CPU seconds divided by wall seconds. On a two-core
// machine these figures say how much of the machine each side took.
type cpuSampler struct {
	start      time.Time
	self       time.Duration
	brokerPID  int
	brokerTick int64
}

func startCPU(brokerPID int) *cpuSampler {
	c := &cpuSampler{start: time.Now(), self: selfCPU(), brokerPID: brokerPID}
	if brokerPID > 0 {
		c.brokerTick = procTicks(brokerPID)
	}
	return c
}

func (c *cpuSampler) stop() (tool, broker float64) {
	wall := time.Since(c.start).Seconds()
	tool = (selfCPU() - c.self).Seconds() / wall
	if c.brokerPID > 0 && c.brokerTick >= 0 {
		if t := procTicks(c.brokerPID); t >= 0 {
			broker = float64(t-c.brokerTick) / clockTicks / wall
		}
	}
	return tool, broker
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on Linux.
const clockTicks = 100

// procTicks reads utime+stime of a process from /proc, or -1.
func procTicks(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name may contain spaces; fields resume after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return ut + st
}

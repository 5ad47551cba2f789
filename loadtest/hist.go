package loadtest

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: 1 µs to 1 minute at 3 significant digits, in ns.
const (
	histMin    = 1_000
	histMax    = int64(time.Minute)
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// timings is a histogram its owner records into, one goroutine only, plus
// the share since the last progress line, which another goroutine takes
// once a second without ever making the owner wait.
type timings struct {
	all      *hdrhistogram.Histogram
	interval *hdrhistogram.Histogram // owner's, since the last swap
	lastSwap int64

	mu      sync.Mutex
	pending *hdrhistogram.Histogram // handed over for the progress line
}

func newTimings() *timings { return &timings{all: newHist(), interval: newHist()} }

// record adds v (ns) at time t; values past the range are clamped to it.
func (tm *timings) record(v, t int64) {
	v = min(v, histMax)
	_ = tm.all.RecordValue(v)
	_ = tm.interval.RecordValue(v)
	if t-tm.lastSwap >= int64(time.Second) {
		tm.swap(t)
	}
}

// swap hands the interval histogram over and starts a new one.
func (tm *timings) swap(t int64) {
	tm.mu.Lock()
	if tm.pending == nil {
		tm.pending, tm.interval = tm.interval, newHist()
	} else {
		tm.pending.Merge(tm.interval)
		tm.interval.Reset()
	}
	tm.mu.Unlock()
	tm.lastSwap = t
}

// take returns what was handed over since the last call, or nil.
func (tm *timings) take() *hdrhistogram.Histogram {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	h := tm.pending
	tm.pending = nil
	return h
}

package ring

import "math/bits"

// cacheLine is the padding unit that keeps independently written fields
// apart. It is 128 rather than 64 bytes because Intel's spatial prefetcher
// fetches cache lines in adjacent pairs, so two hot words 64 bytes apart can
// still bounce between cores.
const cacheLine = 128

// pad separates fields written by different goroutines onto different cache
// lines (and keeps the queue's hot fields away from neighbouring heap
// objects).
type pad [cacheLine]byte

// maxCapacity keeps the rounded-up capacity representable as an int.
const maxCapacity = 1 << (bits.UintSize - 2)

// roundCapacity validates a requested capacity and rounds it up to a power
// of two (minimum 2) so that positions map to slots with a mask instead of a
// division.
func roundCapacity(capacity int) uint64 {
	if capacity <= 0 {
		panic("ring: capacity must be positive")
	}
	if capacity > maxCapacity {
		panic("ring: capacity too large")
	}
	if capacity < 2 {
		return 2
	}
	return 1 << bits.Len64(uint64(capacity-1))
}

// occupancy turns a head and a tail read by an arbitrary goroutine into a
// length. The caller must read head before tail: both only grow and tail is
// never behind head, so the difference cannot be negative, but it can exceed
// the capacity when the reads straddle other operations, hence the clamp.
func occupancy(head, tail, size uint64) int {
	return int(min(tail-head, size))
}

package ring

import (
	"sync/atomic"
	"time"
)

// SPSC is a bounded queue for exactly one producer goroutine and one
// consumer goroutine. It exists because that pairing needs no
// read-modify-write instructions at all: each side owns one index, and a
// push or pop is a plain slot access plus one atomic store. Each side also
// caches the other side's index and re-reads it only when the cached value
// says the queue is full (producer) or empty (consumer), so in steady state
// neither side touches a cache line the other is writing.
//
// Using an SPSC from more than one producer or more than one consumer
// goroutine at a time corrupts it; use [MPSC] for many producers.
type SPSC[T any] struct {
	_    pad
	buf  []T
	mask uint64
	_    pad
	// Consumer-owned line.
	head       atomic.Uint64 // next position to read; stored only by the consumer
	cachedTail uint64        // consumer's last-seen tail, a lower bound of the real one
	_          pad
	// Producer-owned line.
	tail       atomic.Uint64 // next position to write; stored only by the producer
	cachedHead uint64        // producer's last-seen head, a lower bound of the real one
	_          pad
	park       parker
	_          pad
}

// NewSPSC returns an empty queue holding at least capacity values. The
// capacity is rounded up to a power of two (minimum 2) so a position maps
// to its slot with a mask. It panics if capacity <= 0, because a queue that
// can hold nothing is always a configuration bug.
func NewSPSC[T any](capacity int) *SPSC[T] {
	size := roundCapacity(capacity)
	q := &SPSC[T]{buf: make([]T, size), mask: size - 1}
	q.park.init()
	return q
}

// Push appends v and reports whether there was room. It never blocks: a
// full queue is back-pressure, and the producer (an event loop) decides
// whether to retry, drop or stop reading its socket. Producer only.
func (q *SPSC[T]) Push(v T) bool {
	t := q.tail.Load()
	if q.room(t, 1) == 0 {
		return false
	}
	q.buf[t&q.mask] = v
	q.tail.Store(t + 1)
	q.park.notify()
	return true
}

// PushBatch appends the longest prefix of vs that fits and returns its
// length. The whole prefix becomes visible with one atomic store, so the
// cost of publishing and of the wake-up check is paid once per batch, which
// is how event loops hand over a read's worth of messages. Producer only.
func (q *SPSC[T]) PushBatch(vs []T) int {
	t := q.tail.Load()
	n := q.room(t, len(vs))
	if n == 0 {
		return 0
	}
	copyIn(q.buf, t, vs[:n])
	q.tail.Store(t + uint64(n))
	q.park.notify()
	return n
}

// Pop removes the oldest value. It zeroes the slot so that the queue does
// not keep a popped batch reachable until the slot is overwritten a lap
// later. Consumer only.
func (q *SPSC[T]) Pop() (T, bool) {
	var v T
	h := q.head.Load()
	if q.avail(h, 1) == 0 {
		return v, false
	}
	i := h & q.mask
	v = q.buf[i]
	q.buf[i] = *new(T)
	q.head.Store(h + 1)
	return v, true
}

// PopBatch moves up to len(dst) of the oldest values into dst[:n] and
// returns n. The slots it read are zeroed so references are released, and
// they are handed back to the producer with one atomic store, which lets a
// shard drain its inbox with one synchronization per batch. Consumer only.
func (q *SPSC[T]) PopBatch(dst []T) int {
	h := q.head.Load()
	n := q.avail(h, len(dst))
	if n == 0 {
		return 0
	}
	copyOut(q.buf, h, dst[:n])
	q.head.Store(h + uint64(n))
	return n
}

// Len returns the number of queued values. It is only a snapshot (both
// sides may move while it runs) and is meant for metrics and load-based
// decisions, which is why it is safe to call from any goroutine.
func (q *SPSC[T]) Len() int {
	h := q.head.Load() // head first: see occupancy
	return occupancy(h, q.tail.Load(), uint64(len(q.buf)))
}

// Cap returns the capacity after rounding, so callers can size batches and
// watermarks against the real limit rather than the requested one.
func (q *SPSC[T]) Cap() int {
	return len(q.buf)
}

// Wait blocks the consumer until the queue is non-empty, a Wake arrives, or
// timeout passes (timeout <= 0 waits without a deadline). It returns true as
// soon as the queue is non-empty and false otherwise. It spins a bounded
// number of times, yielding with runtime.Gosched, and then parks, because
// on the two-core target a consumer that busy-waits steals the core its
// producers need. It does not allocate. Consumer only.
func (q *SPSC[T]) Wait(timeout time.Duration) bool {
	return q.park.wait(q.ready, timeout)
}

// Wake makes the consumer return from Wait promptly, so a shard can be
// told to shut down or run its timers even when no messages arrive. If the
// consumer is not parked, the wake-up is remembered and the next Wait that
// would block returns false at once instead, so a Wake racing with the
// consumer's entry into Wait is never lost. Safe from any goroutine.
func (q *SPSC[T]) Wake() {
	q.park.wake()
}

// ready reports whether the queue is non-empty, refreshing the consumer's
// cached tail only when the cache says empty. Consumer only.
func (q *SPSC[T]) ready() bool {
	return q.avail(q.head.Load(), 1) > 0
}

// room returns how many of want values fit after position t, re-reading the
// shared head only when the cached one says there is not enough room.
func (q *SPSC[T]) room(t uint64, want int) int {
	size := uint64(len(q.buf))
	if size-(t-q.cachedHead) >= uint64(want) {
		return want
	}
	q.cachedHead = q.head.Load()
	return int(min(size-(t-q.cachedHead), uint64(want)))
}

// avail returns how many of want values are readable at position h,
// re-reading the shared tail only when the cached one says too few are.
func (q *SPSC[T]) avail(h uint64, want int) int {
	if q.cachedTail-h >= uint64(want) {
		return want
	}
	q.cachedTail = q.tail.Load()
	return int(min(q.cachedTail-h, uint64(want)))
}

// copyIn copies vs into the ring buf starting at position pos, wrapping at
// most once (len(vs) never exceeds len(buf)).
func copyIn[T any](buf []T, pos uint64, vs []T) {
	i := int(pos & uint64(len(buf)-1))
	n := copy(buf[i:], vs)
	copy(buf, vs[n:])
}

// copyOut fills dst from the ring buf starting at position pos, wrapping at
// most once, and zeroes the slots it read.
func copyOut[T any](buf []T, pos uint64, dst []T) {
	i := int(pos & uint64(len(buf)-1))
	n := copy(dst, buf[i:])
	clear(buf[i : i+n])
	m := copy(dst[n:], buf)
	clear(buf[:m])
}

package ring

import "sync/atomic"

// slot is one cell of an MPSC ring. seq tells whose turn the cell is:
// seq == pos means it is free for the producer that claims position pos,
// seq == pos+1 means the value for position pos is published, and the
// consumer sets seq = pos+size to free it for the next lap.
type slot[T any] struct {
	seq atomic.Uint64
	val T
}

// MPSC is a bounded queue for many producer goroutines and one consumer,
// after Dmitry Vyukov's bounded MPMC queue specialised to one consumer. It
// exists for the shard inbox: every network event loop may push into it,
// and producers must not serialize on a lock. Producers claim positions
// with a CAS on the shared tail (one CAS per batch), then write and publish
// each slot through its own sequence number, so a slow producer delays
// only the consumer's view of its own slots, never the other producers.
type MPSC[T any] struct {
	_     pad
	slots []slot[T]
	mask  uint64
	_     pad
	tail  atomic.Uint64 // next position to claim; CAS by producers
	_     pad
	head  atomic.Uint64 // next position to read; stored by the consumer after each pop
	_     pad
}

// NewMPSC returns an empty queue holding at least capacity values. The
// capacity is rounded up to a power of two (minimum 2) so a position maps
// to its slot with a mask. It panics if capacity <= 0, because a queue that
// can hold nothing is always a configuration bug.
func NewMPSC[T any](capacity int) *MPSC[T] {
	size := roundCapacity(capacity)
	q := &MPSC[T]{slots: make([]slot[T], size), mask: size - 1}
	for i := range q.slots {
		q.slots[i].seq.Store(uint64(i))
	}
	return q
}

// Push appends v and reports whether there was room. It never blocks: a
// full inbox is back-pressure that the event loop handles explicitly. Safe
// from any number of goroutines.
func (q *MPSC[T]) Push(v T) bool {
	pos, n := q.claim(1)
	if n == 0 {
		return false
	}
	q.publish(pos, v)
	return true
}

// PushBatch appends as many values from the front of vs as fit and returns
// how many (it does not fall back to all-or-nothing: a partial push lets an
// event loop hand over what fits and keep only the rest). All the slots are
// claimed with one CAS on the tail, so a batch lands contiguously and in
// order even with other producers pushing concurrently. Safe from any
// number of goroutines.
func (q *MPSC[T]) PushBatch(vs []T) int {
	if len(vs) == 0 {
		return 0
	}
	pos, n := q.claim(uint64(len(vs)))
	for i := range n {
		q.publish(pos+i, vs[i])
	}
	return int(n)
}

// Pop removes the oldest published value. If the oldest claimed slot has
// not been written yet, Pop reports empty even when later slots are ready:
// values leave in claim order. The slot is zeroed so the queue does not
// keep the value reachable. Consumer only.
func (q *MPSC[T]) Pop() (T, bool) {
	var v T
	h := q.head.Load()
	if !q.take(h, &v) {
		return v, false
	}
	q.head.Store(h + 1)
	return v, true
}

// PopBatch moves up to len(dst) of the oldest published values into dst[:n]
// and returns n. It stops at the first slot whose producer has claimed but
// not yet published it. Each slot read is zeroed, so references are
// released, and freed in order. Consumer only.
func (q *MPSC[T]) PopBatch(dst []T) int {
	h := q.head.Load()
	n := 0
	for n < len(dst) && q.take(h+uint64(n), &dst[n]) {
		n++
	}
	if n > 0 {
		q.head.Store(h + uint64(n))
	}
	return n
}

// Len returns the number of claimed, not yet popped positions (including
// ones still being written). It is only a snapshot, meant for metrics and
// load-based decisions, which is why it is safe from any goroutine.
func (q *MPSC[T]) Len() int {
	h := q.head.Load() // head first: see occupancy
	return occupancy(h, q.tail.Load(), uint64(len(q.slots)))
}

// Cap returns the capacity after rounding, so callers can size batches and
// watermarks against the real limit rather than the requested one.
func (q *MPSC[T]) Cap() int {
	return len(q.slots)
}

// claim reserves up to want consecutive positions with one CAS on the tail
// and returns the first one and how many were reserved (0: full).
func (q *MPSC[T]) claim(want uint64) (pos, n uint64) {
	for {
		pos = q.tail.Load()
		n, stale := q.room(pos, want)
		if stale {
			continue
		}
		if n == 0 || q.tail.CompareAndSwap(pos, pos+n) {
			return pos, n
		}
	}
}

// room returns how many of want positions starting at pos are free, or
// stale when another producer has already claimed past pos. Because the
// consumer frees slots in order, the last wanted slot being free implies
// all before it are, so the common case reads one sequence number. Only a
// batch that does not fit reads the consumer's head to find how much does;
// head is stored after the slots it frees, so it never overstates the room.
func (q *MPSC[T]) room(pos, want uint64) (n uint64, stale bool) {
	size := uint64(len(q.slots))
	want = min(want, size)
	last := pos + want - 1
	switch d := int64(q.slots[last&q.mask].seq.Load() - last); {
	case d == 0:
		return want, false
	case d > 0:
		return 0, true
	case want == 1:
		return 0, false // the one wanted slot is still full
	}
	free := int64(q.head.Load() + size - pos)
	return uint64(max(0, min(free, int64(want)))), false
}

// publish writes v into the claimed position pos and makes it visible to
// the consumer with one atomic store of the slot's sequence number.
func (q *MPSC[T]) publish(pos uint64, v T) {
	s := &q.slots[pos&q.mask]
	s.val = v
	s.seq.Store(pos + 1)
}

// take moves the value at position pos into out if it is published, zeroes
// the slot and frees it for the producers' next lap. Consumer only.
func (q *MPSC[T]) take(pos uint64, out *T) bool {
	s := &q.slots[pos&q.mask]
	if s.seq.Load() != pos+1 {
		return false
	}
	*out = s.val
	s.val = *new(T)
	s.seq.Store(pos + uint64(len(q.slots)))
	return true
}

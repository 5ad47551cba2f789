// Package ackstate is the message-mode bookkeeping of one consumer-group
// partition: which delivered offsets are acked, which are in flight and
// until when, and which wait for a redelivery or the dead-letter topic.
// Like etcd raft's tracker it is a pure model: no clock (the caller passes
// the time in nanoseconds), no locks (the caller holds its partition's),
// no I/O. It imports the standard library only.
package ackstate

import (
	"container/heap"
	"math/bits"
	"slices"
)

// State is the message-mode bookkeeping of one partition of a group:
// which delivered offsets are acked, which are in flight and until when,
// and which wait for a redelivery. It belongs to the group's partition,
// not to a member, so a partition that moves keeps it: the new owner gets
// the old owner's unacked messages again. The caller holds the partition's
// lock.
//
// The window [floor, next) is what has been delivered and not yet passed
// by the ack floor: a bitset records the acked offsets in it, so an ack
// costs a bit flip however the acks arrive. In-flight deliveries are a
// queue ordered by deadline (every delivery gets now+ack-wait, so the
// queue is sorted by construction); a message whose deadline passed, or
// that was nacked, moves to a heap of retries ordered by when it is due.
// Per-message details (delivery count, last nack reason) exist only for
// messages delivered more than once, which keeps the common path at a bit
// per message.
type State struct {
	floor   int64 // every offset below is acked (or dead-lettered)
	next    int64 // the next offset to deliver for the first time
	base    int64 // offset of bit 0 of words; a multiple of 64
	words   []uint64
	unacked int // offsets in [floor, next) not acked

	inflight []delivery // oldest first; deadlines never decrease
	retries  retryHeap
	info     map[int64]*msgInfo
}

// delivery is one Deliver or Redeliver frame awaiting its acks.
type delivery struct {
	from, to int64   // a first delivery of [from, to), when offsets is nil
	offsets  []int64 // a redelivery of these offsets
	attempt  uint32
	deadline int64 // clock ns
}

// msgInfo is kept for messages delivered more than once or nacked.
type msgInfo struct {
	deliveries uint32 // times delivered so far
	reason     string // the last nack's reason
	scheduled  bool   // waiting in retries
}

type retry struct {
	due    int64
	offset int64
}

type retryHeap []retry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retry)) }
func (h *retryHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}

// New returns the state of a partition whose messages from start on are
// not yet delivered.
func New(start int64) *State {
	return &State{floor: start, next: start, base: start &^ 63, info: map[int64]*msgInfo{}}
}

// Window is how many offsets are delivered and not yet below the floor.
func (a *State) Window() int64 { return a.next - a.floor }

// Floor is the ack floor: every offset below it is acked (or
// dead-lettered). In message mode it is the group's committed offset.
func (a *State) Floor() int64 { return a.floor }

// Next is the next offset to deliver for the first time.
func (a *State) Next() int64 { return a.next }

// Unacked is how many offsets in [Floor, Next) are not acked.
func (a *State) Unacked() int { return a.unacked }

// Details returns how many times o was delivered and the reason of its
// last nack: 1 and "" for a message delivered once and never nacked, the
// only ones the state keeps no details of.
func (a *State) Details(o int64) (deliveries uint32, reason string) {
	if in := a.info[o]; in != nil {
		return in.deliveries, in.reason
	}
	return 1, ""
}

func (a *State) bit(o int64) bool {
	i := o - a.base
	return a.words[i>>6]&(1<<(uint64(i)&63)) != 0
}

// Acked reports whether o needs no further delivery.
func (a *State) Acked(o int64) bool {
	if o < a.floor {
		return true
	}
	if o >= a.next {
		return false
	}
	return a.bit(o)
}

// Delivered records the first delivery of [from, to), from == next.
func (a *State) Delivered(from, to int64, deadline int64) {
	if to <= from {
		return
	}
	a.next = to
	for need := int((to - a.base + 63) >> 6); len(a.words) < need; {
		a.words = append(a.words, 0)
	}
	a.unacked += int(to - from)
	a.inflight = append(a.inflight, delivery{from: from, to: to, attempt: 1, deadline: deadline})
}

// Redelivered records a redelivery of offsets (their counts were raised
// when they came due).
func (a *State) Redelivered(offsets []int64, attempt uint32, deadline int64) {
	a.inflight = append(a.inflight, delivery{offsets: offsets, attempt: attempt, deadline: deadline})
}

// Ack marks [from, to) acked and returns how many offsets that newly
// acked. Offsets outside the window are ignored: below the floor they are
// acked already, and at or past next they were never delivered.
func (a *State) Ack(from, to int64) int {
	from, to = max(from, a.floor), min(to, a.next)
	n := 0
	for o := from; o < to; o++ {
		i := o - a.base
		w, m := &a.words[i>>6], uint64(1)<<(uint64(i)&63)
		if *w&m == 0 {
			*w |= m
			n++
			if len(a.info) > 0 {
				delete(a.info, o)
			}
		}
	}
	if n > 0 {
		a.unacked -= n
		a.advance()
	}
	return n
}

// advance moves the floor past acked offsets and drops the words below it.
func (a *State) advance() {
	for a.floor < a.next {
		i := a.floor - a.base
		w := a.words[i>>6] >> (uint64(i) & 63) // bits from floor up
		if w == 0 {
			break
		}
		run := int64(bits.TrailingZeros64(^w)) // acked offsets from floor in this word
		if run == 0 {
			break
		}
		a.floor = min(a.floor+run, a.next)
	}
	if k := int((a.floor - a.base) >> 6); k > 0 {
		a.words = a.words[k:]
		a.base += int64(k) << 6
		if cap(a.words) > 4*len(a.words)+64 {
			a.words = slices.Clone(a.words)
		}
	}
}

func (a *State) infoOf(o int64) *msgInfo {
	in := a.info[o]
	if in == nil {
		in = &msgInfo{deliveries: 1}
		a.info[o] = in
	}
	return in
}

// schedule queues o for redelivery at due, unless it is queued already.
func (a *State) schedule(o int64, due int64) {
	in := a.infoOf(o)
	if in.scheduled {
		return
	}
	in.scheduled = true
	heap.Push(&a.retries, retry{due: due, offset: o})
}

// Nack queues a delivered, unacked o for redelivery after delay (when
// positive) or the backoff for its delivery count. It reports whether o
// was in flight.
func (a *State) Nack(o int64, delay int64, reason string, now int64, backoff []int64) bool {
	if o < a.floor || o >= a.next || a.bit(o) {
		return false
	}
	in := a.infoOf(o)
	in.reason = reason
	if delay <= 0 {
		delay = backoffFor(backoff, in.deliveries)
	}
	a.schedule(o, now+delay)
	return true
}

// backoffFor is the delay before the redelivery that follows delivery
// number n: the n-th entry of the list, its last entry past its end, zero
// without a list.
func backoffFor(backoff []int64, n uint32) int64 {
	if len(backoff) == 0 {
		return 0
	}
	return backoff[min(int(n)-1, len(backoff)-1)]
}

// Expire moves every delivery whose deadline passed by now to the retries,
// each message after its backoff.
func (a *State) Expire(now int64, backoff []int64) {
	for len(a.inflight) > 0 && a.inflight[0].deadline <= now {
		d := a.inflight[0]
		a.inflight[0] = delivery{}
		a.inflight = a.inflight[1:]
		each := func(o int64) {
			if a.Acked(o) {
				return
			}
			in := a.info[o]
			cur := uint32(1)
			if in != nil {
				if in.scheduled {
					return
				}
				cur = in.deliveries
			}
			if cur != d.attempt {
				return // delivered again since; that delivery has its own deadline
			}
			a.schedule(o, now+backoffFor(backoff, cur))
		}
		if d.offsets == nil {
			for o := max(d.from, a.floor); o < d.to; o++ {
				each(o)
			}
		} else {
			for _, o := range d.offsets {
				each(o)
			}
		}
	}
	if len(a.inflight) == 0 {
		a.inflight = a.inflight[:0:0]
	}
}

// Due pops the retries due by now. Those delivered maxDeliveries times
// already go to dead (for the dead-letter topic); the others get their
// delivery count raised and go to redo, grouped by their new count.
// Both lists come out sorted by offset.
func (a *State) Due(now int64, maxDeliveries uint32, dead []int64, redo map[uint32][]int64) []int64 {
	for len(a.retries) > 0 && a.retries[0].due <= now {
		r := heap.Pop(&a.retries).(retry)
		in := a.info[r.offset]
		if in == nil || !in.scheduled || a.Acked(r.offset) {
			continue
		}
		in.scheduled = false
		if in.deliveries >= maxDeliveries {
			in.scheduled = true // until it is written to the dead-letter topic
			dead = append(dead, r.offset)
			continue
		}
		in.deliveries++
		redo[in.deliveries] = append(redo[in.deliveries], r.offset)
	}
	slices.Sort(dead)
	for _, l := range redo {
		slices.Sort(l)
	}
	return dead
}

// DeadLetterFailed puts offsets whose dead-lettering failed back in the
// retries, to try again at due.
func (a *State) DeadLetterFailed(offsets []int64, due int64) {
	for _, o := range offsets {
		if in := a.info[o]; in != nil && !a.Acked(o) {
			heap.Push(&a.retries, retry{due: due, offset: o})
		}
	}
}

// NextWake is when the next deadline or retry falls due, 0 for none.
func (a *State) NextWake() int64 {
	var t int64
	if len(a.inflight) > 0 {
		t = a.inflight[0].deadline
	}
	if len(a.retries) > 0 && (t == 0 || a.retries[0].due < t) {
		t = a.retries[0].due
	}
	return t
}

// Takeover prepares the state for a new owner: the old owner's deliveries
// no longer count, so every unacked message not already waiting for a retry
// is due at once.
func (a *State) Takeover(now int64) {
	a.inflight = nil
	for o := a.floor; o < a.next; o++ {
		if !a.bit(o) {
			if in := a.info[o]; in == nil || !in.scheduled {
				a.schedule(o, now)
			}
		}
	}
}

// SkipTo moves the window to start at o when retention removed the
// offsets below it: they can no longer be delivered, so they count as
// acked. It returns how many unacked messages that dropped.
func (a *State) SkipTo(o int64) int {
	if o <= a.floor {
		return 0
	}
	if o >= a.next {
		lost := a.unacked
		*a = State{floor: o, next: o, base: o &^ 63, info: map[int64]*msgInfo{}, retries: a.retries[:0]}
		return lost
	}
	before := a.unacked
	a.Ack(a.floor, o)
	return before - a.unacked
}

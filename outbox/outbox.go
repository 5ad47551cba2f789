package outbox

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
)

// Outbox tuning; not part of any format.
const (
	// copyThreshold: frames smaller than this are copied into chunk buffers
	// instead of referenced, so a burst of small frames becomes a few large
	// writes (and a few large nodes in the network layer's backlog) rather
	// than thousands of tiny iovecs.
	copyThreshold = 4 << 10
	// chunkSize is the size of the buffers small frames are coalesced into.
	chunkSize = 64 << 10
	// MaxIOV is the most slices one writev takes on Linux (UIO_MAXIOV);
	// the writer must split larger batches.
	MaxIOV = 1024
)

// Flusher is what an Outbox asks to get its queued frames written: the
// connection schedules a write pass on its own network thread.
type Flusher interface {
	// ScheduleFlush gets the outbox written soon on the owner's goroutine.
	// Safe from any goroutine.
	ScheduleFlush()
	// Owner identifies the goroutine (event loop) that writes this
	// connection, so a shard running inline on it can write at once.
	Owner() any
	// FlushNow writes the outbox. Only on the owner's goroutine.
	FlushNow()
}

// DirectFlusher is a Flusher whose connection may also be written by a
// goroutine other than its owner while the owner has nothing of its own in
// flight. A shard running inline on one event loop uses it to write a
// delivery to a subscriber on another loop at once, which saves waking that
// loop's thread: on an idle machine the wake-up is most of a delivery's
// latency.
type DirectFlusher interface {
	Flusher
	// FlushDirect writes the outbox from the calling goroutine if the
	// connection can take it now (see Outbox.TakeDirect), and reports
	// whether it did; if not, nothing was taken and the caller kicks the
	// owner as usual. Safe from any goroutine.
	FlushDirect() bool
}

// Outbox is a connection's queue of outgoing frames. Shards (deliveries,
// acks) and the connection's own event loop (responses) append to it; the
// event loop drains it and writes everything it holds in one writev.
//
// Why a queue of its own rather than writing to the socket: a shard must
// never block on a socket or touch a network thread's state, and a
// connection that many shards feed should see one coalesced write per pass,
// not one write per frame.
//
// The queue is bounded by limit bytes, counting both what is queued here and
// what the network layer still holds unsent (reported through Done). Past
// a quarter of the limit the outbox is under pressure: the shards then hold back
// publish acks (see package shard), which slows producers to the pace of their
// subscribers. A connection past its limit, or under pressure for longer than
// the shard's slow-consumer timeout, is a slow consumer: the outbox drops
// everything, refuses further frames, and asks the flusher to close the
// connection. An outbox made by a Budget also counts against the bound of
// all connections together, and may be cut for it.
//
// An outbox whose network layer has held a backlog without taking any of
// it for a few tens of milliseconds is quiet and parked (see Deliver): its
// deliveries are queued by reference (subscribers that stopped reading
// share the publishers' buffers instead of a copy each), and while a shard
// watches it (see Watch) its writer takes nothing from it, only
// reports the backlog, until the network layer takes a byte. Copying what
// a stopped reader will never read into the network layer's buffers cost
// the others more than anything else. Stalled for longer (a second), it is
// stuck: its reader has stopped, and it no longer slows producers.
type Outbox struct {
	mu        sync.Mutex
	cur       Pending    // being filled; guarded by mu
	spare     Pending    // the loop's previous batch, reused; guarded by mu
	queued    int        // bytes in cur
	inflight  int        // bytes taken and not yet reported Done
	scheduled bool       // a flush is queued on the loop
	dead      bool       // closed or slow: frames are dropped
	closed    bool       // Close ran
	why       SlowReason // why it turned slow; NotSlow if it did not
	// stalledSince is when the network layer last held a backlog and took
	// none of it since, as of doneAt (clock ns); 0 while it holds nothing.
	stalledSince int64
	parked       bool // a delivery found it quiet; cleared by progress
	withheld     bool // the last Take left frames queued because it was parked
	watchers     int  // shards watching it (see Watch)
	// doneAt is when the writer last reported the backlog (Done): a stall
	// counts only as long as the writer saw it. A writer that could not
	// run (its loop busy, the machine loaded) saw nothing, and its reader
	// must not be taken for stuck on that: on a loaded machine the gap
	// between two reports reached 340 ms.
	doneAt int64

	limit     int
	backlog   atomic.Int64 // bytes the network layer holds unsent
	overSince atomic.Int64 // when pressure began (clock ns), 0 when none
	flusher   Flusher

	budget  *Budget // nil: no broker-wide bound
	counted int64   // what this outbox adds to budget; guarded by mu

	// passMark[s] is the pass number of shard s that last touched this
	// outbox, and watched[s] whether shard s watches it (see Mark and
	// Watch); written only by shard s, so no synchronisation is needed.
	passMark []uint64
	watched  []bool

	// detachable and detached: see SetDetachable and Deliver; guarded
	// by mu.
	detachable map[any]bool
	detached   []Detachment

	// Inflight, when set, counts the bytes of this connection's publishes
	// until the shard answers them (see Inflight). Set before the first
	// publish, never changed.
	Inflight *Inflight
}

// NewOutbox returns an outbox bounded by limit bytes that asks f to flush.
// shards is the number of shards that may write to it.
func NewOutbox(limit, shards int, f Flusher) *Outbox {
	return &Outbox{limit: limit, flusher: f, passMark: make([]uint64, shards), watched: make([]bool, shards)}
}

// SendStatus is what SendRef and Deliver report: Sent, Refused, or flags.
type SendStatus uint8

const (
	// Sent means the frame is queued.
	Sent SendStatus = 0
	// SentUnderPressure means queued, but the outbox is past a quarter of
	// its limit (and, from Deliver, not stuck): acks wait for it.
	SentUnderPressure SendStatus = 1 << iota
	// SentQuiet means queued, but the network layer has taken nothing for
	// a while (Deliver only): kicking its writer would only copy the frame
	// into a backlog that does not move, so the shard's watch writes it.
	SentQuiet
	// Refused means the outbox is closed or has just become a slow consumer.
	Refused
	// Detached means the frame was not queued: the outbox is stuck, and
	// its subscription to the partition is detached (see Deliver).
	Detached
)

// Detachment is a live subscription a stuck outbox was detached from: its
// connection resumes the partition from From with a replay. P is the
// partition as the shard named it to Deliver (a *shard.Partition).
type Detachment struct {
	P    any
	From int64
}

// SetDetachable says whether the outbox's live subscription to p may be
// detached when the outbox is stuck: yes for a subscription its
// connection can resume with a replay, no (the default) otherwise. Turning
// it off forgets p's detachments.
func (o *Outbox) SetDetachable(p any, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ok {
		if o.detachable == nil {
			o.detachable = map[any]bool{}
		}
		o.detachable[p] = true
		return
	}
	delete(o.detachable, p)
	o.detached = slices.DeleteFunc(o.detached, func(d Detachment) bool { return d.P == p })
}

// Detach detaches the outbox's live subscription to p at from whether or
// not it is stuck: its connection resumes p from from with a replay, as for
// a stuck one. A replicated partition does it when batches became visible
// that it could not fan out (committed under a previous leader), and when
// its node stops leading it. The writer is scheduled even with nothing
// queued, since it is what resumes detachments (TakeResumable).
func (o *Outbox) Detach(p any, from int64) {
	o.mu.Lock()
	if o.dead {
		o.mu.Unlock()
		return
	}
	o.detached = append(o.detached, Detachment{P: p, From: from})
	o.mu.Unlock()
	o.Refresh()
}

// TakeResumable hands the writer the outbox's detachments once its reader
// has taken bytes since it was detached (it is no longer parked), for its
// connection to resume them; nil otherwise.
func (o *Outbox) TakeResumable() []Detachment {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.detached) == 0 || o.parked || o.dead {
		return nil
	}
	d := o.detached
	o.detached = nil
	return d
}

// Stall holds the thresholds (nanoseconds) by which Deliver judges an
// outbox whose network layer holds a backlog and takes none of it.
type Stall struct {
	Quiet int64 // from then on, SentQuiet, and parked
	Stuck int64 // from then on, stuck: never SentUnderPressure
}

// SlowReason says why an outbox became a slow consumer.
type SlowReason uint8

// Slow reasons.
const (
	// NotSlow: the outbox is not a slow consumer.
	NotSlow SlowReason = iota
	// SlowLimit: a frame would have taken it past its own limit.
	SlowLimit
	// SlowTimeout: it stayed under pressure without progress for the
	// slow-consumer timeout.
	SlowTimeout
	// SlowBudget: the outbound bytes of all connections passed their
	// bound, and it was among the furthest behind.
	SlowBudget
	// NumSlowReasons sizes arrays indexed by reason.
	NumSlowReasons
)

// String names the reason as a metric label value.
func (r SlowReason) String() string {
	switch r {
	case SlowLimit:
		return "connection_limit"
	case SlowTimeout:
		return "timeout"
	case SlowBudget:
		return "broker_limit"
	}
	return "none"
}

// SendRef queues frame, which lies in b, without copying it when it is
// large; the outbox retains b until the frame is written. now is the
// caller's clock (nanoseconds) used to time pressure.
func (o *Outbox) SendRef(b *storage.Buf, frame []byte, now int64) SendStatus {
	return o.Deliver(b, frame, now, Stall{}, nil, 0)
}

// Deliver is SendRef for a shard's fan-out, which also judges how long the
// network layer has held a backlog without taking a byte of it, as far as
// the writer saw. A reader that drains its socket, however slowly, takes
// some bytes every time its writer asks (the shards ask every few
// milliseconds while it is behind), so only one that has stopped reading
// stays stalled: past th.Quiet it is parked and written on the shard's
// watch ticks rather than after every delivery, and past th.stuck it is
// stuck: it costs its producers nothing, and keeps receiving within its
// limit until it reads again, passes the limit, or times out.
//
// A stuck outbox whose subscription to p may be detached (SetDetachable)
// is not given the frame at all: it is Detached from p at from, the
// frame's first offset, and its connection resumes from there with a
// replay once its reader takes bytes again (TakeResumable). From then on
// it costs p's publishes nothing, where queueing every frame for it cost
// each publish a lock, a reference and a cache miss per stuck subscriber.
func (o *Outbox) Deliver(b *storage.Buf, frame []byte, now int64, th Stall, p any, from int64) SendStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead {
		return Refused
	}
	stalled := o.stalled()
	quiet := th.Quiet > 0 && stalled >= th.Quiet
	stuck := th.Stuck > 0 && stalled >= th.Stuck
	o.parked = o.parked || quiet
	if stuck && p != nil && o.detachable[p] {
		o.detached = append(o.detached, Detachment{P: p, From: from})
		return Detached
	}
	if !o.admit(len(frame)) {
		return Refused
	}
	if o.parked {
		o.cur.park()
	}
	if len(frame) < copyThreshold && !o.parked {
		o.cur.appendCopy(frame)
	} else {
		b.Retain()
		o.cur.appendRef(b, frame)
	}
	o.settle()
	st := Sent
	if quiet {
		st |= SentQuiet
	}
	if o.queued+int(o.backlog.Load()) > o.soft() {
		o.overSince.CompareAndSwap(0, now)
		if !stuck {
			st |= SentUnderPressure
		}
	}
	return st
}

// stalled reports for how long the writer has seen the network layer hold
// a backlog without taking any of it, or -1 if it holds none. Called with
// mu held.
func (o *Outbox) stalled() int64 {
	if o.dead || o.backlog.Load() == 0 || o.stalledSince == 0 {
		return -1
	}
	return o.doneAt - o.stalledSince
}

// soft is where pressure begins: a quarter of the limit, which leaves room
// for a few producers' unacknowledged windows (8 MiB each by default) to
// land before the hard limit while their acks are held.
func (o *Outbox) soft() int { return o.limit / 4 }

// Pressure reports whether the outbox is past its soft limit, and since
// when (Clock). A period of pressure that began without a delivery
// crossing the limit (the backlog grew as the socket stalled) starts now.
func (o *Outbox) Pressure() (bool, int64) {
	o.mu.Lock()
	over := !o.dead && o.queued+int(o.backlog.Load()) > o.soft()
	o.mu.Unlock()
	if !over {
		return false, 0
	}
	return true, o.pressureSince(Clock())
}

func (o *Outbox) pressureSince(now int64) int64 {
	since := o.overSince.Load()
	if since == 0 {
		since = now
		if !o.overSince.CompareAndSwap(0, since) {
			since = o.overSince.Load()
		}
	}
	return since
}

// Flow is what a shard needs to know of a subscriber's outbox.
type Flow struct {
	Over     bool  // past the soft limit
	Quiet    bool  // stalled past th.Quiet (see Deliver)
	Stuck    bool  // stalled past th.Stuck
	Queued   bool  // holds frames its writer has not taken
	Detached bool  // has detachments to resume
	Stalled  int64 // how long its writer saw no progress; -1 while it holds no backlog
	Since    int64 // when pressure began or the last progress under it, if over
}

// Flow reports o's state, judged by th; a period of pressure that began
// without a delivery crossing the limit starts at now.
func (o *Outbox) Flow(th Stall, now int64) Flow {
	o.mu.Lock()
	stalled := o.stalled()
	f := Flow{Over: !o.dead && o.queued+int(o.backlog.Load()) > o.soft(), Quiet: stalled >= th.Quiet,
		Stuck: stalled >= th.Stuck, Queued: o.queued > 0, Detached: len(o.detached) > 0, Stalled: stalled}
	o.mu.Unlock()
	if f.Over {
		f.Since = o.pressureSince(now)
	}
	return f
}

// MarkSlow turns the outbox into a slow consumer that stayed behind too
// long: it drops what it holds and its writer closes the connection at the
// next flush (see Kick).
func (o *Outbox) MarkSlow() {
	o.mu.Lock()
	o.kill(SlowTimeout)
	o.mu.Unlock()
}

// cut makes a live outbox a slow consumer for the broker-wide bound and
// kicks its writer, which closes the connection. It reports whether it did.
func (o *Outbox) cut() bool {
	o.mu.Lock()
	ok := !o.dead
	o.kill(SlowBudget)
	o.mu.Unlock()
	if ok {
		o.Kick()
	}
	return ok
}

// kill makes the outbox a slow consumer: what it queues is dropped, and
// what the network layer still holds for it counts as on its way out.
// Called with mu held.
func (o *Outbox) kill(why SlowReason) {
	if o.dead {
		return
	}
	o.dead, o.why = true, why
	o.cur.releaseSoon()
	o.queued = 0
	o.budget.doom(o.counted)
	o.settle()
}

// settle brings the budget's total up to date with what the outbox holds:
// queued, being written, and unsent in the network layer. Called with mu
// held.
func (o *Outbox) settle() {
	if o.budget == nil {
		return
	}
	n := int64(o.queued+o.inflight) + o.backlog.Load()
	if o.closed {
		n = 0
	}
	if d := n - o.counted; d != 0 {
		o.counted = n
		o.budget.add(d, o.dead)
	}
}

// SendCopy queues a copy of frame (a small control frame such as an ack).
func (o *Outbox) SendCopy(frame []byte) bool {
	o.mu.Lock()
	ok := o.admit(len(frame))
	if ok {
		o.cur.appendCopy(frame)
		o.settle()
	}
	o.mu.Unlock()
	return ok
}

// admit accounts for n more bytes, or marks the outbox slow when they would
// pass the limit. Called with mu held.
func (o *Outbox) admit(n int) bool {
	if o.dead {
		return false
	}
	if o.queued+n+int(o.backlog.Load()) > o.limit {
		o.kill(SlowLimit)
		return false
	}
	o.queued += n
	return true
}

// Kick asks the flusher to write what is queued, unless a flush is already
// scheduled. Shards call it once per touched outbox at the end of a pass.
func (o *Outbox) Kick() {
	o.mu.Lock()
	need := !o.scheduled && (o.queued > 0 || o.why != NotSlow)
	o.scheduled = o.scheduled || need
	o.mu.Unlock()
	if need {
		o.flusher.ScheduleFlush()
	}
}

// Refresh asks the writer to run even with nothing queued, so that it
// reports the network layer's current backlog through Done. The network
// layer drains its backlog on its own as the socket becomes writable, and
// a shard deciding whether a subscriber is still behind needs that figure
// fresh rather than as of the last write.
func (o *Outbox) Refresh() {
	o.mu.Lock()
	need := !o.scheduled && !o.dead
	o.scheduled = o.scheduled || need
	o.mu.Unlock()
	if need {
		o.flusher.ScheduleFlush()
	}
}

// Take hands the queued frames to the writer. It returns the frames and
// whether the outbox turned slow (the writer then closes the connection).
// The writer must call Done with the result after writing it and before the
// next Take.
//
// A parked outbox that a shard watches hands over nothing: the network
// layer is not taking what it already holds. Done then reports the
// backlog, and when that shows progress, gets the frames written.
func (o *Outbox) Take() (p *Pending, slow bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.scheduled = false
	if o.holdsBack() {
		o.withheld = true
		o.spare.size = 0
		return &o.spare, false
	}
	o.swap()
	return &o.spare, o.why != NotSlow
}

// holdsBack reports whether the writer should leave the queued frames:
// the outbox is parked, and some shard watches it, so its watch ticks get
// the frames written once the reader takes bytes again. Without a watcher
// nothing would ask again, so frames are never held back then. Called with
// mu held.
func (o *Outbox) holdsBack() bool {
	return o.parked && o.watchers > 0 && !o.dead
}

// Watch records that shard started watching o (see the shard's flow
// control) and reports whether it was new. Only shard itself calls it.
func (o *Outbox) Watch(shard int) bool {
	if o.watched[shard] {
		return false
	}
	o.watched[shard] = true
	o.mu.Lock()
	o.watchers++
	o.mu.Unlock()
	return true
}

// Unwatch records that shard stopped watching o. Only shard itself calls
// it.
func (o *Outbox) Unwatch(shard int) {
	if !o.watched[shard] {
		return
	}
	o.watched[shard] = false
	o.mu.Lock()
	o.watchers--
	o.mu.Unlock()
}

// Mark records that shard touched o in its pass number pass, and reports
// whether this is the first time in that pass: a shard's driver flushes
// each touched outbox once per pass. Only shard itself (or its driver,
// holding its run token) calls it.
func (o *Outbox) Mark(shard int, pass uint64) bool {
	if o.passMark[shard] == pass {
		return false
	}
	o.passMark[shard] = pass
	return true
}

// Flusher returns what writes the outbox.
func (o *Outbox) Flusher() Flusher { return o.flusher }

// swap moves the queued frames to spare for the writer. Called with mu held.
func (o *Outbox) swap() {
	o.cur.join()
	o.cur, o.spare = o.spare, o.cur
	o.spare.size = o.queued
	o.inflight += o.queued
	o.queued = 0
	o.cur.reset()
}

// TakeDirect is Take for a writer that is not the connection's owner: it
// takes the queued frames only when there are some, no more than max bytes
// (a larger batch is left to the owner's thread, so that heavy fan-out is
// written in parallel rather than all by the publishing thread), and the
// outbox is not dead. Otherwise it returns nil and takes nothing. The caller
// must hold the connection's write lock and call Done as after Take.
func (o *Outbox) TakeDirect(max int) *Pending {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead || o.queued == 0 || o.queued > max || o.holdsBack() {
		return nil
	}
	o.scheduled = false
	o.swap()
	return &o.spare
}

// Done releases what a written Pending held and records the network layer's
// remaining backlog, which counts against the limit. Any bytes the socket
// took count as progress: they restart the slow-consumer clock, so a
// subscriber that keeps reading, however much slower than its producers
// (flow control then holds it near the soft limit), is never mistaken for
// a stuck one. Pressure ends when the outbox drains below the soft limit.
func (o *Outbox) Done(p *Pending, backlog int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	p.release()
	if o.closed {
		return
	}
	before := o.backlog.Swap(int64(backlog))
	accepted := before + int64(p.size) - int64(backlog)
	o.inflight = 0
	if backlog == 0 { // the socket took everything: no clock read on this common path
		o.stalledSince, o.parked = 0, false
	} else {
		o.doneAt = Clock()
		if accepted > 0 || o.stalledSince == 0 {
			o.stalledSince, o.parked = o.doneAt, false
		}
	}
	switch {
	case o.queued+backlog <= o.soft():
		o.overSince.Store(0)
	case accepted > 0 && o.overSince.Load() != 0:
		o.overSince.Store(Clock())
	}
	o.settle()
	if o.withheld && !o.parked {
		o.withheld = false
		o.rescheduleLocked()
	}
}

// rescheduleLocked gets frames a parked Take left behind written, now that
// the reader takes bytes again. Called with mu held; the flusher's
// ScheduleFlush only queues a task, so calling it here is safe.
func (o *Outbox) rescheduleLocked() {
	if !o.scheduled && o.queued > 0 && !o.dead {
		o.scheduled = true
		o.flusher.ScheduleFlush()
	}
}

// Close drops everything queued and refuses further frames. It returns
// whether the outbox had been marked slow.
func (o *Outbox) Close() (slow bool) {
	o.mu.Lock()
	o.kill(NotSlow)
	o.closed = true
	o.cur.release()
	o.spare.release()
	o.queued, o.inflight = 0, 0
	o.settle()
	slow = o.why != NotSlow
	o.mu.Unlock()
	o.budget.forget(o)
	return slow
}

// Closed reports whether the outbox refuses frames (its connection closed
// or turned slow).
func (o *Outbox) Closed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dead
}

// SlowReason reports why the outbox turned slow, or NotSlow.
func (o *Outbox) SlowReason() SlowReason {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.why
}

// Queued reports the bytes waiting to be taken.
func (o *Outbox) Queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queued
}

// pending reports what the outbox counts against its budget.
func (o *Outbox) pending() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counted
}

// Backdate moves the start of o's stall back by d, as if its writer had
// seen the network layer take nothing for d longer: tests of flow control
// move the writer's clock rather than wait for it.
func (o *Outbox) Backdate(d time.Duration) {
	o.mu.Lock()
	o.stalledSince -= int64(d)
	o.mu.Unlock()
}

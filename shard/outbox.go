package shard

import (
	"sync"
	"sync/atomic"

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

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

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
// publish acks (see Shard), which slows producers to the pace of their
// subscribers. A connection past its limit, or under pressure for longer than
// the shard's slow-consumer timeout, is a slow consumer: the outbox drops
// everything, refuses further frames, and asks the flusher to close the
// connection.
type Outbox struct {
	mu        sync.Mutex
	cur       Pending // being filled; guarded by mu
	spare     Pending // the loop's previous batch, reused; guarded by mu
	queued    int     // bytes in cur
	scheduled bool    // a flush is queued on the loop
	dead      bool    // closed or slow: frames are dropped
	slow      bool    // dead because it passed its limit or stayed behind
	byTimeout bool    // slow because it stayed behind, not past the limit

	limit     int
	backlog   atomic.Int64 // bytes the network layer holds unsent
	overSince atomic.Int64 // when pressure began (clock ns), 0 when none
	flusher   Flusher

	// passMark[s] is the pass number of shard s that last touched this
	// outbox; written only by shard s, so no synchronisation is needed.
	passMark []uint64

	// Inflight, when set, counts the bytes of this connection's publishes
	// until the shard answers them (see Inflight). Set before the first
	// publish, never changed.
	Inflight *Inflight
}

// NewOutbox returns an outbox bounded by limit bytes that asks f to flush.
// shards is the number of shards that may write to it.
func NewOutbox(limit, shards int, f Flusher) *Outbox {
	return &Outbox{limit: limit, flusher: f, passMark: make([]uint64, shards)}
}

// Pending is a drained batch of frames: iovecs ready for writev, and what to
// give back once they are written.
type Pending struct {
	IOV    [][]byte
	size   int // bytes in IOV when taken (writev may trim the slices)
	refs   []*storage.Buf
	chunks []*[]byte
	chunk  *[]byte // the chunk small frames are being copied into
	open   int     // start of the region of chunk the last iovec covers, -1 if none
}

// SendStatus is what SendRef reports.
type SendStatus uint8

const (
	// Sent means the frame is queued.
	Sent SendStatus = iota
	// SentUnderPressure means queued, but the outbox is past a quarter of its limit.
	SentUnderPressure
	// Refused means the outbox is closed or has just become a slow consumer.
	Refused
)

// SendRef queues frame, which lies in b, without copying it when it is
// large; the outbox retains b until the frame is written. now is the
// caller's clock (nanoseconds) used to time pressure.
func (o *Outbox) SendRef(b *storage.Buf, frame []byte, now int64) SendStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.admit(len(frame)) {
		return Refused
	}
	if len(frame) < copyThreshold {
		o.cur.appendCopy(frame)
	} else {
		b.Retain()
		o.cur.appendRef(b, frame)
	}
	if o.queued+int(o.backlog.Load()) <= o.soft() {
		return Sent
	}
	o.overSince.CompareAndSwap(0, now)
	return SentUnderPressure
}

// soft is where pressure begins: a quarter of the limit, which leaves room
// for a few producers' unacknowledged windows (8 MiB each by default) to
// land before the hard limit while their acks are held.
func (o *Outbox) soft() int { return o.limit / 4 }

// Pressure reports whether the outbox is past its soft limit, and since
// when (shard clock). A period of pressure that began without a delivery
// crossing the limit (the backlog grew as the socket stalled) starts now.
func (o *Outbox) Pressure() (bool, int64) {
	o.mu.Lock()
	over := !o.dead && o.queued+int(o.backlog.Load()) > o.soft()
	o.mu.Unlock()
	if !over {
		return false, 0
	}
	since := o.overSince.Load()
	if since == 0 {
		since = clock()
		if !o.overSince.CompareAndSwap(0, since) {
			since = o.overSince.Load()
		}
	}
	return true, since
}

// MarkSlow turns the outbox into a slow consumer that stayed behind too
// long: it drops what it holds and its writer closes the connection at the
// next flush (see Kick).
func (o *Outbox) MarkSlow() {
	o.mu.Lock()
	if !o.dead {
		o.dead, o.slow, o.byTimeout = true, true, true
		o.cur.release()
		o.queued = 0
	}
	o.mu.Unlock()
}

// SendCopy queues a copy of frame (a small control frame such as an ack).
func (o *Outbox) SendCopy(frame []byte) bool {
	o.mu.Lock()
	ok := o.admit(len(frame))
	if ok {
		o.cur.appendCopy(frame)
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
		o.dead, o.slow = true, true
		o.cur.release()
		o.queued = 0
		return false
	}
	o.queued += n
	return true
}

// Kick asks the flusher to write what is queued, unless a flush is already
// scheduled. Shards call it once per touched outbox at the end of a pass.
func (o *Outbox) Kick() {
	o.mu.Lock()
	need := !o.scheduled && (o.queued > 0 || o.slow)
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
func (o *Outbox) Take() (p *Pending, slow bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.scheduled = false
	o.cur, o.spare = o.spare, o.cur
	o.spare.size = o.queued
	o.queued = 0
	o.cur.reset()
	return &o.spare, o.slow
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
	if o.dead || o.queued == 0 || o.queued > max {
		return nil
	}
	o.scheduled = false
	o.cur, o.spare = o.spare, o.cur
	o.spare.size = o.queued
	o.queued = 0
	o.cur.reset()
	return &o.spare
}

// Done releases what a written Pending held and records the network layer's
// remaining backlog, which counts against the limit. Any bytes the socket
// took count as progress: they restart the slow-consumer clock, so a
// subscriber that keeps reading, however much slower than its producers
// (flow control then holds it near the soft limit), is never mistaken for
// a stuck one. Pressure ends when the outbox drains below the soft limit.
func (o *Outbox) Done(p *Pending, backlog int) {
	before := o.backlog.Swap(int64(backlog))
	accepted := before + int64(p.size) - int64(backlog)
	o.mu.Lock()
	p.release()
	switch {
	case o.queued+backlog <= o.soft():
		o.overSince.Store(0)
	case accepted > 0 && o.overSince.Load() != 0:
		o.overSince.Store(clock())
	}
	o.mu.Unlock()
}

// Close drops everything queued and refuses further frames. It returns
// whether the outbox had been marked slow.
func (o *Outbox) Close() (slow bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dead = true
	o.cur.release()
	o.spare.release()
	o.queued = 0
	return o.slow
}

// Closed reports whether the outbox refuses frames (its connection closed
// or turned slow).
func (o *Outbox) Closed() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dead
}

// SlowByTimeout reports whether the outbox turned slow by staying behind
// (MarkSlow) rather than by passing its limit.
func (o *Outbox) SlowByTimeout() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byTimeout
}

// Queued reports the bytes waiting to be taken.
func (o *Outbox) Queued() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queued
}

// Bytes reports the total size of the iovecs.
func (p *Pending) Bytes() int {
	n := 0
	for _, b := range p.IOV {
		n += len(b)
	}
	return n
}

func (p *Pending) reset() {
	p.IOV = p.IOV[:0]
	p.open = -1
}

func (p *Pending) appendRef(b *storage.Buf, frame []byte) {
	p.IOV = append(p.IOV, frame)
	p.refs = append(p.refs, b)
	p.open = -1
}

func (p *Pending) appendCopy(frame []byte) {
	if p.chunk == nil || len(*p.chunk)+len(frame) > cap(*p.chunk) {
		p.newChunk(len(frame))
	}
	c := *p.chunk
	start := len(c)
	c = append(c, frame...)
	*p.chunk = c
	if p.open >= 0 && len(p.IOV) > 0 {
		p.IOV[len(p.IOV)-1] = c[p.open:len(c):len(c)]
		return
	}
	p.open = start
	p.IOV = append(p.IOV, c[start:len(c):len(c)])
}

// newChunk starts a chunk with room for at least n bytes. The previous chunk
// stays alive in p.chunks until the iovecs pointing into it are written.
func (p *Pending) newChunk(n int) {
	var c *[]byte
	if n <= chunkSize {
		c = chunkPool.Get().(*[]byte)
	} else {
		b := make([]byte, 0, n)
		c = &b
	}
	*c = (*c)[:0]
	p.chunks = append(p.chunks, c)
	p.chunk = c
	p.open = -1
}

func (p *Pending) release() {
	for i, b := range p.refs {
		b.Release()
		p.refs[i] = nil
	}
	p.refs = p.refs[:0]
	for i, c := range p.chunks {
		if cap(*c) == chunkSize {
			chunkPool.Put(c)
		}
		p.chunks[i] = nil
	}
	p.chunks = p.chunks[:0]
	p.chunk = nil
	clear(p.IOV)
	p.reset()
}

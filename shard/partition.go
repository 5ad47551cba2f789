package shard

import (
	"slices"
	"sync/atomic"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Partition is one partition of a topic. The engine holds pointers to route
// operations; only the owning shard's goroutine reads or writes the fields
// marked "shard-owned". The atomic fields are published for readers anywhere.
type Partition struct {
	Topic string
	ID    int32
	Shard *Shard

	// shard-owned
	next    int64     // offset the next record gets
	subs    []*Outbox // push subscribers, in subscription order
	held    []heldAck // acks held back while a subscriber is under pressure
	deleted bool

	endOffset atomic.Int64
	nsubs     atomic.Int32
}

// NewPartition returns a partition owned by s, starting at offset 0.
func NewPartition(topic string, id int32, s *Shard) *Partition {
	return &Partition{Topic: topic, ID: id, Shard: s}
}

// EndOffset is the offset the next record will get.
func (p *Partition) EndOffset() int64 { return p.endOffset.Load() }

// Subscribers is the number of push subscribers.
func (p *Partition) Subscribers() int { return int(p.nsubs.Load()) }

// opKind enumerates what a shard can be asked to do.
type opKind uint8

const (
	opPublish opKind = iota + 1
	opSubscribe
	opUnsubscribe
	opDelete
)

// op is one inbox entry. It is a value (no allocation per operation); the
// batch travels as a reference to its Buf.
type op struct {
	kind     opKind
	corr     uint32
	batchOff int32 // where the batch starts in buf.B
	part     *Partition
	out      *Outbox
	buf      *storage.Buf
	join     *Join
}

// Join completes a request that spans several partitions (subscribe to every
// partition of a topic): each shard reports its part, and whichever reports
// last calls Done with the first error, on that shard's goroutine.
type Join struct {
	remaining atomic.Int32
	err       atomic.Pointer[wire.Error]
	// Done runs once, on a shard goroutine: it must only queue frames.
	Done func(err error)
}

// NewJoin returns a Join expecting n reports.
func NewJoin(n int, done func(err error)) *Join {
	j := &Join{Done: done}
	j.remaining.Store(int32(n))
	return j
}

func (j *Join) report(err *wire.Error) {
	if j == nil {
		return
	}
	if err != nil {
		j.err.CompareAndSwap(nil, err)
	}
	if j.remaining.Add(-1) == 0 {
		if e := j.err.Load(); e != nil {
			j.Done(e)
		} else {
			j.Done(nil)
		}
	}
}

// The operations below only queue work for the partition's shard. The
// caller then runs the shard (Shard.RunInline), typically once after
// queueing everything one network read produced, or wakes its goroutine
// (Shard.Wake).

// Publish hands a publish to the partition's shard. buf holds a whole
// Deliver frame (the engine rewrote the Publish header) whose batch starts
// at batchOff and has been checked; the shard takes over the caller's
// reference. The shard stamps the offsets, acks on out with corr, and fans
// the frame out to every subscriber.
func (p *Partition) Publish(out *Outbox, corr uint32, buf *storage.Buf, batchOff int) error {
	err := p.Shard.push(op{kind: opPublish, part: p, out: out, corr: corr, buf: buf, batchOff: int32(batchOff)})
	if err != nil {
		buf.Release()
	}
	return err
}

// Subscribe adds out as a push subscriber from the live tail and reports to j.
func (p *Partition) Subscribe(out *Outbox, j *Join) error {
	return p.Shard.push(op{kind: opSubscribe, part: p, out: out, join: j})
}

// Unsubscribe removes out and reports to j, which may be nil.
func (p *Partition) Unsubscribe(out *Outbox, j *Join) error {
	return p.Shard.push(op{kind: opUnsubscribe, part: p, out: out, join: j})
}

// Forget removes out without waiting, for a connection that closed: when
// the inbox is full it is skipped, and the next fan-out drops the closed
// outbox instead (a closed outbox refuses frames).
func (p *Partition) Forget(out *Outbox) {
	p.Shard.tryPush(op{kind: opUnsubscribe, part: p, out: out})
}

// Delete retires the partition: its subscribers are dropped and later
// publishes to it fail with unknown topic.
func (p *Partition) Delete() error {
	return p.Shard.push(op{kind: opDelete, part: p})
}

// handle runs one operation.
func (s *Shard) handle(o *op) {
	if invariants && o.part != nil && o.part.Shard != s {
		panic("shard: invariant: operation for a partition owned by another shard")
	}
	switch o.kind {
	case opPublish:
		s.publish(o)
	case opSubscribe:
		s.subscribe(o)
	case opUnsubscribe:
		o.part.removeSub(o.out)
		o.join.report(nil)
	case opDelete:
		p := o.part
		p.deleted = true
		p.subs = nil
		p.nsubs.Store(0)
		s.releaseAll(p)
	}
}

// fail answers an operation that cannot run with err.
func (s *Shard) fail(o *op, err *wire.Error) {
	switch o.kind {
	case opPublish:
		s.sendError(o.out, o.corr, err)
		o.buf.Release()
	case opSubscribe, opUnsubscribe:
		o.join.report(err)
	}
}

func (s *Shard) sendError(out *Outbox, corr uint32, err *wire.Error) {
	var buf [128]byte
	msg := err.Message
	if len(msg) > 100 {
		msg = msg[:100]
	}
	body := wire.AppendError(buf[wire.HeaderSize:wire.HeaderSize], err.Code, msg)
	wire.AppendHeader(buf[:0], wire.TypeError, 0, corr, len(body))
	out.SendCopy(buf[:wire.HeaderSize+len(body)])
	s.touch(out)
}

var errDeleted = &wire.Error{Code: wire.CodeUnknownTopic, Message: "topic was deleted"}

func (s *Shard) publish(o *op) {
	p := o.part
	if p.deleted {
		s.fail(o, errDeleted)
		return
	}
	batch := wire.Batch(o.buf.B[o.batchOff:])
	n := int64(batch.Count())
	if invariants && (n <= 0 || o.buf.Refs() < 1) {
		panic("shard: invariant: publish of an empty or released batch")
	}
	base := p.next
	batch.SetBaseOffset(base)
	p.next += n
	p.endOffset.Store(p.next)
	s.batches.Add(1)
	s.messages.Add(uint64(n))

	pressure := s.fanOut(p, o.buf)
	o.buf.Release()
	ack := heldAck{out: o.out, corr: o.corr, base: base, count: uint32(n), at: s.now}
	if pressure || len(p.held) > 0 {
		s.hold(p, ack)
		return
	}
	s.sendAck(p, ack)
}

// fanOut queues the same frame to every subscriber and reports whether any
// of them is under pressure. A subscriber whose outbox refuses the frame
// (closed, or just turned slow) is dropped here, so the others never wait
// for it.
func (s *Shard) fanOut(p *Partition, buf *storage.Buf) (pressure bool) {
	for i := 0; i < len(p.subs); {
		sub := p.subs[i]
		s.touch(sub) // also lets its writer see it turned slow
		switch sub.SendRef(buf, buf.B, s.now) {
		case Refused:
			p.subs = slices.Delete(p.subs, i, i+1)
			p.nsubs.Store(int32(len(p.subs)))
			continue
		case SentUnderPressure:
			pressure = true
		}
		i++
	}
	return pressure
}

func (s *Shard) subscribe(o *op) {
	p := o.part
	switch {
	case p.deleted:
		o.join.report(errDeleted)
	case slices.Contains(p.subs, o.out):
		o.join.report(wire.ErrAlreadySubscribed)
	default:
		p.subs = append(p.subs, o.out)
		p.nsubs.Store(int32(len(p.subs)))
		o.join.report(nil)
	}
}

func (p *Partition) removeSub(out *Outbox) {
	if i := slices.Index(p.subs, out); i >= 0 {
		p.subs = slices.Delete(p.subs, i, i+1)
		p.nsubs.Store(int32(len(p.subs)))
	}
}

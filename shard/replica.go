package shard

import (
	"errors"
	"sync/atomic"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Replicator replicates a partition's batches (package cluster: the
// partition's Raft group). A partition with one stores nothing itself: its
// log is written by the group on every replica, and the shard delivers and
// acks what the group commits.
type Replicator interface {
	// Propose replicates batch, whose bytes it copies before returning,
	// and calls done, on any goroutine, once: with the base offset the
	// leader stamped, after a quorum holds the batch, or with an error
	// (a *wire.Error is sent to the producer as it is).
	Propose(batch []byte, done func(base int64, err error))
}

// Committed is the report that p's Raft group committed batches up to end
// (GroupConfig.OnCommit): on a follower the partition's visible end moves
// there. A leader's subscribers get the batches it proposed as they
// commit; batches it did not propose (a previous leader's, committed under
// it) are not in its hands, so its live subscribers are detached at the
// gap and replay them from the log (outbox.Outbox.Detach).
func Committed(p *Partition, end int64, prods []ProducerBatch) Op {
	return Op{kind: opAdvance, part: p, n: end, prods: prods}
}

// ProducerBatch is a committed batch of an idempotent producer: its id,
// first sequence, record count and base offset. A replicated partition's
// shard records those its group commits, so that whichever replica leads
// next answers a producer's retry of a batch stored under the previous
// leader with the original's offsets instead of storing it again.
type ProducerBatch struct {
	ID    int64
	Seq   int32
	Count int32
	Base  int64
}

// leading is what a Replicator that can lose its partition's leadership
// also is (engine's replica, topic.Leader): Leads is nil while this node
// leads, else the NOT_LEADER error naming the leader.
type leading interface {
	Leads() error
}

// notLeading is the refusal of a publish to a replicated partition this
// node does not lead, or nil. It comes before the idempotence check: a
// node that stepped down does not know the batches its successor stored,
// so it would refuse a producer's next batch as out of order, an answer
// the producer takes as final, where NOT_LEADER sends it to the leader.
func notLeading(p *Partition) *wire.Error {
	l, ok := p.Replica.(leading)
	if !ok {
		return nil
	}
	err := l.Leads()
	if err == nil {
		return nil
	}
	var we *wire.Error
	if !errors.As(err, &we) {
		we = wire.NotLeader(0, "", "partition "+p.Topic+": "+err.Error())
	}
	return we
}

// replicate hands a publish to p's Replicator; the batch is delivered and
// acked when the answer comes back (replicated). An idempotent batch is
// remembered at once, its offset unknown, so that the producer's next
// batches follow it and a retry of it waits for it (awaitOriginal).
func (s *Shard) replicate(o *Op, p *Partition, batch wire.Batch) {
	if id := batch.ProducerID(); id != wire.NoProducer {
		p.producers.record(nil, id, producerBatch{seq: batch.ProducerSeq(), count: int32(batch.Count()), base: unknownBase})
	}
	r := &proposing{op: *o} // the done callback keeps the publish, and its buf reference
	d := s.driver
	p.Replica.Propose(batch, func(base int64, err error) {
		r.op.kind = opReplicated
		r.op.n = base
		r.op.err = err
		if r.state.CompareAndSwap(proposeRunning, proposeAnswered) {
			return // answered before Propose returned: replicate handles it
		}
		if d.Push(r.op) != nil {
			r.op.buf.Release() // the shard stopped: nobody answers
			return
		}
		d.Wake()
	})
	if !r.state.CompareAndSwap(proposeRunning, proposeReturned) {
		// Answered at once (a replica that no longer leads, a stopped
		// host): this goroutine holds the shard's run token, so pushing
		// the answer into the shard's own inbox could wait forever for
		// room only this pass can make. It is handled here instead.
		s.replicated(&r.op)
	}
}

// proposing is a publish handed to a Replicator, until its answer.
type proposing struct {
	op    Op
	state atomic.Int32 // proposeRunning, then proposeReturned or proposeAnswered
}

const (
	proposeRunning  = iota // Propose has not returned
	proposeReturned        // it returned first: the answer is pushed to the shard
	proposeAnswered        // the answer came first: replicate handles it
)

// replicated delivers and acks a publish the partition's group committed,
// or answers its error.
func (s *Shard) replicated(o *Op) {
	p := o.part
	if p.deleted {
		s.fail(o, errDeleted)
		return
	}
	batch := wire.Batch(o.buf.B[o.batchOff:])
	id, seq := batch.ProducerID(), batch.ProducerSeq()
	if o.err != nil {
		var we *wire.Error
		if !errors.As(o.err, &we) {
			we = wire.Errorf(wire.CodeStorageError, "partition "+p.Topic+": "+o.err.Error())
		}
		if id != wire.NoProducer && p.producers != nil {
			if b := p.producers.find(id, seq); b != nil && b.base == unknownBase {
				p.producers.forget(id, seq)
			}
			s.answerWaiting(p, id, seq, -1, we)
		}
		s.fail(o, we)
		return
	}
	base, n := o.n, int64(batch.Count())
	batch.SetBaseOffset(base)
	end := base + n
	if base > p.visible {
		s.detachAll(p) // batches before base committed without passing here
	}
	p.next = max(p.next, end)
	if end > p.visible {
		s.makeVisible(p, end)
	}
	s.count(n)
	s.countPublished(p, n, len(batch))
	if id != wire.NoProducer {
		s.setBase(p, id, seq, int32(n), base)
	}
	a := heldAck{out: o.out, corr: o.corr, base: base, count: uint32(n), bytes: uint32(len(batch)), end: end,
		at: s.now, recv: o.at}
	s.batchVisible(p, &a)
	pressure := s.fanOut(p, o.buf, base, n)
	o.buf.Release()
	if pressure || len(p.held) > 0 {
		s.hold(p, a)
	} else {
		s.sendAck(p, a)
	}
	if id != wire.NoProducer {
		s.answerWaiting(p, id, seq, base, nil)
	}
}

// setBase records where a committed idempotent batch was stored: it fills
// in the offset of a batch this leader proposed, or remembers one another
// leader stored.
func (s *Shard) setBase(p *Partition, id int64, seq, count int32, base int64) {
	if p.producers == nil {
		p.producers = newProducers(s.cfg.MaxProducers)
	}
	if b := p.producers.find(id, seq); b != nil {
		if b.base == unknownBase && b.count == count {
			b.base = base
		}
		return
	}
	if v, pr, _, _ := p.producers.check(id, seq, int(count)); v == seqNew {
		p.producers.record(pr, id, producerBatch{seq: seq, count: count, base: base})
	}
}

type prodKey struct {
	id  int64
	seq int32
}

// awaitOriginal parks a retry of an idempotent batch whose original is
// still being replicated: it is answered with the original's offsets, or
// its error, when that is decided (answerWaiting).
func (s *Shard) awaitOriginal(p *Partition, o *Op, batch wire.Batch) {
	if p.awaiting == nil {
		p.awaiting = map[prodKey][]Op{}
	}
	k := prodKey{batch.ProducerID(), batch.ProducerSeq()}
	p.awaiting[k] = append(p.awaiting[k], *o)
}

// answerWaiting answers the retries parked behind batch (id, seq): acked
// with base, or failed with err.
func (s *Shard) answerWaiting(p *Partition, id int64, seq int32, base int64, err *wire.Error) {
	k := prodKey{id, seq}
	ops := p.awaiting[k]
	if len(ops) == 0 {
		return
	}
	delete(p.awaiting, k)
	for i := range ops {
		o := &ops[i]
		if err != nil {
			s.fail(o, err)
			continue
		}
		batch := wire.Batch(o.buf.B[o.batchOff:])
		n := int64(batch.Count())
		a := heldAck{out: o.out, corr: o.corr, base: base, count: uint32(n), bytes: uint32(len(batch)),
			end: base + n, at: s.now, recv: o.at, dup: true}
		o.buf.Release()
		if len(p.held) > 0 {
			s.hold(p, a)
			continue
		}
		s.sendAck(p, a)
	}
}

// advance moves a replicated partition's visible end to what its group
// committed, and records its idempotent producers' batches.
func (s *Shard) advance(p *Partition, end int64, prods []ProducerBatch) {
	if p.deleted {
		return
	}
	for _, b := range prods {
		s.setBase(p, b.ID, b.Seq, b.Count, b.Base)
	}
	if end <= p.visible {
		return
	}
	s.detachAll(p)
	p.next = max(p.next, end)
	s.makeVisible(p, end)
}

// detachAll detaches p's live subscribers at its visible end: their
// connections replay from there (outbox.Outbox.Detach). Each is touched so
// its writer resumes it.
func (s *Shard) detachAll(p *Partition) {
	if len(p.subs) == 0 {
		return
	}
	for _, sub := range p.subs {
		sub.Detach(p, p.visible)
		s.touch(sub)
	}
	p.subs = p.subs[:0]
	p.nsubs.Store(0)
}

// Demoted tells p's shard that this node no longer leads p's Raft group:
// its live subscribers are detached at the visible end, and the replay
// that resumes each finds the node no longer leads (the server then ends
// the subscription with NOT_LEADER where the subscriber asked to be told).
// Left attached, they would wait for batches this node no longer commits.
// It may wait while the shard's inbox is full.
func (p *Partition) Demoted() {
	if p.Shard.driver.Push(Op{kind: opDemoted, part: p}) == nil {
		p.Shard.driver.Wake()
	}
}

// Committed tells p's shard that p's Raft group committed batches up to
// end, with the idempotent producers' batches among them; see the
// Committed operation. It may wait while the shard's inbox is
// full.
func (p *Partition) Committed(end int64, prods []ProducerBatch) {
	if p.Shard.driver.Push(Committed(p, end, prods)) == nil {
		p.Shard.driver.Wake()
	}
}

package shard

import (
	"errors"

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
func Committed(p *Partition, end int64) Op {
	return Op{kind: opAdvance, part: p, n: end}
}

// replicate hands a publish to p's Replicator; the batch is delivered and
// acked when the answer comes back (replicated).
func (s *Shard) replicate(o *Op, p *Partition, batch wire.Batch) {
	op := *o // the done callback keeps the publish, and its buf reference
	d := s.driver
	p.Replica.Propose(batch, func(base int64, err error) {
		op.kind = opReplicated
		op.n = base
		op.err = err
		if d.Push(op) != nil {
			op.buf.Release() // the shard stopped: nobody answers
			return
		}
		d.Wake()
	})
}

// replicated delivers and acks a publish the partition's group committed,
// or answers its error.
func (s *Shard) replicated(o *Op) {
	p := o.part
	if p.deleted {
		s.fail(o, errDeleted)
		return
	}
	if o.err != nil {
		var we *wire.Error
		if !errors.As(o.err, &we) {
			we = wire.Errorf(wire.CodeStorageError, "partition "+p.Topic+": "+o.err.Error())
		}
		s.fail(o, we)
		return
	}
	batch := wire.Batch(o.buf.B[o.batchOff:])
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
	if id := batch.ProducerID(); id != wire.NoProducer {
		if p.producers == nil {
			p.producers = newProducers(s.cfg.MaxProducers)
		}
		if v, pr, _, _ := p.producers.check(id, batch.ProducerSeq(), int(n)); v == seqNew {
			p.producers.record(pr, id, producerBatch{seq: batch.ProducerSeq(), count: int32(n), base: base})
		}
	}
	a := heldAck{out: o.out, corr: o.corr, base: base, count: uint32(n), bytes: uint32(len(batch)), end: end,
		at: s.now, recv: o.at}
	s.batchVisible(p, &a)
	pressure := s.fanOut(p, o.buf, base, n)
	o.buf.Release()
	if pressure || len(p.held) > 0 {
		s.hold(p, a)
		return
	}
	s.sendAck(p, a)
}

// advance moves a replicated partition's visible end to what its group
// committed.
func (s *Shard) advance(p *Partition, end int64) {
	if p.deleted || end <= p.visible {
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

// Committed tells p's shard that p's Raft group committed batches up to
// end; see the Committed operation. It may wait while the shard's inbox is
// full.
func (p *Partition) Committed(end int64) {
	if p.Shard.driver.Push(Committed(p, end)) == nil {
		p.Shard.driver.Wake()
	}
}

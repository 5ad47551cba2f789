package shard

import (
	"errors"
	"slices"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Flow control: how a subscriber that falls behind slows its producers
// instead of growing memory, within bounds, and how one that has stopped
// reading is kept from slowing anyone.
//
// When a publish is fanned out to a subscriber whose outbox is past a quarter of its
// limit, the shard holds the publish's ack back instead of sending it. A
// producer's unacknowledged window (the client's pending-bytes bound) then
// fills and the producer waits, so it runs at the pace of its slowest
// subscriber. That is right for a subscriber that drains its socket, however
// slowly, and wrong for one that has stopped reading: it would stall every
// producer of the topic until it is disconnected, and each delivery to it
// would cost its loop a flush that only copies the frame into a backlog
// that does not move. So the shard judges how long a subscriber's network
// layer has held a backlog and taken none of it, as far as its writer saw
// (outbox.Outbox.Done; a writer that could not run saw nothing):
//
//   - past quietTicks watch ticks (20 ms) it is quiet: deliveries no longer
//     kick its writer, and it is parked (see Outbox): only the watch below
//     asks its writer, which hands the frames to the network layer once it
//     takes bytes again. This changes when bytes reach the network layer,
//     not flow control.
//   - past StuckAfter (1 s) it is stuck: it holds no acks. It keeps
//     receiving, within its limit. Any byte its socket takes makes it a
//     draining subscriber again.
//   - an ack is held at most MaxAckDelay, then sent anyway;
//   - a subscriber under pressure with no progress for SlowConsumerTimeout
//     is disconnected as a slow consumer, like one that passes its hard
//     limit.
//
// The shard watches every subscriber it found under pressure or quiet:
// every watchEvery (10 ms, less for a short StuckAfter) it asks their
// writers for a fresh backlog figure, disconnects those past the timeout,
// and forgets those that caught up. The watch runs whether or not acks are
// held, so a stuck subscriber is disconnected on time even when it holds
// nobody back. While acks are held, their partition's subscribers under
// pressure are asked for a fresh figure every millisecond, so that a
// draining one is released as soon as it drains.
//
// nats-server does the same in spirit: it stalls a producer's read loop
// briefly while a subscriber's pending bytes are high, and cuts a
// subscriber whose writes make no progress for a deadline.

// maxWatchEvery bounds the interval of the watch ticks: a subscriber that
// resumes reading after being stuck waits for at most one tick.
const maxWatchEvery = 10 * time.Millisecond

// quietTicks is how many watch ticks a subscriber's socket may take nothing
// before the shards stop kicking its writer after every delivery and park
// it (see SentQuiet). Kicked, each delivery to it would schedule a flush
// that only copies the frame into a backlog that does not move: copies
// into fresh memory for 30 subscribers that never read took most of the
// broker's CPU.
const quietTicks = 2

// heldAck is a publish waiting to be acked: for its partition's
// subscribers to drain, and for SyncAlways also for its fsync, until which
// buf (the batch, not yet delivered) is held too.
type heldAck struct {
	out   *outbox.Outbox
	corr  uint32
	base  int64
	count uint32
	bytes uint32       // size of the batch, for Config.OnBatch
	end   int64        // offset after the batch
	buf   *storage.Buf // not yet delivered (waiting for its fsync)
	at    int64        // shard clock when it was appended, then delivered
	recv  int64        // driver clock when the publish was pushed (ack latency)
	// dup: a retried idempotent batch, not stored, answered with its
	// original's offsets (base, count, end) once the acks before it
	// leave; buf is nil. It shares its original's fate: acked once the
	// original is visible, failed with the original's error otherwise.
	dup bool
}

// release drops the batch a failed publish held; a retry holds none.
func (a *heldAck) release() {
	if a.buf != nil {
		a.buf.Release()
	}
}

// settled reports whether a held publish has nothing left to wait for but
// flow control: delivered already, or a retry whose original is.
func (a *heldAck) settled(p *Partition) bool {
	if a.dup {
		return a.end <= p.visible
	}
	return a.buf == nil
}

// sendAck answers a publish with its ack; the driver encodes it.
func (s *Shard) sendAck(p *Partition, a heldAck) {
	s.rd.Answers = append(s.rd.Answers, Answer{Out: a.out, Corr: a.corr, Bytes: int(a.bytes), Recv: a.recv,
		Ack: wire.PublishAck{Partition: p.ID, BaseOffset: a.base, Count: a.count}})
}

// sendError answers a publish of bytes with err; the driver encodes it.
func (s *Shard) sendError(out *outbox.Outbox, corr uint32, bytes int, err *wire.Error) {
	s.rd.Answers = append(s.rd.Answers, Answer{Out: out, Corr: corr, Bytes: bytes, Err: err})
}

func (s *Shard) hold(p *Partition, a heldAck) {
	if len(p.held) == 0 {
		s.held = append(s.held, p)
	}
	p.held = append(p.held, a)
}

// releaseHeld runs after every pass that has held acks and on the
// flow-control tick: it delivers batches whose fsync completed, sends the
// acks that no longer need to wait, and disconnects subscribers under
// pressure for too long.
func (s *Shard) releaseHeld() {
	s.heldChecks.Add(1)
	kept := s.held[:0]
	for _, p := range s.held {
		if s.releasePartition(p) {
			kept = append(kept, p)
		}
	}
	clear(s.held[len(kept):])
	s.held = kept
}

// heldForPressure reports whether some held ack waits only for a
// subscriber to drain. Those need the shard's timer (MaxAckDelay, the
// slow-consumer timeout); acks waiting for an fsync are released by the
// syncer's report.
func (s *Shard) heldForPressure() bool {
	for _, p := range s.held {
		for i := range p.held {
			if p.held[i].settled(p) {
				return true
			}
		}
	}
	return false
}

// releasePartition reports whether p still holds acks. Deliveries and acks
// leave in offset order.
func (s *Shard) releasePartition(p *Partition) bool {
	limit := p.releasable()
	for i := range p.held {
		a := &p.held[i]
		if a.buf == nil {
			continue
		}
		if a.end > limit {
			break
		}
		s.makeVisible(p, a.end)
		s.batchVisible(p, a)
		s.fanOut(p, a.buf, a.base, int64(a.count))
		a.buf.Release()
		a.buf, a.at = nil, s.now
	}
	pressure := s.underPressure(p)
	n := 0
	for ; n < len(p.held); n++ {
		a := p.held[n]
		if a.buf != nil || pressure && s.now-a.at < int64(s.cfg.MaxAckDelay) {
			break
		}
		s.sendAck(p, a)
	}
	clear(p.held[:n])
	p.held = append(p.held[:0], p.held[n:]...)
	return len(p.held) > 0
}

// underPressure reports whether any subscriber of p is past a quarter of
// its limit and not stuck, and asks those subscribers' writers for a fresh
// backlog.
func (s *Shard) underPressure(p *Partition) bool {
	pressure := false
	for _, sub := range p.subs {
		f := sub.Flow(s.cfg.stall, s.now)
		if !f.Over {
			continue
		}
		s.watchOut(sub)
		if !f.Stuck {
			s.rd.Refresh = append(s.rd.Refresh, sub)
			pressure = true
		}
	}
	return pressure
}

// watchOut adds out to the outboxes the shard checks on its watch ticks.
func (s *Shard) watchOut(out *outbox.Outbox) {
	if out.Watch(s.cfg.ID) {
		s.watch = append(s.watch, out)
		s.watchSlow = false // a new one is checked at the full rate
	}
}

func (s *Shard) watchDue(now int64) bool {
	return len(s.watch) > 0 && now-s.watched >= int64(s.watchInterval())
}

// stuckRefreshEvery is how often a stuck subscriber's writer is asked for
// a report.
const stuckRefreshEvery = 100 * time.Millisecond

// checkWatched disconnects the watched subscribers that made no progress
// under pressure for the slow-consumer timeout, asks the others' writers
// for a fresh backlog (which gets a parked one written once its socket
// takes bytes), and stops watching those neither under pressure nor quiet
// with frames queued.
func (s *Shard) checkWatched() {
	s.watched = s.now
	refreshStuck := s.now-s.stuckRefreshed >= int64(stuckRefreshEvery)
	if refreshStuck {
		s.stuckRefreshed = s.now
	}
	allStuck := true
	timeout := int64(s.cfg.SlowConsumerTimeout)
	kept := s.watch[:0]
	for _, out := range s.watch {
		f := out.Flow(s.cfg.stall, s.now)
		switch {
		case f.Over && s.now-f.Since > timeout, f.Detached && f.Stalled > timeout:
			// A detached subscriber holds little, so it is cut by how long
			// its socket took nothing, as NATS's write deadline cuts one.
			out.MarkSlow()
			s.touch(out)
		case f.Over || f.Quiet && f.Queued || f.Detached:
			// Each report costs a wake-up of the subscriber's loop: 30
			// stuck subscribers asked every 10 ms were 3000 wake-ups a
			// second on the others' CPU. One that is stuck is asked every
			// stuckRefreshEvery; it resumes that much later when its
			// reader comes back.
			if !f.Stuck || refreshStuck {
				s.rd.Refresh = append(s.rd.Refresh, out)
			}
			allStuck = allStuck && (f.Stuck || f.Detached)
			kept = append(kept, out)
			continue
		}
		out.Unwatch(s.cfg.ID)
	}
	clear(s.watch[len(kept):])
	s.watch = kept
	// Watching only stuck subscribers needs no 10 ms tick: a timer wake-up
	// of the pinned shard goroutine lands on some message's path.
	s.watchSlow = allStuck && len(kept) > 0
}

// watchInterval is how often the watched outboxes are checked now.
func (s *Shard) watchInterval() time.Duration {
	if s.watchSlow {
		return max(stuckRefreshEvery, s.cfg.watchEvery)
	}
	return s.cfg.watchEvery
}

// releaseAll sends every held ack at once (shutdown). Deliveries still
// waiting for their fsync fail instead: they are not known to be durable.
func (s *Shard) releaseAll(p *Partition) {
	for _, a := range p.held {
		if !a.settled(p) {
			s.sendError(a.out, a.corr, int(a.bytes), wire.ErrShuttingDown)
			a.release()
			continue
		}
		s.sendAck(p, a)
	}
	clear(p.held)
	p.held = p.held[:0]
}

// failHeld answers every held publish with err (a failed fsync, a deleted
// topic): none of them may be acked.
func (s *Shard) failHeld(p *Partition, err *wire.Error) {
	for _, a := range p.held {
		if !a.settled(p) {
			a.release()
			s.sendError(a.out, a.corr, int(a.bytes), err)
			continue
		}
		s.sendAck(p, a) // durable and delivered already; only pressure held it
	}
	clear(p.held)
	p.held = p.held[:0]
}

// releasable is the end offset up to which p's held batches may be
// delivered and acked: written, and for SyncAlways also synced.
func (p *Partition) releasable() int64 {
	if p.sync.Mode == SyncAlways {
		return p.durable
	}
	return p.written
}

// requestSync asks the driver to write p's staged batches and, for
// SyncAlways, fsync them. One request is outstanding per partition:
// batches staged while a write and fsync run wait for the next request,
// which then covers them all (group commit).
func (s *Shard) requestSync(p *Partition) {
	if !p.syncing {
		p.syncing = true
		s.rd.Syncs = append(s.rd.Syncs, SyncRequest{P: p, Always: p.sync.Mode == SyncAlways})
	}
}

// synced handles the driver's report (Synced): p is written up to written and
// durable up to durable. A failed write dropped the batches after written:
// their publishes fail, their offsets are given out again, and the
// partition keeps accepting writes, unless the failed write could not be
// cut off. A failed fsync fails every publish it covered, and the
// partition refuses writes until restart. A publish that was written but
// not made durable gets OUTCOME_UNKNOWN (it may be in the log after a
// restart); one that was never written, STORAGE_ERROR or STORAGE_FULL.
func (s *Shard) synced(p *Partition, written, durable int64, werr, serr error) {
	p.syncing = false
	if p.deleted {
		return
	}
	switch {
	case serr != nil:
		// Written up to written: those may be on disk (unknown); the rest
		// the read-only log will never write.
		p.turnReadOnly()
		s.failHeldAfter(p, -1, written, outcomeUnknown(p, serr), p.failed)
		return
	case werr != nil:
		s.writeFailed(p, written, werr)
		p.next = written
		if p.producers != nil {
			p.producers.truncate(written)
		}
		if st, ok := p.Log.(storage.Staged); ok {
			st.Resume()
		}
	}
	p.written = max(p.written, written)
	p.durable = max(p.durable, durable)
	if p.next > p.written || p.sync.Mode == SyncAlways && p.next > p.durable {
		s.requestSync(p)
	}
	if len(p.held) > 0 && !slices.Contains(s.held, p) {
		s.held = append(s.held, p)
	}
}

// writeFailed answers the publishes a failed write dropped (every held
// one past written). Cut off the file, they are not stored: STORAGE_FULL
// or STORAGE_ERROR. When the cut failed too (storage.UncutError) the log
// turned read-only, and the batches of that write may still be in the
// file, where recovery would find them: OUTCOME_UNKNOWN for those, and
// STORAGE_ERROR for the ones staged after them, which were never written.
// A log that had failed before writes nothing: STORAGE_ERROR with why.
func (s *Shard) writeFailed(p *Partition, written int64, werr error) {
	var uncut *storage.UncutError
	var doubt *storage.InDoubtError
	switch {
	case errors.As(werr, &doubt):
		// A remote log's write that got no answer: it may be stored, and
		// the log removes it before its next write, so the partition
		// goes on from written.
		s.failHeldAfter(p, written, doubt.End, outcomeUnknown(p, werr), storageError(p, werr))
	case errors.As(werr, &uncut):
		p.turnReadOnly()
		s.failHeldAfter(p, written, uncut.End, outcomeUnknown(p, werr), p.failed)
	case errors.Is(werr, storage.ErrFailed):
		p.turnReadOnly()
		s.failHeldAfter(p, written, written, nil, p.failed)
	default:
		s.failHeldAfter(p, written, written, nil, storageError(p, werr))
	}
}

// failHeldAfter answers every held publish that ends after from: those
// ending at or before unknownTo with unknown (written, maybe stored), the
// rest with never (not stored). Acks held only by flow control (already
// durable and delivered) are sent. The ones ending at or before from stay
// held.
//
// The held publishes end in increasing offsets, except retries (dup),
// which end where their originals do; so each is judged by its own end.
func (s *Shard) failHeldAfter(p *Partition, from, unknownTo int64, unknown, never *wire.Error) {
	kept := p.held[:0]
	for _, a := range p.held {
		switch {
		case a.end <= from:
			kept = append(kept, a)
			continue
		case a.settled(p):
			s.sendAck(p, a)
			continue
		}
		a.release()
		if a.end <= unknownTo {
			s.sendError(a.out, a.corr, int(a.bytes), unknown)
		} else {
			s.sendError(a.out, a.corr, int(a.bytes), never)
		}
	}
	clear(p.held[len(kept):])
	p.held = kept
}

package server

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Reads from the log never run on an event loop or a shard: a read may
// wait for the disk, and it must stall neither. Pull fetches run on the
// reader pool (fetch.go); replays run in steps on the replay pool
// (replays.go). Logs are safe to read concurrently with appends; readers
// see only visible (for fsync=always topics: durable) batches.

// resolveStart turns a start position into an offset of p's log; an
// offline partition has none (PARTITION_OFFLINE).
func resolveStart(p *shard.Partition, st wire.Start) (int64, error) {
	if err := topic.CheckOnline(p); err != nil {
		return 0, err
	}
	return resolveLocal(p, st)
}

// resolveLocal is resolveStart on this node's replica, leader or not.
func resolveLocal(p *shard.Partition, st wire.Start) (int64, error) {
	if why := topic.OfflineReason(p); why != "" {
		return 0, topic.CheckOnline(p)
	}
	start, end := p.Log.Bounds()
	switch st.Kind {
	case wire.StartEarliest:
		return start, nil
	case wire.StartLatest:
		return end, nil
	case wire.StartTime:
		off, err := p.Log.OffsetForTime(st.Value)
		if err != nil {
			return 0, wire.Errorf(wire.CodeStorageError, "find offset for time: "+err.Error())
		}
		return off, nil
	}
	if st.Value < start || st.Value > end {
		return 0, wire.Errorf(wire.CodeOffsetOutOfRange, "offset "+strconv.FormatInt(st.Value, 10)+
			" is outside "+strconv.FormatInt(start, 10)+".."+strconv.FormatInt(end, 10))
	}
	return st.Value, nil
}

// readFetch builds a FetchResult frame from offset, with room left for
// the frame header (the caller knows the corr), so the body is not copied
// into a frame. An offset inside a range found corrupt resolves to the
// first offset after it, so a pull consumer moves past the damage instead
// of asking for it forever.
func (srv *Server) readFetch(p *shard.Partition, offset int64, maxBytes int) ([]byte, error) {
	offset = skipCorrupt(p, offset)
	start, end := p.Log.Bounds()
	const empty = wire.HeaderSize + wire.FetchResultHeaderSize
	body := wire.AppendFetchResultHeader(make([]byte, wire.HeaderSize, empty), wire.FetchResultHeader{
		Partition: p.ID, StartOffset: start, EndOffset: end, Offset: offset})
	limit := empty + maxBytes
	err := p.Log.Read(offset, max(maxBytes, 1), func(b wire.Batch) bool {
		if len(body) > empty && len(body)+len(b) > limit {
			return false // the frame would pass the limit; the next fetch gets it
		}
		body = append(body, b...)
		return true
	})
	if errors.Is(err, storage.ErrOffsetOutOfRange) {
		now, _ := p.Log.Bounds() // retention may have moved it since start was read
		return nil, wire.Errorf(wire.CodeOffsetOutOfRange, "offset "+strconv.FormatInt(offset, 10)+
			" is below the log's start "+strconv.FormatInt(now, 10))
	}
	if err != nil {
		return nil, wire.Errorf(wire.CodeStorageError, err.Error())
	}
	return body, nil
}

// skipCorrupt moves offset past any corrupt range it falls in.
func skipCorrupt(p *shard.Partition, offset int64) int64 {
	for _, r := range p.Log.Stats().Corrupt {
		if offset >= r.From && offset < r.To {
			offset = r.To
		}
	}
	return offset
}

// replyLater queues an error answer from a reader goroutine.
func (srv *Server) replyLater(out *outbox.Outbox, corr uint32, err error) {
	out.SendError(corr, err)
	out.Kick()
	srv.countError(wire.CodeOf(err))
}

// replayChunk bounds how much one replay step reads before it hands what
// it read to the writer and lets the other replays have the worker.
const replayChunk = 1 << 20

// replayJob is a replay of p's log from offset to a subscriber, which
// then becomes a live subscriber with no gap and no duplicate
// (shard.CatchUp): it reads to the visible end, asks to join there, and if
// more became visible meanwhile reads on and asks again. It pauses while
// the subscriber's outbox is under pressure, so a replay goes at the
// subscriber's pace. cancel stops it (unsubscribe, connection closed). It
// runs in steps on the replay pool (replays.go), one worker at a time.
type replayJob struct {
	srv    *Server
	out    *outbox.Outbox
	p      *shard.Partition
	offset int64
	cancel *atomic.Bool
	sub    *subscription // the subscription it feeds; nil for a group member's feed
	// tail: a group member's feed of a replicated partition, which reads
	// this node's replica, leader or follower, up to what it shows
	// committed, and at its end looks again every tailPoll instead of
	// joining the live fan-out (a follower detaches its live subscribers
	// at every commit, and a leader may become a follower at any time).
	tail   bool
	prefix []byte        // Deliver's topic and partition; nil before the first step
	joined chan int64    // the shard's answer to CatchUp
	timer  *time.Timer   // queues the job again after a pause (replayPool.start)
	done   chan struct{} // closed when the replay ends, if someone waits for it
	next   *replayJob    // in the pool's queue
}

func (srv *Server) newReplay(out *outbox.Outbox, p *shard.Partition, offset int64, cancel *atomic.Bool) *replayJob {
	return &replayJob{srv: srv, out: out, p: p, offset: offset, cancel: cancel, joined: make(chan int64, 1)}
}

// startSubReplay queues a replay of a subscription's partition on the
// replay pool and returns at once, so the caller's event loop does not
// wait for the disk. A replay that finds this node no longer leads the
// partition ends the subscription (endSub).
func (srv *Server) startSubReplay(out *outbox.Outbox, p *shard.Partition, offset int64, sub *subscription) {
	j := srv.newReplay(out, p, offset, sub.cancel)
	j.sub = sub
	srv.replays.start(j)
}

// endSub ends a subscription whose node no longer leads its partition
// (a replicated partition whose leadership moved: the shard detached its
// live subscribers, and the replay resuming it found this, or the shard
// refused the replay's join), telling the subscriber with err,
// NOT_LEADER naming the leader this node knows, under the Subscribe's
// correlation id, when it asked to be told (wire.FlagEndNotice); the
// client subscribes again at the leader. One that did not ask is left as
// before: fed nothing more.
func (srv *Server) endSub(out *outbox.Outbox, sub *subscription, err error) {
	if sub == nil || !sub.notice || wire.CodeOf(err) != wire.CodeNotLeader {
		return
	}
	if !sub.released.CompareAndSwap(false, true) {
		return // unsubscribed, closed, or ended already
	}
	sub.cancel.Store(true) // no resume replays it again
	sub.topic.Subscriptions.Add(-1)
	srv.replyLater(out, sub.corr, err)
}

// step runs the next part of the replay: it reads up to replayChunk from
// offset into the subscriber's outbox or, at the visible end, asks to join
// the live tail there.
func (j *replayJob) step() replayNext {
	if j.prefix == nil {
		check := topic.CheckOnline
		if j.tail {
			check = checkOffline
		}
		if err := check(j.p); err != nil {
			// A group member's feed of an offline partition: it holds
			// nothing and the broker logged why at start. A subscription
			// to a partition this node no longer leads: ended, if its
			// subscriber asked to be told.
			j.srv.endSub(j.out, j.sub, err)
			j.srv.replayFailed(j.p, j.offset, err)
			return replayDone
		}
		j.prefix = wire.AppendBatchPrefix(nil, wire.Unqualified(j.p.Topic), j.p.ID) // as its tenant names it
	}
	if j.cancel.Load() || j.out.Closed() {
		return replayDone
	}
	if over, _ := j.out.Pressure(); over {
		j.out.Refresh()
		return replayPaused
	}
	n, err := j.read()
	switch {
	case errors.Is(err, storage.ErrOffsetOutOfRange):
		// Retention removed what was being replayed: go on from what
		// the log still holds.
		j.offset, _ = j.p.Log.Bounds()
		return replayMore
	case err != nil:
		j.srv.log.Warn("replay stopped: the subscription gets nothing more from this partition",
			"topic", j.p.Topic, "partition", j.p.ID, "at", j.offset, "err", err)
		j.srv.replayFailed(j.p, j.offset, err)
		return replayDone
	case n > 0:
		return replayMore
	case j.tail:
		return replayTailing
	}
	return j.join()
}

// checkOffline is topic.CheckOnline without the leader check: a tailing
// replay reads this node's replica, leader or follower.
func checkOffline(p *shard.Partition) error {
	if topic.OfflineReason(p) == "" {
		return nil
	}
	return topic.CheckOnline(p)
}

// read sends the visible batches from offset, up to replayChunk, and
// moves offset past them. It returns how many it sent.
func (j *replayJob) read() (int, error) {
	n := 0
	err := j.p.Log.Read(j.offset, replayChunk, func(b wire.Batch) bool {
		j.out.SendDelivery(j.prefix, b)
		j.offset = b.BaseOffset() + int64(b.Count())
		n++
		return true
	})
	j.out.Kick()
	return n, err
}

// join asks the shard to make the subscriber live at offset and waits for
// its answer (one pass). The shard refuses when more became visible
// meanwhile: then the replay reads on. It also refuses a cancelled replay,
// and a replicated partition this node no longer leads, which ends the
// subscription (endSub). A join is never undone here: the shard knows
// the subscriber by its outbox alone, and an Unsubscribe sent after the
// unsubscriber's own could remove the connection's next subscription to
// the partition, which would then get nothing, and never be ended
// (shard.Partition.CatchUp).
func (j *replayJob) join() replayNext {
	var ok bool
	if j.p.CatchUp(j.out, j.offset, j.cancel, func(end int64, joined bool) {
		ok = joined
		j.joined <- end
	}) != nil {
		return replayDone
	}
	j.p.Shard.Wake()
	end := <-j.joined
	if ok || end < 0 || j.cancel.Load() {
		return replayDone // live; or the partition was deleted; or cancelled
	}
	if err := topic.CheckLeader(j.p); err != nil {
		// The node lost the leadership while the replay ran.
		j.srv.endSub(j.out, j.sub, err)
		j.srv.replayFailed(j.p, j.offset, err)
		return replayDone
	}
	return replayMore // more became visible (or the node leads again)
}

// replayFailed reports a replay that ends for err to the plugins.
func (srv *Server) replayFailed(p *shard.Partition, offset int64, err error) {
	if srv.observed() {
		srv.emit(telemetry.Event{Kind: telemetry.EventSubscriberFailed, Topic: p.Topic, Partition: int(p.ID), Offset: offset,
			Actor: "broker", Action: "replay", Target: "topic/" + p.Topic, Err: err})
	}
}

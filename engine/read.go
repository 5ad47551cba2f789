package engine

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Reads from the log never run on an event loop or a shard: a read may
// wait for the disk, and it must stall neither. Pull fetches run on the
// reader pool (fetch.go); the replay part of a subscription runs on a
// goroutine of its own, for as long as the replay lasts. Logs are safe to
// read concurrently with appends; readers see only visible (for
// fsync=always topics: durable) batches.

// resolveStart turns a start position into an offset of p's log; an
// offline partition has none (PARTITION_OFFLINE).
func resolveStart(p *shard.Partition, st wire.Start) (int64, error) {
	if err := checkOnline(p); err != nil {
		return 0, err
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
func (e *Engine) readFetch(p *shard.Partition, offset int64, maxBytes int) ([]byte, error) {
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
		return nil, wire.Errorf(wire.CodeOffsetOutOfRange, "offset "+strconv.FormatInt(offset, 10)+
			" is below the log's start "+strconv.FormatInt(start, 10))
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
func (e *Engine) replyLater(out *shard.Outbox, corr uint32, err error) {
	sendErrTo(out, corr, err)
	out.Kick()
	e.countError(wire.CodeOf(err))
}

// replayChunk bounds how much one replay read takes before it checks the
// subscriber's outbox and hands what it read to the writer.
const replayChunk = 1 << 20

// replay delivers p's log from offset to a subscriber, then makes it a
// live subscriber with no gap and no duplicate (shard.CatchUp): it reads to
// the visible end, asks to join there, and if more became visible meanwhile
// reads on and asks again. It pauses while the subscriber's outbox is under
// pressure, so a replay goes at the subscriber's pace. cancel stops it
// (unsubscribe, connection closed).
func (e *Engine) replay(out *shard.Outbox, p *shard.Partition, offset int64, cancel *atomic.Bool) {
	if err := checkOnline(p); err != nil {
		// A group member's feed of an offline partition: it holds nothing
		// and the broker logged why at start.
		e.replayFailed(p, offset, err)
		return
	}
	prefix := wire.AppendBatchPrefix(nil, p.Topic, p.ID)
	joined := make(chan int64, 1)
	for !cancel.Load() {
		next, err := e.replayTo(out, p, prefix, offset, cancel)
		if errors.Is(err, storage.ErrOffsetOutOfRange) {
			// Retention removed what was being replayed: go on from what
			// the log still holds.
			offset, _ = p.Log.Bounds()
			continue
		}
		if err != nil {
			e.log.Warn("replay stopped: the subscription gets nothing more from this partition",
				"topic", p.Topic, "partition", p.ID, "at", offset, "err", err)
			e.replayFailed(p, offset, err)
			return
		}
		offset = next
		var ok bool
		if p.CatchUp(out, offset, func(end int64, j bool) {
			ok = j
			joined <- end
		}) != nil {
			return
		}
		p.Shard.Wake()
		if end := <-joined; end < 0 || ok {
			if cancel.Load() && ok {
				_ = p.Unsubscribe(out, nil)
				p.Shard.Wake()
			}
			return
		}
	}
}

// replayFailed reports a replay that ends for err to the plugins.
func (e *Engine) replayFailed(p *shard.Partition, offset int64, err error) {
	if e.observed() {
		e.emit(Event{Kind: EventSubscriberFailed, Topic: p.Topic, Partition: int(p.ID), Offset: offset,
			Actor: "broker", Action: "replay", Target: "topic/" + p.Topic, Err: err})
	}
}

// replayTo sends every visible batch from offset and returns the offset
// after the last one.
func (e *Engine) replayTo(out *shard.Outbox, p *shard.Partition, prefix []byte, offset int64, cancel *atomic.Bool) (int64, error) {
	for !cancel.Load() {
		if !e.waitForRoom(out, cancel) {
			return offset, nil
		}
		n := 0
		err := p.Log.Read(offset, replayChunk, func(b wire.Batch) bool {
			sendDelivery(out, prefix, b)
			offset = b.BaseOffset() + int64(b.Count())
			n++
			return true
		})
		out.Kick()
		if err != nil || n == 0 {
			return offset, err
		}
	}
	return offset, nil
}

// sendDelivery queues one Deliver frame for a batch read from the log.
func sendDelivery(out *shard.Outbox, prefix []byte, b wire.Batch) {
	n := wire.HeaderSize + len(prefix) + len(b)
	buf := storage.NewBuf(n)
	wire.AppendHeader(buf.B[:0], wire.TypeDeliver, 0, 0, len(prefix)+len(b))
	copy(buf.B[wire.HeaderSize:], prefix)
	copy(buf.B[wire.HeaderSize+len(prefix):], b)
	out.SendRef(buf, buf.B, 0)
	buf.Release()
}

// waitForRoom waits while the outbox is under pressure; false when the
// replay should stop (cancelled, or the subscriber was disconnected).
func (e *Engine) waitForRoom(out *shard.Outbox, cancel *atomic.Bool) bool {
	for {
		if cancel.Load() || out.Closed() {
			return false
		}
		if over, _ := out.Pressure(); !over {
			return true
		}
		out.Refresh()
		time.Sleep(time.Millisecond)
	}
}

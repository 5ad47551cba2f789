package coord

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// readChunk bounds how much a message-mode feed reads at once, as the
// broker's replay steps do.
const readChunk = 1 << 20

// offsetFeed delivers a partition to its owner in none and offset mode:
// a replay from the start offset that joins the live fan-out once it has
// caught up, exactly as a Subscribe with a start position.
type offsetFeed struct {
	c      *Coordinator
	g      *group
	p      *shard.Partition
	out    *outbox.Outbox
	cancel atomic.Bool
	exited chan struct{} // the replay ended
	done   chan struct{} // and the live subscription is gone
}

// start queues the feed's replay on the broker's replay pool; exited is
// closed when it ends. No goroutine waits for it meanwhile.
func (f *offsetFeed) start(start int64) {
	f.c.broker.Replay(f.out, f.p, start, &f.cancel, f.exited)
}

// stop ends the replay, then removes the live subscription it may have
// become. The removal waits for the replay to end, so it cannot be
// overtaken by the replay's own late join.
func (f *offsetFeed) stop() {
	if !f.cancel.CompareAndSwap(false, true) {
		return
	}
	go func() {
		<-f.exited
		finish := func(error) {
			close(f.done)
			f.c.feedStopped()
		}
		if f.p.Unsubscribe(f.out, shard.NewJoin(1, finish)) != nil {
			finish(nil)
			return
		}
		f.p.Shard.Wake()
	}()
}

func (f *offsetFeed) stopped() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// msgFeed delivers a partition to its owner in message mode. It reads the
// log itself rather than joining the live fan-out, because it must stop
// when the member has max-unacked messages outstanding; and it owns the
// partition's timers: expired ack waits, nack delays and backoffs, and the
// dead-letter topic.
type msgFeed struct {
	c    *Coordinator
	gp   *gpart
	m    *Member
	quit atomic.Bool
	wait atomic.Bool // waiter is registered with the partition
	// waiter wakes the feed when new data is visible; withdrawn when the
	// feed stops, so a stopped feed on an idle partition leaves nothing.
	waiter shard.Waiter
	wake   chan struct{}
	done   chan struct{}
}

func newMsgFeed(c *Coordinator, gp *gpart, m *Member) *msgFeed {
	f := &msgFeed{c: c, gp: gp, m: m, wake: make(chan struct{}, 1), done: make(chan struct{})}
	f.waiter.Waker = f
	return f
}

func (f *msgFeed) stop() {
	f.quit.Store(true)
	f.wakeUp()
}

func (f *msgFeed) stopped() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

func (f *msgFeed) wakeUp() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// live reports whether the feed may still act for its member; gp.mu held.
func (f *msgFeed) live() bool { return !f.quit.Load() && f.gp.owner == f.m }

func (f *msgFeed) run() {
	defer func() {
		if f.wait.Load() {
			if f.gp.p.Unwait(&f.waiter) == nil {
				f.gp.p.Shard.Wake()
			}
		}
		close(f.done)
		f.c.feedStopped()
	}()
	gp, out := f.gp, f.m.out
	set := &gp.g.set
	prefix := wire.AppendBatchPrefix(nil, wire.Unqualified(gp.p.Topic), gp.p.ID) // as its tenant names it
	redo := map[uint32][]int64{}
	var dead []int64
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for !f.quit.Load() && !out.Closed() {
		room := f.m.roomSignal() // taken before the bound is checked, so no wake-up is missed
		now := f.c.now()
		gp.mu.Lock()
		if !f.live() {
			gp.mu.Unlock()
			return
		}
		gp.acks.Expire(now, set.backoff)
		dead = gp.acks.Due(now, gp.g.maxDeliveries(), dead[:0], redo)
		gp.mu.Unlock()
		if len(dead) > 0 {
			f.deadLetter(dead)
		}
		for attempt, offs := range redo {
			f.redeliver(attempt, offs)
			delete(redo, attempt)
		}
		pressure, _ := out.Pressure()
		atEnd, gated := false, false
		if !pressure {
			atEnd, gated = f.deliverNew(prefix)
		} else {
			out.Refresh()
		}
		gp.mu.Lock()
		wakeAt := gp.acks.NextWake()
		next := gp.acks.Next()
		gp.mu.Unlock()
		var d time.Duration
		switch {
		case pressure:
			d = time.Millisecond
		case atEnd:
			f.waitForData(next)
		case !gated:
			continue // more to read
		}
		if wakeAt > 0 {
			if w := time.Duration(wakeAt - f.c.now()); d == 0 || w < d {
				d = max(w, 0)
			}
		}
		if d == 0 {
			d = time.Hour
		}
		timer.Reset(d)
		if !gated {
			room = nil
		}
		select {
		case <-f.wake:
		case <-room:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// Woken implements shard.Waker: new data, or the partition was deleted.
// On the shard: it only flags and wakes.
func (f *msgFeed) Woken(_ int64, ok bool) {
	f.wait.Store(false)
	if !ok {
		f.quit.Store(true)
	}
	f.wakeUp()
}

// waitForData asks the shard to wake the feed once the partition has data
// past next.
func (f *msgFeed) waitForData(next int64) {
	p := f.gp.p
	if f.c.broker.OfflineReason(p) != "" {
		return // no data comes until a restart; the feed waits for its stop
	}
	if f.wait.Swap(true) {
		return
	}
	if err := p.Wait(&f.waiter, next); err != nil {
		f.quit.Store(true)
		return
	}
	p.Shard.Wake()
}

// deliverNew sends batches from the next undelivered offset while the
// member has room for more unacked messages. It reports whether it reached
// the end of the log, and whether the unacked bound stopped it.
func (f *msgFeed) deliverNew(prefix []byte) (atEnd, gated bool) {
	gp, out, set := f.gp, f.m.out, &f.gp.g.set
	gp.mu.Lock()
	next := gp.acks.Next()
	gp.mu.Unlock()
	lo, end := gp.p.Log.Bounds()
	if next >= end {
		return true, false
	}
	if next < lo {
		f.skipTo(lo, "retention removed them before they were acked")
		return false, false
	}
	if skip := f.c.broker.SkipCorrupt(gp.p, next); skip != next {
		f.skipTo(skip, "they are in a range of the log found corrupt")
		return false, false
	}
	sent, stop := 0, false
	err := gp.p.Log.Read(next, readChunk, func(b wire.Batch) bool {
		to := b.BaseOffset() + int64(b.Count())
		gp.mu.Lock()
		a := gp.acks
		switch {
		case !f.live():
			stop = true
		case f.m.unacked.Load() >= set.maxUnacked || a.Window() >= maxAckWindow:
			gated = true
		case to > a.Next():
			n := to - a.Next()
			a.Delivered(a.Next(), to, f.c.now()+set.ackWait)
			f.m.unacked.Add(n)
		default:
			gp.mu.Unlock()
			return true // delivered already
		}
		gp.mu.Unlock()
		if stop || gated {
			return false
		}
		out.SendDelivery(prefix, b)
		sent++
		return true
	})
	if sent > 0 {
		out.Kick()
	}
	switch {
	case err == nil && sent == 0 && !gated && !stop:
		return true, false // nothing readable past next yet
	case errors.Is(err, storage.ErrOffsetOutOfRange):
		lo, _ = gp.p.Log.Bounds()
		f.skipTo(lo, "retention removed them before they were acked")
	case err != nil:
		f.c.log.Warn("group delivery read failed; retrying", "group", gp.g.name, "topic", gp.p.Topic,
			"partition", gp.p.ID, "offset", next, "err", err)
		time.Sleep(10 * time.Millisecond)
	}
	return false, gated
}

// skipTo gives up on the messages below o, which can no longer be read.
func (f *msgFeed) skipTo(o int64, why string) {
	gp := f.gp
	gp.mu.Lock()
	if !f.live() {
		gp.mu.Unlock()
		return
	}
	before := gp.acks.Unacked()
	lost := gp.acks.SkipTo(o)
	f.m.settle(int64(before-gp.acks.Unacked()), gp.g.set.maxUnacked)
	gp.committed = gp.acks.Floor()
	floor := gp.acks.Floor()
	gp.mu.Unlock()
	if lost > 0 {
		f.c.log.Warn("unacked messages skipped: "+why, "group", gp.g.name, "topic", gp.p.Topic,
			"partition", gp.p.ID, "messages", lost, "now_from", o)
	}
	f.c.store.Set(gp.g.name, gp.g.topic.Name(), []wire.PartitionOffset{{Partition: gp.p.ID, Offset: floor}}, nil)
}

// maxRedeliverOffsets is the most offsets one Redeliver frame lists (the
// count is a uint16); more in one batch take more frames.
const maxRedeliverOffsets = 1<<16 - 1

// redeliver sends the messages at offs (sorted) again as Redeliver frames,
// one per batch they fall in.
func (f *msgFeed) redeliver(attempt uint32, offs []int64) {
	gp, out, set := f.gp, f.m.out, &f.gp.g.set
	topic := wire.Unqualified(gp.p.Topic) // as its tenant names it
	sent := false
	for len(offs) > 0 {
		var frame []byte
		var these []int64
		err := gp.p.Log.Read(offs[0], 1, func(b wire.Batch) bool {
			end := b.BaseOffset() + int64(b.Count())
			n := 0
			for n < len(offs) && offs[n] < end && n < maxRedeliverOffsets {
				n++
			}
			these = offs[:n:n]
			body := wire.AppendRedeliverPrefix(nil, wire.RedeliverPrefix{Topic: topic, Partition: gp.p.ID,
				Attempt: attempt, Offsets: these})
			frame = wire.AppendHeader(make([]byte, 0, wire.HeaderSize+len(body)+len(b)), wire.TypeRedeliver, 0, 0, len(body)+len(b))
			frame = append(append(frame, body...), b...)
			return false
		})
		if err != nil || frame == nil {
			// Gone (retention) or unreadable: it can never be delivered.
			lo, _ := gp.p.Log.Bounds()
			if offs[0] < lo {
				f.skipTo(lo, "retention removed them before they were acked")
			} else {
				f.c.log.Error("a message to redeliver cannot be read; dropping it", "group", gp.g.name,
					"topic", topic, "partition", gp.p.ID, "offset", offs[0], "err", err)
				f.forget([]int64{offs[0]})
			}
			offs = offs[1:]
			continue
		}
		gp.mu.Lock()
		if !f.live() {
			gp.mu.Unlock()
			return
		}
		gp.acks.Redelivered(these, attempt, f.c.now()+set.ackWait)
		gp.mu.Unlock()
		out.SendCopy(frame)
		sent = true
		offs = offs[len(these):]
	}
	if sent {
		out.Kick()
	}
}

// forget acks offsets that will not be delivered again (dead-lettered, or
// unreadable).
func (f *msgFeed) forget(offs []int64) {
	gp := f.gp
	gp.mu.Lock()
	n := 0
	for _, o := range offs {
		n += gp.acks.Ack(o, o+1)
	}
	if gp.owner != nil {
		gp.owner.settle(int64(n), gp.g.set.maxUnacked)
	}
	gp.committed = gp.acks.Floor()
	floor := gp.acks.Floor()
	gp.mu.Unlock()
	f.c.store.Set(gp.g.name, gp.g.topic.Name(), []wire.PartitionOffset{{Partition: gp.p.ID, Offset: floor}}, nil)
}

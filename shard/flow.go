package shard

import (
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Flow control: how a subscriber that falls behind slows its producers
// instead of growing memory, within bounds.
//
// When a publish is fanned out to a subscriber whose outbox is past a quarter of its
// limit, the shard holds the publish's ack back instead of sending it. A
// producer's unacknowledged window (the client's pending-bytes bound) then
// fills and the producer waits, so it runs at the pace of its slowest
// subscriber. The bounds that keep one bad subscriber from stalling everyone:
//
//   - an ack is held at most MaxAckDelay, then sent anyway;
//   - a subscriber under pressure for longer than SlowConsumerTimeout is
//     disconnected as a slow consumer, like one that passes its hard limit.
//     The check runs while its partition holds acks, which is whenever the
//     subscriber is under pressure and its producers keep publishing; a
//     subscriber that is behind while nobody publishes holds only what it
//     already has, within the hard limit.
//
// nats-server does the same in spirit: it stalls a producer's read loop
// briefly while a subscriber's pending bytes are high.

// heldAck is a publish ack waiting for its partition's subscribers.
type heldAck struct {
	out   *Outbox
	corr  uint32
	base  int64
	count uint32
	at    int64 // shard clock when the batch was appended
}

// epoch anchors the shard clock: monotonic nanoseconds, never 0.
var epoch = time.Now()

func clock() int64 { return int64(time.Since(epoch)) + 1 }

func (s *Shard) sendAck(p *Partition, a heldAck) {
	var buf [wire.PublishAckSize]byte
	a.out.SendCopy(wire.AppendPublishAck(buf[:0], a.corr, wire.PublishAck{Partition: p.ID, BaseOffset: a.base, Count: a.count}))
	s.touch(a.out)
}

func (s *Shard) hold(p *Partition, a heldAck) {
	if len(p.held) == 0 {
		s.held = append(s.held, p)
	}
	p.held = append(p.held, a)
}

// releaseHeld runs after every pass and on the flow-control tick: it sends
// the acks of partitions whose subscribers have drained, and acks held past
// MaxAckDelay, and disconnects subscribers under pressure for too long.
func (s *Shard) releaseHeld() {
	kept := s.held[:0]
	for _, p := range s.held {
		if s.releasePartition(p) {
			kept = append(kept, p)
		}
	}
	clear(s.held[len(kept):])
	s.held = kept
}

// releasePartition reports whether p still holds acks.
func (s *Shard) releasePartition(p *Partition) bool {
	if !s.underPressure(p) {
		s.releaseAll(p)
		return false
	}
	n := 0
	for n < len(p.held) && s.now-p.held[n].at >= int64(s.cfg.MaxAckDelay) {
		s.sendAck(p, p.held[n])
		n++
	}
	p.held = append(p.held[:0], p.held[n:]...)
	return len(p.held) > 0
}

// underPressure reports whether any subscriber of p is past a quarter of its limit,
// disconnecting those that have been for longer than the timeout.
func (s *Shard) underPressure(p *Partition) bool {
	pressure := false
	for i := 0; i < len(p.subs); {
		sub := p.subs[i]
		over, since := sub.Pressure()
		if over && s.now-since > int64(s.cfg.SlowConsumerTimeout) {
			sub.MarkSlow()
			s.touch(sub)
			p.subs = append(p.subs[:i], p.subs[i+1:]...)
			p.nsubs.Store(int32(len(p.subs)))
			continue
		}
		if over {
			sub.Refresh()
		}
		pressure = pressure || over
		i++
	}
	return pressure
}

func (s *Shard) releaseAll(p *Partition) {
	for _, a := range p.held {
		s.sendAck(p, a)
	}
	clear(p.held)
	p.held = p.held[:0]
}

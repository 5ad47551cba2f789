package loadtest

import (
	"sync/atomic"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// subscriber receives every message of the run and checks it.
type subscriber struct {
	c   conn
	sub subscription
	gc  *client.GroupConsumer

	// Handler-owned state; read by others only after done.
	lat       *timings // from each message's intended send time to its handler
	seqs      []seqTracker
	malformed uint64
	trace     [][2]int64 // intended send time and latency per message, if logged
	untraced  uint64     // messages past the trace's capacity

	received atomic.Uint64 // messages handled, duplicates included
	unique   atomic.Uint64
	lastRecv atomic.Int64 // clock of the last delivery
}

func newSubscriber(producers int) *subscriber {
	return &subscriber{lat: newTimings(), seqs: make([]seqTracker, producers)}
}

// handle is the delivery handler: one clock read, one histogram record and
// a bitmap update per message.
func (s *subscriber) handle(d *client.Delivery) {
	t := now()
	prod, seq, sent, ok := readHeader(d.Value)
	if !ok || int(prod) >= len(s.seqs) {
		s.malformed++
		return
	}
	lat := max(t-sent, histMin)
	if s.trace != nil {
		if len(s.trace) < cap(s.trace) {
			s.trace = append(s.trace, [2]int64{sent, lat})
		} else {
			s.untraced++
		}
	}
	s.lat.record(lat, t)
	if s.seqs[prod].add(seq) {
		s.unique.Add(1)
	}
	s.received.Add(1)
	s.lastRecv.Store(t)
}

// seqTracker records which sequence numbers of one producer arrived.
type seqTracker struct {
	seen       []uint64 // bitmap
	max        uint64   // highest seen + 1
	dup, reord uint64
}

// add records seq and reports whether it is new.
func (t *seqTracker) add(seq uint64) bool {
	w := int(seq >> 6)
	if w >= len(t.seen) {
		t.seen = append(t.seen, make([]uint64, w-len(t.seen)+1+len(t.seen))...)
	}
	bit := uint64(1) << (seq & 63)
	if t.seen[w]&bit != 0 {
		t.dup++
		return false
	}
	t.seen[w] |= bit
	if seq+1 < t.max {
		t.reord++
	} else {
		t.max = seq + 1
	}
	return true
}

package ring

import (
	"sync/atomic"
	"time"
)

// spinRounds bounds how many times Wait re-checks the queue before it
// parks: a microsecond or two of atomic loads, which catches the next item
// of a burst without a park and wake-up. It does not yield with
// runtime.Gosched: on a goroutine locked to its thread (a pinned shard)
// every Gosched hands the P away and back through two futex calls, which
// measured as the broker's largest CPU cost at low rates.
const spinRounds = 128

// parker is the park/wake protocol shared by both queues. The consumer
// announces that it is going to sleep, re-checks the queue and blocks on
// ch; producers notice the announcement with one atomic load and send a
// token.
//
// Invariant: at most one token is sent per announcement, because only the
// goroutine that flips sleeping from 1 to 0 sends, and the consumer consumes
// that token (or wins the flip itself) before it announces again. So ch is
// empty whenever the consumer starts a new round and a token received always
// belongs to the current round.
type parker struct {
	sleeping atomic.Uint32 // 1 from the consumer's announcement until someone claims the wake-up
	woken    atomic.Bool   // a Wake that the consumer has not yet acted on
	ch       chan struct{} // buffer of 1: a token sent before the receive is not lost
	timer    *time.Timer   // reused for every timed park, so Wait never allocates
}

// init prepares the channel and the reusable, initially stopped timer.
func (p *parker) init() {
	p.ch = make(chan struct{}, 1)
	p.timer = time.NewTimer(time.Hour)
	p.timer.Stop()
}

// notify is the producer's fast path, called after publishing: a single
// atomic load unless the consumer has announced that it is parking.
func (p *parker) notify() {
	if p.sleeping.Load() != 0 {
		p.signal()
	}
}

// signal claims the wake-up and sends the token. Only the winner of the CAS
// sends, which is what keeps at most one token in flight. The send cannot
// find the buffer full (see the invariant), so default is never taken; it
// only keeps a producer from ever blocking here.
func (p *parker) signal() {
	if p.sleeping.CompareAndSwap(1, 0) {
		select {
		case p.ch <- struct{}{}:
		default:
		}
	}
}

// wake records a forced wake-up and unparks the consumer if it is parked.
// Storing woken before the CAS pairs with the consumer storing sleeping
// before loading woken (the same Dekker argument as for items), so the
// consumer either sees woken or gets a token.
func (p *parker) wake() {
	p.woken.Store(true)
	p.signal()
}

// wait spins briefly and then parks until ready reports true, a Wake
// arrives, or the timeout passes. It reports ready() at the moment it
// returns.
func (p *parker) wait(ready func() bool, timeout time.Duration) bool {
	for range spinRounds {
		if ready() {
			return true
		}
		if p.woken.Load() {
			break
		}
	}
	return p.park(ready, timeout)
}

// park runs announce/re-check/block rounds. A token that arrives while the
// queue still looks empty (an MPSC producer published a slot behind one
// that another producer claimed but has not written yet) starts another
// round; the producer that publishes the head slot will wake us again.
func (p *parker) park(ready func() bool, timeout time.Duration) bool {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		p.sleeping.Store(1)
		if ready() || p.woken.Load() {
			p.cancel()
			break
		}
		if !p.block(deadline) {
			p.cancel()
			break
		}
		if ready() || p.woken.Load() {
			break
		}
	}
	p.woken.Swap(false) // Swap, not Store: observing Wake's store synchronizes with it
	return ready()
}

// cancel withdraws an announcement. If a producer or Wake already won the
// CAS, its token is on its way (the winner sends right after the CAS) and
// must be received so that ch is empty for the next round.
func (p *parker) cancel() {
	if !p.sleeping.CompareAndSwap(1, 0) {
		<-p.ch
	}
}

// block waits for a token or for the deadline (zero: no deadline). It
// reports whether a token was received.
func (p *parker) block(deadline time.Time) bool {
	if deadline.IsZero() {
		<-p.ch
		return true
	}
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	p.timer.Reset(d)
	select {
	case <-p.ch:
		p.timer.Stop()
		return true
	case <-p.timer.C:
		return false
	}
}

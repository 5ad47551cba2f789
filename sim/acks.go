package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/group/ackstate"
)

// The acks actor is one message-mode group partition as engine's feed
// (group/coord/feed.go, group/coord/dlq.go) drives group/ackstate.State: a
// partition that grows and loses its head to retention, first deliveries
// gated by max-unacked and the window, a consumer that acks, nacks or
// drops what it gets, expiries and retries on the simulated clock,
// dead-lettering after max-deliveries (a write that may fail and is
// retried), and takeovers by a new owner.
const (
	acksMaxUnacked = 64
	acksMaxWindow  = 256
	acksMaxBatch   = 8
	acksMaxDeliver = 4 // max-deliveries
	acksWait       = int64(20 * time.Millisecond)
	acksDLQRetry   = int64(10 * time.Millisecond)
	acksDrainSteps = 100_000
)

var acksBackoff = []int64{int64(time.Millisecond), int64(5 * time.Millisecond), int64(15 * time.Millisecond)}

type acksActor struct {
	st         *ackstate.State
	logStart   int64 // the partition's first offset (retention moves it)
	logEnd     int64 // its end
	msgs       map[int64]*ackMsg
	held       []int64 // delivered to the consumer, not yet answered
	redo       map[uint32][]int64
	dead       []int64
	deadLetter int // messages dead-lettered, for the trace
}

// ackMsg is the model of one delivered message.
type ackMsg struct {
	deliveries uint32
	done       bool // acked, dead-lettered or lost to retention
	dead       bool
}

func newAcksActor(*World) (Actor, error) {
	return &acksActor{st: ackstate.New(0), msgs: map[int64]*ackMsg{}, redo: map[uint32][]int64{}}, nil
}

func (a *acksActor) Name() string { return "acks" }

func (a *acksActor) Step(w *World) error {
	switch r := w.Rand.IntN(100); {
	case r < 15:
		a.logEnd += 1 + w.Rand.Int64N(20)
		w.Tracef("acks publish end=%d", a.logEnd)
		return nil
	case r < 35:
		return a.deliver(w)
	case r < 55:
		return a.ack(w)
	case r < 62:
		return a.nack(w)
	case r < 67:
		w.Tracef("acks consumer drops %d", len(a.held))
		a.held = a.held[:0]
		return nil
	case r < 90:
		return a.timers(w, false)
	case r < 94:
		return a.retain(w)
	case r < 98:
		a.st.Takeover(w.Now)
		a.held = a.held[:0]
		w.Tracef("acks takeover")
		return nil
	default:
		return a.drain(w)
	}
}

// deliver sends first deliveries while the gates allow, as deliverNew.
func (a *acksActor) deliver(w *World) error {
	sent := 0
	for range 1 + w.Rand.IntN(4) {
		next := a.st.Next()
		if next >= a.logEnd || a.st.Unacked() >= acksMaxUnacked || a.st.Window() >= acksMaxWindow {
			break
		}
		if next < a.logStart {
			return a.skipTo(w, a.logStart)
		}
		to := min(a.logEnd, next+1+w.Rand.Int64N(acksMaxBatch))
		a.st.Delivered(next, to, w.Now+acksWait)
		for o := next; o < to; o++ {
			if a.msgs[o] != nil {
				return fmt.Errorf("offset %d delivered for the first time twice", o)
			}
			a.msgs[o] = &ackMsg{deliveries: 1}
			a.held = append(a.held, o)
		}
		sent += int(to - next)
	}
	w.Tracef("acks deliver %d: next=%d unacked=%d window=%d", sent, a.st.Next(), a.st.Unacked(), a.st.Window())
	return nil
}

// ack acks some of what the consumer holds, one by one or as a range.
func (a *acksActor) ack(w *World) error {
	if len(a.held) == 0 {
		w.Tracef("acks ack: nothing held")
		return nil
	}
	i := w.Rand.IntN(len(a.held))
	from := a.held[i]
	to := from + 1
	if w.Rand.IntN(4) == 0 {
		to += w.Rand.Int64N(16)
	}
	want := 0
	for o := max(from, a.st.Floor()); o < min(to, a.st.Next()); o++ {
		if m := a.msgs[o]; m != nil && !m.done {
			m.done = true
			want++
		}
	}
	n := a.st.Ack(from, to)
	a.held = slices.Delete(a.held, i, i+1)
	w.Tracef("acks ack [%d,%d): %d newly, floor=%d", from, to, n, a.st.Floor())
	if n != want {
		return fmt.Errorf("ack [%d,%d) acked %d newly, the model %d", from, to, n, want)
	}
	return nil
}

// nack nacks one held message, with or without a delay.
func (a *acksActor) nack(w *World) error {
	if len(a.held) == 0 {
		w.Tracef("acks nack: nothing held")
		return nil
	}
	i := w.Rand.IntN(len(a.held))
	o := a.held[i]
	a.held = slices.Delete(a.held, i, i+1)
	delay := int64(0)
	if w.Rand.IntN(2) == 0 {
		delay = w.Rand.Int64N(int64(30 * time.Millisecond))
	}
	inFlight := a.st.Nack(o, delay, "sim", w.Now, acksBackoff)
	m := a.msgs[o]
	want := o >= a.st.Floor() && m != nil && !m.done
	w.Tracef("acks nack %d delay=%d: %v", o, delay, inFlight)
	if inFlight != want {
		return fmt.Errorf("nack of %d reported in flight %v, the model %v", o, inFlight, want)
	}
	return nil
}

// timers runs the feed's timer pass: expiries, then what is due, which
// is redelivered or dead-lettered. A drain's consumer holds nothing and
// its dead-letter writes never fail.
func (a *acksActor) timers(w *World, draining bool) error {
	a.st.Expire(w.Now, acksBackoff)
	a.dead = a.st.Due(w.Now, acksMaxDeliver, a.dead[:0], a.redo)
	if err := a.redeliver(w, draining); err != nil {
		return err
	}
	if len(a.dead) > 0 {
		return a.deadLetterAll(w, !draining && w.Rand.IntN(4) == 0)
	}
	if !draining {
		w.Tracef("acks timers: nothing dead, floor=%d unacked=%d", a.st.Floor(), a.st.Unacked())
	}
	return nil
}

// redeliver sends what came due, by attempt in ascending order (the
// map's order would make the run depend on more than its seed).
func (a *acksActor) redeliver(w *World, draining bool) error {
	attempts := make([]uint32, 0, len(a.redo))
	for at := range a.redo {
		attempts = append(attempts, at)
	}
	slices.Sort(attempts)
	for _, at := range attempts {
		offs := a.redo[at]
		delete(a.redo, at)
		for _, o := range offs {
			m := a.msgs[o]
			switch {
			case m == nil || m.done:
				return fmt.Errorf("offset %d redelivered (attempt %d), but it was never delivered or is done", o, at)
			case m.deliveries+1 != at:
				return fmt.Errorf("offset %d redelivered as attempt %d after %d deliveries", o, at, m.deliveries)
			case at > acksMaxDeliver:
				return fmt.Errorf("offset %d delivered %d times, max-deliveries is %d", o, at, acksMaxDeliver)
			}
			m.deliveries = at
		}
		a.st.Redelivered(slices.Clone(offs), at, w.Now+acksWait)
		if !draining {
			a.held = append(a.held, offs...)
		}
		w.Tracef("acks redeliver attempt=%d %v", at, offs)
	}
	return nil
}

// deadLetterAll writes the dead messages to the dead-letter topic: on
// success they count as acked, on failure they are retried later.
func (a *acksActor) deadLetterAll(w *World, fail bool) error {
	w.Tracef("acks dead-letter %v failed=%v", a.dead, fail)
	if fail {
		a.st.DeadLetterFailed(a.dead, w.Now+acksDLQRetry)
		return nil
	}
	for _, o := range a.dead {
		m := a.msgs[o]
		switch {
		case m == nil || m.done:
			return fmt.Errorf("offset %d dead-lettered, but it was never delivered or is done", o)
		case m.deliveries != acksMaxDeliver:
			return fmt.Errorf("offset %d dead-lettered after %d deliveries, max-deliveries is %d", o, m.deliveries, acksMaxDeliver)
		}
		m.done, m.dead = true, true
		a.st.Ack(o, o+1)
		a.deadLetter++
	}
	return nil
}

// retain moves the partition's start, as retention does; the feed skips
// what it can no longer read.
func (a *acksActor) retain(w *World) error {
	a.logStart += w.Rand.Int64N(a.logEnd - a.logStart + 1)
	w.Tracef("acks retention start=%d", a.logStart)
	if a.logStart > a.st.Floor() {
		return a.skipTo(w, a.logStart)
	}
	return nil
}

func (a *acksActor) skipTo(w *World, o int64) error {
	want := 0
	for p := a.st.Floor(); p < min(o, a.st.Next()); p++ {
		if m := a.msgs[p]; m != nil && !m.done {
			m.done = true
			want++
		}
	}
	lost := a.st.SkipTo(o)
	w.Tracef("acks skip to %d: lost %d", o, lost)
	if lost != want {
		return fmt.Errorf("a skip to %d dropped %d unacked messages, the model %d", o, lost, want)
	}
	return nil
}

// drain stops the consumer (it acks nothing more) and runs the clock
// until nothing is pending: every message must then be acked or
// dead-lettered, each after exactly max-deliveries when dead-lettered.
// A message that is neither in flight nor waiting for a retry shows as
// unacked messages with nothing left to wake for.
func (a *acksActor) drain(w *World) error {
	a.held = a.held[:0]
	for range acksDrainSteps {
		if a.st.Unacked() == 0 {
			w.Tracef("acks drained: floor=%d next=%d dead-lettered=%d", a.st.Floor(), a.st.Next(), a.deadLetter)
			return a.checkDrained()
		}
		wake := a.st.NextWake()
		if wake == 0 {
			return fmt.Errorf("%d unacked messages, and none in flight or waiting for a retry: they are never delivered again", a.st.Unacked())
		}
		w.AdvanceTo(wake)
		if err := a.timers(w, true); err != nil {
			return err
		}
	}
	return fmt.Errorf("the drain did not end after %d timer passes (%d unacked)", acksDrainSteps, a.st.Unacked())
}

func (a *acksActor) checkDrained() error {
	if a.st.Floor() != a.st.Next() {
		return fmt.Errorf("drained, but the floor %d is below next %d", a.st.Floor(), a.st.Next())
	}
	for o, m := range a.msgs {
		if !m.done {
			return fmt.Errorf("drained, but offset %d is neither acked nor dead-lettered", o)
		}
	}
	return nil
}

// Check compares the state with the model, and bounds its memory: the
// window and the unacked count stay within their gates (plus the batch
// that crossed them), and the model keeps only the window.
func (a *acksActor) Check(*World) error {
	floor, next := a.st.Floor(), a.st.Next()
	for o := range a.msgs {
		if o < floor {
			delete(a.msgs, o)
		}
	}
	unacked := 0
	for o := floor; o < next; o++ {
		m := a.msgs[o]
		done := m == nil || m.done // nil: skipped over by SkipTo
		if a.st.Acked(o) != done {
			return fmt.Errorf("offset %d: Acked %v, the model %v", o, a.st.Acked(o), done)
		}
		if !done {
			unacked++
		}
	}
	switch {
	case floor < next && a.st.Acked(floor):
		return fmt.Errorf("the floor %d is acked: it should have moved", floor)
	case unacked != a.st.Unacked():
		return fmt.Errorf("unacked %d, the model %d", a.st.Unacked(), unacked)
	case a.st.Window() > acksMaxWindow+acksMaxBatch || a.st.Unacked() > acksMaxUnacked+acksMaxBatch:
		return fmt.Errorf("window %d, unacked %d: past their bounds", a.st.Window(), a.st.Unacked())
	case len(a.msgs) > int(a.st.Window()):
		return fmt.Errorf("the model keeps %d messages for a window of %d", len(a.msgs), a.st.Window())
	case len(a.held) > 8*acksMaxWindow:
		a.held = a.held[len(a.held)-acksMaxWindow:] // a consumer forgets what it never answers
	}
	return nil
}

// Crash: the state is memory only; the feed of the restarted broker
// starts again at the floor, which the group committed (offsets actor
// shows that commit survives), and every message above it is new again.
func (a *acksActor) Crash(w *World) error {
	floor := a.st.Floor()
	a.st = ackstate.New(floor)
	clear(a.msgs)
	a.held = a.held[:0]
	clear(a.redo)
	w.Tracef("acks restart at floor %d", floor)
	return nil
}

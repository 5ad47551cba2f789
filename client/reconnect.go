package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Reconnection.
//
// When the connection fails, the reader goroutine takes stock (disconnect),
// dials the addresses again with exponential backoff and jitter (redial),
// and carries on over the new connection (resume):
//
//   - Calls waiting for an answer (admin calls, fetches, a Subscribe being
//     made) fail with an error wrapping ErrConnectionLost: IsRetryable.
//   - Publishes not yet written wait for the new connection. Publishes
//     written but not acknowledged are sent again, in their order, when the
//     client is idempotent (the broker answers a batch it already has with
//     its offsets); otherwise they fail with ErrConnectionLost, retryable,
//     and MayHaveBeenStored says they may be in the log.
//   - Subscriptions resume: each partition from the offset after the last
//     message the client received, so a durable topic is followed with no
//     gap and no duplicate. A memory topic is resumed the same way while the
//     broker runs on (its log keeps recent messages in memory); after a
//     broker restart its offsets start again, so it resumes at the live
//     tail and the next delivery's Missed says that an unknown number may
//     have been missed. Where the log no longer holds the offset, Missed
//     counts what retention took.

// State is where a client's connection stands.
type State uint8

// States, in the order a client goes through them.
const (
	// StateConnected: Dial connected.
	StateConnected State = iota + 1
	// StateDisconnected: the connection was lost; the client is dialling
	// again.
	StateDisconnected
	// StateReconnected: a new connection took over.
	StateReconnected
	// StateClosed: the client stopped, after Close or for good after a
	// lost connection (Err says why).
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateReconnected:
		return "reconnected"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// setState tells the state handler, if any.
func (c *Client) setState(s State, err error) {
	if c.opts.stateHandler != nil {
		c.opts.stateHandler(s, err)
	}
}

// Reconnections counts the connections that took over from a lost one.
func (c *Client) Reconnections() uint64 { return c.reconnected.Load() }

// splitAddrs returns the comma-separated addresses of addr followed by
// more, trimmed, without empty ones and repeats.
func splitAddrs(addr string, more []string) []string {
	var out []string
	for _, a := range append(strings.Split(addr, ","), more...) {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// dialAny tries every address once, in order, starting with the one that
// worked last; it returns the first connection made, or every failure.
func (c *Client) dialAny(ctx context.Context) (*link, error) {
	var errs []error
	for i, addr := range c.addrs {
		l, err := c.dialOne(ctx, addr)
		if err == nil {
			// The address that worked is tried first next time.
			c.addrs = append(append([]string{addr}, c.addrs[:i]...), c.addrs[i+1:]...)
			return l, nil
		}
		var we *wire.Error
		if errors.As(err, &we) && !IsRetryable(we) {
			return nil, err // the broker refused the handshake itself
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// dialFirst makes the client's first connection: one round over the
// addresses, or with WithRetryOnFailedConnect rounds with the reconnect
// backoff between them until one works, ctx ends or the attempts are used
// up.
func (c *Client) dialFirst(ctx context.Context) (*link, error) {
	l, err := c.dialAny(ctx)
	for n := 0; err != nil && c.opts.retryFirst && (c.opts.reconnectAttempts < 0 || n < c.opts.reconnectAttempts); n++ {
		var we *wire.Error
		if errors.As(err, &we) && !IsRetryable(we) {
			return nil, err
		}
		t := time.NewTimer(backoff(n, c.opts.reconnectMin, c.opts.reconnectMax))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w; the last attempt: %w", ctx.Err(), err)
		}
		l, err = c.dialAny(ctx)
	}
	return l, err
}

// backoff is the wait before redial attempt n (from 0): exponential from
// the minimum to the maximum, with jitter over its upper half, so that
// clients that lost the same broker do not come back in step.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for range n {
		if d >= hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	d = min(d, hi)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// reconnect takes stock of the lost connection, dials until a new one
// takes over, and resumes on it. It returns an error when the client is
// to stop instead: closed meanwhile, or attempts used up.
func (c *Client) reconnect(cause error) error {
	c.disconnect(cause)
	if c.opts.stateHandler != nil {
		c.setState(StateDisconnected, cause)
	} else {
		c.report(fmt.Errorf("%w; reconnecting", cause))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	last := cause
	for n := 0; c.opts.reconnectAttempts < 0 || n < c.opts.reconnectAttempts; n++ {
		t := time.NewTimer(backoff(n, c.opts.reconnectMin, c.opts.reconnectMax))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return c.stopped()
		}
		l, err := c.dialAny(ctx)
		if err == nil {
			if c.Err() != nil { // closed while the handshake ran
				_ = l.Close()
				return c.stopped()
			}
			c.resume(l)
			c.reconnected.Add(1)
			c.setState(StateReconnected, nil)
			return nil
		}
		if c.Err() != nil {
			return c.stopped()
		}
		var we *wire.Error
		if errors.As(err, &we) && !IsRetryable(we) {
			return fmt.Errorf("%w: reconnecting: %w", ErrConnectionLost, err)
		}
		last = err
	}
	return fmt.Errorf("%w: gave up after %d attempts to reconnect: %w", ErrConnectionLost, c.opts.reconnectAttempts, last)
}

// disconnect takes stock after the connection failed. Holding wconn, it
// knows that no write is under way and none starts (live is false until
// resume), so every batch is either written (the broker may have it) or
// not.
func (c *Client) disconnect(cause error) {
	l := c.link.Load()
	_ = l.Close() // a write under way fails at once
	c.wconn.Lock()
	c.wmu.Lock()
	c.live = false
	// Frames not written yet: batches stay queued for the new connection;
	// control frames belong to calls that fail below.
	q := c.outq[:0]
	for _, f := range c.outq {
		if f.b != nil {
			q = append(q, f)
		}
	}
	clear(c.outq[len(q):])
	c.outq = q
	queued := c.queuedBatches()
	c.pmu.Lock()
	var failed []*batch
	keep := c.resends()
	for corr, b := range c.inflight {
		if queued[b] || !b.written {
			continue
		}
		if keep {
			continue // resume sends it again
		}
		delete(c.inflight, corr)
		c.unacked.Add(-b.reserved)
		failed = append(failed, b)
	}
	lost := fmt.Errorf("%w (the broker may have stored it; see MayHaveBeenStored)", cause)
	if len(failed) > 0 && c.asyncErr == nil {
		c.asyncErr = lost
	}
	c.wakeSpaceWaiters()
	c.failCalls(cause)
	c.pmu.Unlock()
	c.wmu.Unlock()
	c.wconn.Unlock()
	for _, b := range failed {
		b.frame, b.kept = nil, nil
		b.complete(wire.PublishAck{}, lost)
		if b.done == nil {
			c.report(lost)
		}
	}
}

// failCalls fails every call waiting for an answer. pmu held.
func (c *Client) failCalls(cause error) {
	for corr, ch := range c.calls {
		delete(c.calls, corr)
		ch <- response{err: cause}
	}
	clear(c.subCalls)
	clear(c.subEnds)
}

// resume makes l the connection and carries on over it: batches written
// to the old one and not acked go first, in their order (when the client
// resends), then what was queued meanwhile; subscriptions are made again
// from where they left off.
func (c *Client) resume(l *link) {
	sameRun := l.hello.Version >= 3 && c.runID == l.hello.RunID && c.link.Load().hello.Version >= 3
	var resend func()
	if c.resends() {
		// The batches written to the lost connection go before what was
		// queued meanwhile, in the same hold of wmu that lets writes start:
		// a writer that got in between would send a later batch of a
		// partition before an earlier one, which the broker refuses
		// (OUT_OF_ORDER_SEQUENCE) when it lost the earlier one. A batch
		// still queued (sent again after an earlier loss, and lost with
		// this connection before it was written) goes out from the queue,
		// not twice.
		resend = func() {
			queued := c.queuedBatches()
			c.pmu.Lock()
			var again []*batch
			for _, b := range c.inflight {
				if b.written && b.frame != nil && !queued[b] {
					again = append(again, b)
				}
			}
			c.pmu.Unlock()
			slices.SortFunc(again, func(a, b *batch) int { return cmp.Compare(a.order, b.order) })
			q := make([]outFrame, 0, len(again)+len(c.outq))
			for _, b := range again {
				q = append(q, outFrame{b: b})
			}
			c.outq = append(q, c.outq...)
		}
	}
	c.attach(l, resend)
	c.wmu.Lock()
	renew := c.idem != nil && c.idem.renewing
	c.wmu.Unlock()
	c.resubscribe(l.hello.Version, sameRun)
	c.signalWriter()
	if renew {
		// The connection was lost while a new producer id was being asked
		// for (or before the first came): ask again; the batches that
		// wait for it go out once it is in.
		go c.renewProducerID()
	}
}

// queuedBatches is the set of batches in outq, waiting for the writer.
// wmu held.
func (c *Client) queuedBatches() map[*batch]bool {
	queued := make(map[*batch]bool, len(c.outq))
	for _, f := range c.outq {
		if f.b != nil {
			queued[f.b] = true
		}
	}
	return queued
}

// resends reports whether batches written to a lost connection are sent
// again on the next one: only when the broker can tell a batch it already
// has (an idempotent producer), so that sending again writes no duplicate.
//
// A cluster's connection (cluster.go) keeps every written batch's frame
// until its answer too, idempotent or not: a batch a node refuses with
// NOT_LEADER goes on, frame and all, to the partition's new leader.
func (c *Client) resends() bool { return c.idempotent() || c.cluster != nil }

// subCall is a Subscribe in flight, for the subscriptions it serves: one
// new subscription, or, after a reconnection, every local subscription of
// a topic and partition. requested holds the resume offsets it asked for.
type subCall struct {
	subs      []*Subscription
	requested map[int32]int64
	unknown   []int32 // partitions resumed at the live tail with no way to count what was missed
	// replay: a broker older than version 3 replays from the original
	// start, and the reader drops what the subscriptions had already.
	replay bool
	// waited: a caller waits for the answer (callWith) and deals with a
	// refusal itself.
	waited bool
	// endNotice: the Subscribe, of subs[0] alone, asks the broker to say
	// when it ends the subscription (wire.FlagEndNotice).
	endNotice bool
}

// resubscribe asks the new connection for every subscription the old one
// had, each partition from where its deliveries left off. The reader calls
// it before it reads the new connection, so the answers find the calls.
func (c *Client) resubscribe(version uint16, sameRun bool) {
	c.smu.Lock()
	keys := make([][]*Subscription, 0, len(c.subs))
	for _, list := range c.subs {
		byPart := map[int32][]*Subscription{}
		var parts []int32
		for _, s := range list {
			if !s.confirmed {
				continue // its Subscribe failed with the connection
			}
			if _, ok := byPart[s.partition]; !ok {
				parts = append(parts, s.partition)
			}
			byPart[s.partition] = append(byPart[s.partition], s)
		}
		for _, p := range parts {
			keys = append(keys, byPart[p])
		}
	}
	c.smu.Unlock()
	for _, subs := range keys {
		first := subs[0]
		durable := slices.ContainsFunc(subs, func(s *Subscription) bool { return s.durable })
		sc := &subCall{subs: subs, requested: map[int32]int64{}}
		next := map[int32]int64{}
		for _, s := range subs {
			for p, off := range s.next {
				next[p] = max(next[p], off)
			}
		}
		req := wire.Subscribe{Topic: first.topic, Partition: first.partition, Start: Latest.wire()}
		switch {
		case version >= 3 && (durable || sameRun):
			for _, p := range slices.Sorted(maps.Keys(next)) {
				req.Resume = append(req.Resume, wire.PartitionStart{Partition: p, Offset: next[p]})
				sc.requested[p] = next[p]
			}
		case version >= 3 || first.start == Latest:
			// A memory topic on a broker that restarted, or a broker that
			// cannot resume: the live tail, with a gap nobody can count.
			for p := range next {
				sc.unknown = append(sc.unknown, p)
			}
		default:
			// A broker older than version 3 replays from the original
			// start; the reader drops what was delivered already.
			req.Start, sc.replay = first.start.wire(), true
		}
		corr := c.nextCorr()
		c.pmu.Lock()
		c.subCalls[corr] = sc
		c.pmu.Unlock()
		body := req.Append(nil)
		c.wmu.Lock()
		c.outq = append(c.outq, outFrame{frame: append(wire.AppendHeader(make([]byte, 0, wire.HeaderSize+len(body)), wire.TypeSubscribe, 0, corr, len(body)), body...)})
		c.wmu.Unlock()
	}
}

// subscribed applies a Subscribe's answer to the subscriptions it serves.
// It runs on the reader, before any delivery of theirs is read.
func (c *Client) subscribed(sc *subCall, r response) {
	if r.err != nil {
		return // the connection failed; a resumed subscription is asked again
	}
	if r.typ != wire.TypeSubscribeOK {
		err := fmt.Errorf("%w: expected %s, got %s", ErrProtocol, wire.TypeSubscribeOK, r.typ)
		if r.typ == wire.TypeError {
			if e, derr := wire.DecodeError(r.body); derr == nil {
				err = e
			}
		}
		if (sc.requested != nil || sc.unknown != nil) && !sc.waited {
			// A resumed subscription the new connection refused (its
			// topic was deleted meanwhile, say) ends, with the reason.
			for _, s := range sc.subs {
				c.removeSub(s)
				c.report(fmt.Errorf("subscription to %s ended: resuming it after a reconnection failed: %w", s.topic, err))
			}
		}
		return
	}
	ok, err := wire.DecodeSubscribeOK(r.body, c.hello().Version)
	if err != nil {
		c.report(fmt.Errorf("%w: SubscribeOK: %w", ErrProtocol, err))
		return
	}
	for _, s := range sc.subs {
		s.confirmed, s.durable = true, ok.Durable
		if s.next == nil {
			s.next = map[int32]int64{}
		}
		for _, st := range ok.Starts {
			if st.Offset < 0 {
				continue // a LATEST start from a broker older than version 3
			}
			if req, asked := sc.requested[st.Partition]; asked && st.Offset > req {
				s.noteMissed(st.Partition, st.Offset-req)
			}
			if next, ok := s.next[st.Partition]; sc.replay && ok && next > st.Offset {
				continue
			}
			s.next[st.Partition] = st.Offset
		}
		for _, p := range sc.unknown {
			s.noteMissed(p, -1)
		}
	}
}

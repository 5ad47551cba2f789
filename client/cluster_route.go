package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// How a lane moves from one node to the next (cluster.go has the why).
//
// A lane routes (cur is a node client) or is held (cur is nil, held is
// open). It is held when it is new (nobody knows its leader yet), when its
// node answers one of its batches NOT_LEADER or SHUTTING_DOWN
// (Cluster.acked), and when its node's connection is lost
// (Cluster.nodeStopped). Holding takes back what the node had not
// written (takeLane) and counts what it had (draining); each answer to
// those comes back through acked, re-routed or final. The router
// goroutine then, for each held lane whose node has answered everything:
// asks a node who leads the partition unless a refusal named the leader
// (probe), dials that node if need be, and hands it the lane (adopt):
// the batches in their order, then the publishers waiting on held.
//
// Every step runs under the Cluster's mu, so a batch is at every moment in
// one place: a node client's maps or queue, or a lane. Flush counts on
// that.

// acked is a node client's acked (publish.go) in a cluster: the same,
// except that a batch the node refuses as not its leader's (or as
// stopping) goes back to its lane for the next leader instead of failing.
func (cl *Cluster) acked(c *Client, corr uint32, a wire.PublishAck, err error) bool {
	cl.mu.Lock()
	c.pmu.Lock()
	b, ok := c.inflight[corr]
	if !ok {
		c.pmu.Unlock()
		cl.mu.Unlock()
		return false
	}
	delete(c.inflight, corr)
	c.unacked.Add(-b.reserved)
	c.wakeSpaceWaiters()
	ln := cl.laneLocked(b.key)
	move := err != nil && !cl.closed && (reroutes(b, err) || steppedDown(c, ln, b, err))
	if !move && b.kept != nil {
		c.doneFrames = append(c.doneFrames, b.kept) // the writer recycles it
	}
	c.pmu.Unlock()
	if move {
		cl.moveLocked(c, ln, b, err)
		cl.mu.Unlock()
		cl.kick()
		return true
	}
	if b.idem {
		c.idemAnswered(b, err)
	}
	if ln.from == c {
		cl.answeredLocked(ln)
	}
	if err == nil {
		ln.attempt = 0
	} else if b.done == nil && cl.asyncErr == nil {
		cl.asyncErr = err
	}
	cl.mu.Unlock()
	if err != nil && (errors.Is(err, ErrUnknownPartition) || errors.Is(err, ErrUnknownTopic)) {
		c.forget(b.key.topic)
		cl.forgetTopic(b.key.topic)
	}
	if err == nil && c.opts.ackHandler != nil {
		c.opts.ackHandler(BatchAck{Topic: b.key.topic, Partition: a.Partition, BaseOffset: a.BaseOffset, Count: b.count})
	}
	b.complete(a, err)
	if err != nil && b.done == nil {
		c.report(err)
	}
	return true
}

// reroutes reports whether a batch refused with err goes to the next
// leader: a NOT_LEADER or SHUTTING_DOWN refusal, which store nothing,
// until the batch's re-route timeout. A NOT_LEADER that says the batch
// may yet be stored (its leader stepped down with it in flight) is
// re-routed only when the batch is idempotent, which makes the retry
// store it once.
func reroutes(b *batch, err error) bool {
	if b.retryBy != 0 && clock() > b.retryBy {
		return false
	}
	switch {
	case errors.Is(err, ErrShuttingDown):
		return true
	case errors.Is(err, ErrNotLeader):
		return b.idem || !leaderOutcomeUnknown(err)
	}
	return false
}

// steppedDown reports whether an idempotent batch refused with
// OUT_OF_ORDER_SEQUENCE by c, a node its partition is leaving (c refused
// one of its batches NOT_LEADER already), goes to the next leader too: a
// node that stepped down judges a batch's sequence before its
// leadership, and forgets the batches whose proposals failed as it
// stepped down, so a batch sent behind them is refused as out of order
// rather than as not its leader's. It was not stored; the next leader
// takes it in sequence after them. mu held.
func steppedDown(c *Client, ln *lane, b *batch, err error) bool {
	return b.idem && errors.Is(err, ErrOutOfOrderSequence) && (ln.from == c || ln.cur.Load() != c) &&
		(b.retryBy == 0 || clock() <= b.retryBy)
}

// leaderOutcomeUnknown reports whether a NOT_LEADER answer to a publish
// says that the batch may have been stored: its leader stepped down with
// it in flight. The protocol says so in the message only (PROTOCOL.md
// §7.1, code 34).
func leaderOutcomeUnknown(err error) bool {
	var we *wire.Error
	return errors.As(err, &we) && we.Code == wire.CodeNotLeader &&
		(strings.Contains(we.Message, "may have been stored") || strings.Contains(we.Message, "stepped down"))
}

// moveLocked puts b, refused with err by c, back in its lane, holding the
// lane if it still routes to c, and notes the leader the refusal names.
// mu held.
func (cl *Cluster) moveLocked(c *Client, ln *lane, b *batch, err error) {
	if b.retryBy == 0 {
		b.retryBy = clock() + int64(cl.opts.rerouteTimeout)
	}
	switch cur := ln.cur.Load(); {
	case cur == c:
		cl.holdLocked(ln, c)
	case ln.from == c:
		cl.answeredLocked(ln)
	case cur != nil:
		// Never so: a lane leaves a client only once every batch it had
		// written there is answered. Keep the order anyway.
		cl.holdLocked(ln, cur)
	default:
		cl.holdStartLocked(ln)
	}
	ln.sent = append(ln.sent, b)
	cl.rerouted.Add(1)
	ln.lastErr, ln.target, ln.avoid = err, "", c.addr()
	if id, addr, ok := wire.LeaderOf(err); ok {
		cl.ids[addr] = id
		ln.target = leaderHint(err, c)
	}
	if errors.Is(err, ErrShuttingDown) {
		cl.nodeLocked(c.addr()).draining = true
	}
	if s := cl.subbed[ln.key]; s != nil {
		s.nudge() // its partition may have moved too
	}
	// The first re-route goes at once; one refused again waits, so that
	// nodes that disagree about the leader are not asked in a busy loop.
	ln.attempt++
	if ln.attempt > 1 {
		ln.notBefore = time.Now().Add(backoff(ln.attempt-2, cl.opts.reconnectMin, cl.retryMax()))
	}
}

// holdLocked stops ln routing to c and takes back what c had not written
// of it; what c had written comes back as it is answered. mu held.
func (cl *Cluster) holdLocked(ln *lane, c *Client) {
	c.wmu.Lock()
	sent, unsent, ps, pending := c.takeLane(ln.key)
	ln.cur.Store(nil)
	c.wmu.Unlock()
	by := clock() + int64(cl.opts.rerouteTimeout)
	for _, list := range [][]*batch{sent, unsent} {
		for _, b := range list {
			if b.retryBy == 0 {
				b.retryBy = by
			}
		}
	}
	ln.sent = append(ln.sent, sent...)
	ln.unsent = append(ln.unsent, unsent...)
	cl.rerouted.Add(uint64(len(sent) + len(unsent)))
	if ps != nil {
		ln.ps = ps
	}
	ln.from, ln.draining = nil, 0
	if pending > 0 {
		ln.from, ln.draining = c, pending
	}
	cl.holdStartLocked(ln)
}

// holdStartLocked marks ln held (if it was not) and due for the router.
// mu held.
func (cl *Cluster) holdStartLocked(ln *lane) {
	if ln.held == nil {
		ln.held = make(chan struct{})
		ln.heldAt = time.Now()
	}
	cl.pending[ln] = struct{}{}
}

// answeredLocked counts one answer to a batch ln's old client had written;
// after the last, the lane may move on. mu held.
func (cl *Cluster) answeredLocked(ln *lane) {
	if ln.draining--; ln.draining <= 0 {
		ln.from, ln.draining = nil, 0
		cl.kick()
	}
}

// failure is a batch to complete with an error.
type failure struct {
	b   *batch
	err error
}

// nodeStopped takes everything a node's client holds as it stops (its
// connection lost, or closed), and holds the lanes it routed. Batches it
// had written go to their lanes when idempotent (the next leader
// recognises them); a plain one fails, as it may have been stored. It
// returns the batches to fail; the client completes them once stopped.
func (cl *Cluster) nodeStopped(c *Client, cause error) []failure {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	c.wconn.Lock()
	c.wmu.Lock()
	c.pmu.Lock()
	held, parts := c.takeAll(cause)
	var routed []*lane
	for _, tr := range *cl.routes.Load() {
		for _, ln := range tr.lanes {
			if ln.cur.Load() == c {
				ln.cur.Store(nil)
				routed = append(routed, ln)
			}
		}
	}
	c.pmu.Unlock()
	c.wmu.Unlock()
	c.wconn.Unlock()
	if n := cl.nodes[c.addr()]; n != nil && n.c == c {
		n.c, n.lost = nil, true
	}
	var failed []failure
	if cl.closed || errors.Is(cause, ErrClosed) {
		for _, lb := range held {
			for _, list := range [][]*batch{lb.sent, lb.unsent} {
				for _, b := range list {
					failed = append(failed, failure{b, cause})
				}
			}
		}
		return failed
	}
	for _, ln := range routed {
		cl.holdStartLocked(ln)
		ln.lastErr, ln.target = cause, ""
	}
	lost := fmt.Errorf("%w (the broker may have stored it; see MayHaveBeenStored)", cause)
	by := clock() + int64(cl.opts.rerouteTimeout)
	for k, lb := range held {
		ln := cl.laneLocked(k)
		if ln.from == c {
			ln.from, ln.draining = nil, 0
		}
		if cur := ln.cur.Load(); cur != nil {
			cl.holdLocked(ln, cur) // never so (see moveLocked)
		}
		for _, b := range lb.sent {
			if b.written && !b.idem {
				failed = append(failed, failure{b, lost})
				if b.done == nil && cl.asyncErr == nil {
					cl.asyncErr = lost
				}
				continue
			}
			if b.retryBy == 0 {
				b.retryBy = by
			}
			ln.sent = append(ln.sent, b)
			cl.rerouted.Add(1)
		}
		for _, b := range lb.unsent {
			if b.retryBy == 0 {
				b.retryBy = by
			}
			ln.unsent = append(ln.unsent, b)
			cl.rerouted.Add(1)
		}
		cl.holdStartLocked(ln)
		ln.lastErr, ln.target = cause, ""
	}
	for k, ps := range parts {
		cl.laneLocked(k).ps = ps
	}
	cl.kick()
	return failed
}

// router moves held lanes to their leaders, on every kick and when a
// backoff or a batch's re-route timeout is due.
func (cl *Cluster) router() {
	defer cl.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-cl.wake:
		case <-t.C:
		case <-cl.closing:
			return
		}
		t.Reset(cl.routePass())
	}
}

// routePass does what each held lane is ready for, and returns how long
// until something is due.
func (cl *Cluster) routePass() time.Duration {
	now := time.Now()
	next := time.Hour
	var failed []failure
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return next
	}
	for ln := range cl.pending {
		if d, ok := cl.expireLocked(ln, &failed); !ok {
			continue
		} else {
			next = min(next, d)
		}
		if ln.from != nil {
			continue // its old node's answers come first
		}
		if wait := ln.notBefore.Sub(now); wait > 0 {
			next = min(next, wait)
			continue
		}
		if ln.target == "" {
			if !ln.probing {
				cl.probeLocked(ln)
			}
			continue
		}
		if d := cl.moveToTarget(ln, now); d > 0 {
			next = min(next, d)
		}
	}
	cl.mu.Unlock()
	for _, f := range failed {
		f.b.complete(wire.PublishAck{}, f.err)
		if f.b.done == nil {
			cl.report(f.err)
		}
	}
	return max(next, time.Millisecond)
}

// moveToTarget moves ln to its target's client, dialling it first if need
// be; it returns how long until it is worth looking again (0: a kick
// comes). mu held.
func (cl *Cluster) moveToTarget(ln *lane, now time.Time) time.Duration {
	n := cl.nodeLocked(ln.target)
	switch c := n.live(); {
	case n.draining:
		// Stopping: the leadership moves elsewhere; ask who has it.
		ln.target, ln.avoid = "", n.addr
		ln.attempt++
		d := backoff(ln.attempt-1, cl.opts.reconnectMin, cl.retryMax())
		ln.notBefore = now.Add(d)
		return d
	case c != nil:
		if c.adopt(ln) {
			close(ln.held)
			ln.held = nil
			delete(cl.pending, ln)
		} else {
			ln.target = "" // it stopped meanwhile
			cl.kick()
		}
	case n.dialed != nil:
	case now.Before(n.notBefore):
		return n.notBefore.Sub(now)
	default:
		cl.dialLocked(n)
	}
	return 0
}

// expireLocked fails what ln holds once a batch's re-route timeout has
// passed (all of it: a numbered batch's successors cannot be stored
// without it), and lets go of a lane left with nothing to do. It returns
// how long until the earliest timeout, and false when ln was let go.
// mu held.
func (cl *Cluster) expireLocked(ln *lane, failed *[]failure) (time.Duration, bool) {
	now := clock()
	first := int64(0)
	for _, list := range [][]*batch{ln.sent, ln.unsent} {
		for _, b := range list {
			if first == 0 || b.retryBy < first {
				first = b.retryBy
			}
		}
	}
	if first == 0 {
		if ln.from == nil && time.Since(ln.heldAt) > cl.opts.rerouteTimeout {
			delete(cl.pending, ln) // nobody waits; a publisher brings it back (owner)
			return 0, false
		}
		return time.Hour, true
	}
	if now < first {
		return time.Duration(first - now), true
	}
	err := cl.noRoute(ln.key, ln.lastErr, nil)
	for _, list := range [][]*batch{ln.sent, ln.unsent} {
		for _, b := range list {
			if b.idem && b.ps != nil {
				b.ps.inflight--
				b.ps.stale = true // a hole in its sequence
			}
			*failed = append(*failed, failure{b, err})
			if b.done == nil && cl.asyncErr == nil {
				cl.asyncErr = err
			}
		}
	}
	ln.sent, ln.unsent = nil, nil
	return time.Hour, true
}

// probeLocked asks a node, in the background, who leads ln's partition.
// mu held.
func (cl *Cluster) probeLocked(ln *lane) {
	ln.probing = true
	avoid := ln.avoid
	via := cl.viaLocked(avoid)
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		ctx, cancel := cl.opContext()
		defer cancel()
		c, err := via, error(nil)
		if c == nil {
			c, err = cl.anyClientBut(ctx, avoid)
		}
		var addr string
		if err == nil {
			addr, err = cl.probe(ctx, c, ln.key)
		}
		cl.mu.Lock()
		ln.probing = false
		if addr != "" {
			ln.target = addr
		} else {
			if c != nil {
				ln.avoid = c.addr()
			}
			ln.attempt++
			ln.notBefore = time.Now().Add(backoff(ln.attempt-1, cl.opts.reconnectMin, cl.retryMax()))
			if err != nil {
				ln.lastErr = err
			}
		}
		cl.mu.Unlock()
		cl.kick()
	}()
}

// probe asks via who leads key's partition: a Fetch at the partition's
// live end, which the leader answers (with nothing) and any other node
// refuses with NOT_LEADER, naming the leader it knows. It returns the
// leader's address, or "" and why not (no leader yet, a lost node). A
// node that refuses for another reason (an ACL that forbids reading, say)
// is taken as the place to start: a publish there finds the leader the
// same way.
func (cl *Cluster) probe(ctx context.Context, via *Client, key batchKey) (string, error) {
	_, err := via.Fetch(ctx, key.topic, int(key.partition), Latest, MaxBytes(1))
	if err == nil {
		return via.addr(), nil
	}
	if id, addr, ok := wire.LeaderOf(err); ok && leaderHint(err, via) != "" {
		cl.learn(id, addr)
		return addr, nil
	}
	if errors.Is(err, ErrNotLeader) || IsRetryable(err) || errors.Is(err, ErrClosed) || ctx.Err() != nil {
		return "", err
	}
	return via.addr(), nil
}

// owner returns the node client ln routes to, waiting while it is held:
// within ctx and WithRerouteTimeout.
func (cl *Cluster) owner(ctx context.Context, ln *lane) (*Client, error) {
	if c := ln.cur.Load(); c != nil {
		return c, nil
	}
	t := time.NewTimer(cl.opts.rerouteTimeout)
	defer t.Stop()
	for {
		cl.mu.Lock()
		if c := ln.cur.Load(); c != nil {
			cl.mu.Unlock()
			return c, nil
		}
		if cl.closed {
			cl.mu.Unlock()
			return nil, ErrClosed
		}
		if _, ok := cl.pending[ln]; !ok {
			ln.attempt, ln.notBefore = 0, time.Time{} // let go of while idle: start afresh
			cl.holdStartLocked(ln)
			cl.kick()
		}
		ln.heldAt = time.Now() // someone waits: not idle
		held, last := ln.held, ln.lastErr
		cl.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return nil, cl.noRoute(ln.key, last, ctx.Err())
		case <-cl.closing:
			return nil, ErrClosed
		case <-t.C:
			return nil, cl.noRoute(ln.key, last, nil)
		}
	}
}

// Publishing.

// Publish sends a message to its partition's leader and waits for the
// acknowledgement, re-routing it as the leader changes (see Cluster).
func (cl *Cluster) Publish(ctx context.Context, topic string, msg Message, opts ...PublishOption) (Ack, error) {
	now := publishClock(&msg)
	b, idx, err := cl.enqueue(ctx, topic, &msg, opts, now, true)
	if err != nil {
		return Ack{}, err
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return Ack{}, ctx.Err()
	}
	if b.err != nil {
		return Ack{}, b.err
	}
	return Ack{Partition: b.ack.Partition, Offset: b.ack.BaseOffset + int64(idx)}, nil
}

// PublishAsync queues a message for its partition's leader and returns, as
// Client.PublishAsync does: a failure is reported by the next Flush and
// to the error handler. It waits while the partition has no leader yet
// (the first message to a partition asks who leads it) and while its
// node's pending-bytes bound is reached.
func (cl *Cluster) PublishAsync(ctx context.Context, topic string, msg Message, opts ...PublishOption) error {
	now := publishClock(&msg)
	_, _, err := cl.enqueue(ctx, topic, &msg, opts, now, false)
	return err
}

func (cl *Cluster) enqueue(ctx context.Context, topic string, msg *Message, opts []PublishOption, now int64, sync bool) (*batch, int, error) {
	if err := wire.ValidateTopicName(topic); err != nil {
		return nil, 0, err
	}
	size := wire.MessageSize(msg.Key, msg.Value, msg.Headers)
	if limit := cl.MaxMessageBytes(); size > limit {
		return nil, 0, tooLarge(size, limit)
	}
	tr, err := cl.topic(ctx, topic)
	if err != nil {
		return nil, 0, err
	}
	ln, err := cl.lane(ctx, tr, cl.choose(tr, msg.Key, size, opts))
	if err != nil {
		return nil, 0, err
	}
	for {
		c, err := cl.owner(ctx, ln)
		if err != nil {
			return nil, 0, err
		}
		b, idx, err := c.enqueueLane(ctx, ln, msg, size, now, sync)
		switch {
		case err == nil:
			c.kick(now)
			return b, idx, nil
		case errors.Is(err, errRerouted), c.Err() != nil && ctx.Err() == nil && !cl.isClosed():
			// The lane moved, or its node stopped (which held its lanes).
		default:
			return nil, 0, err
		}
	}
}

func (cl *Cluster) isClosed() bool {
	select {
	case <-cl.closing:
		return true
	default:
		return false
	}
}

// PublishBatchAsync queues msgs, in order, as PublishAsync does, handing
// each run of messages bound for one partition to its leader's client at
// once (Client.PublishBatchAsync). A message that is too large, or a bad
// topic name, is refused before any message is queued; otherwise the
// error says how many were queued.
func (cl *Cluster) PublishBatchAsync(ctx context.Context, topic string, msgs []Message, opts ...PublishOption) error {
	if err := wire.ValidateTopicName(topic); err != nil {
		return err
	}
	limit := cl.MaxMessageBytes()
	for i := range msgs {
		m := &msgs[i]
		if size := wire.MessageSize(m.Key, m.Value, m.Headers); size > limit {
			return fmt.Errorf("message %d: %w", i, tooLarge(size, limit))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	tr, err := cl.topic(ctx, topic)
	if err != nil {
		return err
	}
	partOf := func(i int) int32 {
		m := &msgs[i]
		return cl.choose(tr, m.Key, wire.MessageSize(m.Key, m.Value, m.Headers), opts)
	}
	done := 0
	p := partOf(0)
	for done < len(msgs) {
		end, np := done+1, int32(-1)
		for ; end < len(msgs); end++ {
			if np = partOf(end); np != p {
				break
			}
		}
		if err := cl.burst(ctx, tr, p, msgs[done:end], &done); err != nil {
			return fmt.Errorf("%d of %d messages queued: %w", done, len(msgs), err)
		}
		p = np
	}
	return nil
}

// burst hands msgs, all for partition p, to its leader's client, counting
// in done what was queued.
func (cl *Cluster) burst(ctx context.Context, tr *topicRoute, p int32, msgs []Message, done *int) error {
	ln, err := cl.lane(ctx, tr, p)
	if err != nil {
		return err
	}
	for len(msgs) > 0 {
		c, err := cl.owner(ctx, ln)
		if err != nil {
			return err
		}
		n, err := c.appendLaneBurst(ctx, ln, msgs)
		if n > 0 {
			c.kick(clockUnread)
			*done += n
			msgs = msgs[n:]
		}
		switch {
		case err == nil, errors.Is(err, errRerouted), c.Err() != nil && ctx.Err() == nil && !cl.isClosed():
		default:
			return err
		}
	}
	return nil
}

// Flush sends everything queued before the call and waits until each
// message is acknowledged by its partition's leader or has failed, across
// every node and through any re-routing. It returns the first error of
// an asynchronous publish since the previous Flush, if any.
func (cl *Cluster) Flush(ctx context.Context) error {
	w := &flushWaiter{remaining: 1, done: make(chan struct{})}
	cl.mu.Lock()
	var clients []*Client
	for _, n := range cl.nodes {
		if c := n.live(); c != nil {
			clients = append(clients, c)
			c.attachFlush(w)
		}
	}
	w.mu.Lock()
	for ln := range cl.pending {
		for _, list := range [][]*batch{ln.sent, ln.unsent} {
			for _, b := range list {
				w.remaining++
				b.flushes = append(b.flushes, w)
			}
		}
	}
	w.mu.Unlock()
	cl.mu.Unlock()
	for _, c := range clients {
		c.signalWriter()
	}
	w.finishOne()
	select {
	case <-w.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-cl.closing:
		select {
		case <-w.done:
		default:
			return ErrClosed
		}
	}
	cl.mu.Lock()
	err := cl.asyncErr
	cl.asyncErr = nil
	cl.mu.Unlock()
	return err
}

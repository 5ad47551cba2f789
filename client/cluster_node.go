package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// A Cluster's connection to one node is an ordinary Client with c.cluster
// set (cluster.go). What it does differently lives here, so that a
// single broker's client takes none of these paths:
//
//   - it never reconnects: when its connection is lost it stops
//     (stopNode), handing every batch it holds to the Cluster, which sends
//     them on to their partitions' leaders;
//   - a batch answered NOT_LEADER or SHUTTING_DOWN goes back to the
//     Cluster instead of failing (Cluster.acked);
//   - publishes append to a partition's batch only while the partition's
//     lane routes to this client (enqueueLane), checked under wmu, the
//     lock under which a lane leaves a client (takeLane) and arrives at
//     one (adopt): a message is never appended to a client the partition
//     has left, so its order holds across a change of leader.

// errRerouted says the partition moved on from this client while a
// publish was on its way in; the publish routes again.
var errRerouted = errors.New("ratatoskr: partition moved to another node")

// addr is the node's address.
func (c *Client) addr() string { return c.addrs[0] }

// enqueueLane is enqueueChecked on a cluster's connection, for the lane's
// partition: errRerouted when the lane no longer routes here.
func (c *Client) enqueueLane(ctx context.Context, ln *lane, msg *Message, size int, now int64, sync bool) (*batch, int, error) {
	reserve := int64(size + recordOverhead)
	if err := c.reserve(ctx, reserve); err != nil {
		return nil, 0, err
	}
	c.wmu.Lock()
	if ln.cur.Load() != c {
		c.wmu.Unlock()
		c.unreserve(reserve)
		return nil, 0, errRerouted
	}
	b, idx := c.appendRecord(ln.key, msg, size, reserve, now, sync)
	c.wmu.Unlock()
	return b, idx, nil
}

// appendLaneBurst is appendBurst on a cluster's connection, for messages
// of the lane's partition: it appends the first of msgs, up to burstChunk
// and half the pending-bytes bound, and says how many; errRerouted with
// none appended when the lane no longer routes here.
func (c *Client) appendLaneBurst(ctx context.Context, ln *lane, msgs []Message) (int, error) {
	room := int64(c.opts.maxPendingBytes) / 2
	var reserve int64
	n := 0
	for ; n < len(msgs) && n < burstChunk; n++ {
		m := &msgs[n]
		size := int64(wire.MessageSize(m.Key, m.Value, m.Headers) + recordOverhead)
		if n > 0 && reserve+size > room {
			break
		}
		reserve += size
	}
	if err := c.reserve(ctx, reserve); err != nil {
		return 0, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if ln.cur.Load() != c {
		c.unreserve(reserve)
		return 0, errRerouted
	}
	now := int64(clockUnread)
	for i := range n {
		m := &msgs[i]
		if now == clockUnread && m.Timestamp.IsZero() {
			now = clock()
		}
		size := wire.MessageSize(m.Key, m.Value, m.Headers)
		c.appendRecord(ln.key, m, size, int64(size+recordOverhead), now, false)
	}
	return n, nil
}

// takeLane takes from the client what it holds of partition k and has not
// written: batches released and still queued (sent: they are numbered, if
// idempotent, and keep their place in the send order), then the batches
// waiting for room in the partition's window and the open one (unsent),
// and the partition's numbering. It says how many of k's batches are
// written (or being written) and not answered: their answers come back
// to the Cluster one by one. wmu held.
func (c *Client) takeLane(k batchKey) (sent, unsent []*batch, ps *partSeq, pending int) {
	q := c.outq[:0]
	for _, f := range c.outq {
		if f.b != nil && f.b.key == k {
			sent = append(sent, f.b)
			continue
		}
		q = append(q, f)
	}
	clear(c.outq[len(q):])
	c.outq = q
	var reserved int64
	c.pmu.Lock()
	for _, b := range sent {
		delete(c.inflight, b.corr)
		reserved += b.reserved
	}
	for _, b := range c.inflight {
		if b.key == k {
			pending++
		}
	}
	c.pmu.Unlock()
	if c.idem != nil {
		if ps = c.idem.parts[k]; ps != nil {
			delete(c.idem.parts, k)
			unsent = append(unsent, ps.waiting...)
			clear(ps.waiting)
			ps.waiting = nil
			ps.stale = ps.stale || c.idem.renewing
		}
	}
	if b := c.open[k]; b != nil {
		delete(c.open, k)
		if c.last == b {
			c.last = nil
		}
		unsent = append(unsent, b)
	}
	for _, b := range unsent {
		reserved += b.reserved
	}
	c.unreserve(reserved)
	return sent, unsent, ps, pending
}

// adopt makes the client the one partition ln's batches go to: the
// partition's numbering, then the batches released before (in their
// order), then the ones never released, which are numbered here. It
// reports false when the client has stopped. The Cluster's lock held.
func (c *Client) adopt(ln *lane) bool {
	c.wmu.Lock()
	if c.Err() != nil {
		c.wmu.Unlock()
		return false
	}
	renew := false
	if ps := ln.ps; ps != nil && c.idem != nil {
		c.idem.parts[ln.key] = ps
		if ps.stale && !c.idem.renewing {
			// Its producer id has a hole in some sequence: start over
			// under a new one, as the client that saw the hole would have.
			c.startRenewing()
			renew = true
		}
	}
	slices.SortFunc(ln.sent, func(a, b *batch) int { return cmp.Compare(a.order, b.order) })
	var reserved int64
	for _, b := range ln.sent {
		reserved += b.reserved
		c.resend(b)
	}
	for _, b := range ln.unsent {
		reserved += b.reserved
		if c.idem == nil || c.admit(b) {
			c.release(b)
		}
	}
	c.unacked.Add(reserved)
	ln.sent, ln.unsent, ln.ps = nil, nil, nil
	ln.cur.Store(c)
	c.wmu.Unlock()
	if renew {
		go c.renewProducerID()
	}
	c.signalWriter()
	return true
}

// resend releases b, released before by another client, on this one: a
// new correlation id and place in the send order; a frame already
// finished is copied with the new id (the old one may yet be read by the
// writer that sent it). wmu held.
func (c *Client) resend(b *batch) {
	c.release(b)
	b.written = false
	if b.frame != nil {
		p := framePool.Get().(*[]byte)
		*p = append((*p)[:0], b.frame...)
		wire.SetCorr(*p, b.corr)
		b.frame, b.kept = *p, p
	}
}

// attachFlush makes w wait for every batch the client holds, sealing the
// open ones, as Flush does. The Cluster's lock held.
func (c *Client) attachFlush(w *flushWaiter) {
	c.wmu.Lock()
	for _, b := range c.open {
		c.seal(b)
	}
	c.pmu.Lock()
	w.mu.Lock()
	for _, b := range c.inflight {
		w.remaining++
		b.flushes = append(b.flushes, w)
	}
	c.waitingBatches(func(b *batch) {
		w.remaining++
		b.flushes = append(b.flushes, w)
	})
	w.mu.Unlock()
	c.pmu.Unlock()
	c.wmu.Unlock()
}

// stopNode is shutdown for a cluster's connection: it hands what it holds
// to the Cluster (nodeStopped) before anything can fail it, then stops.
func (c *Client) stopNode(cause error) {
	_ = c.link.Load().Close() // a write under way fails at once
	failed := c.cluster.nodeStopped(c, cause)
	close(c.closing)
	for _, f := range failed {
		f.b.frame, f.b.kept = nil, nil
		f.b.complete(wire.PublishAck{}, f.err)
		if f.b.done == nil {
			c.report(f.err)
		}
	}
	if !errors.Is(cause, ErrClosed) {
		c.cluster.nodeLost(c, cause)
	}
}

// takeAll takes every batch the client holds, by partition, in send
// order: released ones (written or not) first, then waiting and open
// ones; and every partition's numbering. It stores cause as the client's
// error, so that nothing is appended after. wconn, wmu and pmu held.
func (c *Client) takeAll(cause error) (map[batchKey]*laneBatches, map[batchKey]*partSeq) {
	c.err.Store(&cause)
	out := map[batchKey]*laneBatches{}
	get := func(k batchKey) *laneBatches {
		lb := out[k]
		if lb == nil {
			lb = &laneBatches{}
			out[k] = lb
		}
		return lb
	}
	queued := c.queuedBatches()
	for _, b := range c.inflight {
		lb := get(b.key)
		lb.sent = append(lb.sent, b)
		if queued[b] {
			b.written = false // never handed to the writer
		}
	}
	clear(c.inflight)
	clear(c.outq)
	c.outq = c.outq[:0]
	var parts map[batchKey]*partSeq
	if c.idem != nil {
		parts = c.idem.parts
		c.idem.parts = map[batchKey]*partSeq{}
		for k, ps := range parts {
			lb := get(k)
			lb.unsent = append(lb.unsent, ps.waiting...)
			clear(ps.waiting)
			ps.waiting = nil
			ps.stale = ps.stale || c.idem.renewing
		}
	}
	for k, b := range c.open {
		get(k).unsent = append(get(k).unsent, b)
		delete(c.open, k)
	}
	c.last = nil
	for _, lb := range out {
		slices.SortFunc(lb.sent, func(a, b *batch) int { return cmp.Compare(a.order, b.order) })
	}
	c.unacked.Store(0)
	c.wakeSpaceWaiters()
	c.failCalls(cause)
	return out, parts
}

// laneBatches is what a stopped client held of one partition.
type laneBatches struct {
	sent, unsent []*batch
}

// subscribeNode subscribes s (one partition of a cluster's subscription)
// on this connection: from s.start, or with resume from offset next, as a
// reconnection resumes (the broker moves an offset outside the log into
// it, and the difference is counted as missed). It returns the offset the
// broker says the partition starts at (-1 from a broker that does not say).
func (c *Client) subscribeNode(ctx context.Context, s *Subscription, next int64, resume bool) (int64, error) {
	if c.Err() != nil {
		return 0, c.stopped()
	}
	req := wire.Subscribe{Topic: s.topic, Partition: s.partition, Start: s.start.wire()}
	sc := &subCall{subs: []*Subscription{s}, endNotice: true}
	if resume {
		s.next = map[int32]int64{s.partition: next}
		if c.hello().Version >= 3 {
			req.Start = Latest.wire()
			req.Resume = []wire.PartitionStart{{Partition: s.partition, Offset: next}}
			sc.requested = map[int32]int64{s.partition: next}
		} else {
			req.Start = AtOffset(next).wire()
		}
	}
	if !c.addSub(s) {
		c.removeSub(s)
		return 0, fmt.Errorf("%w: a subscription to partition %d of %s on %s is still being removed",
			ErrAlreadySubscribed, s.partition, s.topic, c.addr())
	}
	r, err := c.callWith(ctx, wire.TypeSubscribe, wire.FlagEndNotice, req.Append(nil), sc)
	if err == nil {
		err = expect(r, wire.TypeSubscribeOK)
	}
	if err != nil {
		c.removeSub(s)
		return 0, err
	}
	start := int64(-1)
	if ok, err := wire.DecodeSubscribeOK(r.body, c.hello().Version); err == nil {
		for _, st := range ok.Starts {
			if st.Partition == s.partition {
				start = st.Offset
			}
		}
	}
	go s.run()
	return start, nil
}

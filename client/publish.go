package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Message is what a producer publishes.
type Message struct {
	// Key routes the message: messages with the same key go to the same
	// partition (see KeyPartition). Nil means no key.
	Key   []byte
	Value []byte
	// Headers are application metadata carried with the message.
	Headers []Header
	// Timestamp is the message time; zero means now.
	Timestamp time.Time
}

// Header is one application header.
type Header = wire.RecordHeader

// Ack reports where a published message was stored.
type Ack struct {
	Partition int32
	Offset    int64
}

// outFrame is a frame waiting for the writer: a control frame, or a sealed
// batch whose frame the writer finishes.
type outFrame struct {
	frame []byte
	b     *batch
}

// recordOverhead approximates the per-record framing counted against the
// pending-bytes bound.
const recordOverhead = 16

// maxRecordFraming bounds what a record adds beyond its message size: the
// length, attributes, timestamp and offset deltas, key and value lengths
// and header count, each a varint of at most 10 bytes.
const maxRecordFraming = 64

type batchKey struct {
	topic     string
	partition int32
}

// batch is a Publish frame being built and, after it is sent, the state of
// its acknowledgement.
type batch struct {
	key     batchKey
	buf     *[]byte // the frame; nil once handed to the writer
	bb      wire.BatchBuilder
	started time.Time
	// startedAt is started on the client's clock (clock()), and
	// stampBase started in Unix nanoseconds less startedAt: together they
	// anchor the timestamps of the batch's records (see stamp).
	startedAt int64
	stampBase int64
	reserved  int64 // pending bytes held until the ack
	count     int
	order     uint64 // place in the send order (Client.sealed), from release
	corr      uint32

	// written is set once the frame went to a write: from then on the
	// broker may have it. frame keeps the finished frame (in kept, from
	// framePool) until the ack when it may be sent again on a new
	// connection (see Client.resends); otherwise it is recycled after the
	// write. Both belong to whoever holds the writing role, or to the
	// reader while it takes stock of a lost connection.
	written bool
	idem    bool // numbered by an idempotent client (idempotence.go)
	frame   []byte
	kept    *[]byte
	ps      *partSeq // the numbering it was numbered under, when idem

	// retryBy is when a cluster (cluster.go) stops re-routing the batch
	// after NOT_LEADER answers and lost nodes, on the clock of clock();
	// zero until its first re-route.
	retryBy int64

	// Completion, written once by complete.
	done    chan struct{} // non-nil when a synchronous publisher waits
	ack     wire.PublishAck
	err     error
	flushes []*flushWaiter
}

type flushWaiter struct {
	mu        sync.Mutex
	remaining int
	done      chan struct{}
}

func (w *flushWaiter) finishOne() {
	w.mu.Lock()
	w.remaining--
	if w.remaining == 0 {
		close(w.done)
	}
	w.mu.Unlock()
}

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// frameSlack is room left in a new batch's buffer past the sealing size,
// so that the record that reaches it, unless it is large, fits without
// the buffer growing (and being copied) on the publish path.
const frameSlack = 4 << 10

// frameBuf returns an empty frame buffer with room for a whole batch of
// the client's sealing size: a pooled one when it is large enough.
// A buffer too small for that would grow by doubling while the batch
// fills, a copy of everything appended so far each time. wmu held.
func (c *Client) frameBuf() *[]byte {
	want := c.batchBytes + frameSlack
	p := framePool.Get().(*[]byte)
	if cap(*p) < want {
		*p = make([]byte, 0, want)
	}
	*p = (*p)[:0]
	return p
}

// stamp is the timestamp of a record appended now (clock() reading) to
// b, in Unix nanoseconds: the batch's wall-clock start plus the monotonic
// time since. It reads the clock once per message where time.Now reads
// it twice (wall and monotonic), and the wall clock is read again for
// every batch, so a step of it shows from the next batch on.
func (b *batch) stamp(now int64) int64 {
	return b.stampBase + now
}

// complete records the outcome and wakes whoever waits for it.
func (b *batch) complete(a wire.PublishAck, err error) {
	b.ack, b.err = a, err
	if b.done != nil {
		close(b.done)
	}
	for _, w := range b.flushes {
		w.finishOne()
	}
	b.flushes = nil
}

// Publish sends a message and waits for the broker to acknowledge it,
// returning its partition and offset. Messages published concurrently share
// batches, so many goroutines calling Publish still make few frames.
func (c *Client) Publish(ctx context.Context, topic string, msg Message, opts ...PublishOption) (Ack, error) {
	now := publishClock(&msg)
	b, idx, err := c.enqueue(ctx, topic, &msg, opts, now, true)
	if err != nil {
		return Ack{}, err
	}
	c.kick(now)
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

// PublishAsync queues a message and returns without waiting for the ack.
// It waits only while the pending-bytes bound is reached (see
// WithMaxPendingBytes). A failure to store the message is reported by the
// next Flush and to the error handler. msg's slices may be reused as soon
// as PublishAsync returns: they are copied into the batch.
//
// Each call takes the client's lock and reserves pending bytes for its
// message; a producer that has many messages at hand spends about half
// the CPU per message handing them over with PublishBatchAsync
// (docs/PERFORMANCE.md).
func (c *Client) PublishAsync(ctx context.Context, topic string, msg Message, opts ...PublishOption) error {
	now := publishClock(&msg)
	_, _, err := c.enqueue(ctx, topic, &msg, opts, now, false)
	if err == nil {
		c.kick(now)
	}
	return err
}

// publishClock is the clock reading a publish of msg takes: one for a
// message without a timestamp, which its record's stamp and kick share,
// and none for one with a timestamp (kick reads the clock if it must). A
// clock read costs 25-50 ns in some VMs, as much as the rest of
// PublishAsync's own work.
func publishClock(msg *Message) int64 {
	if msg.Timestamp.IsZero() {
		return clock()
	}
	return clockUnread
}

// PublishBatchAsync queues msgs, in order, as PublishAsync does, in one
// call: the topic, the sizes and the partition count are checked once, and
// the messages are encoded under one hold of the client's lock and one
// reservation of pending bytes per up to burstChunk messages, where
// PublishAsync takes both per message. It is the entry point for a
// producer that has many messages at hand: a burst that accumulated since
// the last call, or a loop that publishes as fast as it can (loadtest
// does). Messages without a timestamp get the call's time. msgs and their
// slices may be reused as soon as it returns: they are copied.
//
// The burst is written at once by the calling goroutine when the
// connection is idle (as for PublishAsync; see WithLinger), which saves
// the hand-off to the client's writer goroutine, a thread wake-up that
// costs tens of microseconds on a small machine; otherwise the writer
// takes it with whatever else accumulates.
//
// A message that is too large, or a bad topic name, is refused before any
// message is queued. If ctx ends while waiting for pending-bytes room (see
// WithMaxPendingBytes), the messages before that point are queued and
// sent, and the error says how many were.
func (c *Client) PublishBatchAsync(ctx context.Context, topic string, msgs []Message, opts ...PublishOption) error {
	return c.publishBurst(ctx, topic, msgs, opts, nil)
}

// PublishBatch publishes msgs, in order, as PublishBatchAsync does, and
// waits for the broker to acknowledge them: acks[i] is where msgs[i] was
// stored. The messages share batches with whatever else the client
// publishes meanwhile. When a batch fails, the error is the first failure
// and the acks of that batch's messages have Offset -1; the others were
// stored. A gateway publishes a request's records this way.
func (c *Client) PublishBatch(ctx context.Context, topic string, msgs []Message, opts ...PublishOption) ([]Ack, error) {
	return c.PublishBatchInto(ctx, nil, topic, msgs, opts...)
}

// PublishBatchInto is PublishBatch with the acks written into acks'
// array when it is large enough (its length does not matter): the result
// is acks[:len(msgs)], or a new slice. A gateway that publishes thousands
// of messages per call, many calls a second, reuses one slice instead of
// allocating and clearing one per call.
func (c *Client) PublishBatchInto(ctx context.Context, acks []Ack, topic string, msgs []Message, opts ...PublishOption) ([]Ack, error) {
	pp := placedPool.Get().(*[]placedMsg)
	defer func() {
		clear(*pp) // drops the batches
		*pp = (*pp)[:0]
		placedPool.Put(pp)
	}()
	err := c.publishBurst(ctx, topic, msgs, opts, pp)
	placed := *pp
	if cap(acks) < len(msgs) {
		acks = make([]Ack, len(msgs))
	}
	acks = acks[:len(msgs)] // every element is set below
	for i := len(placed); i < len(acks); i++ {
		acks[i] = Ack{Partition: -1, Offset: -1} // not queued
	}
	var first error
	var last *batch
	for i, pl := range placed {
		if pl.b != last {
			select {
			case <-pl.b.done:
			case <-ctx.Done():
				for j := i; j < len(placed); j++ {
					acks[j] = Ack{Partition: -1, Offset: -1}
				}
				return acks, ctx.Err()
			}
			last = pl.b
		}
		if pl.b.err != nil {
			if first == nil {
				first = pl.b.err
			}
			acks[i] = Ack{Partition: -1, Offset: -1}
			continue
		}
		acks[i] = Ack{Partition: pl.b.ack.Partition, Offset: pl.b.ack.BaseOffset + int64(pl.idx)}
	}
	if err != nil {
		return acks, err
	}
	return acks, first
}

// placedPool holds PublishBatch's placements between calls: a gateway
// publishes thousands of messages per call, many calls a second.
var placedPool = sync.Pool{New: func() any { p := make([]placedMsg, 0, 1024); return &p }}

// placedMsg is where a message of a synchronous burst went: its batch
// and its index in it.
type placedMsg struct {
	b   *batch
	idx int
}

// publishBurst queues msgs; with placed, each message's batch is made to
// be waited on and its placement appended to it.
func (c *Client) publishBurst(ctx context.Context, topic string, msgs []Message, opts []PublishOption, placed *[]placedMsg) error {
	if err := wire.ValidateTopicName(topic); err != nil {
		return err
	}
	limit := int(c.hello().MaxMessageBytes)
	keyed, unkeyed := false, false
	for i := range msgs {
		m := &msgs[i]
		if size := wire.MessageSize(m.Key, m.Value, m.Headers); size > limit {
			return fmt.Errorf("message %d: %w", i, tooLarge(size, limit))
		}
		keyed = keyed || m.Key != nil
		unkeyed = unkeyed || m.Key == nil
	}
	r := burstRoute{part: explicitPartition(opts)}
	if r.part == wire.PartitionAny && keyed {
		n, err := c.partitions(ctx, topic)
		if err != nil {
			return err
		}
		r.partitions = n
	}
	r.sticky = r.part == wire.PartitionAny && unkeyed && c.idem != nil
	for done := 0; done < len(msgs); {
		n, err := c.appendBurst(ctx, topic, msgs[done:], &r, placed)
		done += n
		if err != nil {
			if done > 0 {
				c.kick(clockUnread)
			}
			return fmt.Errorf("%d of %d messages queued: %w", done, len(msgs), err)
		}
	}
	if len(msgs) > 0 {
		c.kick(clockUnread)
	}
	return nil
}

// burstChunk is how many messages PublishBatchAsync appends under one hold
// of wmu at most, so that the writer, which takes wmu to swap its queue,
// waits a few microseconds at most.
const burstChunk = 256

// burstRoute is where a PublishBatchAsync call's messages go: part when
// the caller named a partition; otherwise a keyed message by its key over
// partitions, an unkeyed one to PartitionAny or, with sticky, to the
// topic's sticky partition (an idempotent client).
type burstRoute struct {
	part       int32
	partitions int
	sticky     bool
}

// appendBurst appends the first of msgs, up to burstChunk and half the
// pending-bytes bound (at least one message), reserving their pending
// bytes at once and holding wmu once. It returns how many it appended;
// fewer than it took on, with no error, when an idempotent client's
// sticky partition went away meanwhile (the caller calls again, which
// looks it up).
func (c *Client) appendBurst(ctx context.Context, topic string, msgs []Message, r *burstRoute, placed *[]placedMsg) (int, error) {
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
	if r.sticky {
		if err := c.lookSticky(ctx, topic); err != nil {
			return 0, err
		}
	}
	if err := c.reserve(ctx, reserve); err != nil {
		return 0, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.Err() != nil {
		c.unreserve(reserve)
		return 0, c.stopped()
	}
	now := int64(clockUnread)
	for i := range n {
		m := &msgs[i]
		p := r.part
		if p == wire.PartitionAny {
			if m.Key != nil {
				p = int32(KeyPartition(m.Key, r.partitions))
			} else if r.sticky {
				var ok bool
				if p, ok = c.stickyFor(topic); !ok {
					c.unreserve(reserve)
					return i, nil
				}
			}
		}
		if now == clockUnread && m.Timestamp.IsZero() {
			now = clock()
		}
		size := wire.MessageSize(m.Key, m.Value, m.Headers)
		b, idx := c.appendRecord(batchKey{topic, p}, m, size, int64(size+recordOverhead), now, placed != nil)
		if placed != nil {
			*placed = append(*placed, placedMsg{b, idx})
		}
		reserve -= int64(size + recordOverhead)
	}
	return n, nil
}

// explicitPartition is the partition opts name, or PartitionAny.
func explicitPartition(opts []PublishOption) int32 {
	for _, o := range opts {
		if o.partition != 0 {
			return o.partition - 1
		}
	}
	return wire.PartitionAny
}

// checkSize returns msg's record size, refusing a message larger than the
// broker accepts.
func (c *Client) checkSize(msg *Message) (int, error) {
	size := wire.MessageSize(msg.Key, msg.Value, msg.Headers)
	if limit := int(c.hello().MaxMessageBytes); size > limit {
		return 0, tooLarge(size, limit)
	}
	return size, nil
}

func tooLarge(size, limit int) error {
	return wire.Errorf(wire.CodeMessageTooLarge,
		"message of "+strconv.Itoa(size)+" bytes; the broker allows "+strconv.Itoa(limit))
}

// enqueue appends msg to the open batch for its topic and partition.
func (c *Client) enqueue(ctx context.Context, topic string, msg *Message, opts []PublishOption, now int64, sync bool) (*batch, int, error) {
	size, err := c.checkSize(msg)
	if err != nil {
		return nil, 0, err
	}
	if err := wire.ValidateTopicName(topic); err != nil {
		return nil, 0, err
	}
	return c.enqueueChecked(ctx, topic, msg, size, opts, now, sync)
}

// enqueueChecked is enqueue for a message whose topic name and size
// (given) were checked already. now is clock() when it was published, or
// clockUnread.
func (c *Client) enqueueChecked(ctx context.Context, topic string, msg *Message, size int, opts []PublishOption, now int64, sync bool) (*batch, int, error) {
	part, err := c.choosePartition(ctx, topic, msg.Key, opts)
	if err != nil {
		return nil, 0, err
	}
	reserve := int64(size + recordOverhead)
	if err := c.reserve(ctx, reserve); err != nil {
		return nil, 0, err
	}
	for {
		c.wmu.Lock()
		if c.Err() != nil {
			c.wmu.Unlock()
			c.unreserve(reserve)
			return nil, 0, c.stopped()
		}
		if p, ok := c.placement(topic, part); ok {
			b, idx := c.appendRecord(batchKey{topic, p}, msg, size, reserve, now, sync)
			c.wmu.Unlock()
			return b, idx, nil
		}
		c.wmu.Unlock()
		if err := c.lookSticky(ctx, topic); err != nil {
			c.unreserve(reserve)
			return nil, 0, err
		}
	}
}

// placement is the partition a message for part goes to: part itself,
// or for PartitionAny on an idempotent client the topic's sticky
// partition (idempotence.go), which is looked up under the same lock as
// the append, so an unkeyed message costs no more locking than a keyed
// one. ok is false when the sticky partition is not known yet. wmu held.
func (c *Client) placement(topic string, part int32) (int32, bool) {
	if part != wire.PartitionAny || c.idem == nil {
		return part, true
	}
	return c.stickyFor(topic)
}

// appendRecord appends msg, of size bytes and holding reserve pending
// bytes, to k's open batch, and seals the batch once full. It returns the
// batch and the record's index in it. wmu held.
func (c *Client) appendRecord(k batchKey, msg *Message, size int, reserve, now int64, sync bool) (*batch, int) {
	b := c.openBatch(k)
	if b.count > 0 && b.bb.Size()+size+maxRecordFraming > c.maxBatch {
		// The record would push the frame past the broker's maximum.
		c.seal(b)
		b = c.openBatch(k)
	}
	idx := b.count
	ts := msg.Timestamp.UnixNano()
	if msg.Timestamp.IsZero() {
		if now == clockUnread {
			now = clock()
		}
		ts = b.stamp(now)
	}
	b.bb.Append(ts, msg.Key, msg.Value, msg.Headers)
	b.count++
	b.reserved += reserve
	if sync && b.done == nil {
		b.done = make(chan struct{})
	}
	if b.bb.Size() >= c.batchBytes {
		c.seal(b)
	}
	return b, idx
}

func (c *Client) choosePartition(ctx context.Context, topic string, key []byte, opts []PublishOption) (int32, error) {
	if p := explicitPartition(opts); p != wire.PartitionAny || key == nil {
		return p, nil
	}
	n, err := c.partitions(ctx, topic)
	if err != nil {
		return 0, err
	}
	return int32(KeyPartition(key, n)), nil
}

// reserve takes n pending bytes, waiting while the bound is reached. A
// single message larger than the bound is let through when nothing else is
// pending, so it cannot wait forever. The fast path is one atomic add.
func (c *Client) reserve(ctx context.Context, n int64) error {
	max := int64(c.opts.maxPendingBytes)
	for {
		if v := c.unacked.Add(n); v == n || v <= max {
			return nil
		}
		c.unacked.Add(-n)
		if err := c.waitForSpace(ctx, n, max); err != nil {
			return err
		}
	}
}

// waitForSpace blocks until an ack frees pending bytes. Registering as a
// waiter before re-checking pairs with releasers subtracting before
// checking for waiters, so a release cannot slip between the two.
func (c *Client) waitForSpace(ctx context.Context, n, max int64) error {
	c.pmu.Lock()
	ch := c.space
	c.waiting.Add(1)
	defer c.waiting.Add(-1)
	if v := c.unacked.Load(); v == 0 || v+n <= max {
		c.pmu.Unlock()
		return nil
	}
	c.pmu.Unlock()
	c.signalWriter()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closing:
		return c.stopped()
	}
}

// unreserve returns n pending bytes and wakes waiters.
func (c *Client) unreserve(n int64) {
	c.unacked.Add(-n)
	if c.waiting.Load() > 0 {
		c.pmu.Lock()
		c.wakeSpaceWaiters()
		c.pmu.Unlock()
	}
}

// wakeSpaceWaiters releases goroutines waiting in reserve. Called with pmu.
func (c *Client) wakeSpaceWaiters() {
	if c.waiting.Load() > 0 {
		close(c.space)
		c.space = make(chan struct{})
	}
}

// openBatch returns the open batch for k, starting one if needed. wmu held.
func (c *Client) openBatch(k batchKey) *batch {
	if c.last != nil && c.last.key == k {
		return c.last
	}
	b := c.open[k]
	if b == nil {
		b = &batch{key: k, started: time.Now()}
		b.startedAt = int64(b.started.Sub(clientEpoch))
		b.stampBase = b.started.UnixNano() - b.startedAt
		b.buf = c.frameBuf()
		buf, _ := wire.StartFrame((*b.buf)[:0], wire.TypePublish, 0, 0)
		buf = wire.AppendBatchPrefix(buf, k.topic, k.partition)
		b.bb.Start(buf, -1, -1)
		c.open[k] = b
	}
	c.last = b
	return b
}

// seal finishes a batch's frame, registers it as in flight and queues it
// for the writer. wmu held.
func (c *Client) seal(b *batch) {
	delete(c.open, b.key)
	if c.last == b {
		c.last = nil
	}
	if c.idem != nil && !c.admit(b) {
		return // waits for room in its partition's window
	}
	c.release(b)
}

// release registers a sealed batch as in flight and queues it for the
// writer. wmu held.
func (c *Client) release(b *batch) {
	b.corr = c.nextCorr()
	c.sealed++
	b.order = c.sealed
	c.pmu.Lock()
	c.inflight[b.corr] = b
	c.pmu.Unlock()
	c.outq = append(c.outq, outFrame{b: b})
}

// finish completes a sealed batch's frame: its records compressed with
// codec (when that shrinks them, see wire.MinCompressBytes), its header and
// CRC. It runs on the writer, outside wmu, so publishers do not wait while
// a large batch is compressed and checksummed; nothing appends to a sealed
// batch. The frame it returns, compressed, is what is sent.
func (b *batch) finish(codec wire.Codec) (frame []byte, buf *[]byte) {
	frame = b.bb.FinishCompressed(codec)
	wire.FinishFrame(frame, 0)
	wire.SetCorr(frame, b.corr)
	*b.buf = frame
	buf, b.buf = b.buf, nil
	return frame, buf
}

// acked completes the publish with correlation id corr; it reports false
// when no publish has that id (the frame answers a call instead).
func (c *Client) acked(corr uint32, a wire.PublishAck, err error) bool {
	if c.cluster != nil {
		return c.cluster.acked(c, corr, a, err)
	}
	c.pmu.Lock()
	b, ok := c.inflight[corr]
	if ok {
		delete(c.inflight, corr)
		if c.resends() && b.kept != nil {
			// The writer recycles it: it may still be in the writev that
			// carried this frame.
			c.doneFrames = append(c.doneFrames, b.kept)
		}
		c.unacked.Add(-b.reserved)
		c.wakeSpaceWaiters()
		if err != nil && b.done == nil && c.asyncErr == nil {
			c.asyncErr = err
		}
	}
	c.pmu.Unlock()
	if !ok {
		return false
	}
	if b.idem {
		c.idemAnswered(b, err)
	}
	if err != nil && errors.Is(err, ErrUnknownPartition) {
		c.forget(b.key.topic)
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

// Flush sends every message queued before the call and waits until the
// broker has acknowledged all of them. It returns the first error of an
// asynchronous publish since the previous Flush, if any.
func (c *Client) Flush(ctx context.Context) error {
	// The waiter starts with one count of its own, released after every
	// in-flight batch is attached, so acks racing in cannot finish it early.
	w := &flushWaiter{remaining: 1, done: make(chan struct{})}
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
	c.signalWriter()
	w.finishOne()
	select {
	case <-w.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closing:
		select {
		case <-w.done:
		default:
			return c.stopped()
		}
	}
	c.pmu.Lock()
	err := c.asyncErr
	c.asyncErr = nil
	c.pmu.Unlock()
	return err
}

// idleGap is how long the connection must have had no write for a
// publisher to write its message itself instead of waking the writer
// goroutine: at low rates that saves a goroutine hand-off per message, at
// high rates writes follow each other closely and the writer batches.
const idleGap = 50 * time.Microsecond

// clientEpoch anchors the client's monotonic clock.
var clientEpoch = time.Now()

func clock() int64 { return int64(time.Since(clientEpoch)) }

// clockUnread stands for a clock() reading not taken yet: the publish
// path reads the clock only where it needs it (a record without a
// timestamp, or a kick that finds the connection idle), since a busy
// producer needs neither and a clock read costs tens of nanoseconds in
// some VMs, a tenth of the path.
const clockUnread = -1 << 63

// kick gets queued frames written: by the caller when the connection is
// idle, else by the writer goroutine. now is clock() at the publish, or
// clockUnread.
func (c *Client) kick(now int64) {
	if c.writing.Load() || len(c.wake) > 0 {
		// A write is in flight or the writer is already due: it will take
		// this message with whatever else accumulates.
		c.signalWriter()
		return
	}
	if c.opts.linger == 0 && now == clockUnread {
		now = clock()
	}
	if c.opts.linger == 0 && now-c.lastWrite.Load() > int64(idleGap) && c.writing.CompareAndSwap(false, true) {
		c.drainWrites()
		return
	}
	c.signalWriter()
}

// drainWrites writes until nothing is queued, then gives up the writing
// role. The caller holds it (writing was set). A publisher that queued
// meanwhile and saw the role taken signalled the writer, which may have
// found the role still taken; the check after releasing it covers that.
func (c *Client) drainWrites() {
	for c.writeQueued() {
	}
	c.writing.Store(false)
	if c.hasQueued() {
		c.signalWriter()
	}
}

func (c *Client) hasQueued() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.outq) > 0 || c.sealable()
}

// writeQueued seals the open batches and writes everything queued in one
// writev. It reports whether there was anything. Only the goroutine holding
// the writing role calls it. While the client reconnects it writes
// nothing: what is queued waits for the new connection.
func (c *Client) writeQueued() bool {
	c.wconn.Lock()
	defer c.wconn.Unlock()
	c.wmu.Lock()
	if !c.live {
		c.wmu.Unlock()
		return false
	}
	for _, b := range c.open {
		if c.idem == nil || !c.windowFull(b.key) {
			c.seal(b)
		}
	}
	c.outq, c.spareq = c.spareq[:0], c.outq
	c.wmu.Unlock()
	if len(c.spareq) == 0 {
		return false
	}
	keep := c.resends()
	c.wbufs, c.recycle = c.wbufs[:0], c.recycle[:0]
	if keep {
		c.pmu.Lock()
		c.recycle, c.doneFrames = append(c.recycle, c.doneFrames...), c.doneFrames[:0]
		c.pmu.Unlock()
	}
	for i, f := range c.spareq {
		if b := f.b; b != nil {
			if b.frame == nil {
				b.frame, b.kept = b.finish(c.opts.compression)
			}
			f.frame, b.written = b.frame, true
			if !keep {
				c.recycle = append(c.recycle, b.kept)
				b.frame, b.kept = nil, nil
			}
		}
		c.wbufs = append(c.wbufs, f.frame)
		c.spareq[i] = outFrame{}
	}
	if keep {
		// The reader looks at a kept frame when its ack comes, which the
		// race detector cannot see follows this write: pmu orders them.
		c.pmu.Lock()
		c.pmu.Unlock() //nolint:staticcheck // an empty critical section, for ordering
	}
	bufs := c.wbufs
	l := c.link.Load()
	_, err := bufs.WriteTo(l.Conn) // the connection itself: a TCP connection writes all the frames with one writev
	c.lastWrite.Store(clock())
	for i, p := range c.recycle {
		recycleFrame(p)
		c.recycle[i] = nil
	}
	clear(c.wbufs)
	if err != nil {
		// The reader finds the connection closed and takes it from there:
		// it reconnects, or stops the client.
		_ = l.Close()
		return false
	}
	return true
}

// maxPooledFrame is the largest frame buffer kept for reuse: one for a
// whole batch of the broker's default maximum frame. A client with large
// batches (WithBatchBytes(1 << 20)) reuses its buffers like one with the
// default 256 KiB; dropping them, as a bound of 1 MiB did, made every
// batch a fresh, zeroed allocation: a third of the throughput at twice
// the CPU.
const maxPooledFrame = wire.DefaultMaxFrameBytes + frameSlack

// recycleFrame returns a frame buffer to the pool, unless it grew larger
// than maxPooledFrame.
func recycleFrame(p *[]byte) {
	if p != nil && cap(*p) <= maxPooledFrame {
		framePool.Put(p)
	}
}

// writeLoop writes queued frames whenever it is signalled, so batches grow
// while a write is in flight and nothing waits for a timer.
func (c *Client) writeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.wake:
		case <-c.closing:
			return
		}
		if c.opts.linger > 0 {
			c.lingerWait()
		}
		if c.writing.CompareAndSwap(false, true) {
			c.drainWrites()
		}
	}
}

// lingerWait sleeps until the oldest open batch is linger old or some batch
// is full (which queues a frame and signals the writer).
func (c *Client) lingerWait() {
	c.wmu.Lock()
	var oldest time.Time
	for _, b := range c.open {
		if oldest.IsZero() || b.started.Before(oldest) {
			oldest = b.started
		}
	}
	full := len(c.outq) > 0
	c.wmu.Unlock()
	if full || oldest.IsZero() {
		return
	}
	d := c.opts.linger - time.Since(oldest)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.wake:
	case <-c.closing:
	}
}

package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Delivery is a message received by a subscription.
//
// A handler's *Delivery and the slices in it are valid only until the
// handler returns: the client reuses them for the next message, which is
// what keeps delivery free of allocations. Copy what you keep.
type Delivery struct {
	Message
	Topic     string
	Partition int32
	Offset    int64
	// Missed is set on the first delivery of a partition after the client
	// reconnected, when messages before this one may never be delivered:
	// how many (retention removed them, or a memory topic's in-memory log
	// no longer held them), or -1 when nobody can tell (a memory topic's
	// broker restarted, or the broker is too old to resume). Zero
	// otherwise: a resumed subscription normally continues with no gap.
	Missed int64
}

// Clone returns a copy of d that owns its memory.
func (d *Delivery) Clone() Delivery {
	out := *d
	out.Key = cloneBytes(d.Key)
	out.Value = cloneBytes(d.Value)
	if d.Headers != nil {
		out.Headers = make([]Header, len(d.Headers))
		for i, h := range d.Headers {
			out.Headers[i] = Header{Key: h.Key, Value: cloneBytes(h.Value)}
		}
	}
	return out
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// subQueueLen bounds the chunks queued for one subscription; the byte bound
// (WithSubscriptionPendingBytes) usually binds first.
const subQueueLen = 4096

// Subscription is a push subscription to a topic, or to one partition.
// Its handler runs on a goroutine of its own, one delivery at a time, in
// partition order.
type Subscription struct {
	c         *Client
	topic     string
	partition int32
	handler   func(*Delivery)
	batchEnd  func()    // OnBatchEnd's, or nil
	inline    *Delivery // set for DispatchInline: the reader's reused Delivery
	start     Position

	// Reader-owned, for resuming after a reconnection: next is each
	// partition's offset after the last record the reader passed on (or
	// where the broker said the subscription starts); missed is what the
	// next delivery of a partition reports in Delivery.Missed. confirmed
	// is set once the broker accepted the subscription; durable when its
	// topic's offsets survive a broker restart.
	next      map[int32]int64
	missed    map[int32]int64
	confirmed bool
	durable   bool
	nmissed   atomic.Int64

	queue   chan *bytebufferpool.ByteBuffer
	space   chan struct{} // signalled by run after each chunk
	pending atomic.Int64  // bytes queued
	limit   int64
	dropped atomic.Uint64
	slow    atomic.Bool

	staged *bytebufferpool.ByteBuffer // reader-owned: deliveries of the current read
	// dec holds compressed batches' records while the handler runs; only
	// the dispatching goroutine (the reader when inline, else run) uses it.
	dec wire.Decompressor

	// The reader is the only goroutine that sends on queue, and it closes
	// queue when it exits; Unsubscribe closes stop instead.
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}

	// endCorr is the corr of the Subscribe that asked the broker to say
	// when it ends the subscription (pmu); ended is what it said.
	endCorr uint32
	ended   atomic.Pointer[wire.Error]
}

// Topic is the subscribed topic.
func (s *Subscription) Topic() string { return s.topic }

// Dropped counts messages dropped because the handler stayed behind its
// pending bound for longer than the stall bound.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Missed counts messages the subscription may never get because of
// reconnections, where the broker could count them (see Delivery.Missed).
func (s *Subscription) Missed() int64 { return s.nmissed.Load() }

// noteMissed records that messages of partition p may have been missed:
// n of them, or -1 for an unknown number. The reader calls it.
func (s *Subscription) noteMissed(p int32, n int64) {
	if s.missed == nil {
		s.missed = map[int32]int64{}
	}
	switch m := s.missed[p]; {
	case m < 0 || n < 0:
		s.missed[p] = -1
	default:
		s.missed[p] = m + n
	}
	if n > 0 {
		s.nmissed.Add(n)
	}
	what := "an unknown number of messages"
	if n > 0 {
		what = strconv.FormatInt(n, 10) + " messages"
	}
	s.c.report(fmt.Errorf("subscription to %s, partition %d: %s may have been missed while the client reconnected", s.topic, p, what))
}

// Done is closed when the subscription has ended and its handler returned.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Subscribe delivers every message published to topic from now on to
// handler. With FromPartition it follows one partition only.
//
// The handler runs on the subscription's own goroutine, one message at a
// time, in partition order. When it falls behind, deliveries queue up to the
// pending bound (WithSubscriptionPendingBytes); then the client stops
// reading the connection, and the broker holds back its producers' acks
// until the subscription catches up: flow control from the handler to the
// producers. A handler stuck past the stall bound (WithSubscriptionStall)
// loses deliveries, reported as ErrSlowConsumer.
func (c *Client) Subscribe(ctx context.Context, topic string, handler func(*Delivery), opts ...SubscribeOption) (*Subscription, error) {
	s := c.newSubscription(topic, opts)
	s.handler = handler
	return s, c.startSubscription(ctx, s)
}

func (c *Client) newSubscription(topic string, opts []SubscribeOption) *Subscription {
	o := subOptions{partition: wire.PartitionAny}
	for _, f := range opts {
		f(&o)
	}
	s := &Subscription{c: c, topic: topic, partition: o.partition, start: o.start,
		queue: make(chan *bytebufferpool.ByteBuffer, subQueueLen), space: make(chan struct{}, 1),
		limit: int64(c.opts.subPendingBytes), batchEnd: o.batchEnd,
		stop: make(chan struct{}), done: make(chan struct{})}
	if o.inline {
		s.inline = &Delivery{Topic: topic}
	}
	return s
}

// startSubscription registers s, asks the broker when it is the first local
// subscription of its topic and partition, and starts its goroutine.
func (c *Client) startSubscription(ctx context.Context, s *Subscription) error {
	if err := wire.ValidateTopicName(s.topic); err != nil {
		return err
	}
	if c.Err() != nil {
		return c.stopped()
	}
	topic := s.topic
	first := c.addSub(s)
	if first {
		body := (&wire.Subscribe{Topic: topic, Partition: s.partition, Start: s.start.wire()}).Append(nil)
		r, err := c.callWith(ctx, wire.TypeSubscribe, 0, body, &subCall{subs: []*Subscription{s}})
		if err == nil {
			err = expect(r, wire.TypeSubscribeOK)
		}
		if err != nil {
			c.removeSub(s)
			return err
		}
	} else if s.start != Latest {
		c.removeSub(s)
		return fmt.Errorf("%w: this client already subscribes to %s; a second subscription from a start position needs a client of its own",
			ErrAlreadySubscribed, topic)
	}
	go s.run()
	return nil
}

// SubscribeChan is Subscribe with deliveries sent, as copies, to a channel
// of the given capacity. The channel is closed when the subscription ends.
// A consumer that stops reading makes the subscription fall behind and
// drop, like a slow handler.
func (c *Client) SubscribeChan(ctx context.Context, topic string, capacity int, opts ...SubscribeOption) (*Subscription, <-chan Delivery, error) {
	ch := make(chan Delivery, capacity)
	s := c.newSubscription(topic, opts)
	s.handler = func(d *Delivery) {
		select {
		case ch <- d.Clone():
		case <-s.stop:
		case <-c.closing:
		}
	}
	if err := c.startSubscription(ctx, s); err != nil {
		return nil, nil, err
	}
	go func() {
		<-s.done
		close(ch)
	}()
	return s, ch, nil
}

// Unsubscribe stops the subscription. Deliveries already queued are
// discarded; the handler is not called again once Done is closed.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	// A broker that ends the subscription itself (wire.FlagEndNotice)
	// before it sees the Unsubscribe answers it NOT_SUBSCRIBED, and its
	// end notice may come before or after that answer: the notice is
	// recognised (subscriptionEnded) until then, not reported as an error.
	if !c.unlistSub(s) {
		return ErrNotSubscribed
	}
	if c.hasSub(s.topic, s.partition) {
		c.forgetEnd(s)
		return nil
	}
	body := (&wire.Subscribe{Topic: s.topic, Partition: s.partition}).Append(nil)
	r, err := c.call(ctx, wire.TypeUnsubscribe, 0, body)
	if !errors.Is(err, wire.ErrNotSubscribed) || s.ended.Load() != nil {
		c.forgetEnd(s) // else the notice is yet to come, and forgets it
	}
	if err != nil {
		return err
	}
	return expect(r, wire.TypeOK)
}

// addSub registers s; it reports whether it is the first local
// subscription of its topic and partition (so the broker must be asked).
func (c *Client) addSub(s *Subscription) bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	list := c.subs[s.topic]
	first := !slices.ContainsFunc(list, func(o *Subscription) bool { return o.partition == s.partition })
	// One that shares the broker's subscription of an earlier one is in
	// place at once; the reader sees it (confirmed) only through smu or
	// the snapshot published below.
	s.confirmed = !first
	c.setSubs(s.topic, append(slices.Clone(list), s))
	return first
}

// removeSub unregisters s and ends it, if it was not gone.
func (c *Client) removeSub(s *Subscription) {
	if c.unlistSub(s) {
		c.forgetEnd(s)
	}
}

// unlistSub is removeSub that leaves s's end notice recognised
// (forgetEnd); it reports false if s was gone.
func (c *Client) unlistSub(s *Subscription) bool {
	c.smu.Lock()
	list := c.subs[s.topic]
	i := slices.Index(list, s)
	if i >= 0 {
		c.setSubs(s.topic, slices.Delete(slices.Clone(list), i, i+1))
	}
	c.smu.Unlock()
	if i < 0 {
		return false
	}
	s.stopOnce.Do(func() { close(s.stop) })
	return true
}

// forgetEnd stops recognising the broker's end notice of s, if it asked
// for one (wire.FlagEndNotice).
func (c *Client) forgetEnd(s *Subscription) {
	c.pmu.Lock()
	if s.endCorr != 0 && c.subEnds[s.endCorr] == s {
		delete(c.subEnds, s.endCorr)
	}
	c.pmu.Unlock()
}

func (c *Client) hasSub(topic string, partition int32) bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	return slices.ContainsFunc(c.subs[topic], func(o *Subscription) bool { return o.partition == partition })
}

// setSubs replaces a topic's list in a copy of the map and publishes the
// copy, so the reader looks subscriptions up without a lock. smu held.
func (c *Client) setSubs(topic string, list []*Subscription) {
	m := maps.Clone(c.subs)
	if len(list) == 0 {
		delete(m, topic)
	} else {
		m[topic] = list
	}
	c.subs = m
	c.subSnap.Store(&m)
}

// endSubscriptions runs when the reader exits: it closes every
// subscription's queue (the reader was its only sender), so each handler
// goroutine finishes what is queued and exits.
func (c *Client) endSubscriptions() {
	c.smu.Lock()
	all := c.subs
	c.subs = map[string][]*Subscription{}
	c.subSnap.Store(&c.subs)
	c.smu.Unlock()
	if gs := c.group.Load(); gs != nil {
		close(gs.queue)
	}
	for _, list := range all {
		for _, s := range list {
			close(s.queue)
		}
	}
}

// deliver stages a Deliver frame for every local subscription that wants
// its partition. Staged deliveries are queued once per read (flushStaged),
// so a subscription's goroutine is woken once per read, not per frame.
func (c *Client) deliver(body []byte) error {
	v, err := wire.DecodeBatchView(body)
	if err != nil {
		return fmt.Errorf("%w: deliver: %w", ErrProtocol, err)
	}
	if gs := c.group.Load(); gs != nil && string(v.Topic) == gs.topic {
		var p [4]byte
		binary.BigEndian.PutUint32(p[:], uint32(v.Partition))
		gs.stage(evDeliver, p[:], v.Batch)
	}
	snap := c.subSnap.Load()
	if snap == nil {
		return nil
	}
	for _, s := range (*snap)[string(v.Topic)] {
		if s.partition != wire.PartitionAny && s.partition != v.Partition {
			continue
		}
		skip, missed, ok := s.admit(v.Partition, v.Batch)
		if !ok {
			continue
		}
		if s.inline != nil {
			s.inline.Partition = v.Partition
			s.dispatchBatch(s.inline, v.Batch, skip, missed)
			continue
		}
		if s.staged == nil {
			s.staged = bytebufferpool.Get()
			c.staged = append(c.staged, s)
		}
		s.staged.B = binary.BigEndian.AppendUint32(s.staged.B, uint32(v.Partition))
		s.staged.B = binary.BigEndian.AppendUint64(s.staged.B, uint64(skip))
		s.staged.B = binary.BigEndian.AppendUint64(s.staged.B, uint64(missed))
		s.staged.B = append(s.staged.B, v.Batch...)
	}
	return nil
}

// chunkEntry is the size of what precedes each staged batch: partition,
// the offset below which its records are skipped, and Delivery.Missed of
// its first record.
const chunkEntry = 4 + 8 + 8

// admit decides what of a delivered batch s passes on, and moves s's
// resume point past it. A batch wholly below the point is a repeat (a
// replay that began before it) and is dropped; one that straddles it has
// the records below skipped. The reader calls it.
func (s *Subscription) admit(p int32, b wire.Batch) (skip, missed int64, ok bool) {
	base, end := b.BaseOffset(), b.BaseOffset()+int64(b.Count())
	skip = -1
	if next, seen := s.next[p]; seen {
		if end <= next {
			return 0, 0, false
		}
		if base < next {
			skip = next
		}
	} else if s.next == nil {
		s.next = map[int32]int64{}
	}
	s.next[p] = end
	if m, ok := s.missed[p]; ok {
		missed = m
		delete(s.missed, p)
	}
	return skip, missed, true
}

// flushStaged queues what deliver staged during one read.
func (c *Client) flushStaged() {
	if gs := c.group.Load(); gs != nil {
		gs.flush()
	}
	for i, s := range c.staged {
		s.enqueue(s.staged)
		s.staged = nil
		c.staged[i] = nil
	}
	c.staged = c.staged[:0]
}

// enqueue hands a chunk to the subscription's goroutine. At the pending
// bound it waits, up to the stall bound, which stops the reader and so
// pushes back on the broker; past that it drops.
func (s *Subscription) enqueue(b *bytebufferpool.ByteBuffer) {
	n := int64(len(b.B))
	if !s.waitForRoom(n) {
		s.drop(b)
		return
	}
	s.pending.Add(n)
	s.queue <- b // room checked: the reader is the only sender
	if s.slow.Load() && s.pending.Load() < s.limit/2 {
		s.slow.Store(false)
	}
}

// room reports whether n more bytes fit. A chunk always fits an empty
// queue, so one larger than the bound still gets through.
func (s *Subscription) room(n int64) bool {
	p := s.pending.Load()
	return (p == 0 || p+n <= s.limit) && len(s.queue) < cap(s.queue)
}

func (s *Subscription) waitForRoom(n int64) bool {
	if s.room(n) {
		return true
	}
	t := time.NewTimer(s.c.opts.subStall)
	defer t.Stop()
	for !s.room(n) {
		select {
		case <-s.space:
		case <-t.C:
			return s.room(n)
		case <-s.stop:
			return false
		case <-s.c.closing:
			return false
		}
	}
	return true
}

func (s *Subscription) drop(b *bytebufferpool.ByteBuffer) {
	s.dropped.Add(uint64(countRecords(b.B)))
	bytebufferpool.Put(b)
	if !s.slow.Swap(true) {
		s.c.report(fmt.Errorf("%w: subscription to %s is dropping messages; its handler is behind by %d bytes",
			ErrSlowConsumer, s.topic, s.pending.Load()))
	}
}

// countRecords counts the records in a staged chunk.
func countRecords(chunk []byte) int {
	n := 0
	for len(chunk) >= chunkEntry {
		size := wire.BatchSize(chunk[chunkEntry:])
		if size < wire.BatchHeaderSize || chunkEntry+size > len(chunk) {
			break
		}
		n += wire.Batch(chunk[chunkEntry : chunkEntry+size]).Count()
		chunk = chunk[chunkEntry+size:]
	}
	return n
}

// run calls the handler for every queued delivery, in order.
func (s *Subscription) run() {
	defer close(s.done)
	d := &Delivery{Topic: s.topic}
	for {
		select {
		case b, ok := <-s.queue:
			if !ok {
				return
			}
			s.dispatch(d, b.B)
			s.pending.Add(-int64(len(b.B)))
			bytebufferpool.Put(b)
			select {
			case s.space <- struct{}{}:
			default:
			}
		case <-s.stop:
			return
		}
	}
}

// dispatch calls the handler for every record of a staged chunk.
func (s *Subscription) dispatch(d *Delivery, chunk []byte) {
	for len(chunk) >= chunkEntry {
		d.Partition = int32(binary.BigEndian.Uint32(chunk))
		skip := int64(binary.BigEndian.Uint64(chunk[4:]))
		missed := int64(binary.BigEndian.Uint64(chunk[12:]))
		size := wire.BatchSize(chunk[chunkEntry:])
		batch := wire.Batch(chunk[chunkEntry : chunkEntry+size])
		chunk = chunk[chunkEntry+size:]
		s.dispatchBatch(d, batch, skip, missed)
	}
}

// dispatchBatch calls the handler for every record of one batch at or
// above skipBelow, unless the subscription has been stopped; the first
// one reports missed.
func (s *Subscription) dispatchBatch(d *Delivery, batch wire.Batch, skipBelow, missed int64) {
	select {
	case <-s.stop:
		return
	default:
	}
	it, err := s.dec.Records(batch, wire.MaxBatchBytes)
	if err != nil {
		s.c.report(fmt.Errorf("%w: delivered batch of %s: %w", ErrProtocol, s.topic, err))
		return
	}
	var r wire.Record
	for it.Next(&r) {
		if r.Offset < skipBelow {
			continue
		}
		d.Missed, missed = missed, 0
		d.Offset, d.Key, d.Value = r.Offset, r.Key, r.Value
		d.Timestamp = time.Unix(0, r.Timestamp)
		d.Headers = d.Headers[:0]
		if r.HeaderCount() > 0 {
			r.Headers(func(k, v []byte) { d.Headers = append(d.Headers, Header{Key: string(k), Value: v}) })
		}
		s.handler(d)
	}
	if it.Err() != nil {
		s.c.report(fmt.Errorf("%w: delivered batch of %s: %w", ErrProtocol, s.topic, it.Err()))
	}
	if s.batchEnd != nil {
		s.batchEnd()
	}
}

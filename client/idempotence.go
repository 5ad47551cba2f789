package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Idempotent publishing (WithIdempotence). The client gets a producer id
// from the broker when it connects, and numbers its batches per partition
// when it seals them: each batch carries the id and the sequence of its
// first record (docs/PROTOCOL.md §5.1). A partition remembers the last
// ProducerWindow batches of each producer, so a batch sent again after a
// lost connection is answered with its original offsets instead of being
// stored twice. For that every batch the client may resend must still be
// remembered: the client keeps at most ProducerWindow batches in flight
// per partition, and holds the next ones, sealed, until an ack makes room.
//
// For the reconnect logic (client.go): the producer id lives on the
// Client, not on a connection, and a batch is numbered once, at release,
// in its frame; a frame resent on a new connection, byte for byte and in
// order, is therefore the same batch to the broker, and the batches after
// it continue its sequence. c.idempotent() says whether the client numbers
// batches.
//
// Unkeyed messages normally go to PartitionAny and the broker picks the
// partition. A sequence is per partition, so an idempotent client picks it
// itself: the same partition for a batch (sticky), the next one for the
// next batch of the topic, round robin. Unlike the broker's choice, this
// does not skip offline partitions.
//
// A batch refused as not stored leaves a hole in its partition's
// sequence, which the broker refuses to skip; one answered OUTCOME_UNKNOWN
// may or may not be stored. Either way the client asks for a new producer
// id, which every partition treats as a producer it does not know (any
// start is accepted), and restarts its sequences; batches sealed meanwhile
// wait for it. Batches already sent after the failed one fail as it did
// (OUT_OF_ORDER_SEQUENCE): they were not stored either.

// ProducerWindow is how many batches per partition an idempotent client
// has in flight at most: as many as a partition remembers per producer.
const ProducerWindow = 5

// ErrDuplicateSequence means an idempotent batch was stored before, longer ago
// than the partition remembers, so its offsets are unknown; it was not
// stored again. MayHaveBeenStored reports it as stored.
var ErrDuplicateSequence = wire.ErrDuplicateSequence

// ErrOutOfOrderSequence means an idempotent batch did not follow its
// producer's previous one in the partition; it was not stored.
var ErrOutOfOrderSequence = wire.ErrOutOfOrderSequence

// idempotence is an idempotent client's numbering state, guarded by wmu.
type idempotence struct {
	id       int64
	parts    map[batchKey]*partSeq
	sticky   map[string]*stickyPart // topic -> where its unkeyed messages go
	renewing bool                   // asking for a new id: hold every batch
}

// partSeq is one partition's numbering: the producer id its batches
// carry (the client's, from the time it was created or last renewed) and
// the next sequence. A cluster (cluster.go) moves a partition's partSeq,
// with its batches, from the node that stopped leading it to the next
// leader's client, which carries on numbering under the same id.
type partSeq struct {
	id       int64
	next     int32    // the sequence of the next batch released
	inflight int      // released and not answered
	waiting  []*batch // sealed, waiting for room in the window, in order
	// stale: the client that held it began renewing its producer id (a
	// hole in some sequence) before the new id came: whoever holds it
	// next must renew before numbering under it (cluster.go).
	stale bool
}

// stickyPart is where a topic's unkeyed messages go: ids[at].
type stickyPart struct {
	ids    []int32 // every partition's id, in order
	online []bool  // whether each was online when the client looked
	at     int
}

// advance moves to the next partition that was online (or stays, with
// next false, if the current one was); with none online, anywhere.
func (s *stickyPart) advance(next bool) {
	if next {
		s.at = (s.at + 1) % len(s.ids)
	}
	for range s.ids {
		if s.online[s.at] {
			return
		}
		s.at = (s.at + 1) % len(s.ids)
	}
}

// idempotent reports whether the client numbers its batches.
func (c *Client) idempotent() bool { return c.idem != nil }

// ProducerID returns the producer id the client numbers its batches with,
// or -1 when it does not (see WithIdempotence).
func (c *Client) ProducerID() int64 {
	if !c.idempotent() {
		return wire.NoProducer
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.idem.id
}

// initIdempotence gets the client's first producer id, at Dial: the state
// is set up before the client's goroutines start (as renewing, so nothing
// is numbered before the id is in), and the id is asked for once they run.
func (c *Client) initIdempotence(ctx context.Context) error {
	id, err := c.newProducerID(ctx)
	if err != nil {
		return fmt.Errorf("ratatoskr: idempotent producer: %w (a broker without it answers unknown frame type; "+
			"WithoutIdempotence turns it off)", err)
	}
	c.wmu.Lock()
	c.idem.id, c.idem.renewing = id, false
	for _, ps := range c.idem.parts {
		ps.id = id
	}
	c.wmu.Unlock()
	return nil
}

func (c *Client) newProducerID(ctx context.Context) (int64, error) {
	r, err := c.call(ctx, wire.TypeInitProducer, 0, nil)
	if err != nil {
		return 0, err
	}
	if err := expect(r, wire.TypeProducerID); err != nil {
		return 0, err
	}
	id, err := wire.DecodeProducerID(r.body)
	if err != nil || id < 0 {
		return 0, fmt.Errorf("%w: bad ProducerID answer", ErrProtocol)
	}
	return id, nil
}

// stickyFor returns the partition for an unkeyed message of an
// idempotent client to topic: the topic's sticky partition, which admit
// moves on to the next partition that was online when the client first
// looked (as the broker's own choice for PartitionAny skips offline
// ones). ok is false when the client has not looked yet (lookSticky).
// wmu held.
func (c *Client) stickyFor(topic string) (part int32, ok bool) {
	s := c.idem.sticky[topic]
	if s == nil {
		return 0, false
	}
	return s.ids[s.at], true
}

// lookSticky sets up topic's sticky partition from the topic's partitions,
// unless it is there already. A sticky partition stays until the
// partition count the client knows changes (dropSticky).
func (c *Client) lookSticky(ctx context.Context, topic string) error {
	c.wmu.Lock()
	_, ok := c.stickyFor(topic)
	c.wmu.Unlock()
	if ok {
		return nil
	}
	info, err := c.describe(ctx, topic, wire.FlagAutoCreate)
	if err != nil {
		return err
	}
	if len(info.Partitions) == 0 {
		return fmt.Errorf("%w: topic %s has no partitions", ErrProtocol, topic)
	}
	s := &stickyPart{}
	for _, p := range info.Partitions {
		s.ids = append(s.ids, int32(p.ID))
		s.online = append(s.online, p.State == PartitionOnline)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.idem.sticky[topic] == nil {
		s.at = len(c.idem.sticky) % len(s.ids)
		s.advance(false)
		c.idem.sticky[topic] = s
	}
	return nil
}

// dropSticky forgets topic's sticky partition, when its partition count
// may have changed: the next unkeyed message looks again (lookSticky).
// It takes wmu.
func (c *Client) dropSticky(topic string, partitions int) {
	if c.idem == nil {
		return
	}
	c.wmu.Lock()
	if s := c.idem.sticky[topic]; s != nil && len(s.ids) != partitions {
		delete(c.idem.sticky, topic)
	}
	c.wmu.Unlock()
}

// admit numbers a sealed batch if its partition's window has room, and
// reports whether it may be sent; otherwise it waits in the partition's
// queue until an ack releases it (idemAnswered). wmu held.
func (c *Client) admit(b *batch) bool {
	if s := c.idem.sticky[b.key.topic]; s != nil && s.ids[s.at] == b.key.partition {
		s.advance(true)
	}
	ps := c.idem.parts[b.key]
	if ps == nil {
		ps = &partSeq{id: c.idem.id}
		c.idem.parts[b.key] = ps
	}
	if c.idem.renewing || ps.inflight >= ProducerWindow || len(ps.waiting) > 0 {
		ps.waiting = append(ps.waiting, b)
		return false
	}
	c.number(ps, b)
	return true
}

// windowFull reports whether a batch for k would have to wait: the writer
// then leaves k's open batch open, to grow until an ack makes room,
// rather than sealing a small batch at every write. wmu held.
func (c *Client) windowFull(k batchKey) bool {
	ps := c.idem.parts[k]
	return c.idem.renewing || ps != nil && (ps.inflight >= ProducerWindow || len(ps.waiting) > 0)
}

// sealable reports whether the writer has an open batch to seal. wmu held.
func (c *Client) sealable() bool {
	if c.idem == nil {
		return len(c.open) > 0
	}
	for k := range c.open {
		if !c.windowFull(k) {
			return true
		}
	}
	return false
}

// number gives b the next sequence of its partition. wmu held.
func (c *Client) number(ps *partSeq, b *batch) {
	b.bb.SetProducer(ps.id, ps.next)
	b.idem, b.ps = true, ps
	ps.next = wire.NextSeq(ps.next, b.count)
	ps.inflight++
}

// releaseWaiting sends the waiting batches that now fit their windows.
// wmu held.
func (c *Client) releaseWaiting(ps *partSeq) bool {
	released := false
	for len(ps.waiting) > 0 && ps.inflight < ProducerWindow && !c.idem.renewing {
		b := ps.waiting[0]
		ps.waiting[0] = nil
		ps.waiting = ps.waiting[1:]
		c.number(ps, b)
		c.release(b)
		released = true
	}
	return released
}

// idemAnswered frees b's place in its partition's window, and after a
// failure that leaves a hole in the sequence starts getting a new
// producer id. It runs on the reader, after b left the in-flight map.
func (c *Client) idemAnswered(b *batch, err error) {
	c.wmu.Lock()
	ps := b.ps // not looked up by key: in a cluster the partition may have moved on (cluster.go)
	ps.inflight--
	hole := err != nil && !errors.Is(err, ErrDuplicateSequence)
	renew := hole && !c.idem.renewing && c.Err() == nil
	if renew {
		c.startRenewing()
	}
	if hole {
		ps.stale = true
	}
	released := c.releaseWaiting(ps)
	_, open := c.open[b.key]
	c.wmu.Unlock()
	if released || open {
		c.signalWriter() // to write what was released, or seal the batch that waited for room
	}
	if renew {
		go c.renewProducerID() // a call: it must not wait on the reader
	}
}

// renewProducerID gets a new producer id and restarts every partition's
// sequence, then sends the batches that waited for it. Until the
// connection ends, it retries nothing: a failure here means the
// connection is failing too.
func (c *Client) renewProducerID() {
	// A call ends when its answer comes or the client stops (failInflight
	// answers every call), so this goroutine cannot outlive the client.
	id, err := c.newProducerID(context.Background())
	if err != nil {
		c.report(fmt.Errorf("ratatoskr: idempotent producer: a new producer id: %w", err))
		return
	}
	c.wmu.Lock()
	c.idem.id, c.idem.renewing = id, false
	for _, ps := range c.idem.parts {
		ps.id, ps.next, ps.stale = id, 0, false
		c.releaseWaiting(ps)
	}
	c.wmu.Unlock()
	c.signalWriter()
}

// startRenewing holds every batch until a new producer id is in, and
// marks every partition's numbering as due for it. The caller starts
// renewProducerID. wmu held.
func (c *Client) startRenewing() {
	c.idem.renewing = true
	for _, ps := range c.idem.parts {
		ps.stale = true
	}
}

// waitingBatches calls fn with every batch waiting for room in its window.
// wmu held.
func (c *Client) waitingBatches(fn func(*batch)) {
	if c.idem == nil {
		return
	}
	for _, ps := range c.idem.parts {
		for _, b := range ps.waiting {
			fn(b)
		}
	}
}

// takeWaiting removes and returns every waiting batch, for a client that
// stops. wmu held.
func (c *Client) takeWaiting(dst []*batch) []*batch {
	if c.idem == nil {
		return dst
	}
	for _, ps := range c.idem.parts {
		dst = append(dst, ps.waiting...)
		clear(ps.waiting)
		ps.waiting = nil
	}
	return dst
}

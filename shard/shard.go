// Package shard is the state machine that owns partitions. A broker runs a
// fixed number of shards; each holds the mutable state of its partitions
// (next offsets, subscriber lists, held acks, watched subscribers) and
// changes it only by handling operations, in order, as etcd raft's RawNode
// does: it takes inputs and returns outputs, and does nothing else.
//
//   - Step(op) handles one operation: a publish, subscribe, catch-up,
//     unsubscribe, long-poll wait, delete, adoption, sync-policy change, or
//     the report of a write and fsync.
//   - Tick(now) starts a pass at now, the only clock the shard sees.
//   - Ready() ends the pass (releases the acks and deliveries that became
//     due, checks watched subscribers) and hands back what must happen
//     next: publish answers {conn, corr, base, count} or errors, outboxes
//     given deliveries to flush, writers to ask for a fresh backlog,
//     storage writes and syncs to start, interval-sync registrations, and
//     when to tick again.
//   - Advance() tells it the driver did all that.
//
// The shard starts no goroutine, reads no clock, encodes no frame, and
// calls no socket or file: it queues deliveries into subscribers' outboxes
// (memory, package outbox), stages batches in their logs and appends to
// memory logs (memory), and runs callers' callbacks (Join, Waiter, CatchUp)
// that only queue work. Everything else is its driver's (package
// shard/driver): the goroutine and the inbox ring, the run token that lets
// an event loop run a pass inline, CPU pinning, the syncer that writes and
// fsyncs logs, retention (file deletion), the clock, and the encoding and
// flushing of what Ready returns. One goroutine at a time holds the token
// and calls Tick, Step, Ready and Advance, which is why the publish path
// takes no locks.
//
// The operations a partition's methods build (Publish, Subscribe, ...) go
// to the shard's Driver, which queues them for the next pass.
package shard

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// ErrStopped is returned for operations sent to a shard that has stopped.
var ErrStopped = errors.New("shard: stopped")

// Config configures one shard. Zero fields take defaults.
type Config struct {
	ID     int // index among the broker's shards
	Shards int // how many shards the broker runs (sizes per-connection state)
	// MaxAckDelay bounds how long a publish ack is held back while a
	// subscriber of its partition is under pressure (see flow.go).
	MaxAckDelay time.Duration
	// SlowConsumerTimeout disconnects a subscriber that stays under
	// pressure this long.
	SlowConsumerTimeout time.Duration
	// StuckAfter is how long a subscriber's network layer may hold a
	// backlog without taking any of it, as far as its writer saw, before
	// the subscriber counts as stuck and no longer holds acks (see
	// flow.go; the broker's --stuck-consumer-after). Default 1s.
	StuckAfter time.Duration
	// OnBatch, when set, is called on the shard's thread once per stored
	// publish batch, right after the batch became visible to readers and
	// subscribers: its partition, first offset, message count and size in
	// bytes. It runs on the hot path and must return at once; nil costs one
	// check per batch.
	OnBatch func(p *Partition, base int64, count int, bytes int)
	// Observer, if not nil, receives per-batch and per-fsync measurements
	// for the broker's histograms (see observe.go).
	Observer Observer
	// MaxProducers bounds the idempotent producers each partition
	// remembers; a new one evicts the least recently used (producers.go).
	// Default DefaultMaxProducers.
	MaxProducers int

	watchEvery time.Duration // how often watched outboxes are checked (flow.go)
	stall      outbox.Stall  // when a stalled subscriber is quiet, and stuck
}

func (c *Config) fill() {
	if c.Shards <= 0 {
		c.Shards = 1
	}
	if c.MaxAckDelay <= 0 {
		c.MaxAckDelay = 250 * time.Millisecond
	}
	if c.SlowConsumerTimeout <= 0 {
		c.SlowConsumerTimeout = 5 * time.Second
	}
	if c.StuckAfter <= 0 {
		c.StuckAfter = time.Second
	}
	c.watchEvery = max(min(maxWatchEvery, c.StuckAfter/4), time.Millisecond)
	c.stall = outbox.Stall{Quiet: int64(min(quietTicks*c.watchEvery, c.StuckAfter)), Stuck: int64(c.StuckAfter)}
}

// Driver is what runs a shard (package shard/driver): it queues the
// operations partitions build, and runs passes. Partitions reach it
// through their shard.
type Driver interface {
	// Push queues an operation, waiting while the inbox is full.
	Push(Op) error
	// TryPush queues an operation unless the inbox is full, and gets it
	// run soon.
	TryPush(Op) bool
	// Wake gets queued operations run by the driver's goroutine.
	Wake()
	// RunInline runs a pass on the calling goroutine if nobody else is
	// running the shard; owner identifies the caller's event loop.
	RunInline(owner any)
}

// Shard is one shard's state. Only the holder of its driver's run token
// calls Tick, Step, Ready, Advance and the other methods documented as the
// driver's; the statistics are readable from any goroutine.
type Shard struct {
	cfg    Config
	driver Driver

	// Owned by the token holder.
	pass           uint64
	now            int64        // the clock of the pass (Tick)
	rd             Ready        // what the pass produced
	held           []*Partition // partitions holding acks
	watch          []*outbox.Outbox
	watched        int64        // clock of the last check of watch
	stuckRefreshed int64        // clock when stuck watched outboxes were last asked for a report
	watchSlow      bool         // every watched outbox is stuck: check them less often
	parts          []*Partition // adopted partitions, for retention

	// Stats, readable from any goroutine.
	detached   atomic.Uint64 // live subscriptions detached from stuck subscribers
	batches    atomic.Uint64
	messages   atomic.Uint64
	heldChecks atomic.Uint64 // looks at held acks, for tests: "it ran, and did nothing"
	duplicates atomic.Uint64 // retried idempotent batches answered without storing them
}

// New returns a shard's state; d is what runs it.
func New(cfg Config, d Driver) *Shard {
	cfg.fill()
	return &Shard{cfg: cfg, driver: d}
}

// ID returns the shard's index.
func (s *Shard) ID() int { return s.cfg.ID }

// Config returns the shard's configuration, defaults filled in.
func (s *Shard) Config() Config { return s.cfg }

// Wake gets the shard's driver to run what is queued. Callers that pushed
// operations and will not run the shard inline call it.
func (s *Shard) Wake() { s.driver.Wake() }

// RunInline runs one pass of the shard on the calling goroutine if no one
// else is running it (see Driver.RunInline); owner identifies the caller's
// event loop, so outboxes of connections on that loop are written at once.
func (s *Shard) RunInline(owner any) { s.driver.RunInline(owner) }

// Detached reports how many live subscriptions the shard detached from
// stuck subscribers (see outbox.Outbox.Deliver).
func (s *Shard) Detached() uint64 { return s.detached.Load() }

// Stats reports the batches and messages the shard has appended.
func (s *Shard) Stats() (batches, messages uint64) { return s.batches.Load(), s.messages.Load() }

// Duplicates reports how many retried idempotent batches the shard
// answered with their original offsets instead of storing them again.
func (s *Shard) Duplicates() uint64 { return s.duplicates.Load() }

// HeldChecks reports how many times the shard has looked at its held acks.
func (s *Shard) HeldChecks() uint64 { return s.heldChecks.Load() }

// Ready is what a pass produced, for the driver to carry out before
// Advance. The slices are the shard's, valid until Advance.
type Ready struct {
	// Pass numbers the pass, for outbox.Outbox.Mark.
	Pass uint64
	// Answers are the publish acks and errors, in the order they were
	// decided, to encode into their connections' outboxes.
	Answers []Answer
	// Touched are the outboxes given deliveries (or turned slow) in this
	// pass, each once: the driver flushes them, with those it gives
	// Answers, once each.
	Touched []*outbox.Outbox
	// Refresh are outboxes whose writers are to be asked for a fresh
	// backlog figure (outbox.Outbox.Refresh), to judge their pressure.
	Refresh []*outbox.Outbox
	// Syncs are partitions whose staged batches are to be written and, if
	// Always, fsynced; the driver reports each with Synced. One request is
	// outstanding per partition.
	Syncs []SyncRequest
	// Intervals registers partitions to be fsynced every Every, or
	// forgets them (Every 0), in order.
	Intervals []IntervalSync
	// HeldForPressure says some ack waits only for a subscriber to drain:
	// the shard needs a Tick within a millisecond, to release it on time.
	HeldForPressure bool
	// WatchEvery, when not 0, is how often the shard needs a Tick to check
	// the subscribers it watches (see flow.go).
	WatchEvery time.Duration
}

// Answer is the answer to one publish: an ack, or an error when Err is
// set. Bytes is the size of its batch, for the connection's inflight
// count; Recv is when the publish was pushed (the driver's clock, see
// Op.Stamped), for the ack latency.
type Answer struct {
	Out   *outbox.Outbox
	Corr  uint32
	Ack   wire.PublishAck
	Err   *wire.Error
	Bytes int
	Recv  int64
}

// SyncRequest asks for a partition's staged batches to be written, and
// fsynced when Always is set (its policy when the shard asked).
type SyncRequest struct {
	P      *Partition
	Always bool
}

// IntervalSync registers a SyncInterval partition to be fsynced every
// Every, or forgets it (Every 0).
type IntervalSync struct {
	P     *Partition
	Every time.Duration
}

// Tick starts a pass at now, which never goes backwards. The driver calls
// it before the Steps of a pass, and also with no Step when Ready asked to
// be ticked (HeldForPressure, WatchEvery) or Due says so.
func (s *Shard) Tick(now int64) {
	s.pass++
	s.now = now
	s.rd.Pass = s.pass
}

// Due reports whether a pass with no operation has work at now: held acks
// to look at, or watched subscribers to check.
func (s *Shard) Due(now int64) bool {
	return len(s.held) > 0 || s.watchDue(now)
}

// Step handles one operation, in the pass Tick started.
func (s *Shard) Step(o *Op) { s.handle(o) }

// Ready ends the pass: it delivers and acks what became releasable,
// checks the watched subscribers when due, and returns what the driver
// must carry out before Advance.
func (s *Shard) Ready() *Ready {
	if len(s.held) > 0 {
		s.releaseHeld()
	}
	if s.watchDue(s.now) {
		s.checkWatched()
	}
	s.rd.HeldForPressure = s.heldForPressure()
	s.rd.WatchEvery = 0
	if len(s.watch) > 0 {
		s.rd.WatchEvery = s.watchInterval()
	}
	return &s.rd
}

// Advance tells the shard the driver carried out the last Ready.
func (s *Shard) Advance() {
	clear(s.rd.Answers)
	clear(s.rd.Touched)
	clear(s.rd.Refresh)
	clear(s.rd.Syncs)
	clear(s.rd.Intervals)
	s.rd.Answers, s.rd.Touched, s.rd.Refresh = s.rd.Answers[:0], s.rd.Touched[:0], s.rd.Refresh[:0]
	s.rd.Syncs, s.rd.Intervals = s.rd.Syncs[:0], s.rd.Intervals[:0]
}

// Adopted returns the partitions adopted for retention (the driver applies
// it, since that deletes files). Valid until the next Step.
func (s *Shard) Adopted() []*Partition { return s.parts }

// Unwritten returns, for the driver's shutdown, a write (and, under
// "always", fsync) request for each partition still holding staged
// batches that may be written: not deleted, and not read-only.
func (s *Shard) Unwritten() []SyncRequest {
	var reqs []SyncRequest
	for _, p := range s.held {
		// A read-only partition's staged batches were answered as never
		// stored; writing them now would make that untrue.
		if !p.deleted && p.failed == nil {
			reqs = append(reqs, SyncRequest{P: p, Always: p.sync.Mode == SyncAlways})
		}
	}
	return reqs
}

// Shutdown answers every held publish, for the driver's Stop, after the
// final Synced reports: acks for what may be acked, ErrShuttingDown for
// deliveries still waiting for an fsync. Call Ready afterwards.
func (s *Shard) Shutdown() {
	if len(s.held) > 0 {
		s.releaseHeld()
	}
	for _, p := range s.held {
		s.releaseAll(p)
	}
	s.held = nil
}

// touch records that out needs a flush at the end of this pass.
func (s *Shard) touch(out *outbox.Outbox) {
	if out.Mark(s.cfg.ID, s.pass) {
		s.rd.Touched = append(s.rd.Touched, out)
	}
}

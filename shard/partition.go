package shard

import (
	"errors"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// SyncMode says when a partition's appends are made durable.
type SyncMode uint8

// Sync modes; see SyncPolicy.
const (
	// SyncAlways: a publish is acked, and delivered, only once it is on
	// disk. Batches that arrive while an fsync runs share the next one.
	SyncAlways SyncMode = iota
	// SyncInterval: the log is synced every Interval; acks do not wait.
	SyncInterval
	// SyncNever: the operating system decides when data reaches the disk.
	SyncNever
)

// SyncPolicy is a partition's durability policy.
type SyncPolicy struct {
	Mode     SyncMode
	Interval time.Duration // for SyncInterval
}

// String renders the policy as the topic config value it came from.
func (p SyncPolicy) String() string {
	switch p.Mode {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval=" + p.Interval.String()
	}
	return "never"
}

// Partition is one partition of a topic. The server holds pointers to route
// operations; only the holder of the owning shard's run token reads or
// writes the fields marked "shard-owned". The atomic fields are published
// for readers anywhere.
type Partition struct {
	Topic string
	ID    int32
	Shard *Shard
	Log   storage.Log
	// Replica, when set (before the partition is adopted), replicates its
	// publishes instead of storing them (replica.go).
	Replica Replicator

	// shard-owned
	sync    SyncPolicy       // changed at run time through SetSync
	next    int64            // offset the next record gets
	visible int64            // end offset readers and subscribers have been given
	written int64            // end offset written to the log's files (staged logs)
	durable int64            // end offset known to be on disk (SyncAlways)
	syncing bool             // a write/sync request is with the driver
	subs    []*outbox.Outbox // push subscribers, in subscription order
	held    []heldAck        // acks (and, for SyncAlways, deliveries) waiting
	waiters []*Waiter        // long polls waiting for data past visible
	deleted bool
	failed  *wire.Error // the log turned read-only: the answer to every later publish
	// producers remembers recent idempotent producers' batches
	// (producers.go); nil until the first idempotent batch.
	producers *producers
	// awaiting holds retries of idempotent batches still being
	// replicated, until the original's outcome (replica.go).
	awaiting map[prodKey][]Op

	endOffset atomic.Int64
	nsubs     atomic.Int32
	nwaiters  atomic.Int32
	traffic   traffic // for metrics; written per batch
	// Retention, changeable at run time: nanoseconds and bytes, 0 = none.
	retention      atomic.Int64
	retentionBytes atomic.Int64
}

// NewPartition returns a partition owned by s whose log is l; offsets
// continue from the log's end, all of which is durable and visible.
func NewPartition(topic string, id int32, s *Shard, l storage.Log, sync SyncPolicy) *Partition {
	_, end := l.Bounds()
	p := &Partition{Topic: topic, ID: id, Shard: s, Log: l, sync: sync, next: end, visible: end, written: end, durable: end}
	p.endOffset.Store(end)
	return p
}

// SetRetention changes how long and how much the partition keeps; the
// shard's driver applies it at its next retention tick.
func (p *Partition) SetRetention(age time.Duration, bytes int64) {
	p.retention.Store(int64(age))
	p.retentionBytes.Store(bytes)
}

// SetSync changes the partition's fsync policy. Publishes appended after
// the change follow the new policy; acks waiting for an fsync under
// "always" are released once the new policy allows them.
func (p *Partition) SetSync(sp SyncPolicy) error {
	return p.Shard.driver.Push(Op{kind: opSetSync, part: p, n: int64(sp.Mode), n2: int64(sp.Interval)})
}

// EndOffset is the visible end: the offset the next delivered record gets.
func (p *Partition) EndOffset() int64 { return p.endOffset.Load() }

// Subscribers is the number of push subscribers.
func (p *Partition) Subscribers() int { return int(p.nsubs.Load()) }

// Waiters is the number of long polls registered with the partition.
func (p *Partition) Waiters() int { return int(p.nwaiters.Load()) }

// Retention reports what SetRetention set: the age and the bytes the
// partition keeps, 0 for no bound.
func (p *Partition) Retention() (age time.Duration, bytes int64) {
	return time.Duration(p.retention.Load()), p.retentionBytes.Load()
}

// opKind enumerates what a shard can be asked to do.
type opKind uint8

const (
	opPublish opKind = iota + 1
	opSubscribe
	opUnsubscribe
	opDelete
	opAdopt
	opSynced
	opWait
	opUnwait
	opCatchUp
	opSetSync
	opReplicated // a replicated publish's outcome (replica.go)
	opAdvance    // a replicated partition's group committed up to n
	opDemoted    // a replicated partition's node no longer leads its group
)

// Op is one operation for a shard, built by a partition's methods and
// queued by the shard's driver. It is a value (no allocation per
// operation); a publish's batch travels as a reference to its Buf.
type Op struct {
	kind     opKind
	corr     uint32
	batchOff int32 // where the batch starts in buf.B
	at       int64 // opPublish: the driver's clock when pushed, for the ack latency
	part     *Partition
	out      *outbox.Outbox
	buf      *storage.Buf
	join     *Join
	waiter   *Waiter                  // opWait, opUnwait
	n        int64                    // opSynced: written end; opWait, opCatchUp: offset
	n2       int64                    // opSynced: durable end
	err      error                    // opSynced: the write failed; opReplicated: the outcome
	err2     error                    // opSynced: the fsync failed
	fn       func(end int64, ok bool) // opCatchUp, opDelete
	cancel   *atomic.Bool             // opCatchUp: once set, the catch-up joins nothing
	prods    []ProducerBatch          // opAdvance: idempotent batches committed
}

// Stamped returns o with its arrival time set, if it is a publish: the
// driver stamps each operation it queues with its clock, from which the
// publish's ack latency is measured.
func (o Op) Stamped(now int64) Op {
	if o.kind == opPublish {
		o.at = now
	}
	return o
}

// Synced is the driver's report that p's log is written up to written and
// durable up to durable, or that the write (werr) or the fsync (serr)
// failed: the answer to a SyncRequest, handled by Step.
func Synced(p *Partition, written, durable int64, werr, serr error) Op {
	return Op{kind: opSynced, part: p, n: written, n2: durable, err: werr, err2: serr}
}

// Join completes a request that spans several partitions (subscribe to every
// partition of a topic): each shard reports its part, and whichever reports
// last calls Done with the first error, on that shard's thread.
type Join struct {
	remaining atomic.Int32
	err       atomic.Pointer[wire.Error]
	// Done runs once, on a shard's thread: it must only queue frames.
	Done func(err error)
}

// NewJoin returns a Join expecting n reports.
func NewJoin(n int, done func(err error)) *Join {
	j := &Join{Done: done}
	j.remaining.Store(int32(n))
	return j
}

func (j *Join) report(err *wire.Error) {
	if j == nil {
		return
	}
	if err != nil {
		j.err.CompareAndSwap(nil, err)
	}
	if j.remaining.Add(-1) == 0 {
		if e := j.err.Load(); e != nil {
			j.Done(e)
		} else {
			j.Done(nil)
		}
	}
}

// The operations below only queue work for the partition's shard, through
// its driver. The caller then runs the shard (Shard.RunInline), typically
// once after queueing everything one network read produced, or wakes its
// driver's goroutine (Shard.Wake).

// Publish hands a publish to the partition's shard. buf holds a whole
// Deliver frame (the server rewrote the Publish header) whose batch starts
// at batchOff and has been checked; the shard takes over the caller's
// reference. The shard stamps the offsets, appends to the log, and acks on
// out with corr and fans the frame out to every subscriber once the
// partition's sync policy allows.
func (p *Partition) Publish(out *outbox.Outbox, corr uint32, buf *storage.Buf, batchOff int) error {
	err := p.Shard.driver.Push(Op{kind: opPublish, part: p, out: out, corr: corr, buf: buf, batchOff: int32(batchOff)})
	if err != nil {
		buf.Release()
	}
	return err
}

// Subscribe adds out as a push subscriber from the live tail and reports to j.
func (p *Partition) Subscribe(out *outbox.Outbox, j *Join) error {
	return p.Shard.driver.Push(Op{kind: opSubscribe, part: p, out: out, join: j})
}

// CatchUp makes out a push subscriber if it has read everything below
// offset and offset is the partition's visible end; fn then gets (end,
// true). Otherwise fn gets the visible end and false, and the caller reads
// up to it and asks again. fn runs on the shard and must not block. This is
// how a subscriber replaying the log switches to the live tail with no gap
// and no duplicate: deliveries happen in the same pass that makes a batch
// visible.
//
// It joins nothing, fn getting false, once cancel (if not nil) is set, or
// when p is a replicated partition this node does not lead; the caller
// then stops, or finds that it no longer leads. See catchUp.
func (p *Partition) CatchUp(out *outbox.Outbox, offset int64, cancel *atomic.Bool, fn func(end int64, joined bool)) error {
	return p.Shard.driver.Push(Op{kind: opCatchUp, part: p, out: out, n: offset, cancel: cancel, fn: fn})
}

// Waker is told that a Waiter's wait is over.
type Waker interface {
	// Woken runs on the shard when data became visible past the waiter's
	// offset (ok, with the visible end) or the partition was deleted (ok
	// false, end -1). It runs for every waiter in the pass that makes data
	// visible, so it must only queue work: no reads, no blocking.
	Woken(end int64, ok bool)
}

// Waiter is one long poll registered with a partition: a few words and no
// goroutine, so that a million waiting fetches cost a million small records
// rather than a million stacks. The caller keeps it (typically inside its
// own record) and must not register it again while it is registered.
type Waiter struct {
	Waker Waker
	slot  int // shard-owned: index in p.waiters plus one; 0 when not registered
}

// Wait registers w to be woken once the partition has visible data past
// offset; it is woken at once when the partition already has, or is
// deleted. A woken waiter is no longer registered.
func (p *Partition) Wait(w *Waiter, offset int64) error {
	return p.Shard.driver.Push(Op{kind: opWait, part: p, n: offset, waiter: w})
}

// Unwait withdraws w, for a wait that timed out or whose connection
// closed; nothing happens if it was woken meanwhile. Without it a waiter
// would stay until data arrives, which on an idle partition is never.
func (p *Partition) Unwait(w *Waiter) error {
	return p.Shard.driver.Push(Op{kind: opUnwait, part: p, waiter: w})
}

// Unsubscribe removes out and reports to j, which may be nil.
func (p *Partition) Unsubscribe(out *outbox.Outbox, j *Join) error {
	return p.Shard.driver.Push(Op{kind: opUnsubscribe, part: p, out: out, join: j})
}

// Forget removes out without waiting, for a connection that closed: when
// the inbox is full it is skipped, and the next fan-out drops the closed
// outbox instead (a closed outbox refuses frames).
func (p *Partition) Forget(out *outbox.Outbox) {
	p.Shard.driver.TryPush(Op{kind: opUnsubscribe, part: p, out: out})
}

// Adopt registers the partition with its shard for retention ticks.
func (p *Partition) Adopt() error {
	return p.Shard.driver.Push(Op{kind: opAdopt, part: p})
}

// Delete retires the partition: its subscribers are dropped, waiting
// publishes fail, and later publishes fail with unknown topic. done, if not
// nil, runs on the shard after that; the caller then removes the log and
// its data (Log.Drop), off the shard, since that is disk work.
func (p *Partition) Delete(done func()) error {
	var fn func(int64, bool)
	if done != nil {
		fn = func(int64, bool) { done() }
	}
	return p.Shard.driver.Push(Op{kind: opDelete, part: p, fn: fn})
}

// handle runs one operation.
func (s *Shard) handle(o *Op) {
	if invariants && o.part != nil && o.part.Shard != s {
		panic("shard: invariant: operation for a partition owned by another shard")
	}
	switch o.kind {
	case opPublish:
		s.publish(o)
	case opSubscribe:
		s.subscribe(o)
	case opUnsubscribe:
		o.part.removeSub(o.out)
		o.join.report(nil)
	case opDelete:
		s.deletePartition(o.part, o.fn)
	case opAdopt:
		s.parts = append(s.parts, o.part)
		if o.part.sync.Mode == SyncInterval {
			s.rd.Intervals = append(s.rd.Intervals, IntervalSync{P: o.part, Every: o.part.sync.Interval})
		}
	case opSynced:
		s.synced(o.part, o.n, o.n2, o.err, o.err2)
	case opWait:
		s.wait(o.part, o.n, o.waiter)
	case opUnwait:
		o.part.unwait(o.waiter)
	case opCatchUp:
		s.catchUp(o.part, o.out, o.n, o.cancel, o.fn)
	case opSetSync:
		s.setSync(o.part, SyncPolicy{Mode: SyncMode(o.n), Interval: time.Duration(o.n2)})
	case opReplicated:
		s.replicated(o)
	case opAdvance:
		s.advance(o.part, o.n, o.prods)
	case opDemoted:
		if !o.part.deleted {
			s.detachAll(o.part)
		}
	}
}

func (s *Shard) setSync(p *Partition, sp SyncPolicy) {
	if p.deleted {
		return
	}
	p.sync = sp
	every := time.Duration(0)
	if sp.Mode == SyncInterval {
		every = sp.Interval
	}
	s.rd.Intervals = append(s.rd.Intervals, IntervalSync{P: p, Every: every})
	if len(p.held) > 0 {
		if !slices.Contains(s.held, p) {
			s.held = append(s.held, p)
		}
		if p.next > p.written || sp.Mode == SyncAlways && p.next > p.durable {
			s.requestSync(p)
		}
	}
}

// fail answers an operation that cannot run with err.
func (s *Shard) fail(o *Op, err *wire.Error) {
	switch o.kind {
	case opPublish, opReplicated:
		s.sendError(o.out, o.corr, len(o.buf.B)-int(o.batchOff), err)
		o.buf.Release()
	case opSubscribe, opUnsubscribe:
		o.join.report(err)
	case opWait:
		o.waiter.Waker.Woken(-1, false)
	case opCatchUp, opDelete:
		if o.fn != nil {
			o.fn(-1, false)
		}
	}
}

var errDeleted = &wire.Error{Code: wire.CodeUnknownTopic, Message: "topic was deleted"}

func (s *Shard) publish(o *Op) {
	p := o.part
	switch {
	case p.deleted:
		s.fail(o, errDeleted)
		return
	case p.failed != nil:
		s.fail(o, p.failed)
		return
	}
	batch := wire.Batch(o.buf.B[o.batchOff:])
	n := int64(batch.Count())
	if invariants && (n <= 0 || o.buf.Refs() < 1) {
		panic("shard: invariant: publish of an empty or released batch")
	}
	if err := notLeading(p); err != nil {
		s.fail(o, err) // before the producer's sequence: the leader's table is the one that counts
		return
	}
	var pr *producer
	idempotent := batch.ProducerID() != wire.NoProducer
	if idempotent {
		var answered bool
		if answered, pr = s.dedup(o, p, batch); answered {
			return
		}
	}
	if p.Replica != nil {
		s.replicate(o, p, batch)
		return
	}
	base := p.next
	batch.SetBaseOffset(base)
	a := heldAck{out: o.out, corr: o.corr, base: base, count: uint32(n), bytes: uint32(len(batch)), end: base + n,
		at: s.now, recv: o.at}
	if st, ok := p.Log.(storage.Staged); ok {
		// A disk log: the driver writes (and for SyncAlways fsyncs) it;
		// it is delivered and acked after that. The hold keeps the reference.
		if err := st.Stage(o.buf, batch); err != nil {
			s.fail(o, refusal(p, err))
			return
		}
		p.next += n
		s.count(n)
		s.countPublished(p, n, len(batch))
		if idempotent {
			p.producers.record(pr, batch.ProducerID(), producerBatch{seq: batch.ProducerSeq(), count: int32(n), base: base})
		}
		a.buf = o.buf
		s.hold(p, a)
		s.requestSync(p)
		return
	}
	if err := p.Log.Append(o.buf, batch); err != nil {
		s.fail(o, storageError(p, err))
		return
	}
	p.next += n
	s.count(n)
	s.countPublished(p, n, len(batch))
	if idempotent {
		p.producers.record(pr, batch.ProducerID(), producerBatch{seq: batch.ProducerSeq(), count: int32(n), base: base})
	}
	s.makeVisible(p, p.next)
	s.batchVisible(p, &a)
	pressure := s.fanOut(p, o.buf, base, n)
	o.buf.Release()
	if pressure || len(p.held) > 0 {
		s.hold(p, a)
		return
	}
	s.sendAck(p, a)
}

func (s *Shard) count(n int64) {
	s.batches.Add(1)
	s.messages.Add(uint64(n))
}

func storageError(p *Partition, err error) *wire.Error {
	return wire.Errorf(storage.Code(err), "partition "+strconv.Itoa(int(p.ID))+" of "+p.Topic+": "+err.Error())
}

// refusal is the answer to a publish whose Stage failed. A log that turned
// read-only behind the shard's back (an interval fsync failed) makes the
// partition refuse every later publish with the reason, as a failed fsync
// of its own would.
func refusal(p *Partition, err error) *wire.Error {
	if errors.Is(err, storage.ErrFailed) {
		p.turnReadOnly()
		return p.failed
	}
	return storageError(p, err)
}

// turnReadOnly makes p refuse every later publish with STORAGE_ERROR and
// the reason its log gave: nothing it refuses is stored. Error path only
// (Stats takes the log's lock).
func (p *Partition) turnReadOnly() {
	if p.failed != nil {
		return
	}
	why := p.Log.Stats().ReadOnly
	if why == "" {
		why = "the log refuses writes"
	}
	p.failed = wire.Errorf(wire.CodeStorageError, "partition "+strconv.Itoa(int(p.ID))+" of "+p.Topic+
		" is read-only until the broker restarts: "+why)
}

// outcomeUnknown is the answer to a publish that was written but not made
// durable (its fsync failed, or its failed write could not be cut off): it
// may be in the log after a restart, so a retry may duplicate it.
func outcomeUnknown(p *Partition, err error) *wire.Error {
	return wire.Errorf(wire.CodeOutcomeUnknown, "partition "+strconv.Itoa(int(p.ID))+" of "+p.Topic+
		": not acknowledged, but may be stored: "+err.Error())
}

// batchVisible reports a batch that makeVisible just published to the
// OnBatch hook, if there is one.
func (s *Shard) batchVisible(p *Partition, a *heldAck) {
	if s.cfg.OnBatch != nil {
		s.cfg.OnBatch(p, a.base, int(a.count), int(a.bytes))
	}
}

// makeVisible publishes end to readers and wakes long polls.
func (s *Shard) makeVisible(p *Partition, end int64) {
	p.visible = end
	if p.Replica == nil {
		// A replicated partition's log is its Raft log: its group moves
		// the visible end to the commit (raftlog.Storage.Commit) before
		// the shard hears of it. Set here, behind the group, it would go
		// back below committed entries, which Raft then cannot read
		// (Storage.Entries: ErrUnavailable, on which raft panics).
		p.Log.SetVisible(end)
	}
	p.endOffset.Store(end)
	if len(p.waiters) > 0 {
		p.wakeAll(end, true)
	}
}

// fanOut queues the same frame, of n messages, to every subscriber and
// reports whether any of them is under pressure. A subscriber whose outbox
// refuses the frame (closed, or just turned slow) is dropped here, so the
// others never wait for it; one whose socket takes nothing is left to the
// watch ticks (flow.go) rather than kicked.
func (s *Shard) fanOut(p *Partition, buf *storage.Buf, base, n int64) (pressure bool) {
	for i := 0; i < len(p.subs); {
		sub := p.subs[i]
		st := sub.Deliver(buf, buf.B, s.now, s.cfg.stall, p, base)
		if st == outbox.Refused || st == outbox.Detached {
			if st == outbox.Detached {
				s.watchOut(sub) // watched until it resumes or times out
				s.detached.Add(1)
			} else {
				s.touch(sub) // lets its writer see it turned slow
			}
			p.subs = slices.Delete(p.subs, i, i+1)
			p.nsubs.Store(int32(len(p.subs)))
			continue
		}
		if st != outbox.Sent {
			s.watchOut(sub)
		}
		if st&outbox.SentQuiet == 0 {
			s.touch(sub)
		}
		pressure = pressure || st&outbox.SentUnderPressure != 0
		i++
	}
	p.countDelivered(n, len(buf.B), len(p.subs)) // the refused are gone
	return pressure
}

func (s *Shard) subscribe(o *Op) {
	p := o.part
	switch {
	case p.deleted:
		o.join.report(errDeleted)
	case slices.Contains(p.subs, o.out):
		o.join.report(wire.ErrAlreadySubscribed)
	default:
		p.addSub(o.out)
		o.join.report(nil)
	}
}

func (p *Partition) addSub(out *outbox.Outbox) {
	if !slices.Contains(p.subs, out) {
		p.subs = append(p.subs, out)
		p.nsubs.Store(int32(len(p.subs)))
	}
}

func (p *Partition) removeSub(out *outbox.Outbox) {
	if i := slices.Index(p.subs, out); i >= 0 {
		p.subs = slices.Delete(p.subs, i, i+1)
		p.nsubs.Store(int32(len(p.subs)))
	}
}

// catchUp joins out to p's live subscribers (CatchUp). The shard knows a
// subscriber by its outbox alone, so a join must never outlive the
// subscription it was for: a removal undoing it later could remove the
// connection's next subscription to p instead, which would then be fed
// nothing, and never be ended.
// Hence a cancelled catch-up joins nothing here, on the shard, rather
// than joining and being undone by its replay: an unsubscribe (or a
// closing connection, or a stopped group feed) sets cancel before it
// queues out's removal, so a join is either seen cancelled or removed by
// that removal. Likewise a replicated partition this node does not lead
// takes no subscriber: Demoted, queued after the node stopped leading,
// detached those joined before it, and nothing would detach a later one,
// which would wait for batches this node no longer commits.
func (s *Shard) catchUp(p *Partition, out *outbox.Outbox, offset int64, cancel *atomic.Bool, fn func(int64, bool)) {
	if p.deleted {
		fn(-1, false)
		return
	}
	if offset >= p.visible && (cancel == nil || !cancel.Load()) && notLeading(p) == nil {
		p.addSub(out)
		fn(p.visible, true)
		return
	}
	fn(p.visible, false)
}

func (s *Shard) wait(p *Partition, offset int64, w *Waiter) {
	if invariants && w.slot != 0 {
		panic("shard: invariant: a waiter registered twice")
	}
	switch {
	case p.deleted:
		w.Waker.Woken(-1, false)
	case p.visible > offset:
		w.Waker.Woken(p.visible, true)
	default:
		p.waiters = append(p.waiters, w)
		w.slot = len(p.waiters)
		p.nwaiters.Store(int32(len(p.waiters)))
	}
}

// unwait removes w in O(1): the last waiter takes its place.
func (p *Partition) unwait(w *Waiter) {
	i := w.slot - 1
	if i < 0 {
		return // woken meanwhile
	}
	if invariants && p.waiters[i] != w {
		panic("shard: invariant: a waiter's slot names another waiter")
	}
	last := len(p.waiters) - 1
	p.waiters[i] = p.waiters[last]
	p.waiters[i].slot = i + 1
	p.waiters[last] = nil
	p.waiters = p.waiters[:last]
	w.slot = 0
	p.nwaiters.Store(int32(last))
	if last == 0 {
		p.shrinkWaiters()
	}
}

// wakeAll tells every waiter its wait is over; each only queues work.
func (p *Partition) wakeAll(end int64, ok bool) {
	ws := p.waiters
	p.waiters = ws[:0]
	p.nwaiters.Store(0)
	for i, w := range ws {
		ws[i] = nil
		w.slot = 0
		w.Waker.Woken(end, ok)
	}
	p.shrinkWaiters()
}

// shrinkWaiters lets go of a large empty waiter list, so that a burst of
// long polls does not pin its array for the partition's lifetime.
func (p *Partition) shrinkWaiters() {
	if cap(p.waiters) > 64 {
		p.waiters = nil
	}
}

func (s *Shard) deletePartition(p *Partition, done func(int64, bool)) {
	p.deleted = true
	p.subs = nil
	p.nsubs.Store(0)
	s.failHeld(p, errDeleted)
	for k, ops := range p.awaiting {
		for i := range ops {
			s.fail(&ops[i], errDeleted)
		}
		delete(p.awaiting, k)
	}
	p.wakeAll(-1, false)
	if i := slices.Index(s.parts, p); i >= 0 {
		s.parts = slices.Delete(s.parts, i, i+1)
	}
	s.rd.Intervals = append(s.rd.Intervals, IntervalSync{P: p})
	if done != nil {
		done(0, true)
	}
}

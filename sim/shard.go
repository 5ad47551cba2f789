package sim

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The shard actor drives one shard (package shard) as its driver does,
// with the scheduler choosing when each thing happens: operations are
// queued (publishes from two producers, subscribes and unsubscribes of
// two subscribers), a pass runs them at the simulated time (Tick, Step,
// Ready, Advance), the writes and fsyncs Ready asks for are carried out
// later, in any order across partitions, now and then failing, and the
// subscribers' writers drain their outboxes when they get to it, so acks
// are held for their pressure and they may be cut as slow consumers. The
// partitions are fsync=always DiskLogs on the machine's disk, which
// crashes.
//
// The model follows every publish by its correlation id, which the batch
// carries as its producer id: an ack names offsets past every earlier ack
// of its partition and covered by an fsync that succeeded; a subscriber
// gets, per partition, batches of its publishes covered by an fsync, in
// offset order with no gap or duplicate, and each at the offset its ack
// names (an ack may follow its delivery, held for a subscriber's
// pressure); one sync request is outstanding per partition; a crash
// keeps every acked batch at its offset, and anything else the recovered
// log holds is a publish that was not answered "not stored".
const (
	shardParts     = 2
	shardProds     = 2
	shardSubs      = 2
	shardSubLimit  = 8 << 10 // a subscriber's outbox: pressure from 2 KiB, cut past 8 KiB
	shardSegBytes  = 8192
	shardMaxQueued = 4096 // operations queued between passes, at most
	shardTopic     = "s"
)

// simDriver is the shard's driver as far as the shard can tell: it
// queues what partitions push, stamped with the simulated time.
type simDriver struct {
	w     *World
	queue []shard.Op
}

func (d *simDriver) Push(o shard.Op) error   { d.queue = append(d.queue, o.Stamped(d.w.Now)); return nil }
func (d *simDriver) TryPush(o shard.Op) bool { _ = d.Push(o); return true }
func (d *simDriver) Wake()                   {}
func (d *simDriver) RunInline(any)           {}

// nopFlusher is a writer that is never asked in time: the actor drains
// outboxes itself.
type nopFlusher struct{}

func (nopFlusher) ScheduleFlush() {}
func (nopFlusher) Owner() any     { return nil }
func (nopFlusher) FlushNow()      {}

type shardActor struct {
	d     *simDriver
	s     *shard.Shard
	files *storage.FileCache
	parts []*shardPart
	prods []*outbox.Outbox
	subs  []*shardSub
	syncs []shard.SyncRequest // asked for by Ready, not yet carried out
	// failed is what went wrong in a callback, seen by the pass.
	failed error
	corr   uint32              // the last correlation id given out
	sent   map[uint32]*sentPub // publishes not yet answered
}

// shardPart is one partition with its model. Deleting its topic and
// creating it again starts a new generation: a new topic name and
// directory, so frames of the old one are told apart.
type shardPart struct {
	id      int
	gen     int
	topic   string
	dir     string
	deleted bool // Delete is queued or done; the partition takes no publish
	efs     *vfs.ErrorFS
	log     *storage.DiskLog
	p       *shard.Partition
	durable int64 // the end of the last fsync that succeeded
	ackEnd  int64 // the end of the last ack
	// stored maps a base offset to the batch acked there (or found there
	// by recovery): a crash must keep it.
	stored map[int64]shardBatch
	// maybe holds publishes that may be in the log: unanswered ones, and
	// those answered OUTCOME_UNKNOWN. A publish answered "not stored" is in
	// neither map.
	maybe map[uint32]shardBatch
}

type shardBatch struct {
	corr  uint32
	count int
}

type sentPub struct {
	part  *shardPart
	gen   int
	out   *outbox.Outbox
	count int
}

type shardSub struct {
	id   int
	out  *outbox.Outbox
	on   [shardParts]bool  // subscribed (as far as the joins said)
	next [shardParts]int64 // the offset of the next delivery, -1 before the first
}

func newShardActor(w *World) (Actor, error) {
	a := &shardActor{sent: map[uint32]*sentPub{}}
	for i := range shardParts {
		p := &shardPart{id: i}
		p.newGen()
		a.parts = append(a.parts, p)
	}
	for i := range shardSubs {
		a.subs = append(a.subs, &shardSub{id: i})
	}
	return a, a.start(w, "open")
}

func (a *shardActor) Name() string { return "shard" }

// start builds a shard and its partitions on w.Mem, as the broker does at
// start, and checks what the logs hold.
func (a *shardActor) start(w *World, how string) error {
	a.d = &simDriver{w: w}
	a.s = shard.New(shard.Config{ID: 0, Shards: 1, MaxAckDelay: 50 * time.Millisecond,
		SlowConsumerTimeout: 500 * time.Millisecond, StuckAfter: time.Second}, a.d)
	a.files = storage.NewFileCache(8)
	w.Caches[a.Name()] = a.files
	a.syncs = nil
	clear(a.sent)
	a.prods = a.prods[:0]
	for range shardProds {
		a.prods = append(a.prods, outbox.NewOutbox(64<<20, 1, nopFlusher{}))
	}
	for _, sub := range a.subs {
		sub.reset()
	}
	var errs []error
	for _, p := range a.parts {
		if err := p.open(w, a, how); err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", p.id, err))
		}
	}
	return errors.Join(errs...)
}

// newGen starts the partition's next generation, empty.
func (p *shardPart) newGen() {
	p.gen++
	p.topic = fmt.Sprintf("%s%d", shardTopic, p.gen)
	p.dir = fmt.Sprintf("data/topics/%s/%d", p.topic, p.id)
	p.stored, p.maybe = map[int64]shardBatch{}, map[uint32]shardBatch{}
	p.durable, p.ackEnd, p.deleted = 0, 0, false
}

func (sub *shardSub) reset() {
	sub.out = outbox.NewOutbox(shardSubLimit, 1, nopFlusher{})
	for i := range sub.on {
		sub.on[i], sub.next[i] = false, -1
	}
}

// open opens the partition's log and checks it against the model: every
// stored batch at its offset, everything else a publish that may be
// there. What it holds is then stored: the crashed disk was all durable.
func (p *shardPart) open(w *World, a *shardActor, how string) error {
	p.efs = vfs.NewErrors(w.Mem)
	l, rec, err := storage.OpenDiskLog(storage.DiskConfig{FS: p.efs, Dir: p.dir, SegmentBytes: shardSegBytes,
		Files: a.files, Logger: w.Log, SegmentAge: 365 * 24 * time.Hour})
	if err != nil {
		return fmt.Errorf("%s: %w", how, err)
	}
	p.log = l
	start, end := l.Bounds()
	w.Tracef("shard p%d %s: [%d,%d) acked to %d, corrupt %v", p.id, how, start, end, p.ackEnd, rec.Corrupt)
	if end < p.ackEnd {
		return fmt.Errorf("%s: the log ends at %d, but %d was acked: acknowledged messages lost", how, end, p.ackEnd)
	}
	// A hole is reported as corrupt: a write that spanned a segment roll
	// and was never made durable (its fsync failed, or the crash came
	// first) may leave the new segment's head on disk without the old
	// one's tail. Nothing there was acked or delivered: every fsync that
	// would have covered it failed or never ran.
	holes := map[int64]int64{}
	for _, r := range rec.Corrupt {
		for base, sb := range p.stored {
			if base < r.To && base+int64(sb.count) > r.From {
				return fmt.Errorf("%s: recovery reports [%d,%d) corrupt, where publish %d was acked or delivered", how, r.From, r.To, sb.corr)
			}
		}
		holes[r.From] = r.To
	}
	found := map[int64]shardBatch{}
	next := start
	var bad error
	err = l.Read(start, 1<<30, func(b wire.Batch) bool {
		base, corr, n := b.BaseOffset(), uint32(b.ProducerID()), b.Count()
		if h, ok := holes[next]; ok && h == base {
			next = base
		}
		sb, acked := p.stored[base]
		switch {
		case base != next:
			bad = fmt.Errorf("a batch at %d where %d was due: offsets are not dense", base, next)
		case acked && sb.corr != corr:
			bad = fmt.Errorf("the batch at %d is publish %d, but publish %d was acked there", base, corr, sb.corr)
		case acked && sb.count != n:
			bad = fmt.Errorf("the batch at %d has %d records, %d were acked", base, n, sb.count)
		case !acked && p.maybe[corr].count != n:
			bad = fmt.Errorf("the batch at %d is publish %d of %d records, which was never published there or was answered not stored", base, corr, n)
		}
		found[base] = shardBatch{corr: corr, count: n}
		next = base + int64(n)
		return bad == nil
	})
	if err = errors.Join(err, bad); err != nil {
		return fmt.Errorf("%s: %w", how, err)
	}
	if next != end {
		return fmt.Errorf("%s: reading the log ended at %d, its end is %d", how, next, end)
	}
	for base, sb := range p.stored {
		if _, ok := found[base]; !ok && base+int64(sb.count) > start {
			return fmt.Errorf("%s: the batch acked at %d is gone", how, base)
		}
	}
	p.stored, p.maybe = found, map[uint32]shardBatch{}
	p.durable, p.ackEnd = end, end
	p.p = shard.NewPartition(p.topic, int32(p.id), a.s, l, shard.SyncPolicy{Mode: shard.SyncAlways})
	return p.p.Adopt()
}

func (a *shardActor) Step(w *World) error {
	switch r := w.Rand.IntN(100); {
	case r < 35:
		return a.publish(w)
	case r < 60:
		return a.pass(w)
	case r < 75:
		return a.sync(w)
	case r < 92:
		return a.drain(w)
	case r < 97:
		return a.toggle(w)
	case r < 99:
		return a.retain(w)
	default:
		return a.deleteTopic(w)
	}
}

// retain applies retention at the simulated time, as the driver does on
// its retention tick: it only removes from the start.
func (a *shardActor) retain(w *World) error {
	p := a.parts[w.Rand.IntN(len(a.parts))]
	maxAge := time.Duration(w.Rand.Int64N(retainMaxAge))
	maxBytes := int64(0)
	if w.Rand.IntN(2) == 0 {
		maxBytes = w.Rand.Int64N(4 * shardSegBytes)
	}
	before, _ := p.log.Bounds()
	n, err := p.log.Retain(w.Time(), maxAge, maxBytes)
	start, _ := p.log.Bounds()
	w.Tracef("shard retain p%d age=%v bytes=%d: removed %d, start %d->%d %v", p.id, maxAge, maxBytes, n, before, start, err)
	if start < before {
		return fmt.Errorf("partition %d: retention moved the start back from %d to %d", p.id, before, start)
	}
	if err != nil && !p.log.Failed() {
		return fmt.Errorf("partition %d: retention failed with no fault injected: %w", p.id, err)
	}
	return nil
}

// deleteTopic deletes a partition's topic, as the broker does: the shard
// retires the partition (its waiting publishes fail, its subscribers are
// dropped), then the log's files go, and the topic is created again,
// empty, as the next generation.
func (a *shardActor) deleteTopic(w *World) error {
	p := a.parts[w.Rand.IntN(len(a.parts))]
	if p.deleted {
		return a.pass(w)
	}
	p.deleted = true
	w.Tracef("shard delete %s", p.topic)
	old := p.p
	return old.Delete(func() {
		err := old.Log.Drop()
		w.Tracef("shard deleted %s: drop %v", p.topic, err)
		for _, sub := range a.subs {
			sub.on[p.id], sub.next[p.id] = false, -1
		}
		// Its outstanding sync is void: its log is gone, and the shard
		// ignores reports for a deleted partition.
		a.syncs = slices.DeleteFunc(a.syncs, func(r shard.SyncRequest) bool { return r.P == old })
		p.newGen()
		if err := p.open(w, a, "create"); err != nil {
			a.failed = errors.Join(a.failed, err)
		}
	})
}

// publish queues a batch of 1 to 5 records from a random producer to a
// random partition.
func (a *shardActor) publish(w *World) error {
	if len(a.d.queue) >= shardMaxQueued {
		return a.pass(w)
	}
	p := a.parts[w.Rand.IntN(len(a.parts))]
	if p.deleted {
		return a.pass(w)
	}
	out := a.prods[w.Rand.IntN(len(a.prods))]
	n := 1 + w.Rand.IntN(5)
	a.corr++
	buf, off := simFrame(p.topic, p.id, a.corr, n, w)
	a.sent[a.corr] = &sentPub{part: p, gen: p.gen, out: out, count: n}
	p.maybe[a.corr] = shardBatch{corr: a.corr, count: n}
	w.Tracef("shard publish p%d corr=%d n=%d", p.id, a.corr, n)
	return p.p.Publish(out, a.corr, buf, off)
}

// simFrame builds the Deliver frame the engine would hand the shard: a
// batch of n records whose producer id is corr.
func simFrame(topic string, part int, corr uint32, n int, w *World) (*storage.Buf, int) {
	frame, start := wire.StartFrame(nil, wire.TypeDeliver, 0, 0)
	frame = wire.AppendBatchPrefix(frame, topic, int32(part))
	off := len(frame)
	var bb wire.BatchBuilder
	bb.Start(frame, int64(corr), 0)
	for i := range n {
		bb.Append(w.Now, nil, make([]byte, 1+randomPadding(w.Rand)+i), nil)
	}
	frame = bb.Finish()
	wire.FinishFrame(frame, start)
	b := storage.NewBuf(len(frame))
	copy(b.B, frame)
	return b, off
}

// toggle subscribes a subscriber to a partition it is not subscribed to,
// or unsubscribes it; the join's answer arrives in the next pass.
func (a *shardActor) toggle(w *World) error {
	sub := a.subs[w.Rand.IntN(len(a.subs))]
	p := a.parts[w.Rand.IntN(len(a.parts))]
	if p.deleted {
		return a.pass(w)
	}
	if sub.on[p.id] {
		sub.on[p.id], sub.next[p.id] = false, -1
		w.Tracef("shard unsubscribe s%d p%d", sub.id, p.id)
		return p.p.Unsubscribe(sub.out, nil)
	}
	if sub.out.Queued() > 0 {
		// Frames of an earlier subscription are read first: a new one
		// starts at the live tail, and the model tells subscriptions apart
		// by when their frames are read.
		return a.drainSub(w, sub)
	}
	w.Tracef("shard subscribe s%d p%d", sub.id, p.id)
	out, gen := sub.out, p.gen
	return p.p.Subscribe(out, shard.NewJoin(1, func(err error) {
		w.Tracef("shard s%d joined p%d: %v", sub.id, p.id, err)
		if err == nil && sub.out == out && p.gen == gen {
			sub.on[p.id], sub.next[p.id] = true, -1
		}
	}))
}

// pass runs one pass at the simulated time and does what its Ready asks,
// except the writes and fsyncs, which wait for sync steps.
func (a *shardActor) pass(w *World) error {
	ops := a.d.queue
	a.d.queue = nil
	a.s.Tick(w.Now)
	for i := range ops {
		a.s.Step(&ops[i])
	}
	rd := a.s.Ready()
	w.Tracef("shard pass: %d ops, %d answers, %d touched, %d syncs", len(ops), len(rd.Answers), len(rd.Touched), len(rd.Syncs))
	err := a.failed
	a.failed = nil

	for _, an := range rd.Answers {
		if err = a.answered(w, an); err != nil {
			break
		}
	}
	for _, r := range rd.Syncs {
		if r.P != a.parts[r.P.ID].p {
			// Asked for before its topic's delete in the same pass: void,
			// as the report of a deleted partition is.
			continue
		}
		for _, q := range a.syncs {
			if q.P == r.P && err == nil {
				err = fmt.Errorf("a second sync request for partition %d while one is outstanding", r.P.ID)
			}
		}
		a.syncs = append(a.syncs, r)
	}
	a.s.Advance()
	return err
}

// answered checks one publish answer against the model.
func (a *shardActor) answered(w *World, an shard.Answer) error {
	pub, ok := a.sent[an.Corr]
	if !ok {
		return fmt.Errorf("an answer to publish %d, which is not waiting for one", an.Corr)
	}
	delete(a.sent, an.Corr)
	p := pub.part
	if an.Out != pub.out {
		return fmt.Errorf("the answer to publish %d went to another connection", an.Corr)
	}
	if pub.gen != p.gen {
		// Its topic was deleted in the pass that answers it: answered
		// before the delete, or unknown topic after it; its log is gone.
		w.Tracef("shard answer corr=%d to deleted %s: %v", an.Corr, p.topic, an.Err)
		return nil
	}
	if an.Err != nil {
		w.Tracef("shard answer corr=%d: %s", an.Corr, an.Err.Code)
		switch an.Err.Code {
		case wire.CodeOutcomeUnknown: // it stays in maybe
		case wire.CodeStorageError, wire.CodeStorageFull:
			delete(p.maybe, an.Corr) // not stored
		case wire.CodeUnknownTopic: // deleted: its log is gone
		default:
			return fmt.Errorf("publish %d answered %w", an.Corr, an.Err)
		}
		return nil
	}
	base, n := an.Ack.BaseOffset, int(an.Ack.Count)
	end := base + int64(n)
	w.Tracef("shard ack corr=%d p%d [%d,%d)", an.Corr, p.id, base, end)
	switch {
	case an.Ack.Partition != int32(p.id):
		return fmt.Errorf("publish %d to partition %d acked for partition %d", an.Corr, p.id, an.Ack.Partition)
	case n != pub.count:
		return fmt.Errorf("publish %d of %d records acked with %d", an.Corr, pub.count, n)
	case base < p.ackEnd:
		return fmt.Errorf("publish %d acked at %d, below the previous ack's end %d", an.Corr, base, p.ackEnd)
	case end > p.durable:
		return fmt.Errorf("publish %d acked up to %d, but only %d is durable (fsync=always)", an.Corr, end, p.durable)
	}
	if sb, ok := p.stored[base]; ok && sb.corr != an.Corr {
		return fmt.Errorf("publish %d acked at %d, where publish %d was delivered", an.Corr, base, sb.corr)
	}
	delete(p.maybe, an.Corr)
	p.stored[base] = shardBatch{corr: an.Corr, count: n}
	p.ackEnd = end
	return nil
}

// sync carries out one outstanding sync request, chosen at random, as the
// driver's syncer does, now and then with a failing write or fsync, and
// queues its report.
func (a *shardActor) sync(w *World) error {
	if len(a.syncs) == 0 {
		return a.pass(w)
	}
	i := w.Rand.IntN(len(a.syncs))
	r := a.syncs[i]
	a.syncs = append(a.syncs[:i], a.syncs[i+1:]...)
	p := a.parts[r.P.ID]
	if r.P != p.p {
		return nil // its topic was deleted meanwhile
	}
	fault := ""
	switch f := w.Rand.IntN(1000); {
	case f < faultOdds/2:
		p.efs.InjectWrite(nil, syscall.ENOSPC, w.Rand.IntN(2))
		fault = "enospc"
	case f < faultOdds:
		p.efs.InjectSync(nil, syscall.EIO, 0)
		fault = "eio"
	}
	written, werr := p.log.WritePending()
	var durable int64
	var serr error
	if werr == nil && r.Always {
		durable, serr = p.log.Sync()
	}
	p.efs.Clear()
	w.Tracef("shard sync p%d fault=%s: written=%d %v durable=%d %v", p.id, fault, written, werr, durable, serr)
	if (werr != nil || serr != nil) && fault == "" && !p.log.Failed() {
		return fmt.Errorf("partition %d: a write or fsync failed with no fault injected: %w", p.id, errors.Join(werr, serr))
	}
	if serr == nil && r.Always {
		p.durable = max(p.durable, durable)
	}
	return a.d.Push(shard.Synced(r.P, written, durable, werr, serr))
}

// drain has a subscriber's writer take everything queued for it, and
// checks each delivery.
func (a *shardActor) drain(w *World) error {
	return a.drainSub(w, a.subs[w.Rand.IntN(len(a.subs))])
}

func (a *shardActor) drainSub(w *World, sub *shardSub) error {
	pend, slow := sub.out.Take()
	var all []byte
	for _, b := range pend.IOV {
		all = append(all, b...)
	}
	sub.out.Done(pend, 0)
	w.Tracef("shard drain s%d: %d bytes slow=%v", sub.id, len(all), slow)
	for len(all) > 0 {
		f, n, err := wire.ReadFrame(all, 1<<30)
		if err != nil || n == 0 {
			return fmt.Errorf("subscriber %d: a bad frame: %w", sub.id, err)
		}
		all = all[n:]
		if f.Type != wire.TypeDeliver {
			return fmt.Errorf("subscriber %d got a %v frame", sub.id, f.Type)
		}
		v, err := wire.DecodeBatchView(f.Body)
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", sub.id, err)
		}
		if err := a.delivered(sub, v); err != nil {
			return fmt.Errorf("subscriber %d: %w", sub.id, err)
		}
	}
	if slow {
		// Cut as a slow consumer: its connection closes, and a new one
		// starts with no subscription.
		w.Tracef("shard s%d cut: %s", sub.id, sub.out.SlowReason())
		for _, p := range a.parts {
			p.p.Forget(sub.out)
		}
		sub.out.Close()
		sub.reset()
	}
	return nil
}

func (a *shardActor) delivered(sub *shardSub, v wire.BatchView) error {
	id := int(v.Partition)
	if id < 0 || id >= len(a.parts) {
		return fmt.Errorf("a delivery from partition %d", id)
	}
	p := a.parts[id]
	if string(v.Topic) != p.topic {
		return nil // queued before its topic was deleted
	}
	base, n, corr := v.Batch.BaseOffset(), v.Batch.Count(), uint32(v.Batch.ProducerID())
	if sub.next[id] >= 0 && base != sub.next[id] {
		return fmt.Errorf("a delivery at %d of partition %d where %d was due: a gap or a duplicate", base, id, sub.next[id])
	}
	sub.next[id] = base + int64(n)
	if sb, ok := p.stored[base]; ok {
		if sb.corr != corr || sb.count != n {
			return fmt.Errorf("a delivery of publish %d at %d of partition %d, where publish %d is stored", corr, base, id, sb.corr)
		}
		return nil
	}
	// Delivered before its ack (held for a subscriber's pressure): it
	// must be an unanswered publish of this partition, and durable.
	pub, ok := a.sent[corr]
	switch {
	case !ok || pub.part != p || pub.count != n:
		return fmt.Errorf("a delivery of publish %d at %d of partition %d, which is not waiting there", corr, base, id)
	case base+int64(n) > p.durable:
		return fmt.Errorf("a delivery of publish %d up to %d of partition %d, but only %d is durable (fsync=always)", corr, base+int64(n), id, p.durable)
	}
	p.stored[base] = shardBatch{corr: corr, count: n} // a crash must keep it
	return nil
}

// Check bounds what the shard and its connections hold.
func (a *shardActor) Check(*World) error {
	if len(a.d.queue) > shardMaxQueued+1 {
		return fmt.Errorf("%d operations queued", len(a.d.queue))
	}
	if len(a.syncs) > len(a.parts) {
		return fmt.Errorf("%d sync requests outstanding for %d partitions", len(a.syncs), len(a.parts))
	}
	for _, sub := range a.subs {
		if q := sub.out.Queued(); q > shardSubLimit {
			return fmt.Errorf("subscriber %d holds %d bytes, past its limit %d", sub.id, q, shardSubLimit)
		}
	}
	return nil
}

// Crash drops the shard and everything it held, and starts a new one on
// the crashed disk.
func (a *shardActor) Crash(w *World) error {
	return a.start(w, "recover")
}

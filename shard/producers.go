package shard

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strconv"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Idempotent producers. A batch whose header carries a producer id (not
// wire.NoProducer) is numbered by its producer: the sequence of its first
// record, counted per partition. Each partition remembers, for each of its
// recent producers, the last ProducerWindow batches it stored (sequence,
// record count, base offset), which is what a retry needs:
//
//   - the next sequence (the last batch's plus its count): stored;
//   - the sequence of a remembered batch, with its count: a retry of it,
//     answered with the original offsets and not stored again;
//   - past the next sequence: a gap, OUT_OF_ORDER_SEQUENCE, not stored;
//   - before the oldest remembered batch: DUPLICATE_SEQUENCE (stored
//     before, offsets forgotten), not stored again;
//   - anything else (inside a remembered batch, or a count that differs):
//     OUT_OF_ORDER_SEQUENCE.
//
// A producer the partition does not know (its first batch here, or one
// evicted) starts at whatever sequence its batch has: the partition cannot
// tell a retry from a first batch, and refusing would strand a producer
// whose state was evicted. Clients bound their batches in flight per
// partition to ProducerWindow, so every batch they may resend is
// remembered while they are.
//
// The table holds at most Config.MaxProducers producers per partition; a
// new one evicts the least recently used. The cost per batch is one map
// lookup and a look at a few remembered batches, nothing per message; a
// partition no idempotent producer writes holds no table at all.

// ProducerWindow is how many recent batches of each producer a partition
// remembers, and so how many batches per partition an idempotent client
// may have in flight (Kafka's max.in.flight.requests.per.connection for
// idempotence is the same 5).
const ProducerWindow = 5

// DefaultMaxProducers is Config.MaxProducers when not set.
const DefaultMaxProducers = 1024

// producerBatch is a stored batch as its producer numbered it.
type producerBatch struct {
	seq   int32
	count int32
	base  int64
}

func (b producerBatch) end() int64 { return b.base + int64(b.count) }

// producer is what a partition remembers of one producer: its last
// batches, oldest first in a ring, and its place in the recency list.
type producer struct {
	id         int64
	ring       [ProducerWindow]producerBatch
	first, n   int // ring[first] is the oldest of n batches
	prev, next *producer
}

func (pr *producer) at(i int) *producerBatch { return &pr.ring[(pr.first+i)%ProducerWindow] }
func (pr *producer) last() *producerBatch    { return pr.at(pr.n - 1) }

func (pr *producer) add(b producerBatch) {
	if pr.n == ProducerWindow {
		pr.first = (pr.first + 1) % ProducerWindow
		pr.n--
	}
	pr.n++
	*pr.last() = b
}

// producers is a partition's table of recent producers, with a recency
// list (most recent at head) for eviction. Shard-owned.
type producers struct {
	m          map[int64]*producer
	head, tail *producer
	max        int
}

func newProducers(max int) *producers {
	if max <= 0 {
		max = DefaultMaxProducers
	}
	return &producers{m: make(map[int64]*producer), max: max}
}

// verdict is what check decided for a batch.
type verdict uint8

const (
	seqNew       verdict = iota // store it
	seqDuplicate                // a retry of a remembered batch
	seqRefused                  // refused with the error check returned
)

// check decides what to do with a batch of count records numbered seq by
// producer id. It returns the producer (nil when unknown), and for a
// duplicate the original batch, for a refusal the error.
func (t *producers) check(id int64, seq int32, count int) (verdict, *producer, producerBatch, *wire.Error) {
	if seq < 0 {
		return seqRefused, nil, producerBatch{}, wire.Errorf(wire.CodeOutOfOrderSequence,
			"producer "+strconv.FormatInt(id, 10)+": sequence "+strconv.Itoa(int(seq))+" is negative")
	}
	pr := t.m[id]
	if pr == nil {
		return seqNew, nil, producerBatch{}, nil
	}
	last := pr.last()
	next := wire.NextSeq(last.seq, int(last.count))
	if seq == next {
		return seqNew, pr, producerBatch{}, nil
	}
	if wire.SeqDistance(next, seq) > 0 {
		return seqRefused, pr, producerBatch{}, seqError(wire.CodeOutOfOrderSequence, id, seq,
			"expected "+strconv.Itoa(int(next))+": the batches in between were not stored")
	}
	for i := pr.n - 1; i >= 0; i-- {
		b := pr.at(i)
		if b.seq != seq {
			continue
		}
		if int(b.count) != count {
			return seqRefused, pr, producerBatch{}, seqError(wire.CodeOutOfOrderSequence, id, seq,
				"it was a batch of "+strconv.Itoa(int(b.count))+" records, this one has "+strconv.Itoa(count))
		}
		return seqDuplicate, pr, *b, nil
	}
	if wire.SeqDistance(pr.at(0).seq, seq) < 0 {
		return seqRefused, pr, producerBatch{}, seqError(wire.CodeDuplicateSequence, id, seq,
			"older than the last "+strconv.Itoa(pr.n)+" batches the partition remembers (from sequence "+
				strconv.Itoa(int(pr.at(0).seq))+"): stored before, not stored again")
	}
	return seqRefused, pr, producerBatch{}, seqError(wire.CodeOutOfOrderSequence, id, seq,
		"it falls inside a stored batch; expected "+strconv.Itoa(int(next)))
}

func seqError(code wire.Code, id int64, seq int32, why string) *wire.Error {
	return wire.Errorf(code, "producer "+strconv.FormatInt(id, 10)+" sequence "+strconv.Itoa(int(seq))+": "+why)
}

// record remembers a stored batch of producer id (pr, or nil when check
// found it unknown) and makes it the most recent producer.
func (t *producers) record(pr *producer, id int64, b producerBatch) {
	if pr == nil {
		pr = t.m[id]
	}
	if pr == nil {
		if len(t.m) >= t.max {
			t.evict(t.tail)
		}
		pr = &producer{id: id}
		t.m[id] = pr
	} else {
		t.unlink(pr)
	}
	pr.add(b)
	t.pushFront(pr)
}

func (t *producers) evict(pr *producer) {
	t.unlink(pr)
	delete(t.m, pr.id)
}

func (t *producers) unlink(pr *producer) {
	if pr.prev != nil {
		pr.prev.next = pr.next
	} else {
		t.head = pr.next
	}
	if pr.next != nil {
		pr.next.prev = pr.prev
	} else {
		t.tail = pr.prev
	}
	pr.prev, pr.next = nil, nil
}

func (t *producers) pushFront(pr *producer) {
	pr.next = t.head
	if t.head != nil {
		t.head.prev = pr
	}
	t.head = pr
	if t.tail == nil {
		t.tail = pr
	}
}

// truncate forgets every batch at or past end: a failed write dropped
// them and their offsets are given out again, so a retry of one must be
// stored, not answered with offsets that now belong to other batches. A
// producer left with no batch is forgotten (unknown again). Error path.
func (t *producers) truncate(end int64) {
	for pr := t.head; pr != nil; {
		next := pr.next
		for pr.n > 0 && pr.last().end() > end {
			pr.n--
		}
		if pr.n == 0 {
			t.evict(pr)
		}
		pr = next
	}
}

// dedup handles an idempotent batch: it reports whether the publish was
// answered (a retry, or refused) and, if not, the producer to record the
// batch under once it is stored.
func (s *Shard) dedup(o *Op, p *Partition, batch wire.Batch) (answered bool, pr *producer) {
	if p.producers == nil {
		p.producers = newProducers(s.cfg.MaxProducers)
	}
	v, pr, orig, err := p.producers.check(batch.ProducerID(), batch.ProducerSeq(), batch.Count())
	switch v {
	case seqRefused:
		s.fail(o, err)
		return true, nil
	case seqDuplicate:
		p.producers.unlink(pr) // a producer that retries is alive
		p.producers.pushFront(pr)
		s.duplicates.Add(1)
		if orig.base == unknownBase {
			s.awaitOriginal(p, o, batch) // replicated, still in flight
			return true, nil
		}
		s.answerDuplicate(p, o, len(batch), orig)
		return true, nil
	}
	return false, pr
}

// answerDuplicate acks a retried batch with its original's offsets,
// without storing it. The answer waits behind the partition's held acks
// (its original among them while it waits for its fsync), so it never
// acks a batch before the original is durable and delivered, and fails
// with the original if that fails (see the dup cases in flow.go).
func (s *Shard) answerDuplicate(p *Partition, o *Op, bytes int, orig producerBatch) {
	a := heldAck{out: o.out, corr: o.corr, base: orig.base, count: uint32(orig.count), bytes: uint32(bytes),
		end: orig.end(), at: s.now, recv: o.at, dup: true}
	o.buf.Release()
	if len(p.held) > 0 || a.end > p.visible {
		s.hold(p, a)
		return
	}
	s.sendAck(p, a)
}

// RestoreProducer remembers a batch of producer id that the partition's
// log holds: sequence seq, count records from base. The driver calls it
// while rebuilding the table from the log (driver.RestoreProducers), in
// offset order, before the partition is adopted: no pass may run on the
// partition meanwhile.
func (p *Partition) RestoreProducer(id int64, seq int32, base int64, count int) {
	if id < 0 || seq < 0 || count <= 0 {
		return
	}
	if p.producers == nil {
		max := 0
		if p.Shard != nil {
			max = p.Shard.cfg.MaxProducers
		}
		p.producers = newProducers(max)
	}
	p.producers.record(nil, id, producerBatch{seq: seq, count: int32(count), base: base})
}

// Producers reports how many producers the partition remembers. Only for
// tests and the driver, while no pass runs.
func (p *Partition) Producers() int {
	if p.producers == nil {
		return 0
	}
	return len(p.producers.m)
}

// The snapshot of a partition's producer table, written at a clean
// shutdown so the next start need not scan the log (driver.SaveProducers):
//
//	magic "RPS1" | end i64 | n u32 | n × producer | CRC32C u32 (of all before it)
//	producer: id i64 | k u8 | k × ( seq i32 | count i32 | base i64 )
//
// end is the log's end offset the table describes; producers are listed
// least recently used first, so restoring them in order rebuilds the
// recency list too.
const snapshotMagic = "RPS1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// AppendProducerSnapshot appends the snapshot of p's producer table as of
// end, the log's end offset. Only while no pass runs (the shard stopped).
func (p *Partition) AppendProducerSnapshot(dst []byte, end int64) []byte {
	start := len(dst)
	dst = append(dst, snapshotMagic...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(end))
	var n uint32
	nAt := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	if p.producers != nil {
		for pr := p.producers.tail; pr != nil; pr = pr.prev {
			n++
			dst = binary.BigEndian.AppendUint64(dst, uint64(pr.id))
			dst = append(dst, byte(pr.n))
			for i := range pr.n {
				b := pr.at(i)
				dst = binary.BigEndian.AppendUint32(dst, uint32(b.seq))
				dst = binary.BigEndian.AppendUint32(dst, uint32(b.count))
				dst = binary.BigEndian.AppendUint64(dst, uint64(b.base))
			}
		}
	}
	binary.BigEndian.PutUint32(dst[nAt:], n)
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// errSnapshot is a producer snapshot that does not decode.
var errSnapshot = errors.New("shard: bad producer snapshot")

// RestoreProducerSnapshot restores p's producer table from a snapshot if
// it describes the log up to end, and reports whether it did; a snapshot
// of another end (the log changed after it was written) is not used.
// Before the partition is adopted, like RestoreProducer.
func (p *Partition) RestoreProducerSnapshot(data []byte, end int64) (ok bool, err error) {
	defer func() {
		if err != nil {
			p.producers = nil // a partial table would be wrong: the caller scans instead
		}
	}()
	if len(data) < 20 || string(data[:4]) != snapshotMagic ||
		crc32.Checksum(data[:len(data)-4], castagnoli) != binary.BigEndian.Uint32(data[len(data)-4:]) {
		return false, errSnapshot
	}
	if int64(binary.BigEndian.Uint64(data[4:])) != end {
		return false, nil
	}
	n := binary.BigEndian.Uint32(data[12:])
	rest := data[16 : len(data)-4]
	for range n {
		if len(rest) < 9 {
			return false, errSnapshot
		}
		id, k := int64(binary.BigEndian.Uint64(rest)), int(rest[8])
		rest = rest[9:]
		if k > ProducerWindow || len(rest) < 16*k {
			return false, errSnapshot
		}
		for range k {
			p.RestoreProducer(id, int32(binary.BigEndian.Uint32(rest)), int64(binary.BigEndian.Uint64(rest[8:])),
				int(int32(binary.BigEndian.Uint32(rest[4:]))))
			rest = rest[16:]
		}
	}
	if len(rest) != 0 {
		return false, errSnapshot
	}
	return true, nil
}

// Replicated partitions (replica.go) record an idempotent batch when they
// propose it, before its offset is known: base is unknownBase until its
// group commits it (setBase). A retry that arrives meanwhile waits for the
// original's outcome instead of being proposed again.
const unknownBase = -1

// find returns producer id's remembered batch of sequence seq, or nil.
func (t *producers) find(id int64, seq int32) *producerBatch {
	pr := t.m[id]
	if pr == nil {
		return nil
	}
	for i := pr.n - 1; i >= 0; i-- {
		if b := pr.at(i); b.seq == seq {
			return b
		}
	}
	return nil
}

// forget drops producer id's batch of sequence seq and every later one:
// a replicated proposal failed, and the producer's retry must be proposed
// again. A producer left with no batch is forgotten.
func (t *producers) forget(id int64, seq int32) {
	pr := t.m[id]
	if pr == nil {
		return
	}
	for i := 0; i < pr.n; i++ {
		if pr.at(i).seq == seq {
			pr.n = i
			break
		}
	}
	if pr.n == 0 {
		t.evict(pr)
	}
}

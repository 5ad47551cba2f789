package sim

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// simBatch is a published batch as the model keeps it: a few numbers
// from which its records are rebuilt, so the model costs little per batch.
type simBatch struct {
	base  int64
	count int
	nonce uint64
	pad   int
	ts    int64
}

func (b simBatch) end() int64 { return b.base + int64(b.count) }

// value is the value of the batch's record at offset o of partition part.
func (b simBatch) value(dst []byte, part int, o int64) []byte {
	dst = fmt.Appendf(dst[:0], "%d/%d/%x/", part, o, b.nonce)
	for range b.pad {
		dst = append(dst, byte('a'+o%26))
	}
	return dst
}

// encode builds the batch, stamped with its base offset, as a producer
// and the shard would.
func (b simBatch) encode(part int) wire.Batch {
	var bb wire.BatchBuilder
	bb.Start(nil, -1, -1)
	var v []byte
	for i := range b.count {
		o := b.base + int64(i)
		v = b.value(v, part, o)
		bb.Append(b.ts+int64(i), nil, v, nil)
	}
	batch := wire.Batch(bb.Finish())
	batch.SetBaseOffset(b.base)
	return batch
}

// logModel is what one partition's log must hold. Offsets move through
// it in order: staged (from written to next), written (from acked to
// written), acked (Sync covered them: they must survive any crash).
type logModel struct {
	part int
	// batches are every batch the log may hold, dense and in offset
	// order, from durableStart: below it retention removed them and a
	// sync made the removal durable; above it a crash may bring them back.
	batches []simBatch
	// holes are ranges a recovery found missing after a crash (dropHole).
	holes        []storage.Range
	next         int64 // the offset the next batch gets
	nstaged      int   // batches staged and not yet written
	written      int64 // the end WritePending reported
	acked        int64 // the end the last successful Sync reported
	visible      int64 // what readers may see
	start        int64 // the log's first offset
	durableStart int64
	// failed: a Sync failed or a failed write could not be cut off. The
	// log must refuse every write and never report anything durable again
	// until it is reopened.
	failed bool
	value  []byte // scratch
}

func (m *logModel) stagedEnd() int64 { return m.next }

func (m *logModel) newBatch(w *World) simBatch {
	return simBatch{base: m.next, count: 1 + w.Rand.IntN(8), nonce: w.Rand.Uint64(), pad: randomPadding(w.Rand), ts: w.Now}
}

func (m *logModel) stage(b simBatch) {
	m.batches = append(m.batches, b)
	m.next = b.end()
	m.nstaged++
}

// writeEnd is where a successful write ends: after what is staged, or
// where the last write ended when nothing is (after a write that could not
// be cut off, the batches that may be in the file lie beyond it).
func (m *logModel) writeEnd() int64 {
	if m.nstaged == 0 {
		return m.written
	}
	return m.next
}

func (m *logModel) wrote(end int64) {
	m.written = end
	m.nstaged = 0
}

// dropFrom forgets the batches at and after offset o: they were not
// stored, and their offsets are given out again.
func (m *logModel) dropFrom(o int64) {
	i := sort.Search(len(m.batches), func(i int) bool { return m.batches[i].base >= o })
	clear(m.batches[i:])
	m.batches = m.batches[:i]
	m.next = o
	m.nstaged = 0
}

// dropHole forgets the batches in [from, to): recovery found a hole
// there (see partSim.recover).
func (m *logModel) dropHole(from, to int64) {
	m.batches = slices.DeleteFunc(m.batches, func(b simBatch) bool { return b.base >= from && b.end() <= to })
	m.holes = append(m.holes, storage.Range{From: from, To: to})
}

// holeAt is the end of the hole holding o, or o when it is in none.
func (m *logModel) holeAt(o int64) int64 {
	for _, h := range m.holes {
		if o >= h.From && o < h.To {
			return h.To
		}
	}
	return o
}

// inHole is the index of the first batch after the hole holding o, or -1
// when o is in no hole.
func (m *logModel) inHole(o int64) int {
	for _, h := range m.holes {
		if o >= h.From && o < h.To {
			return sort.Search(len(m.batches), func(i int) bool { return m.batches[i].base >= h.To })
		}
	}
	return -1
}

// writeFailed: the write was cut back off the file; what it wrote before
// the failed group stays.
func (m *logModel) writeFailed(end int64, _ bool) {
	m.written = end
	m.dropFrom(end)
}

// uncut: a failed write could not be cut off, so its batches, up to
// uncutEnd, may be in the file; anything staged after them never will.
func (m *logModel) uncut(end, uncutEnd int64) {
	m.written = end
	m.dropFrom(uncutEnd)
	m.failed = true
}

// synced acks everything up to end, and makes retention up to start
// durable.
func (m *logModel) synced(end, start int64) {
	m.acked, m.visible = end, end
	m.dirSynced(start)
}

// dirSynced makes retention up to start durable: the batches below are
// gone for good.
func (m *logModel) dirSynced(start int64) {
	m.durableStart = start
	i := sort.Search(len(m.batches), func(i int) bool { return m.batches[i].base >= start })
	m.batches = append(m.batches[:0], m.batches[i:]...)
}

// retained checks a start that retention moved: forward only, onto a
// batch boundary, and never past what was written.
func (m *logModel) retained(start int64) error {
	switch {
	case start < m.start:
		return fmt.Errorf("retention moved the start back, from %d to %d", m.start, start)
	case start > m.written:
		return fmt.Errorf("retention moved the start to %d, past the written end %d", start, m.written)
	case start < m.written && m.find(start) < 0:
		return fmt.Errorf("retention moved the start to %d, inside a batch", start)
	}
	m.start = start
	return nil
}

// reopened takes the bounds of a reopened log: the batches past its end
// were never durable and are forgotten; the log is writable again.
func (m *logModel) reopened(start, end int64) error {
	if end > m.next {
		return fmt.Errorf("the log ends at %d, past everything published (%d)", end, m.next)
	}
	m.dropFrom(end)
	m.written, m.visible, m.start = end, end, start
	m.failed = false
	return nil
}

// find is the index of the batch holding offset o, or -1.
func (m *logModel) find(o int64) int {
	i := sort.Search(len(m.batches), func(i int) bool { return m.batches[i].end() > o })
	if i == len(m.batches) || m.batches[i].base > o {
		return -1
	}
	return i
}

// verify reads from offset from and checks each batch the log returns
// against the model; it returns how many records it checked.
func (m *logModel) verify(l storage.Log, from int64, maxBytes int) (int, error) {
	_, end := l.Bounds()
	i := m.find(from)
	if i < 0 {
		i = m.inHole(from) // a read from inside a hole gets the batch after it
	}
	if i < 0 || i >= len(m.batches) {
		return 0, fmt.Errorf("the model holds no batch at %d (batches from %d to %d)", from, m.firstBase(), m.next)
	}
	n := 0
	var bad error
	err := l.Read(from, maxBytes, func(b wire.Batch) bool {
		if i >= len(m.batches) {
			bad = fmt.Errorf("a batch at %d past the end of the model %d", b.BaseOffset(), m.next)
			return false
		}
		if b.BaseOffset()+int64(b.Count()) > end {
			bad = fmt.Errorf("a batch [%d,%d) past the visible end %d", b.BaseOffset(), b.BaseOffset()+int64(b.Count()), end)
			return false
		}
		var k int
		k, bad = m.check(b, m.batches[i])
		n += k
		i++
		return bad == nil
	})
	return n, errors.Join(err, bad)
}

func (m *logModel) firstBase() int64 {
	if len(m.batches) == 0 {
		return m.next
	}
	return m.batches[0].base
}

// verifyAll reads the whole visible log and checks it.
func (m *logModel) verifyAll(l storage.Log) (int, error) {
	start, end := l.Bounds()
	total := 0
	for from := start; from < end; {
		if h := m.holeAt(from); h > from {
			from = h // the broker's readers skip a reported hole (SkipCorrupt)
			continue
		}
		n, err := m.verify(l, from, 64<<10)
		total += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, fmt.Errorf("a read at %d, below the end %d, returned nothing", from, end)
		}
		from += int64(n) // from is a batch's base, and the read checked whole batches
	}
	return total, nil
}

// check compares a batch read from the log with the one published.
func (m *logModel) check(b wire.Batch, want simBatch) (int, error) {
	if b.BaseOffset() != want.base || b.Count() != want.count {
		return 0, fmt.Errorf("read a batch [%d,%d), published [%d,%d): offsets not dense or out of order",
			b.BaseOffset(), b.BaseOffset()+int64(b.Count()), want.base, want.end())
	}
	it := b.Records()
	var r wire.Record
	n := 0
	for ; it.Next(&r); n++ {
		o := want.base + int64(n)
		m.value = want.value(m.value, m.part, o)
		if r.Offset != o || r.Timestamp != want.ts+int64(n) || !bytes.Equal(r.Value, m.value) {
			return n, fmt.Errorf("record %d reads (offset %d, ts %d, %q), published (ts %d, %q)",
				o, r.Offset, r.Timestamp, r.Value, want.ts+int64(n), m.value)
		}
	}
	if err := it.Err(); err != nil || n != want.count {
		return n, fmt.Errorf("batch at %d: %d of %d records decoded: %w", want.base, n, want.count, err)
	}
	return n, nil
}

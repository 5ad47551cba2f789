package logtest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// t0 is the suite's epoch: every timestamp it writes is after it, and
// every clock it retains by is set from it, never from the machine's.
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// rec describes one record: its timestamp and the size of its value.
type rec struct {
	ts   int64
	size int
}

// build returns the batch of recs stamped at base. Every record's value
// starts with its offset, so that no two batches are alike and a batch
// served at the wrong offset shows.
func build(base int64, recs []rec) wire.Batch {
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	var v []byte
	for i, r := range recs {
		o := base + int64(i)
		v = fmt.Appendf(v[:0], "%d:", o)
		for len(v) < r.size {
			v = append(v, byte('a'+o%26))
		}
		var key []byte
		if o%3 == 0 {
			key = fmt.Appendf(nil, "k%d", o%7)
		}
		bb.Append(r.ts, key, v, nil)
	}
	b := wire.Batch(bb.Finish())
	b.SetBaseOffset(base)
	return b
}

// held is a batch of the model: the bytes the suite appended, and the
// suite's own reference to the Buf the log was given (nil once the suite
// checked that the log let go of it).
type held struct {
	b    wire.Batch
	buf  *storage.Buf
	size int64 // what Stats().Bytes counts for it
}

func (h held) base() int64 { return h.b.BaseOffset() }
func (h held) end() int64  { return h.b.BaseOffset() + int64(h.b.Count()) }

// model is what the log must hold: its batches in offset order, dense from
// start to end, of which those below visible are readable.
type model struct {
	batches []held
	start   int64 // the first offset held; end when empty
	end     int64 // the offset the next batch gets
	visible int64 // the end readers see
	synced  int64 // the end the last Sync (or recovery) made durable
	// gone are the batches retention removed since the last Sync: a crash
	// may bring them back, since their removal need not be durable yet.
	gone []held
}

// index returns the index of the batch holding offset, or len(batches).
func (m *model) index(offset int64) int {
	for i, h := range m.batches {
		if offset < h.end() {
			return i
		}
	}
	return len(m.batches)
}

// bytes is what Stats().Bytes must report.
func (m *model) bytes() int64 {
	var n int64
	for _, h := range m.batches {
		n += h.size
	}
	return n
}

// expectRead is what Read(offset, maxBytes) must pass to an fn that
// returns false after stopAfter batches (0: never), and the error it must
// return.
func (m *model) expectRead(offset int64, maxBytes, stopAfter int) ([]held, error) {
	if offset >= m.visible {
		return nil, nil
	}
	if offset < m.start {
		return nil, storage.ErrOffsetOutOfRange
	}
	var out []held
	sent := 0
	for i := m.index(offset); i < len(m.batches) && m.batches[i].base() < m.visible; i++ {
		out = append(out, m.batches[i])
		sent += len(m.batches[i].b)
		if len(out) == stopAfter || sent >= maxBytes {
			break
		}
	}
	return out, nil
}

// expectTime is what OffsetForTime(ts) must return.
func (m *model) expectTime(ts int64) int64 {
	for _, h := range m.batches {
		if h.b.MaxTimestamp() >= ts {
			return min(h.base(), m.visible)
		}
	}
	return m.visible
}

// env is one case or one property check: a Subject, the log it has open,
// and the model of that log.
type env struct {
	t      testing.TB
	impl   Impl
	sub    Subject
	log    storage.Log
	m      model
	clock  int64 // the timestamp of the next batch's first record
	closed bool
}

func newEnv(t testing.TB, impl Impl) *env {
	t.Helper()
	sub := impl.New(t)
	e := &env{t: t, impl: impl, sub: sub, log: sub.Log(), clock: t0}
	e.checkAll()
	return e
}

// close closes the Subject and checks that the log let go of every Buf.
func (e *env) close() {
	if e.closed {
		return
	}
	e.closed = true
	e.sub.Close(e.t)
	e.released(e.m.batches)
}

// fatalf fails the test, naming the implementation.
func (e *env) fatalf(format string, args ...any) {
	e.t.Helper()
	e.t.Fatalf("%s: %s", e.impl.Name, fmt.Sprintf(format, args...))
}

// no fails the test on an unexpected error.
func (e *env) no(err error, what string) {
	e.t.Helper()
	if err != nil {
		e.fatalf("%s: %v", what, err)
	}
}

// released checks that the log holds no reference to the Bufs of hs (it
// removed them, or was closed), and drops the suite's own.
func (e *env) released(hs []held) {
	e.t.Helper()
	for i := range hs {
		h := &hs[i]
		if h.buf == nil {
			continue
		}
		if n := h.buf.Refs(); n != 1 {
			e.fatalf("the batch at %d was removed or its log closed, yet its Buf has %d references, not only the suite's",
				h.base(), n)
		}
		h.buf.Release()
		h.buf = nil
	}
}

// forget drops the suite's references to the Bufs of hs without checking
// (a log abandoned by a crash may still hold them).
func forget(hs []held) {
	for i := range hs {
		if hs[i].buf != nil {
			hs[i].buf.Release()
			hs[i].buf = nil
		}
	}
}

// recs returns n records at the clock, one millisecond apart, of value
// sizes that vary with the offset, and moves the clock on by a second.
func (e *env) recs(n int) []rec {
	out := make([]rec, n)
	for i := range out {
		out[i] = rec{ts: e.clock + int64(i)*int64(time.Millisecond), size: 8 + int((e.m.end+int64(i))*37%64)}
	}
	e.clock += int64(time.Second)
	return out
}

// put appends (or, staged, stages) the batch of recs at the model's end,
// without syncing or publishing it, and returns it.
func (e *env) put(recs []rec, staged bool) wire.Batch {
	e.t.Helper()
	b := build(e.m.end, recs)
	if len(b) > MaxBatchBytes {
		e.fatalf("logtest: a batch of %d bytes, above MaxBatchBytes", len(b))
	}
	buf := storage.NewBuf(len(b))
	copy(buf.B, b)
	if staged {
		e.no(e.staged().Stage(buf, wire.Batch(buf.B)), fmt.Sprintf("Stage at %d", e.m.end))
	} else {
		e.no(e.log.Append(buf, wire.Batch(buf.B)), fmt.Sprintf("Append at %d", e.m.end))
	}
	size := int64(len(b))
	if e.impl.StoredBytes != nil {
		size = e.impl.StoredBytes(b)
	}
	e.m.batches = append(e.m.batches, held{b: b, buf: buf, size: size})
	e.m.end += int64(len(recs))
	return b
}

func (e *env) staged() storage.Staged {
	e.t.Helper()
	st, ok := e.log.(storage.Staged)
	if !ok {
		e.fatalf("logtest: %T is not a storage.Staged", e.log)
	}
	return st
}

// writePending writes what was staged and checks the end it reports.
func (e *env) writePending() {
	e.t.Helper()
	end, err := e.staged().WritePending()
	e.no(err, "WritePending")
	if end != e.m.end {
		e.fatalf("WritePending returned end %d, want %d", end, e.m.end)
	}
}

// sync syncs the log and checks the end it reports.
func (e *env) sync() {
	e.t.Helper()
	end, err := e.log.Sync()
	e.no(err, "Sync")
	if end != e.m.end {
		e.fatalf("Sync returned end %d, want %d (everything appended)", end, e.m.end)
	}
	e.m.synced = end
	e.m.gone = nil
}

// publish makes everything appended visible, as the shard does after a
// Sync.
func (e *env) publish() {
	e.log.SetVisible(e.m.end)
	e.m.visible = e.m.end
}

// write appends a batch of each of batches (staged, when asked, and
// written in one WritePending), syncs and publishes them, as the shard
// does for a partition that is not replicated.
func (e *env) write(staged bool, batches ...[]rec) {
	e.t.Helper()
	for _, r := range batches {
		e.put(r, staged)
	}
	if staged {
		e.writePending()
	}
	e.sync()
	e.publish()
}

// writeN writes batches of 1, 2, ..., up to 8 records, round and round,
// until the log has n more batches.
func (e *env) writeN(n int, staged bool) {
	e.t.Helper()
	for i := range n {
		e.write(staged, e.recs(1+i%8))
	}
}

// copies reads Read(offset, maxBytes) into copies of the batches passed,
// stopping after stopAfter (0: never).
func (e *env) copies(offset int64, maxBytes, stopAfter int) ([]wire.Batch, error) {
	var got []wire.Batch
	err := e.log.Read(offset, maxBytes, func(b wire.Batch) bool {
		got = append(got, bytes.Clone(b))
		return len(got) != stopAfter
	})
	return got, err
}

// checkRead checks one Read against the model.
func (e *env) checkRead(offset int64, maxBytes, stopAfter int) {
	e.t.Helper()
	want, werr := e.m.expectRead(offset, maxBytes, stopAfter)
	got, err := e.copies(offset, maxBytes, stopAfter)
	what := fmt.Sprintf("Read(%d, maxBytes %d, stop after %d) on [%d, %d)", offset, maxBytes, stopAfter,
		e.m.start, e.m.visible)
	if werr != nil {
		if !errors.Is(err, werr) {
			e.fatalf("%s: error %v, want %v", what, err, werr)
		}
		if len(got) > 0 {
			e.fatalf("%s: passed %d batches with error %v", what, len(got), err)
		}
		return
	}
	e.no(err, what)
	e.same(what, got, want)
}

// same checks that got are the model's batches want, byte for byte.
func (e *env) same(what string, got []wire.Batch, want []held) {
	e.t.Helper()
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i], want[i].b) {
			e.fatalf("%s: batch %d is %s, want %s", what, i, describe(got[i]), describe(want[i].b))
		}
	}
	if len(got) != len(want) {
		e.fatalf("%s: passed %d batches %v, want %d %v", what, len(got), bases(got), len(want), heldBases(want))
	}
}

// describe names a batch for a failure message.
func describe(b wire.Batch) string {
	if len(b) < wire.BatchHeaderSize {
		return fmt.Sprintf("%d bytes (short)", len(b))
	}
	return fmt.Sprintf("[%d, %d) of %d bytes, max ts %d", b.BaseOffset(), b.BaseOffset()+int64(b.Count()), len(b),
		b.MaxTimestamp())
}

func bases(bs []wire.Batch) []int64 {
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.BaseOffset()
	}
	return out
}

func heldBases(hs []held) []int64 {
	out := make([]int64, len(hs))
	for i, h := range hs {
		out[i] = h.base()
	}
	return out
}

// readAll reads every visible batch from offset, a Read at a time, and
// returns copies of them.
func (e *env) readAll(offset int64) []wire.Batch {
	e.t.Helper()
	var all []wire.Batch
	for {
		got, err := e.copies(offset, 8<<10, 0)
		e.no(err, fmt.Sprintf("Read(%d)", offset))
		if len(got) == 0 {
			return all
		}
		all = append(all, got...)
		last := got[len(got)-1]
		next := last.BaseOffset() + int64(last.Count())
		if next <= offset {
			e.fatalf("Read(%d) passed batches %v that end at %d: it does not move on", offset, bases(got), next)
		}
		offset = next
	}
}

// checkAll checks the log's bounds, its stats and everything it serves
// against the model.
func (e *env) checkAll() {
	e.t.Helper()
	e.checkBounds()
	var want []held
	for _, h := range e.m.batches {
		if h.base() < e.m.visible {
			want = append(want, h)
		}
	}
	e.same(fmt.Sprintf("reading the whole log from %d", e.m.start), e.readAll(e.m.start), want)
	if e.m.start > 0 {
		e.checkRead(e.m.start-1, 1, 0)
	}
	e.checkRead(e.m.visible, 1<<20, 0)
}

// checkBounds checks Bounds and Stats against the model.
func (e *env) checkBounds() {
	e.t.Helper()
	start, end := e.log.Bounds()
	if start != e.m.start || end != e.m.visible {
		e.fatalf("Bounds = [%d, %d), want [%d, %d)", start, end, e.m.start, e.m.visible)
	}
	st := e.log.Stats()
	if st.Start != start || st.End != end {
		e.fatalf("Stats says [%d, %d), Bounds [%d, %d)", st.Start, st.End, start, end)
	}
	if st.Bytes != e.m.bytes() {
		e.fatalf("Stats().Bytes = %d, want %d for the %d batches held", st.Bytes, e.m.bytes(), len(e.m.batches))
	}
	if len(st.Corrupt) > 0 || st.ReadOnly != "" || st.Offline != "" || st.ReadErrors != 0 {
		e.fatalf("a healthy log reports corrupt %v, read-only %q, offline %q, read errors %d", st.Corrupt,
			st.ReadOnly, st.Offline, st.ReadErrors)
	}
}

// checkTime checks OffsetForTime(ts) against the model.
func (e *env) checkTime(ts int64) {
	e.t.Helper()
	got, err := e.log.OffsetForTime(ts)
	e.no(err, fmt.Sprintf("OffsetForTime(%d)", ts))
	if want := e.m.expectTime(ts); got != want {
		e.fatalf("OffsetForTime(%s) = %d, want %d (batches' max timestamps from t0: %v)", fromT0(ts), got, want,
			e.maxTimestamps())
	}
}

// maxTimestamps lists the held batches' base offsets and max timestamps,
// from t0, for failure messages.
func (e *env) maxTimestamps() []string {
	out := make([]string, len(e.m.batches))
	for i, h := range e.m.batches {
		out[i] = fmt.Sprintf("%d:%s", h.base(), fromT0(h.b.MaxTimestamp()))
	}
	return out
}

// restart restarts the log and updates the model: a durable log keeps
// every batch, all visible; another is empty at offset 0.
func (e *env) restart() {
	e.t.Helper()
	e.log = e.sub.Restart(e.t)
	e.released(e.m.batches)
	e.m.gone = nil
	if !e.impl.Durable {
		e.m = model{}
	}
	e.m.visible, e.m.synced = e.m.end, e.m.end
	e.checkAll()
}

// crash crashes the Subject's log (see Crasher) and checks what recovery
// found: it starts where the model does, or earlier where a retention
// pass not yet made durable is undone; it ends at a batch boundary, no
// lower than the last Sync and no higher than what was appended; and it
// holds exactly the model's batches in between, all visible.
func (e *env) crash() {
	e.t.Helper()
	c, ok := e.sub.(Crasher)
	if !ok {
		e.fatalf("logtest: %T is not a Crasher", e.sub)
	}
	e.log = c.Crash(e.t)
	start, end := e.log.Bounds()
	all := slices.Concat(e.m.gone, e.m.batches)
	k := slices.IndexFunc(all, func(h held) bool { return h.base() == start })
	if start == e.m.start {
		k = len(e.m.gone)
	}
	if k < 0 || k > len(e.m.gone) {
		e.fatalf("after a crash the log starts at %d; the model starts at %d, and retention since the last "+
			"Sync removed %v", start, e.m.start, heldBases(e.m.gone))
	}
	if end < e.m.synced || end > e.m.end {
		e.fatalf("after a crash the log ends at %d; the last Sync covered up to %d, and appends reached %d", end,
			e.m.synced, e.m.end)
	}
	j := k
	for j < len(all) && all[j].end() <= end {
		j++
	}
	if j > k && all[j-1].end() != end || j == k && end != start {
		e.fatalf("after a crash the log ends at %d, inside a batch (%v)", end, heldBases(all))
	}
	forget(all[j:])
	e.m.batches = slices.Clone(all[k:j])
	e.m.start, e.m.end, e.m.visible, e.m.synced = start, end, end, end
	e.m.gone = nil
	e.checkAll()
}

// fromT0 writes a timestamp as the time since t0, for failure messages.
func fromT0(ts int64) string {
	d := time.Duration(ts - t0)
	if d >= 0 {
		return "t0+" + d.String()
	}
	return "t0" + d.String()
}

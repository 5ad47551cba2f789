package logtest

import (
	"slices"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
)

// testCase is one entry of the table: run on a fresh log of every
// implementation it applies to (nil: all).
type testCase struct {
	name    string
	applies func(kind) bool
	run     func(e *env)
}

// kind is what the suite knows of an implementation: its Impl, and the
// optional interfaces its logs and Subjects implement.
type kind struct {
	Impl
	staged   bool // its logs are storage.Staged
	crasher  bool // its Subjects are Crashers
	reopener bool // its Subjects are Reopeners
}

// kindOf looks at a fresh Subject of impl.
func kindOf(t testing.TB, impl Impl) kind {
	s := impl.New(t)
	defer s.Close(t)
	k := kind{Impl: impl}
	_, k.staged = s.Log().(storage.Staged)
	_, k.crasher = s.(Crasher)
	_, k.reopener = s.(Reopener)
	return k
}

var cases = []testCase{
	{"EmptyLog", nil, caseEmptyLog},
	{"AppendAdvancesOffsets", nil, caseAppendAdvancesOffsets},
	{"StagedAppends", func(k kind) bool { return k.staged }, caseStagedAppends},
	{"VisibleEnd", nil, caseVisibleEnd},
	{"ReadFromInsideBatch", nil, caseReadFromInsideBatch},
	{"ReadMaxBytes", nil, caseReadMaxBytes},
	{"ReadStopsWhenFnReturnsFalse", nil, caseReadStops},
	{"ReadBelowStart", nil, caseReadBelowStart},
	{"ReadAtAndBeyondEnd", nil, caseReadAtEnd},
	{"OffsetForTime", nil, caseOffsetForTime},
	{"OffsetForTimeNonMonotonic", nil, caseOffsetForTimeNonMonotonic},
	{"RetainByAge", nil, caseRetainByAge},
	{"RetainByBytes", nil, caseRetainByBytes},
	{"RetainByAgeAndBytes", nil, caseRetainByAgeAndBytes},
	{"RetainNonMonotonicAge", nil, caseRetainNonMonotonicAge},
	{"RetainKeepsLastBatch", nil, caseRetainKeepsLastBatch},
	{"RestartKeepsSynced", func(k kind) bool { return k.Durable }, caseRestartKeepsSynced},
	{"RestartEmptyLog", func(k kind) bool { return k.Durable }, caseRestartEmptyLog},
	{"RestartForgets", func(k kind) bool { return !k.Durable }, caseRestartForgets},
	{"CrashKeepsSynced", func(k kind) bool { return k.crasher }, caseCrash},
	{"Corruption", func(k kind) bool { return k.CanCorrupt && k.Durable }, caseCorruption},
	{"CorruptionAfterCrash", func(k kind) bool { return k.CanCorrupt && k.crasher }, caseCorruptionAfterCrash},
	{"DropDeletes", func(k kind) bool { return k.reopener }, caseDrop},
	{"ConcurrentReads", nil, caseConcurrentReads},
}

// unit is the size the cases fill logs by: a few units of retention make
// a log whose retention has something to remove.
func (e *env) unit() int64 {
	if e.impl.ExactRetention {
		return 2 * MaxBatchBytes
	}
	return e.impl.RetentionUnit
}

// fill writes batches until the log holds at least units units of bytes
// and 20 batches.
func (e *env) fill(units int64) {
	e.t.Helper()
	for i := 0; e.m.bytes() < units*e.unit() || len(e.m.batches) < 20; i++ {
		e.write(false, e.recs(1+i%8))
	}
}

func caseEmptyLog(e *env) {
	e.checkRead(0, 1<<20, 0)
	e.checkTime(t0)
	e.checkTime(0)
	e.sync()
	e.retain(t0+int64(time.Hour), time.Second, 1)
	e.checkAll()
}

func caseAppendAdvancesOffsets(e *env) {
	// Sync reports the new end, Bounds and Stats move to it, and the batch
	// reads back at its offsets.
	for range 2 {
		for n := 1; n <= 8; n++ {
			b := e.put(e.recs(n), false)
			e.sync()
			e.publish()
			e.checkBounds()
			e.checkRead(b.BaseOffset(), 1, 0)
		}
	}
	e.checkAll()
}

func caseStagedAppends(e *env) {
	e.write(false, e.recs(3))
	before := e.m.visible
	for n := 1; n <= 5; n++ {
		e.put(e.recs(n), true)
	}
	// Staged, not written: nothing new for readers.
	if _, end := e.log.Bounds(); end != before {
		e.fatalf("Bounds end %d after Stage, want %d", end, before)
	}
	e.checkRead(before, 1<<20, 0)
	e.writePending()
	e.sync()
	e.publish()
	e.checkAll()
	// Appends and staged writes interleave at the same end.
	e.write(false, e.recs(2))
	e.write(true, e.recs(4), e.recs(1))
	e.checkAll()
}

func caseVisibleEnd(e *env) {
	e.write(false, e.recs(2), e.recs(3), e.recs(4))
	first := e.m.visible
	b1 := e.put(e.recs(2), false)
	e.put(e.recs(5), false)
	e.put(e.recs(1), false)
	e.sync()
	// Appended and synced, not published: readers see the old end, and a
	// time lookup answers no later than it.
	e.checkAll()
	e.checkRead(first, 1<<20, 0)
	for _, h := range e.m.batches {
		e.checkTime(h.b.MaxTimestamp())
	}
	// Published up to a batch boundary in the middle.
	mid := b1.BaseOffset() + int64(b1.Count())
	e.log.SetVisible(mid)
	e.m.visible = mid
	e.checkAll()
	for _, h := range e.m.batches {
		e.checkTime(h.b.MaxTimestamp())
	}
	e.publish()
	e.checkAll()
}

func caseReadFromInsideBatch(e *env) {
	for range 6 {
		e.write(false, e.recs(5))
	}
	e.write(false, e.recs(1))
	for off := e.m.start; off < e.m.visible; off++ {
		e.checkRead(off, 1, 0)
		e.checkRead(off, 1<<20, 0)
	}
}

func caseReadMaxBytes(e *env) {
	e.writeN(10, false)
	sizes := make([]int, 0, 2+3*len(e.m.batches))
	sizes = append(sizes, 0, 1)
	sum := 0
	for _, h := range e.m.batches {
		sizes = append(sizes, sum+len(h.b)-1, sum+len(h.b), sum+len(h.b)+1)
		sum += len(h.b)
	}
	for _, mb := range sizes {
		e.checkRead(0, mb, 0)
		e.checkRead(e.m.batches[3].base()+1, mb, 0)
	}
}

func caseReadStops(e *env) {
	e.writeN(10, false)
	for stop := 1; stop <= len(e.m.batches)+1; stop++ {
		e.checkRead(0, 1<<20, stop)
		e.checkRead(e.m.batches[2].end()-1, 1<<20, stop)
	}
}

func caseReadBelowStart(e *env) {
	e.fill(4)
	e.retain(e.clock, 0, 2*e.unit())
	if e.m.start == 0 {
		e.fatalf("retention to %d bytes of a %d-byte log removed nothing", 2*e.unit(), e.m.bytes())
	}
	for _, off := range []int64{-1, 0, e.m.start / 2, e.m.start - 1} {
		e.checkRead(off, 1<<20, 0)
	}
	e.checkAll()
}

func caseReadAtEnd(e *env) {
	e.writeN(5, false)
	for _, off := range []int64{e.m.visible, e.m.visible + 1, e.m.visible + 1000} {
		if got, err := e.copies(off, 1<<20, 0); err != nil || len(got) > 0 {
			e.fatalf("Read(%d) at or after the end %d: %d batches, %v; want none and no error", off, e.m.visible,
				len(got), err)
		}
	}
}

// timesAround are the timestamps worth looking up: before and after
// everything, and each batch's max timestamp and its neighbours.
func (e *env) timesAround() []int64 {
	ts := make([]int64, 0, 3+4*len(e.m.batches))
	ts = append(ts, 0, t0-int64(time.Hour), e.clock+int64(time.Hour))
	for _, h := range e.m.batches {
		m := h.b.MaxTimestamp()
		ts = append(ts, m-1, m, m+1, h.b.FirstTimestamp())
	}
	return ts
}

func caseOffsetForTime(e *env) {
	e.fill(3)
	for _, ts := range e.timesAround() {
		e.checkTime(ts)
	}
	if e.impl.Durable {
		e.restart()
		for _, ts := range e.timesAround() {
			e.checkTime(ts)
		}
	}
}

// nonMonotonic writes n batches whose max timestamps jump back and forth
// (a permutation of seconds after the clock), with records out of order
// inside each batch, as producers' own timestamps may be.
func (e *env) nonMonotonic(n int) {
	e.t.Helper()
	base := e.clock
	for i := range n {
		p := int64((i*37 + 11) % n)
		recs := e.recs(1 + i%5)
		for j := range recs {
			recs[j].ts = base + p*int64(time.Second) - int64(j%3)*int64(time.Millisecond)
		}
		e.write(false, recs)
	}
	e.clock = base + int64(n)*int64(time.Second)
}

func caseOffsetForTimeNonMonotonic(e *env) {
	e.nonMonotonic(60)
	for _, ts := range e.timesAround() {
		e.checkTime(ts)
	}
	if e.impl.Durable {
		e.restart()
		for _, ts := range e.timesAround() {
			e.checkTime(ts)
		}
	}
}

func caseRetainByAge(e *env) {
	e.fill(6)
	span := e.clock - t0
	now := e.clock + int64(time.Minute)
	// Nothing is old yet.
	e.retain(now, time.Duration(now-t0+1), 0)
	e.checkAll()
	for _, age := range []int64{now - t0 - span/3, now - t0 - span/2, now - t0 - span*3/4} {
		e.retain(now, time.Duration(age), 0)
		e.checkAll()
		e.retain(now, time.Duration(age), 0) // again: stable
		e.checkAll()
	}
	e.writeN(3, false)
	e.checkAll()
}

func caseRetainByBytes(e *env) {
	e.fill(6)
	total := e.m.bytes()
	e.retain(e.clock, 0, total) // within the bound: nothing goes
	e.checkAll()
	for _, mb := range []int64{total * 3 / 4, total / 2, total / 3, 3 * e.unit() / 2} {
		e.retain(e.clock, 0, mb)
		e.checkAll()
	}
	e.writeN(3, false)
	e.checkAll()
}

func caseRetainByAgeAndBytes(e *env) {
	e.fill(6)
	span := e.clock - t0
	now := e.clock
	// Age removes the oldest quarter, bytes would keep more: age decides.
	e.retain(now, time.Duration(now-t0-span/4), e.m.bytes())
	e.checkAll()
	// Bytes remove more than age would.
	e.retain(now, time.Duration(now-t0-span/3), e.m.bytes()/2)
	e.checkAll()
}

func caseRetainNonMonotonicAge(e *env) {
	// Small old batches with a young one every fifth after the first
	// twenty: a unit that holds a young batch must stay, wherever in the
	// unit it is (and whatever the log indexes).
	now := e.clock + int64(3*time.Hour)
	for i := range 80 {
		ts := now - int64(2*time.Hour)
		if i >= 20 && i%5 == 2 {
			ts = now - int64(10*time.Minute)
		}
		e.write(false, []rec{{ts: ts, size: 8}})
	}
	for range 2 {
		e.nonMonotonic(20)
	}
	if e.impl.Durable {
		e.restart() // what the log knows of its batches' ages must survive it
	}
	e.retain(now, time.Hour, 0)
	e.checkAll()
	now = e.clock
	for _, back := range []int64{40, 30, 20, 10} {
		e.retain(now, time.Duration(back)*time.Second, 0)
		e.checkAll()
	}
}

func caseRetainKeepsLastBatch(e *env) {
	e.fill(4)
	e.retain(e.clock+int64(24*time.Hour), time.Nanosecond, 1)
	e.checkAll()
	e.write(false, e.recs(3))
	e.checkAll()
}

func caseRestartKeepsSynced(e *env) {
	staged := false
	if _, ok := e.log.(storage.Staged); ok {
		staged = true
	}
	e.fill(3)
	e.restart()
	e.writeN(5, staged)
	e.checkAll()
	e.restart()
	e.retain(e.clock, 0, 2*e.unit())
	e.restart()
	e.writeN(2, false)
	e.restart()
	e.checkAll()
}

func caseRestartEmptyLog(e *env) {
	e.restart()
	e.restart()
	e.writeN(3, false)
	e.checkAll()
}

func caseRestartForgets(e *env) {
	e.writeN(10, false)
	e.restart() // checks that it is empty at 0
	e.writeN(3, false)
	e.checkAll()
}

func caseCrash(e *env) {
	e.fill(2)
	// Appended and published without a Sync, as under fsync=never: a crash
	// may keep any prefix of them.
	for range 5 {
		e.put(e.recs(3), false)
		e.publish()
	}
	e.crash()
	e.writeN(3, false)
	e.retain(e.clock, 0, e.unit()) // not made durable by a Sync
	e.crash()
	e.writeN(3, false)
	e.checkAll()
}

func caseCorruption(e *env) {
	damage(e, func() {
		e.log = e.sub.Restart(e.t)
		e.released(e.m.batches)
	})
}

// caseCorruptionAfterCrash is caseCorruption with a crash for a restart:
// a log that recovers by scanning what it cannot trust must report the
// damage it finds, not cut it as a torn tail.
func caseCorruptionAfterCrash(e *env) {
	damage(e, func() {
		e.log = e.sub.(Crasher).Crash(e.t)
		forget(e.m.batches)
	})
}

// damage damages two batches in the middle of a full log (in its first
// quarter, and third from last), reopens it with reopen (which settles
// the suite's Bufs), and checks that the damage is reported, skipped by
// reads and kept.
func damage(e *env, reopen func()) {
	e.fill(4)
	n := len(e.m.batches)
	bad := []held{e.m.batches[n/4], e.m.batches[n-3]}
	for _, h := range bad {
		e.sub.Corrupt(e.t, h.base())
	}
	reopen()
	e.m.visible, e.m.synced = e.m.end, e.m.end
	bytes := e.m.bytes()
	if start, end := e.log.Bounds(); start != e.m.start || end != e.m.end {
		e.fatalf("Bounds = [%d, %d) after damage in the middle, want [%d, %d): nothing is cut", start, end,
			e.m.start, e.m.end)
	}
	// The damaged batches are skipped, not served; the model without them
	// is what every read must pass.
	e.m.batches = slices.DeleteFunc(e.m.batches, func(h held) bool {
		return slices.ContainsFunc(bad, func(b held) bool { return b.base() == h.base() })
	})
	e.same("reading past damaged batches", e.readAll(e.m.start), e.m.batches)
	st := e.log.Stats()
	for _, b := range bad {
		if !slices.ContainsFunc(st.Corrupt, func(r storage.Range) bool { return r.From <= b.base() && r.To >= b.end() }) {
			e.fatalf("Stats().Corrupt = %v after a read passed the damaged batch [%d, %d)", st.Corrupt, b.base(), b.end())
		}
	}
	for _, r := range st.Corrupt {
		for _, h := range e.m.batches {
			if r.From < h.end() && h.base() < r.To {
				e.fatalf("corrupt range %v covers the intact batch [%d, %d)", r, h.base(), h.end())
			}
		}
	}
	if st.Bytes != bytes || st.ReadErrors != 0 || st.ReadOnly != "" {
		e.fatalf("Stats() = %+v; want %d bytes (damaged batches still count), no read errors, not read-only", st, bytes)
	}
	for _, b := range bad {
		for off := b.base(); off < b.end(); off++ {
			e.checkRead(off, 1, 0) // starts with the next intact batch
		}
	}
	// The log goes on.
	e.write(false, e.recs(2))
	e.same("reading after an append", e.readAll(e.m.start), e.m.batches)
}

func caseDrop(e *env) {
	e.fill(2)
	e.no(e.log.Drop(), "Drop")
	e.released(e.m.batches)
	e.log = e.sub.(Reopener).Reopen(e.t)
	e.m = model{}
	e.checkAll()
	e.writeN(2, false)
	e.checkAll()
}

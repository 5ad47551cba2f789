package logtest

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// rapidTB is a testing.TB for code that runs inside a rapid check: its
// failures and logs go to the check (so rapid can shrink the case), and
// the rest (Name, TempDir, ...) to the enclosing test.
type rapidTB struct {
	testing.TB
	rt *rapid.T
}

func (r rapidTB) Helper()                         { r.rt.Helper() }
func (r rapidTB) Log(args ...any)                 { r.rt.Log(args...) }
func (r rapidTB) Logf(format string, args ...any) { r.rt.Logf(format, args...) }
func (r rapidTB) Error(args ...any)               { r.rt.Error(args...) }
func (r rapidTB) Errorf(format string, a ...any)  { r.rt.Errorf(format, a...) }
func (r rapidTB) Fatal(args ...any)               { r.rt.Fatal(args...) }
func (r rapidTB) Fatalf(format string, a ...any)  { r.rt.Fatalf(format, a...) }
func (r rapidTB) Fail()                           { r.rt.Fail() }
func (r rapidTB) FailNow()                        { r.rt.FailNow() }
func (r rapidTB) Failed() bool                    { return r.rt.Failed() }
func (r rapidTB) Skip(args ...any)                { r.rt.Skip(args...) }
func (r rapidTB) Skipf(format string, a ...any)   { r.rt.Skipf(format, a...) }
func (r rapidTB) SkipNow()                        { r.rt.SkipNow() }
func (r rapidTB) Cleanup(f func())                { r.rt.Cleanup(f) }

// runProperties runs the properties as subtests of t.
func runProperties(t *testing.T, k kind) {
	t.Run("PropertyModel", rapid.MakeCheck(func(rt *rapid.T) { propModel(t, rt, k) }))
	t.Run("PropertyTimeIndex", rapid.MakeCheck(func(rt *rapid.T) { propTimeIndex(t, rt, k) }))
}

// drawRecs draws a batch's records around the clock: up to 8, of values up
// to 100 bytes, with timestamps up to two seconds either side of it (so
// not in order), and moves the clock by -5 to +10 seconds, so that batches'
// max timestamps mostly grow and sometimes fall back.
func (e *env) drawRecs(t *rapid.T, label string) []rec {
	n := rapid.IntRange(1, 8).Draw(t, label+" records")
	out := make([]rec, n)
	for i := range out {
		out[i] = rec{
			ts:   e.clock + rapid.Int64Range(-2000, 2000).Draw(t, label+" ts")*int64(time.Millisecond),
			size: rapid.IntRange(0, 100).Draw(t, label+" size"),
		}
	}
	e.clock += rapid.Int64Range(-5, 10).Draw(t, label+" step") * int64(time.Second)
	return out
}

// drawTime draws a timestamp worth looking up or retaining by: near a held
// batch's max timestamp, or anywhere around the held batches.
func (e *env) drawTime(t *rapid.T, label string) int64 {
	if len(e.m.batches) > 0 && rapid.Bool().Draw(t, label+" near a batch") {
		h := e.m.batches[rapid.IntRange(0, len(e.m.batches)-1).Draw(t, label+" batch")]
		return h.b.MaxTimestamp() + rapid.Int64Range(-1, 1).Draw(t, label+" off by")
	}
	lo, hi := min(t0, e.clock), max(t0, e.clock)
	for _, h := range e.m.batches {
		lo, hi = min(lo, h.b.MaxTimestamp()), max(hi, h.b.MaxTimestamp())
	}
	return rapid.Int64Range(lo-int64(3*time.Second), hi+int64(3*time.Second)).Draw(t, label)
}

// propModel runs random sequences of appends (direct and, for a Staged
// log, staged; synced, and not), reads from random offsets with random
// limits, time lookups, retention passes, syncs, restarts and, for a
// Crasher, crashes, and after each step compares the whole log with the
// model.
func propModel(t *testing.T, rt *rapid.T, k kind) {
	e := newEnv(rapidTB{TB: t, rt: rt}, k.Impl)
	defer e.close()
	actions := map[string]func(*rapid.T){
		"append": func(t *rapid.T) {
			for i := range rapid.IntRange(1, 3).Draw(t, "batches") {
				e.put(e.drawRecs(t, fmt.Sprint("batch ", i)), false)
			}
			e.sync()
			e.publish()
		},
		"append unsynced": func(t *rapid.T) {
			e.put(e.drawRecs(t, "batch"), false)
			e.publish()
		},
		"read": func(t *rapid.T) {
			off := rapid.Int64Range(max(e.m.start-2, -1), e.m.visible+2).Draw(t, "offset")
			maxBytes := rapid.IntRange(0, 4000).Draw(t, "maxBytes")
			if rapid.Bool().Draw(t, "maxBytes at a batch's end") {
				// Where "at least maxBytes" and "more than" part ways.
				maxBytes = rapid.IntRange(-1, 1).Draw(t, "off by")
				i := e.m.index(off)
				for _, h := range e.m.batches[i:min(i+rapid.IntRange(0, 3).Draw(t, "batches"), len(e.m.batches))] {
					maxBytes += len(h.b)
				}
			}
			e.checkRead(off, maxBytes, rapid.IntRange(0, 4).Draw(t, "stop after"))
		},
		"time": func(t *rapid.T) {
			e.checkTime(e.drawTime(t, "ts"))
		},
		"retain": func(t *rapid.T) {
			var maxAge time.Duration
			var maxBytes int64
			now := e.clock
			if rapid.Bool().Draw(t, "by age") {
				maxAge = time.Duration(rapid.Int64Range(1, int64(time.Hour)).Draw(t, "maxAge"))
				now = e.drawTime(t, "cutoff") + int64(maxAge)
			}
			if rapid.Bool().Draw(t, "by bytes") {
				maxBytes = rapid.Int64Range(1, e.m.bytes()*5/4+1).Draw(t, "maxBytes")
			}
			e.retain(now, maxAge, maxBytes)
		},
		"sync": func(*rapid.T) { e.sync() },
		"restart": func(*rapid.T) {
			e.restart()
		},
		"": func(*rapid.T) { e.checkAll() },
	}
	if k.staged {
		actions["stage"] = func(t *rapid.T) {
			for i := range rapid.IntRange(1, 4).Draw(t, "batches") {
				e.put(e.drawRecs(t, fmt.Sprint("batch ", i)), true)
			}
			e.writePending()
			e.sync()
			e.publish()
		}
	}
	if k.crasher {
		actions["crash"] = func(*rapid.T) { e.crash() }
	}
	rt.Repeat(actions)
}

// propTimeIndex appends a random run of batches whose max timestamps
// wander back and forth, and checks OffsetForTime at random times, and
// that a retention pass by age removes only old batches, before and (for
// a durable log) after a restart, which makes a log rebuild or reload
// whatever index it keeps.
func propTimeIndex(t *testing.T, rt *rapid.T, k kind) {
	e := newEnv(rapidTB{TB: t, rt: rt}, k.Impl)
	defer e.close()
	// One Sync for them all, as a group commit makes.
	n := rapid.IntRange(1, 80).Draw(rt, "batches")
	staged := false
	for i := range n {
		staged = k.staged && i%2 == 1
		e.put(e.drawRecs(rt, fmt.Sprint("batch ", i)), staged)
		if k.staged && !staged {
			e.writePending() // an Append writes after what was staged before it
		}
	}
	if staged {
		e.writePending()
	}
	e.sync()
	e.publish()
	check := func() {
		for range 20 {
			e.checkTime(e.drawTime(rt, "ts"))
		}
	}
	check()
	if k.Durable {
		e.restart()
		check()
	}
	maxAge := time.Hour
	e.retain(e.drawTime(rt, "cutoff")+int64(maxAge), maxAge, 0)
	e.checkAll()
	check()
	if k.Durable {
		e.restart()
		check()
	}
}

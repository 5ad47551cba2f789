// Package logtest is the contract suite of storage.Log: one table of cases
// and one set of properties that every implementation of a partition's log
// runs unchanged, so that the memory log, the disk log and any later
// backend keep the same promises (written down on storage.Log and in the
// storage package's doc).
//
// An implementation's tests describe it with an [Impl] and call [Run]:
//
//	func TestContractDisk(t *testing.T) {
//		logtest.Run(t, logtest.Impl{Name: "disk", New: newDiskSubject, Durable: true, ...})
//	}
//
// The suite writes as the shard does for a partition that is not
// replicated: Append (or, for a [storage.Staged] log, Stage and
// WritePending), then Sync, then SetVisible at the new end. It builds its
// batches with wire.BatchBuilder, stamps their base offsets, and chooses
// their timestamps, so that retention by age and OffsetForTime are checked
// against a clock of its own rather than the machine's.
//
// The properties (pgregory.net/rapid) run random sequences of appends,
// reads, time lookups, retention passes, syncs, restarts and, where the
// Subject can, crashes, and compare the log after every step with a model:
// the list of batches appended, byte for byte, and the offset the log
// starts at. They use rapid's default number of checks (100, or
// -rapid.checks), each of about 30 steps (-rapid.steps).
package logtest

import (
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Subject is one log under test and what the suite may do to its storage.
type Subject interface {
	// Log returns the log as currently open.
	Log() storage.Log
	// Restart closes the log cleanly and opens it again from its storage,
	// returning the new log. A non-durable implementation returns a new,
	// empty log starting at offset 0.
	Restart(t testing.TB) storage.Log
	// Corrupt damages the stored bytes of the batch whose base offset is
	// base, so that a read after Restart finds it invalid. The suite calls
	// Restart right after it, reads nothing in between, and never names
	// the log's last batch (damage at the tail may be cut as a torn
	// write). Called only when Impl.CanCorrupt is set.
	Corrupt(t testing.TB, base int64)
	// Close releases everything: Close (or Drop) of the current log, and
	// whatever the Subject made (temporary directories, connections).
	Close(t testing.TB)
}

// Crasher is a Subject that can stop its log as a crash of the process
// (or of the machine) would: without Close, losing whatever the
// implementation had not made durable. The suite checks that recovery
// keeps every batch a Sync covered, and brings back nothing but a prefix
// of what was appended, at a batch boundary.
type Crasher interface {
	Subject
	// Crash abandons the current log without closing it, makes its storage
	// lose what was not durable, and opens the log again from it.
	Crash(t testing.TB) storage.Log
}

// Reopener is a Subject that can open its log again from the same storage
// after the suite dropped it, so that the suite can check that Drop
// deleted the data.
type Reopener interface {
	Subject
	// Reopen opens the log from the Subject's storage; the suite has
	// dropped the current log (Drop), which must not be closed again.
	Reopen(t testing.TB) storage.Log
}

// Impl describes an implementation of storage.Log to the suite.
type Impl struct {
	// Name names the implementation in failure messages.
	Name string
	// New returns a Subject holding a fresh, empty log starting at offset 0.
	New func(t testing.TB) Subject
	// Durable: Restart keeps every batch appended and synced, with the same
	// offsets. Otherwise Restart returns a new, empty log.
	Durable bool
	// CanCorrupt: Subject.Corrupt is meaningful (the log keeps stored
	// bytes that can be damaged).
	CanCorrupt bool
	// ExactRetention: Retain removes every batch eligible for removal and
	// no other, where, in offset order from the start, a batch is eligible
	// while it is older than maxAge (its max timestamp before now-maxAge)
	// or begins more than maxBytes from the end (the bytes Stats counts
	// for it and every later batch exceed maxBytes), except that the last
	// batch is always kept. A memory log is exact.
	//
	// An implementation that deletes in coarser units (the disk log's
	// segments, never the active one) sets RetentionUnit instead, and
	// the suite checks the same rule to within one unit: nothing is
	// removed that is neither older than maxAge nor begins more than
	// maxBytes-RetentionUnit from the end, and what is kept exceeds what
	// the exact rule keeps by at most RetentionUnit bytes.
	ExactRetention bool
	// RetentionUnit is, for an implementation without ExactRetention, the
	// most bytes one unit of retention holds (for the disk log, its
	// DiskConfig.SegmentBytes). It should be a few times MaxBatchBytes,
	// so that a unit holds several of the suite's batches.
	RetentionUnit int64
	// StoredBytes is how many bytes Stats().Bytes (and retention by bytes)
	// counts for a batch; nil means its length, which is right for a log
	// that stores batches as they are.
	StoredBytes func(b wire.Batch) int64
	// CasesOnly runs the table of cases and not the properties: for a
	// further configuration of an implementation whose properties run on
	// a faster one (the disk log on the real file system, where every
	// step costs an fsync, beside the same log on a memory file system).
	CasesOnly bool
}

// MaxBatchBytes is the size of the largest batch the suite appends.
const MaxBatchBytes = 1 << 10

// Run runs the table of cases and the properties against impl, each as a
// subtest of t.
func Run(t *testing.T, impl Impl) {
	if impl.New == nil {
		t.Fatalf("logtest: Impl %q has no New", impl.Name)
	}
	if !impl.ExactRetention && impl.RetentionUnit < MaxBatchBytes {
		t.Fatalf("logtest: Impl %q: retention is not exact, and RetentionUnit %d is below MaxBatchBytes",
			impl.Name, impl.RetentionUnit)
	}
	k := kindOf(t, impl)
	for _, c := range cases {
		if c.applies != nil && !c.applies(k) {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, impl)
			defer e.close()
			c.run(e)
		})
	}
	if !impl.CasesOnly {
		runProperties(t, k)
	}
}

package storage

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Log is one partition's log of record batches, in offset order. The
// shard that owns the partition calls Append, Retain and SetVisible; Sync
// may run on another goroutine (the shard's syncer); Read, Bounds and the
// other accessors are safe from any goroutine, concurrently with appends.
//
// Every implementation keeps the promises written here and on the methods;
// package storage/logtest checks them, with a table of cases and
// properties over random appends, reads, retention passes, restarts and
// crashes compared with a model, which each implementation's tests run
// unchanged (contract_test.go: MemLog, and DiskLog on a memory and on the
// real file system).
//
// Offsets. A log holds the batches from its start offset to its end
// offset, dense: each batch begins where the one before it ends. A new
// log is empty at offset 0. The caller stamps a batch's base offset (the
// log's end) before it appends it; the log does not renumber.
//
// Visibility. Readers see the batches below the visible end, which
// SetVisible sets to a batch boundary no higher than what was appended
// (for a Staged log, written). Until the first SetVisible a memory log
// shows every batch, and a disk log what it held when opened.
//
// Durability. Sync makes everything appended (for a Staged log, written)
// durable. A durable log (DiskLog) that is closed and opened again holds
// the same batches, byte for byte, at the same offsets, all of them
// visible, and appends continue at its end; after a crash it holds every
// batch a Sync covered, and a prefix of the rest, ending at a batch
// boundary. What Retain removes is removed durably by the next Sync or
// Close: a crash before that may bring it back. A memory log keeps
// nothing across a restart: it starts again empty at offset 0.
//
// Damage. A durable log checks every batch it reads back (the CRC, and an
// encrypted log's authentication tag). A damaged batch in the middle of
// the log is reported, skipped and kept: Stats().Corrupt lists its
// offsets once recovery or a read has come across it, Read goes on with
// the next intact batch without failing, and the log's bounds and bytes
// still count it. Only a torn tail left by a crash is cut, at the last
// whole batch.
type Log interface {
	// Append adds a batch whose base offset is already stamped and equals
	// the log's end offset. b holds the batch's bytes; a memory log keeps
	// a reference (it retains b, and releases it when retention removes
	// the batch or the log closes), a disk log copies them to its segment
	// file. The batch is not visible until SetVisible.
	Append(b *Buf, batch wire.Batch) error
	// Sync makes everything appended so far (for a Staged log, written)
	// durable, and returns the end offset it made durable. A memory log
	// makes nothing durable and returns its end.
	Sync() (int64, error)
	// SetVisible lets readers see batches below end, a batch boundary.
	// Durable topics publish an offset only once it is synced, so no
	// reader sees a message that a crash could take back.
	SetVisible(end int64)
	// Bounds returns the first offset held and the visible end; an empty
	// log returns its end twice.
	Bounds() (start, end int64)
	// Read calls fn with each visible batch, in order, starting with the
	// one that contains offset (it may begin before offset), until the
	// bytes passed reach maxBytes or fn returns false: the batch that
	// reaches or crosses maxBytes is the last, so at least one batch is
	// passed. Damaged batches are skipped (see Log). The batch slice is
	// valid only during the call. A read at or after the visible end
	// passes nothing and returns nil; one below the start returns
	// ErrOffsetOutOfRange, and so may one whose offsets retention removes
	// while it runs, after passing some batches.
	Read(offset int64, maxBytes int, fn func(batch wire.Batch) bool) error
	// OffsetForTime returns the base offset of the first batch, in offset
	// order, whose max timestamp is at or after ts (Unix nanoseconds), or
	// the visible end when there is none or it is not visible.
	// Timestamps need not grow with offsets: each batch is judged by its
	// own max timestamp.
	OffsetForTime(ts int64) (int64, error)
	// Retain removes batches from the start of the log while they are
	// older than maxAge (their max timestamp is before now-maxAge) or
	// begin more than maxBytes from the end (the bytes Stats counts for
	// them and every later batch exceed maxBytes). Zero disables a bound.
	// It stops at the first batch that is neither, and never removes the
	// last batch. A memory log removes exactly those batches. A disk log
	// deletes whole segments, never the active one: a segment goes when
	// all its batches are old or it begins more than maxBytes from the
	// end, so it keeps up to a segment more than the exact rule, and may
	// keep up to a segment less than maxBytes. It returns how many
	// batches (memory) or segments (disk) it removed; reads then start at
	// the new start.
	Retain(now time.Time, maxAge time.Duration, maxBytes int64) (removed int, err error)
	// Stats reports the log's size and shape: Start and End are Bounds',
	// and Bytes what the batches held take in storage (their lengths; in
	// an encrypted disk log, sealed).
	Stats() LogStats
	// Close releases files and buffers; a disk log first makes everything
	// durable and leaves its clean marker.
	Close() error
	// Drop closes the log and deletes its data (the topic was deleted): a
	// log opened again in its place is empty at offset 0.
	Drop() error
}

// Staged is a Log whose appends are staged by the shard and written by
// another goroutine (the shard's syncer), so that a disk write never runs on
// the shard's thread. See DiskLog.Stage.
type Staged interface {
	Log
	// Stage queues a stamped batch that follows the ones staged before it,
	// retaining b until it is written.
	Stage(b *Buf, batch wire.Batch) error
	// WritePending writes every staged batch and returns the end offset
	// written; Sync covers what was written. After a failed write, Stage
	// refuses until Resume.
	WritePending() (end int64, err error)
	// Resume lets Stage accept batches again after a failed write.
	Resume()
}

// Truncater is a Log whose tail can be cut off: replicated partitions
// (package cluster) remove entries a new Raft leader overwrote.
type Truncater interface {
	Log
	// Truncate removes every batch at or after offset end, which must be the
	// base offset of a batch held or the log's end offset (a no-op), and not
	// below the visible end (what readers may have seen is never taken back:
	// ErrTruncateVisible). After it returns, no crash and no reopen finds the
	// removed batches again. Called by the log's writer only (never
	// concurrently with Append, Stage/WritePending or Sync); Stage'd
	// batches not yet written at or above end are released and dropped.
	Truncate(end int64) error
}

// LogStats describes a log for the admin API and metrics.
type LogStats struct {
	Start, End int64
	Bytes      int64
	Segments   int
	// Corrupt lists the offset ranges that recovery or a read found
	// damaged (or missing between segments) in the middle of the log:
	// reported, not hidden (see Log). No batch that reads intact is in
	// one.
	Corrupt []Range
	// ReadOnly says why the log refuses writes until restart (a failed
	// fsync, a failed write it could not cut off); "" while it accepts
	// them.
	ReadOnly string
	// ReadErrors counts reads that failed with an I/O error (not
	// corruption, which Corrupt reports).
	ReadErrors uint64
	// Offline says why the log could not be opened (OfflineLog); "" for a
	// log that serves.
	Offline string
}

// Range is a half-open range of offsets [From, To).
type Range struct{ From, To int64 }

func (r Range) String() string { return fmt.Sprintf("[%d, %d)", r.From, r.To) }

// Errors of the storage layer. Publish errors map to wire codes with Code.
var (
	// ErrOffsetOutOfRange: a read below the log's start.
	ErrOffsetOutOfRange = errors.New("storage: offset out of range")
	// ErrCorrupt: a batch failed its CRC where it was read. No Log
	// returns it from Read, which skips a damaged batch and reports it in
	// LogStats.Corrupt instead (see Log), and nothing in the module
	// returns it at present.
	ErrCorrupt = errors.New("storage: corrupt batch")
	// ErrFailed: the log stopped accepting writes after an error it could
	// not undo (a failed fsync, a failed truncate of a partial write); it
	// stays readable, and a restart recovers it.
	ErrFailed = errors.New("storage: log failed; restart to recover")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("storage: log closed")
	// ErrOffline: the partition's log could not be opened at start; it
	// serves nothing until a restart opens it (OfflineLog).
	ErrOffline = errors.New("storage: partition offline")
	// ErrTruncateVisible: a truncation below the visible end, which would
	// take back batches readers may have seen.
	ErrTruncateVisible = errors.New("storage: truncate below the visible end")
	// ErrTruncateBoundary: a truncation at an offset that is not the base
	// offset of a batch the log holds (inside a batch, below the start, or
	// in a corrupt range).
	ErrTruncateBoundary = errors.New("storage: truncate offset is not a batch boundary")
	// ErrTruncateBeyondEnd: a truncation above the log's end offset.
	ErrTruncateBeyondEnd = errors.New("storage: truncate offset beyond the log's end")
)

// checkTruncate vets a truncation at end of a log whose visible end is
// visible and whose end offset (written, or appended) is last.
func checkTruncate(end, visible, last int64) error {
	switch {
	case end > last:
		return fmt.Errorf("%w: offset %d, end %d", ErrTruncateBeyondEnd, end, last)
	case end < visible:
		return fmt.Errorf("%w: offset %d, visible end %d", ErrTruncateVisible, end, visible)
	}
	return nil
}

// UncutError is a failed write whose bytes could not be cut off the file
// afterwards: the batches of that write, up to End, may be found by
// recovery after a restart (their outcome is unknown), while anything
// staged after them was never written. The log has failed (ErrFailed).
type UncutError struct {
	Err error
	End int64 // the offset after the last batch of the failed write
}

func (e *UncutError) Error() string {
	return "storage: a failed write could not be cut off: " + e.Err.Error()
}

func (e *UncutError) Unwrap() error { return e.Err }

// Code maps a storage error to the protocol code a producer gets.
func Code(err error) wire.Code {
	switch {
	case errors.Is(err, ErrOffline):
		return wire.CodePartitionOffline
	case errors.Is(err, ErrUnavailable):
		return wire.CodeStorageUnavailable
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return wire.CodeStorageFull
	default:
		return wire.CodeStorageError
	}
}

// ScanProducers calls fn, in offset order, with the producer id, sequence,
// base offset and record count of every idempotent batch (producer id not
// wire.NoProducer) that l holds from offset from to its visible end. It is
// how a partition's idempotent-producer table is rebuilt at start
// (driver.RestoreProducers). Corrupt ranges are skipped, as every read
// skips them.
func ScanProducers(l Log, from int64, fn func(id int64, seq int32, base int64, count int)) error {
	start, end := l.Bounds()
	from = max(from, start)
	for from < end {
		next := from
		err := l.Read(from, 4<<20, func(b wire.Batch) bool {
			if id := b.ProducerID(); id != wire.NoProducer && b.BaseOffset() >= from {
				fn(id, b.ProducerSeq(), b.BaseOffset(), b.Count())
			}
			next = b.BaseOffset() + int64(b.Count())
			return true
		})
		if err != nil {
			return err
		}
		if next <= from {
			return nil // nothing more is readable
		}
		from = next
	}
	return nil
}

// TailStart returns the first offset of the segment n segments before the
// active one (0: the active one), or the log's start when it has fewer; a
// log without segments returns its start.
func TailStart(l Log, n int) int64 {
	if d, ok := l.(*DiskLog); ok {
		segs := *d.segs.Load()
		return segs[max(len(segs)-1-n, 0)].base
	}
	start, _ := l.Bounds()
	return start
}

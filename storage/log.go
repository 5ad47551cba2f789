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
type Log interface {
	// Append adds a batch whose base offset is already stamped and equals
	// the log's end offset. b holds the batch's bytes; a memory log keeps a
	// reference, a disk log copies them to its segment file.
	Append(b *Buf, batch wire.Batch) error
	// Sync makes everything appended so far durable. It returns the end
	// offset it made durable.
	Sync() (int64, error)
	// SetVisible lets readers see batches below end. Durable topics
	// publish an offset only once it is synced, so no reader sees a
	// message that a crash could take back.
	SetVisible(end int64)
	// Bounds returns the first offset held and the visible end offset.
	Bounds() (start, end int64)
	// Read calls fn with each visible batch, in order, starting with the
	// one that contains offset, until about maxBytes were passed (at least
	// one batch) or fn returns false. The batch slice is valid only during
	// the call. It returns ErrOffsetOutOfRange below the start.
	Read(offset int64, maxBytes int, fn func(batch wire.Batch) bool) error
	// OffsetForTime returns the first offset of the first batch whose max
	// timestamp is at or after ts (Unix nanoseconds), or the end offset.
	OffsetForTime(ts int64) (int64, error)
	// Retain deletes whole segments (or batches, in memory) that are older
	// than maxAge or beyond maxBytes from the end. Zero disables a bound.
	// The active segment is never deleted.
	Retain(now time.Time, maxAge time.Duration, maxBytes int64) (removed int, err error)
	// Stats reports the log's size and shape.
	Stats() LogStats
	// Close releases files and buffers; a disk log first makes everything
	// durable and leaves its clean marker.
	Close() error
	// Drop closes the log and deletes its data (the topic was deleted).
	Drop() error
}

// Staged is a Log whose appends are staged by the shard and written by
// another goroutine (the shard's syncer), so that a disk write never runs on
// the shard's thread. See DiskLog.Stage.
type Staged interface {
	Log
	Stage(b *Buf, batch wire.Batch) error
	WritePending() (end int64, err error)
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
	Corrupt    []Range // ranges found corrupt, reported not hidden
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
	// ErrCorrupt: a batch failed its CRC where it was read.
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

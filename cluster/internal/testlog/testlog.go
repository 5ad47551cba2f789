// Package testlog is a truncatable partition log and a meta store in
// memory, for tests of Raft groups: a Log survives "restarts" (Reopen shows
// everything it holds, as a reopened disk log does), and can lose its
// unsynced tail (Crash) as a disk without fsync would.
package testlog

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Log is a truncatable partition log in memory that survives "restarts" (Open
// again over it shows everything it holds, as a reopened DiskLog does).
type Log struct {
	mu      sync.Mutex
	batches [][]byte
	start   int64
	end     int64
	visible int64
	synced  int64 // end offset made durable by Sync

	stage *Log // OpenStage's, until Adopt or DropStage
	// AdoptErr, if set, fails the next Adopt before it changes anything
	// (and is cleared): a crash in the middle of an installation.
	AdoptErr error
	adopted  int // Adopt calls that succeeded
}

var _ storage.Stager = (*Log)(nil)

// OpenStage implements storage.Stager: a Log of its own, kept (with what
// it synced) across Crash and Reopen until Adopt or DropStage.
func (f *Log) OpenStage() (storage.Stage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stage == nil {
		f.stage = &Log{}
	}
	return f.stage, nil
}

// Adopt implements storage.Stager: the stage's batches are appended, and
// durable; the stage is gone.
func (f *Log) Adopt(stage storage.Stage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := stage.(*Log)
	if !ok || s != f.stage {
		return errors.New("testlog: not this log's stage")
	}
	if err := f.AdoptErr; err != nil {
		f.AdoptErr = nil
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start != f.end {
		return fmt.Errorf("testlog: stage starts at %d, the log ends at %d", s.start, f.end)
	}
	for _, b := range s.batches {
		f.batches = append(f.batches, b)
		bt := wire.Batch(b)
		f.end = bt.BaseOffset() + int64(bt.Count())
	}
	f.synced = f.end
	f.stage = nil
	f.adopted++
	return nil
}

// DropStage implements storage.Stager.
func (f *Log) DropStage() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stage = nil
	return nil
}

// Adopted returns how many stages the log adopted.
func (f *Log) Adopted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adopted
}

// Append implements storage.Log: it copies the batch.
func (f *Log) Append(b *storage.Buf, batch wire.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if batch.BaseOffset() != f.end {
		return fmt.Errorf("append at %d, end %d", batch.BaseOffset(), f.end)
	}
	f.batches = append(f.batches, append([]byte(nil), batch...))
	f.end += int64(batch.Count())
	return nil
}

// Sync implements storage.Log: what is appended becomes durable (Crash keeps it).
func (f *Log) Sync() (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.synced = f.end
	return f.end, nil
}

// Crash loses what was appended after the last Sync, and reopens: the
// log of a node that lost power.
func (f *Log) Crash() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, b := range f.batches {
		if wire.Batch(b).BaseOffset() >= f.synced {
			f.batches = f.batches[:i]
			break
		}
	}
	f.end = f.synced
	f.visible = f.end
	if f.stage != nil {
		f.stage.Crash()
	}
}

// SetVisible implements storage.Log.
func (f *Log) SetVisible(end int64) {
	f.mu.Lock()
	f.visible = end
	f.mu.Unlock()
}

// Bounds implements storage.Log.
func (f *Log) Bounds() (int64, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.start, f.visible
}

// Read implements storage.Log: it serves visible batches only.
func (f *Log) Read(offset int64, maxBytes int, fn func(wire.Batch) bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if offset < f.start {
		return storage.ErrOffsetOutOfRange
	}
	n := 0
	for _, b := range f.batches {
		bt := wire.Batch(b)
		if bt.BaseOffset()+int64(bt.Count()) <= offset {
			continue
		}
		if bt.BaseOffset() >= f.visible || (n > 0 && n >= maxBytes) {
			return nil
		}
		n += len(b)
		if !fn(bt) {
			return nil
		}
	}
	return nil
}

// OffsetForTime implements storage.Log (always 0: not needed by Raft).
func (f *Log) OffsetForTime(int64) (int64, error) { return 0, nil }

// Retain implements storage.Log (keeps everything).
func (f *Log) Retain(time.Time, time.Duration, int64) (int, error) {
	return 0, nil
}

// RetainBelow implements raftlog.Log: each batch is a segment of its own,
// and only maxBytes counts (age is ignored). The last batch stays, as a
// disk log's active segment does.
func (f *Log) RetainBelow(_ time.Time, _ time.Duration, maxBytes int64, below int64,
	before func(start int64) error) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if maxBytes <= 0 {
		return 0, nil
	}
	var total int64
	for _, b := range f.batches {
		total += int64(len(b))
	}
	n := 0
	for n < len(f.batches)-1 && total > maxBytes {
		b := wire.Batch(f.batches[n])
		if b.BaseOffset()+int64(b.Count()) > below {
			break
		}
		total -= int64(len(b))
		n++
	}
	if n > 0 && before != nil {
		if err := before(wire.Batch(f.batches[n]).BaseOffset()); err != nil {
			return 0, err
		}
	}
	if n > 0 {
		f.batches = append([][]byte(nil), f.batches[n:]...)
		f.start = wire.Batch(f.batches[0]).BaseOffset()
	}
	return n, nil
}

// Reset implements raftlog.Log: the log is empty from start on, durably.
func (f *Log) Reset(start int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = nil
	f.start, f.end, f.visible, f.synced = start, start, start, start
	return nil
}

// Stats implements storage.Log (empty).
func (f *Log) Stats() storage.LogStats { return storage.LogStats{} }

// Close implements storage.Log.
func (f *Log) Close() error { return nil }

// Drop implements storage.Log.
func (f *Log) Drop() error { return nil }

// Truncate implements raftlog.Log: it cuts at a batch boundary at or above the visible end.
func (f *Log) Truncate(end int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if end < f.visible {
		return errors.New("truncate below visible")
	}
	for i, b := range f.batches {
		if wire.Batch(b).BaseOffset() == end {
			f.batches = f.batches[:i]
			f.end = end
			f.synced = min(f.synced, end) // a truncation is durable
			return nil
		}
	}
	if end == f.end {
		return nil
	}
	return fmt.Errorf("truncate at %d: not a boundary", end)
}

// Reopen makes the log look as a reopened disk log does: all it holds visible.
func (f *Log) Reopen() {
	f.mu.Lock()
	f.visible = f.end
	f.mu.Unlock()
}

// Meta is a meta store in memory.
type Meta struct {
	mu   sync.Mutex
	data []byte
}

// Load implements raftlog.MetaStore.
func (m *Meta) Load() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data, nil
}

// Save implements raftlog.MetaStore.
func (m *Meta) Save(data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = append([]byte(nil), data...)
	return nil
}

// Bytes returns what was saved last.
func (m *Meta) Bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data
}

// SetBytes replaces what was saved (a test's simulated crash).
func (m *Meta) SetBytes(b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data = b
}

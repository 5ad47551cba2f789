package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

var _ Truncater = (*DiskLog)(nil)

// Truncate removes every batch at or after end, durably (see Truncater),
// and the staged batches, which are all at or above the end written.
//
// The segment that holds the batch at end is cut at that batch and becomes
// the active segment again, with its direct handle back if it was sealed;
// when end is its base it is left empty, which recovers as an empty last
// segment does, so no new file is needed. The segments after it are
// deleted. The cut segment's maxTS stays what it was, an upper bound of
// what it keeps: retention and time lookups need no less, and the exact
// value would take reading the whole segment.
//
// Every step leaves files that recovery reads as a prefix of the log
// before the call, never one with a hole:
//
//  1. everything written is synced first, as Sync does, so every segment
//     file holds all its batches durably;
//  2. the cut segment's index file is removed (the bytes it describes are
//     about to change), and the later segments are deleted, last first,
//     each removal made durable by a directory sync before the next;
//  3. the cut segment's file is truncated and synced.
//
// Afterwards the log is durable up to end, as after a Sync; at the end
// written, Truncate only drops the staged batches. An error before
// anything changed (a bad offset, a failed read of the batches that
// locate end) leaves the log as it was; one after fails the log
// (ErrFailed), since it is no longer known what a restart will find.
//
// Readers go on meanwhile: they read below the visible end, which no cut
// reaches, and the cut segment's blocks are cached under a new id from
// then on (see extent).
func (l *DiskLog) Truncate(end int64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.checkTruncate(end); err != nil {
		return err
	}
	if end == l.written.Load() {
		l.dropStaged()
		return nil
	}
	s, pos, err := l.truncatePoint(end)
	if err != nil {
		return err
	}
	l.dropStaged()
	if _, err := l.syncLocked(); err != nil {
		return fmt.Errorf("%w: truncate at offset %d: %w", ErrFailed, end, err) // failSync failed the log
	}
	later, ok := l.detachAfter(s)
	if !ok {
		// Retention deleted the segment since truncatePoint found it.
		return fmt.Errorf("%w: offset %d is below the log's start", ErrTruncateBoundary, end)
	}
	if err := l.cutTail(s, later, pos, end); err != nil {
		l.fail("truncate failed: " + err.Error())
		l.cfg.Logger.Error("storage: truncate failed; log read-only until restart", "dir", l.cfg.Dir,
			"offset", end, "err", err)
		return fmt.Errorf("%w: truncate at offset %d: %w", ErrFailed, end, err)
	}
	return nil
}

// checkTruncate refuses a truncation of a failed or closed log, and one
// at an offset out of bounds.
func (l *DiskLog) checkTruncate(end int64) error {
	if l.failed.Load() {
		return l.failedErr()
	}
	if l.closed.Load() {
		return ErrClosed
	}
	return checkTruncate(end, l.visible.Load(), l.written.Load())
}

// dropStaged releases every staged batch.
func (l *DiskLog) dropStaged() { l.sq.Drop() }

// truncatePoint finds the segment holding the batch whose base offset is
// end, below the end written, and that batch's position in it.
func (l *DiskLog) truncatePoint(end int64) (*segment, int64, error) {
	segs := *l.segs.Load()
	i := len(segs) - 1
	for i > 0 && segs[i].base > end {
		i--
	}
	s := segs[i]
	switch {
	case end < s.base:
		return nil, 0, fmt.Errorf("%w: offset %d is below the log's start %d", ErrTruncateBoundary, end, s.base)
	case end == s.base:
		return s, 0, nil
	}
	pos, err := l.batchPos(s, end)
	return s, pos, err
}

// batchPos returns the position in s of the batch whose base offset is
// off. It walks from the index entry before off, checking each batch as
// recovery does, so a damaged one is stepped over by resync and not by
// its length: at most an index interval and a batch are read.
func (l *DiskLog) batchPos(s *segment, off int64) (int64, error) {
	f, _, err := s.files.acquire(false)
	if err != nil {
		return 0, err
	}
	defer s.files.release()
	size := s.size.Load()
	pos, base := s.lookup(off)
	var buf []byte
	for pos < size && base < off {
		b, err := readBatchAt(f, pos, size, &buf)
		if err != nil {
			return 0, err
		}
		if b != nil && validBatch(b, base) {
			pos, base = pos+int64(len(b)), base+int64(wire.Batch(b).Count())
			continue
		}
		if pos, base, err = resync(f, pos, size, base, &buf); err != nil {
			return 0, err
		}
		if pos < 0 {
			break
		}
	}
	if base != off || pos < 0 || pos >= size {
		return 0, fmt.Errorf("%w: offset %d", ErrTruncateBoundary, off)
	}
	return pos, nil
}

// detachAfter makes s the last segment and returns the segments that
// followed it, marked removed; false if s is gone (retention).
func (l *DiskLog) detachAfter(s *segment) ([]*segment, bool) {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	segs := *l.segs.Load()
	i := slices.Index(segs, s)
	if i < 0 {
		return nil, false
	}
	keep := slices.Clone(segs[:i+1])
	l.segs.Store(&keep)
	later := segs[i+1:]
	for _, d := range later {
		l.bytes.Add(-d.size.Load())
		d.removed.Store(true)
	}
	return later, true
}

// cutTail cuts s at pos, where the batch at end starts, makes it the
// active segment, and deletes later, in the order Truncate describes.
func (l *DiskLog) cutTail(s *segment, later []*segment, pos, end int64) error {
	sealed := s != l.active
	l.forgetFrom(s, pos, end)
	l.active = s
	l.written.Store(end)
	if err := l.removeFiles(s, later); err != nil {
		return err
	}
	return l.cutFile(s, pos, sealed)
}

// forgetFrom drops from memory what s holds at or after pos, the batch at
// end: its index entries, its bytes (under a new cache id: the blocks
// cached from them are stale once bytes are written there again), the
// reads' remembered skips, and the corrupt ranges reported there.
func (l *DiskLog) forgetFrom(s *segment, pos, end int64) {
	s.cutIndex(pos, max(s.idxMax, l.cfg.maxIndexEntries())) // before size: see scanTime
	l.bytes.Add(pos - s.size.Load())
	s.size.Store(pos)
	s.cacheID.Store(cacheIDs.Add(1)) // after size: see extent
	s.next.Store(end)
	if pos == 0 {
		s.maxTS.Store(0)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for at, sk := range s.skips {
		if at >= pos || sk.pos >= pos || sk.pos < 0 {
			delete(s.skips, at)
		}
	}
	l.corrupt = slices.DeleteFunc(l.corrupt, func(r Range) bool { return r.From >= end })
	for i := range l.corrupt {
		l.corrupt[i].To = min(l.corrupt[i].To, end)
	}
}

// removeFiles removes s's index file and deletes the segments in later,
// last first, each durably before the next.
func (l *DiskLog) removeFiles(s *segment, later []*segment) error {
	err := l.cfg.FS.Remove(s.indexPath())
	dirty := err == nil
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	for i := len(later) - 1; i >= 0; i-- {
		if err == nil {
			if err = l.deleteSegment(later[i]); err == nil {
				err = l.cfg.FS.SyncDir(l.cfg.Dir)
				dirty = false
			}
		}
		later[i].release()
	}
	if err == nil && dirty {
		err = l.cfg.FS.SyncDir(l.cfg.Dir)
	}
	return err
}

// cutFile truncates s's file at pos, durably, and readies s for appends:
// a sealed segment asks for its direct handle again, and the direct
// writer's tail is loaded from the new end.
func (l *DiskLog) cutFile(s *segment, pos int64, sealed bool) error {
	if sealed {
		s.files.wantWriter()
	}
	if err := s.pin(); err != nil {
		return err
	}
	if err := s.wrd.Truncate(pos); err != nil {
		return err
	}
	s.tail = nil
	if s.wwr != nil {
		t, err := newTailWriter(s.wrd, pos)
		if err != nil {
			return err
		}
		s.tail = t
	}
	if err := s.wrd.Sync(); err != nil {
		return err
	}
	l.cfg.Files.settle(s.unpin())
	return nil
}

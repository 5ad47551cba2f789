package storage

import (
	"errors"
	"fmt"
	"io"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Finding batches in damaged segments. A batch's CRC covers its records
// and most of its header, but not its base offset, length, magic and
// attribute bytes (see package wire): a damaged length is caught only by
// the CRC failing over the wrong bytes, and says nothing about where the
// next batch starts. Recovery and reads therefore never step over a batch
// that failed its checks by its length: they resynchronise (resync) on the
// next batch that passes every check.

// scanSegment reads a segment batch by batch, verifying each CRC and
// rebuilding the index. It returns where whole batches end (anything after
// is a torn tail) and the offset ranges of corrupt batches followed by
// good ones (corruption, not a tear).
//
// check, if not nil, vets each valid batch's keys (DiskLog.checkKeys): a
// batch it refuses fails the scan, so that a log opened without the keys
// its batches need is not taken for a torn one and cut.
func scanSegment(s *segment, f vfs.File, size int64, interval int64, check func([]byte) error) (int64, []Range, error) {
	var corrupt []Range
	s.index.Load().n.Store(0) // no reader sees a segment being recovered
	s.lastIdx = -1 << 62
	pos, next := int64(0), s.base
	buf := make([]byte, 64<<10)
	for pos < size {
		batch, err := readBatchAt(f, pos, size, &buf)
		if err != nil {
			return 0, corrupt, err
		}
		if batch != nil && validBatch(batch, next) {
			if check != nil {
				if err := check(batch); err != nil {
					return 0, corrupt, fmt.Errorf("batch at offset %d: %w", next, err)
				}
			}
			b := wire.Batch(batch)
			s.addIndex(b.BaseOffset(), pos, b.MaxTimestamp(), interval)
			s.maxTS.Store(max(s.maxTS.Load(), b.MaxTimestamp()))
			next = b.BaseOffset() + int64(b.Count())
			pos += int64(len(batch))
			continue
		}
		// A bad batch: corruption if a good one follows, else a torn tail.
		found, following, err := resync(f, pos, size, next, &buf)
		if err != nil {
			return 0, corrupt, err
		}
		if found < 0 {
			break
		}
		corrupt = append(corrupt, Range{next, following})
		pos, next = found, following
		s.lastIdx = -1 << 62 // index the batch after the damage, so reads can skip to it
	}
	s.size.Store(pos)
	s.next.Store(next)
	return pos, corrupt, nil
}

// resync finds the batch that follows a damaged one at pos, which should
// have held offset next, in a segment of size bytes. It returns the good
// batch's position and base offset, or -1 when no good batch follows (a
// torn tail, or damage up to the end).
//
// The batch where the damaged one's length points is taken when it is
// valid and its base offset is the one right after the damaged batch's
// records: that holds only if the length was intact (a damaged length that
// lands on a later batch's start finds a larger base offset), and it keeps
// a damaged batch whose records happen to contain a whole batch from being
// read as that batch. Otherwise the bytes after pos are searched.
func resync(f vfs.File, pos, size, next int64, buf *[]byte) (int64, int64, error) {
	var hdr [wire.BatchHeaderSize]byte
	if size-pos >= wire.BatchHeaderSize {
		if _, err := f.ReadAt(hdr[:], pos); err != nil && !errors.Is(err, io.EOF) {
			return -1, 0, err
		}
		claimed := int64(wire.BatchSize(hdr[:]))
		count := int64(wire.Batch(hdr[:]).Count())
		if at := pos + claimed; claimed >= wire.BatchHeaderSize && at < size && count > 0 {
			b, err := readBatchAt(f, at, size, buf)
			if err != nil {
				return -1, 0, err
			}
			if b != nil && validBatch(b, next+count) {
				return at, next + count, nil
			}
		}
	}
	found, err := findNextBatch(f, pos+1, size, next, buf)
	if err != nil || found < 0 {
		return -1, 0, err
	}
	b, err := readBatchAt(f, found, size, buf)
	if err != nil {
		return -1, 0, err
	}
	return found, wire.Batch(b).BaseOffset(), nil
}

// findNextBatch looks for the first whole, valid batch at or after from
// whose base offset is beyond next: the batches after a damaged one, when
// its length field may be damaged too. It returns -1 when there is none,
// which makes the damage a torn tail. It checks a CRC only where the magic
// byte and the length fit, so it costs little on the rare path it serves.
func findNextBatch(f vfs.File, from, size, next int64, buf *[]byte) (int64, error) {
	const window = 1 << 20
	chunk := make([]byte, min(window+wire.BatchHeaderSize, max(size-from, 0)))
	for base := from; base < size-wire.BatchHeaderSize; base += window {
		n, err := f.ReadAt(chunk[:min(int64(len(chunk)), size-base)], base)
		if err != nil && !errors.Is(err, io.EOF) {
			return -1, err
		}
		for i := 0; i+wire.BatchHeaderSize <= n && int64(i) < window; i++ {
			h := chunk[i : i+wire.BatchHeaderSize]
			if h[12] != wire.BatchMagic || !wire.ValidAttributes(h[13]&^attrSealed) || h[14] != 0 || h[15] != 0 {
				continue
			}
			pos := base + int64(i)
			b, err := readBatchAt(f, pos, size, buf)
			if err != nil {
				return -1, err
			}
			if b != nil && validBatch(b, -1) && wire.Batch(b).BaseOffset() > next {
				return pos, nil
			}
		}
	}
	return -1, nil
}

// readBatchAt reads the batch at pos into *buf (grown as needed). It
// returns nil without error when the bytes at pos cannot be a batch that
// fits before size.
func readBatchAt(f vfs.File, pos, size int64, buf *[]byte) ([]byte, error) {
	if size-pos < wire.BatchHeaderSize {
		return nil, nil
	}
	if cap(*buf) < wire.BatchHeaderSize {
		*buf = make([]byte, 64<<10)
	}
	hdr := (*buf)[:wire.BatchHeaderSize]
	if _, err := f.ReadAt(hdr, pos); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	n := int64(wire.BatchSize(hdr))
	if n < wire.BatchHeaderSize || pos+n > size {
		return nil, nil
	}
	if int64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := f.ReadAt(b, pos); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// validBatch checks a batch's structure and CRC (checkStoredBatch: plain
// or sealed), and its base offset when want is not negative.
func validBatch(b []byte, want int64) bool {
	if err := checkStoredBatch(b); err != nil {
		return false
	}
	return want < 0 || wire.Batch(b).BaseOffset() == want
}

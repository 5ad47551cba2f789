package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// blockSize is the unit of the read cache: reads of immutable segment data
// go through whole blocks, so many consumers replaying the same range read
// the disk once.
const blockSize = 64 << 10

// BlockCache caches blocks of segment files, shared by every log of a
// broker. ristretto admits and evicts by frequency and is safe for
// concurrent use; its Set is asynchronous and may drop, which is fine on
// the read path (the next read goes to the file).
type BlockCache struct {
	c *ristretto.Cache[string, []byte]
}

// NewBlockCache returns a cache holding about maxBytes of blocks; 0 or
// less disables caching (a nil cache is valid and caches nothing).
func NewBlockCache(maxBytes int64) (*BlockCache, error) {
	if maxBytes <= 0 {
		return nil, nil
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, []byte]{
		NumCounters: max(maxBytes/blockSize*10, 1000),
		MaxCost:     maxBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, err
	}
	return &BlockCache{c: c}, nil
}

// Close releases the cache.
func (c *BlockCache) Close() {
	if c != nil {
		c.c.Close()
	}
}

// blockKey names a block: the log, the segment's cache id (see
// segment.cacheID), the block index. The string views a stack array;
// ristretto hashes keys and keeps only the hashes, so the view does not
// outlive the call.
func blockKey(buf *[24]byte, log uint64, id uint64, block int64) string {
	binary.LittleEndian.PutUint64(buf[0:], log)
	binary.LittleEndian.PutUint64(buf[8:], id)
	binary.LittleEndian.PutUint64(buf[16:], uint64(block))
	return unsafe.String(&buf[0], len(buf))
}

// lastBlocks are the two blocks a read used last. A reader walks a block
// batch by batch (a header, then the batch, then the next header), and a
// batch that starts in one block and ends in the next needs both; the
// cache's Set is asynchronous and may not admit a block at all (a full
// cache keeps what it judges hotter), and the unfinished last block of a
// segment is never cached. Without these, each of those reads would go to
// the file again. Data below a segment's size never changes under one
// cache id (see extent), so a block read once serves the rest of the Read
// call.
type lastBlocks struct {
	b    [2]heldBlock
	next int // the entry the next block replaces
}

type heldBlock struct {
	id    uint64 // the segment's cache id; 0: no block
	block int64
	data  []byte // the block's bytes from its start, up to the limit when read
	own   []byte // a buffer for blocks the cache does not hold
}

// find returns the held block of the segment cached as id that has the
// byte at pos, or nil.
func (l *lastBlocks) find(id uint64, block, pos int64) *heldBlock {
	for i := range l.b {
		h := &l.b[i]
		if h.id == id && h.block == block && pos < block*blockSize+int64(len(h.data)) {
			return h
		}
	}
	return nil
}

// slot is the entry a newly read block goes into: the older one.
func (l *lastBlocks) slot() *heldBlock {
	h := &l.b[l.next]
	l.next ^= 1
	return h
}

// fileUse is a read's hold on the read handle of the segment it reads,
// taken on first use, so that a read the block cache serves opens
// nothing, and given back when the read leaves the segment.
type fileUse struct {
	s *segment
	f vfs.File
}

// file returns s's read handle, opened if the file cache had closed it.
func (u *fileUse) file(s *segment) (vfs.File, error) {
	if u.s == s {
		return u.f, nil
	}
	u.done()
	f, _, err := s.files.acquire(false)
	if err != nil {
		return nil, err
	}
	u.s, u.f = s, f
	return f, nil
}

// done gives the handle back.
func (u *fileUse) done() {
	if u.s != nil {
		u.s.files.release()
		u.s, u.f = nil, nil
	}
}

// readAt is ReadAt on s's read handle.
func (u *fileUse) readAt(s *segment, b []byte, pos int64) (int, error) {
	f, err := u.file(s)
	if err != nil {
		return 0, err
	}
	return f.ReadAt(b, pos)
}

// readRange copies [pos, pos+len(dst)) of a segment into dst, a block at a
// time: whole blocks (complete and immutable, below ext.size) through the
// cache, the unfinished last block from the file. last keeps the blocks
// used last for the next calls; with a nil last and no cache it reads dst
// directly. The file is read through use.
//
// The file may be shorter than ext.size: Truncate cut it after the read
// loaded ext. The bytes the read needs, below the visible end, are still
// there, so a block that ends early is taken for what it holds.
func (l *DiskLog) readRange(s *segment, ext extent, pos int64, dst []byte, last *lastBlocks, use *fileUse) error {
	c := l.cfg.Cache
	limit := ext.size
	for len(dst) > 0 {
		block := pos / blockSize
		bstart := block * blockSize
		whole := bstart+blockSize <= limit
		var data []byte
		var held *heldBlock
		if last != nil {
			held = last.find(ext.id, block, pos)
		}
		switch {
		case held != nil:
			data = held.data
		case whole && c != nil:
			var kb [24]byte
			key := blockKey(&kb, l.id, ext.id, block)
			var ok bool
			if data, ok = c.c.Get(key); !ok {
				data = make([]byte, blockSize)
				if _, err := use.readAt(s, data, bstart); err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				c.c.Set(key, data, blockSize)
			}
			if last != nil {
				h := last.slot()
				h.id, h.block, h.data = ext.id, block, data
			}
		case last != nil && pos < limit:
			// Not cached: the unfinished block up to limit, or any block
			// without a cache, into an entry's own buffer.
			h := last.slot()
			if cap(h.own) < blockSize {
				h.own = make([]byte, blockSize)
			}
			data = h.own[:min(blockSize, limit-bstart)]
			h.id, h.block, h.data = 0, 0, nil // invalid until read
			n, err := use.readAt(s, data, bstart)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					return err
				}
				if int64(n) <= pos-bstart {
					return io.ErrUnexpectedEOF
				}
				data = data[:n] // cut by Truncate (see above)
			}
			h.id, h.block, h.data = ext.id, block, data
		default:
			// No cache and no reader state, or a range that runs past
			// limit (a damaged header's claim): straight from the file.
			_, err := use.readAt(s, dst, pos)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n := copy(dst, data[pos-bstart:])
		dst, pos = dst[n:], pos+int64(n)
	}
	return nil
}

// Read calls fn with each visible batch from the one containing offset.
func (l *DiskLog) Read(offset int64, maxBytes int, fn func(wire.Batch) bool) error {
	err := l.read(offset, maxBytes, fn)
	l.countReadError(err)
	return err
}

// countReadError counts a read that failed for want of the disk (an I/O
// error, a file that cannot be opened or is shorter than the log says),
// so the health report can say a partition cannot be read; a read below
// the start or of a closed log is the caller's, and damage is reported as
// corrupt ranges instead.
func (l *DiskLog) countReadError(err error) {
	if err != nil && !errors.Is(err, ErrOffsetOutOfRange) && !errors.Is(err, ErrClosed) {
		l.readErrors.Add(1)
	}
}

func (l *DiskLog) read(offset int64, maxBytes int, fn func(wire.Batch) bool) error {
	var buf []byte
	var last lastBlocks
	var op *plainBuf
	if l.unseal != nil {
		op = &plainBuf{} // one allocation per Read, none per batch
	}
	for sent := 0; ; {
		visible := l.visible.Load()
		if offset >= visible {
			return nil
		}
		s, err := l.segmentFor(offset)
		if err != nil {
			return err
		}
		next, done, err := l.readSegment(s, offset, visible, maxBytes, &sent, &buf, op, &last, fn)
		s.release()
		if err != nil || done || next == offset {
			return l.removedErr(s, err)
		}
		offset = next
	}
}

// removedErr is err, from a read of segment s, unless it says that s's
// file is gone because the log removed s meanwhile. A read holds its
// segment, but opens the file only when it needs it, and without a
// Reclaimer a removed segment's file is unlinked at once: if the file
// cache had closed it, the read finds no file. Its offsets are gone, as
// for a read that came a moment later: ErrOffsetOutOfRange (retention,
// Reset), or ErrClosed (Drop).
func (l *DiskLog) removedErr(s *segment, err error) error {
	if err == nil || !s.removed.Load() || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if l.closed.Load() {
		return ErrClosed
	}
	return ErrOffsetOutOfRange
}

// segmentFor returns the segment holding offset, acquired.
func (l *DiskLog) segmentFor(offset int64) (*segment, error) {
	for {
		if l.closed.Load() {
			return nil, ErrClosed
		}
		segs := *l.segs.Load()
		if offset < segs[0].base {
			return nil, ErrOffsetOutOfRange
		}
		i := len(segs) - 1
		for i > 0 && segs[i].base > offset {
			i--
		}
		if segs[i].acquire() {
			return segs[i], nil
		}
		// Retention removed it meanwhile; look again.
	}
}

// readSegment reads batches of one segment from the one containing offset.
// It returns the offset after the last batch read, and whether to stop.
// Every batch it walks, even one before offset, passes its header checks
// and its CRC before its length is used to find the next: a batch that
// does not is skipped by resynchronising on the next good batch (resync),
// so damage costs that one batch, not the good ones after it. In an
// encrypted log a batch is served opened (decrypted into *plain); one that
// fails authentication is damage like a failed CRC.
func (l *DiskLog) readSegment(s *segment, offset, visible int64, maxBytes int, sent *int,
	buf *[]byte, plain *plainBuf, last *lastBlocks, fn func(wire.Batch) bool) (int64, bool, error) {
	ext := s.extent()
	limit := ext.size
	pos, expect := s.lookup(offset)
	next := offset
	var use fileUse
	defer use.done()
	var hdr [wire.BatchHeaderSize]byte
	for pos < limit {
		if expect >= visible {
			return next, true, nil
		}
		if err := l.readRange(s, ext, pos, hdr[:], last, &use); err != nil {
			return next, true, err
		}
		size := int64(wire.BatchSize(hdr[:]))
		var batch wire.Batch
		ok := plausibleHeader(hdr[:], size, limit-pos, expect, l.unseal != nil)
		why := "CRC or header"
		if ok {
			if int64(cap(*buf)) < size {
				*buf = make([]byte, size)
			}
			batch = wire.Batch((*buf)[:size])
			if err := l.readRange(s, ext, pos, batch, last, &use); err != nil {
				return next, true, err
			}
			ok = batch.CRC() == batch.ComputeCRC()
		}
		if ok && l.unseal != nil {
			var err error
			if batch, err = l.opened(batch, plain); err != nil {
				if !errors.Is(err, errOpen) {
					return next, true, fmt.Errorf("storage: %s at offset %d: %w", s.path, expect, err)
				}
				ok, why = false, "authentication (GCM tag): altered, or not sealed by this topic's keys"
			}
		}
		if !ok {
			p, base, err := l.skipDamaged(s, pos, limit, expect, why, &use)
			if err != nil {
				return next, true, err
			}
			if p < 0 {
				return max(next, s.next.Load()), false, nil
			}
			pos, expect, next = p, base, max(next, base)
			continue
		}
		end := expect + int64(batch.Count())
		pos, expect = pos+size, end
		if end <= offset {
			continue
		}
		next = end
		*sent += len(batch)
		if !fn(batch) || *sent >= maxBytes {
			return next, true, nil
		}
	}
	if segs := *l.segs.Load(); s == segs[len(segs)-1] || next >= visible {
		return next, true, nil // the active segment (read without the writer's lock)
	}
	return max(next, s.next.Load()), false, nil
}

// plausibleHeader checks the parts of a batch header the CRC does not
// cover: the length fits what is left of the segment (room bytes), the
// base offset is the one expected, the magic and attribute bytes are
// right (the attributes name a known codec). A sealed batch is plausible
// only in a log that seals (sealed).
func plausibleHeader(hdr []byte, size, room, expect int64, sealed bool) bool {
	if sealed && isSealed(hdr) {
		return wire.Batch(hdr).BaseOffset() == expect && sealedHeaderOK(hdr, size, room)
	}
	return size >= wire.BatchHeaderSize && size <= room && wire.Batch(hdr).BaseOffset() == expect &&
		hdr[12] == wire.BatchMagic && wire.ValidAttributes(hdr[13]) && hdr[14] == 0 && hdr[15] == 0
}

// plainBuf is a read's state for opening batches: the buffer they are
// opened into, and the opener's scratch.
type plainBuf struct {
	buf []byte
	st  openState
}

// opened is the batch a read of an encrypted log serves for the stored
// batch b, whose CRC passed: b opened into plain. It fails with errOpen
// for a batch in the clear or one that does not authenticate (damage, or
// tampering that kept the CRC right), and with ErrUnknownKey.
func (l *DiskLog) opened(b wire.Batch, plain *plainBuf) (wire.Batch, error) {
	if !isSealed(b) {
		return nil, errOpen
	}
	return l.unseal.open(&plain.st, &plain.buf, b)
}

// skipTo is where reads resume after a damaged batch; limit is the
// segment size the search covered, since in the active segment a later
// search may find a batch written since.
type skipTo struct{ pos, base, limit int64 }

// skipDamaged finds the good batch after a damaged one at pos that should
// have held offset expect (see resync), records the offsets lost as
// corrupt, and returns the good batch's position and base offset, or -1
// when none follows in the segment. The answer is remembered, so readers
// that meet the same damage do not search again.
func (l *DiskLog) skipDamaged(s *segment, pos, limit, expect int64, why string, use *fileUse) (int64, int64, error) {
	l.mu.Lock()
	sk, ok := s.skips[pos]
	l.mu.Unlock()
	if !ok || sk.pos < 0 && sk.limit != limit {
		f, err := use.file(s)
		if err != nil {
			return -1, 0, err
		}
		var buf []byte
		p, base, err := resync(f, pos, limit, expect, &buf)
		if err != nil {
			return -1, 0, err
		}
		sk = skipTo{p, base, limit}
		l.mu.Lock()
		if s.skips == nil {
			s.skips = map[int64]skipTo{}
		}
		s.skips[pos] = sk
		l.mu.Unlock()
	}
	end := sk.base
	if sk.pos < 0 {
		end = s.next.Load()
	}
	if expect < end {
		l.recordCorrupt(Range{expect, end}, why)
	}
	return sk.pos, sk.base, nil
}

// OffsetForTime returns the base offset of the first batch whose max
// timestamp is at or after ts, or the visible end.
func (l *DiskLog) OffsetForTime(ts int64) (int64, error) {
	for _, s := range *l.segs.Load() {
		if s.maxTS.Load() < ts || !s.acquire() {
			continue
		}
		off, found, err := l.scanTime(s, ts)
		s.release()
		if errors.Is(l.removedErr(s, err), ErrOffsetOutOfRange) {
			continue // retention removed it meanwhile (see removedErr)
		}
		l.countReadError(err)
		if err != nil || found {
			return off, err
		}
	}
	return l.visible.Load(), nil
}

func (l *DiskLog) scanTime(s *segment, ts int64) (int64, bool, error) {
	ext := s.extent()
	var hdr [wire.BatchHeaderSize]byte
	var last lastBlocks
	var use fileUse
	defer use.done()
	for pos := s.lookupTime(ts); pos < ext.size; {
		if err := l.readRange(s, ext, pos, hdr[:], &last, &use); err != nil {
			return 0, false, err
		}
		b := wire.Batch(hdr[:])
		if b.MaxTimestamp() >= ts {
			return min(b.BaseOffset(), l.visible.Load()), true, nil
		}
		pos += int64(wire.BatchSize(hdr[:]))
	}
	return 0, false, nil
}

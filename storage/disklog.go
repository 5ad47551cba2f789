package storage

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DiskConfig configures a partition's disk log. Zero fields take defaults.
type DiskConfig struct {
	FS  vfs.FS
	Dir string // the partition's directory
	// SegmentBytes rolls the active segment when a batch would take it
	// past this size. Default 128 MiB; positions are 32-bit, so at most 4 GiB.
	SegmentBytes int64
	// SegmentAge rolls the active segment once it is this old, so
	// retention by age can delete data. Default 1 hour.
	SegmentAge time.Duration
	// IndexInterval is the distance in bytes between index entries.
	// Default 4 KiB.
	IndexInterval int64
	// Cache, if not nil, serves reads of whole blocks of immutable data.
	Cache *BlockCache
	// Reclaim, if not nil, deletes the segments that retention or Drop
	// remove, in the background and a chunk at a time (see Reclaimer);
	// without it they are unlinked at once.
	Reclaim *Reclaimer
	// Files, shared by every log of a broker, keeps their segment files
	// open within a budget of descriptors (see FileCache). Nil gives the
	// log an unbounded cache of its own.
	Files *FileCache
	// Keys, if not nil, encrypts the log at rest: every batch is written
	// sealed (seal.go) under the keyring's current data key, and read
	// back through the key that sealed it. Nil writes plain batches, and
	// refuses to open a log that holds sealed ones.
	Keys   *crypt.Keyring
	Logger *slog.Logger
}

func (c *DiskConfig) fill() {
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = 128 << 20
	}
	c.SegmentBytes = min(c.SegmentBytes, 1<<32-1)
	if c.SegmentAge <= 0 {
		c.SegmentAge = time.Hour
	}
	if c.IndexInterval <= 0 {
		c.IndexInterval = 4 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Files == nil {
		c.Files = NewFileCache(0)
	}
}

// maxIndexEntries sizes a new segment's index so it never grows while
// readers use it; a segment whose index fills up is rolled early.
func (c *DiskConfig) maxIndexEntries() int {
	return int(c.SegmentBytes/c.IndexInterval) + 1024
}

// DiskLog is a partition's log on disk: a directory of segment files of
// record batches exactly as the shard stamped them, each with a sparse
// index. See segment.go for the layout.
//
// # Locks
//
// Four mutexes of its own, each held briefly except wmu:
//
//   - wmu: one writer at a time (WritePending and Append, Sync, Truncate,
//     Close and Drop, flushSegment). It owns active, group and the
//     segments' pinned, wrd, wwr, tail and idxMax, and is the only lock
//     held across disk I/O.
//   - segMu: orders changes to segs (roll and Truncate, under wmu;
//     Retain, on the shard, without wmu).
//   - sq's lock (StageQueue): the staged batches (Stage on the shard; the
//     writer takes them; Close, Drop and Truncate release them). A leaf.
//   - mu: dirSync, corrupt, the segments' skips and isClosed. It is a leaf
//     (recordCorrupt logs under it).
//
// The order, each taken only while holding those before it or none:
//
//	wmu ─▶ segMu ─▶ mu
//	 │       └────▶ FileCache (segFiles.omu, then FileCache.mu), Reclaimer.mu
//	 ├────▶ sq
//	 ├────▶ mu
//	 ├────▶ FileCache, Reclaimer.mu
//	 ├────▶ the stage's locks (OpenStage, Adopt, DropStage, Drop)
//	 └────▶ other logs' wmu, by TryLock only (see below)
//
// sq and mu are never held together, and nothing takes wmu or segMu
// while holding mu, sq or a FileCache lock. A stage (stage.go) is a
// DiskLog of its own, whose locks come after its parent's wmu: it never
// takes its parent's locks but by the FileCache's TryLock. The FileCache releases its
// lock before it calls a segment's flush (settle), so flushSegment runs
// holding no cache lock; but it may run on another log's writer, which
// holds that log's wmu, or on this log's own writer (from a pin or unpin
// in Sync or writeGroup). It therefore only tries wmu (TryLock) and gives
// up when wmu is taken, so two writers that each make the cache sync the
// other's segment cannot deadlock, and neither can a writer with itself.
// A segment's last release (segment.release: under segMu in Retain, under
// wmu in Drop, or on a reader holding nothing) takes only FileCache.mu and
// Reclaimer.mu.
//
// The atomics need no lock to read. segs is replaced, never modified,
// under segMu; start is stored by Retain under segMu; written, the
// segments' size, next, maxTS, cacheID and index, and failed and failErr
// (fail, failSync) are stored by the writer under wmu; bytes is added to
// under wmu and subtracted from under segMu (Retain, Truncate) or wmu
// (Truncate); visible is stored by the shard (SetVisible); closed by
// Close and Drop after isClosed. Readers take none of the log's locks on
// the way: they use the atomics and the segments' reference counts, and
// mu only to look up and record corruption.
type DiskLog struct {
	cfg DiskConfig
	id  uint64 // distinguishes this log's blocks in the shared cache

	segs    atomic.Pointer[[]*segment] // ordered by base; replaced, never modified
	start   atomic.Int64
	visible atomic.Int64
	written atomic.Int64 // end offset of what was written (Sync makes it durable)
	failed  atomic.Bool
	failErr atomic.Pointer[string] // why failed was set
	bytes   atomic.Int64

	readErrors atomic.Uint64 // reads that failed with an I/O error

	// Write side, owned by the writer (the shard's syncer, or Append).
	active *segment
	group  []wire.Batch
	sealW  *sealer // nil for a plain log

	unseal *opener // reads of an encrypted log; nil for a plain log

	sq StageQueue // the batches staged for WritePending

	segMu  sync.Mutex  // orders changes to segs: roll (writer) and Retain (shard)
	wmu    sync.Mutex  // one writer at a time: WritePending, Sync, sealing, flushSegment
	closed atomic.Bool // closed or dropped: reads fail with ErrClosed

	mu       sync.Mutex // guards dirSync, corrupt, segments' skips, closing
	dirSync  bool       // directory entries changed since the last sync
	corrupt  []Range
	isClosed bool

	// stage is the open stage (OpenStage), guarded by wmu; stageOf, set
	// once at open, is the log a stage belongs to (nil for a log that is
	// not a stage).
	stage   *DiskLog
	stageOf *DiskLog
}

var logIDs atomic.Uint64

// Recovery describes what opening a disk log found.
type Recovery struct {
	Segments  int
	Scanned   int   // segments read through (the rest trusted their index)
	Truncated int64 // bytes of torn tail cut off
	Corrupt   []Range
	Clean     bool // the previous run shut down cleanly
	// Padding counts zero bytes cut after the last whole batch: the direct
	// writer's padding of a segment that was not closed cleanly. They held
	// no data, so every crash cuts some and nothing is worth a warning.
	Padding int64
}

// OpenDiskLog opens (creating if needed) and recovers a partition's log.
// After a clean shutdown it trusts every segment's index; otherwise it
// scans the last segment (and any segment whose index does not match it),
// verifies CRCs, cuts a torn tail at the last whole batch, reports
// corruption in the middle of a log without removing it, and fsyncs every
// segment, so that all it recovered is durable (see recoverSegment); it
// fails if an fsync does.
func OpenDiskLog(cfg DiskConfig) (*DiskLog, Recovery, error) {
	cfg.fill()
	var rec Recovery
	// The partition directory and its topic directory: durable before any
	// data in them is acknowledged.
	if err := MkdirDurable(cfg.FS, cfg.Dir, 2); err != nil {
		return nil, rec, err
	}
	l := &DiskLog{cfg: cfg, id: logIDs.Add(1)}
	if cfg.Keys != nil {
		l.sealW = &sealer{keys: cfg.Keys}
		l.unseal = &opener{keys: cfg.Keys}
	}
	clean := cfg.Dir + "/" + cleanMarker
	if _, err := cfg.FS.Stat(clean); err == nil {
		rec.Clean = true
		if err := cfg.FS.Remove(clean); err != nil {
			return nil, rec, err
		}
	}
	// Every open syncs the directory, not only a clean one (whose marker's
	// removal needs it): a log that failed (a failed fsync of a segment or
	// of the directory) closes without syncing, so the segments it created
	// or deleted may not be durable in the directory. Reopened, the log
	// creates and deletes nothing, so its own Syncs would never sync the
	// directory, and a crash after it acked messages into such a segment
	// lost them (the simulator, sim/, found it).
	if err := cfg.FS.SyncDir(cfg.Dir); err != nil {
		return nil, rec, err
	}
	segs, err := l.openSegments(&rec)
	if err != nil {
		for _, s := range segs {
			s.files.remove()
		}
		return nil, rec, err
	}
	if len(segs) == 0 {
		s, err := l.createSegment(0)
		if err != nil {
			return nil, rec, err
		}
		segs = append(segs, s)
	}
	l.segs.Store(&segs)
	l.active = segs[len(segs)-1]
	if err := l.startDirect(l.active); err != nil {
		for _, s := range segs {
			s.files.remove()
		}
		return nil, rec, err
	}
	l.start.Store(segs[0].base)
	end := l.active.next.Load()
	l.written.Store(end)
	l.visible.Store(end)
	for _, s := range segs {
		l.bytes.Add(s.size.Load())
	}
	l.corrupt = append(l.corrupt, rec.Corrupt...)
	rec.Segments = len(segs)
	return l, rec, nil
}

// openSegments recovers every segment file in order. Each is opened for
// its recovery only, through the file cache, so that opening thousands of
// partitions stays within the descriptor budget.
func (l *DiskLog) openSegments(rec *Recovery) ([]*segment, error) {
	entries, err := l.cfg.FS.ReadDir(l.cfg.Dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if _, ok := parseSegmentName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	segs := make([]*segment, 0, len(names))
	for i, name := range names {
		base, _ := parseSegmentName(name)
		segs = append(segs, l.newSegment(base, l.cfg.Dir+"/"+name, nil, 0, i == len(names)-1))
	}
	for i, s := range segs {
		last := i == len(segs)-1
		if err := l.recoverSegment(s, last, rec); err != nil {
			return segs, fmt.Errorf("storage: recover %s: %w", s.path, err)
		}
		if i > 0 && segs[i-1].next.Load() != s.base {
			rec.Corrupt = append(rec.Corrupt, Range{segs[i-1].next.Load(), s.base})
		}
	}
	return segs, nil
}

// recoverSegment finds where the segment ends (see recoverExtent) and,
// after an unclean shutdown or when it cut the segment, fsyncs it.
//
// The fsync is what lets the log present everything it recovered as
// durable (the shard gives out offsets from the log's end; a Sync reports
// it). An unclean shutdown may have left the segment's pages unwritten:
// the log failed when an fsync failed and closed without syncing, or the
// process died between a write and its fsync, while the kernel's page
// cache (or MemFS) still holds what was written. The reopened log does
// not know the segment is dirty, so no later Sync would cover it, and a
// crash would cut or hole data already reported durable (the simulator,
// sim/, found it). After a clean shutdown, Close synced everything.
func (l *DiskLog) recoverSegment(s *segment, last bool, rec *Recovery) error {
	f, _, err := s.files.acquire(false)
	if err != nil {
		return err
	}
	defer s.files.release()
	cut, err := l.recoverExtent(s, f, last, rec)
	if err != nil {
		return err
	}
	if !rec.Clean || cut {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync after an unclean shutdown: %w", err)
		}
	}
	return nil
}

// recoverExtent finds where the segment ends: it trusts the segment's
// index when it matches (and the segment is not the last one of an
// unclean shutdown), else scans it and cuts a torn tail; it reports
// whether it cut the file.
func (l *DiskLog) recoverExtent(s *segment, f vfs.File, last bool, rec *Recovery) (bool, error) {
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	tighten(l.cfg.FS, s.path, st.Mode(), l.cfg.Logger)
	grow := 0 // a sealed segment's index never grows
	if last {
		grow = l.cfg.maxIndexEntries()
	}
	if !last || rec.Clean {
		if err := s.loadIndex(l.cfg.FS, st.Size(), grow); err == nil {
			next, err := s.lastBatchEnd(f, l.checkKeys)
			if err == nil {
				s.next.Store(next)
				return false, nil
			}
			if isKeyError(err) {
				return false, err
			}
		}
	}
	rec.Scanned++
	s.resetIndex(max(grow, scanIndexEntries(st.Size(), l.cfg.IndexInterval)))
	cut, corrupt, err := scanSegment(s, f, st.Size(), l.cfg.IndexInterval, l.checkKeys)
	rec.Corrupt = append(rec.Corrupt, corrupt...)
	if err != nil {
		return false, err
	}
	truncated := cut < st.Size()
	if truncated {
		zeros, err := allZero(f, cut, st.Size())
		if err != nil {
			return false, err
		}
		if zeros {
			rec.Padding += st.Size() - cut
			l.cfg.Logger.Debug("storage: cut zero padding", "segment", s.path, "at", cut, "bytes", st.Size()-cut)
		} else {
			rec.Truncated += st.Size() - cut
			l.cfg.Logger.Warn("storage: cut torn tail", "segment", s.path, "at", cut, "bytes", st.Size()-cut)
		}
		if err := f.Truncate(cut); err != nil {
			return false, err
		}
	}
	for _, r := range corrupt {
		l.cfg.Logger.Error("storage: corrupt batches kept in place", "segment", s.path, "offsets", r.String())
	}
	if !last {
		// Rebuilt once: without it every later start would scan it again.
		if err := s.writeIndex(l.cfg.FS, false); err != nil {
			l.cfg.Logger.Warn("storage: cannot write a rebuilt index", "segment", s.path, "err", err)
		}
	}
	return truncated, nil
}

// scanIndexEntries sizes the index a scan rebuilds for a segment of size
// bytes: one entry per interval, and a few for the batches that follow
// damage, which are indexed wherever they are.
func scanIndexEntries(size, interval int64) int {
	return int(size/interval) + 64
}

// allZero reports whether f holds only zero bytes in [from, to).
func allZero(f vfs.File, from, to int64) (bool, error) {
	buf := make([]byte, min(to-from, 64<<10))
	for pos := from; pos < to; {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), to-pos)], pos)
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		for _, b := range buf[:n] {
			if b != 0 {
				return false, nil
			}
		}
		if n == 0 {
			return true, nil
		}
		pos += int64(n)
	}
	return true, nil
}

func (l *DiskLog) createSegment(base int64) (*segment, error) {
	path := l.cfg.Dir + "/" + segmentName(base, logSuffix)
	f, err := l.cfg.FS.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.dirSync = true
	l.mu.Unlock()
	return l.newSegment(base, path, f, l.cfg.maxIndexEntries(), true), nil
}

// newSegment returns a segment of this log whose files go through the
// file cache; f, if not nil, is its read handle, already open, and direct
// asks for a direct-I/O handle for appends.
func (l *DiskLog) newSegment(base int64, path string, f vfs.File, maxEntries int, direct bool) *segment {
	s := newSegment(base, path, maxEntries)
	s.files = l.cfg.Files.add(l.cfg.FS, path, f, direct, func() bool { return l.flushSegment(s) })
	return s
}

// Append writes a batch at the end of the active segment at once: Stage
// and WritePending in one call, for callers that write synchronously.
func (l *DiskLog) Append(b *Buf, batch wire.Batch) error {
	if err := l.Stage(b, batch); err != nil {
		return err
	}
	_, err := l.WritePending()
	if err != nil {
		l.Resume()
	}
	return err
}

// Stage queues a batch, whose base offset is stamped and follows the
// staged ones, for WritePending; it retains b. Appending this way keeps
// disk writes off the shard's thread (an event loop, when the shard runs
// inline): the shard's syncer writes. After a failed write, Stage fails
// with that write's error until Resume.
func (l *DiskLog) Stage(b *Buf, batch wire.Batch) error {
	if l.failed.Load() {
		return ErrFailed
	}
	return l.sq.Stage(b, batch)
}

// WritePending writes every staged batch, grouped into one write per
// segment, and returns the end offset written. A failed write (disk full,
// a short write) is cut back off the file; the batches staged with it and
// after it are dropped, and Stage fails until Resume, so the caller can
// fail their publishes and renumber from the returned end. The writer (the
// shard's syncer) is the only caller.
func (l *DiskLog) WritePending() (int64, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	taken := l.sq.Take()
	rest := taken
	var err error
	if l.failed.Load() && len(rest) > 0 {
		// Staged before the log failed: never written, so not stored.
		err = l.failedErr()
	}
	for len(rest) > 0 && err == nil {
		var n int
		n, err = l.writeGroup(rest)
		rest = rest[n:]
	}
	ReleaseStaged(rest)
	l.sq.Done(taken, err)
	return l.written.Load(), err
}

// Resume lets Stage accept batches again after a failed write.
func (l *DiskLog) Resume() { l.sq.Resume() }

// writeGroup writes the longest prefix of rest that fits the active
// segment (rolling first when the segment is full or old) in one write,
// releases those batches, and returns how many it wrote.
func (l *DiskLog) writeGroup(rest []StagedBatch) (int, error) {
	s := l.active
	pos := s.size.Load()
	sealing := l.sealW != nil
	first := int64(storedSize(rest[0].Batch, sealing))
	if pos > 0 && (pos+first > l.cfg.SegmentBytes || time.Since(s.created) > l.cfg.SegmentAge || s.indexFull()) {
		if err := l.roll(); err != nil {
			return 0, err
		}
		s, pos = l.active, 0
	}
	n, size := 0, int64(0)
	group := l.group[:0]
	for _, st := range rest {
		stored := int64(storedSize(st.Batch, sealing))
		if n > 0 && pos+size+stored > l.cfg.SegmentBytes {
			break
		}
		group = append(group, st.Batch)
		size += stored
		n++
	}
	l.group = group
	if err := s.pin(); err != nil {
		return 0, err // nothing was written
	}
	if sealing {
		if err := l.sealW.begin(s); err != nil {
			return 0, err
		}
	}
	if err := s.writeGroup(group, pos, l.sealW); err != nil {
		if terr := s.cut(pos); terr != nil {
			l.fail("a failed write could not be cut off the segment: " + terr.Error())
			l.cfg.Logger.Error("storage: cannot cut a failed write; log read-only until restart", "segment", s.path, "err", terr)
			last := group[len(group)-1]
			return 0, &UncutError{Err: err, End: last.BaseOffset() + int64(last.Count())}
		}
		return 0, err
	}
	for _, b := range group {
		s.addIndex(b.BaseOffset(), pos, b.MaxTimestamp(), l.cfg.IndexInterval)
		s.maxTS.Store(max(s.maxTS.Load(), b.MaxTimestamp()))
		pos += int64(storedSize(b, sealing))
	}
	last := group[len(group)-1]
	end := last.BaseOffset() + int64(last.Count())
	s.size.Store(pos)
	s.next.Store(end)
	l.bytes.Add(size)
	l.written.Store(end)
	ReleaseStaged(rest[:n])
	clear(group)
	return n, nil
}

func (s *segment) indexFull() bool { return int(s.index.Load().n.Load()) >= s.idxMax }

// pin makes sure the writer holds the segment's files open and pinned (see
// FileCache) before it writes: after the first write since a sync it
// costs nothing, and before it one trip to the cache, which opens the
// files only if they were closed while idle. The writer owns s.pinned, wrd
// and wwr; whoever unpins (a sync, sealing, an eviction's flush) holds
// wmu too.
func (s *segment) pin() error {
	if s.pinned {
		return nil
	}
	rd, wr, err := s.files.pin()
	if err != nil {
		return err
	}
	s.wrd, s.wwr, s.pinned = rd, wr, true
	return nil
}

// unpin ends the pin once an fsync covered the writes; the cache may then
// close the files. It returns the files to close (see FileCache.settle).
func (s *segment) unpin() []vfs.File {
	if !s.pinned {
		return nil
	}
	s.wrd, s.wwr, s.pinned = nil, nil, false
	return s.files.unpin()
}

// writeGroup writes batches back to back at pos: in one direct write when
// the segment has a tail writer, else through the buffered handle; sealed
// by seal when it is not nil. The segment is pinned.
func (s *segment) writeGroup(batches []wire.Batch, pos int64, seal *sealer) error {
	if s.tail != nil && s.wwr != nil {
		return s.tail.write(s.wwr, batches, pos, seal)
	}
	if seal != nil {
		b := seal.group(batches)
		n, err := s.wrd.WriteAt(b, pos)
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		return err
	}
	for _, b := range batches {
		n, err := s.wrd.WriteAt(b, pos)
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return err
		}
		pos += int64(n)
	}
	return nil
}

// cut truncates the pinned segment back to pos after a failed write.
func (s *segment) cut(pos int64) error {
	if s.tail != nil {
		s.tail.reset(pos, s.wrd)
	}
	return s.wrd.Truncate(pos)
}

// startDirect sets up the segment's direct-I/O appends: it opens the
// direct handle once to learn whether the file system allows O_DIRECT
// (tmpfs does not), and loads the partial last block into the tail writer,
// which keeps it from then on, so the handle can be closed while idle and
// reopened without rereading it.
func (l *DiskLog) startDirect(s *segment) error {
	rd, wr, err := s.files.acquire(true)
	if err != nil {
		return err
	}
	defer s.files.release()
	if wr == nil {
		return nil
	}
	s.tail, err = newTailWriter(rd, s.size.Load())
	return err
}

// seal makes the segment exactly its batches: it truncates the direct
// writes' zero padding and closes its direct handle. It does not fsync:
// an fsync of a whole segment written with O_DIRECT took about 120 ms on
// ext4 (the extents' conversion), on the writer's path, and cut fsync=never
// publishing by a fifth. The sealed segment stays pinned until the log's
// next Sync covers it (at once under fsync=always, at the next interval)
// or, for a log that never syncs, until the file cache needs its
// descriptor and syncs it itself (flushSegment). The caller holds wmu.
func (l *DiskLog) seal(s *segment) error {
	if err := s.pin(); err != nil {
		return err
	}
	if s.tail != nil {
		if err := s.wrd.Truncate(s.size.Load()); err != nil {
			return err
		}
	}
	s.tail = nil
	s.files.dropWriter()
	return nil
}

// roll seals the active segment (its padding cut, its index written) and
// starts the next.
func (l *DiskLog) roll() error {
	old := l.active
	if err := l.seal(old); err != nil {
		return err
	}
	if err := old.writeIndex(l.cfg.FS, false); err != nil {
		return err
	}
	s, err := l.createSegment(old.next.Load())
	if err != nil {
		return err
	}
	if err := l.startDirect(s); err != nil {
		s.files.remove()
		return err
	}
	l.segMu.Lock()
	segs := append(slices.Clone(*l.segs.Load()), s)
	l.segs.Store(&segs)
	l.segMu.Unlock()
	l.active = s
	return nil
}

// Sync makes every segment written since the last sync durable, and the
// directory when segments were added or removed. It runs between writes
// (both hold wmu): what was written before it started is covered.
func (l *DiskLog) Sync() (int64, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.syncLocked()
}

// syncLocked is Sync; the caller holds wmu.
func (l *DiskLog) syncLocked() (int64, error) {
	if l.failed.Load() {
		// An fsync failed before (maybe the file cache's, on an eviction):
		// Linux reports a writeback error once per descriptor, so syncing
		// again would "succeed" over pages it may have dropped.
		return 0, l.failedErr()
	}
	end := l.written.Load()
	l.mu.Lock()
	closed := l.isClosed
	dir := l.dirSync
	l.dirSync = false
	l.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	var err error
	for _, s := range *l.segs.Load() {
		// The reference keeps the segment's files open while they are
		// synced: retention may drop it meanwhile (it does not take wmu).
		// A dropped segment has nothing left to make durable.
		if err == nil && s.pinned && s.acquire() {
			if err = s.wrd.Sync(); err == nil {
				l.cfg.Files.settle(s.unpin())
			}
			s.release()
		}
	}
	if err == nil && dir {
		err = l.cfg.FS.SyncDir(l.cfg.Dir)
	}
	if err != nil {
		l.failSync(err)
		return 0, err
	}
	return end, nil
}

// failSync fails the log after a failed fsync: whether the data reached
// the disk is unknown, and acking it later would risk losing an
// acknowledged message. The pinned files stay open.
func (l *DiskLog) failSync(err error) {
	l.fail("fsync failed: " + err.Error())
	l.cfg.Logger.Error("storage: fsync failed; log read-only until restart", "dir", l.cfg.Dir, "err", err)
}

// flushSegment syncs a pinned segment on the file cache's behalf, so the
// cache can close its files: the cache is over budget and nothing else is
// idle. It gives up (false) when the writer is busy, since the writer
// will need the files again at once, and when the log has failed. It
// syncs through the pinned read handle, which was open when the writes
// were made.
func (l *DiskLog) flushSegment(s *segment) bool {
	if !l.wmu.TryLock() {
		return false
	}
	defer l.wmu.Unlock()
	if !s.pinned {
		// Pinned by a failed attempt to pin, or unpinned meanwhile.
		closeFiles(s.files.unpin())
		return true
	}
	if l.failed.Load() || l.closed.Load() {
		return false
	}
	if !s.acquire() {
		return true // dropped by retention: its files close with its last reference
	}
	defer s.release()
	if err := s.wrd.Sync(); err != nil {
		l.failSync(err)
		return false
	}
	closeFiles(s.unpin())
	return true
}

// SetVisible publishes end to readers.
func (l *DiskLog) SetVisible(end int64) { l.visible.Store(end) }

// Bounds returns the first offset held and the visible end.
func (l *DiskLog) Bounds() (int64, int64) { return l.start.Load(), l.visible.Load() }

// Failed reports whether the log stopped accepting writes.
func (l *DiskLog) Failed() bool { return l.failed.Load() }

// failedErr is ErrFailed with the reason the log failed.
func (l *DiskLog) failedErr() error {
	if why := l.failErr.Load(); why != nil {
		return fmt.Errorf("%w: %s", ErrFailed, *why)
	}
	return ErrFailed
}

// fail stops the log accepting writes until restart, for why.
func (l *DiskLog) fail(why string) {
	l.failErr.CompareAndSwap(nil, &why)
	l.failed.Store(true)
}

// Stats describes the log.
func (l *DiskLog) Stats() LogStats {
	l.mu.Lock()
	corrupt := slices.Clone(l.corrupt)
	l.mu.Unlock()
	st := LogStats{Start: l.start.Load(), End: l.visible.Load(), Bytes: l.bytes.Load(),
		Segments: len(*l.segs.Load()), Corrupt: corrupt, ReadErrors: l.readErrors.Load()}
	if why := l.failErr.Load(); why != nil {
		st.ReadOnly = *why
	}
	return st
}

// Close writes the active segment's index, syncs everything and leaves the
// clean marker, so the next open trusts the indexes instead of scanning.
// A failed log closes without the marker.
func (l *DiskLog) Close() error {
	serr := l.closeStage() // the stage is left on disk; OpenStage recovers it
	var err error
	if !l.failed.Load() {
		l.wmu.Lock()
		err = l.seal(l.active)
		if err == nil {
			err = l.active.writeIndex(l.cfg.FS, true)
		}
		l.wmu.Unlock()
		if err == nil {
			_, err = l.Sync()
		}
		if err == nil {
			err = WriteFileAtomic(l.cfg.FS, l.cfg.Dir+"/"+cleanMarker, nil, true)
		}
	}
	l.mu.Lock()
	l.isClosed = true
	l.mu.Unlock()
	l.closed.Store(true)
	// A failed log never writes what was staged after it failed.
	l.sq.Drop()
	for _, s := range *l.segs.Load() {
		s.removed.Store(true)
		s.release()
	}
	if err == nil {
		err = serr
	}
	return err
}

// Drop closes the log's files without making anything durable and
// removes its directory.
func (l *DiskLog) Drop() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	var err error
	if st := l.stage; st != nil {
		l.stage = nil
		err = st.Drop()
	}
	l.sq.Drop()
	l.mu.Lock()
	l.isClosed = true
	l.mu.Unlock()
	l.closed.Store(true)
	for _, s := range *l.segs.Load() {
		s.removed.Store(true)
		err = errors.Join(err, l.deleteSegment(s))
		s.release()
	}
	return errors.Join(err, l.cfg.FS.RemoveAll(l.cfg.Dir))
}

// deleteSegment removes a segment's files: the index at once (it is small
// and read only at open), the log through the reclaimer when there is one,
// once the segment's last reader lets go of it (see segment.release).
// Called before the log's own reference is released.
func (l *DiskLog) deleteSegment(s *segment) error {
	var err error
	if rerr := l.cfg.FS.Remove(s.indexPath()); rerr != nil &&
		!errors.Is(rerr, fs.ErrNotExist) {
		err = rerr
	}
	if rc := l.cfg.Reclaim; rc != nil {
		name, terr := rc.Trash(s.path)
		if terr == nil {
			s.files.rename(name)
			from := l.cfg.Dir
			s.onClosed = func() { rc.Reclaim(name, from) }
			return err
		}
		if !errors.Is(terr, fs.ErrNotExist) {
			l.cfg.Logger.Warn("moving a deleted segment to the reclaimer; unlinking it", "path", s.path, "err", terr)
		}
	}
	if rerr := l.cfg.FS.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

// Retain deletes sealed segments whose newest record is older than maxAge,
// and the oldest sealed segments while the log is larger than maxBytes.
func (l *DiskLog) Retain(now time.Time, maxAge time.Duration, maxBytes int64) (int, error) {
	return l.RetainBelow(now, maxAge, maxBytes, math.MaxInt64, nil)
}

// RetainBelow is Retain limited to the segments that end at or below
// offset limit: a replicated partition (cluster/raftlog) deletes only what
// its Raft group has applied. Before anything is deleted, before (if not
// nil) is called with the offset the log will start at; if it fails,
// nothing is.
func (l *DiskLog) RetainBelow(now time.Time, maxAge time.Duration, maxBytes int64, limit int64,
	before func(start int64) error) (int, error) {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	segs := *l.segs.Load()
	total := l.bytes.Load()
	drop := 0
	for i, s := range segs[:len(segs)-1] {
		old := maxAge > 0 && s.maxTS.Load() < now.Add(-maxAge).UnixNano()
		big := maxBytes > 0 && total > maxBytes
		if !old && !big || segs[i+1].base > limit {
			break
		}
		total -= s.size.Load()
		drop++
	}
	if drop == 0 {
		return 0, nil
	}
	if before != nil {
		if err := before(segs[drop].base); err != nil {
			return 0, err
		}
	}
	keep := slices.Clone(segs[drop:])
	l.segs.Store(&keep)
	l.start.Store(keep[0].base)
	var err error
	for _, s := range segs[:drop] {
		l.bytes.Add(-s.size.Load())
		s.removed.Store(true)
		if rerr := l.deleteSegment(s); err == nil {
			err = rerr
		}
		s.release()
	}
	l.mu.Lock()
	l.dirSync = true
	l.mu.Unlock()
	return drop, err
}

// Reset empties the log and starts it again, empty, at offset start,
// durably: a replica that installs a Raft snapshot (cluster/raftlog) takes
// its leader's log start this way, with nothing below it. Every segment
// is deleted, last first, each removal durable before the next, and then
// the new segment is created and the directory synced: a crash in between
// leaves a prefix of the old log or no segment at all, never a log with a
// hole, and the caller, which recorded that it was resetting, resets again
// after a restart. Readers meanwhile find the old segments removed
// (ErrOffsetOutOfRange), then the new, empty log. Called by the log's
// writer only; staged batches are dropped. A failure fails the log.
func (l *DiskLog) Reset(start int64) error {
	if start < 0 {
		return fmt.Errorf("storage: reset at negative offset %d", start)
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.failed.Load() {
		return l.failedErr()
	}
	if l.closed.Load() {
		return ErrClosed
	}
	l.dropStaged()
	l.segMu.Lock()
	old := *l.segs.Load()
	for _, s := range old {
		l.bytes.Add(-s.size.Load())
		s.removed.Store(true)
	}
	l.segMu.Unlock()
	var err error
	for i := len(old) - 1; i >= 0; i-- {
		if err == nil {
			if err = l.deleteSegment(old[i]); err == nil {
				err = l.cfg.FS.SyncDir(l.cfg.Dir)
			}
		}
	}
	var s *segment
	if err == nil {
		s, err = l.createSegment(start)
	}
	if err == nil {
		if err = l.startDirect(s); err != nil {
			s.files.remove()
		}
	}
	if err == nil {
		err = l.cfg.FS.SyncDir(l.cfg.Dir)
	}
	if err != nil {
		for _, o := range old {
			o.release()
		}
		l.fail("reset failed: " + err.Error())
		l.cfg.Logger.Error("storage: reset failed; log read-only until restart", "dir", l.cfg.Dir,
			"offset", start, "err", err)
		return fmt.Errorf("%w: reset at offset %d: %w", ErrFailed, start, err)
	}
	l.segMu.Lock()
	segs := []*segment{s}
	l.segs.Store(&segs)
	l.start.Store(start)
	l.segMu.Unlock()
	l.active = s
	l.written.Store(start)
	l.visible.Store(start)
	l.mu.Lock()
	l.dirSync = false
	l.corrupt = nil
	l.mu.Unlock()
	for _, o := range old {
		o.release()
	}
	return nil
}

// recordCorrupt notes a corrupt batch found by a read, and which check it
// failed.
func (l *DiskLog) recordCorrupt(r Range, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.corrupt, r) {
		l.corrupt = append(l.corrupt, r)
		l.cfg.Logger.Error("storage: corrupt batch found by a read", "dir", l.cfg.Dir, "offsets", r.String(),
			"failed", why)
	}
}

// WriteSideFile replaces name, a small file of the partition's own beside
// its segments (the idempotent producers' snapshot), atomically and
// durably. Segment recovery ignores such files.
func (l *DiskLog) WriteSideFile(name string, data []byte) error {
	return WriteFileAtomic(l.cfg.FS, l.cfg.Dir+"/"+name, data, true)
}

// ReadSideFile reads a file WriteSideFile wrote.
func (l *DiskLog) ReadSideFile(name string) ([]byte, error) {
	return ReadFile(l.cfg.FS, l.cfg.Dir+"/"+name)
}

// checkKeys refuses a valid batch (found by recovery) that this log
// cannot open: a sealed batch in a plain log, or one sealed with a data
// key the log's keyring does not hold. Either means the topic's keys are
// not the ones its data needs, which must stop the open with a clear
// error: taken for damage, the batches would be cut as a torn tail.
func (l *DiskLog) checkKeys(b []byte) error {
	if len(b) < wire.BatchHeaderSize || !isSealed(b) {
		return nil
	}
	if l.unseal == nil {
		return ErrSealedWithoutKeys
	}
	if len(b) < sealedBody {
		return nil // not a whole sealed batch; its checks fail elsewhere
	}
	if _, ok := l.cfg.Keys.Key(sealedKeyID(b)); !ok {
		return fmt.Errorf("%w (key id %d)", ErrUnknownKey, sealedKeyID(b))
	}
	return nil
}

// isKeyError reports whether err is checkKeys'.
func isKeyError(err error) bool {
	return errors.Is(err, ErrSealedWithoutKeys) || errors.Is(err, ErrUnknownKey)
}

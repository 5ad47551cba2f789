package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// On-disk layout of a partition directory; names and formats are part of
// the storage format.
//
//	00000000000000000000.log     record batches, exactly as stamped (sealed in an encrypted log: seal.go), back to back
//	00000000000000000000.index   the segment's sparse index, written when it is sealed
//	00000000000000004096.log     the next segment, named by its base offset
//	clean                        present only after a clean shutdown
//
// Index file (little-endian), one 16-byte entry per indexed batch, then a
// 16-byte trailer:
//
//	+-----------+-----------+----------------+
//	| rel u32   | pos u32   | max ts i64     |   rel = batch base offset - segment base
//	+-----------+-----------+----------------+   pos = byte position of the batch
//	...                                          max ts = largest timestamp up to it
//	+-----------+-----------+----------------+
//	| entries   | crc32c    | segment size   |   trailer: count, CRC of the entries,
//	+-----------+-----------+----------------+   and the .log size it describes
//
// The index serves both offset lookups (rel → pos) and time lookups (the
// first entry whose running max timestamp reaches a time). An index whose
// CRC or size does not match its segment is rebuilt by scanning the segment.
const (
	logSuffix       = ".log"
	indexSuffix     = ".index"
	cleanMarker     = "clean"
	indexEntrySize  = 16
	indexTrailerLen = 16
)

func segmentName(base int64, suffix string) string { return fmt.Sprintf("%020d%s", base, suffix) }

// parseSegmentName returns the base offset of a .log file name.
func parseSegmentName(name string) (int64, bool) {
	s, ok := strings.CutSuffix(name, logSuffix)
	if !ok || len(s) != 20 {
		return 0, false
	}
	base, err := strconv.ParseInt(s, 10, 64)
	return base, err == nil && base >= 0
}

type indexEntry struct {
	rel   uint32
	pos   uint32
	maxTS int64
}

// segment is one .log file. The shard appends to the active segment;
// readers read any segment concurrently: a segment's bytes below size, its
// index entries below nidx, are immutable once published.
type segment struct {
	base    int64
	path    string
	files   *segFiles   // its open files, through the log's FileCache
	tail    *tailWriter // direct-I/O appends of the active segment; nil when sealed or unsupported
	created time.Time

	// The writer's hold on the files while it has writes no fsync has
	// covered (see segment.pin); guarded by the log's wmu.
	pinned   bool
	wrd, wwr vfs.File

	size  atomic.Int64 // bytes of whole batches
	next  atomic.Int64 // offset after the last batch
	maxTS atomic.Int64 // largest record timestamp
	// cacheID names the segment's blocks in the BlockCache: unique to
	// this segment, and replaced when Truncate cuts it, since bytes past
	// the cut may then be written again. Stored after size, loaded before
	// it (see extent).
	cacheID atomic.Uint64
	// The sparse index (see segIndex): an array that grows by doubling
	// up to idxMax as the segment fills, so a new or small segment costs
	// a few entries rather than a full segment's worth (a million idle
	// partitions would otherwise take half a terabyte).
	index   atomic.Pointer[segIndex]
	idxMax  int   // the entries index may reach; writer-owned
	lastIdx int64 // position of the last indexed batch; shard-owned
	refs    atomic.Int32
	removed atomic.Bool
	closed  atomic.Bool
	// skips remembers where reads resume after damaged batches, by the
	// damaged batch's position; guarded by the log's mu.
	skips map[int64]skipTo
	// onClosed, set before the log releases its own reference to a
	// deleted segment, runs once the last reference is gone and the file
	// closed: the reclaimer may then shrink the file.
	onClosed func()
}

// newSegment returns a segment whose index holds maxEntries entries; an
// existing segment passes 0 and gets its index from loadIndex or a scan,
// sized by what the segment holds rather than by the current config.
func newSegment(base int64, path string, maxEntries int) *segment {
	s := &segment{base: base, path: path, created: time.Now()}
	s.cacheID.Store(cacheIDs.Add(1))
	s.resetIndex(maxEntries)
	s.next.Store(base)
	s.lastIdx = -1 << 62
	s.refs.Store(1) // the log's own reference
	return s
}

// cacheIDs numbers the segments' versions for the block cache (see
// segment.cacheID); 0 is never used.
var cacheIDs atomic.Uint64

// extent is what a read may use of a segment: its bytes below size, whose
// blocks the cache holds under id. size and id are consistent: Truncate
// stores the smaller size before the new id, and extent loads the id
// first, so a read that gets the new id also gets the new size (or a
// later, larger one) and never caches a block of the old bytes under it.
// A read that gets the old id reads only bytes below the visible end,
// which no truncation changes.
type extent struct {
	size int64
	id   uint64
}

func (s *segment) extent() extent {
	id := s.cacheID.Load()
	return extent{size: s.size.Load(), id: id}
}

// acquire takes a reader's reference; false when the segment is gone.
func (s *segment) acquire() bool {
	s.refs.Add(1)
	if s.removed.Load() {
		s.release()
		return false
	}
	return true
}

// release drops a reference; the last one closes a removed segment's
// files.
func (s *segment) release() {
	if s.refs.Add(-1) == 0 && s.closed.CompareAndSwap(false, true) {
		s.files.remove()
		if s.onClosed != nil {
			s.onClosed()
		}
	}
}

// segIndex is one version of a segment's sparse index: its first n
// entries. The writer fills the entry at n and then publishes n+1; it
// never writes a version's entries below n, and when the array must grow,
// or Truncate drops entries, it publishes a new version instead. A reader
// loads the version and then its n, so it always sees entries that no one
// writes any more, however the index changes meanwhile.
type segIndex struct {
	entries []indexEntry
	n       atomic.Int32
}

// addIndex records a batch at pos, whose max timestamp is maxTS, if it is
// interval bytes past the last indexed one. A full index records nothing
// more (Append rolls the segment before that happens).
//
// The entry's max timestamp covers every batch up to this one, indexed or
// not (s.maxTS holds the earlier batches'; the callers add this batch's
// after), as the index format says. A time lookup skips what lies before
// the last entry below its time, and a reopened segment takes its maxTS
// from its last entry: entries that counted only the indexed batches made
// a lookup miss a batch between entries whose timestamps had gone back,
// and, after a restart, retention by age delete a segment that held a
// young batch (the contract suite, storage/logtest, found both).
func (s *segment) addIndex(base, pos int64, maxTS int64, interval int64) {
	ix := s.index.Load()
	n := int(ix.n.Load())
	if n > 0 && pos-s.lastIdx < interval || n == s.idxMax {
		return
	}
	maxTS = max(maxTS, s.maxTS.Load())
	if n > 0 {
		maxTS = max(maxTS, ix.entries[n-1].maxTS)
	}
	if n == len(ix.entries) {
		ix = s.publishIndex(ix.entries[:n], min(max(2*n, initialIndexEntries), s.idxMax))
	}
	ix.entries[n] = indexEntry{rel: uint32(base - s.base), pos: uint32(pos), maxTS: maxTS}
	ix.n.Store(int32(n + 1))
	s.lastIdx = pos
}

// publishIndex publishes a new version of the index holding entries, in
// an array of room entries (at least len(entries)).
func (s *segment) publishIndex(entries []indexEntry, room int) *segIndex {
	ix := &segIndex{entries: make([]indexEntry, max(room, len(entries)))}
	copy(ix.entries, entries)
	ix.n.Store(int32(len(entries)))
	s.index.Store(ix)
	return ix
}

// initialIndexEntries is the size of a new index array: 4 KiB of entries
// in a 64 KiB of data, at the default interval.
const initialIndexEntries = 16

// resetIndex empties the index, which may grow to max entries.
func (s *segment) resetIndex(max int) {
	s.publishIndex(nil, min(initialIndexEntries, max))
	s.idxMax = max
}

// cutIndex drops the index entries of batches at or after pos, for
// Truncate, and lets the index grow to max entries again.
func (s *segment) cutIndex(pos int64, max int) {
	entries := s.entries()
	k := 0
	for k < len(entries) && int64(entries[k].pos) < pos {
		k++
	}
	s.publishIndex(entries[:k], min(initialIndexEntries, max))
	s.idxMax = max
	s.lastIdx = -1 << 62
	if k > 0 {
		s.lastIdx = int64(entries[k-1].pos)
	}
}

// entries returns the published index entries.
func (s *segment) entries() []indexEntry {
	ix := s.index.Load()
	return ix.entries[:ix.n.Load()]
}

// lookup returns the position and base offset of the last indexed batch at
// or before offset.
func (s *segment) lookup(offset int64) (int64, int64) {
	entries := s.entries()
	lo, hi := 0, len(entries)
	for lo < hi {
		m := (lo + hi) / 2
		if s.base+int64(entries[m].rel) <= offset {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return 0, s.base
	}
	return int64(entries[lo-1].pos), s.base + int64(entries[lo-1].rel)
}

// lookupTime returns the position of the last indexed batch before the
// first index entry whose running max timestamp reaches ts.
func (s *segment) lookupTime(ts int64) int64 {
	entries := s.entries()
	for i, e := range entries {
		if e.maxTS >= ts {
			if i == 0 {
				return 0
			}
			return int64(entries[i-1].pos)
		}
	}
	if len(entries) == 0 {
		return 0
	}
	return int64(entries[len(entries)-1].pos)
}

// writeIndex writes the segment's index file (see the format above).
func (s *segment) writeIndex(fsys vfs.FS, sync bool) error {
	entries := s.entries()
	buf := make([]byte, 0, len(entries)*indexEntrySize+indexTrailerLen)
	for _, e := range entries {
		buf = binary.LittleEndian.AppendUint32(buf, e.rel)
		buf = binary.LittleEndian.AppendUint32(buf, e.pos)
		buf = binary.LittleEndian.AppendUint64(buf, uint64(e.maxTS))
	}
	crc := crc32.Checksum(buf, castagnoli)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(entries)))
	buf = binary.LittleEndian.AppendUint32(buf, crc)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(s.size.Load()))
	return WriteFileAtomic(fsys, s.indexPath(), buf, sync)
}

// indexPath is the name of the segment's index file.
func (s *segment) indexPath() string { return strings.TrimSuffix(s.path, logSuffix) + indexSuffix }

var errBadIndex = errors.New("storage: index does not match its segment")

// loadIndex reads a segment's index file and checks it against the
// segment's size; errBadIndex (or a not-exist error) means rebuild. The
// index is judged against its own segment, not the current config: a
// segment written under a larger --segment-bytes has more entries than the
// config would give a new one, and is still trusted. The index gets room
// for at least minEntries (the active segment keeps growing), else exactly
// what the file holds.
func (s *segment) loadIndex(fsys vfs.FS, fileSize int64, minEntries int) error {
	b, err := ReadFile(fsys, s.indexPath())
	if err != nil {
		return err
	}
	if len(b) < indexTrailerLen || (len(b)-indexTrailerLen)%indexEntrySize != 0 {
		return errBadIndex
	}
	body, tr := b[:len(b)-indexTrailerLen], b[len(b)-indexTrailerLen:]
	n := int(binary.LittleEndian.Uint32(tr))
	if n*indexEntrySize != len(body) || n > math.MaxInt32 ||
		binary.LittleEndian.Uint32(tr[4:]) != crc32.Checksum(body, castagnoli) ||
		int64(binary.LittleEndian.Uint64(tr[8:])) != fileSize {
		return errBadIndex
	}
	arr := make([]indexEntry, n) // an active segment's grows from here as it fills
	for i := range n {
		e := body[i*indexEntrySize:]
		arr[i] = indexEntry{rel: binary.LittleEndian.Uint32(e), pos: binary.LittleEndian.Uint32(e[4:]),
			maxTS: int64(binary.LittleEndian.Uint64(e[8:]))}
	}
	ix := &segIndex{entries: arr}
	ix.n.Store(int32(n))
	s.index.Store(ix)
	s.idxMax = max(n, minEntries)
	if n > 0 {
		s.lastIdx = int64(arr[n-1].pos)
		s.maxTS.Store(arr[n-1].maxTS)
	}
	s.size.Store(fileSize)
	return nil
}

// lastBatchEnd reads the batch at the last index entry and walks to the
// end of the segment, to learn the next offset without scanning it all.
// check vets the keys of the batches it walks (DiskLog.checkKeys).
func (s *segment) lastBatchEnd(f vfs.File, check func([]byte) error) (int64, error) {
	pos := int64(0)
	if entries := s.entries(); len(entries) > 0 {
		pos = int64(entries[len(entries)-1].pos)
	}
	next := s.base
	var buf [sealedBody]byte
	for pos < s.size.Load() {
		hdr := buf[:min(sealedBody, s.size.Load()-pos)]
		if len(hdr) < wire.BatchHeaderSize {
			return 0, io.ErrUnexpectedEOF
		}
		if _, err := f.ReadAt(hdr, pos); err != nil {
			return 0, err
		}
		if err := check(hdr); err != nil {
			return 0, err
		}
		b := wire.Batch(hdr)
		next = b.BaseOffset() + int64(b.Count())
		pos += int64(wire.BatchSize(hdr))
		s.maxTS.Store(max(s.maxTS.Load(), b.MaxTimestamp()))
	}
	return next, nil
}

// Permissions of everything the broker creates under its data directory:
// messages, offsets and the admin token are nobody else's to read.
const (
	filePerm fs.FileMode = 0o600
	dirPerm  fs.FileMode = 0o700
)

// tighten clears the group and other permission bits of name, whose
// current mode is mode, if it has any: a data directory from an older
// version has 0644 files and 0755 directories. It is best effort, and
// says so in the log when it fails: a data directory that is a mount
// point may belong to another user, and refusing to start over it would
// be worse than leaving it as the operator made it.
func tighten(fsys vfs.FS, name string, mode fs.FileMode, log *slog.Logger) {
	if mode.Perm()&0o077 == 0 {
		return
	}
	if err := fsys.Chmod(name, mode.Perm()&0o700); err != nil {
		if log == nil {
			log = slog.Default()
		}
		log.Warn("storage: cannot restrict permissions to the owner", "path", name, "mode", mode.Perm().String(), "err", err)
	}
}

// WriteFileAtomic replaces name with data: write a temporary file, sync it
// when asked, rename it over name, and sync the directory. The file is
// readable by the owner only, whatever the file it replaces was.
func WriteFileAtomic(fsys vfs.FS, name string, data []byte, sync bool) error {
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, name)
	}
	if err == nil && sync {
		err = fsys.SyncDir(dirOf(name))
	}
	if err != nil {
		_ = fsys.Remove(tmp)
	}
	return err
}

// ReadFile reads a whole file of the broker's (an index, topics.json,
// groups.json, the admin token) and, since they are the broker's alone,
// restricts the file to its owner if it is looser (see tighten).
func ReadFile(fsys vfs.FS, name string) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	tighten(fsys, name, st.Mode(), nil)
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

func dirOf(name string) string {
	switch i := strings.LastIndexByte(name, '/'); {
	case i > 0:
		return name[:i]
	case i == 0:
		return "/"
	}
	return "."
}

// MkdirDurable creates dir and its parents, and syncs dir and the
// directories above it up to depth levels, so that the new entries survive
// a crash (a directory entry is durable only once its parent is synced).
// dir and the depth-1 directories above it, the ones it makes durable, are
// restricted to the owner (see tighten).
func MkdirDurable(fsys vfs.FS, dir string, depth int) error {
	if err := fsys.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	for d := dir; depth > 0; depth-- {
		if st, err := fsys.Stat(d); err == nil {
			tighten(fsys, d, st.Mode(), nil)
		}
		parent := dirOf(d)
		if err := fsys.SyncDir(parent); err != nil {
			return err
		}
		if parent == d || parent == "." || parent == "/" {
			break
		}
		d = parent
	}
	return nil
}

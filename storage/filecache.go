package storage

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// FileCache keeps the segment files of every log of a broker open within a
// budget of descriptors, as pebble's table cache does for its tables. A
// partition costs no descriptor while no one reads or writes it: a
// segment's files are opened on first use, and once they are idle the
// least recently used are closed whenever the cache holds more than its
// capacity; the next use opens them again.
//
// Descriptors are the resource an anonymous client can exhaust: before the
// cache every segment of every partition held one open (and the active
// segment a second, for direct I/O), so creating enough partitions made
// accept(2) fail with EMFILE and killed the listener.
//
// The budget is kept without ever blocking or failing a read or a write:
// files in use, and files holding unsynced writes, are not closed, so the
// cache may exceed its capacity for as long as they are; it closes idle
// files again as soon as the excess is idle. Rules that hold throughout:
//
//   - A file in use (between acquire and release) is never closed under
//     its user.
//   - A file that has written data no fsync has covered yet is never
//     closed as it is: after a failed writeback Linux may report the error
//     only to the descriptors open at the time (the PostgreSQL fsyncgate
//     lesson), so a log must fsync through a descriptor that was open when
//     it wrote. The writer pins a segment's files when it writes and the
//     log's next Sync unpins them. A log that is synced late or never
//     (fsync=interval, fsync=never) keeps its active segment pinned until
//     then; when the cache is over budget and only such files are left to
//     close, it syncs the least recently used one through its own
//     descriptor, on its log's behalf and only when its writer is not
//     busy, and closes it afterwards (a failed sync fails the log, as a
//     failed Sync does). A segment sealed while pinned stays pinned, and
//     keeps its direct handle open, until the same happens to it.
//   - A deleted segment's files are closed when its last reader lets go,
//     and never reopened.
//   - A file that cannot be opened (EMFILE, ENOENT, EACCES) fails the read
//     or write that wanted it, with that error.
//
// Closing runs on whichever goroutine made the cache go over budget or
// let a file go idle while it was: a reader, or a shard's syncer after a
// write or a sync. No event loop and no shard pass opens or closes a
// segment file on the publish path; retention, on a shard's tick, closes
// the files of the segments it deletes, as it always has. The writer's
// cost is one trip through the cache's lock to pin the active segment's
// files for the first write after a sync, and one to unpin them after the
// sync: nothing per batch, and an open only when the files were closed
// while idle.
type FileCache struct {
	capacity int // descriptors; 0 means unbounded

	mu    sync.Mutex
	open  int       // descriptors open
	idle  filesList // open, unused, nothing unsynced: closed oldest first
	dirty filesList // open, unused, pinned: synced before they are closed

	// over is open > capacity, so that settle costs one atomic load while
	// the cache is within its budget.
	over atomic.Bool

	opens, evictions, evictionSyncs atomic.Uint64
}

// NewFileCache returns a cache that keeps at most about capacity segment
// files open; 0 or less means no bound (a log opened without a cache gets
// one of its own).
func NewFileCache(capacity int) *FileCache {
	return &FileCache{capacity: max(capacity, 0)}
}

// FileCacheStats describes a FileCache for metrics.
type FileCacheStats struct {
	Capacity int // 0: unbounded
	Open     int // segment files open now
	// Opens counts files opened, Evictions files closed to keep the
	// budget, EvictionSyncs fsyncs the cache ran so that it could close a
	// file holding unsynced writes.
	Opens, Evictions, EvictionSyncs uint64
}

// Stats reports the cache's state.
func (c *FileCache) Stats() FileCacheStats {
	c.mu.Lock()
	open := c.open
	c.mu.Unlock()
	return FileCacheStats{Capacity: c.capacity, Open: open, Opens: c.opens.Load(),
		Evictions: c.evictions.Load(), EvictionSyncs: c.evictionSyncs.Load()}
}

// segFiles are one segment's files in a FileCache: rd, read-write and
// buffered, serves reads, syncs and truncation; wr, write-only with
// O_DIRECT, the active segment's appends. Either is opened on first use.
type segFiles struct {
	c  *FileCache
	fs vfs.FS
	// flush syncs the segment's unsynced writes so the cache can close
	// its files; false when it could not (the writer was busy, the sync
	// failed).
	flush func() bool
	omu   sync.Mutex // one opener at a time; taken before c.mu

	// Guarded by c.mu.
	path       string // the trash name once the segment is deleted
	direct     bool   // wr is wanted: the active segment, where O_DIRECT works
	rd, wr     vfs.File
	users      int
	pinned     bool // holds writes no fsync has covered
	removed    bool // the segment is gone: closed at the last release, never reopened
	list       *filesList
	prev, next *segFiles
}

// add registers a segment's files; rd, if not nil, is already open. direct
// asks for a direct handle for writes (the active segment); flush is
// segFiles.flush.
func (c *FileCache) add(fsys vfs.FS, path string, rd vfs.File, direct bool, flush func() bool) *segFiles {
	h := &segFiles{c: c, fs: fsys, path: path, rd: rd, direct: direct, flush: flush}
	if rd == nil {
		return h
	}
	c.mu.Lock()
	c.addOpen(1)
	c.idle.pushBack(h)
	victims := c.evictLocked()
	c.mu.Unlock()
	c.settle(victims)
	return h
}

// acquire returns the segment's read handle, and with write its direct
// handle too (nil when the segment has none), opening what is closed. The
// files stay open until release.
func (h *segFiles) acquire(write bool) (vfs.File, vfs.File, error) {
	rd, wr, victims, err := h.get(write, false)
	h.c.settle(victims)
	return rd, wr, err
}

// release ends a use that acquire began.
func (h *segFiles) release() { h.c.settle(h.put()) }

// pin returns the files a write needs, pinned (see FileCache): they stay
// open until unpin, without a use to release. Files already open cost one
// trip through the cache's lock.
func (h *segFiles) pin() (vfs.File, vfs.File, error) {
	c := h.c
	c.mu.Lock()
	if !h.removed && h.rd != nil && (!h.direct || h.wr != nil) {
		h.pinned = true
		if h.list == &c.idle {
			c.unlink(h)
			c.dirty.pushBack(h)
		}
		rd, wr := h.rd, h.wr
		c.mu.Unlock()
		return rd, wr, nil
	}
	c.mu.Unlock()
	rd, wr, victims, err := h.get(true, true)
	if err == nil {
		victims = append(victims, h.put()...)
	}
	c.settle(victims)
	return rd, wr, err
}

// get is acquire, leaving the files it had to close to the caller; with
// pin it pins them once they are open.
func (h *segFiles) get(write, pin bool) (vfs.File, vfs.File, []vfs.File, error) {
	c := h.c
	c.mu.Lock()
	if h.removed {
		c.mu.Unlock()
		return nil, nil, nil, ErrClosed
	}
	h.users++
	c.unlink(h)
	if h.rd != nil && (!write || !h.direct || h.wr != nil) {
		rd, wr := h.rd, h.wr
		h.pinned = h.pinned || pin
		c.mu.Unlock()
		return rd, wr, nil, nil
	}
	c.mu.Unlock()
	rd, wr, victims, err := h.load(write, pin)
	if err != nil {
		victims = append(victims, h.put()...)
		return nil, nil, victims, err
	}
	return rd, wr, victims, nil
}

// put ends a use; it returns the files to close.
func (h *segFiles) put() []vfs.File {
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	h.users--
	if h.users > 0 {
		return nil
	}
	if h.removed {
		return c.take(h)
	}
	c.park(h)
	return c.evictLocked()
}

// load opens the files a use needs. The opens run outside the cache's
// lock, so a slow open holds up no other segment.
func (h *segFiles) load(write, pin bool) (vfs.File, vfs.File, []vfs.File, error) {
	c := h.c
	h.omu.Lock()
	defer h.omu.Unlock()
	for {
		c.mu.Lock()
		path, needRd, needWr := h.path, h.rd == nil, write && h.direct && h.wr == nil
		c.mu.Unlock()
		rd, wr, noDirect, err := openFiles(h.fs, path, needRd, needWr)
		c.mu.Lock()
		for _, f := range []vfs.File{rd, wr} {
			if f != nil {
				c.addOpen(1)
			}
		}
		if rd != nil {
			h.rd = rd
		}
		if wr != nil {
			h.wr = wr
		}
		if noDirect {
			h.direct = false
		}
		if err != nil && h.path != path {
			// Moved to the trash meanwhile: open the rest there.
			c.mu.Unlock()
			continue
		}
		if err == nil && pin {
			h.pinned = true
		}
		rd, wr = h.rd, h.wr
		victims := c.evictLocked()
		c.mu.Unlock()
		return rd, wr, victims, err
	}
}

// openFiles opens a segment's read handle and its direct handle, as
// asked; noDirect reports a file system that refuses O_DIRECT (tmpfs).
func openFiles(fsys vfs.FS, path string, rd, wr bool) (vfs.File, vfs.File, bool, error) {
	var r, w vfs.File
	var err error
	if rd {
		if r, err = fsys.OpenFile(path, os.O_RDWR, 0); err != nil {
			return nil, nil, false, err
		}
	}
	if wr {
		w, err = fsys.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0)
		if errors.Is(err, syscall.EINVAL) {
			return r, nil, true, nil
		}
	}
	return r, w, false, err
}

// unpin ends a pin once an fsync covered the writes: the files become
// closable. It returns the files to close (see settle).
func (h *segFiles) unpin() []vfs.File {
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	h.pinned = false
	var done []vfs.File
	if !h.direct && h.wr != nil { // sealed while pinned: its direct handle may go now
		done = append(done, h.wr)
		h.wr = nil
		c.addOpen(-1)
	}
	if h.list != &c.dirty {
		return done
	}
	c.unlink(h)
	c.park(h)
	return append(done, c.evictLocked()...)
}

// dropWriter gives up the direct handle: the segment is sealed, or the
// log closes. A pinned segment keeps it open until an fsync covers what
// it wrote (unpin), like its other handle.
func (h *segFiles) dropWriter() {
	c := h.c
	c.mu.Lock()
	h.direct = false
	var f vfs.File
	if !h.pinned {
		f, h.wr = h.wr, nil
		if f != nil {
			c.addOpen(-1)
		}
	}
	c.mu.Unlock()
	closeFiles([]vfs.File{f})
}

// wantWriter asks for a direct handle again: a sealed segment is active
// once more (Truncate). The next pin opens it, or learns that the file
// system refuses O_DIRECT.
func (h *segFiles) wantWriter() {
	h.c.mu.Lock()
	h.direct = true
	h.c.mu.Unlock()
}

// rename records that the segment's file moved (to the reclaimer's
// trash), so a reader still holding the segment can reopen it there.
func (h *segFiles) rename(path string) {
	h.c.mu.Lock()
	h.path = path
	h.c.mu.Unlock()
}

// remove closes the files for good: the segment's last reference is gone.
func (h *segFiles) remove() {
	c := h.c
	c.mu.Lock()
	h.removed = true
	var victims []vfs.File
	if h.users == 0 {
		victims = c.take(h)
	}
	c.mu.Unlock()
	closeFiles(victims)
}

// park puts an unused, open entry on its list, most recently used last.
func (c *FileCache) park(h *segFiles) {
	switch {
	case h.rd == nil && h.wr == nil:
	case h.pinned:
		c.dirty.pushBack(h)
	default:
		c.idle.pushBack(h)
	}
}

// take detaches an entry's files for closing.
func (c *FileCache) take(h *segFiles) []vfs.File {
	c.unlink(h)
	var out []vfs.File
	for _, f := range []vfs.File{h.rd, h.wr} {
		if f != nil {
			out = append(out, f)
			c.addOpen(-1)
		}
	}
	h.rd, h.wr = nil, nil
	return out
}

// addOpen counts n descriptors opened (closed, when negative).
func (c *FileCache) addOpen(n int) {
	c.open += n
	if n > 0 {
		c.opens.Add(uint64(n))
	}
	c.over.Store(c.capacity > 0 && c.open > c.capacity)
}

// evictLocked detaches the least recently used idle files while the cache
// is over budget, and returns them for closing outside the lock.
func (c *FileCache) evictLocked() []vfs.File {
	var victims []vfs.File
	for c.capacity > 0 && c.open > c.capacity && c.idle.head != nil {
		victims = append(victims, c.take(c.idle.head)...)
	}
	c.evictions.Add(uint64(len(victims)))
	return victims
}

// settleRounds bounds the syncs one call of settle runs, so that no
// reader or writer pays for more than a few of them.
const settleRounds = 4

// settle closes victims, then, while the cache is over budget and only
// pinned files are left to close, has the least recently used pinned
// segment synced so that it can close it.
func (c *FileCache) settle(victims []vfs.File) {
	closeFiles(victims)
	for range settleRounds {
		if !c.over.Load() {
			return
		}
		c.mu.Lock()
		h := c.dirty.head
		if h == nil || c.capacity == 0 || c.open <= c.capacity || c.idle.head != nil {
			c.mu.Unlock()
			return
		}
		c.unlink(h) // to the back: a segment that cannot be synced now is not tried again at once
		c.dirty.pushBack(h)
		flush := h.flush
		c.mu.Unlock()
		if flush == nil || !flush() {
			return
		}
		c.evictionSyncs.Add(1)
		c.mu.Lock()
		victims = c.evictLocked()
		c.mu.Unlock()
		closeFiles(victims)
	}
}

func (c *FileCache) unlink(h *segFiles) {
	if h.list != nil {
		h.list.remove(h)
	}
}

func closeFiles(files []vfs.File) {
	for _, f := range files {
		if f != nil {
			_ = f.Close()
		}
	}
}

// filesList is an intrusive doubly linked list of entries, oldest first.
type filesList struct{ head, tail *segFiles }

func (l *filesList) pushBack(h *segFiles) {
	h.list, h.prev, h.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = h
	} else {
		l.head = h
	}
	l.tail = h
}

func (l *filesList) remove(h *segFiles) {
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		l.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		l.tail = h.prev
	}
	h.list, h.prev, h.next = nil, nil, nil
}

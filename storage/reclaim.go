package storage

import (
	"errors"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	pathpkg "path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// Reclaimer deletes files in the background, a few megabytes at a time.
//
// Freeing a large file at once is a burst of work for the file system:
// ext4 frees every extent in one journal transaction, and on a file system
// mounted with online discard it also trims every freed block before that
// transaction commits. Every fsync anywhere on the file system waits for
// that commit. Measured on the development VM (ext4, discard): unlinking a
// 4 GiB file held another file's fsync for 50 ms, and deleting a topic of
// 6 GB took the fsync=always p99 of another topic from 1.9 ms to 37 ms for
// five seconds. Truncating the file by reclaimChunk at a time, with an
// fsync after each step, spreads the work over many small commits: the
// other file's fsync stayed under 2.2 ms (p99 1.1 ms) throughout.
// RocksDB's SstFileManager deletes files the same way, for the same reason.
//
// A file to delete is first renamed into the reclaimer's directory
// (Trash), which is instant and leaves open descriptors working: a reader
// of a segment that retention deleted keeps reading it. Its owner calls
// Reclaim once nothing has the file open any more; only then is it
// truncated, and only once the directory it left and the reclaimer's own
// are synced, so that no crash can bring the old name back over the
// shrunk file. Whatever is left in the directory at start (a crash, a
// shutdown mid-way) is unlinked then, without shrinking: after a crash it
// cannot be known that its old name is gone for good (under the strict
// crash model of package vfs, a rename synced in one directory only may
// leave the file under both names, and recovery may be using the other).
type Reclaimer struct {
	fs    vfs.FS
	dir   string
	chunk int64
	pause time.Duration
	log   *slog.Logger
	seq   atomic.Uint64

	mu    sync.Mutex
	queue []reclaimItem // guarded by mu
	busy  bool          // an item is being reclaimed; guarded by mu
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	freed atomic.Int64 // bytes reclaimed so far
}

type reclaimItem struct {
	path   string // in the reclaimer's directory
	from   string // the directory it was renamed out of, or ""
	shrink bool   // a chunk at a time; false for what was found at start
}

// Reclaimer tuning: at most reclaimChunk bytes freed per journal commit,
// with reclaimPause between steps, so a few hundred megabytes a second.
const (
	reclaimChunk = 4 << 20
	reclaimPause = 5 * time.Millisecond
)

// NewReclaimer starts a reclaimer that keeps what it is to delete in dir
// (created if missing), and reclaims whatever dir already holds.
func NewReclaimer(fsys vfs.FS, dir string, logger *slog.Logger) (*Reclaimer, error) {
	return newReclaimer(fsys, dir, logger, reclaimChunk, reclaimPause)
}

func newReclaimer(fsys vfs.FS, dir string, logger *slog.Logger, chunk int64, pause time.Duration) (*Reclaimer, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := MkdirDurable(fsys, dir, 1); err != nil {
		return nil, err
	}
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	r := &Reclaimer{fs: fsys, dir: dir, chunk: chunk, pause: pause, log: logger,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	for _, e := range entries {
		r.queue = append(r.queue, reclaimItem{path: dir + "/" + e.Name()})
	}
	go r.run()
	return r, nil
}

// Trash renames path (a file or a directory tree) into the reclaimer's
// directory and returns its new name, which the caller passes to Reclaim
// once nothing has it open. A path that does not exist is an error
// matching fs.ErrNotExist. The name is unique (a clock, a counter and a
// random part), since a rename replaces what it lands on.
func (r *Reclaimer) Trash(path string) (string, error) {
	name := r.dir + "/" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" +
		strconv.FormatUint(r.seq.Add(1), 10) + "-" + strconv.FormatUint(rand.Uint64(), 36) + "-" + pathpkg.Base(path)
	if err := r.fs.Rename(path, name); err != nil {
		return "", err
	}
	return name, nil
}

// Reclaim deletes trashed, a name Trash returned, in the background. from
// is the directory it was renamed out of: its removal from there is made
// durable before its data goes, so a crash cannot bring back the name
// with a truncated file behind it.
func (r *Reclaimer) Reclaim(trashed, from string) {
	r.mu.Lock()
	r.queue = append(r.queue, reclaimItem{path: trashed, from: from, shrink: true})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Remove is Trash and Reclaim at once, for a file or tree nothing has
// open. A path that does not exist is not an error, as with os.RemoveAll.
// If it cannot be moved (a full disk may refuse the trash a new entry), it
// is removed at once instead.
func (r *Reclaimer) Remove(path string) error {
	name, err := r.Trash(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		r.log.Warn("moving to the reclaimer failed; removing at once", "path", path, "err", err)
		return r.fs.RemoveAll(path)
	}
	r.Reclaim(name, dirOf(path))
	return nil
}

// Freed reports the bytes reclaimed so far.
func (r *Reclaimer) Freed() int64 { return r.freed.Load() }

// Idle reports whether nothing is queued or being reclaimed.
func (r *Reclaimer) Idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue) == 0 && !r.busy
}

// Close stops the reclaimer after its current step; what is left stays in
// its directory for the next start.
func (r *Reclaimer) Close() {
	r.once.Do(func() { close(r.stop) })
	<-r.done
}

func (r *Reclaimer) run() {
	defer close(r.done)
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.busy = false
			r.mu.Unlock()
			select {
			case <-r.wake:
				continue
			case <-r.stop:
				return
			}
		}
		it := r.queue[0]
		r.queue[0] = reclaimItem{}
		r.queue = r.queue[1:]
		r.busy = true
		r.mu.Unlock()
		shrink := it.shrink
		if it.from != "" {
			// A directory that is gone went with its topic, whose removal
			// from the topics file came first: nothing will read the name
			// again even if a crash brings it back.
			if err := r.fs.SyncDir(it.from); err != nil && !errors.Is(err, fs.ErrNotExist) {
				r.log.Warn("reclaiming disk space: unlinking without shrinking", "path", it.path, "err", err)
				shrink = false
			}
		}
		if err := r.fs.SyncDir(r.dir); err != nil {
			r.log.Warn("reclaiming disk space: unlinking without shrinking", "path", it.path, "err", err)
			shrink = false
		}
		if !r.removeTree(it.path, shrink) {
			return
		}
	}
}

// removeTree deletes path and, for a directory, everything under it,
// shrinking large files first if shrink. It returns false when the
// reclaimer is stopping.
func (r *Reclaimer) removeTree(path string, shrink bool) bool {
	st, err := r.fs.Stat(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("reclaiming disk space", "path", path, "err", err)
		}
		return true
	}
	if st.IsDir() {
		entries, err := r.fs.ReadDir(path)
		if err != nil {
			r.log.Warn("reclaiming disk space", "path", path, "err", err)
			return true
		}
		for _, e := range entries {
			if !r.removeTree(path+"/"+e.Name(), shrink) {
				return false
			}
		}
	}
	left := int64(0)
	if !st.IsDir() {
		left = st.Size()
		if shrink {
			var ok bool
			if left, ok = r.shrink(path, left); !ok {
				return false
			}
		}
	}
	if err := r.fs.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn("reclaiming disk space", "path", path, "err", err)
		return true
	}
	r.freed.Add(left)
	return true
}

// shrink truncates a file of size bytes a chunk per step, with an fsync
// after each, down to at most one chunk, which the unlink frees. It
// returns what is left and false when the reclaimer is stopping; on an
// error it leaves the rest to the unlink.
func (r *Reclaimer) shrink(path string, size int64) (int64, bool) {
	if size <= r.chunk {
		return size, true
	}
	f, err := r.fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		r.log.Warn("reclaiming disk space", "path", path, "err", err)
		return size, true
	}
	defer func() { _ = f.Close() }()
	t := time.NewTimer(r.pause)
	defer t.Stop()
	for size > r.chunk {
		select {
		case <-r.stop:
			return size, false
		case <-t.C:
		}
		next := size - r.chunk
		if err := f.Truncate(next); err != nil {
			r.log.Warn("reclaiming disk space", "path", path, "err", err)
			return size, true
		}
		if err := f.Sync(); err != nil {
			r.log.Warn("reclaiming disk space", "path", path, "err", err)
			return next, true
		}
		r.freed.Add(size - next)
		size = next
		t.Reset(r.pause)
	}
	return size, true
}

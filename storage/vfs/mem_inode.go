package vfs

import (
	"io/fs"
	"maps"
	"slices"
	"time"
)

// inode is a file or directory of a MemFS, in its current and durable
// states. All fields are guarded by the owning MemFS's mutex.
type inode struct {
	mode  fs.FileMode // fs.ModeDir set for directories
	mtime time.Time

	// Files. Invariant: clean <= len(data), clean <= len(synced), and
	// data[:clean] equals synced[:clean], so Sync only copies data[clean:].
	data   []byte
	synced []byte
	clean  int
	syncs  uint64 // Syncs so far, for MemFS.UnsyncedCloses

	// Directories: the current and the durable entries.
	kids       map[string]*inode
	syncedKids map[string]*inode
}

func newFile(perm fs.FileMode) *inode {
	return &inode{mode: perm & fs.ModePerm, mtime: time.Now()}
}

func newDir(perm fs.FileMode) *inode {
	return &inode{
		mode:       fs.ModeDir | perm&fs.ModePerm,
		mtime:      time.Now(),
		kids:       map[string]*inode{},
		syncedKids: map[string]*inode{},
	}
}

func (n *inode) isDir() bool { return n.mode.IsDir() }

func (n *inode) size() int64 { return int64(len(n.data)) }

// dirty records that the bytes from off on may differ from the synced copy.
func (n *inode) dirty(off int) {
	n.clean = min(n.clean, off, len(n.data))
	n.mtime = time.Now()
}

// resize sets the file's length, zero-filling any growth.
func (n *inode) resize(size int) {
	old := len(n.data)
	n.dirty(size)
	if size <= old {
		n.data = n.data[:size]
		return
	}
	n.data = slices.Grow(n.data, size-old)[:size]
	clear(n.data[old:])
}

// writeAt writes p at off, zero-filling any gap past the end.
func (n *inode) writeAt(p []byte, off int64) {
	end := int(off) + len(p)
	if end > len(n.data) {
		n.resize(end)
	}
	n.dirty(int(off))
	copy(n.data[off:], p)
}

// sync makes the current contents durable.
func (n *inode) sync() {
	n.synced = append(n.synced[:n.clean], n.data[n.clean:]...)
	n.clean = len(n.data)
	n.syncs++
}

// syncDir makes the current entries durable.
func (n *inode) syncDir() {
	n.syncedKids = maps.Clone(n.kids)
}

// setKid adds, replaces or (with nil) removes an entry.
func (n *inode) setKid(name string, kid *inode) {
	if kid == nil {
		delete(n.kids, name)
	} else {
		n.kids[name] = kid
	}
	n.mtime = time.Now()
}

// info describes n under the base name name.
func (n *inode) info(name string) fs.FileInfo {
	return &memInfo{name: name, size: n.size(), mode: n.mode, mtime: n.mtime}
}

// memInfo is a snapshot of an inode's metadata.
type memInfo struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

func (i *memInfo) Name() string       { return i.name }
func (i *memInfo) Size() int64        { return i.size }
func (i *memInfo) Mode() fs.FileMode  { return i.mode }
func (i *memInfo) ModTime() time.Time { return i.mtime }
func (i *memInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *memInfo) Sys() any           { return nil }

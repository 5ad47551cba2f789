package vfs

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// MemFS is an in-memory FS that tracks which data and directory entries
// are durable, so tests can simulate a crash with [MemFS.Crash]; see the
// package documentation for the crash model.
//
// A MemFS has a single root: names are cleaned with path.Clean and a
// leading slash is ignored, so "/a/b", "a/b" and "./a//b" are the same
// file. The empty name does not exist. Directories cannot be opened with
// OpenFile (EISDIR); use ReadDir, Stat and SyncDir. Permission bits are
// recorded, without umask, but not enforced.
//
// A MemFS is safe for concurrent use; one mutex serializes all operations.
type MemFS struct {
	mu   sync.Mutex
	root *inode

	open           int      // files open now
	unsyncedCloses []string // see UnsyncedCloses
}

// OpenFiles reports how many files are open: what a descriptor budget
// would count.
func (m *MemFS) OpenFiles() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.open
}

// UnsyncedCloses lists, by the names they were opened with, the files
// closed while holding a write (or truncation) made through them that no
// Sync of the file, through any descriptor, had covered. A program that
// cares about a file has none of its name here: after a failed writeback
// Linux may report the error only to the descriptors open when it
// happened, so it must sync before it closes the descriptor it wrote
// through (or through another one already open at the time).
func (m *MemFS) UnsyncedCloses() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.unsyncedCloses)
}

var _ FS = (*MemFS)(nil)

// NewMem returns an empty in-memory file system whose root directory
// exists.
func NewMem() *MemFS {
	return &MemFS{root: newDir(0o755)}
}

// split cleans name into its path components; the root has none.
func split(name string) ([]string, error) {
	if name == "" {
		return nil, syscall.ENOENT
	}
	p := strings.TrimLeft(path.Clean("/"+name), "/")
	if p == "" {
		return nil, nil
	}
	return strings.Split(p, "/"), nil
}

// walk returns the directory holding the last component of name and that
// component ("" for the root, whose parent is reported as nil).
func (m *MemFS) walk(name string) (dir *inode, base string, err error) {
	parts, err := split(name)
	if err != nil || len(parts) == 0 {
		return nil, "", err
	}
	dir = m.root
	for _, p := range parts[:len(parts)-1] {
		next, ok := dir.kids[p]
		switch {
		case !ok:
			return nil, "", syscall.ENOENT
		case !next.isDir():
			return nil, "", syscall.ENOTDIR
		}
		dir = next
	}
	return dir, parts[len(parts)-1], nil
}

// lookup returns the inode named name.
func (m *MemFS) lookup(name string) (*inode, error) {
	dir, base, err := m.walk(name)
	if err != nil {
		return nil, err
	}
	if dir == nil {
		return m.root, nil
	}
	if n, ok := dir.kids[base]; ok {
		return n, nil
	}
	return nil, syscall.ENOENT
}

func pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// OpenFile opens or creates a regular file; see [FS.OpenFile].
func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.openInode(name, flag, perm)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	m.open++
	return &memFile{fs: m, ino: n, name: name, flag: flag}, nil
}

func (m *MemFS) openInode(name string, flag int, perm fs.FileMode) (*inode, error) {
	dir, base, err := m.walk(name)
	if err != nil {
		return nil, err
	}
	if dir == nil {
		return nil, syscall.EISDIR
	}
	n, ok := dir.kids[base]
	switch {
	case !ok && flag&os.O_CREATE == 0:
		return nil, syscall.ENOENT
	case !ok:
		n = newFile(perm)
		dir.setKid(base, n)
	case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
		return nil, syscall.EEXIST
	case n.isDir():
		return nil, syscall.EISDIR
	case flag&os.O_TRUNC != 0:
		n.resize(0)
	}
	return n, nil
}

// Remove deletes a file or an empty directory.
func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.remove(name, false); err != nil {
		return pathErr("remove", name, err)
	}
	return nil
}

// RemoveAll deletes name and everything under it; a missing name is not
// an error. The durable entries under a removed directory are kept, so if
// its parent is not synced the whole tree reappears after a crash.
func (m *MemFS) RemoveAll(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.remove(name, true)
	if err == nil || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return pathErr("unlinkat", name, err)
}

func (m *MemFS) remove(name string, all bool) error {
	dir, base, err := m.walk(name)
	if err != nil {
		return err
	}
	if dir == nil {
		return syscall.EBUSY
	}
	n, ok := dir.kids[base]
	if !ok {
		return syscall.ENOENT
	}
	if n.isDir() && len(n.kids) > 0 && !all {
		return syscall.ENOTEMPTY
	}
	dir.setKid(base, nil)
	return nil
}

// Rename moves oldname to newname, replacing a file at newname. As with
// os.Rename, an existing directory at newname is an error (EEXIST), a
// directory cannot replace a file (ENOTDIR) nor move under itself
// (EINVAL).
func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.rename(oldname, newname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}

func (m *MemFS) rename(oldname, newname string) error {
	odir, obase, err := m.walk(oldname)
	if err != nil {
		return err
	}
	ndir, nbase, err := m.walk(newname)
	if err != nil {
		return err
	}
	if odir == nil || ndir == nil {
		return syscall.EBUSY
	}
	n, ok := odir.kids[obase]
	if !ok {
		return syscall.ENOENT
	}
	if err := m.checkReplace(n, ndir.kids[nbase], newname); err != nil {
		return err
	}
	odir.setKid(obase, nil)
	ndir.setKid(nbase, n)
	return nil
}

// checkReplace reports whether n may be renamed to newname, where old is
// currently (or nil).
func (m *MemFS) checkReplace(n, old *inode, newname string) error {
	switch {
	case old == n:
		return nil
	case old != nil && old.isDir():
		return syscall.EEXIST
	case old != nil && n.isDir():
		return syscall.ENOTDIR
	case n.isDir() && m.under(newname, n):
		return syscall.EINVAL
	}
	return nil
}

// under reports whether the directory holding name is dir or inside it.
func (m *MemFS) under(name string, dir *inode) bool {
	parts, _ := split(name)
	n := m.root
	for _, p := range parts[:len(parts)-1] {
		if n == dir {
			return true
		}
		n = n.kids[p]
	}
	return n == dir
}

// MkdirAll creates the directory name and any missing parents.
func (m *MemFS) MkdirAll(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	parts, err := split(name)
	if err != nil {
		return pathErr("mkdir", name, err)
	}
	dir := m.root
	for _, p := range parts {
		next, ok := dir.kids[p]
		if !ok {
			next = newDir(perm)
			dir.setKid(p, next)
		}
		if !next.isDir() {
			return pathErr("mkdir", name, syscall.ENOTDIR)
		}
		dir = next
	}
	return nil
}

// ReadDir lists the directory name, sorted by name.
func (m *MemFS) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err == nil && !n.isDir() {
		err = syscall.ENOTDIR
	}
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	names := slices.Sorted(maps.Keys(n.kids))
	out := make([]fs.DirEntry, len(names))
	for i, k := range names {
		out[i] = fs.FileInfoToDirEntry(n.kids[k].info(k))
	}
	return out, nil
}

// Stat describes the file or directory name.
func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err != nil {
		return nil, pathErr("stat", name, err)
	}
	return n.info(baseName(name)), nil
}

// Chmod sets the permission bits of the file or directory name. Like
// every metadata change but the entries of a directory, it is outside the
// crash model: a crash keeps it.
func (m *MemFS) Chmod(name string, mode fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err != nil {
		return pathErr("chmod", name, err)
	}
	n.mode = n.mode&^fs.ModePerm | mode&fs.ModePerm
	return nil
}

// SyncDir makes the current entries of the directory name durable. Given
// a regular file it syncs the file's data instead, as fsync would.
func (m *MemFS) SyncDir(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err != nil {
		return pathErr("open", name, err)
	}
	if n.isDir() {
		n.syncDir()
	} else {
		n.sync()
	}
	return nil
}

// baseName is the last element of name, "/" for the root.
func baseName(name string) string {
	return path.Base(path.Clean("/" + name))
}

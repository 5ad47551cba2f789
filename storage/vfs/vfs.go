// Package vfs is the small file-system interface the storage layer is
// written against, so that the durable log (segment files of record
// batches, their index files, and a metadata file replaced by
// write-temp/fsync/rename) can run on the real disk in production and, in
// tests, on memory, through a simulated crash that loses everything not
// made durable, and under injected errors (disk full, I/O errors, short
// writes) at chosen points.
//
// Three implementations are provided:
//
//   - [Default] returns the real file system, a thin wrapper over package
//     os whose File.Sync is fdatasync.
//   - [NewMem] returns a [MemFS], an in-memory file system that tracks what
//     is durable and can [MemFS.Crash].
//   - [NewErrors] wraps any FS in an [ErrorFS] that fails chosen
//     operations by rule.
//
// # Crash model
//
// MemFS keeps two states of everything: the current state, which every
// operation reads and writes, and the durable state, which is what
// survives [MemFS.Crash]. Two operations move state from current to
// durable, and nothing else does:
//
//   - File.Sync makes the file's current contents (and size) durable. It
//     does not make the file's name durable.
//   - FS.SyncDir(dir) makes the current set of entries of dir durable:
//     every file or subdirectory created in, renamed into, renamed out of
//     or removed from dir since its last SyncDir. It does not make any
//     file's contents durable, and it does not make dir's own entry in its
//     parent durable.
//
// Hence, after a crash:
//
//   - a file created (or a directory made by MkdirAll) whose parent
//     directory was not synced afterwards is gone, even if its data was
//     synced;
//   - a rename not followed by SyncDir of both directories is undone: the
//     old name is back, and the new name holds whatever it held durably
//     before (or nothing); across two directories with only one synced, the
//     file may appear under both names or neither;
//   - a removed file whose directory was not synced afterwards reappears,
//     with its durable contents;
//   - a file's contents are exactly its contents at its last Sync (empty
//     if never synced): unsynced writes, truncations and O_TRUNC are undone
//     as a whole, including overwrites inside the synced range.
//
// This is the strict POSIX reading, a little harsher than ext4 with
// default options (where an fsync of a file usually also commits its
// directory entry), so code that is correct here is correct there. The log
// must therefore sync a file and then its directory after creating it, and
// sync the parent after MkdirAll.
//
// [MemFS.CrashWith] is Crash plus torn writes: for each file whose current
// size exceeds its durable size, it keeps a random prefix (possibly empty,
// possibly all) of the unsynced tail beyond the durable size, the way a
// crash in the middle of an append leaves part of the appended bytes. The
// log's recovery must truncate such a torn tail.
package vfs

import (
	"io"
	"io/fs"
)

// FS is the file system the log uses. Names are slash-separated paths.
type FS interface {
	// OpenFile opens a file with os.OpenFile semantics for the flags the
	// log uses: os.O_RDONLY, os.O_RDWR, os.O_CREATE, os.O_EXCL, os.O_TRUNC,
	// os.O_APPEND is not used.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Remove deletes a file or an empty directory.
	Remove(name string) error
	// RemoveAll deletes a directory tree.
	RemoveAll(name string) error
	// Rename renames a file atomically, replacing newname.
	Rename(oldname, newname string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(name string, perm fs.FileMode) error
	// ReadDir lists a directory, sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	// Stat describes a file.
	Stat(name string) (fs.FileInfo, error)
	// SyncDir makes the directory's entries (creations, renames, removals)
	// durable, as fsync on the directory does.
	SyncDir(name string) error
	// Chmod sets the permission bits of a file or directory.
	Chmod(name string, mode fs.FileMode) error
}

// File is an open file. Writes go through WriteAt or Write (at the
// current offset, which only Write and Seek move); reads through ReadAt,
// which is safe concurrently with writes to other ranges.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Writer
	io.Seeker
	io.Closer
	// Sync makes the file's data durable (fdatasync).
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Stat describes the file.
	Stat() (fs.FileInfo, error)
	// Name is the name the file was opened with.
	Name() string
}

package vfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// memFile is an open file of a MemFS. Its fields, like the inode's, are
// guarded by the MemFS's mutex.
type memFile struct {
	fs     *MemFS
	ino    *inode
	name   string
	flag   int
	off    int64
	closed bool
	// wrote is set by a write or truncation through this file, with the
	// inode's sync count at the time: a close before the count moves is
	// an unsynced close.
	wrote   bool
	wroteAt uint64
}

// modified records a write or truncation through f.
func (f *memFile) modified() {
	f.wrote, f.wroteAt = true, f.ino.syncs
}

var (
	errNegativeOffset = errors.New("negative offset")
	errWriteAtAppend  = errors.New("os: invalid use of WriteAt on file opened with O_APPEND")
)

// check reports why op cannot run on f, if it cannot. The caller holds
// the MemFS's mutex.
func (f *memFile) check(op string, write bool) error {
	switch {
	case f.closed:
		return pathErr(op, f.name, fs.ErrClosed)
	case write && f.flag&(os.O_WRONLY|os.O_RDWR) == 0:
		return pathErr(op, f.name, syscall.EBADF)
	case op == "read" && f.flag&os.O_WRONLY != 0:
		return pathErr(op, f.name, syscall.EBADF)
	}
	return nil
}

// Name returns the name the file was opened with.
func (f *memFile) Name() string { return f.name }

// ReadAt reads at off, returning io.EOF if it reads fewer than len(p)
// bytes.
func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, pathErr("readat", f.name, errNegativeOffset)
	}
	if off >= f.ino.size() {
		return 0, eofUnless(len(p) == 0)
	}
	n := copy(p, f.ino.data[off:])
	return n, eofUnless(n == len(p))
}

func eofUnless(ok bool) error {
	if ok {
		return nil
	}
	return io.EOF
}

// WriteAt writes p at off, zero-filling any gap past the end.
func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	switch {
	case f.flag&os.O_APPEND != 0:
		return 0, errWriteAtAppend
	case off < 0:
		return 0, pathErr("writeat", f.name, errNegativeOffset)
	}
	f.write(p, off)
	return len(p), nil
}

func (f *memFile) write(p []byte, off int64) {
	if len(p) > 0 {
		f.ino.writeAt(p, off)
		f.modified()
	}
}

// Write writes p at the current offset (the end, with O_APPEND) and
// advances it.
func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		f.off = f.ino.size()
	}
	f.write(p, f.off)
	f.off += int64(len(p))
	return len(p), nil
}

// Seek sets the offset for the next Write.
func (f *memFile) Seek(offset int64, whence int) (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("seek", false); err != nil {
		return 0, err
	}
	switch whence {
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += f.ino.size()
	case io.SeekStart:
	default:
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	if offset < 0 {
		return 0, pathErr("seek", f.name, syscall.EINVAL)
	}
	f.off = offset
	return offset, nil
}

// Close closes the file; later operations fail with fs.ErrClosed.
func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("close", false); err != nil {
		return err
	}
	f.closed = true
	f.fs.open--
	if f.wrote && f.wroteAt == f.ino.syncs {
		f.fs.unsyncedCloses = append(f.fs.unsyncedCloses, f.name)
	}
	return nil
}

// Sync makes the file's current contents durable.
func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("sync", false); err != nil {
		return err
	}
	f.ino.sync()
	return nil
}

// Truncate shrinks or zero-extends the file to size.
func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if size < 0 {
		return pathErr("truncate", f.name, syscall.EINVAL)
	}
	f.ino.resize(int(size))
	f.modified()
	return nil
}

// Stat describes the file, under the base name it was opened with.
func (f *memFile) Stat() (fs.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("stat", false); err != nil {
		return nil, err
	}
	return f.ino.info(baseName(f.name)), nil
}

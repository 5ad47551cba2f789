package vfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Default returns the real file system: a thin wrapper over package os.
// Names are converted from slash-separated form with filepath.FromSlash.
// Its File.Sync is fdatasync where the platform has it, fsync elsewhere.
func Default() FS { return osFS{} }

type osFS struct{}

var _ FS = osFS{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(filepath.FromSlash(name), flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error    { return os.Remove(filepath.FromSlash(name)) }
func (osFS) RemoveAll(name string) error { return os.RemoveAll(filepath.FromSlash(name)) }

func (osFS) Rename(oldname, newname string) error {
	return os.Rename(filepath.FromSlash(oldname), filepath.FromSlash(newname))
}

func (osFS) MkdirAll(name string, perm fs.FileMode) error {
	return os.MkdirAll(filepath.FromSlash(name), perm)
}

func (osFS) ReadDir(name string) ([]fs.DirEntry, error) {
	return os.ReadDir(filepath.FromSlash(name))
}

func (osFS) Stat(name string) (fs.FileInfo, error) { return os.Stat(filepath.FromSlash(name)) }

func (osFS) Chmod(name string, mode fs.FileMode) error {
	return os.Chmod(filepath.FromSlash(name), mode)
}

// SyncDir opens the directory and fsyncs it.
func (osFS) SyncDir(name string) error {
	d, err := os.Open(filepath.FromSlash(name))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// osFile is an *os.File whose Sync is fdatasync.
type osFile struct {
	*os.File
}

// Sync runs fdatasync on the file's descriptor. If the descriptor cannot be
// reached (the file is closed) or fdatasync is unsupported, it falls back
// to (*os.File).Sync, which reports errors the way package os does.
func (f osFile) Sync() error {
	rc, err := f.SyscallConn()
	if err != nil {
		return f.File.Sync()
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = fdatasync(fd) }); err != nil {
		return f.File.Sync()
	}
	if errors.Is(serr, errors.ErrUnsupported) {
		return f.File.Sync()
	}
	if serr != nil {
		return &fs.PathError{Op: "sync", Path: f.Name(), Err: serr}
	}
	return nil
}

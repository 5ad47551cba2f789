package vfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// impls are the file systems the conformance tests run against; each
// returns the FS and an existing, empty directory to work in.
var impls = map[string]func(t *testing.T) (FS, string){
	"OS": func(t *testing.T) (FS, string) { return Default(), t.TempDir() },
	"Mem": func(t *testing.T) (FS, string) {
		m := NewMem()
		require.NoError(t, m.MkdirAll("/data", 0o755))
		return m, "/data"
	},
	"ErrorsOverMem": func(t *testing.T) (FS, string) {
		m := NewMem()
		require.NoError(t, m.MkdirAll("data", 0o755))
		e := NewErrors(m)
		e.Inject(OpRead|OpWrite|OpSync, nil, nil, 0) // counts only
		return e, "data"
	},
}

var conformance = map[string]func(t *testing.T, fsys FS, dir string){
	"CreateWriteRead":   testCreateWriteRead,
	"ReadAtEOF":         testReadAtEOF,
	"ZeroFill":          testZeroFill,
	"Seek":              testSeek,
	"Truncate":          testTruncate,
	"Rename":            testRename,
	"Remove":            testRemove,
	"ReadDir":           testReadDir,
	"Stat":              testStat,
	"ClosedFile":        testClosedFile,
	"OpenFlags":         testOpenFlags,
	"ReadOnly":          testReadOnly,
	"MkdirAll":          testMkdirAll,
	"Sync":              testSync,
	"ConcurrentReadAt":  testConcurrentReadWrite,
	"RenameDirectories": testRenameDirectories,
	"Chmod":             testChmod,
}

func TestConformance(t *testing.T) {
	for implName, newFS := range impls {
		t.Run(implName, func(t *testing.T) {
			for name, test := range conformance {
				t.Run(name, func(t *testing.T) {
					fsys, dir := newFS(t)
					test(t, fsys, dir)
				})
			}
		})
	}
}

const rw = os.O_RDWR | os.O_CREATE

func create(t *testing.T, fsys FS, name, data string) {
	t.Helper()
	f, err := fsys.OpenFile(name, rw|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	_, err = f.Write([]byte(data))
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func contents(t *testing.T, fsys FS, name string) string {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	require.NoError(t, err)
	defer func() { require.NoError(t, f.Close()) }()
	st, err := f.Stat()
	require.NoError(t, err)
	b := make([]byte, st.Size())
	n, err := f.ReadAt(b, 0)
	require.NoError(t, err)
	return string(b[:n])
}

func testCreateWriteRead(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "seg")
	f, err := fsys.OpenFile(name, rw|os.O_EXCL, 0o644)
	require.NoError(t, err)
	require.Equal(t, name, f.Name())
	n, err := f.Write([]byte("hello"))
	require.NoError(t, err)
	require.Equal(t, 5, n)
	_, err = f.WriteAt([]byte(" world"), 5)
	require.NoError(t, err)
	_, err = f.Write([]byte("J")) // offset is 5: WriteAt does not move it
	require.NoError(t, err)

	b := make([]byte, 11)
	n, err = f.ReadAt(b, 0)
	require.NoError(t, err)
	require.Equal(t, "helloJworld", string(b[:n]))

	st, err := f.Stat()
	require.NoError(t, err)
	require.Equal(t, int64(11), st.Size())
	require.Equal(t, "seg", st.Name())
	require.False(t, st.IsDir())
	require.True(t, st.Mode().IsRegular())
	require.Equal(t, fs.FileMode(0o644), st.Mode().Perm())
	require.NoError(t, f.Close())
	require.Equal(t, "helloJworld", contents(t, fsys, name))
}

func testReadAtEOF(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	create(t, fsys, name, "0123456789")
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()

	b := make([]byte, 4)
	n, err := f.ReadAt(b, 6)
	require.NoError(t, err)
	require.Equal(t, "6789", string(b[:n]))

	n, err = f.ReadAt(b, 8)
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, "89", string(b[:n]))

	n, err = f.ReadAt(b, 10)
	require.ErrorIs(t, err, io.EOF)
	require.Zero(t, n)

	n, err = f.ReadAt(b, 100)
	require.ErrorIs(t, err, io.EOF)
	require.Zero(t, n)

	_, err = f.ReadAt(b, -1)
	require.Error(t, err)
}

func testZeroFill(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	f, err := fsys.OpenFile(name, rw, 0o644)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	_, err = f.WriteAt([]byte("ab"), 3)
	require.NoError(t, err)
	require.Equal(t, "\x00\x00\x00ab", contents(t, fsys, name))

	_, err = f.Seek(7, io.SeekStart)
	require.NoError(t, err)
	_, err = f.Write([]byte("c"))
	require.NoError(t, err)
	require.Equal(t, "\x00\x00\x00ab\x00\x00c", contents(t, fsys, name))

	_, err = f.WriteAt(nil, 100) // an empty write does not extend
	require.NoError(t, err)
	st, err := f.Stat()
	require.NoError(t, err)
	require.Equal(t, int64(8), st.Size())
}

func testSeek(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	create(t, fsys, name, "abcdef")
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()

	off, err := f.Seek(-2, io.SeekEnd)
	require.NoError(t, err)
	require.Equal(t, int64(4), off)
	off, err = f.Seek(-1, io.SeekCurrent)
	require.NoError(t, err)
	require.Equal(t, int64(3), off)
	_, err = f.Write([]byte("XY"))
	require.NoError(t, err)
	off, err = f.Seek(0, io.SeekCurrent)
	require.NoError(t, err)
	require.Equal(t, int64(5), off)
	require.Equal(t, "abcXYf", contents(t, fsys, name))

	_, err = f.Seek(-1, io.SeekStart)
	require.Error(t, err)
}

func testTruncate(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	create(t, fsys, name, "abcdef")
	f, err := fsys.OpenFile(name, os.O_RDWR, 0)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()

	require.NoError(t, f.Truncate(2))
	require.Equal(t, "ab", contents(t, fsys, name))
	require.NoError(t, f.Truncate(5)) // the cut bytes do not come back
	require.Equal(t, "ab\x00\x00\x00", contents(t, fsys, name))
	st, err := fsys.Stat(name)
	require.NoError(t, err)
	require.Equal(t, int64(5), st.Size())
	require.NoError(t, f.Truncate(0))
	require.Equal(t, "", contents(t, fsys, name))
}

func testRename(t *testing.T, fsys FS, dir string) {
	a, b := path.Join(dir, "a"), path.Join(dir, "b")
	create(t, fsys, a, "new")
	create(t, fsys, b, "old")
	require.NoError(t, fsys.Rename(a, b))
	require.Equal(t, "new", contents(t, fsys, b))
	_, err := fsys.Stat(a)
	require.ErrorIs(t, err, fs.ErrNotExist)

	err = fsys.Rename(a, b)
	require.ErrorIs(t, err, fs.ErrNotExist)
	var le *os.LinkError
	require.ErrorAs(t, err, &le)

	sub := path.Join(dir, "sub")
	require.NoError(t, fsys.MkdirAll(sub, 0o755))
	require.NoError(t, fsys.Rename(b, path.Join(sub, "c")))
	require.Equal(t, "new", contents(t, fsys, path.Join(sub, "c")))
	require.Error(t, fsys.Rename(path.Join(sub, "c"), sub), "onto a directory")
	require.NoError(t, fsys.Rename(path.Join(sub, "c"), path.Join(sub, "c")))
}

func testRenameDirectories(t *testing.T, fsys FS, dir string) {
	a, b := path.Join(dir, "a"), path.Join(dir, "b")
	require.NoError(t, fsys.MkdirAll(a, 0o755))
	create(t, fsys, path.Join(a, "f"), "x")
	require.NoError(t, fsys.Rename(a, b))
	require.Equal(t, "x", contents(t, fsys, path.Join(b, "f")))
	require.Error(t, fsys.Rename(b, path.Join(b, "inner")), "under itself")
	create(t, fsys, a, "file")
	require.Error(t, fsys.Rename(b, a), "directory over file")
}

func testRemove(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	create(t, fsys, name, "x")
	require.NoError(t, fsys.Remove(name))
	_, err := fsys.Stat(name)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorIs(t, fsys.Remove(name), fs.ErrNotExist)

	sub := path.Join(dir, "sub")
	require.NoError(t, fsys.MkdirAll(path.Join(sub, "deeper"), 0o755))
	create(t, fsys, path.Join(sub, "deeper", "f"), "x")
	require.Error(t, fsys.Remove(sub), "non-empty directory")
	require.NoError(t, fsys.RemoveAll(sub))
	_, err = fsys.Stat(sub)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NoError(t, fsys.RemoveAll(sub), "missing is fine")

	require.NoError(t, fsys.MkdirAll(sub, 0o755))
	require.NoError(t, fsys.Remove(sub), "empty directory")
}

func testReadDir(t *testing.T, fsys FS, dir string) {
	for _, n := range []string{"c", "a", "b10", "b2"} {
		create(t, fsys, path.Join(dir, n), n)
	}
	require.NoError(t, fsys.MkdirAll(path.Join(dir, "d"), 0o755))
	entries, err := fsys.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		require.Equal(t, e.Name() == "d", e.IsDir())
	}
	require.Equal(t, []string{"a", "b10", "b2", "c", "d"}, names)
	info, err := entries[2].Info()
	require.NoError(t, err)
	require.Equal(t, int64(2), info.Size())

	_, err = fsys.ReadDir(path.Join(dir, "missing"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = fsys.ReadDir(path.Join(dir, "a"))
	require.Error(t, err, "not a directory")
}

func testStat(t *testing.T, fsys FS, dir string) {
	sub := path.Join(dir, "sub")
	require.NoError(t, fsys.MkdirAll(sub, 0o750))
	st, err := fsys.Stat(sub)
	require.NoError(t, err)
	require.True(t, st.IsDir())
	require.True(t, st.Mode().IsDir())
	require.Equal(t, "sub", st.Name())

	name := path.Join(sub, "f")
	create(t, fsys, name, "abc")
	st, err = fsys.Stat(name)
	require.NoError(t, err)
	require.Equal(t, "f", st.Name())
	require.Equal(t, int64(3), st.Size())
	require.False(t, st.IsDir())
	require.False(t, st.ModTime().IsZero())

	_, err = fsys.Stat(path.Join(dir, "missing"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = fsys.Stat(path.Join(name, "under-a-file"))
	require.Error(t, err)
}

func testClosedFile(t *testing.T, fsys FS, dir string) {
	f, err := fsys.OpenFile(path.Join(dir, "f"), rw, 0o644)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	b := make([]byte, 1)
	_, err = f.ReadAt(b, 0)
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = f.WriteAt(b, 0)
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = f.Write(b)
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = f.Seek(0, io.SeekStart)
	require.ErrorIs(t, err, fs.ErrClosed)
	_, err = f.Stat()
	require.ErrorIs(t, err, fs.ErrClosed)
	require.ErrorIs(t, f.Sync(), fs.ErrClosed)
	require.ErrorIs(t, f.Truncate(0), fs.ErrClosed)
	require.ErrorIs(t, f.Close(), fs.ErrClosed)
}

func testOpenFlags(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	_, err := fsys.OpenFile(name, os.O_RDWR, 0)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = fsys.OpenFile(path.Join(dir, "missing", "f"), rw, 0o644)
	require.ErrorIs(t, err, fs.ErrNotExist)

	create(t, fsys, name, "abc")
	_, err = fsys.OpenFile(name, rw|os.O_EXCL, 0o644)
	require.ErrorIs(t, err, fs.ErrExist)
	var pe *fs.PathError
	require.ErrorAs(t, err, &pe)

	f, err := fsys.OpenFile(name, rw, 0o644) // no O_TRUNC: kept
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "abc", contents(t, fsys, name))

	f, err = fsys.OpenFile(name, rw|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "", contents(t, fsys, name))
}

func testReadOnly(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	create(t, fsys, name, "abc")
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	_, err = f.WriteAt([]byte("x"), 0)
	require.Error(t, err)
	_, err = f.Write([]byte("x"))
	require.Error(t, err)
	require.Error(t, f.Truncate(0))
	require.Equal(t, "abc", contents(t, fsys, name))
}

func testMkdirAll(t *testing.T, fsys FS, dir string) {
	deep := path.Join(dir, "a", "b", "c")
	require.NoError(t, fsys.MkdirAll(deep, 0o755))
	require.NoError(t, fsys.MkdirAll(deep, 0o755), "idempotent")
	create(t, fsys, path.Join(deep, "f"), "x")
	require.Error(t, fsys.MkdirAll(path.Join(deep, "f"), 0o755), "over a file")
	require.Error(t, fsys.MkdirAll(path.Join(deep, "f", "g"), 0o755), "under a file")
}

func testSync(t *testing.T, fsys FS, dir string) {
	f, err := fsys.OpenFile(path.Join(dir, "f"), rw, 0o644)
	require.NoError(t, err)
	_, err = f.Write([]byte("data"))
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
	require.NoError(t, fsys.SyncDir(dir))
	require.ErrorIs(t, fsys.SyncDir(path.Join(dir, "missing")), fs.ErrNotExist)
}

// testConcurrentReadWrite reads settled data while other goroutines
// append; run it with -race.
func testConcurrentReadWrite(t *testing.T, fsys FS, dir string) {
	f, err := fsys.OpenFile(path.Join(dir, "f"), rw, 0o644)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	const chunk, chunks = 64, 50
	_, err = f.WriteAt(make([]byte, chunk), 0)
	require.NoError(t, err)

	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i < chunks; i++ {
			b := make([]byte, chunk)
			b[0] = byte(i)
			if _, err := f.WriteAt(b, int64(i*chunk)); err != nil {
				t.Errorf("WriteAt: %v", err)
			}
		}
	})
	wg.Go(func() {
		b := make([]byte, chunk)
		for range chunks {
			if _, err := f.ReadAt(b, 0); err != nil || b[0] != 0 {
				t.Errorf("ReadAt: %v, %x", err, b[0])
			}
		}
	})
	wg.Wait()
	st, err := f.Stat()
	require.NoError(t, err)
	require.Equal(t, int64(chunk*chunks), st.Size())
}

func TestDefaultSyncIsFdatasync(t *testing.T) {
	f, err := Default().OpenFile(path.Join(t.TempDir(), "f"), rw, 0o644)
	require.NoError(t, err)
	_, isOS := f.(osFile)
	require.True(t, isOS)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
	var pe *fs.PathError
	require.True(t, errors.As(f.Sync(), &pe))
}

func testChmod(t *testing.T, fsys FS, dir string) {
	name := path.Join(dir, "f")
	create(t, fsys, name, "x")
	require.NoError(t, fsys.Chmod(name, 0o600))
	st, err := fsys.Stat(name)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), st.Mode().Perm())
	require.True(t, st.Mode().IsRegular())

	sub := path.Join(dir, "d")
	require.NoError(t, fsys.MkdirAll(sub, 0o755))
	require.NoError(t, fsys.Chmod(sub, 0o700))
	st, err = fsys.Stat(sub)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o700), st.Mode().Perm())
	require.True(t, st.IsDir())
	require.ErrorIs(t, fsys.Chmod(path.Join(dir, "missing"), 0o600), fs.ErrNotExist)
}

package storage

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// walk calls fn with every file and directory under dir, dir included. A
// file gone between the listing and its stat (the reclaimer deletes trash
// in the background) is skipped.
func walk(t *testing.T, fsys vfs.FS, dir string, fn func(name string, mode fs.FileMode)) {
	t.Helper()
	st, err := fsys.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) && strings.Contains(dir, "/") {
		return
	}
	require.NoError(t, err)
	fn(dir, st.Mode())
	if !st.IsDir() {
		return
	}
	entries, err := fsys.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		walk(t, fsys, dir+"/"+e.Name(), fn)
	}
}

// TestLogFilesAreOwnerOnly: the files and directories a log and the
// reclaimer create have no group or other permission bits, and those of
// an older version (0644 files, 0755 directories) are tightened when the
// log opens them: the memory file system records modes exactly, without a
// umask to hide a 0644.
func TestLogFilesAreOwnerOnly(t *testing.T) {
	fsys := vfs.NewMem()
	rc := newTestReclaimer(t, fsys, 1<<20)
	l, _ := openLog(t, fsys, func(c *DiskConfig) { c.Reclaim = rc })
	now := time.Unix(10_000, 0)
	appendN(t, l, 1000, now.Add(-2*time.Hour).UnixNano())
	end := appendN(t, l, 2000, now.UnixNano())
	_, err := l.Retain(now, time.Hour, 0)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.NoError(t, WriteFileAtomic(fsys, "t/meta.json", []byte("{}"), true))
	n := 0
	check := func(name string, mode fs.FileMode) {
		if name != "." {
			require.Zero(t, mode.Perm()&0o077, "%s has mode %v", name, mode.Perm())
			n++
		}
	}
	walk(t, fsys, "t", check)
	walk(t, fsys, "data", check)
	require.Greater(t, n, 10)

	walk(t, fsys, "t", func(name string, mode fs.FileMode) {
		if mode.IsDir() {
			require.NoError(t, fsys.Chmod(name, 0o755))
		} else {
			require.NoError(t, fsys.Chmod(name, 0o644))
		}
	})
	l2, rec := openLog(t, fsys, nil)
	require.Zero(t, rec.Scanned)
	_, err = ReadFile(fsys, "t/meta.json")
	require.NoError(t, err)
	require.NoError(t, l2.Close())
	walk(t, fsys, "t", check)
	_, e := l2.Bounds()
	require.Equal(t, end, e)
}

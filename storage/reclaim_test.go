package storage

import (
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// stepFS records every Truncate and Sync made through files it opened.
type stepFS struct {
	vfs.FS
	mu    sync.Mutex
	steps []string
}

type stepFile struct {
	vfs.File
	fs *stepFS
}

func (s *stepFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := s.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &stepFile{File: f, fs: s}, nil
}

func (s *stepFS) record(step string) {
	s.mu.Lock()
	s.steps = append(s.steps, step)
	s.mu.Unlock()
}

func (f *stepFile) Truncate(size int64) error {
	f.fs.record("truncate " + strconv.FormatInt(size, 10))
	return f.File.Truncate(size)
}

func (f *stepFile) Sync() error {
	f.fs.record("sync")
	return f.File.Sync()
}

func writeFile(t *testing.T, fsys vfs.FS, name string, size int) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	require.NoError(t, err)
	_, err = f.Write(make([]byte, size))
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

func waitIdle(t *testing.T, r *Reclaimer) {
	t.Helper()
	require.Eventually(t, r.Idle, 30*time.Second, time.Millisecond)
}

func exists(fsys vfs.FS, name string) bool {
	_, err := fsys.Stat(name)
	return err == nil
}

// newTestReclaimer shrinks files chunk bytes a step, without pauses.
func newTestReclaimer(t *testing.T, fsys vfs.FS, chunk int64) *Reclaimer {
	t.Helper()
	r, err := newReclaimer(fsys, "data/trash", nil, chunk, 0)
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

// TestReclaimerShrinksAChunkAtATime removes a tree: the large file goes a
// chunk per step, each step synced, smallest files at once; nothing is
// left, in the tree or the trash.
func TestReclaimerShrinksAChunkAtATime(t *testing.T) {
	fsys := &stepFS{FS: vfs.NewMem()}
	require.NoError(t, fsys.MkdirAll("data/topics/a/0", 0o755))
	writeFile(t, fsys, "data/topics/a/0/big.log", 3<<20+100)
	writeFile(t, fsys, "data/topics/a/0/small.idx", 100)
	fsys.steps = nil
	r := newTestReclaimer(t, fsys, 1<<20)

	require.NoError(t, r.Remove("data/topics/a"))
	require.False(t, exists(fsys, "data/topics/a"), "the tree leaves its place at once")
	waitIdle(t, r)
	require.Equal(t, []string{"truncate 2097252", "sync", "truncate 1048676", "sync", "truncate 100", "sync"},
		fsys.steps, "down to one chunk or less, which the unlink frees")
	entries, err := fsys.ReadDir("data/trash")
	require.NoError(t, err)
	require.Empty(t, entries)
	require.Equal(t, int64(3<<20+200), r.Freed())

	require.NoError(t, r.Remove("data/topics/never"), "a missing path is not an error")
}

// TestReclaimerTrashThenReclaim: a trashed file stays whole (a reader
// may hold it) until Reclaim.
func TestReclaimerTrashThenReclaim(t *testing.T) {
	fsys := vfs.NewMem()
	require.NoError(t, fsys.MkdirAll("data/p", 0o755))
	writeFile(t, fsys, "data/p/seg.log", 2<<20)
	r := newTestReclaimer(t, fsys, 1<<20)

	name, err := r.Trash("data/p/seg.log")
	require.NoError(t, err)
	require.False(t, exists(fsys, "data/p/seg.log"))
	// The reclaimer runs, on another file, while this one waits in the
	// trash: it leaves this one alone.
	writeFile(t, fsys, "data/p/other.log", 2<<20)
	require.NoError(t, r.Remove("data/p/other.log"))
	waitIdle(t, r)
	require.Equal(t, int64(2<<20), r.Freed(), "the reclaimer reclaimed the other file")
	st, err := fsys.Stat(name)
	require.NoError(t, err)
	require.Equal(t, int64(2<<20), st.Size(), "untouched before Reclaim")

	r.Reclaim(name, "data/p")
	waitIdle(t, r)
	require.False(t, exists(fsys, name))
}

// TestReclaimerResumesAfterRestart: a reclaimer closed mid-file leaves
// the rest in its directory, and the next one finishes it.
func TestReclaimerResumesAfterRestart(t *testing.T) {
	fsys := vfs.NewMem()
	require.NoError(t, fsys.MkdirAll("data/p", 0o755))
	writeFile(t, fsys, "data/p/seg.log", 64<<20)
	r, err := newReclaimer(fsys, "data/trash", nil, 1<<20, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, r.Remove("data/p/seg.log"))
	require.Eventually(t, func() bool { return r.Freed() > 0 }, 30*time.Second, time.Millisecond)
	r.Close()
	entries, err := fsys.ReadDir("data/trash")
	require.NoError(t, err)
	require.Len(t, entries, 1, "the unfinished file stays in the trash")

	r2 := newTestReclaimer(t, fsys, 1<<20)
	waitIdle(t, r2)
	entries, err = fsys.ReadDir("data/trash")
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestReclaimerUnlinksLeftoversWhole: what a crash left in the trash may
// still have its old name in a partition (see NewReclaimer), so it is
// unlinked, never shrunk.
func TestReclaimerUnlinksLeftoversWhole(t *testing.T) {
	fsys := &stepFS{FS: vfs.NewMem()}
	require.NoError(t, fsys.MkdirAll("data/trash", 0o755))
	writeFile(t, fsys, "data/trash/old-seg.log", 3<<20)
	fsys.steps = nil
	r := newTestReclaimer(t, fsys, 1<<20)
	waitIdle(t, r)
	require.False(t, exists(fsys, "data/trash/old-seg.log"))
	require.Empty(t, fsys.steps, "not shrunk")
	require.Equal(t, int64(3<<20), r.Freed())
}

// TestReclaimerDoesNotShrinkWhenTheOriginWontSync: if the directory a file
// left cannot be synced, its old name might come back after a crash, so
// the file is unlinked whole instead of shrunk.
func TestReclaimerDoesNotShrinkWhenTheOriginWontSync(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	require.NoError(t, efs.MkdirAll("data/p", 0o755))
	writeFile(t, efs, "data/p/seg.log", 3<<20)
	efs.InjectSync(func(name string) bool { return name == "data/p" }, syscall.EIO, 0)
	r := newTestReclaimer(t, efs, 1<<20)
	require.NoError(t, r.Remove("data/p/seg.log"))
	waitIdle(t, r)
	require.False(t, exists(efs, "data/p/seg.log"))
	entries, err := efs.ReadDir("data/trash")
	require.NoError(t, err)
	require.Empty(t, entries)
	require.Zero(t, efs.Count(vfs.OpTruncate), "not shrunk")
}

// TestReclaimerRemoveFallsBack: a tree that cannot be moved to the trash
// (a full disk refusing the new entry) is removed at once.
func TestReclaimerRemoveFallsBack(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	require.NoError(t, efs.MkdirAll("data/topics/a/0", 0o755))
	writeFile(t, efs, "data/topics/a/0/seg.log", 1000)
	r := newTestReclaimer(t, efs, 1<<20)
	efs.Inject(vfs.OpRename, nil, syscall.ENOSPC, 0)
	require.NoError(t, r.Remove("data/topics/a"))
	require.False(t, exists(efs, "data/topics/a"))
}

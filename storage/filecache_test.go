package storage

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// openLogs opens n logs at t/0 … t/n-1 sharing files.
func openLogs(t *testing.T, fsys vfs.FS, files *FileCache, n int, check func()) []*DiskLog {
	t.Helper()
	logs := make([]*DiskLog, n)
	for i := range logs {
		l, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: fmt.Sprintf("t/%d", i), SegmentBytes: 4096,
			IndexInterval: 256, Files: files, Logger: quiet})
		require.NoError(t, err)
		logs[i] = l
		check()
	}
	return logs
}

// unsyncedSegmentCloses lists the segment files closed with unsynced
// writes (index files are written unsynced on purpose: a bad one is
// rebuilt).
func unsyncedSegmentCloses(m *vfs.MemFS) []string {
	var out []string
	for _, name := range m.UnsyncedCloses() {
		if strings.HasSuffix(name, logSuffix) {
			out = append(out, name)
		}
	}
	return out
}

func closeLogs(t *testing.T, logs []*DiskLog) {
	t.Helper()
	for _, l := range logs {
		require.NoError(t, l.Close())
	}
}

// filesOpen reports whether a segment's files are open, as the cache sees
// them.
func filesOpen(s *segment) bool {
	s.files.c.mu.Lock()
	defer s.files.c.mu.Unlock()
	return s.files.rd != nil || s.files.wr != nil
}

// TestFileBudgetWithManyPartitions: forty partitions of many segments each
// (and a direct-I/O handle for each active segment) under a budget of 16
// files keep at most 16 open between uses, at open, while appending and
// syncing, while reading, and after a reopen; every batch stays readable
// and writable, and no file is ever closed holding an unsynced write.
func TestFileBudgetWithManyPartitions(t *testing.T) {
	fsys := vfs.NewMem()
	const budget = 16
	files := NewFileCache(budget)
	within := func() {
		t.Helper()
		require.LessOrEqual(t, fsys.OpenFiles(), budget)
	}
	logs := openLogs(t, fsys, files, 40, within)
	ends := make([]int64, len(logs))
	for round := range 3 {
		for i, l := range logs {
			ends[i] = appendN(t, l, int64(300*(round+1)), 1)
			_, err := l.Sync()
			require.NoError(t, err)
			within()
		}
	}
	require.Greater(t, logs[0].Stats().Segments, 3)
	for i, l := range logs {
		require.Equal(t, expected(0, ends[i]), readAll(t, l, 0))
		within()
	}
	st := files.Stats()
	require.Equal(t, fsys.OpenFiles(), st.Open, "the cache counts what is open")
	require.Positive(t, st.Evictions)
	require.Greater(t, st.Opens, uint64(budget), "evicted files were opened again")
	closeLogs(t, logs)
	require.Zero(t, fsys.OpenFiles())

	logs = openLogs(t, fsys, files, 40, within)
	for i, l := range logs {
		require.Equal(t, expected(0, ends[i]), readAll(t, l, 0))
		ends[i] = appendN(t, l, ends[i]+50, 1)
		within()
	}
	closeLogs(t, logs)
	require.Zero(t, fsys.OpenFiles())
	require.Empty(t, unsyncedSegmentCloses(fsys), "no file was closed before a sync covered its writes")
}

// TestFileBudgetWithUnsyncedLogs: logs that are never synced (fsync=never)
// keep their active segment's files pinned; when the budget needs them
// closed, the cache syncs them first, so the budget holds and nothing is
// closed with an unsynced write.
func TestFileBudgetWithUnsyncedLogs(t *testing.T) {
	fsys := vfs.NewMem()
	const budget = 8
	files := NewFileCache(budget)
	logs := openLogs(t, fsys, files, 12, func() {})
	for round := range 3 {
		for _, l := range logs {
			appendN(t, l, int64(40*(round+1)), 1)
			// The log just written holds its two files pinned; the others
			// were synced and closed as needed.
			require.LessOrEqual(t, fsys.OpenFiles(), budget+2)
		}
	}
	require.Empty(t, unsyncedSegmentCloses(fsys), "no file was closed before a sync covered its writes")
	require.Positive(t, files.Stats().EvictionSyncs)
	for _, l := range logs {
		require.Equal(t, expected(0, 120), readAll(t, l, 0))
	}
	closeLogs(t, logs)
	require.Empty(t, unsyncedSegmentCloses(fsys))
}

// TestFileInUseIsNotClosed: a reader in the middle of a segment keeps its
// file open while other reads push the cache past its budget and evict
// everything else; it then reads the rest of the segment, block by block,
// through the same file.
func TestFileInUseIsNotClosed(t *testing.T) {
	fsys := vfs.NewMem()
	files := NewFileCache(4)
	a, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/a", SegmentBytes: 1 << 20, Files: files, Logger: quiet})
	require.NoError(t, err)
	end := appendN(t, a, 20_000, 1)
	_, err = a.Sync()
	require.NoError(t, err)
	require.Greater(t, a.active.size.Load(), int64(4*blockSize), "the reader needs several blocks")
	others := openLogs(t, fsys, files, 8, func() {})
	for _, l := range others {
		appendN(t, l, 100, 1)
	}

	require.Equal(t, expected(end-5, end), readAll(t, a, end-5)) // a's file: open, idle, most recently used
	require.True(t, filesOpen(a.active))

	inside, resume, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var got int64
	go func() {
		done <- a.Read(0, 1<<30, func(b wire.Batch) bool {
			if got == 0 {
				close(inside)
				<-resume
			}
			if b.BaseOffset() != got {
				panic(fmt.Sprintf("batch %d, want %d", b.BaseOffset(), got))
			}
			got += int64(b.Count())
			return true
		})
	}()
	<-inside
	evictions := files.Stats().Evictions
	for _, l := range others {
		require.Equal(t, expected(0, 100), readAll(t, l, 0))
	}
	require.Greater(t, files.Stats().Evictions, evictions, "the other reads evicted files")
	require.True(t, filesOpen(a.active), "the reader's file stayed open")
	close(resume)
	require.NoError(t, <-done)
	require.Equal(t, end, got)
	require.LessOrEqual(t, fsys.OpenFiles(), 4, "back within budget once the reader let go")
	require.NoError(t, a.Close())
	closeLogs(t, others)
}

// TestUnsyncedFileIsNotEvicted: a log's unsynced writes pin its files;
// when the cache needs them closed and the sync it runs fails, the files
// stay open (the error could otherwise be lost to a later sync through a
// new descriptor) and the log fails, as after any failed fsync, staying
// readable.
func TestUnsyncedFileIsNotEvicted(t *testing.T) {
	mem := vfs.NewMem()
	efs := vfs.NewErrors(mem)
	files := NewFileCache(2) // a's two files fill it
	a, _, err := OpenDiskLog(DiskConfig{FS: efs, Dir: "t/a", Files: files, Logger: quiet})
	require.NoError(t, err)
	efs.InjectSync(func(name string) bool { return strings.HasPrefix(name, "t/a/") }, syscall.EIO, 0)
	end := appendN(t, a, 50, 1)
	others := openLogs(t, efs, files, 6, func() {})
	for _, l := range others {
		appendN(t, l, 100, 1)
		_, err := l.Sync()
		require.NoError(t, err)
		require.Equal(t, expected(0, 100), readAll(t, l, 0))
	}
	require.True(t, filesOpen(a.active), "the unsynced files stayed open")
	require.True(t, a.Failed(), "the sync the cache ran failed, and failed the log")
	require.Contains(t, a.Stats().ReadOnly, "fsync failed")
	require.Empty(t, unsyncedSegmentCloses(mem))
	require.Equal(t, expected(0, end), readAll(t, a, 0), "a failed log stays readable")
	efs.Clear()
	closeLogs(t, others)
	require.NoError(t, a.Close())
}

// TestFailedOpenIsAnError: a segment file that cannot be opened again
// (EMFILE, ENOENT, EACCES) fails the read or write that wanted it with
// that error, counted as a read error; it panics nothing, and once the
// open works again so do reads and writes.
func TestFailedOpenIsAnError(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	files := NewFileCache(2)
	logs := openLogs(t, efs, files, 2, func() {})
	a, b := logs[0], logs[1]
	end := appendN(t, a, 100, 1)
	_, err := a.Sync()
	require.NoError(t, err)
	appendN(t, b, 100, 1)
	_, err = b.Sync()
	require.NoError(t, err)
	require.Equal(t, expected(0, 100), readAll(t, b, 0))
	require.False(t, filesOpen(a.active), "b's files took the budget")

	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENOENT, syscall.EACCES} {
		efs.Inject(vfs.OpOpen, func(name string) bool { return strings.HasPrefix(name, "t/0/") }, errno, 0)
		err = a.Read(0, 1<<20, func(wire.Batch) bool { return true })
		require.ErrorIs(t, err, errno)
		_, err = a.OffsetForTime(1)
		require.ErrorIs(t, err, errno)
		err = a.Append(nil, makeBatch(end, 1, 1))
		require.ErrorIs(t, err, errno)
		efs.Clear()
	}
	require.Equal(t, uint64(6), a.Stats().ReadErrors)
	require.False(t, a.Failed(), "nothing was written, so nothing needs a restart")
	require.Equal(t, expected(0, end), readAll(t, a, 0))
	require.NoError(t, a.Append(nil, makeBatch(end, 1, 1)))
	a.SetVisible(end + 1)
	require.Equal(t, expected(0, end+1), readAll(t, a, 0))
	closeLogs(t, logs)

	efs.Inject(vfs.OpOpen, nil, syscall.EMFILE, 0)
	_, _, err = OpenDiskLog(DiskConfig{FS: efs, Dir: "t/0", Files: files, Logger: quiet})
	require.ErrorIs(t, err, syscall.EMFILE, "opening a log whose files cannot be opened fails")
}

// TestSegFilesFollowTheTrash: a deleted segment's files, evicted before a
// reader that still holds the segment needed them, reopen where the
// segment went (the reclaimer's trash); removing them closes them once the
// last use ends, and never reopens them.
func TestSegFilesFollowTheTrash(t *testing.T) {
	mem := vfs.NewMem()
	require.NoError(t, mem.MkdirAll("d", 0o700))
	require.NoError(t, mem.MkdirAll("trash", 0o700))
	writeFile(t, mem, "d/s.log", 10)
	writeFile(t, mem, "d/t.log", 10)
	c := NewFileCache(1)
	h := c.add(mem, "d/s.log", nil, false, nil)
	h2 := c.add(mem, "d/t.log", nil, false, nil)
	use := func(h *segFiles) {
		t.Helper()
		rd, wr, err := h.acquire(false)
		require.NoError(t, err)
		require.Nil(t, wr)
		n, err := rd.ReadAt(make([]byte, 10), 0)
		require.NoError(t, err)
		require.Equal(t, 10, n)
		h.release()
	}
	use(h)
	use(h2)
	require.Equal(t, 1, mem.OpenFiles(), "the least recently used was closed")
	require.NoError(t, mem.Rename("d/s.log", "trash/s.log"))
	h.rename("trash/s.log")
	use(h)

	_, _, err := h.acquire(false)
	require.NoError(t, err)
	h.remove()
	require.Equal(t, 1, mem.OpenFiles(), "in use: not closed under its user")
	h.release()
	require.Zero(t, mem.OpenFiles())
	_, _, err = h.acquire(false)
	require.ErrorIs(t, err, ErrClosed)
	h2.remove()
	require.Zero(t, c.Stats().Open)
}

// TestDirectHandleIsEvictedAndReopened: the active segment's direct-I/O
// handle counts against the budget and is closed while idle like any
// file; the next append reopens it and the tail writer's partial block,
// kept in memory, makes the appended data whole.
func TestDirectHandleIsEvictedAndReopened(t *testing.T) {
	fsys := vfs.NewMem()
	files := NewFileCache(2)
	logs := openLogs(t, fsys, files, 3, func() {})
	a := logs[0]
	require.NotNil(t, a.active.tail, "the memory file system takes O_DIRECT")
	for round := range 5 {
		for _, l := range logs {
			appendN(t, l, int64(100*(round+1)), 1)
			_, err := l.Sync()
			require.NoError(t, err)
		}
		require.False(t, filesOpen(a.active), "a's files were evicted by the others")
	}
	for _, l := range logs {
		require.Equal(t, expected(0, 500), readAll(t, l, 0))
	}
	require.NoError(t, a.Close())
	l, rec, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/0", SegmentBytes: 4096, Logger: quiet})
	require.NoError(t, err)
	require.True(t, rec.Clean)
	require.Equal(t, expected(0, 500), readAll(t, l, 0))
	require.NoError(t, l.Close())
	closeLogs(t, logs[1:])
	require.Empty(t, unsyncedSegmentCloses(fsys))
}

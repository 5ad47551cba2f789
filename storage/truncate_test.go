package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// noDirectFS refuses O_DIRECT, as tmpfs does, so the log falls back to
// buffered appends. (MemFS takes O_DIRECT, so a log on it writes as on
// disk: whole blocks, with padding.)
type noDirectFS struct{ vfs.FS }

func (f noDirectFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if flag&syscall.O_DIRECT != 0 {
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EINVAL}
	}
	return f.FS.OpenFile(name, flag, perm)
}

// forEachPath runs test for each mode (forEachMode) with direct appends
// and with buffered ones (a file system without O_DIRECT); wrap gives the
// file system the log is opened on.
func forEachPath(t *testing.T, test func(t *testing.T, m mode, wrap func(vfs.FS) vfs.FS)) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "buffered"}[direct], func(t *testing.T) {
			forEachMode(t, func(t *testing.T, m mode) {
				test(t, m, func(fsys vfs.FS) vfs.FS {
					if direct {
						return fsys
					}
					return noDirectFS{fsys}
				})
			})
		})
	}
}

// genBatch is a batch of n records at base whose values name the offset
// and the generation that wrote it ("v<offset>.<gen>"), so that a removed
// batch coming back is told apart from the one written over it. Every
// generation's batch at an offset has the same size, so a stale byte
// would land exactly where the new batch is.
func genBatch(base int64, n int, gen int) wire.Batch {
	var bb wire.BatchBuilder
	bb.Start(nil, -1, -1)
	for i := range n {
		bb.Append(base+int64(i), nil, fmt.Appendf(nil, "v%d.%d", base+int64(i), gen), nil)
	}
	b := wire.Batch(bb.Finish())
	b.SetBaseOffset(base)
	return b
}

// appendBuf appends batch b through a Buf, as the shard does.
func appendBuf(l Log, b wire.Batch) error {
	buf := NewBuf(len(b))
	copy(buf.B, b)
	defer buf.Release()
	return l.Append(buf, wire.Batch(buf.B))
}

// fill appends batches of 1..5 records of generation gen from offset from
// until the log ends at to, and returns their base offsets. It makes
// nothing visible.
func fill(t testing.TB, l Log, from, to int64, gen int) []int64 {
	t.Helper()
	var bases []int64
	for i := 0; from < to; i++ {
		c := min(int64(1+i%5), to-from)
		require.NoError(t, appendBuf(l, genBatch(from, int(c), gen)))
		bases = append(bases, from)
		from += c
	}
	return bases
}

// genVals are the values of offsets [from, to) written by generation gen.
func genVals(from, to int64, gen int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("v%d.%d", i, gen))
	}
	return out
}

// readVisible is readAll after making everything written visible.
func readVisible(t testing.TB, l *DiskLog) []string {
	t.Helper()
	l.SetVisible(l.written.Load())
	return readAll(t, l, l.start.Load())
}

// firstAfter returns the first of bases above off.
func firstAfter(bases []int64, off int64) int64 {
	for _, b := range bases {
		if b > off {
			return b
		}
	}
	panic("no base after the offset")
}

// severalAfter returns the base of the first batch of several records
// above off.
func severalAfter(bases []int64, off int64) int64 {
	for i, b := range bases[:len(bases)-1] {
		if b > off && bases[i+1]-b > 1 {
			return b
		}
	}
	panic("no batch of several records after the offset")
}

// segmentNames lists the .log and .index files of the test log.
func segmentNames(t testing.TB, fsys vfs.FS) []string {
	t.Helper()
	entries, err := fsys.ReadDir("t/0")
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), logSuffix) || strings.HasSuffix(e.Name(), indexSuffix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// checkBytes checks the log's byte count against its segments and their
// files: a sealed one is exactly its batches, the active one may have the
// direct writer's padding.
func checkBytes(t testing.TB, fsys vfs.FS, l *DiskLog) {
	t.Helper()
	var sum int64
	for _, s := range *l.segs.Load() {
		size := s.size.Load()
		sum += size
		st, err := fsys.Stat(s.path)
		require.NoError(t, err)
		if s != l.active || st.Size() != int64(alignUp(int(size))) {
			require.Equal(t, size, st.Size(), s.path)
		}
	}
	require.Equal(t, sum, l.Stats().Bytes)
}

func TestTruncateInTheActiveSegment(t *testing.T) {
	forEachPath(t, func(t *testing.T, m mode, wrap func(vfs.FS) vfs.FS) {
		mem := vfs.NewMem()
		cfg := m.and(func(c *DiskConfig) { c.SegmentBytes = 1 << 20 })
		l, _ := openLog(t, wrap(mem), cfg)
		direct := l.active.tail != nil
		require.Equal(t, strings.Contains(t.Name(), "/direct/"), direct, "the path under test")
		bases := fill(t, l, 0, 300, 0)
		_, err := l.Sync()
		require.NoError(t, err)
		l.SetVisible(100)
		cut := firstAfter(bases, 150)

		require.NoError(t, l.Truncate(cut))
		require.Equal(t, cut, l.written.Load())
		_, end := l.Bounds()
		require.Equal(t, int64(100), end, "the visible end does not move")
		require.Equal(t, genVals(0, cut, 0), readVisible(t, l))
		checkBytes(t, mem, l)
		require.Equal(t, direct, l.active.tail != nil)
		synced, err := l.Sync()
		require.NoError(t, err)
		require.Equal(t, cut, synced)

		fill(t, l, cut, 400, 1)
		want := append(genVals(0, cut, 0), genVals(cut, 400, 1)...)
		require.Equal(t, want, readVisible(t, l))
		for _, from := range []int64{0, cut - 1, cut, cut + 1, 399} {
			require.Equal(t, want[from:], readAll(t, l, from), "from %d", from)
		}
		off, err := l.OffsetForTime(cut + 3)
		require.NoError(t, err)
		require.LessOrEqual(t, off, cut+3)
		checkBytes(t, mem, l)
		_, err = l.Sync()
		require.NoError(t, err)

		crashed, _ := openLog(t, wrap(mem.Crash()), cfg)
		require.Equal(t, want, readVisible(t, crashed), "after a crash")
		require.NoError(t, crashed.Close())
		require.NoError(t, l.Close())
		l2, rec := openLog(t, wrap(mem), cfg)
		require.True(t, rec.Clean)
		require.Equal(t, want, readVisible(t, l2), "after a clean reopen")
		require.NoError(t, l2.Close())
		require.Zero(t, LiveBufs())
	})
}

// TestTruncateAtASegmentBase: cut at a sealed segment's base, the segment
// stays, empty, as the active one, and the later ones are gone.
func TestTruncateAtASegmentBase(t *testing.T) {
	forEachPath(t, func(t *testing.T, m mode, wrap func(vfs.FS) vfs.FS) {
		mem := vfs.NewMem()
		l, _ := openLog(t, wrap(mem), m)
		direct := l.active.tail != nil
		fill(t, l, 0, 2000, 0)
		segs := *l.segs.Load()
		require.Greater(t, len(segs), 5)
		l.SetVisible(segs[2].base)
		cut := segs[3].base

		require.NoError(t, l.Truncate(cut))
		require.Len(t, *l.segs.Load(), 4)
		require.Same(t, segs[3], l.active)
		require.Equal(t, direct, l.active.tail != nil, "the sealed segment is written as the active one")
		require.Zero(t, l.active.size.Load())
		require.Equal(t, []string{
			segmentName(segs[0].base, indexSuffix), segmentName(segs[0].base, logSuffix),
			segmentName(segs[1].base, indexSuffix), segmentName(segs[1].base, logSuffix),
			segmentName(segs[2].base, indexSuffix), segmentName(segs[2].base, logSuffix),
			segmentName(segs[3].base, logSuffix),
		}, segmentNames(t, mem), "the later segments and the cut one's index are gone")
		require.Equal(t, genVals(0, cut, 0), readVisible(t, l))
		checkBytes(t, mem, l)

		// Crashed at once: exactly the kept batches.
		crashed, rec := openLog(t, wrap(mem.Crash()), m)
		require.Empty(t, rec.Corrupt)
		require.Equal(t, genVals(0, cut, 0), readVisible(t, crashed))
		require.NoError(t, crashed.Close())

		fill(t, l, cut, 2500, 1)
		want := append(genVals(0, cut, 0), genVals(cut, 2500, 1)...)
		require.Equal(t, want, readVisible(t, l))
		checkBytes(t, mem, l)

		// Crashed before a sync: a prefix of the new batches, none of the old.
		crashed, rec = openLog(t, wrap(mem.CrashWith(rand.New(rand.NewPCG(1, 2)))), m)
		require.Empty(t, rec.Corrupt)
		got := readVisible(t, crashed)
		require.GreaterOrEqual(t, len(got), int(cut))
		require.Equal(t, want[:len(got)], got)
		require.NoError(t, crashed.Close())

		require.NoError(t, l.Close())
		l2, _ := openLog(t, wrap(mem), m)
		require.Equal(t, want, readVisible(t, l2))
		require.NoError(t, l2.Close())
	})
}

// TestTruncateAcrossSegments cuts in the middle of a sealed segment
// several segments back: it becomes active again, keeps appending until
// it rolls, and reopens right.
func TestTruncateAcrossSegments(t *testing.T) {
	forEachPath(t, func(t *testing.T, m mode, wrap func(vfs.FS) vfs.FS) {
		mem := vfs.NewMem()
		l, _ := openLog(t, wrap(mem), m)
		bases := fill(t, l, 0, 3000, 0)
		_, err := l.Sync()
		require.NoError(t, err)
		segs := *l.segs.Load()
		require.Greater(t, len(segs), 6)
		require.NoError(t, l.Close()) // every segment gets an index, the active one too
		l, _ = openLog(t, wrap(mem), m)
		segs = *l.segs.Load()
		l.SetVisible(segs[1].base + 3)
		cut := firstAfter(bases, segs[2].base+5)
		require.Less(t, cut, segs[2].next.Load())

		require.NoError(t, l.Truncate(cut))
		require.Len(t, *l.segs.Load(), 3)
		require.Same(t, segs[2], l.active)
		require.Equal(t, cut, l.active.next.Load())
		for _, e := range l.active.entries() {
			require.Less(t, segs[2].base+int64(e.rel), cut, "no index entry at or after the cut")
		}
		require.NotContains(t, segmentNames(t, mem), segmentName(segs[2].base, indexSuffix))
		require.Equal(t, genVals(0, cut, 0), readVisible(t, l))
		checkBytes(t, mem, l)

		fill(t, l, cut, 4000, 1)
		require.Greater(t, len(*l.segs.Load()), 4, "it rolled")
		want := append(genVals(0, cut, 0), genVals(cut, 4000, 1)...)
		require.Equal(t, want, readVisible(t, l))
		for _, from := range []int64{segs[2].base, cut - 1, cut, 3999} {
			require.Equal(t, want[from:], readAll(t, l, from), "from %d", from)
		}
		checkBytes(t, mem, l)
		_, err = l.Sync()
		require.NoError(t, err)

		crashed, rec := openLog(t, wrap(mem.Crash()), m)
		require.Empty(t, rec.Corrupt)
		require.Equal(t, want, readVisible(t, crashed))
		require.NoError(t, crashed.Close())
		require.NoError(t, l.Close())
		l2, rec := openLog(t, wrap(mem), m)
		require.True(t, rec.Clean)
		require.Zero(t, rec.Scanned, "every index written after the cut matches")
		require.Equal(t, want, readVisible(t, l2))
		require.NoError(t, l2.Close())
	})
}

// TestTruncateAtTheEndDropsStaged: truncating at the end written changes
// nothing written, and drops what was staged after it.
func TestTruncateAtTheEndDropsStaged(t *testing.T) {
	mem := vfs.NewMem()
	l, _ := openLog(t, mem, nil)
	fill(t, l, 0, 50, 0)
	names := segmentNames(t, mem)
	for i := range int64(3) {
		b := genBatch(50+i, 1, 0)
		buf := NewBuf(len(b))
		copy(buf.B, b)
		require.NoError(t, l.Stage(buf, wire.Batch(buf.B)))
		buf.Release()
	}
	require.Equal(t, int64(3), LiveBufs(), "the staged batches hold their buffers")

	require.NoError(t, l.Truncate(50))
	require.Zero(t, LiveBufs(), "and Truncate released them")
	end, err := l.WritePending()
	require.NoError(t, err)
	require.Equal(t, int64(50), end, "nothing staged is written")
	require.Equal(t, names, segmentNames(t, mem))
	require.Equal(t, genVals(0, 50, 0), readVisible(t, l))

	// A cut below the end drops the staged batches too.
	l.SetVisible(40)
	require.NoError(t, l.Stage(nil, genBatch(50, 2, 0)))
	require.NoError(t, l.Truncate(48))
	end, err = l.WritePending()
	require.NoError(t, err)
	require.Equal(t, int64(48), end)
	require.NoError(t, l.Stage(nil, genBatch(48, 4, 1)))
	end, err = l.WritePending()
	require.NoError(t, err)
	require.Equal(t, int64(52), end)
	require.Equal(t, append(genVals(0, 48, 0), genVals(48, 52, 1)...), readVisible(t, l))
	require.NoError(t, l.Close())
}

func TestTruncateRefusesBadOffsets(t *testing.T) {
	for _, kind := range []string{"disk", "memory"} {
		t.Run(kind, func(t *testing.T) {
			var l Truncater
			if kind == "disk" {
				dl, _ := openLog(t, vfs.NewMem(), nil)
				l = dl
			} else {
				l = NewMemLog(1 << 20)
			}
			bases := fill(t, l, 0, 100, 0)
			l.SetVisible(40)
			in := severalAfter(bases, 60)

			require.ErrorIs(t, l.Truncate(101), ErrTruncateBeyondEnd)
			require.ErrorIs(t, l.Truncate(39), ErrTruncateVisible)
			require.ErrorIs(t, l.Truncate(0), ErrTruncateVisible)
			require.ErrorIs(t, l.Truncate(in+1), ErrTruncateBoundary)
			l.SetVisible(100)
			require.Equal(t, genVals(0, 100, 0), readAll(t, l, 0), "nothing changed")
			l.SetVisible(40)
			require.NoError(t, l.Truncate(in))
			require.NoError(t, l.Truncate(in), "at the end: a no-op")
			require.ErrorIs(t, l.Truncate(in+1), ErrTruncateBeyondEnd)
			require.NoError(t, l.Close())
			require.Zero(t, LiveBufs())
		})
	}
}

func TestTruncateOfAFailedOrClosedLog(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	l, _ := openLog(t, efs, nil)
	fill(t, l, 0, 20, 0)
	efs.InjectSync(nil, syscall.EIO, 0)
	_, err := l.Sync()
	require.ErrorIs(t, err, syscall.EIO)
	efs.Clear()
	require.ErrorIs(t, l.Truncate(20), ErrFailed)

	l2, _ := openLog(t, vfs.NewMem(), nil)
	fill(t, l2, 0, 20, 0)
	require.NoError(t, l2.Close())
	require.ErrorIs(t, l2.Truncate(20), ErrClosed)

	require.ErrorIs(t, NewOfflineLog(syscall.EACCES).Truncate(0), ErrOffline)
}

// TestTruncateFailureLeavesAPrefix fails each file-system operation of a
// truncation in turn, crashes, and reopens: the log found is always a
// prefix of the log before (never one with a hole, never one without the
// batches below the cut), and a truncate that failed after it began
// changing files failed the log. Once no operation fails, the crash finds
// exactly the batches kept.
func TestTruncateFailureLeavesAPrefix(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode) {
		for k := 0; ; k++ {
			mem := vfs.NewMem()
			efs := vfs.NewErrors(mem)
			rc := newTestReclaimer(t, mem, 1024)
			cfg := m.and(func(c *DiskConfig) { c.Reclaim = rc })
			l, _ := openLog(t, efs, cfg)
			bases := fill(t, l, 0, 600, 0)
			_, err := l.Sync()
			require.NoError(t, err)
			fill(t, l, 600, 800, 0) // not synced
			segs := *l.segs.Load()
			require.Greater(t, len(segs), 4)
			l.SetVisible(segs[1].base)
			cut := firstAfter(bases, segs[1].base+2)

			efs.Inject(^vfs.OpRead, nil, syscall.EIO, k)
			err = l.Truncate(cut)
			efs.Clear()
			after := mem.Crash()
			l2, rec := openLog(t, after, m)
			require.Empty(t, rec.Corrupt, "k=%d", k)
			got := readVisible(t, l2)
			require.NoError(t, l2.Close())
			if err == nil {
				require.Equal(t, genVals(0, cut, 0), got, "k=%d: the truncate is durable", k)
				require.NoError(t, l.Close())
				t.Logf("a truncate takes %d operations", k)
				return
			}
			if errors.Is(err, ErrFailed) {
				require.True(t, l.Failed(), "k=%d", k)
			} else {
				require.False(t, l.Failed(), "k=%d: %v", k, err)
			}
			require.GreaterOrEqual(t, len(got), int(cut), "k=%d: the synced batches below the cut survive", k)
			require.Equal(t, genVals(0, int64(len(got)), 0), got, "k=%d: a prefix", k)
			require.NoError(t, l.Close())
			require.Less(t, k, 1000, "the truncate never succeeds")
		}
	})
}

// TestTruncateOnTheRealFileSystem runs truncations where the active
// segment is written with direct I/O (where the file system allows it):
// one in the active segment, one that makes a sealed segment active
// again with its direct handle back.
func TestTruncateOnTheRealFileSystem(t *testing.T) {
	dir := t.TempDir()
	open := func() (*DiskLog, Recovery) {
		l, rec, err := OpenDiskLog(DiskConfig{FS: vfs.Default(), Dir: dir + "/t/0", SegmentBytes: 16 << 10,
			IndexInterval: 512, Logger: quiet})
		require.NoError(t, err)
		return l, rec
	}
	l, _ := open()
	direct := l.active.tail != nil
	bases := fill(t, l, 0, 3000, 0)
	l.SetVisible(10)

	cut := firstAfter(bases, l.active.base+7)
	require.NoError(t, l.Truncate(cut))
	st, err := os.Stat(l.active.path)
	require.NoError(t, err)
	require.Equal(t, l.active.size.Load(), st.Size(), "cut at the batch, padding and all")
	fill(t, l, cut, 3500, 1)
	want := append(genVals(0, cut, 0), genVals(cut, 3500, 1)...)
	require.Equal(t, want, readVisible(t, l))
	if direct {
		st, err := os.Stat(l.active.path)
		require.NoError(t, err)
		require.Zero(t, st.Size()%directAlign, "appends after the cut are direct again")
	}

	segs := *l.segs.Load()
	require.Greater(t, len(segs), 3)
	l.SetVisible(10)
	cut = firstAfter(bases, segs[1].base+3)
	require.NoError(t, l.Truncate(cut))
	require.Same(t, segs[1], l.active)
	require.Equal(t, direct, l.active.tail != nil, "the sealed segment writes directly again")
	fill(t, l, cut, 4000, 2)
	want = append(genVals(0, cut, 0), genVals(cut, 4000, 2)...)
	require.Equal(t, want, readVisible(t, l))

	// Reopened without a close (as after a crash): the padding is cut.
	l2, rec := open()
	require.False(t, rec.Clean)
	require.Empty(t, rec.Corrupt)
	require.Equal(t, want, readVisible(t, l2))
	require.NoError(t, l2.Close())
	l3, rec := open()
	require.True(t, rec.Clean)
	require.Equal(t, want, readVisible(t, l3))
	require.NoError(t, l3.Close())
	t.Logf("direct I/O in use: %v", direct)
}

// TestTruncateDoesNotServeStaleCachedBlocks: blocks cached before a cut
// are not served for the bytes written after it, which sit at the same
// positions with the same offsets and sizes.
func TestTruncateDoesNotServeStaleCachedBlocks(t *testing.T) {
	cache, err := NewBlockCache(64 << 20)
	require.NoError(t, err)
	t.Cleanup(cache.Close)
	l, _ := openLog(t, vfs.NewMem(), func(c *DiskConfig) { c.SegmentBytes = 1 << 20; c.Cache = cache })
	const n = 10_000
	bases := fill(t, l, 0, n, 0)
	require.Greater(t, l.active.size.Load(), int64(3*blockSize))
	visible := firstAfter(bases, 100)
	l.SetVisible(visible)
	pos, err := l.batchPos(l.active, visible)
	require.NoError(t, err)
	require.Less(t, pos, int64(blockSize), "the cut is in the first block")
	require.Equal(t, genVals(0, visible, 0), readAll(t, l, 0))
	l.SetVisible(n)
	require.Equal(t, genVals(0, n, 0), readAll(t, l, 0), "every whole block read through the cache")
	cache.c.Wait()
	l.SetVisible(visible)

	require.NoError(t, l.Truncate(visible))
	fill(t, l, visible, n, 1)
	l.SetVisible(n)
	require.Equal(t, append(genVals(0, visible, 0), genVals(visible, n, 1)...), readAll(t, l, 0))
	require.NoError(t, l.Close())
}

// TestReadOfAnExtentLoadedBeforeATruncate: a read that loaded a segment's
// size before a cut reads the bytes below it, though the file now ends
// before the block it reads.
func TestReadOfAnExtentLoadedBeforeATruncate(t *testing.T) {
	mem := vfs.NewMem()
	l, _ := openLog(t, mem, func(c *DiskConfig) { c.SegmentBytes = 1 << 20 })
	bases := fill(t, l, 0, 300, 0)
	s := l.active
	require.Less(t, s.size.Load(), int64(blockSize), "one unfinished block")
	cut := firstAfter(bases, 200)
	l.SetVisible(cut)
	ext := s.extent()
	pos, base := s.lookup(cut - 1)
	require.NoError(t, l.Truncate(cut))

	var last lastBlocks
	var use fileUse
	defer use.done()
	hdr := make([]byte, wire.BatchHeaderSize)
	require.NoError(t, l.readRange(s, ext, pos, hdr, &last, &use))
	require.Equal(t, base, wire.Batch(hdr).BaseOffset())
	require.NotEqual(t, ext.id, s.extent().id, "the cut segment is cached under a new id")
	require.NoError(t, l.Close())
}

// TestReadsDuringTruncates runs readers over the visible log while the
// writer cuts and rewrites its tail again and again, across segments,
// through a block cache: every record read is the one that was visible at
// its offset.
func TestReadsDuringTruncates(t *testing.T) {
	cache, err := NewBlockCache(8 << 20)
	require.NoError(t, err)
	t.Cleanup(cache.Close)
	l, _ := openLog(t, vfs.NewMem(), func(c *DiskConfig) { c.Cache = cache; c.Files = NewFileCache(2) })
	const rounds, maxOff = 150, 1 << 16
	var gens [maxOff]atomic.Int32 // the generation visible at each offset
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for {
				select {
				case <-done:
					return
				default:
				}
				start, end := l.Bounds()
				if end == start {
					continue
				}
				from := start + rng.Int64N(end-start)
				var bad error
				err := l.Read(from, 4096, func(b wire.Batch) bool {
					it := b.Records()
					var rec wire.Record
					for it.Next(&rec) {
						// Visible, so never cut again: its generation is final.
						want := fmt.Sprintf("v%d.%d", rec.Offset, gens[rec.Offset].Load())
						if string(rec.Value) != want {
							bad = fmt.Errorf("offset %d: read %q, want %q", rec.Offset, rec.Value, want)
							return false
						}
					}
					return true
				})
				if err = errors.Join(err, bad); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(3, 3))
	var bases []int64
	visible, end := int64(0), int64(0)
	for round := range rounds {
		if round > 0 {
			// Cut at a batch above the visible end, or at the end.
			var cands []int64
			for _, b := range bases {
				if b >= visible {
					cands = append(cands, b)
				}
			}
			cut := end
			if len(cands) > 0 && rng.IntN(4) > 0 {
				cut = cands[rng.IntN(len(cands))]
			}
			require.NoError(t, l.Truncate(cut))
			for len(bases) > 0 && bases[len(bases)-1] >= cut {
				bases = bases[:len(bases)-1]
			}
			end = cut
		}
		to := min(end+1+rng.Int64N(300), maxOff)
		for off := end; off < to; off++ {
			gens[off].Store(int32(round))
		}
		bases = append(bases, fill(t, l, end, to, round)...)
		end = to
		// Publish part of what was written: it is never cut again.
		visible += rng.Int64N(end-visible+1) / 4
		for i := len(bases) - 1; i >= 0; i-- {
			if bases[i] <= visible {
				visible = bases[i]
				break
			}
		}
		l.SetVisible(visible)
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
}

// TestTruncateThroughTheReclaimer: segments a cut deletes go to the
// reclaimer's trash, a reader holding one keeps reading it, and a crash
// right after the cut does not bring them back.
func TestTruncateThroughTheReclaimer(t *testing.T) {
	mem := vfs.NewMem()
	rc := newTestReclaimer(t, mem, 1024)
	l, _ := openLog(t, mem, func(c *DiskConfig) { c.Reclaim = rc })
	fill(t, l, 0, 2000, 0)
	segs := *l.segs.Load()
	l.SetVisible(segs[1].base)
	held := segs[len(segs)-1]
	require.True(t, held.acquire(), "a reader holds the active segment")
	cut := segs[2].base

	require.NoError(t, l.Truncate(cut))
	after := mem.Crash()
	l2, rec := openLog(t, after, nil)
	require.Empty(t, rec.Corrupt)
	require.Equal(t, genVals(0, cut, 0), readVisible(t, l2))
	require.NoError(t, l2.Close())
	require.Equal(t, []string{
		segmentName(segs[0].base, indexSuffix), segmentName(segs[0].base, logSuffix),
		segmentName(segs[1].base, indexSuffix), segmentName(segs[1].base, logSuffix),
		segmentName(segs[2].base, logSuffix),
	}, segmentNames(t, mem))

	f, _, err := held.files.acquire(false)
	require.NoError(t, err, "the held segment is readable from the trash")
	hdr := make([]byte, wire.BatchHeaderSize)
	_, err = f.ReadAt(hdr, 0)
	require.NoError(t, err)
	require.Equal(t, held.base, wire.Batch(hdr).BaseOffset())
	held.files.release()
	held.release()
	require.NoError(t, l.Close())
}

// TestTruncateToTheStart empties a log whose first segments retention
// removed; it starts again at the same offset after a reopen.
func TestTruncateToTheStart(t *testing.T) {
	mem := vfs.NewMem()
	l, _ := openLog(t, mem, nil)
	fill(t, l, 0, 2000, 0)
	segs := *l.segs.Load()
	_, err := l.Retain(time.Now(), 0, l.Stats().Bytes-segs[0].size.Load()-segs[1].size.Load())
	require.NoError(t, err)
	start, _ := l.Bounds()
	require.Equal(t, segs[2].base, start)
	l.SetVisible(start)
	require.ErrorIs(t, l.Truncate(start-1), ErrTruncateVisible)

	require.NoError(t, l.Truncate(start))
	require.Len(t, *l.segs.Load(), 1)
	require.Empty(t, readVisible(t, l))
	require.Equal(t, []string{segmentName(start, logSuffix)}, segmentNames(t, mem))
	require.NoError(t, l.Close())
	l2, _ := openLog(t, mem, nil)
	s, e := l2.Bounds()
	require.Equal(t, []int64{start, start}, []int64{s, e})
	fill(t, l2, start, start+10, 1)
	require.Equal(t, genVals(start, start+10, 1), readVisible(t, l2))
	require.NoError(t, l2.Close())
}

func TestMemLogTruncate(t *testing.T) {
	m := NewMemLog(1 << 20)
	bases := fill(t, m, 0, 100, 0)
	require.ErrorIs(t, m.Truncate(bases[len(bases)-1]), ErrTruncateVisible,
		"before SetVisible every batch is visible")
	m.SetVisible(30)
	_, end := m.Bounds()
	require.Equal(t, int64(30), end)
	require.Equal(t, genVals(0, 30, 0), readAll(t, m, 0), "readers stop at the visible end")
	off, err := m.OffsetForTime(50)
	require.NoError(t, err)
	require.Equal(t, int64(30), off)

	cut := firstAfter(bases, 60)
	require.NoError(t, m.Truncate(cut))
	require.Equal(t, int64(slices.Index(bases, cut)), LiveBufs(), "the cut batches' buffers are released")
	synced, err := m.Sync()
	require.NoError(t, err)
	require.Equal(t, cut, synced)
	fill(t, m, cut, 120, 1)
	m.SetVisible(120)
	require.Equal(t, append(genVals(0, cut, 0), genVals(cut, 120, 1)...), readAll(t, m, 0))
	var bytes int64
	require.NoError(t, m.Read(0, 1<<20, func(b wire.Batch) bool { bytes += int64(len(b)); return true }))
	require.Equal(t, bytes, m.Stats().Bytes)

	// Down to nothing, then on from there.
	m2 := NewMemLog(1 << 20)
	fill(t, m2, 0, 10, 0)
	m2.SetVisible(0)
	require.NoError(t, m2.Truncate(0))
	s, e := m2.Bounds()
	require.Equal(t, []int64{0, 0}, []int64{s, e})
	fill(t, m2, 0, 5, 1)
	m2.SetVisible(5)
	require.Equal(t, genVals(0, 5, 1), readAll(t, m2, 0))
	require.NoError(t, m.Close())
	require.NoError(t, m2.Close())
	require.Zero(t, LiveBufs())
}

// modelBatch is a batch of the property test's model.
type modelBatch struct {
	base int64
	n    int
	gen  int
}

// TestTruncateProperty interleaves appends (direct and staged), syncs,
// publications, truncations (good and bad), clean reopens and crashes on
// a disk log, plain or encrypted, written with direct I/O or buffered,
// with small segments and a small file budget, and checks it after every
// step against a list of batches: it
// holds exactly the model's batches, no truncation loses one below its
// cut, no crash loses a synced one or brings back a removed one.
func TestTruncateProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		mem := vfs.NewMem()
		var keys *crypt.Keyring
		if rapid.Bool().Draw(rt, "encrypted") {
			keys = crypt.NewKeyring()
			if err := keys.Add(1, crypt.NewDataKey(), true); err != nil {
				rt.Fatal(err)
			}
		}
		segBytes := rapid.SampledFrom([]int64{600, 2048, 1 << 20}).Draw(rt, "segment bytes")
		budget := rapid.IntRange(0, 2).Draw(rt, "file budget")
		direct := rapid.Bool().Draw(rt, "direct")
		open := func() *DiskLog {
			var fsys vfs.FS = mem
			if !direct {
				fsys = noDirectFS{mem}
			}
			l, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/0", SegmentBytes: segBytes, IndexInterval: 128,
				Keys: keys, Files: NewFileCache(budget), Logger: quiet})
			if err != nil {
				rt.Fatal(err)
			}
			return l
		}
		l := open()
		var model []modelBatch
		var durable, visible int64
		gen := 0
		end := func() int64 {
			if len(model) == 0 {
				return 0
			}
			b := model[len(model)-1]
			return b.base + int64(b.n)
		}
		cutModel := func(at int64) {
			for len(model) > 0 && model[len(model)-1].base >= at {
				model = model[:len(model)-1]
			}
		}
		batches := func(t *rapid.T) []wire.Batch {
			var out []wire.Batch
			for i := range rapid.IntRange(1, 4).Draw(t, "batches") {
				n := rapid.IntRange(1, 6).Draw(t, fmt.Sprint("records", i))
				out = append(out, genBatch(end(), n, gen))
				model = append(model, modelBatch{end(), n, gen})
			}
			return out
		}
		rt.Repeat(map[string]func(*rapid.T){
			"append": func(t *rapid.T) {
				for _, b := range batches(t) {
					if err := l.Append(nil, b); err != nil {
						t.Fatal(err)
					}
				}
			},
			"stage": func(t *rapid.T) {
				for _, b := range batches(t) {
					if err := l.Stage(nil, b); err != nil {
						t.Fatal(err)
					}
				}
				if written, err := l.WritePending(); err != nil || written != end() {
					t.Fatalf("WritePending: %d, %v; want %d", written, err, end())
				}
			},
			"sync": func(t *rapid.T) {
				synced, err := l.Sync()
				if err != nil || synced != end() {
					t.Fatalf("Sync: %d, %v; want %d", synced, err, end())
				}
				durable = synced
			},
			"publish": func(t *rapid.T) {
				var cands []int64
				for _, b := range model {
					if b.base > visible && b.base <= durable {
						cands = append(cands, b.base)
					}
				}
				if durable > visible {
					cands = append(cands, durable)
				}
				if len(cands) == 0 {
					t.Skip("nothing to publish")
				}
				visible = rapid.SampledFrom(cands).Draw(t, "visible")
				l.SetVisible(visible)
			},
			"truncate": func(t *rapid.T) {
				cands := []int64{end()}
				for _, b := range model {
					if b.base >= visible {
						cands = append(cands, b.base)
					}
				}
				at := rapid.SampledFrom(cands).Draw(t, "at")
				if err := l.Truncate(at); err != nil {
					t.Fatalf("Truncate(%d): %v", at, err)
				}
				if at < end() {
					durable = at // everything kept is synced
				}
				cutModel(at)
				gen++
			},
			"bad truncate": func(t *rapid.T) {
				var at int64
				var want error
				switch rapid.IntRange(0, 2).Draw(t, "kind") {
				case 0:
					if visible == 0 {
						t.Skip("nothing visible")
					}
					at, want = rapid.Int64Range(0, visible-1).Draw(t, "below"), ErrTruncateVisible
				case 1:
					var inside []int64
					for _, b := range model {
						for o := b.base + 1; b.base >= visible && o < b.base+int64(b.n); o++ {
							inside = append(inside, o)
						}
					}
					if len(inside) == 0 {
						t.Skip("no batch of several records above the visible end")
					}
					at, want = rapid.SampledFrom(inside).Draw(t, "inside"), ErrTruncateBoundary
				default:
					at, want = end()+rapid.Int64Range(1, 10).Draw(t, "beyond"), ErrTruncateBeyondEnd
				}
				if err := l.Truncate(at); !errors.Is(err, want) {
					t.Fatalf("Truncate(%d): %v, want %v", at, err, want)
				}
			},
			"reopen": func(t *rapid.T) {
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l = open()
				durable = end()
				l.SetVisible(visible) // as a replicated partition does, from what its group committed
			},
			"crash": func(t *rapid.T) {
				if direct {
					// No torn tails: a direct write that rewrites the synced
					// padding of the last block and is torn after it leaves
					// zeros before whole batches, which recovery reports as
					// corruption in the middle, a limitation of recovery
					// that predates Truncate.
					mem = mem.Crash()
				} else {
					mem = mem.CrashWith(rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1)))
				}
				l = open()
				got := l.written.Load()
				if got < durable || got > end() {
					t.Fatalf("recovered up to %d; synced %d, written %d", got, durable, end())
				}
				cutModel(got)
				if end() != got {
					t.Fatalf("recovered up to %d, not a batch boundary", got)
				}
				durable = got
				l.SetVisible(visible)
			},
			"": func(t *rapid.T) {
				if w := l.written.Load(); w != end() {
					t.Fatalf("written %d, model %d", w, end())
				}
				if _, e := l.Bounds(); e != visible {
					t.Fatalf("visible %d, model %d", e, visible)
				}
				var want []string
				var bytes int64
				for _, b := range model {
					want = append(want, genVals(b.base, b.base+int64(b.n), b.gen)...)
					bytes += int64(storedSize(genBatch(b.base, b.n, b.gen), keys != nil))
				}
				if st := l.Stats(); st.Bytes != bytes || len(st.Corrupt) > 0 {
					t.Fatalf("bytes %d, model %d; corrupt %v", st.Bytes, bytes, st.Corrupt)
				}
				l.SetVisible(end())
				got, err := readValues(l, 0)
				l.SetVisible(visible)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("log holds\n%v\nmodel\n%v", got, want)
				}
			},
		})
		if err := l.Close(); err != nil {
			rt.Fatal(err)
		}
		if bad := unsyncedSegmentCloses(mem); len(bad) > 0 {
			rt.Fatalf("segment files closed holding unsynced writes: %v", bad)
		}
	})
}

// readValues is readAll for a rapid test.
func readValues(l Log, from int64) ([]string, error) {
	var vals []string
	for {
		before := len(vals)
		err := l.Read(from, 1000, func(b wire.Batch) bool {
			it := b.Records()
			var r wire.Record
			for it.Next(&r) {
				if r.Offset >= from {
					vals = append(vals, string(r.Value))
					from = r.Offset + 1
				}
			}
			return true
		})
		if err != nil || len(vals) == before {
			return vals, err
		}
	}
}

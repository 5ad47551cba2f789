package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// openStage opens l's stage and starts it at start when it is new.
func openStage(t testing.TB, l *DiskLog, start int64) *DiskLog {
	t.Helper()
	s, err := l.OpenStage()
	require.NoError(t, err)
	st := s.(*DiskLog)
	if st.written.Load() == st.start.Load() {
		require.NoError(t, st.Reset(start))
	}
	return st
}

// stageExists reports whether the test log's stage directory exists.
func stageExists(t testing.TB, fsys vfs.FS) bool {
	_, err := fsys.Stat("t/0/" + StageDir)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	require.NoError(t, err)
	return true
}

// TestAdoptOntoAnEmptyActiveSegment: a log Reset to the stage's start
// adopts a stage of several segments; the empty active segment is
// replaced by the stage's first, appends continue after the adopted ones,
// and a clean and an unclean reopen read it all back.
func TestAdoptOntoAnEmptyActiveSegment(t *testing.T) {
	forEachPath(t, func(t *testing.T, m mode, wrap func(vfs.FS) vfs.FS) {
		mem := vfs.NewMem()
		l, _ := openLog(t, wrap(mem), m)
		direct := l.active.tail != nil
		fill(t, l, 0, 700, 0)
		l.SetVisible(700)
		st := openStage(t, l, 5000)
		fill(t, st, 5000, 6500, 1)
		require.Greater(t, len(*st.segs.Load()), 3, "a stage of several segments")
		require.True(t, stageExists(t, mem))

		require.NoError(t, l.Reset(5000))
		require.NoError(t, l.Adopt(st))
		require.True(t, st.closed.Load(), "the adopted stage is closed")
		require.False(t, stageExists(t, mem), "and its directory gone")
		require.Equal(t, int64(6500), l.written.Load())
		start, vis := l.Bounds()
		require.Equal(t, int64(5000), start)
		require.Equal(t, int64(5000), vis, "the visible end does not move")
		require.Equal(t, int64(5000), (*l.segs.Load())[0].base)
		require.Equal(t, direct, l.active.tail != nil, "the last adopted segment is active as after open")
		checkBytes(t, mem, l)
		want := genVals(5000, 6500, 1)
		require.Equal(t, want, readVisible(t, l))

		// Appends continue after the adopted batches, and roll.
		fill(t, l, 6500, 7000, 2)
		want = append(want, genVals(6500, 7000, 2)...)
		require.Equal(t, want, readVisible(t, l))
		for _, from := range []int64{5000, 6499, 6500, 6999} {
			require.Equal(t, want[from-5000:], readAll(t, l, from), "from %d", from)
		}
		checkBytes(t, mem, l)
		_, err := l.Sync()
		require.NoError(t, err)

		crashed, rec := openLog(t, wrap(mem.Crash()), m)
		require.Empty(t, rec.Corrupt)
		require.Equal(t, want, readVisible(t, crashed), "after a crash")
		require.NoError(t, crashed.Close())
		require.NoError(t, l.Close())
		l2, rec := openLog(t, wrap(mem), m)
		require.True(t, rec.Clean)
		require.Zero(t, rec.Scanned, "the adopted indexes are trusted")
		require.Equal(t, want, readVisible(t, l2), "after a clean reopen")
		require.NoError(t, l2.Close())
		require.Zero(t, LiveBufs())
	})
}

// TestAdoptOntoANonEmptyActiveSegment: a log Truncated to the stage's
// start keeps its batches below it; its active segment is sealed and the
// stage's segments follow it.
func TestAdoptOntoANonEmptyActiveSegment(t *testing.T) {
	forEachPath(t, func(t *testing.T, m mode, wrap func(vfs.FS) vfs.FS) {
		mem := vfs.NewMem()
		l, _ := openLog(t, wrap(mem), m)
		bases := fill(t, l, 0, 1500, 0)
		l.SetVisible(1000)
		cut := firstAfter(bases, (*l.segs.Load())[len(*l.segs.Load())-1].base+3)
		require.NoError(t, l.Truncate(cut))
		require.NotZero(t, l.active.size.Load())
		before := len(*l.segs.Load())
		oldActive := l.active

		st := openStage(t, l, cut)
		fill(t, st, cut, cut+1200, 1)
		adopted := len(*st.segs.Load())
		require.NoError(t, l.Adopt(st))
		require.Len(t, *l.segs.Load(), before+adopted)
		require.NotSame(t, oldActive, l.active)
		require.Nil(t, oldActive.tail, "the old active segment is sealed")
		require.Contains(t, segmentNames(t, mem), segmentName(oldActive.base, indexSuffix))
		checkBytes(t, mem, l)
		_, vis := l.Bounds()
		require.Equal(t, int64(1000), vis)

		want := append(genVals(0, cut, 0), genVals(cut, cut+1200, 1)...)
		require.Equal(t, want, readVisible(t, l))
		for _, from := range []int64{0, cut - 1, cut, cut + 1, cut + 1199} {
			require.Equal(t, want[from:], readAll(t, l, from), "from %d across the boundary", from)
		}
		fill(t, l, cut+1200, cut+1300, 2)
		want = append(want, genVals(cut+1200, cut+1300, 2)...)
		_, err := l.Sync()
		require.NoError(t, err)

		crashed, rec := openLog(t, wrap(mem.Crash()), m)
		require.Empty(t, rec.Corrupt)
		require.Equal(t, want, readVisible(t, crashed))
		require.NoError(t, crashed.Close())
		require.NoError(t, l.Close())
		l2, rec := openLog(t, wrap(mem), m)
		require.True(t, rec.Clean)
		require.Equal(t, want, readVisible(t, l2))
		require.NoError(t, l2.Close())
	})
}

// TestStageLifecycle: OpenStage returns the open stage again; a stage
// outlives a restart with what it held; the log's own recovery ignores
// it; DropStage and Drop remove it.
func TestStageLifecycle(t *testing.T) {
	mem := vfs.NewMem()
	l, _ := openLog(t, mem, nil)
	fill(t, l, 0, 100, 0)
	s1, err := l.OpenStage()
	require.NoError(t, err)
	start, end := s1.Bounds()
	require.Zero(t, start, "a new stage starts at 0")
	require.Zero(t, end)
	s2, err := l.OpenStage()
	require.NoError(t, err)
	require.Same(t, s1.(*DiskLog), s2.(*DiskLog))
	_, err = s1.(*DiskLog).OpenStage()
	require.Error(t, err, "a stage has no stage")
	require.NoError(t, s1.Reset(100))
	fill(t, s1, 100, 900, 1)
	require.NoError(t, l.Close())
	require.True(t, s1.(*DiskLog).closed.Load(), "closing the log closes its stage")

	l, rec := openLog(t, mem, nil)
	require.True(t, rec.Clean)
	require.Empty(t, rec.Corrupt, "the stage directory is not a segment")
	require.Equal(t, genVals(0, 100, 0), readVisible(t, l))
	st := openStage(t, l, 0)
	start, end = st.Bounds()
	require.Equal(t, int64(100), start, "the stage is recovered with what it holds")
	require.Equal(t, int64(900), end)
	require.Equal(t, genVals(100, 900, 1), readVisible(t, st))

	require.NoError(t, l.DropStage())
	require.True(t, st.closed.Load())
	require.False(t, stageExists(t, mem))
	require.NoError(t, l.DropStage(), "no stage: no error")
	s3, err := l.OpenStage()
	require.NoError(t, err)
	require.NotSame(t, st, s3.(*DiskLog))
	_, end = s3.Bounds()
	require.Zero(t, end, "a dropped stage is gone")
	require.True(t, stageExists(t, mem))
	require.NoError(t, l.Drop())
	_, err = mem.Stat("t/0")
	require.ErrorIs(t, err, fs.ErrNotExist, "Drop removes the stage with the log")
	require.True(t, s3.(*DiskLog).closed.Load())
}

// TestAdoptRefusals: a stage that does not start at the log's end, or is
// not the log's, changes nothing; a failed or closed log adopts nothing;
// an empty stage at the end is dropped.
func TestAdoptRefusals(t *testing.T) {
	mem := vfs.NewMem()
	l, _ := openLog(t, mem, nil)
	fill(t, l, 0, 300, 0)
	st := openStage(t, l, 250)
	fill(t, st, 250, 400, 1)
	err := l.Adopt(st)
	require.ErrorIs(t, err, ErrStageMismatch, "the stage starts below the log's end")
	require.False(t, l.Failed())
	require.False(t, st.closed.Load())
	require.Equal(t, int64(300), l.written.Load())
	require.Equal(t, genVals(250, 400, 1), readVisible(t, st))

	other, _ := openLog(t, mem, func(c *DiskConfig) { c.Dir = "t/1" })
	ost := openStage(t, other, 300)
	fill(t, ost, 300, 310, 2)
	require.ErrorIs(t, l.Adopt(ost), ErrStageMismatch, "another log's stage")
	require.ErrorIs(t, l.Adopt(NewMemLog(1<<20)), ErrStageMismatch)
	require.NoError(t, other.Close())

	// The caller cuts the log back to the stage's start: now it adopts.
	l.SetVisible(250)
	require.NoError(t, l.Truncate(250))
	require.NoError(t, l.Adopt(st))
	require.Equal(t, append(genVals(0, 250, 0), genVals(250, 400, 1)...), readVisible(t, l))
	require.ErrorIs(t, l.Adopt(st), ErrStageMismatch, "an adopted stage is gone")

	// An empty stage at the end is dropped, and nothing changes.
	empty := openStage(t, l, 400)
	require.NoError(t, l.Adopt(empty))
	require.False(t, stageExists(t, mem))
	require.Equal(t, int64(400), l.written.Load())

	// A closed stage (the caller closed it) is refused; OpenStage reopens it.
	st = openStage(t, l, 400)
	fill(t, st, 400, 420, 3)
	require.NoError(t, st.Close())
	require.ErrorIs(t, l.Adopt(st), ErrClosed)
	st = openStage(t, l, 0)
	require.NoError(t, l.Adopt(st))
	require.Equal(t, genVals(400, 420, 3), readVisible(t, l)[400:])

	require.NoError(t, l.Close())
	require.ErrorIs(t, l.Adopt(st), ErrClosed)
	_, err = l.OpenStage()
	require.ErrorIs(t, err, ErrClosed)

	efs := vfs.NewErrors(vfs.NewMem())
	f, _ := openLog(t, efs, nil)
	fill(t, f, 0, 20, 0)
	fst := openStage(t, f, 20)
	fill(t, fst, 20, 40, 1)
	efs.InjectSync(func(name string) bool { return name == "t/0/"+segmentName(0, logSuffix) }, syscall.EIO, 0)
	_, err = f.Sync()
	require.ErrorIs(t, err, syscall.EIO)
	efs.Clear()
	require.ErrorIs(t, f.Adopt(fst), ErrFailed)
	_, err = f.OpenStage()
	require.ErrorIs(t, err, ErrFailed)
	require.NoError(t, f.DropStage(), "a failed log may still drop its stage")
	require.NoError(t, f.Close())
}

// adoptScenario builds a log and a synced stage ready to adopt: the log
// Reset to the stage's start (its active segment empty) or Truncated in
// its active segment. It returns what the log must read after the Adopt.
func adoptScenario(t testing.TB, l *DiskLog, reset bool) (*DiskLog, []string) {
	t.Helper()
	bases := fill(t, l, 0, 900, 0)
	var keep []string
	start := int64(3000)
	if reset {
		require.NoError(t, l.Reset(start))
	} else {
		l.SetVisible(500)
		start = firstAfter(bases, (*l.segs.Load())[len(*l.segs.Load())-1].base+2)
		require.NoError(t, l.Truncate(start))
		keep = genVals(0, start, 0)
	}
	st := openStage(t, l, start)
	fill(t, st, start, start+1000, 1)
	_, err := st.Sync()
	require.NoError(t, err)
	_, err = l.Sync()
	require.NoError(t, err)
	require.Greater(t, len(*st.segs.Load()), 2)
	return st, append(keep, genVals(start, start+1000, 1)...)
}

// finishAdopt reopens a log after a crash or a failure during Adopt and
// finishes the job: the stage starts at the log's end, or holds nothing.
// It checks the log then reads exactly want, and after a crash too.
func finishAdopt(t *testing.T, fsys vfs.FS, m mode, want []string, what string) {
	t.Helper()
	l, rec := openLog(t, fsys, m)
	require.Empty(t, rec.Corrupt, what)
	s, err := l.OpenStage()
	require.NoError(t, err, what)
	st := s.(*DiskLog)
	if st.written.Load() > st.start.Load() {
		require.Equal(t, l.written.Load(), st.start.Load(), "%s: the stage starts at the log's end", what)
		require.NoError(t, l.Adopt(st), what)
	} else {
		require.NoError(t, l.DropStage(), what)
	}
	require.Equal(t, want, readVisible(t, l), "%s: every batch once, in order", what)
	require.Equal(t, l.start.Load()+int64(len(want)), l.written.Load(), what)
	require.NoError(t, l.Close(), what)
	l, _ = openLog(t, fsys, m)
	require.Equal(t, want, readVisible(t, l), "%s: after a reopen", what)
	require.False(t, stageExists(t, fsys), what)
	require.NoError(t, l.Close(), what)
}

// TestAdoptCrashAtEveryStep crashes the file system before and after
// every change of a directory and every directory sync of an Adopt, and
// checks that reopening the log and its stage, and adopting what the
// stage still holds, gives exactly the log's batches and then the
// stage's, each once, in order.
func TestAdoptCrashAtEveryStep(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode) {
		for _, reset := range []bool{true, false} {
			for seed := range uint64(3) {
				fsys := &crashPoints{MemFS: vfs.NewMem(), rng: rand.New(rand.NewPCG(seed, 11))}
				l, _ := openLog(t, fsys, m)
				st, want := adoptScenario(t, l, reset)
				fsys.on = true
				require.NoError(t, l.Adopt(st))
				fsys.on = false
				require.Greater(t, len(fsys.states), 10)
				for i, state := range fsys.states {
					finishAdopt(t, state, m, want, fmt.Sprintf("reset=%v seed %d point %d", reset, seed, i))
				}
				require.NoError(t, l.Close())
			}
		}
	})
}

// TestAdoptFailureAtEveryStep fails each file-system operation of an
// Adopt in turn: an error either leaves the log as it was (and the Adopt
// can be retried at once) or fails it; either way a restart (a crash: the
// failed log never closes cleanly) finishes the job.
func TestAdoptFailureAtEveryStep(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode) {
		for _, reset := range []bool{true, false} {
			for k := 0; ; k++ {
				mem := vfs.NewMem()
				efs := vfs.NewErrors(mem)
				l, _ := openLog(t, efs, m)
				st, want := adoptScenario(t, l, reset)
				end := l.written.Load()
				efs.Inject(^vfs.OpRead, nil, syscall.EIO, k)
				err := l.Adopt(st)
				efs.Clear()
				what := fmt.Sprintf("reset=%v k=%d", reset, k)
				if err == nil {
					finishAdopt(t, mem.Crash(), m, want, what)
					require.NoError(t, l.Close())
					t.Logf("an adopt takes %d operations", k)
					break
				}
				require.ErrorIs(t, err, syscall.EIO, what)
				if errors.Is(err, ErrFailed) {
					require.True(t, l.Failed(), what)
				} else {
					require.False(t, l.Failed(), "%s: %v", what, err)
					require.Equal(t, end, l.written.Load(), what)
					// Retried at once, it succeeds.
					st = openStage(t, l, 0)
					require.NoError(t, l.Adopt(st), what)
					l.SetVisible(l.written.Load())
					require.Equal(t, want, readAll(t, l, l.start.Load()), what)
				}
				require.NoError(t, l.Close(), what)
				finishAdopt(t, mem.Crash(), m, want, what)
				require.Less(t, k, 1000, "the adopt never succeeds")
			}
		}
	})
}

// TestReadsDuringAdopt reads the log from several goroutines while it
// adopts stages and publishes them: every read sees its batches whole and
// in order, with the values written.
func TestReadsDuringAdopt(t *testing.T) {
	cache, err := NewBlockCache(8 << 20)
	require.NoError(t, err)
	t.Cleanup(cache.Close)
	l, _ := openLog(t, vfs.NewMem(), func(c *DiskConfig) { c.Cache = cache; c.Files = NewFileCache(3) })
	fill(t, l, 0, 500, 0)
	l.SetVisible(500)
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 5))
			for {
				select {
				case <-done:
					return
				default:
				}
				start, end := l.Bounds()
				from := start + rng.Int64N(end-start)
				next := from
				err := l.Read(from, 8192, func(b wire.Batch) bool {
					it := b.Records()
					var rec wire.Record
					for it.Next(&rec) {
						if rec.Offset < from {
							continue
						}
						if want := fmt.Sprintf("v%d.%d", rec.Offset, rec.Offset/500); string(rec.Value) != want ||
							rec.Offset != next {
							errs <- fmt.Errorf("offset %d (want %d): read %q, want %q", rec.Offset, next, rec.Value, want)
							return false
						}
						next++
					}
					return true
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for round := int64(1); round < 12; round++ {
		st := openStage(t, l, 500*round)
		fill(t, st, 500*round, 500*(round+1), int(round))
		require.NoError(t, l.Adopt(st))
		l.SetVisible(500 * (round + 1))
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 6000, len(readVisible(t, l)))
	require.NoError(t, l.Close())
}

// TestMemLogStage: a memory log's stage is kept until Adopt, which moves
// its batches by reference; a stage that does not continue the log is
// refused and changes nothing.
func TestMemLogStage(t *testing.T) {
	m := NewMemLog(1 << 20)
	m.StopTrimming()
	for _, b := range []wire.Batch{genBatch(0, 3, 0), genBatch(3, 2, 0), genBatch(5, 4, 0)} {
		require.NoError(t, appendBuf(m, b))
	}
	m.SetVisible(5)
	s, err := m.OpenStage()
	require.NoError(t, err)
	again, err := m.OpenStage()
	require.NoError(t, err)
	require.Same(t, s.(*MemLog), again.(*MemLog))
	_, err = s.(*MemLog).OpenStage()
	require.Error(t, err)
	require.NoError(t, s.Reset(5))
	fill(t, s, 5, 40, 1)
	require.ErrorIs(t, m.Adopt(s), ErrStageMismatch, "the stage starts below the log's end")
	require.ErrorIs(t, m.Adopt(NewMemLog(10)), ErrStageMismatch, "not the log's stage")
	require.Equal(t, genVals(0, 5, 0), readAll(t, m, 0))

	require.NoError(t, m.Truncate(5))
	require.NoError(t, m.Adopt(s))
	_, end := m.Bounds()
	require.Equal(t, int64(5), end, "the visible end does not move")
	m.SetVisible(40)
	want := append(genVals(0, 5, 0), genVals(5, 40, 1)...)
	require.Equal(t, want, readAll(t, m, 0))
	require.Equal(t, want[4:], readAll(t, m, 4), "across the boundary")
	require.Zero(t, s.Stats().Bytes, "the stage is left empty")
	require.ErrorIs(t, m.Adopt(s), ErrStageMismatch, "and is no longer the log's")

	// A new stage, with a gap: refused; dropped, its buffers go back.
	s, err = m.OpenStage()
	require.NoError(t, err)
	require.NoError(t, s.Reset(40))
	fill(t, s, 40, 60, 2)
	require.NoError(t, appendBuf(s, genBatch(61, 1, 2)))
	require.ErrorIs(t, m.Adopt(s), ErrStageMismatch, "a gap in the stage")
	require.Equal(t, int64(40), m.end)
	require.NoError(t, m.DropStage())
	require.NoError(t, m.DropStage())
	s, err = m.OpenStage()
	require.NoError(t, err)
	require.NoError(t, s.Reset(40))
	fill(t, s, 40, 50, 3)
	require.NoError(t, m.Close(), "closing the log releases the stage")
	require.Zero(t, LiveBufs())
}

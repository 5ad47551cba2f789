package storage

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

func TestRetainBelowStopsAtTheLimit(t *testing.T) {
	fsys := vfs.NewMem()
	l, _ := openLog(t, fsys, nil)
	now := time.Unix(10_000, 0)
	end := appendN(t, l, 2000, now.Add(-time.Hour).UnixNano())
	segs := *l.segs.Load()
	require.Greater(t, len(segs), 4)
	limit := segs[3].base + 1 // inside the fourth segment: three may go

	var told int64 = -1
	n, err := l.RetainBelow(now, time.Minute, 0, limit, func(start int64) error { told = start; return nil })
	require.NoError(t, err)
	require.Equal(t, 3, n)
	start, _ := l.Bounds()
	require.Equal(t, segs[3].base, start)
	require.Equal(t, start, told, "before is told the new start first")
	require.Equal(t, expected(start, end), readAll(t, l, start))

	// A failing before deletes nothing.
	boom := errors.New("no")
	n, err = l.RetainBelow(now, time.Minute, 0, end, func(int64) error { return boom })
	require.ErrorIs(t, err, boom)
	require.Zero(t, n)
	after, _ := l.Bounds()
	require.Equal(t, start, after)
	require.NoError(t, l.Close())
}

func TestReset(t *testing.T) {
	forEachMode(t, func(t *testing.T, m mode) {
		fsys := vfs.NewMem()
		l, _ := openLog(t, fsys, m)
		appendN(t, l, 1500, 1)
		require.NoError(t, l.Stage(nil, makeBatch(1500, 2, 1)), "a staged batch is dropped")
		require.NoError(t, l.Reset(5000))
		start, vis := l.Bounds()
		require.Equal(t, int64(5000), start)
		require.Equal(t, int64(5000), vis)
		require.Zero(t, l.Stats().Bytes)
		require.Equal(t, 1, l.Stats().Segments)
		err := l.Read(100, 100, func(wire.Batch) bool { return true })
		require.ErrorIs(t, err, ErrOffsetOutOfRange)

		end := appendN(t, l, 5600, 1)
		require.Equal(t, expected(5000, end), readAll(t, l, 5000))
		_, err = l.Sync()
		require.NoError(t, err)

		// A crash keeps the reset: nothing of the old log comes back.
		crashed := fsys.CrashWith(rand.New(rand.NewPCG(1, 2)))
		l2, rec := openLog(t, crashed, m)
		require.Empty(t, rec.Corrupt)
		start, end2 := l2.Bounds()
		require.Equal(t, int64(5000), start)
		require.Equal(t, end, end2)
		require.Equal(t, expected(5000, end), readAll(t, l2, 5000))

		// A reset below the old start, at one of the old segments' bases,
		// works too: the old files are gone before the new one is made.
		require.NoError(t, l2.Reset(5000))
		require.NoError(t, l2.Append(nil, makeBatch(5000, 3, 1)))
		l2.SetVisible(5003)
		require.Equal(t, expected(5000, 5003), readAll(t, l2, 5000))
		require.NoError(t, l2.Close())
		l3, _ := openLog(t, crashed, m)
		require.Equal(t, expected(5000, 5003), readAll(t, l3, 5000))
		require.NoError(t, l3.Close())
	})
}

// crashPoints is a MemFS that, while on, records the state a crash would
// leave before each change of a directory and each directory sync.
type crashPoints struct {
	*vfs.MemFS
	on     bool
	rng    *rand.Rand
	states []*vfs.MemFS
}

func (c *crashPoints) point() {
	if c.on {
		c.states = append(c.states, c.CrashWith(c.rng))
	}
}

func (c *crashPoints) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	c.point()
	return c.MemFS.OpenFile(name, flag, perm)
}

func (c *crashPoints) Remove(name string) error {
	c.point()
	return c.MemFS.Remove(name)
}

func (c *crashPoints) Rename(oldname, newname string) error {
	c.point()
	return c.MemFS.Rename(oldname, newname)
}

func (c *crashPoints) SyncDir(name string) error {
	c.point()
	err := c.MemFS.SyncDir(name)
	c.point()
	return err
}

// TestResetCrashAtEveryStep: a crash at any step of a reset leaves a
// prefix of the old log or the new, empty one: never a log with a hole.
func TestResetCrashAtEveryStep(t *testing.T) {
	for seed := range uint64(5) {
		fsys := &crashPoints{MemFS: vfs.NewMem(), rng: rand.New(rand.NewPCG(seed, 7))}
		l, _ := openLog(t, fsys, nil)
		end := appendN(t, l, 1200, 1)
		_, err := l.Sync()
		require.NoError(t, err)
		require.Greater(t, l.Stats().Segments, 3)
		fsys.on = true
		require.NoError(t, l.Reset(end+100))
		fsys.on = false
		require.NotEmpty(t, fsys.states)
		var old, reset int
		for i, st := range fsys.states {
			l2, rec := openLog(t, st, nil)
			start, e := l2.Bounds()
			if start == end+100 {
				reset++
				require.Equal(t, end+100, e, "seed %d point %d: the new log is empty", seed, i)
			} else {
				old++
				require.Equal(t, int64(0), start, "seed %d point %d", seed, i)
				require.Empty(t, rec.Corrupt, "seed %d point %d", seed, i)
				require.Equal(t, expected(0, e), readAll(t, l2, 0), "seed %d point %d: a prefix of the old log", seed, i)
			}
			require.NoError(t, l2.Close())
		}
		require.Positive(t, old)
		require.Positive(t, reset)
	}
}

func TestMemLogResetAndRetainBelow(t *testing.T) {
	m := NewMemLog(1 << 20)
	add := func(b wire.Batch) {
		buf := NewBuf(0)
		require.NoError(t, m.Append(buf, b))
		buf.Release() // the log holds its own reference
	}
	for base := int64(0); base < 10; base++ {
		add(makeBatch(base, 1, 1))
	}
	var told int64
	n, err := m.RetainBelow(time.Unix(100, 0), 0, 1, 4, func(start int64) error { told = start; return nil })
	require.NoError(t, err)
	require.Equal(t, 4, n)
	require.Equal(t, int64(4), told)
	start, end := m.Bounds()
	require.Equal(t, int64(4), start)
	require.Equal(t, int64(10), end)

	require.NoError(t, m.Reset(77))
	start, end = m.Bounds()
	require.Equal(t, int64(77), start)
	require.Equal(t, int64(77), end)
	add(makeBatch(77, 2, 1))
	require.Equal(t, expected(77, 79), readAll(t, m, 77))
	require.NoError(t, m.Close())
	require.Zero(t, LiveBufs(), "reset and retention release the buffers")
}

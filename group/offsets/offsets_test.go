package offsets

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// testClock is a settable clock for the offset store's activity stamps.
type testClock struct{ ms atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.set(t)
	return c
}

func (c *testClock) now() time.Time  { return time.UnixMilli(c.ms.Load()) }
func (c *testClock) set(t time.Time) { c.ms.Store(t.UnixMilli()) }

// storeDir is the data directory of the store tests on a MemFS.
const storeDir = "d"

// newMemData returns a MemFS with a durable data directory.
func newMemData(t *testing.T) *vfs.MemFS {
	t.Helper()
	m := vfs.NewMem()
	require.NoError(t, m.MkdirAll(storeDir, 0o755))
	require.NoError(t, m.SyncDir("/"))
	return m
}

// openStore loads and starts a store on fsys; it is closed when the test
// ends.
func openStore(t *testing.T, fsys vfs.FS, log *slog.Logger) *Store {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := New(fsys, storeDir, log)
	_, err := s.Load()
	require.NoError(t, err)
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// loadStore reads what a store on fsys holds, without starting it.
func loadStore(t *testing.T, fsys vfs.FS) map[string]*Group {
	t.Helper()
	s := New(fsys, storeDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	groups, err := s.Load()
	require.NoError(t, err)
	s.Close()
	return groups
}

// commitWait sets offsets and waits until the store answers.
func commitWait(t *testing.T, s *Store, group string, offs ...wire.PartitionOffset) error {
	t.Helper()
	done := make(chan error, 1)
	s.Set(group, "orders", offs, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the commit was never answered")
		return nil
	}
}

func po(p int32, off int64) wire.PartitionOffset {
	return wire.PartitionOffset{Partition: p, Offset: off}
}

// TestOffsetCommitWritesOnlyItsGroup: with a thousand groups stored, a
// commit of one group writes that group's record and nothing else.
func TestOffsetCommitWritesOnlyItsGroup(t *testing.T) {
	fsys := newCountFS(newMemData(t))
	s := openStore(t, fsys, nil)
	for i := range 1000 {
		s.Set(fmt.Sprintf("group-%04d", i), "orders", []wire.PartitionOffset{po(0, 1), po(1, 1)}, nil)
	}
	require.NoError(t, commitWait(t, s, "group-0000", po(0, 1)))
	fsys.reset()

	require.NoError(t, commitWait(t, s, "group-0500", po(1, 7)))
	written, total, syncs := fsys.snapshot()
	require.Equal(t, map[string]int64{storeDir + "/" + LogFile: total}, written, "only the log is written")
	require.Less(t, total, int64(100), "one group's record, not every group's")
	require.Equal(t, 1, syncs, "one fsync, no directory sync")

	// What was appended is exactly group-0500's record.
	b, err := storage.ReadFile(fsys, storeDir+"/"+LogFile)
	require.NoError(t, err)
	rec, next, ok := readRecord(b, len(b)-int(total))
	require.True(t, ok)
	require.Equal(t, len(b), next)
	require.Equal(t, "group-0500", rec.name)
	require.Equal(t, map[int32]int64{0: 1, 1: 7}, rec.g.Offsets)
}

// TestOffsetStoreKeepsOffsetsAndActivityAcrossRestart: offsets, removals
// and the time of each group's last activity survive a restart.
func TestOffsetStoreKeepsOffsetsAndActivityAcrossRestart(t *testing.T) {
	fsys := newMemData(t)
	clock := newTestClock(time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC))
	s := openStore(t, fsys, nil)
	s.SetClock(clock.now)
	require.NoError(t, commitWait(t, s, "a", po(0, 5), po(3, 9)))
	clock.set(clock.now().Add(time.Hour))
	require.NoError(t, commitWait(t, s, "b", po(0, 1)))
	require.NoError(t, commitWait(t, s, "c", po(0, 2)))
	done := make(chan error, 1)
	s.Remove("c", func(err error) { done <- err })
	require.NoError(t, <-done)
	s.Close()

	got := loadStore(t, fsys.Crash())
	require.Equal(t, map[string]*Group{
		"a": {Topic: "orders", Offsets: map[int32]int64{0: 5, 3: 9}, Active: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC).UnixMilli()},
		"b": {Topic: "orders", Offsets: map[int32]int64{0: 1}, Active: time.Date(2026, 1, 2, 4, 4, 5, 6e6, time.UTC).UnixMilli()},
	}, got)
}

// TestOffsetStoreCrashKeepsAnsweredCommits: through appends and
// compactions, a crash at any point (torn tails included) keeps every
// commit that was answered OK.
func TestOffsetStoreCrashKeepsAnsweredCommits(t *testing.T) {
	fsys := newMemData(t)
	s := openStore(t, fsys, nil)
	const groups, parts = 4, 1000 // 12 KB records: compactions within a hundred commits
	answered := map[string]int64{}
	rng := rand.New(rand.NewPCG(1, 2))
	offs := make([]wire.PartitionOffset, parts)
	for round := int64(1); round <= 300; round++ {
		g := fmt.Sprint("g", rng.IntN(groups))
		for p := range offs {
			offs[p] = po(int32(p), round)
		}
		require.NoError(t, commitWait(t, s, g, offs...))
		answered[g] = round
		s.Set(fmt.Sprint("g", rng.IntN(groups)), "orders", offs[:1], nil) // not waited for
		if round%50 != 0 {
			continue
		}
		got := loadStore(t, fsys.CrashWith(rand.New(rand.NewPCG(uint64(round), 3))))
		for name, want := range answered {
			require.Contains(t, got, name)
			for p := range parts {
				require.GreaterOrEqual(t, got[name].Offsets[int32(p)], want, "group %s partition %d after round %d", name, p, round)
			}
		}
	}
	st, err := fsys.Stat(storeDir + "/" + LogFile)
	require.NoError(t, err)
	require.Less(t, st.Size(), int64(compactFactor*groups*parts*12+compactMinBytes), "the log is compacted")
}

// TestOffsetStoreFailedWriteFailsWaiters: a failed write answers the
// commits that waited for it with the error, and is retried without a
// new commit until it succeeds.
func TestOffsetStoreFailedWriteFailsWaiters(t *testing.T) {
	mem := newMemData(t)
	fsys := vfs.NewErrors(mem)
	s := openStore(t, fsys, nil)
	require.NoError(t, commitWait(t, s, "a", po(0, 1)))
	isLog := func(name string) bool { return strings.HasPrefix(name, storeDir+"/"+LogFile) }

	fsys.InjectSync(isLog, syscall.EIO, 0)
	err := commitWait(t, s, "a", po(0, 2))
	var we *wire.Error
	require.ErrorAs(t, err, &we)
	require.Equal(t, wire.CodeStorageError, we.Code)

	fsys.Clear()
	fsys.InjectWrite(isLog, syscall.ENOSPC, 0)
	err = commitWait(t, s, "b", po(0, 1))
	require.ErrorAs(t, err, &we)
	require.Equal(t, wire.CodeStorageFull, we.Code, "a full disk says so")

	fsys.Clear()
	require.Eventually(t, func() bool {
		got := loadStore(t, mem.Crash())
		return got["a"] != nil && got["a"].Offsets[0] == 2 && got["b"] != nil
	}, 20*time.Second, 20*time.Millisecond, "the failed writes are retried")
	require.NoError(t, commitWait(t, s, "a", po(0, 3)))
	require.Equal(t, int64(3), loadStore(t, mem.Crash())["a"].Offsets[0])
}

// TestOffsetStoreShortWriteIsReplaced: an append that wrote part of a
// record leaves the log unusable for appends; the next write replaces it,
// and nothing answered is lost.
func TestOffsetStoreShortWriteIsReplaced(t *testing.T) {
	mem := newMemData(t)
	fsys := vfs.NewErrors(mem)
	s := openStore(t, fsys, nil)
	require.NoError(t, commitWait(t, s, "a", po(0, 1)))
	require.NoError(t, commitWait(t, s, "b", po(0, 1)))
	fsys.ShortWrite(func(name string) bool { return name == storeDir+"/"+LogFile }, 5, 0)
	require.Error(t, commitWait(t, s, "a", po(0, 2)))
	require.NoError(t, commitWait(t, s, "b", po(0, 2)))
	got := loadStore(t, mem.Crash())
	require.Equal(t, int64(2), got["a"].Offsets[0], "the failed commit was retried with the next write")
	require.Equal(t, int64(2), got["b"].Offsets[0])
}

// TestOffsetLogRecovery: a torn tail is cut and damaged records followed
// by good ones are skipped, each reported; the log is then rewritten.
func TestOffsetLogRecovery(t *testing.T) {
	rec := func(name string, off int64) []byte {
		return appendGroupRecord(nil, name, &Group{Topic: "orders", Offsets: map[int32]int64{0: off}, Active: 1})
	}
	header := binary.BigEndian.AppendUint32([]byte(offsetsLogMagic), offsetsVersion)
	for _, tc := range []struct {
		name string
		log  [][]byte
		want map[string]int64
		says string
	}{
		{"torn tail", [][]byte{rec("a", 1), rec("b", 1), rec("a", 2)[:10]}, map[string]int64{"a": 1, "b": 1}, "torn tail"},
		{"zeros past the end", [][]byte{rec("a", 1), make([]byte, 100)}, map[string]int64{"a": 1}, "torn tail"},
		{"damage in the middle", [][]byte{rec("a", 1), damaged(rec("a", 2)), rec("b", 1)}, map[string]int64{"a": 1, "b": 1}, "damaged"},
		{"removal", [][]byte{rec("a", 1), rec("b", 1), appendRemovedRecord(nil, "a")}, map[string]int64{"b": 1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := newMemData(t)
			require.NoError(t, storage.WriteFileAtomic(fsys, storeDir+"/"+LogFile, bytes.Join(append([][]byte{header}, tc.log...), nil), true))
			var logs bytes.Buffer
			s := New(fsys, storeDir, slog.New(slog.NewTextHandler(&logs, nil)))
			got, err := s.Load()
			require.NoError(t, err)
			s.Close()
			offsets := map[string]int64{}
			for name, g := range got {
				offsets[name] = g.Offsets[0]
			}
			require.Equal(t, tc.want, offsets)
			if tc.says == "" {
				require.Empty(t, logs.String())
				return
			}
			require.Contains(t, logs.String(), tc.says)
			b, err := storage.ReadFile(fsys.Crash(), storeDir+"/"+LogFile)
			require.NoError(t, err)
			s = New(fsys, storeDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
			clean, err := s.parseLog(b)
			require.NoError(t, err)
			require.True(t, clean, "the repaired log was rewritten durably")
		})
	}
}

// damaged flips a byte of a record's payload.
func damaged(rec []byte) []byte {
	rec[len(rec)-1] ^= 0xff
	return rec
}

// TestOffsetLogRefusesOtherFiles: a file that is not an offsets log, or
// of a later version, stops the start with an error naming it.
func TestOffsetLogRefusesOtherFiles(t *testing.T) {
	for _, tc := range []struct{ content, says string }{
		{"{\"version\":1}", "not a consumer-group offsets log"},
		{"RGOL\x00\x00\x00\x02", "version 2"},
	} {
		fsys := newMemData(t)
		require.NoError(t, storage.WriteFileAtomic(fsys, storeDir+"/"+LogFile, []byte(tc.content), true))
		_, err := New(fsys, storeDir, slog.Default()).Load()
		require.ErrorContains(t, err, tc.says)
		require.ErrorContains(t, err, LogFile)
	}
}

// legacyJSON is a groups.json as the previous version wrote it.
func legacyJSON(t *testing.T, groups map[string]map[int32]int64, topic string) []byte {
	f := map[string]any{"version": 1, "groups": map[string]any{}}
	for name, offs := range groups {
		f["groups"].(map[string]any)[name] = map[string]any{"topic": topic, "offsets": offs}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	require.NoError(t, err)
	return b
}

// TestOffsetStoreConvertsGroupsJSON: a groups.json of the previous format
// is converted into the log, durably, then removed; its groups count as
// active from the conversion. A conversion that fails before the removal
// is redone at the next start.
func TestOffsetStoreConvertsGroupsJSON(t *testing.T) {
	mem := newMemData(t)
	legacy := storeDir + "/" + LegacyFile
	require.NoError(t, storage.WriteFileAtomic(mem, legacy,
		legacyJSON(t, map[string]map[int32]int64{"billing": {0: 10, 1: 20}, "audit": {0: 3}}, "orders"), true))

	fsys := vfs.NewErrors(mem)
	fsys.Inject(vfs.OpRemove, func(name string) bool { return name == legacy }, syscall.EIO, 0)
	_, err := New(fsys, storeDir, slog.New(slog.NewTextHandler(io.Discard, nil))).Load()
	require.ErrorContains(t, err, "removing groups.json")
	mem = mem.Crash()

	clock := newTestClock(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
	s := New(mem, storeDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.SetClock(clock.now)
	got, err := s.Load()
	require.NoError(t, err)
	s.Close()
	want := map[string]*Group{
		"billing": {Topic: "orders", Offsets: map[int32]int64{0: 10, 1: 20}, Active: clock.now().UnixMilli()},
		"audit":   {Topic: "orders", Offsets: map[int32]int64{0: 3}, Active: clock.now().UnixMilli()},
	}
	require.Equal(t, want, got)

	crashed := mem.Crash()
	_, err = crashed.Stat(legacy)
	require.ErrorIs(t, err, fs.ErrNotExist, "groups.json is removed durably")
	require.Equal(t, want, loadStore(t, crashed))
}

// TestFlushWritesOnTheCallersGoroutine: a store whose writer was never
// started writes only when Flush is called, answers the waiting commits
// before Flush returns, and keeps them across a crash.
func TestFlushWritesOnTheCallersGoroutine(t *testing.T) {
	fsys := newMemData(t)
	s := New(fsys, storeDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, err := s.Load()
	require.NoError(t, err)
	answered := false
	s.Set("g", "orders", []wire.PartitionOffset{po(0, 7)}, func(err error) {
		require.NoError(t, err)
		answered = true
	})
	require.False(t, answered, "nothing is written before Flush")
	require.NoError(t, s.Flush())
	require.True(t, answered, "the callback ran within Flush")
	got := loadStore(t, fsys.Crash())
	require.Equal(t, int64(7), got["g"].Offsets[0])
	s.Start()
	defer s.Close()
	require.Panics(t, func() { _ = s.Flush() }, "a started store has one writer")
}

package raftlog

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestOnDiskLog runs the Raft log over a real disk log (in a memory file
// system that can crash): what was synced, and its meta file, survive a
// crash; an uncommitted tail is cut by a conflicting append, durably.
func TestOnDiskLog(t *testing.T) {
	fsys := vfs.NewMem()
	open := func(fs vfs.FS) (*storage.DiskLog, *Storage) {
		l, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: fs, Dir: "g/1000", SegmentBytes: 4096,
			Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		s, err := Open(l, SideMeta{L: l})
		require.NoError(t, err)
		return l, s
	}
	l, s := open(fsys)
	var ents []raftpb.Entry
	ents = append(ents, raftpb.Entry{Term: 1, Index: 1})
	for i := 2; i <= 40; i++ {
		ents = append(ents, raftpb.Entry{Term: 1, Index: uint64(i), Data: batch(3, "a")})
	}
	require.NoError(t, s.Append(ents))
	require.NoError(t, s.Sync())
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 30}))
	s.Commit(30)
	require.NoError(t, s.SaveCommit())
	// An unsynced entry, then a crash: it is gone, the rest is not.
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 1, Index: 41, Data: batch(1, "lost")}}))
	crashed := fsys.Crash()
	_ = l
	l2, s2 := open(crashed)
	last, _ := s2.LastIndex()
	require.Equal(t, uint64(40), last)
	_, vis := l2.Bounds()
	require.Equal(t, int64(29*3), vis, "entries 2..30 are committed: 29 batches of 3")
	require.Equal(t, int64(39*3), s2.EndOffset())
	// A new leader (term 2) overwrites from entry 35: the log is cut there
	// durably, and the new entries follow.
	require.NoError(t, s2.Append([]raftpb.Entry{{Term: 2, Index: 35}, {Term: 2, Index: 36, Data: batch(2, "b")}}))
	require.NoError(t, s2.Sync())
	require.Equal(t, int64(33*3+2), s2.EndOffset())
	l3, s3 := open(crashed.Crash())
	last, _ = s3.LastIndex()
	require.Equal(t, uint64(36), last)
	got, err := s3.Entries(31, 37, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 6)
	require.Equal(t, uint64(2), got[4].Term)
	require.Empty(t, got[4].Data)
	require.Equal(t, int64(33*3), wire.Batch(got[5].Data).BaseOffset())
	require.NoError(t, l3.Close())
}

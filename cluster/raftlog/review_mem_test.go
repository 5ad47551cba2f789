package raftlog

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestMemLogTrimKeepsStorageConsistent: a replicated memory topic's
// MemLog used to drop its oldest batches on Append once over its bound,
// behind the Storage's back: FirstIndex then claimed entries the log no
// longer held, and raft, asking for a snapshot, panicked ("need non-empty
// snapshot"). Under a Raft log the memory log keeps what Raft has not
// applied, and its bound goes through Retain, which compacts.
func TestMemLogTrimKeepsStorageConsistent(t *testing.T) {
	l := storage.NewMemLog(1 << 20)
	s, err := Open(l, &MemMeta{})
	require.NoError(t, err)
	require.NoError(t, s.SetConfState(raftpb.ConfState{Voters: []uint64{1, 2, 3}}))
	val := strings.Repeat("x", 64<<10)
	var ents []raftpb.Entry
	for i := uint64(1); i <= 40; i++ {
		var bb wire.BatchBuilder
		bb.Start(nil, wire.NoProducer, -1)
		bb.Append(1, nil, []byte(val), nil)
		ents = append(ents, raftpb.Entry{Term: 1, Index: i, Data: bb.Finish()})
	}
	require.NoError(t, s.Append(ents))
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Commit: 30}))
	s.Commit(30)
	got, err := s.Entries(1, 41, 1<<30)
	require.NoError(t, err, "nothing was dropped past the memory bound")
	require.Len(t, got, 40)

	// Retention keeps the bound, up to what was applied, and compacts.
	n, err := s.Retain(time.Now(), 0, 1<<20, 30, math.MaxInt64)
	require.NoError(t, err)
	require.Equal(t, 25, n, "down to 1 MiB of batches, and no further than entry 30")
	first, _ := s.FirstIndex()
	require.Equal(t, uint64(26), first)
	_, err = s.Entries(first-1, first, 1<<30)
	require.ErrorIs(t, err, raft.ErrCompacted)
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.False(t, raft.IsEmptySnap(snap))
	require.Equal(t, uint64(25), snap.Metadata.Index)
	_, err = s.Entries(first, 41, 1<<30)
	require.NoError(t, err)
}

// TestRetainUnsyncedThenCrash: a group that does not fsync each append
// (GroupConfig.Sync false: a topic without fsync=always) applies
// retention; Retain makes the log durable before it saves the compaction
// point, so a crash loses nothing at or after it, and the next append goes
// where both the Raft log and the partition log end.
func TestRetainUnsyncedThenCrash(t *testing.T) {
	// Retention that removes nothing syncs nothing (it runs every few
	// seconds on the host's goroutine, for every group).
	l0, _, s0 := compactFixture(t)
	n, err := s0.Retain(time.Now(), 0, 1<<30, 10, math.MaxInt64)
	require.NoError(t, err)
	require.Zero(t, n)
	l0.Crash()
	_, end0 := l0.Bounds()
	require.Zero(t, end0, "nothing was synced")

	l, meta, s := compactFixture(t) // nothing in it was ever synced
	n, err = s.Retain(time.Now(), 0, 1, 10, math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n)
	l.Crash()
	s, err = Open(l, meta)
	require.NoError(t, err)
	last, _ := s.LastIndex()
	require.Equal(t, uint64(10), last, "Retain synced the log first")
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 3, Index: 11, Data: batch(2, "g")}}))
	require.Equal(t, int64(14), s.EndOffset())

	// A log that ends before its compaction point anyway (a crash of a
	// version that did not sync first) starts again at the point: the
	// entries after it come from the leader.
	l2, meta2, s2 := compactFixture(t)
	_, err = s2.Retain(time.Now(), 0, 1, 10, math.MaxInt64)
	require.NoError(t, err)
	l2.SetVisible(10)
	require.NoError(t, l2.Truncate(10)) // the first batch kept
	l2.Reopen()
	s2, err = Open(l2, meta2)
	require.NoError(t, err)
	start, end := l2.Bounds()
	require.Equal(t, []int64{10, 10}, []int64{start, end})
	last, _ = s2.LastIndex()
	require.Equal(t, uint64(9), last)
	require.Equal(t, int64(10), s2.EndOffset())
	require.NoError(t, s2.Append([]raftpb.Entry{{Term: 3, Index: 10, Data: batch(2, "g")}}))
}

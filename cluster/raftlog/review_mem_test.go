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
// MemLog drops its oldest batches on Append once over its bound, behind
// the Storage's back. FirstIndex must then not claim entries the log no
// longer holds: raft asks for a snapshot when Entries says ErrCompacted,
// and panics ("need non-empty snapshot") when Snapshot is empty.
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
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Commit: 40}))
	s.Commit(40)
	first, _ := s.FirstIndex()
	_, err = s.Entries(first, first+1, 1<<30)
	if err == nil {
		return
	}
	require.ErrorIs(t, err, raft.ErrCompacted)
	snap, serr := s.Snapshot()
	require.NoError(t, serr)
	require.False(t, raft.IsEmptySnap(snap),
		"FirstIndex %d, Entries says compacted, and the snapshot is empty: raft panics", first)
}

// TestRetainUnsyncedThenCrash: a group that does not fsync each append
// (GroupConfig.Sync false: a topic without fsync=always) applies
// retention; the compaction point is saved durably, but the entries at and
// after it were never synced, and a crash loses them. The reopened log
// must not claim entries up to a compaction point past the log's end: the
// next append would then be stamped at an offset the log does not end at.
func TestRetainUnsyncedThenCrash(t *testing.T) {
	l, meta, s := compactFixture(t) // nothing in it was ever synced
	n, err := s.Retain(time.Now(), 0, 1, 10, math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n)
	l.Crash()
	s, err = Open(l, meta)
	require.NoError(t, err)
	// The next entry goes where the Raft log says it ends; the partition
	// log must end there too.
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 3, Index: 10, Data: batch(2, "g")}}))
}

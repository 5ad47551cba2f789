package raftlog

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// compactFixture is a group's log of ten entries over three terms:
//
//	1 ctl t1 @0 | 2 b(2) t1 @0 | 3 conf t1 @2 | 4 b(2) t1 @2 | 5 b(2) t1 @4
//	6 ctl t2 @6 | 7 b(2) t2 @6 | 8 b(2) t2 @8 | 9 ctl t3 @10 | 10 b(2) t3 @10
//
// with the change at 3 applied (voters 1 2 4, from 1 2 3), committed and
// applied up to 10. Each batch is a "segment" of the testlog.
func compactFixture(t *testing.T) (*testlog.Log, *testlog.Meta, *Storage) {
	t.Helper()
	l, meta := &testlog.Log{}, &testlog.Meta{}
	s, err := Open(l, meta)
	require.NoError(t, err)
	require.NoError(t, s.SetConfState(raftpb.ConfState{Voters: []uint64{1, 2, 3}}))
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 3, Vote: 1, Commit: 10}))
	b := func(tag string) []byte { return batch(2, tag) }
	require.NoError(t, s.Append([]raftpb.Entry{
		{Term: 1, Index: 1},
		{Term: 1, Index: 2, Data: b("a")},
		{Term: 1, Index: 3, Type: raftpb.EntryConfChangeV2, Data: []byte{1}},
		{Term: 1, Index: 4, Data: b("b")},
		{Term: 1, Index: 5, Data: b("c")},
		{Term: 2, Index: 6},
		{Term: 2, Index: 7, Data: b("d")},
		{Term: 2, Index: 8, Data: b("e")},
		{Term: 3, Index: 9},
		{Term: 3, Index: 10, Data: b("f")},
	}))
	require.NoError(t, s.ApplyConfState(raftpb.ConfState{Voters: []uint64{1, 2, 4}}, 3))
	require.Equal(t, int64(12), s.Commit(10))
	return l, meta, s
}

func requireFirst(t *testing.T, s *Storage, first uint64) {
	t.Helper()
	fi, _ := s.FirstIndex()
	require.Equal(t, first, fi)
	_, err := s.Entries(first-1, first, 1<<20)
	require.ErrorIs(t, err, raft.ErrCompacted)
	_, err = s.Term(first - 2)
	require.ErrorIs(t, err, raft.ErrCompacted)
	last, _ := s.LastIndex()
	if first <= last {
		ents, err := s.Entries(first, last+1, 1<<30)
		require.NoError(t, err)
		require.Len(t, ents, int(last-first+1))
	}
}

func snapOffset(t *testing.T, snap raftpb.Snapshot) int64 {
	t.Helper()
	var d snapData
	require.NoError(t, json.Unmarshal(snap.Data, &d))
	return d.Offset
}

func TestRetainMovesTheCompactionPoint(t *testing.T) {
	l, meta, s := compactFixture(t)
	now := time.Now()

	// Twelve records in six batches of about the same size: keeping two
	// batches' bytes removes four, up to offset 8. The log then starts at
	// entry 8; entries 1-7 (the control entry at 6 with them) are compacted.
	size := int64(len(batch(2, "a")))
	n, err := s.Retain(now, 0, 2*size, 10, math.MaxInt64)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	start, _ := l.Bounds()
	require.Equal(t, int64(8), start)
	requireFirst(t, s, 8)
	term, err := s.Term(7)
	require.NoError(t, err)
	require.Equal(t, uint64(2), term, "the compaction point keeps its term")
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.Equal(t, uint64(7), snap.Metadata.Index)
	require.Equal(t, uint64(2), snap.Metadata.Term)
	require.Equal(t, []uint64{1, 2, 4}, snap.Metadata.ConfState.Voters, "the configuration at the compaction point")
	require.Equal(t, int64(8), snapOffset(t, snap))

	// The same after a restart; and the terms after the point are right.
	l.Reopen()
	s, err = Open(l, meta)
	require.NoError(t, err)
	requireFirst(t, s, 8)
	for i, want := range map[uint64]uint64{7: 2, 8: 2, 9: 3, 10: 3} {
		term, err := s.Term(i)
		require.NoError(t, err)
		require.Equal(t, want, term, "term of %d", i)
	}
	hs, cs, _ := s.InitialState()
	require.Equal(t, uint64(10), hs.Commit)
	require.Equal(t, []uint64{1, 2, 4}, cs.Voters)
	// Appends go on at the log's end.
	b := batch(1, "g")
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 3, Index: 11, Data: b}}))
	require.Equal(t, int64(13), s.EndOffset())
}

func TestRetainStopsAtApplied(t *testing.T) {
	l, _, s := compactFixture(t)
	// Only entries up to 4 are applied: the batches after offset 4 stay,
	// however little the bound keeps.
	n, err := s.Retain(time.Now(), 0, 1, 4, math.MaxInt64)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	start, _ := l.Bounds()
	require.Equal(t, int64(4), start)
	requireFirst(t, s, 5)
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.Equal(t, uint64(4), snap.Metadata.Index)
	require.Equal(t, []uint64{1, 2, 4}, snap.Metadata.ConfState.Voters)

	// A floor bounds it as applied does.
	l3, _, s3 := compactFixture(t)
	n, err = s3.Retain(time.Now(), 0, 1, 10, 6)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	start, _ = l3.Bounds()
	require.Equal(t, int64(6), start)
	requireFirst(t, s3, 7)

	// A compaction before the configuration change carries the
	// configuration before it.
	l2, _, s2 := compactFixture(t)
	n, err = s2.Retain(time.Now(), 0, 1, 2, math.MaxInt64)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	start, _ = l2.Bounds()
	require.Equal(t, int64(2), start)
	c := s2.st.Compacted
	require.Equal(t, uint64(2), c.Index, "the change at 3 sits at offset 2 but is not applied")
	require.Equal(t, []uint64{1, 2, 3}, c.Conf.Voters)
	snap, err = s2.Snapshot()
	require.NoError(t, err)
	require.Equal(t, uint64(2), snap.Metadata.Index, "the change at 3 sits at offset 2 but is not applied")
	// The snapshot carries the configuration at its index and the changes
	// since; its ConfState is the latest, so that a replica added since is
	// in it.
	require.Equal(t, []uint64{1, 2, 4}, snap.Metadata.ConfState.Voters)
	var d snapData
	require.NoError(t, json.Unmarshal(snap.Data, &d))
	require.Equal(t, []confAt{{Index: 2, Conf: raftpb.ConfState{Voters: []uint64{1, 2, 3}}},
		{Index: 3, Conf: raftpb.ConfState{Voters: []uint64{1, 2, 4}}}}, d.Confs)
}

// TestRetainCrashBeforeDelete: the compaction point is saved before the
// log's segments go; a crash between leaves a log that starts before it,
// which reopens.
func TestRetainCrashBeforeDelete(t *testing.T) {
	l, meta, s := compactFixture(t)
	boom := errors.New("crash")
	_, err := l.RetainBelow(time.Now(), 0, 1, s.OffsetEnd(10), func(start int64) error {
		if err := s.compact(start, 10); err != nil {
			return err
		}
		return boom // the segments are never deleted
	})
	require.ErrorIs(t, err, boom)
	l.Reopen()
	s, err = Open(l, meta)
	require.NoError(t, err)
	requireFirst(t, s, 10)
	ents, err := s.Entries(10, 11, 1<<20)
	require.NoError(t, err)
	require.Equal(t, "f-0", string(firstValue(t, ents[0].Data)))
}

func firstValue(t *testing.T, data []byte) []byte {
	t.Helper()
	it := wire.Batch(data).Records()
	var r wire.Record
	require.True(t, it.Next(&r), "a record: %v", it.Err())
	return r.Value
}

func TestApplySnapshot(t *testing.T) {
	l, meta := &testlog.Log{}, &testlog.Meta{}
	s, err := Open(l, meta)
	require.NoError(t, err)
	// A replica with a log of its own, part of it uncommitted.
	require.NoError(t, s.SetConfState(raftpb.ConfState{Voters: []uint64{1, 2, 3}}))
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2, Data: batch(3, "x")},
		{Term: 2, Index: 3, Data: batch(3, "y")}}))
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 4, Commit: 2}))
	s.Commit(2)

	data, err := json.Marshal(snapData{Offset: 40})
	require.NoError(t, err)
	snap := raftpb.Snapshot{Data: data, Metadata: raftpb.SnapshotMetadata{Index: 30, Term: 4,
		ConfState: raftpb.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3}}}}
	require.NoError(t, s.ApplySnapshot(snap))
	check := func(s *Storage) {
		t.Helper()
		start, vis := l.Bounds()
		require.Equal(t, int64(40), start)
		require.Equal(t, int64(40), vis)
		require.Equal(t, int64(40), s.EndOffset())
		fi, _ := s.FirstIndex()
		li, _ := s.LastIndex()
		require.Equal(t, uint64(31), fi)
		require.Equal(t, uint64(30), li)
		term, err := s.Term(30)
		require.NoError(t, err)
		require.Equal(t, uint64(4), term)
		hs, cs, _ := s.InitialState()
		require.Equal(t, uint64(30), hs.Commit)
		require.Equal(t, []uint64{3}, cs.Learners)
		require.Equal(t, uint64(30), s.ConfIndex())
		got, err := s.Snapshot()
		require.NoError(t, err)
		require.Equal(t, snap.Metadata, got.Metadata)
	}
	check(s)
	l.Reopen()
	s2, err := Open(l, meta)
	require.NoError(t, err)
	check(s2)

	// The entries after the snapshot follow at the offset it gave.
	b := batch(2, "z")
	require.NoError(t, s2.Append([]raftpb.Entry{{Term: 4, Index: 31, Data: b}}))
	require.NoError(t, s2.SetHardState(raftpb.HardState{Term: 4, Commit: 31}))
	require.Equal(t, int64(42), s2.Commit(31))
	ents, err := s2.Entries(31, 32, 1<<20)
	require.NoError(t, err)
	require.Equal(t, int64(40), wire.Batch(ents[0].Data).BaseOffset())

	require.Error(t, s2.ApplySnapshot(snap), "a snapshot not after the compaction point")
	require.Error(t, s2.ApplySnapshot(raftpb.Snapshot{Data: []byte("junk"), Metadata: raftpb.SnapshotMetadata{Index: 50, Term: 4}}))
}

// TestSnapshotCarriesLaterConfChanges: a snapshot at the compaction
// point carries the configurations applied since; its ConfState is the
// latest, so that a replica added after the point (here node 5, by the
// change at 6) is in it, as raft requires to restore it, and that replica
// does not apply the change at 6 again but knows the configuration at
// every index from the point on.
func TestSnapshotCarriesLaterConfChanges(t *testing.T) {
	_, _, s := compactFixture(t)
	// One batch removed: the log starts at 2, and the compaction point
	// takes the change at 3, which sits there.
	n, err := s.Retain(time.Now(), 0, 5*int64(len(batch(2, "a"))), 10, math.MaxInt64)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	added := raftpb.ConfState{Voters: []uint64{1, 2, 4}, Learners: []uint64{5}}
	require.NoError(t, s.ApplyConfState(added, 6))
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.Equal(t, raftpb.SnapshotMetadata{Index: 3, Term: 1, ConfState: added}, snap.Metadata)
	require.Equal(t, int64(2), snapOffset(t, snap))

	l5, meta5 := &testlog.Log{}, &testlog.Meta{}
	s5, err := Open(l5, meta5)
	require.NoError(t, err)
	require.NoError(t, s5.ApplySnapshot(snap))
	for range 2 {
		start, _ := l5.Bounds()
		require.Equal(t, int64(2), start)
		fi, _ := s5.FirstIndex()
		require.Equal(t, uint64(4), fi)
		_, cs, _ := s5.InitialState()
		require.Equal(t, added, cs)
		require.Equal(t, uint64(6), s5.ConfIndex(), "the change at 6 is not applied again")
		l5.Reopen()
		s5, err = Open(l5, meta5)
		require.NoError(t, err)
	}
	// The leader's entries from 4 on follow at the offset it gave.
	ents, err := s.Entries(4, 11, 1<<30)
	require.NoError(t, err)
	require.NoError(t, s5.Append(ents))
	require.Equal(t, int64(12), s5.EndOffset())
	require.NoError(t, s5.SetHardState(raftpb.HardState{Term: 3, Commit: 10}))
	s5.Commit(10)
	// Its own compaction knows the configuration at each index: at 5,
	// after the change at 3 and before the one at 6.
	_, err = s5.Retain(time.Now(), 0, 1, 5, math.MaxInt64)
	require.NoError(t, err)
	snap5, err := s5.Snapshot()
	require.NoError(t, err)
	require.Equal(t, uint64(5), snap5.Metadata.Index)
	var d snapData
	require.NoError(t, json.Unmarshal(snap5.Data, &d))
	require.Equal(t, []uint64{1, 2, 4}, d.Confs[0].Conf.Voters)
	require.Equal(t, added, snap5.Metadata.ConfState)
}

// TestApplySnapshotCrash: a crash after the meta file took the snapshot
// but before the log was reset leaves the old batches; Open resets them.
func TestApplySnapshotCrash(t *testing.T) {
	l, meta := &testlog.Log{}, &testlog.Meta{}
	s, err := Open(l, meta)
	require.NoError(t, err)
	require.NoError(t, s.SetConfState(raftpb.ConfState{Voters: []uint64{1, 2, 3}}))
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2, Data: batch(50, "x")}}))
	// What ApplySnapshot saves first.
	st := s.st
	st.Compacted.Index, st.Compacted.Term, st.Compacted.Offset = 9, 3, 20
	st.Conf, st.ConfIndex, st.Terms, st.Ctl = raftpb.ConfState{Voters: []uint64{1, 2, 3}}, 9, nil, nil
	st.Hard = raftpb.HardState{Term: 3, Commit: 9}
	st.Resetting = true
	data, err := json.Marshal(&st)
	require.NoError(t, err)
	meta.SetBytes(data)
	l.Reopen()
	s, err = Open(l, meta)
	require.NoError(t, err)
	start, vis := l.Bounds()
	require.Equal(t, int64(20), start, "the old batches, which ran past the snapshot's offset, are gone")
	require.Equal(t, int64(20), vis)
	li, _ := s.LastIndex()
	require.Equal(t, uint64(9), li)
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 3, Index: 10, Data: batch(1, "y")}}))
	require.Equal(t, int64(21), s.EndOffset())
}

// TestRetainWithoutHistory: a meta file of version 1 whose configuration
// changed after its start has no configuration for the entries before
// the change; retention does not compact there, but past the change.
func TestRetainWithoutHistory(t *testing.T) {
	l, meta, _ := compactFixture(t)
	var st metaState
	require.NoError(t, json.Unmarshal(meta.Bytes(), &st))
	st.Version, st.Confs = 1, nil
	data, err := json.Marshal(&st)
	require.NoError(t, err)
	meta.SetBytes(data)
	l.Reopen()
	s, err := Open(l, meta)
	require.NoError(t, err)
	// Entry 2 is before the change at 3, of which the file keeps only the
	// result: no compaction there, and nothing removed.
	n, err := s.Retain(time.Now(), 0, 1, 2, math.MaxInt64)
	require.ErrorIs(t, err, ErrNoConfHistory)
	require.Zero(t, n)
	start, _ := l.Bounds()
	require.Equal(t, int64(0), start)
	// Past the change, the configuration is known.
	n, err = s.Retain(time.Now(), 0, 1, 10, math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n)
	requireFirst(t, s, 10)

	// A version 1 file whose configuration never changed has its history.
	l2, meta2 := &testlog.Log{}, &testlog.Meta{}
	s2, err := Open(l2, meta2)
	require.NoError(t, err)
	require.NoError(t, s2.SetConfState(raftpb.ConfState{Voters: []uint64{1}}))
	require.NoError(t, s2.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 3}))
	require.NoError(t, s2.Append([]raftpb.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2, Data: batch(1, "a")},
		{Term: 1, Index: 3, Data: batch(1, "b")}}))
	s2.Commit(3)
	var st2 metaState
	require.NoError(t, json.Unmarshal(meta2.Bytes(), &st2))
	st2.Version, st2.Confs = 1, nil
	data, err = json.Marshal(&st2)
	require.NoError(t, err)
	meta2.SetBytes(data)
	l2.Reopen()
	s2, err = Open(l2, meta2)
	require.NoError(t, err)
	n, err = s2.Retain(time.Now(), 0, 1, 3, math.MaxInt64)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	requireFirst(t, s2, 3)
}

// TestAppendDiskFull: a Ready's batches are written in one go on a disk
// log; when the disk is full, Append fails, the Raft log in memory holds
// none of them, and a reopen derives the same log from the disk.
func TestAppendDiskFull(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	l, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: efs, Dir: "g/1", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	meta := SideMeta{L: l}
	s, err := Open(l, meta)
	require.NoError(t, err)
	require.NoError(t, s.SetConfState(raftpb.ConfState{Voters: []uint64{1}}))
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2, Data: batch(2, "a")}}))
	require.NoError(t, s.Sync())

	efs.InjectWrite(nil, syscall.ENOSPC, 0)
	err = s.Append([]raftpb.Entry{{Term: 1, Index: 3, Data: batch(2, "b")}, {Term: 1, Index: 4, Data: batch(3, "c")}})
	require.ErrorIs(t, err, syscall.ENOSPC)
	last, _ := s.LastIndex()
	require.Equal(t, uint64(2), last, "the failed entries are not in the log")
	require.Equal(t, int64(2), s.EndOffset())
	efs.Clear()

	// The log takes the same entries again (raft would, after a restart).
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 1, Index: 3, Data: batch(2, "b")}, {Term: 1, Index: 4, Data: batch(3, "c")}}))
	require.Equal(t, int64(7), s.EndOffset())
	require.NoError(t, s.Sync())
	require.NoError(t, l.Close())
	l2, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: efs, Dir: "g/1", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	s2, err := Open(l2, SideMeta{L: l2})
	require.NoError(t, err)
	ents, err := s2.Entries(2, 5, 1<<20)
	require.NoError(t, err)
	require.Len(t, ents, 3)
	require.Equal(t, int64(2), wire.Batch(ents[1].Data).BaseOffset())
	require.Equal(t, int64(4), wire.Batch(ents[2].Data).BaseOffset())
	require.NoError(t, l2.Close())
}

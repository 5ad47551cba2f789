package raftlog

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"pgregory.net/rapid"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// batch returns a record batch of n records with values tagged by tag.
func batch(n int, tag string) []byte {
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	for i := range n {
		bb.Append(int64(i+1), nil, fmt.Appendf(nil, "%s-%d", tag, i), nil)
	}
	return bb.Finish()
}

func TestAppendReadReopen(t *testing.T) {
	l := &testlog.Log{}
	meta := &testlog.Meta{}
	s, err := Open(l, meta)
	require.NoError(t, err)
	last, _ := s.LastIndex()
	require.Equal(t, uint64(0), last)

	b1 := batch(3, "a")
	wire.Batch(b1).SetBaseOffset(0)
	b2 := batch(2, "b")
	wire.Batch(b2).SetBaseOffset(3)
	ents := []raftpb.Entry{
		{Term: 1, Index: 1}, // a new leader's empty entry
		{Term: 1, Index: 2, Data: b1},
		{Term: 1, Index: 3, Data: b2},
	}
	require.NoError(t, s.Append(ents))
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 2}))
	require.Equal(t, int64(3), s.Commit(2))
	_, vis := l.Bounds()
	require.Equal(t, int64(3), vis, "only the committed batch is visible")

	got, err := s.Entries(1, 4, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Empty(t, got[0].Data)
	require.Equal(t, b1, got[1].Data)
	require.Equal(t, b2, got[2].Data)
	for i, e := range got {
		require.Equal(t, uint64(i+1), e.Index)
		require.Equal(t, uint64(1), e.Term)
	}

	// A new leader (term 2) overwrites entry 3.
	b3 := batch(4, "c") // its base offset is left 0: the log stamps it
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 2, Index: 3}, {Term: 2, Index: 4, Data: b3}}))
	require.Equal(t, int64(0), wire.Batch(b3).BaseOffset(), "the entry's data is not touched")
	require.Equal(t, int64(3), s.BaseOffset(4))
	require.Equal(t, int64(-1), s.BaseOffset(3), "a control entry has no offset")
	b3 = append([]byte(nil), b3...)
	wire.Batch(b3).SetBaseOffset(3)
	require.Equal(t, int64(7), s.EndOffset())
	term, err := s.Term(3)
	require.NoError(t, err)
	require.Equal(t, uint64(2), term)
	require.NoError(t, s.SaveCommit())

	// Restart: the derived log is the same, and only the commit is visible.
	l.Reopen()
	s2, err := Open(l, meta)
	require.NoError(t, err)
	last, _ = s2.LastIndex()
	require.Equal(t, uint64(4), last)
	_, vis = l.Bounds()
	require.Equal(t, int64(3), vis)
	got, err = s2.Entries(1, 5, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.Equal(t, b3, got[3].Data)
	require.Equal(t, raftpb.EntryNormal, got[2].Type)
	require.Empty(t, got[2].Data)
	hs, _, err := s2.InitialState()
	require.NoError(t, err)
	require.Equal(t, raftpb.HardState{Term: 1, Vote: 1, Commit: 2}, hs)
}

func TestAppendRefusesMisfits(t *testing.T) {
	s, err := Open(&testlog.Log{}, &testlog.Meta{})
	require.NoError(t, err)
	require.Error(t, s.Append([]raftpb.Entry{{Term: 1, Index: 3}}), "a gap")
	require.ErrorIs(t, s.Append([]raftpb.Entry{{Term: 1, Index: 1, Data: []byte{1, 2}}}), ErrMismatch)
	last, _ := s.LastIndex()
	require.Equal(t, uint64(0), last, "nothing of a refused append is kept")
}

// TestCrashBetweenTruncateAndMeta: the log was cut but the meta file still
// has the replaced entries' records; Open drops them.
func TestCrashBetweenTruncateAndMeta(t *testing.T) {
	l := &testlog.Log{}
	meta := &testlog.Meta{}
	s, err := Open(l, meta)
	require.NoError(t, err)
	b1 := batch(2, "a")
	b2 := batch(2, "b")
	wire.Batch(b2).SetBaseOffset(2)
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2, Data: b1}, {Term: 2, Index: 3}, {Term: 2, Index: 4, Data: b2}, {Term: 2, Index: 5}}))
	saved := append([]byte(nil), meta.Bytes()...)
	// The crash: the log lost entries from offset 2 (truncated), the meta
	// file is the old one.
	require.NoError(t, l.Truncate(2))
	meta.SetBytes(saved)
	l.Reopen()
	s2, err := Open(l, meta)
	require.NoError(t, err)
	last, _ := s2.LastIndex()
	// Entry 3 (control at offset 2) is still backed: it sits at the log's
	// end. Entry 4's batch is gone, so 4 and 5 are dropped.
	require.Equal(t, uint64(3), last)
	term, _ := s2.Term(3)
	require.Equal(t, uint64(2), term)
	_, err = s2.Term(4)
	require.ErrorIs(t, err, raft.ErrUnavailable)

	// Worse: the log lost every batch. Entry 1 sits at offset 0 and stays;
	// entry 3's record and term 2's start are not backed and must go, or
	// the next term's entries would get wrong terms.
	require.NoError(t, l.Truncate(0))
	meta.SetBytes(saved)
	l.Reopen()
	s3, err := Open(l, meta)
	require.NoError(t, err)
	last, _ = s3.LastIndex()
	require.Equal(t, uint64(1), last)
	b3 := batch(1, "c")
	require.NoError(t, s3.Append([]raftpb.Entry{{Term: 3, Index: 2}, {Term: 3, Index: 3, Data: b3}}))
	for i, want := range []uint64{1, 3, 3} {
		term, err := s3.Term(uint64(i + 1))
		require.NoError(t, err)
		require.Equal(t, want, term, "term of %d", i+1)
	}
	l.Reopen()
	s4, err := Open(l, meta)
	require.NoError(t, err)
	got, err := s4.Entries(1, 4, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, b3, got[2].Data)
	require.Equal(t, uint64(3), got[2].Term)
}

// TestMatchesMemoryStorage drives the Storage and raft's MemoryStorage with
// the same appends, truncations, commits and restarts, and checks that
// they always agree on every entry and term.
func TestMatchesMemoryStorage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		l := &testlog.Log{}
		meta := &testlog.Meta{}
		s, err := Open(l, meta)
		require.NoError(t, err)
		model := raft.NewMemoryStorage()
		var commit uint64
		term := uint64(1)
		var end int64 // offset end per the model's entries
		ends := map[uint64]int64{0: 0}
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		for range steps {
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0, 1, 2, 3, 4: // append, maybe over an uncommitted tail
				last, _ := model.LastIndex()
				lo := last + 1
				if last > commit && rapid.Bool().Draw(t, "conflict") {
					lo = rapid.Uint64Range(commit+1, last).Draw(t, "lo")
					term++
				}
				end = ends[lo-1]
				n := rapid.IntRange(1, 5).Draw(t, "n")
				ents := make([]raftpb.Entry, n)
				for i := range ents {
					idx := lo + uint64(i)
					ents[i] = raftpb.Entry{Term: term, Index: idx}
					if rapid.IntRange(0, 3).Draw(t, "kind") > 0 {
						b := batch(rapid.IntRange(1, 4).Draw(t, "count"), fmt.Sprint(idx))
						wire.Batch(b).SetBaseOffset(end)
						end += int64(wire.Batch(b).Count())
						ents[i].Data = b
					}
					ends[idx] = end
				}
				require.NoError(t, s.Append(ents))
				require.NoError(t, model.Append(ents))
			case 5, 6: // commit some
				last, _ := model.LastIndex()
				if last > commit {
					commit = rapid.Uint64Range(commit+1, last).Draw(t, "commit")
					require.Equal(t, ends[commit], s.Commit(commit))
					require.NoError(t, s.SetHardState(raftpb.HardState{Term: term, Commit: commit}))
				}
			case 7: // new term and vote
				term++
				require.NoError(t, s.SetHardState(raftpb.HardState{Term: term, Vote: 2, Commit: commit}))
			case 8: // restart
				if rapid.Bool().Draw(t, "saveCommit") {
					require.NoError(t, s.SaveCommit())
				}
				l.Reopen()
				s, err = Open(l, meta)
				require.NoError(t, err)
				hs, _, _ := s.InitialState()
				commit = min(commit, hs.Commit) // a lazily saved commit can be behind
				_, vis := l.Bounds()
				require.Equal(t, ends[commit], vis)
			case 9:
			}
			// Compare everything.
			ml, _ := model.LastIndex()
			sl, _ := s.LastIndex()
			require.Equal(t, ml, sl)
			require.Equal(t, ends[sl], s.EndOffset())
			for i := uint64(1); i <= ml; i++ {
				mt, _ := model.Term(i)
				st, err := s.Term(i)
				require.NoError(t, err)
				require.Equal(t, mt, st, "term of %d", i)
			}
			if ml > 0 {
				lo := rapid.Uint64Range(1, ml).Draw(t, "elo")
				want, _ := model.Entries(lo, ml+1, 1<<30)
				got, err := s.Entries(lo, ml+1, 1<<30)
				require.NoError(t, err)
				require.Equal(t, len(want), len(got))
				for i := range want {
					require.Equal(t, want[i].Index, got[i].Index)
					require.Equal(t, want[i].Term, got[i].Term)
					require.Equal(t, len(want[i].Data), len(got[i].Data))
					require.Equal(t, want[i].Data, got[i].Data)
				}
				// A size limit returns at least one entry, in order.
				small, err := s.Entries(lo, ml+1, 1)
				require.NoError(t, err)
				require.Len(t, small, 1)
				require.Equal(t, lo, small[0].Index)
			}
		}
	})
}

// TestConfIndex: the configuration is saved with the index of the change
// that made it; a commit index saved past a change whose configuration was
// not (a crash between the two) is lowered so raft hands the change out
// again, and ConfChangeAfter finds the changes not yet applied.
func TestConfIndex(t *testing.T) {
	l := &testlog.Log{}
	meta := &testlog.Meta{}
	s, err := Open(l, meta)
	require.NoError(t, err)
	require.NoError(t, s.SetConfState(raftpb.ConfState{Voters: []uint64{1, 2, 3}}))
	b := batch(1, "a")
	wire.Batch(b).SetBaseOffset(0)
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 3}))
	require.NoError(t, s.Append([]raftpb.Entry{
		{Term: 1, Index: 1},
		{Term: 1, Index: 2, Type: raftpb.EntryConfChangeV2, Data: []byte{1}},
		{Term: 1, Index: 3, Data: b},
	}))
	require.True(t, s.ConfChangeAfter(1))
	require.False(t, s.ConfChangeAfter(2))

	l.Reopen()
	s, err = Open(l, meta)
	require.NoError(t, err)
	hs, cs, _ := s.InitialState()
	require.Equal(t, uint64(1), hs.Commit, "the change at 2 was not applied: it is handed out again")
	require.Equal(t, []uint64{1, 2, 3}, cs.Voters)

	require.NoError(t, s.ApplyConfState(raftpb.ConfState{Voters: []uint64{1, 2, 4}}, 2))
	l.Reopen()
	s, err = Open(l, meta)
	require.NoError(t, err)
	hs, cs, _ = s.InitialState()
	require.Equal(t, uint64(3), hs.Commit)
	require.Equal(t, []uint64{1, 2, 4}, cs.Voters)
	require.Equal(t, uint64(2), s.ConfIndex())
}

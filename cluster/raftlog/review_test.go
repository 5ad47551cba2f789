package raftlog

import (
	"io"
	"log"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
)

// TestReviewHardStateCommitNotAheadOfTruncation: cluster.Host hands a
// Ready's HardState to SetHardState before its Entries to Append. When a
// follower learns of a new leader's term from an append that replaces its
// uncommitted tail, the one Ready has both: HardState{new term, Commit
// covering the new entries} and the entries that conflict with its tail.
// SetHardState saves the new term at once, durably, and with it the new
// commit index, while the log still holds the old, conflicting entries at
// those indexes (Append cuts them next). A crash in between, and Open
// takes the old entries up to that commit index as committed: they are
// made visible, InitialState reports them committed, and Raft, when the
// leader sends the entries that replace them, panics ("entry 3 conflict
// with committed entry") on every restart.
func TestReviewHardStateCommitNotAheadOfTruncation(t *testing.T) {
	l := &testlog.Log{}
	meta := &testlog.Meta{}
	s, err := Open(l, meta)
	require.NoError(t, err)
	old3, old4 := batch(1, "old3"), batch(1, "old4")
	// Term 1: leader 1's empty entry and three batches; only entry 2 is
	// committed. Everything is synced (fsync=always).
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 0}))
	require.NoError(t, s.Append([]raftpb.Entry{{Term: 1, Index: 1}, {Term: 1, Index: 2, Data: batch(1, "two")},
		{Term: 1, Index: 3, Data: old3}, {Term: 1, Index: 4, Data: old4}}))
	require.NoError(t, s.Sync())
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 2}))
	s.Commit(2)

	// Leader 3 of term 2 appends after entry 2: its empty entry and two
	// batches, and says they are committed. The host's Ready: the hard
	// state first...
	new4, new5 := batch(1, "new4"), batch(1, "new5")
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 2, Vote: 0, Commit: 5}))
	// ... and the node crashes before Append cuts entries 3 and 4.
	l.Crash()
	s2, err := Open(l, meta)
	require.NoError(t, err)
	hs, _, _ := s2.InitialState()
	_, vis := l.Bounds()
	assert.LessOrEqual(t, vis, int64(1), "the old term's uncommitted batches were made visible as committed")
	assert.LessOrEqual(t, hs.Commit, uint64(2), "the old term's uncommitted entries are reported committed")

	// What Raft does with it: an append from the new leader after entry
	// 2 is below its commit index, so Raft answers with that commit index
	// (4), not a rejection. The leader counts this replica as holding its
	// own entries 3 and 4 of term 2, which it does not: its entries 3 and
	// 4 are the old ones. That acknowledgement can make the leader commit
	// (and ack to a producer) entry 4 on the strength of a replica that
	// never held it.
	rn, err := raft.NewRawNode(&raft.Config{ID: 2, ElectionTick: 10, HeartbeatTick: 1, Storage: s2,
		Applied: hs.Commit, MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16,
		Logger: &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}})
	require.NoError(t, err)
	require.NoError(t, rn.Step(raftpb.Message{Type: raftpb.MsgApp, From: 3, To: 2, Term: 2, Index: 2, LogTerm: 1, Commit: 5,
		Entries: []raftpb.Entry{{Term: 2, Index: 3}, {Term: 2, Index: 4, Data: new4}, {Term: 2, Index: 5, Data: new5}}}))
	rd := rn.Ready() // handled as cluster.Host does: hard state, entries, then the acknowledgements
	require.NoError(t, s2.SetHardState(rd.HardState))
	require.NoError(t, s2.Append(rd.Entries))
	for _, m := range rd.Messages {
		if m.Type != raftpb.MsgAppResp || m.Reject {
			continue
		}
		for i := uint64(3); i <= m.Index; i++ {
			if term, _ := s2.Term(i); term != 2 {
				assert.Failf(t, "a replica acknowledges entries it does not hold",
					"it answers the term 2 append with index %d while its entry %d is of term %d", m.Index, i, term)
			}
		}
	}
}

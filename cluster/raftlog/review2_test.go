package raftlog

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
)

// TestReview2RestartMidFetchKeepsTheStage: a follower whose commit index
// moved on since its meta file was last written (the usual case: a
// commit alone is not saved) restarts in the middle of a fetch. The stage
// it filled holds committed batches and should be kept; it is thrown
// away, because the follower's visible end after the restart (the saved
// commit) is before where the stage starts.
func TestReview2RestartMidFetchKeepsTheStage(t *testing.T) {
	_, ls := leaderLog(t, 100)
	fl := &testlog.Log{}
	fs, err := Open(fl, &testlog.Meta{})
	require.NoError(t, err)
	require.NoError(t, fs.SetConfState(voters123))
	ents, err := ls.Entries(1, 21, 1<<30)
	require.NoError(t, err)
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 10}))
	require.NoError(t, fs.Append(ents)) // saves the term's start, and commit 10
	// The leader tells it the commit moved to 20: not saved.
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: 20}))
	require.Equal(t, int64(19), fs.Commit(20))

	ls.SetHorizon(101, 0)
	snap, err := ls.Snapshot()
	require.NoError(t, err)
	next, to, err := fs.PrepareInstall(snap)
	require.NoError(t, err)
	require.Equal(t, int64(19), next)
	chunk, _, err := ls.ReadRange(next, to, 500)
	require.NoError(t, err)
	staged, err := fs.Stage(next, chunk)
	require.NoError(t, err)
	require.Greater(t, staged, next)

	fl.Reopen()
	fs, err = Open(fl, fs.meta)
	require.NoError(t, err)
	again, _, err := fs.PrepareInstall(snap)
	require.NoError(t, err)
	require.Equal(t, staged, again, "the fetch goes on where the stage ends")
}

package raftlog

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

var voters123 = raftpb.ConfState{Voters: []uint64{1, 2, 3}}

// leaderLog is a leader's log of n one-record batches (v0, v1, ...) after
// an empty entry: entry i+2 holds offset i; all committed and applied.
func leaderLog(t *testing.T, n int) (*testlog.Log, *Storage) {
	t.Helper()
	l := &testlog.Log{}
	s, err := Open(l, &testlog.Meta{})
	require.NoError(t, err)
	require.NoError(t, s.SetConfState(voters123))
	ents := []raftpb.Entry{{Term: 1, Index: 1}}
	for i := range n {
		ents = append(ents, raftpb.Entry{Term: 1, Index: uint64(i + 2), Data: batch(1, fmt.Sprintf("v%d", i))})
	}
	require.NoError(t, s.SetHardState(raftpb.HardState{Term: 1, Vote: 1, Commit: uint64(n + 1)}))
	require.NoError(t, s.Append(ents))
	require.Equal(t, int64(n), s.Commit(uint64(n+1)))
	return l, s
}

// values reads a log's visible batches: its start and one value per offset.
func values(t *testing.T, l Log) (int64, []string) {
	t.Helper()
	start, end := l.Bounds()
	var out []string
	require.NoError(t, l.Read(start, math.MaxInt32, func(b wire.Batch) bool {
		require.Equal(t, start+int64(len(out)), b.BaseOffset())
		it := b.Records()
		var r wire.Record
		for it.Next(&r) {
			out = append(out, string(r.Value))
		}
		return true
	}))
	require.Len(t, out, int(end-start))
	return start, out
}

// fetch fills the follower's stage for snap from the leader, in chunks of
// about max bytes, as the host does.
func fetch(t *testing.T, leader, follower *Storage, snap raftpb.Snapshot, max int) int {
	t.Helper()
	next, to, err := follower.PrepareInstall(snap)
	require.NoError(t, err)
	chunks := 0
	for next < to {
		chunk, end, err := leader.ReadRange(next, to, max)
		require.NoError(t, err)
		require.NotEmpty(t, chunk)
		next, err = follower.Stage(next, chunk)
		require.NoError(t, err)
		require.Equal(t, end, next, "ReadRange says where its chunk ends")
		chunks++
	}
	require.Equal(t, to, next)
	return chunks
}

// TestHorizonSendsASnapshotBeyondTheWindow: the leader tells Raft its log
// starts at the first entry within the catch-up window of what it
// applied; the snapshot there says where the log goes on and where the
// leader's starts.
func TestHorizonSendsASnapshotBeyondTheWindow(t *testing.T) {
	_, s := leaderLog(t, 100)
	size := int64(len(batch(1, "v10")))
	s.SetHorizon(101, 10*size)
	require.Equal(t, uint64(92), s.Horizon(), "the ten entries that end within the window")
	requireFirst(t, s, 92)
	snap, err := s.Snapshot()
	require.NoError(t, err)
	require.Equal(t, uint64(91), snap.Metadata.Index)
	require.Equal(t, uint64(1), snap.Metadata.Term)
	require.Equal(t, voters123, snap.Metadata.ConfState)
	d, err := parseSnap(snap)
	require.NoError(t, err)
	require.Equal(t, int64(90), d.Offset, "entry 91 holds offset 89")
	require.Zero(t, d.Start)

	// It never moves back, nor past what was applied.
	s.SetHorizon(101, 50*size)
	require.Equal(t, uint64(92), s.Horizon())
	s.SetHorizon(95, 0)
	require.Equal(t, uint64(96), s.Horizon())
	s.SetHorizon(200, 0)
	require.Equal(t, uint64(102), s.Horizon(), "at most the entry after the last applied")
}

// TestInstallFetchesTheBatchesWhole: a follower that is behind, with an
// uncommitted tail of an old term, keeps what it committed, fetches the
// rest into its stage, and ends up with the leader's log up to the
// snapshot, its own tail gone; entries after the snapshot then append.
func TestInstallFetchesTheBatchesWhole(t *testing.T) {
	_, ls := leaderLog(t, 100)
	fl, fs := followerBehind(t, ls)
	ls.SetHorizon(101, 0)
	snap, err := ls.Snapshot()
	require.NoError(t, err)
	require.Equal(t, uint64(101), snap.Metadata.Index)

	chunks := fetch(t, ls, fs, snap, 200)
	require.Greater(t, chunks, 5, "several chunks")
	start, vis := fl.Bounds()
	require.Equal(t, [2]int64{0, 9}, [2]int64{start, vis}, "the partition log is untouched until the install")

	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 2, Commit: 101}))
	require.NoError(t, fs.ApplySnapshot(snap))
	requireSameLog(t, ls, fs, 100)
	require.Equal(t, 1, fl.Adopted())
	first, _ := fs.FirstIndex()
	require.Equal(t, uint64(102), first)
	term, err := fs.Term(101)
	require.NoError(t, err)
	require.Equal(t, uint64(1), term)

	// The log goes on after the snapshot, as the leader's does.
	require.NoError(t, fs.Append([]raftpb.Entry{{Term: 2, Index: 102, Data: batch(1, "next")}}))
	require.Equal(t, int64(101), fs.EndOffset())
}

// followerBehind is a follower that has the leader's first ten entries
// (committed, offsets 0-8) and two uncommitted ones of term 2 the leader
// does not have.
func followerBehind(t *testing.T, leader *Storage) (*testlog.Log, *Storage) {
	t.Helper()
	fl := &testlog.Log{}
	fs, err := Open(fl, &testlog.Meta{})
	require.NoError(t, err)
	require.NoError(t, fs.SetConfState(voters123))
	ents, err := leader.Entries(1, 11, math.MaxUint64)
	require.NoError(t, err)
	ents = append(ents,
		raftpb.Entry{Term: 2, Index: 11, Data: batch(3, "stale")},
		raftpb.Entry{Term: 2, Index: 12, Data: batch(1, "stale")})
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 2, Commit: 10}))
	require.NoError(t, fs.Append(ents))
	require.Equal(t, int64(9), fs.Commit(10))
	return fl, fs
}

// requireSameLog checks the follower's visible log is the leader's, with
// end offset end.
func requireSameLog(t *testing.T, leader, follower *Storage, end int64) {
	t.Helper()
	lstart, lv := values(t, leader.Log())
	fstart, fv := values(t, follower.Log())
	require.Equal(t, lstart, fstart)
	require.Equal(t, end, fstart+int64(len(fv)))
	require.Equal(t, lv[:len(fv)], fv)
}

// TestInstallOnANewReplica: an empty replica fetches everything the
// leader holds from its start, which retention moved.
func TestInstallOnANewReplica(t *testing.T) {
	ll, ls := leaderLog(t, 100)
	size := int64(len(batch(1, "v10")))
	n, err := ls.Retain(time.Now(), 0, 60*size, 101, math.MaxInt64)
	require.NoError(t, err)
	require.Positive(t, n)
	lstart, _ := ll.Bounds()
	require.Positive(t, lstart)
	ls.SetHorizon(101, 5*size)
	snap, err := ls.Snapshot()
	require.NoError(t, err)
	d, err := parseSnap(snap)
	require.NoError(t, err)
	require.Equal(t, lstart, d.Start)

	fl := &testlog.Log{}
	fs, err := Open(fl, &testlog.Meta{})
	require.NoError(t, err)
	fetch(t, ls, fs, snap, 1000)
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Commit: snap.Metadata.Index}))
	require.NoError(t, fs.ApplySnapshot(snap))
	requireSameLog(t, ls, fs, d.Offset)
	_, cs, _ := fs.InitialState()
	require.Equal(t, voters123, cs)
}

// TestInstallCrashFinishesAtOpen: a crash during the install (after the
// log was cut back for the stage, before the stage was adopted) is
// finished when the log is opened again.
func TestInstallCrashFinishesAtOpen(t *testing.T) {
	_, ls := leaderLog(t, 100)
	fl, fs := followerBehind(t, ls)
	meta := fs.meta.(*testlog.Meta)
	ls.SetHorizon(101, 0)
	snap, err := ls.Snapshot()
	require.NoError(t, err)
	fetch(t, ls, fs, snap, 300)
	fl.AdoptErr = errors.New("power lost")
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 2, Commit: 101}))
	require.ErrorContains(t, fs.ApplySnapshot(snap), "power lost")

	fl.Reopen()
	fs, err = Open(fl, meta)
	require.NoError(t, err)
	requireSameLog(t, ls, fs, 100)
	li, _ := fs.LastIndex()
	require.Equal(t, uint64(101), li)
	require.Contains(t, string(meta.Bytes()), `"conf"`)
	require.NotContains(t, string(meta.Bytes()), `"resetting"`)
}

// TestInstallWithoutAStageKeepsWhatIsCommitted: a snapshot that needs
// nothing fetched (the follower committed up to it) keeps the log, its
// uncommitted tail cut; one past the leader's retention starts it again.
func TestInstallWithoutAStageKeepsWhatIsCommitted(t *testing.T) {
	_, ls := leaderLog(t, 100)
	fl, fs := followerBehind(t, ls)
	snap := raftpb.Snapshot{Metadata: raftpb.SnapshotMetadata{Index: 10, Term: 1, ConfState: voters123}}
	snap.Data = []byte(`{"ratatoskr_log_start":9,"start":0}`)
	next, to, err := fs.PrepareInstall(snap)
	require.NoError(t, err)
	require.Equal(t, next, to, "nothing to fetch")
	// The follower's commit is below the snapshot's index in raft's view
	// (say it learned of 9 only); its data up to offset 9 is committed.
	fs.st.Hard.Commit = 9
	require.NoError(t, fs.ApplySnapshot(snap))
	start, v := values(t, fl)
	require.Zero(t, start)
	require.Len(t, v, 9)
	_, end := fl.Bounds()
	require.Equal(t, int64(9), end)
	require.Equal(t, int64(9), fs.EndOffset(), "the stale tail is gone")
}

// TestStageRefusesBadChunks: a chunk that is not where the stage ends, is
// damaged, or skips offsets is refused, and the stage stays as it was.
func TestStageRefusesBadChunks(t *testing.T) {
	_, ls := leaderLog(t, 20)
	_, fs := followerBehind(t, ls)
	ls.SetHorizon(21, 0)
	snap, err := ls.Snapshot()
	require.NoError(t, err)
	next, to, err := fs.PrepareInstall(snap)
	require.NoError(t, err)
	require.Equal(t, int64(9), next)
	good, _, err := ls.ReadRange(next, to, 1<<20)
	require.NoError(t, err)

	_, err = fs.Stage(next+1, good)
	require.ErrorContains(t, err, "the stage ends at 9")
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0xff
	_, err = fs.Stage(next, bad)
	require.ErrorIs(t, err, ErrMismatch)
	skip, _, err := ls.ReadRange(next+1, to, 1<<20)
	require.NoError(t, err)
	_, err = fs.Stage(next, skip)
	require.ErrorIs(t, err, ErrMismatch)
	_, err = fs.Stage(next, good[:len(good)-3])
	require.ErrorIs(t, err, ErrMismatch, "a torn batch")

	end, err := fs.Stage(next, good)
	require.NoError(t, err)
	require.Equal(t, to, end)
	// Asked again (a new snapshot), the stage keeps what it holds.
	n2, _, err := fs.PrepareInstall(snap)
	require.NoError(t, err)
	require.Equal(t, to, n2)
	_, _, err = ls.ReadRange(-1, to, 100)
	require.Error(t, err, "before the leader's start")
	_, err = fs.Entries(5, 6, 100)
	require.NoError(t, err)
	_, err = ls.Entries(1, 2, 100)
	require.ErrorIs(t, err, raft.ErrCompacted, "the leader's horizon")
}

// TestStageStartingBeforeTheCommittedEndIsKept: a stage filled while the
// follower had committed less is kept when it has committed more since
// (the stage's batches are committed ones, the same as its own), and the
// install cuts the log back to where the stage starts.
func TestStageStartingBeforeTheCommittedEndIsKept(t *testing.T) {
	ls, _, fs, snap := stageSetup(t)

	next, to, err := fs.PrepareInstall(snap)
	require.NoError(t, err)
	require.Equal(t, int64(4), next)
	chunk, _, err := ls.ReadRange(next, 15, 1<<20)
	require.NoError(t, err)
	next, err = fs.Stage(next, chunk)
	require.NoError(t, err)
	require.Equal(t, int64(15), next)

	// It learns of a later commit, then the leader's snapshot again.
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Commit: 10}))
	require.Equal(t, int64(9), fs.Commit(10))
	next, _, err = fs.PrepareInstall(snap)
	require.NoError(t, err)
	require.Equal(t, int64(15), next, "the stage, which starts at 4, is kept")
	stageTo(t, ls, fs, next, to)
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Commit: 41}))
	require.NoError(t, fs.ApplySnapshot(snap))
	requireSameLog(t, ls, fs, 40)
}

// TestStageStartingBeforeTheLogIsNotAdopted: a stage filled before the
// follower's log start moved past the stage's (retention, or a reset) is
// not kept for the next fetch, nor adopted at the install: either would
// move the log's start back, showing again what was removed.
func TestStageStartingBeforeTheLogIsNotAdopted(t *testing.T) {
	for _, when := range []string{"before-the-next-fetch", "during-the-fetch"} {
		t.Run(when, func(t *testing.T) {
			ls, fl, fs, snap := stageSetup(t)
			next, to, err := fs.PrepareInstall(snap)
			require.NoError(t, err)
			require.Equal(t, int64(4), next)
			limit := int64(15)
			if when == "during-the-fetch" {
				limit = to
			}
			stageTo(t, ls, fs, next, limit)

			// It commits more, and retention moves its log's start past
			// the stage's.
			require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Commit: 10}))
			require.Equal(t, int64(9), fs.Commit(10))
			_, err = fl.RetainBelow(time.Time{}, 0, 1, 9, nil)
			require.NoError(t, err)
			lstart, _ := fl.Bounds()
			require.Greater(t, lstart, int64(4), "past the stage's start")

			if when == "before-the-next-fetch" {
				next, _, err = fs.PrepareInstall(snap)
				require.NoError(t, err)
				require.Equal(t, int64(9), next, "the stage, which starts at 4, is filled again from the log's visible end")
				stageTo(t, ls, fs, next, to)
			}
			require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Commit: 41}))
			require.NoError(t, fs.ApplySnapshot(snap))
			start, end := fl.Bounds()
			require.GreaterOrEqual(t, start, lstart, "the log's start did not go back")
			require.Equal(t, int64(40), end)
			if when == "before-the-next-fetch" {
				require.Equal(t, lstart, start, "it kept its own batches, and the stage's after them")
				_, vals := values(t, fl)
				_, lv := values(t, ls.Log())
				require.Equal(t, lv[lstart:], vals)
			}
		})
	}
}

// stageSetup is a leader of 40 batches (offsets 0-39) at a snapshot of
// them all, and a follower holding its first ten entries, committed up to
// offset 4.
func stageSetup(t *testing.T) (ls *Storage, fl *testlog.Log, fs *Storage, snap raftpb.Snapshot) {
	t.Helper()
	_, ls = leaderLog(t, 40)
	fl = &testlog.Log{}
	fs, err := Open(fl, &testlog.Meta{})
	require.NoError(t, err)
	require.NoError(t, fs.SetConfState(voters123))
	ents, err := ls.Entries(1, 11, math.MaxUint64)
	require.NoError(t, err)
	require.NoError(t, fs.SetHardState(raftpb.HardState{Term: 1, Commit: 5}))
	require.NoError(t, fs.Append(ents))
	require.Equal(t, int64(4), fs.Commit(5))
	ls.SetHorizon(41, 0)
	snap, err = ls.Snapshot()
	require.NoError(t, err)
	return ls, fl, fs, snap
}

// stageTo stages the leader's batches from next up to to, in chunks of
// about 100 bytes.
func stageTo(t *testing.T, leader, follower *Storage, next, to int64) {
	t.Helper()
	for next < to {
		chunk, _, err := leader.ReadRange(next, to, 100)
		require.NoError(t, err)
		next, err = follower.Stage(next, chunk)
		require.NoError(t, err)
	}
}

package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// follower returns a node that is not lead.
func (c *testCluster) follower(lead uint64) uint64 {
	if c.ids[0] != lead {
		return c.ids[0]
	}
	return c.ids[1]
}

// publishAcked proposes n values, tag-000 and on, at node id, each
// acknowledged, and records each at its offset in acked.
func (c *testCluster) publishAcked(acked map[int64]string, id uint64, n int, tag string) {
	c.t.Helper()
	for i := range n {
		v := fmt.Sprintf("%s-%03d", tag, i)
		r := c.propose(id, v)
		require.NoError(c.t, r.Err)
		acked[r.Base] = v
	}
}

// recordsFrom reads a node's visible log from its start: the start and
// the value at each offset from there.
func recordsFrom(t *testing.T, l *testlog.Log) (int64, []string) {
	t.Helper()
	start, end := l.Bounds()
	var out []string
	require.NoError(t, l.Read(start, 1<<30, func(b wire.Batch) bool {
		require.Equal(t, start+int64(len(out)), b.BaseOffset(), "offsets are dense and in order")
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

// TestSnapshotCatchesUpAFollowerBehindRetention: a follower cut off while
// retention removes what it lacks is sent a snapshot when it comes back,
// starts its log again at the leader's start, and catches up from there;
// later it can lead, and nothing acknowledged is lost.
func TestSnapshotCatchesUpAFollowerBehindRetention(t *testing.T) {
	c := newTestCluster(t, 3, true)
	lead := c.leader(0)
	behind := c.follower(lead)
	acked := map[int64]string{}
	publish := func(id uint64, n int, tag string) { c.publishAcked(acked, id, n, tag) }
	publish(lead, 20, "before")
	c.waitConverged(20)

	c.net.isolate(behind, c.ids)
	publish(lead, 100, "cut")
	size := int64(len(c.batch("cut-00")))
	c.retain.Store(10 * size)
	// Wait until retention removed, on the leader, entries the cut-off
	// follower does not have.
	_, behindEnd := c.nodes[behind].log.Bounds()
	waitFor(t, "the leader's retention", func() bool {
		start, _ := c.nodes[lead].log.Bounds()
		return start > behindEnd
	})

	c.net.heal()
	publish(lead, 10, "after")
	end := int64(20 + 100 + 10)
	c.waitConverged(end)
	leadStart, leadRecs := recordsFrom(t, c.nodes[lead].log)
	bStart, bRecs := recordsFrom(t, c.nodes[behind].log)
	require.Greater(t, bStart, behindEnd, "the follower started its log again after what it had")
	require.GreaterOrEqual(t, bStart, leadStart-10, "at about the leader's start")
	for off := max(bStart, leadStart); off < end; off++ {
		require.Equal(t, leadRecs[off-leadStart], bRecs[off-bStart], "offset %d", off)
		require.Equal(t, acked[off], bRecs[off-bStart], "offset %d", off)
	}
	st, err := c.nodes[behind].host.Status(testGroup)
	require.NoError(t, err)
	require.Equal(t, "StateFollower", st.State)

	// The follower that installed the snapshot can lead: the old leader
	// crashes, and the other two go on.
	c.retain.Store(0)
	c.crash(lead)
	next := c.leader(lead)
	publish(next, 10, "later")
	c.start(lead)
	c.waitConverged(end + 10)
	for _, id := range c.ids {
		start, recs := recordsFrom(t, c.nodes[id].log)
		for off, v := range acked {
			if off >= start {
				require.Equal(t, v, recs[off-start], "node %d offset %d", id, off)
			}
		}
		require.Equal(t, end+10, start+int64(len(recs)), "node %d", id)
	}
}

// TestSnapshotToARestartedFollower: a follower that restarts after the
// leader compacted past its log gets the snapshot too, and one that
// restarts after installing a snapshot reopens at the snapshot's start.
func TestSnapshotToARestartedFollower(t *testing.T) {
	c := newTestCluster(t, 3, true)
	lead := c.leader(0)
	behind := c.follower(lead)
	for i := range 10 {
		require.NoError(t, c.propose(lead, fmt.Sprintf("a%d", i)).Err)
	}
	c.waitConverged(10)
	c.crash(behind)
	for i := range 60 {
		require.NoError(t, c.propose(lead, fmt.Sprintf("b%02d", i)).Err)
	}
	c.retain.Store(5 * int64(len(c.batch("b00"))))
	waitFor(t, "the leader's retention", func() bool {
		start, _ := c.nodes[lead].log.Bounds()
		return start > 10
	})
	c.start(behind)
	c.waitConverged(70)
	start, recs := recordsFrom(t, c.nodes[behind].log)
	require.Greater(t, start, int64(10))
	require.Equal(t, "b59", recs[len(recs)-1])

	// Restarted after the install: it reopens at its new start.
	c.retain.Store(0)
	c.crash(behind)
	c.nodes[behind].log.Reopen()
	c.start(behind)
	require.NoError(t, c.propose(lead, "c0").Err)
	c.waitConverged(71)
	start2, recs2 := recordsFrom(t, c.nodes[behind].log)
	require.LessOrEqual(t, start2-start, int64(len(recs)))
	require.Equal(t, "c0", recs2[len(recs2)-1])
}

// TestRetentionKeepsTheLastBatch: retention with the smallest bound
// removes everything applied but the last batch on every replica, and
// the group goes on.
func TestRetentionKeepsTheLastBatch(t *testing.T) {
	c := newTestCluster(t, 3, true)
	lead := c.leader(0)
	for i := range 30 {
		require.NoError(t, c.propose(lead, fmt.Sprintf("m%02d", i)).Err)
	}
	c.waitConverged(30)
	c.retain.Store(1) // keep as little as possible: everything applied may go
	waitFor(t, "retention on every node", func() bool {
		for _, id := range c.ids {
			if start, _ := c.nodes[id].log.Bounds(); start != 29 {
				return false
			}
		}
		return true
	})
	// The last batch always stays (a disk log's active segment), and the
	// group goes on.
	require.NoError(t, c.propose(lead, "m30").Err)
	c.waitConverged(31)
}

// replace3By4 adds node 4 to the group as a learner, then, in one joint
// change, makes it a voter and removes node 3, proposing "b0" and "b1"
// along the way; node 3 stops. It returns once every node shows "b1".
func (c *memCluster) replace3By4() {
	c.addNode(4)
	c.changeConf(func(st GroupStatus) bool { return slices.Contains(st.Learners, 4) },
		single(raftpb.ConfChangeAddLearnerNode, 4))
	c.proposeAtLeader("b0")
	c.changeConf(func(st GroupStatus) bool {
		return slices.Equal(st.Voters, []uint64{1, 2, 4}) && len(st.Outgoing) == 0 && len(st.Learners) == 0
	}, single(raftpb.ConfChangeAddNode, 4), single(raftpb.ConfChangeRemoveNode, 3))
	end := c.proposeAtLeader("b1").Base + 1
	c.stop(3)
	c.ids = []uint64{1, 2, 4}
	c.setPeers()
	c.waitVisible(end)
}

// TestSnapshotToANewReplica: a replica added after retention compacted
// the log (a replacement node) is in no configuration up to the
// compaction point, and raft refuses a snapshot whose configuration does
// not include it; the snapshot it is sent is at the last configuration
// change instead, which adds it. It installs that one snapshot, catches
// up, is promoted, and holds what the leader holds from its start on.
func TestSnapshotToANewReplica(t *testing.T) {
	c := newMemCluster(t, 11)
	propose := c.proposeAtLeader
	for i := range 40 {
		propose(fmt.Sprintf("a%02d", i))
	}
	c.waitVisible(40)
	c.retain.Store(5 * int64(len((&testCluster{}).batch("a00"))))
	waitFor(t, "retention on every replica", func() bool {
		for _, id := range c.ids {
			if start, _ := c.logs[id].Bounds(); start < 30 {
				return false
			}
		}
		return true
	})

	c.replace3By4()

	st4, err := c.host(4).Status(testGroup)
	require.NoError(t, err)
	require.Equal(t, 1, st4.Snapshots, "node 4 installed one snapshot")
	sent := 0
	for _, id := range []uint64{1, 2} {
		st, err := c.host(id).Status(testGroup)
		require.NoError(t, err)
		sent += st.SnapshotsSent
	}
	require.LessOrEqual(t, sent, 3, "a snapshot is sent again only when it was lost")
	// Each applies retention on its own: their starts may differ by a
	// retention pass, and they hold the same from the later one on.
	start4, recs4 := recordsFrom(t, c.logs[4])
	start1, recs1 := recordsFrom(t, c.logs[1])
	from := max(start1, start4)
	require.Equal(t, recs1[from-start1:], recs4[from-start4:], "node 4 holds what node 1 holds")
	require.Equal(t, start1+int64(len(recs1)), start4+int64(len(recs4)))
	require.Equal(t, "b1", recs4[len(recs4)-1])
}

// TestSnapshotToANewReplicaAddedAfterCompaction: a replica added after
// the leader compacted its log needs a snapshot, and the snapshot (the
// compaction point) carries a configuration that predates it. raft's
// restore refuses a snapshot whose ConfState lacks the recipient, so the
// new replica must still catch up (docs/CLUSTER.md: "it is new, and the
// topic has removed its start").
func TestSnapshotToANewReplicaAddedAfterCompaction(t *testing.T) {
	c := newMemCluster(t, 11)
	var end int64
	for i := range 40 {
		end = c.proposeAtLeader(fmt.Sprintf("m%02d", i)).Base + 1
	}
	c.waitVisible(end)
	var lead uint64
	require.Eventually(t, func() bool { lead = c.leader(); return lead != 0 }, 60*time.Second, 5*time.Millisecond)
	c.retain.Store(int64(5 * len((&testCluster{}).batch("m00"))))
	require.Eventually(t, func() bool {
		st, err := c.host(lead).Status(testGroup)
		return err == nil && st.FirstIndex > 10
	}, 60*time.Second, 5*time.Millisecond)
	c.retain.Store(0) // e.g. age-based retention: the start stays put for a while

	c.addNode(4)
	c.changeConf(func(st GroupStatus) bool { return slices.Contains(st.Learners, 4) },
		single(raftpb.ConfChangeAddLearnerNode, 4))
	defer func() {
		st4, _ := c.host(4).Status(testGroup)
		stl, _ := c.host(c.leader()).Status(testGroup)
		t.Logf("new replica: %+v\nleader: %+v", st4, stl)
	}()
	require.Eventually(t, func() bool {
		_, vis := c.logs[4].Bounds()
		return vis >= end
	}, 30*time.Second, 10*time.Millisecond, "the new replica never caught up")
}

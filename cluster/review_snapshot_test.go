package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// TestSnapshotToANewReplicaAddedAfterCompaction: a replica added after
// the leader compacted its log needs a snapshot, and the snapshot (the
// compaction point) carries a configuration that predates it. raft's
// restore refuses a snapshot whose ConfState lacks the recipient, so the
// new replica must still catch up (docs/CLUSTER.md: "it is new, and the
// topic has removed its start").
func TestSnapshotToANewReplicaAddedAfterCompaction(t *testing.T) {
	c := newMemCluster(t, 11)
	var lead uint64
	require.Eventually(t, func() bool { lead = c.leader(); return lead != 0 }, 60*time.Second, 5*time.Millisecond)
	var end int64
	for i := range 40 {
		ch := make(chan Result, 1)
		c.host(lead).Propose(testGroup, (&testCluster{}).batch(fmt.Sprintf("m%02d", i)), func(r Result) { ch <- r })
		r := <-ch
		require.NoError(t, r.Err)
		end = r.Base + 1
	}
	c.waitVisible(end)
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

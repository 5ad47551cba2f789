package cluster

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
)

// changeConf proposes a configuration change at the group's leader until
// done reports it applied there, retrying while a change is under way or
// leadership moves.
func (c *memCluster) changeConf(done func(GroupStatus) bool, changes ...raftpb.ConfChangeSingle) GroupStatus {
	var st GroupStatus
	require.Eventually(c.t, func() bool {
		l := c.leader()
		h := c.host(l)
		if h == nil {
			return false
		}
		var err error
		if st, err = h.Status(testGroup); err != nil || st.State != "StateLeader" {
			return false
		}
		if done(st) {
			return true
		}
		err = h.ChangeConf(testGroup, changes)
		var nl *NotLeaderError
		if err != nil && !errors.Is(err, ErrConfPending) && !errors.As(err, &nl) {
			c.t.Fatalf("ChangeConf: %v", err)
		}
		return false
	}, 60*time.Second, 5*time.Millisecond)
	return st
}

// addNode starts node id as a new, empty replica and tells every host of
// the new peer.
func (c *memCluster) addNode(id uint64) {
	if c.join == nil {
		c.join = map[uint64]bool{}
	}
	c.join[id] = true
	c.logs[id], c.metas[id] = &testlog.Log{}, &testlog.Meta{}
	c.ids = append(c.ids, id)
	c.start(id)
	c.setPeers()
}

// setPeers gives every running host the others of c.ids.
func (c *memCluster) setPeers() {
	for _, id := range c.ids {
		if h := c.host(id); h != nil {
			h.SetPeers(slices.DeleteFunc(slices.Clone(c.ids), func(o uint64) bool { return o == id }))
		}
	}
}

func single(t raftpb.ConfChangeType, id uint64) raftpb.ConfChangeSingle {
	return raftpb.ConfChangeSingle{Type: t, NodeID: id}
}

// TestConfChangeReplacesReplica moves a group from nodes 1-3 to 1, 2 and
// a new node 4 while producers publish: 4 joins empty as a learner,
// catches up from the leader's log, and is promoted as 3 is removed in one
// joint-consensus change. Every acknowledged batch must be at its offset
// on the final replicas, which must be identical; the configuration must
// survive restarts, including a replay of the whole log.
func TestConfChangeReplacesReplica(t *testing.T) {
	c := newMemCluster(t, 3)
	var amu sync.Mutex
	acked := map[string]int64{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				h := c.host(c.leader())
				if h == nil {
					time.Sleep(time.Millisecond) // no leader yet: poll again
					continue
				}
				v := fmt.Sprintf("p%d-%d", p, i)
				ch := make(chan Result, 1)
				h.Propose(testGroup, (&testCluster{}).batch(v), func(r Result) { ch <- r })
				if r := <-ch; r.Err == nil {
					amu.Lock()
					acked[v] = r.Base
					amu.Unlock()
				}
			}
		}()
	}
	ackedCount := func() int {
		amu.Lock()
		defer amu.Unlock()
		return len(acked)
	}
	progress := func(n int) {
		want := ackedCount() + n
		require.Eventually(t, func() bool { return ackedCount() >= want }, 60*time.Second, time.Millisecond)
	}
	progress(50)

	c.addNode(4)
	c.changeConf(func(st GroupStatus) bool { return slices.Contains(st.Learners, 4) },
		single(raftpb.ConfChangeAddLearnerNode, 4))
	progress(20)
	// Caught up: the learner holds what the leader had committed.
	var target uint64
	require.Eventually(t, func() bool {
		h := c.host(c.leader())
		if h == nil {
			return false
		}
		st, err := h.Status(testGroup)
		if err != nil || st.Match == nil {
			return false
		}
		if target == 0 {
			target = st.Commit
		}
		return st.Match[4] >= target
	}, 60*time.Second, time.Millisecond)
	st4, err := c.host(4).Status(testGroup)
	require.NoError(t, err)
	require.Equal(t, []uint64{1, 2, 3}, st4.Voters, "the joiner learned the configuration from the change's context")
	require.Equal(t, []uint64{4}, st4.Learners)

	st := c.changeConf(func(st GroupStatus) bool {
		return slices.Equal(st.Voters, []uint64{1, 2, 4}) && len(st.Outgoing) == 0 && len(st.Learners) == 0
	}, single(raftpb.ConfChangeAddNode, 4), single(raftpb.ConfChangeRemoveNode, 3))
	require.NotEqual(t, uint64(3), c.leader())
	t.Logf("moved at commit %d", st.Commit)
	progress(50)
	close(stop)
	wg.Wait()

	// Node 3 is out: the group goes on without it.
	c.stop(3)
	c.ids = []uint64{1, 2, 4}
	c.setPeers()
	end := c.proposeAtLeader("end").Base + 1
	c.waitVisible(end)
	first := records(t, c.logs[1])[:end]
	for _, id := range c.ids[1:] {
		require.Equal(t, first, records(t, c.logs[id])[:end], "replica %d differs from replica 1", id)
	}
	amu.Lock()
	for v, off := range acked {
		require.Equal(t, v, first[off], "acked %s at offset %d", v, off)
	}
	amu.Unlock()
	t.Logf("%d batches acked", ackedCount())

	// Restarts keep the configuration: from the meta file, and with the
	// whole log replayed (changes already applied are not applied again).
	c.replay = true
	for _, id := range c.ids {
		c.crashRestart(id)
	}
	for _, id := range c.ids {
		st, err := c.host(id).Status(testGroup)
		require.NoError(t, err)
		require.Equal(t, []uint64{1, 2, 4}, st.Voters, "node %d", id)
		require.Empty(t, st.Learners, "node %d", id)
	}
	require.Eventually(t, func() bool { return c.leader() != 0 }, 60*time.Second, time.Millisecond)
}

// waitVisible waits until every running replica shows the log up to end.
func (c *memCluster) waitVisible(end int64) {
	require.Eventually(c.t, func() bool {
		for _, id := range c.ids {
			if _, vis := c.logs[id].Bounds(); vis < end {
				return false
			}
		}
		return true
	}, 60*time.Second, time.Millisecond)
}

// proposeAtLeader proposes a batch of value v at whichever node leads,
// again until one commits it, and returns the outcome.
func (c *memCluster) proposeAtLeader(v string) Result {
	var r Result
	require.Eventually(c.t, func() bool {
		h := c.host(c.leader())
		if h == nil {
			return false
		}
		ch := make(chan Result, 1)
		h.Propose(testGroup, (&testCluster{}).batch(v), func(res Result) { ch <- res })
		r = <-ch
		return r.Err == nil
	}, 60*time.Second, 5*time.Millisecond)
	return r
}

// TestConfChangeReplacesDeadNodeAndLeader: a replica whose node is down is
// replaced (the joint configuration's old quorum is the two nodes up), and
// then the leader removes itself: it steps down and the others elect one
// of them. Nothing committed is lost.
func TestConfChangeReplacesDeadNodeAndLeader(t *testing.T) {
	c := newMemCluster(t, 5)
	var want []string
	propose := func(v string) {
		require.Eventually(t, func() bool {
			h := c.host(c.leader())
			if h == nil {
				return false
			}
			ch := make(chan Result, 1)
			h.Propose(testGroup, (&testCluster{}).batch(v), func(r Result) { ch <- r })
			r := <-ch
			if r.Err == nil {
				require.Equal(t, int64(len(want)), r.Base)
			}
			return r.Err == nil
		}, 60*time.Second, 5*time.Millisecond)
		want = append(want, v)
	}
	for i := range 20 {
		propose(fmt.Sprint("a", i))
	}
	// Node 3 dies (not the leader), and is replaced by node 4.
	dead := uint64(3)
	if c.leader() == dead {
		require.Eventually(t, func() bool {
			if c.leader() == dead {
				_ = c.host(dead).TransferLeader(testGroup, 1)
			}
			st, err := c.host(dead).Status(testGroup)
			return err == nil && st.Leader != 0 && st.Leader != dead
		}, 60*time.Second, 5*time.Millisecond)
	}
	c.stop(dead)
	c.addNode(4)
	c.changeConf(func(st GroupStatus) bool { return slices.Contains(st.Learners, 4) },
		single(raftpb.ConfChangeAddLearnerNode, 4))
	c.changeConf(func(st GroupStatus) bool {
		return slices.Equal(st.Voters, []uint64{1, 2, 4}) && len(st.Outgoing) == 0
	}, single(raftpb.ConfChangeAddNode, 4), single(raftpb.ConfChangeRemoveNode, dead))
	c.ids = []uint64{1, 2, 4}
	c.setPeers()
	for i := range 20 {
		propose(fmt.Sprint("b", i))
	}
	// The leader removes itself, and steps down.
	old := c.leader()
	require.NotZero(t, old)
	c.changeConf(func(st GroupStatus) bool { return !slices.Contains(st.Voters, old) && len(st.Outgoing) == 0 },
		single(raftpb.ConfChangeRemoveNode, old))
	require.Eventually(t, func() bool { l := c.leader(); return l != 0 && l != old }, 60*time.Second, time.Millisecond)
	st, err := c.host(old).Status(testGroup)
	require.NoError(t, err)
	require.NotEqual(t, "StateLeader", st.State)
	c.stop(old)
	c.ids = slices.DeleteFunc(c.ids, func(id uint64) bool { return id == old })
	c.setPeers()
	for i := range 20 {
		propose(fmt.Sprint("c", i))
	}
	c.waitVisible(int64(len(want)))
	for _, id := range c.ids {
		require.Equal(t, want, records(t, c.logs[id]), "node %d", id)
	}
}

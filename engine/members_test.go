package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
)

// startJoiningNode starts node id in this process as a new node of the
// cluster of nodes: its --peers are the members' cluster addresses, not
// its own.
func startJoiningNode(t *testing.T, id uint64, nodes []*Engine) *Engine {
	t.Helper()
	peers := map[uint64]string{}
	for _, e := range nodes {
		peers[e.cfg.NodeID] = e.ClusterAddr().String()
	}
	cfg := DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.ClusterAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.NodeID, cfg.Peers = id, peers
	cfg.RaftTick = 20 * time.Millisecond
	cfg.Shards, cfg.EventLoops = 1, 1
	e, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	require.NoError(t, e.Start(ctx))
	cancel()
	t.Cleanup(func() { shutdown(t, e) })
	return e
}

// settled reports whether every partition of topic has, at its leader, the
// configuration the metadata names: its replicas as voters, no learner,
// no joint consensus under way.
func settled(nodes []*Engine, topic string, partitions int) bool {
	for p := range partitions {
		ok := false
		for _, e := range nodes {
			pi, found := e.cluster.view.Load().Partition(topic, p)
			if !found {
				continue
			}
			st, err := e.cluster.host.Status(pi.Group)
			if err != nil || st.Leader != e.cfg.NodeID || st.State != "StateLeader" {
				continue
			}
			ok = slices.Equal(st.Voters, slices.Sorted(slices.Values(pi.Replicas))) && len(st.Learners) == 0 && len(st.Outgoing) == 0
		}
		if !ok {
			return false
		}
	}
	return true
}

// TestClusterMembership grows a three-node cluster to four (add-node), has
// rebalance move a replica of a replicated topic onto the new node, then
// removes one of the first three (remove-node), all while a producer
// publishes; every acknowledged message must be on every final replica at
// its offset, in order, and the removed id can never come back.
func TestClusterMembership(t *testing.T) {
	const topic, partitions = "moving", 2
	nodes := startReplicatedTopic(t, topic, partitions)
	e4 := startJoiningNode(t, 4, nodes)
	all := append(slices.Clone(nodes), e4)

	// add-node at node 1: node 4 joins the controller, registers, and
	// serves.
	a := newAdmin(t, nodes[0])
	a.json("POST", "/api/v1/cluster/add-node", fmt.Sprintf(`{"id":4,"cluster_addr":%q}`, e4.ClusterAddr().String()), 202, nil)
	for _, e := range all {
		require.Eventually(t, func() bool {
			n, ok := e.cluster.view.Load().Node(4)
			return ok && n.Status == meta.NodeActive
		}, 60*time.Second, 10*time.Millisecond, "node %d sees node 4 active", e.cfg.NodeID)
	}
	require.Eventually(t, func() bool {
		st, err := e4.cluster.host.Status(meta.ControllerGroup)
		return err == nil && slices.Equal(st.Voters, []uint64{1, 2, 3, 4})
	}, 60*time.Second, 10*time.Millisecond, "node 4 is a voter of the controller")
	waitTopic(t, e4, topic)

	// A producer publishes to both partitions throughout.
	cl := dialCluster(t, clusterAddrs(all, 0))
	var mu sync.Mutex
	acked := map[int][]record{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v := fmt.Sprintf("p%d-%d", p, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				ack, err := cl.Publish(ctx, topic, client.Message{Value: []byte(v)}, client.ToPartition(p))
				cancel()
				if err == nil {
					mu.Lock()
					acked[p] = append(acked[p], record{ack.Offset, v})
					mu.Unlock()
				}
			}
		}()
	}
	progress := func(n int) {
		mu.Lock()
		want := len(acked[0]) + len(acked[1]) + n
		mu.Unlock()
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked[0])+len(acked[1]) >= want
		}, 60*time.Second, 5*time.Millisecond)
	}
	progress(50)

	// rebalance: six replicas over four nodes; node 4 takes one.
	a.json("POST", "/api/v1/cluster/rebalance", "{}", 202, nil)
	require.Eventually(t, func() bool {
		for p := range partitions {
			if pi, _ := nodes[0].cluster.view.Load().Partition(topic, p); slices.Contains(pi.Replicas, 4) {
				return true
			}
		}
		return false
	}, 60*time.Second, 10*time.Millisecond, "rebalance gives node 4 a replica")
	require.Eventually(t, func() bool { return settled(all, topic, partitions) }, 120*time.Second, 10*time.Millisecond,
		"the groups' configurations follow the metadata")
	progress(50)

	// remove-node 3, through node 1.
	a.json("POST", "/api/v1/cluster/remove-node", `{"id":3}`, 202, nil)
	rest := []*Engine{nodes[0], nodes[1], e4}
	require.Eventually(t, func() bool { return settled(rest, topic, partitions) }, 120*time.Second, 10*time.Millisecond,
		"every replica moved off node 3")
	require.Eventually(t, func() bool {
		st, err := nodes[0].cluster.host.Status(meta.ControllerGroup)
		return err == nil && slices.Equal(st.Voters, []uint64{1, 2, 4}) && len(st.Outgoing) == 0
	}, 60*time.Second, 10*time.Millisecond, "node 3 left the controller")
	progress(50)
	close(stop)
	wg.Wait()

	// Every acked message is on every final replica, at its offset, in
	// order.
	v := nodes[0].cluster.view.Load()
	for p := range partitions {
		pi, _ := v.Partition(topic, p)
		require.NotContains(t, pi.Replicas, uint64(3))
		var holders []*Engine
		for _, e := range rest {
			if slices.Contains(pi.Replicas, e.cfg.NodeID) {
				holders = append(holders, e)
			}
		}
		require.Len(t, holders, 3)
		mu.Lock()
		want := slices.Clone(acked[p])
		mu.Unlock()
		require.NotEmpty(t, want)
		last := want[len(want)-1].off
		got := waitCommitted(t, holders, topic, p, int(last)+1)
		byOff := map[int64]string{}
		for _, r := range got {
			byOff[r.off] = r.val
		}
		for i, r := range want {
			require.Equal(t, r.val, byOff[r.off], "acked %s at offset %d", r.val, r.off)
			if i > 0 {
				require.Greater(t, r.off, want[i-1].off, "acks in publish order")
			}
		}
		t.Logf("partition %d: %d acked, replicas %v", p, len(want), pi.Replicas)
	}

	// The removed id never comes back.
	a.fails("POST", "/api/v1/cluster/add-node", fmt.Sprintf(`{"id":3,"cluster_addr":%q}`, "127.0.0.1:1"), 400,
		"invalid_argument", "removed")
}

// TestClusterRemoveNodeMovesSingleReplica: removing the node that holds a
// one-replica partition moves it: the new replica catches up as a
// learner, and the old leader, with no voter to hand over to, makes the
// joint change itself and steps down. Every acked message is on the new
// replica.
func TestClusterRemoveNodeMovesSingleReplica(t *testing.T) {
	nodes := startTestCluster(t, 3)
	createReplicated(t, nodes[0], "solo", 1, 1)
	for _, e := range nodes {
		waitTopic(t, e, "solo")
	}
	pi, _ := nodes[0].cluster.view.Load().Partition("solo", 0)
	holder := pi.Replicas[0]
	lead := leaderOf(t, nodes, "solo", 0)
	require.Equal(t, holder, lead.cfg.NodeID)
	c := dial(t, lead)
	var want []string
	for i := range 20 {
		v := fmt.Sprint("m", i)
		_, err := c.Publish(testCtx(t), "solo", client.Message{Value: []byte(v)}, client.ToPartition(0))
		require.NoError(t, err)
		want = append(want, v)
	}
	var rest []*Engine
	for _, e := range nodes {
		if e != lead {
			rest = append(rest, e)
		}
	}
	newAdmin(t, rest[0]).json("POST", "/api/v1/cluster/remove-node", fmt.Sprintf(`{"id":%d}`, holder), 202, nil)
	require.Eventually(t, func() bool { return settled(rest, "solo", 1) }, 120*time.Second, 10*time.Millisecond,
		"the replica moved off node %d", holder)
	pi, _ = rest[0].cluster.view.Load().Partition("solo", 0)
	for _, e := range rest {
		if e.cfg.NodeID == pi.Replicas[0] {
			waitValues(t, e, "solo", 0, want)
			next := leaderOf(t, rest, "solo", 0)
			require.Equal(t, e, next)
			ack, err := dial(t, e).Publish(testCtx(t), "solo", client.Message{Value: []byte("after")}, client.ToPartition(0))
			require.NoError(t, err)
			require.Equal(t, int64(len(want)), ack.Offset)
		}
	}
}

// restartNode stops e and starts it again on the same data directory and
// cluster address (the others know it there: the metadata's address of a
// node that joined is the one it registered), its peers at their current
// addresses; its client and HTTP listeners on new ports, which it
// registers again.
func restartNode(t *testing.T, e *Engine, others []*Engine) *Engine {
	t.Helper()
	return restartNodeAfter(t, e, others, nil)
}

// restartNodeAfter is restartNode, calling between (if not nil) while the
// node is down.
func restartNodeAfter(t *testing.T, e *Engine, others []*Engine, between func()) *Engine {
	t.Helper()
	clusterAddr := e.ClusterAddr().String()
	shutdown(t, e)
	if between != nil {
		between()
	}
	cfg := e.cfg
	peers := map[uint64]string{}
	for id := range cfg.Peers {
		peers[id] = cfg.Peers[id]
	}
	for _, o := range others {
		if _, ok := peers[o.cfg.NodeID]; ok {
			peers[o.cfg.NodeID] = o.ClusterAddr().String()
		}
	}
	if _, ok := peers[cfg.NodeID]; ok {
		peers[cfg.NodeID] = clusterAddr
	}
	cfg.Peers = peers
	cfg.Addr, cfg.HTTPAddr, cfg.ClusterAddr = "127.0.0.1:0", "127.0.0.1:0", clusterAddr
	n, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	require.NoError(t, n.Start(ctx))
	cancel()
	t.Cleanup(func() { shutdown(t, n) })
	return n
}

// TestClusterJoinedNodeRestarts: the controller's configuration survives
// restarts once it changed: a node that joined restarts from its own
// saved configuration, and an initial node, which replays the whole
// controller log, does not apply the changes in it twice.
func TestClusterJoinedNodeRestarts(t *testing.T) {
	nodes := startTestCluster(t, 3)
	e4 := startJoiningNode(t, 4, nodes)
	newAdmin(t, nodes[0]).json("POST", "/api/v1/cluster/add-node",
		fmt.Sprintf(`{"id":4,"cluster_addr":%q}`, e4.ClusterAddr().String()), 202, nil)
	voters := func(e *Engine) []uint64 {
		st, err := e.cluster.host.Status(meta.ControllerGroup)
		if err != nil {
			return nil
		}
		return st.Voters
	}
	require.Eventually(t, func() bool { return slices.Equal(voters(e4), []uint64{1, 2, 3, 4}) },
		60*time.Second, 10*time.Millisecond)

	e4 = restartNode(t, e4, nodes)
	nodes[0] = restartNode(t, nodes[0], []*Engine{nodes[1], nodes[2], e4})
	all := []*Engine{nodes[0], nodes[1], nodes[2], e4}
	for _, e := range all {
		require.Eventually(t, func() bool { return slices.Equal(voters(e), []uint64{1, 2, 3, 4}) },
			60*time.Second, 10*time.Millisecond, "node %d", e.cfg.NodeID)
	}
	// The restarted nodes take part: a topic created through node 4 is
	// served by all four.
	createReplicated(t, e4, "after", 4, 3)
	for _, e := range all {
		waitTopic(t, e, "after")
	}
	for p := range 4 {
		leaderOf(t, all, "after", p)
	}
}

// TestClusterRemovedWhileDownIsTold: a node removed while it was down
// hears of it from no Raft group (none has it any more); its peers refuse
// its handshakes saying why, and it reports itself not ready.
func TestClusterRemovedWhileDownIsTold(t *testing.T) {
	nodes := startTestCluster(t, 3)
	require.Eventually(t, func() bool { return len(nodes[0].cluster.view.Load().ActiveNodes()) == 3 },
		60*time.Second, 10*time.Millisecond, "every node registered")
	rest := nodes[:2]
	back := restartNodeAfter(t, nodes[2], rest, func() {
		newAdmin(t, rest[0]).json("POST", "/api/v1/cluster/remove-node", `{"id":3}`, 202, nil)
		require.Eventually(t, func() bool {
			n, _ := rest[1].cluster.view.Load().Node(3)
			return n.Status == meta.NodeRemoved
		}, 60*time.Second, 10*time.Millisecond, "node 3 removed")
	})
	n, _ := back.cluster.view.Load().Node(3)
	require.NotEqual(t, meta.NodeRemoved, n.Status, "its own metadata does not say so")
	require.Eventually(t, func() bool { return back.cluster.removed.Load() }, 60*time.Second, 10*time.Millisecond,
		"a peer told it")
	require.Equal(t, []string{"this node was removed from the cluster"}, back.notReadyReasons(false))
}

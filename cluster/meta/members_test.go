package meta

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestJoinNode: a node an operator adds is joining (a controller member,
// not yet given replicas) until it registers; a removed id never comes
// back, by either command.
func TestJoinNode(t *testing.T) {
	a := cluster(t, 1, 2, 3)
	res := a.ok(JoinNode{ID: 4, ClusterAddr: "n4:7401"})
	require.Equal(t, uint64(4), res.Node)
	n, _ := a.s.Node(4)
	require.Equal(t, NodeJoining, n.Status)
	require.Equal(t, []uint64{1, 2, 3, 4}, a.s.Members())
	require.Equal(t, []uint64{1, 2, 3}, a.s.ActiveNodes())
	require.True(t, a.ok(JoinNode{ID: 4, ClusterAddr: "n4:7401"}).Unchanged)
	a.fail(JoinNode{ID: 5, ClusterAddr: "n3:7401"}.Encode(), ErrAddrInUse)
	a.fail(JoinNode{ID: 5, ClusterAddr: "n5"}.Encode(), ErrBadAddr)

	a.ok(addNode(4))
	n, _ = a.s.Node(4)
	require.Equal(t, NodeActive, n.Status)

	a.ok(CreateTopic{Name: "t", Partitions: 2, Replicas: 3})
	a.ok(RemoveNode{ID: 3})
	require.Equal(t, []uint64{1, 2, 4}, a.s.Members())
	a.fail(JoinNode{ID: 3, ClusterAddr: "n3:7401"}.Encode(), ErrNodeRemoved)
	a.fail(addNode(3).Encode(), ErrNodeRemoved)
}

// TestRebalanceReplicas: Rebalance with Replicas gives a node just added
// its share of the replicas, keeps each set's preferred leader a replica
// that had the data, and records the sets the groups started with.
func TestRebalanceReplicas(t *testing.T) {
	a := cluster(t, 1, 2, 3)
	a.ok(CreateTopic{Name: "t", Partitions: 4, Replicas: 3})
	before := map[int][]uint64{}
	for p := range 4 {
		before[p] = a.replicas("t", p)
	}
	a.ok(addNode(4))
	require.True(t, a.ok(Rebalance{}).Unchanged, "without Replicas no replica moves")
	res := a.ok(Rebalance{Replicas: true})
	require.Len(t, res.Moves, 3, "12 replicas on 4 nodes: 3 each")
	counts := a.s.replicaCounts()
	require.Equal(t, map[uint64]int{1: 3, 2: 3, 3: 3, 4: 3}, counts)
	for _, m := range res.Moves {
		require.Equal(t, []uint64{4}, m.Added())
		require.Len(t, m.Removed(), 1)
		info, _ := a.s.Partition(m.Topic, m.Partition)
		require.ElementsMatch(t, before[m.Partition], info.Initial)
	}
	require.True(t, a.ok(Rebalance{Replicas: true}).Unchanged, "balanced: nothing more moves")
}

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

// TestSetReader: a reader is an active node that is not a replica; it is
// dropped when it becomes one or is removed, and survives a snapshot.
func TestSetReader(t *testing.T) {
	a := cluster(t, 1, 2, 3, 4)
	a.ok(CreateTopic{Name: "t", Partitions: 1, Replicas: 1})
	rep := a.replicas("t", 0)[0]
	others := []uint64{}
	for _, id := range []uint64{1, 2, 3, 4} {
		if id != rep {
			others = append(others, id)
		}
	}
	require.True(t, a.ok(SetReader{Topic: "t", Node: rep, On: true}).Unchanged, "a replica is no reader")
	a.ok(SetReader{Topic: "t", Node: others[2], On: true})
	a.ok(SetReader{Topic: "t", Node: others[0], On: true})
	require.True(t, a.ok(SetReader{Topic: "t", Node: others[0], On: true}).Unchanged)
	info, _ := a.s.Partition("t", 0)
	require.Equal(t, []uint64{others[0], others[2]}, info.Readers, "sorted")
	require.True(t, info.Holds(others[0]) && info.Holds(rep) && !info.Holds(others[1]))

	a.fail(SetReader{Topic: "nope", Node: others[1], On: true}.Encode(), ErrUnknownTopic)
	a.fail(SetReader{Topic: "t", Partition: 1, Node: others[1], On: true}.Encode(), ErrUnknownPartition)
	a.fail(SetReader{Topic: "t", Node: 9, On: true}.Encode(), ErrUnknownNode)
	a.ok(DrainNode{ID: others[1]})
	a.fail(SetReader{Topic: "t", Node: others[1], On: true}.Encode(), ErrNodeNotActive)

	snap, err := a.s.MarshalSnapshot()
	require.NoError(t, err)
	back, err := UnmarshalSnapshot(snap)
	require.NoError(t, err)
	requireSameState(t, a.s, back)

	a.ok(MoveReplicas{Topic: "t", Replicas: []uint64{others[0]}})
	info, _ = a.s.Partition("t", 0)
	require.Equal(t, []uint64{others[2]}, info.Readers, "a reader made a replica is no longer a reader")
	a.ok(RemoveNode{ID: others[2]})
	info, _ = a.s.Partition("t", 0)
	require.Empty(t, info.Readers, "a removed node reads nothing")
	require.True(t, a.ok(SetReader{Topic: "t", Node: others[2]}).Unchanged)
}

package meta

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fixture is five active nodes and topic "orders" (6 partitions, 3
// replicas, groups 1000-1005).
func fixture(t *testing.T) *applier {
	a := cluster(t, 1, 2, 3, 4, 5)
	a.ok(CreateTopic{Name: "orders", Partitions: 6, Replicas: 3})
	return a
}

// TestApplyErrors applies each invalid entry to the fixture: each fails
// with its error and changes nothing but Version.
func TestApplyErrors(t *testing.T) {
	big := strings.Repeat("x", 250)
	cases := []struct {
		name  string
		setup func(a *applier)
		data  string
		want  error
	}{
		{"not json", nil, `{`, ErrBadCommand},
		{"empty", nil, ``, ErrBadCommand},
		{"not an object", nil, `[1]`, ErrBadCommand},
		{"trailing data", nil, `{"v":1,"op":"rebalance"} x`, ErrBadCommand},
		{"no version", nil, `{"op":"rebalance"}`, ErrBadCommand},
		{"version 0", nil, `{"v":0,"op":"rebalance"}`, ErrBadCommand},
		{"version negative", nil, `{"v":-1,"op":"rebalance"}`, ErrBadCommand},
		{"version a string", nil, `{"v":"1","op":"rebalance"}`, ErrBadCommand},
		{"version from the future", nil, `{"v":2,"op":"rebalance"}`, ErrFutureVersion},
		{"no op", nil, `{"v":1}`, ErrUnknownOp},
		{"unknown op", nil, `{"v":1,"op":"create_cluster"}`, ErrUnknownOp},
		{"field of the wrong type", nil, `{"v":1,"op":"create_topic","name":"x","partitions":"3"}`, ErrBadCommand},
		{"negative id", nil, `{"v":1,"op":"remove_node","id":-1}`, ErrBadCommand},

		{"create: empty name", nil, string(CreateTopic{Partitions: 1}.Encode()), ErrBadTopicName},
		{"create: bad name", nil, string(CreateTopic{Name: "a/b", Partitions: 1}.Encode()), ErrBadTopicName},
		{"create: name too long", nil, string(CreateTopic{Name: big, Partitions: 1}.Encode()), ErrBadTopicName},
		{"create: exists", nil, string(CreateTopic{Name: "orders", Partitions: 1}.Encode()), ErrTopicExists},
		{"create: 0 partitions", nil, string(CreateTopic{Name: "x"}.Encode()), ErrBadPartitions},
		{"create: negative partitions", nil, string(CreateTopic{Name: "x", Partitions: -1}.Encode()), ErrBadPartitions},
		{"create: too many partitions", nil, string(CreateTopic{Name: "x", Partitions: MaxPartitions + 1}.Encode()), ErrBadPartitions},
		{"create: 2 replicas", nil, string(CreateTopic{Name: "x", Partitions: 1, Replicas: 2}.Encode()), ErrBadReplicas},
		{"create: 4 replicas", nil, string(CreateTopic{Name: "x", Partitions: 1, Replicas: 4}.Encode()), ErrBadReplicas},
		{"create: 9 replicas", nil, string(CreateTopic{Name: "x", Partitions: 1, Replicas: 9}.Encode()), ErrBadReplicas},
		{"create: negative replicas", nil, string(CreateTopic{Name: "x", Partitions: 1, Replicas: -3}.Encode()), ErrBadReplicas},
		{"create: more replicas than nodes", nil, string(CreateTopic{Name: "x", Partitions: 1, Replicas: 7}.Encode()), ErrNotEnoughNodes},
		{"create: draining nodes do not count", func(a *applier) {
			a.ok(DrainNode{ID: 1})
		}, string(CreateTopic{Name: "x", Partitions: 1, Replicas: 5}.Encode()), ErrNotEnoughNodes},
		{"create: empty config key", nil, string(CreateTopic{Name: "x", Partitions: 1, Config: map[string]string{"": "v"}}.Encode()), ErrBadConfig},

		{"delete: unknown", nil, string(DeleteTopic{Name: "x"}.Encode()), ErrUnknownTopic},
		{"alter: unknown", nil, string(AlterTopic{Name: "x", Config: map[string]string{"k": "v"}}.Encode()), ErrUnknownTopic},
		{"alter: empty key", nil, string(AlterTopic{Name: "orders", Config: map[string]string{"": "v", "k": "v"}}.Encode()), ErrBadConfig},

		{"add: id 0", nil, string(AddNode{ClientAddr: "a:1", ClusterAddr: "a:2"}.Encode()), ErrBadNodeID},
		{"add: no client address", nil, string(AddNode{ID: 9, ClusterAddr: "a:2"}.Encode()), ErrBadAddr},
		{"add: no cluster address", nil, string(AddNode{ID: 9, ClientAddr: "a:1"}.Encode()), ErrBadAddr},
		{"add: no port", nil, string(AddNode{ID: 9, ClientAddr: "a", ClusterAddr: "a:2"}.Encode()), ErrBadAddr},
		{"add: no host", nil, string(AddNode{ID: 9, ClientAddr: ":1", ClusterAddr: "a:2"}.Encode()), ErrBadAddr},
		{"add: empty port", nil, string(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:"}.Encode()), ErrBadAddr},
		{"add: bad http address", nil, string(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2", HTTPAddr: "a"}.Encode()), ErrBadAddr},
		{"add: one address for both", nil, string(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:1"}.Encode()), ErrBadAddr},
		{"add: client address of another", nil, string(AddNode{ID: 9, ClientAddr: "n2:7400", ClusterAddr: "a:2"}.Encode()), ErrAddrInUse},
		{"add: cluster address of another", nil, string(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "n2:7401"}.Encode()), ErrAddrInUse},
		{"add: another's cluster address as the client's", nil, string(AddNode{ID: 9, ClientAddr: "n2:7401", ClusterAddr: "a:2"}.Encode()), ErrAddrInUse},
		{"add: removed", func(a *applier) {
			a.ok(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2"})
			a.ok(RemoveNode{ID: 9})
		}, string(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2"}.Encode()), ErrNodeRemoved},

		{"remove: unknown", nil, string(RemoveNode{ID: 9}.Encode()), ErrUnknownNode},
		{"remove: id 0", nil, string(RemoveNode{}.Encode()), ErrUnknownNode},
		{"remove: twice", func(a *applier) {
			a.ok(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2"})
			a.ok(RemoveNode{ID: 9})
		}, string(RemoveNode{ID: 9}.Encode()), ErrNodeRemoved},
		{"remove: no node left to take a replica", func(a *applier) {
			a.ok(RemoveNode{ID: 5})
			a.ok(RemoveNode{ID: 4})
		}, string(RemoveNode{ID: 3}.Encode()), ErrNotEnoughNodes},
		{"remove: draining nodes take no replicas", func(a *applier) {
			a.ok(MoveReplicas{Topic: "orders", Partition: 0, Replicas: []uint64{1, 2, 3}})
			a.ok(DrainNode{ID: 4})
			a.ok(DrainNode{ID: 5})
		}, string(RemoveNode{ID: 3}.Encode()), ErrNotEnoughNodes},

		{"drain: unknown", nil, string(DrainNode{ID: 9}.Encode()), ErrUnknownNode},
		{"drain: removed", func(a *applier) {
			a.ok(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2"})
			a.ok(RemoveNode{ID: 9})
		}, string(DrainNode{ID: 9}.Encode()), ErrNodeRemoved},

		{"report: unknown group", nil, string(ReportLeader{Group: 1006, Leader: 1, Term: 1}.Encode()), ErrUnknownGroup},
		{"report: controller group", nil, string(ReportLeader{Group: ControllerGroup, Leader: 1, Term: 1}.Encode()), ErrUnknownGroup},
		{"report: group of a deleted topic", func(a *applier) {
			a.ok(DeleteTopic{Name: "orders"})
		}, string(ReportLeader{Group: 1000, Leader: 1, Term: 1}.Encode()), ErrUnknownGroup},
		{"report: unknown leader", nil, string(ReportLeader{Group: 1000, Leader: 9, Term: 1}.Encode()), ErrUnknownNode},
		{"report: removed leader", func(a *applier) {
			a.ok(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2"})
			a.ok(RemoveNode{ID: 9})
		}, string(ReportLeader{Group: 1000, Leader: 9, Term: 1}.Encode()), ErrNodeRemoved},

		{"move: unknown topic", nil, string(MoveReplicas{Topic: "x", Replicas: []uint64{1, 2, 3}}.Encode()), ErrUnknownTopic},
		{"move: partition past the end", nil, string(MoveReplicas{Topic: "orders", Partition: 6, Replicas: []uint64{1, 2, 3}}.Encode()), ErrUnknownPartition},
		{"move: negative partition", nil, string(MoveReplicas{Topic: "orders", Partition: -1, Replicas: []uint64{1, 2, 3}}.Encode()), ErrUnknownPartition},
		{"move: too few replicas", nil, string(MoveReplicas{Topic: "orders", Replicas: []uint64{1}}.Encode()), ErrBadReplicas},
		{"move: too many replicas", nil, string(MoveReplicas{Topic: "orders", Replicas: []uint64{1, 2, 3, 4, 5}}.Encode()), ErrBadReplicas},
		{"move: no replicas", nil, string(MoveReplicas{Topic: "orders"}.Encode()), ErrBadReplicas},
		{"move: a node twice", nil, string(MoveReplicas{Topic: "orders", Replicas: []uint64{1, 2, 1}}.Encode()), ErrBadReplicas},
		{"move: unknown node", nil, string(MoveReplicas{Topic: "orders", Replicas: []uint64{1, 2, 9}}.Encode()), ErrUnknownNode},
		{"move: to a draining node", func(a *applier) {
			a.ok(MoveReplicas{Topic: "orders", Partition: 0, Replicas: []uint64{1, 2, 3}})
			a.ok(DrainNode{ID: 4})
		}, string(MoveReplicas{Topic: "orders", Partition: 0, Replicas: []uint64{1, 2, 4}}.Encode()), ErrNodeNotActive},
		{"move: to a removed node", func(a *applier) {
			a.ok(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2"})
			a.ok(RemoveNode{ID: 9})
		}, string(MoveReplicas{Topic: "orders", Replicas: []uint64{1, 2, 9}}.Encode()), ErrNodeRemoved},

		{"security: empty key", nil, string(SetSecurity{Value: []byte("v")}.Encode()), ErrBadSecurityKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := fixture(t)
			a.ok(SetSecurity{Key: "user/alice", Value: []byte("secret")})
			a.ok(ReportLeader{Group: 1001, Leader: 2, Term: 3})
			if c.setup != nil {
				c.setup(a)
			}
			a.fail([]byte(c.data), c.want)
		})
	}
}

func TestApplyStaleIndex(t *testing.T) {
	a := fixture(t)
	before := a.s.Clone()
	for _, index := range []uint64{0, 1, a.index} {
		res, err := a.s.Apply(index, CreateTopic{Name: "x", Partitions: 1}.Encode())
		require.ErrorIs(t, err, ErrStaleIndex)
		require.Equal(t, Result{Index: index}, res)
		requireSameState(t, before, a.s) // Version stays too
	}
	// Indexes may skip (entries without data, configuration changes).
	_, err := a.s.Apply(a.index+10, CreateTopic{Name: "x", Partitions: 1}.Encode())
	require.NoError(t, err)
	require.Equal(t, a.index+10, a.s.Version())
}

func TestEncode(t *testing.T) {
	cases := []struct {
		cmd  Command
		want string
	}{
		{CreateTopic{Name: "orders", Partitions: 6, Replicas: 3, Config: map[string]string{"retention": "2h", "fsync": "always"}},
			`{"v":1,"op":"create_topic","name":"orders","partitions":6,"replicas":3,"config":{"fsync":"always","retention":"2h"}}`},
		{CreateTopic{Name: "orders", Partitions: 1}, `{"v":1,"op":"create_topic","name":"orders","partitions":1}`},
		{DeleteTopic{Name: "orders"}, `{"v":1,"op":"delete_topic","name":"orders"}`},
		{AlterTopic{Name: "orders", Config: map[string]string{"retention": ""}}, `{"v":1,"op":"alter_topic","name":"orders","config":{"retention":""}}`},
		{AddNode{ID: 1, ClientAddr: "a:7400", ClusterAddr: "a:7401", HTTPAddr: "a:8080"},
			`{"v":1,"op":"add_node","id":1,"client_addr":"a:7400","cluster_addr":"a:7401","http_addr":"a:8080"}`},
		{RemoveNode{ID: 3}, `{"v":1,"op":"remove_node","id":3}`},
		{DrainNode{ID: 3}, `{"v":1,"op":"drain_node","id":3}`},
		{ReportLeader{Group: 1002, Leader: 2, Term: 7}, `{"v":1,"op":"report_leader","group":1002,"leader":2,"term":7}`},
		{MoveReplicas{Topic: "orders", Partition: 0, Replicas: []uint64{2, 1, 4}},
			`{"v":1,"op":"move_replicas","topic":"orders","partition":0,"replicas":[2,1,4]}`},
		{Rebalance{}, `{"v":1,"op":"rebalance"}`},
		{SetSecurity{Key: "user/alice", Value: []byte("hi")}, `{"v":1,"op":"set_security","key":"user/alice","value":"aGk="}`},
		{SetReader{Topic: "orders", Partition: 2, Node: 4, On: true}, `{"v":1,"op":"set_reader","topic":"orders","partition":2,"node":4,"on":true}`},
		{SetReader{Topic: "orders", Node: 4}, `{"v":1,"op":"set_reader","topic":"orders","partition":0,"node":4}`},
	}
	for _, c := range cases {
		require.Equal(t, c.want, string(c.cmd.Encode()))
		got, err := Decode(c.cmd.Encode())
		require.NoError(t, err)
		require.Equal(t, c.cmd, got)
	}
}

func TestCreateTopic(t *testing.T) {
	a := cluster(t, 1, 2, 3, 4, 5)
	res := a.ok(CreateTopic{Name: "orders", Partitions: 4, Replicas: 3, Config: map[string]string{"retention": "2h", "fsync": ""}})
	require.Equal(t, "orders", res.Topic)
	require.Len(t, res.Partitions, 4)
	info, ok := a.s.Topic("orders")
	require.True(t, ok)
	require.Equal(t, TopicInfo{Name: "orders", Partitions: 4, Replicas: 3,
		Config: map[string]string{"retention": "2h"}, Created: a.index}, info, "empty config values are left out")
	for p, pi := range res.Partitions {
		require.Equal(t, FirstPartitionGroup+uint64(p), pi.Group)
		require.Equal(t, p, pi.Partition)
		got, ok := a.s.Partition("orders", p)
		require.True(t, ok)
		require.Equal(t, pi, got)
		topic, part, ok := a.s.GroupOf(pi.Group)
		require.True(t, ok)
		require.Equal(t, "orders", topic)
		require.Equal(t, p, part)
	}
	// Consecutive leaders, in ring order from the name's hash.
	start := int(fnv1a("orders") % 5)
	for p := range 4 {
		require.Equal(t, uint64((start+p)%5+1), a.replicas("orders", p)[0])
	}

	res = a.ok(CreateTopic{Name: "acme~events", Partitions: 2})
	require.Len(t, res.Partitions[0].Replicas, 3, "the default with five nodes")
	require.Equal(t, FirstPartitionGroup+4, res.Partitions[0].Group)

	// The read API hands out copies.
	info.Config["retention"] = "changed"
	res.Partitions[0].Replicas[0] = 99
	require.Equal(t, "2h", a.s.topics["orders"].Config["retention"])
	require.NotEqual(t, uint64(99), a.replicas("acme~events", 0)[0])

	_, ok = a.s.Partition("orders", 4)
	require.False(t, ok)
	_, ok = a.s.Partition("orders", -1)
	require.False(t, ok)
	_, ok = a.s.Topic("nope")
	require.False(t, ok)
	require.Equal(t, []string{"acme~events", "orders"}, a.s.Topics())
}

// TestCreateTopicMax: the largest topic is accepted, and its partitions
// placed evenly; one more partition is refused (TestApplyErrors).
func TestCreateTopicMax(t *testing.T) {
	a := cluster(t, 1, 2, 3)
	res := a.ok(CreateTopic{Name: "big", Partitions: MaxPartitions, Replicas: 3})
	require.Len(t, res.Partitions, MaxPartitions)
	require.Equal(t, FirstPartitionGroup+MaxPartitions-1, res.Partitions[MaxPartitions-1].Group)
	require.LessOrEqual(t, spread(a.s.LeaderCounts()), 1)
}

func TestDefaultReplicas(t *testing.T) {
	for n, want := range []int{1, 1, 1, 3, 3, 3, 3} {
		require.Equal(t, want, DefaultReplicas(n), "%d nodes", n)
		if n == 0 {
			continue
		}
		ids := make([]uint64, n)
		for i := range ids {
			ids[i] = uint64(i + 1)
		}
		a := cluster(t, ids...)
		res := a.ok(CreateTopic{Name: "t", Partitions: 2})
		require.Len(t, res.Partitions[0].Replicas, want)
		info, _ := a.s.Topic("t")
		require.Equal(t, want, info.Replicas)
	}
	a := newApplier(t)
	a.fail(CreateTopic{Name: "t", Partitions: 1}.Encode(), ErrNotEnoughNodes)
}

func TestDeleteTopic(t *testing.T) {
	a := fixture(t)
	parts := []PartitionInfo{}
	for p := range 6 {
		info, _ := a.s.Partition("orders", p)
		parts = append(parts, info)
	}
	res := a.ok(DeleteTopic{Name: "orders"})
	require.Equal(t, "orders", res.Topic)
	require.Equal(t, parts, res.Partitions, "the groups to stop")
	_, ok := a.s.Topic("orders")
	require.False(t, ok)
	_, _, ok = a.s.GroupOf(1000)
	require.False(t, ok)
	require.Empty(t, a.s.Topics())

	res = a.ok(CreateTopic{Name: "orders", Partitions: 1, Replicas: 1})
	require.Equal(t, uint64(1006), res.Partitions[0].Group, "group ids are never reused")
}

func TestAlterTopic(t *testing.T) {
	a := fixture(t)
	res := a.ok(AlterTopic{Name: "orders", Config: map[string]string{"retention": "2h", "fsync": "always"}})
	require.Equal(t, map[string]string{"retention": "2h", "fsync": "always"}, res.Config)
	require.False(t, res.Unchanged)
	res = a.ok(AlterTopic{Name: "orders", Config: map[string]string{"retention": "", "max-subscribers": "5", "absent": ""}})
	require.Equal(t, map[string]string{"fsync": "always", "max-subscribers": "5"}, res.Config)
	info, _ := a.s.Topic("orders")
	require.Equal(t, res.Config, info.Config)
	res = a.ok(AlterTopic{Name: "orders", Config: map[string]string{"fsync": "always", "absent": ""}})
	require.True(t, res.Unchanged)
	res = a.ok(AlterTopic{Name: "orders"})
	require.True(t, res.Unchanged)
	res.Config["fsync"] = "never"
	info, _ = a.s.Topic("orders")
	require.Equal(t, "always", info.Config["fsync"], "the result's config is a copy")
}

func TestAddNode(t *testing.T) {
	a := newApplier(t)
	res := a.ok(AddNode{ID: 7, ClientAddr: "h7:1", ClusterAddr: "h7:2"})
	require.Equal(t, uint64(7), res.Node)
	require.False(t, res.Unchanged)
	n, ok := a.s.Node(7)
	require.True(t, ok)
	require.Equal(t, Node{ID: 7, ClientAddr: "h7:1", ClusterAddr: "h7:2", Status: NodeActive}, n)

	res = a.ok(AddNode{ID: 7, ClientAddr: "h7:1", ClusterAddr: "h7:2"})
	require.True(t, res.Unchanged, "registering again")

	res = a.ok(AddNode{ID: 7, ClientAddr: "h7b:1", ClusterAddr: "h7:2", HTTPAddr: "[::1]:80"})
	require.False(t, res.Unchanged)
	n, _ = a.s.Node(7)
	require.Equal(t, "h7b:1", n.ClientAddr, "a node's own addresses may change")
	require.Equal(t, "[::1]:80", n.HTTPAddr)

	a.ok(AddNode{ID: 3, ClientAddr: "h7:1", ClusterAddr: "h3:2"}) // h7:1 is free again
	a.ok(DrainNode{ID: 3})
	res = a.ok(AddNode{ID: 3, ClientAddr: "h7:1", ClusterAddr: "h3:2"})
	require.False(t, res.Unchanged)
	n, _ = a.s.Node(3)
	require.Equal(t, NodeActive, n.Status, "adding a draining node makes it active again")

	a.ok(AddNode{ID: 5, ClientAddr: "h5:1", ClusterAddr: "h5:2"})
	a.ok(RemoveNode{ID: 5})
	a.ok(AddNode{ID: 6, ClientAddr: "h5:1", ClusterAddr: "h5:2"}) // a removed node's addresses are free
	require.Equal(t, []uint64{3, 6, 7}, a.s.ActiveNodes())
	var ids []uint64
	for _, n := range a.s.Nodes() {
		ids = append(ids, n.ID)
	}
	require.Equal(t, []uint64{3, 5, 6, 7}, ids, "removed nodes stay listed")
	_, ok = a.s.Node(4)
	require.False(t, ok)
}

func TestRemoveNode(t *testing.T) {
	a := cluster(t, 1, 2, 3, 4, 5)
	a.ok(CreateTopic{Name: "a", Partitions: 5, Replicas: 3})
	a.ok(MoveReplicas{Topic: "a", Partition: 0, Replicas: []uint64{3, 1, 2}})
	a.ok(ReportLeader{Group: 1000, Leader: 3, Term: 2})
	a.ok(ReportLeader{Group: 1001, Leader: 1, Term: 2})
	counts := a.s.replicaCounts()

	var want []Move
	for p := range 5 {
		old := a.replicas("a", p)
		if idx := indexOf(old, 3); idx >= 0 {
			want = append(want, Move{Topic: "a", Partition: p, Group: 1000 + uint64(p), Old: old})
		}
	}
	res := a.ok(RemoveNode{ID: 3})
	require.Equal(t, uint64(3), res.Node)
	require.Len(t, res.Moves, len(want))
	for i, m := range res.Moves {
		w := want[i]
		require.Equal(t, w.Old, m.Old)
		require.Equal(t, []uint64{3}, m.Removed())
		require.Len(t, m.Added(), 1)
		require.Equal(t, m.New, a.replicas("a", m.Partition))
		require.Len(t, m.New, 3)
		require.NotContains(t, m.New, uint64(3))
		require.Equal(t, m.Added()[0], m.New[2], "the new replica goes last")
		require.NotEqual(t, uint64(3), m.New[0], "a replica with the data is the preferred leader")
	}
	require.Equal(t, []uint64{1, 2, 4}, res.Moves[0].New, "node 3 led partition 0: its follower 1 leads now, 4 holds the fewest")
	n, _ := a.s.Node(3)
	require.Equal(t, NodeRemoved, n.Status)

	// The replicas went to the nodes holding the fewest: the counts stay
	// within one of each other if they were.
	delete(counts, 3)
	lo, hi := 1<<30, 0
	for id, c := range a.s.replicaCounts() {
		require.Contains(t, counts, id)
		lo, hi = min(lo, c), max(hi, c)
	}
	require.LessOrEqual(t, hi-lo, 1)

	p0, _ := a.s.Partition("a", 0)
	require.Equal(t, uint64(0), p0.Leader, "the removed node's leader hint is gone")
	require.Equal(t, uint64(2), p0.LeaderTerm)
	p1, _ := a.s.Partition("a", 1)
	require.Equal(t, uint64(1), p1.Leader)

	// A node in no replica set leaves without moves.
	a.ok(AddNode{ID: 9, ClientAddr: "a:1", ClusterAddr: "a:2"})
	res = a.ok(RemoveNode{ID: 9})
	require.Empty(t, res.Moves)
}

// TestRemoveNodeTieBreak: among nodes holding as few replicas, the lower
// id takes the replica; one in the set already never does.
func TestRemoveNodeTieBreak(t *testing.T) {
	a := cluster(t, 1, 2, 3, 4)
	a.ok(CreateTopic{Name: "a", Partitions: 1, Replicas: 1})
	a.ok(MoveReplicas{Topic: "a", Partition: 0, Replicas: []uint64{4}})
	res := a.ok(RemoveNode{ID: 4})
	require.Equal(t, []Move{{Topic: "a", Partition: 0, Group: 1000, Old: []uint64{4}, New: []uint64{1}}}, res.Moves)

	a.ok(CreateTopic{Name: "b", Partitions: 1, Replicas: 1})
	a.ok(MoveReplicas{Topic: "b", Partition: 0, Replicas: []uint64{1}})
	// Node 1 now holds two replicas, 2 none, 3 none.
	res = a.ok(RemoveNode{ID: 1})
	require.Equal(t, []uint64{2}, res.Moves[0].New)
	require.Equal(t, []uint64{3}, res.Moves[1].New, "2 holds one now")
}

func indexOf(s []uint64, id uint64) int {
	for i, x := range s {
		if x == id {
			return i
		}
	}
	return -1
}

func TestDrainNode(t *testing.T) {
	a := cluster(t, 1, 2, 3)
	a.ok(CreateTopic{Name: "a", Partitions: 6, Replicas: 3})
	before := a.s.LeaderCounts()
	require.Equal(t, map[uint64]int{1: 2, 2: 2, 3: 2}, before)
	res := a.ok(DrainNode{ID: 2})
	require.Equal(t, uint64(2), res.Node)
	require.Len(t, res.Leaders, 2)
	for _, ch := range res.Leaders {
		require.Equal(t, uint64(2), ch.From)
		require.Equal(t, ch.To, a.replicas("a", ch.Partition)[0])
		require.ElementsMatch(t, []uint64{1, 2, 3}, a.replicas("a", ch.Partition), "the replicas stay")
	}
	require.Equal(t, map[uint64]int{1: 3, 3: 3}, a.s.LeaderCounts(), "evenly onto the others")
	n, _ := a.s.Node(2)
	require.Equal(t, NodeDraining, n.Status)
	require.Equal(t, []uint64{1, 3}, a.s.ActiveNodes())

	res = a.ok(DrainNode{ID: 2})
	require.True(t, res.Unchanged)
	require.Empty(t, res.Leaders)

	// A draining node takes no new replicas.
	a.ok(CreateTopic{Name: "b", Partitions: 4, Replicas: 1})
	for p := range 4 {
		require.NotEqual(t, uint64(2), a.replicas("b", p)[0])
	}

	// A partition with no other active replica keeps its preferred leader.
	a.ok(DrainNode{ID: 1})
	a.ok(DrainNode{ID: 3})
	for p := range 6 {
		require.Len(t, a.replicas("a", p), 3)
	}
	require.Empty(t, a.s.ActiveNodes())
	require.Equal(t, uint64(0), a.s.Coordinator("g"))
}

// TestReportLeader: a report older than the recorded term is ignored; in
// the same term the first leader known stays.
func TestReportLeader(t *testing.T) {
	steps := []struct {
		leader, term         uint64
		wantLeader, wantTerm uint64
		unchanged            bool
	}{
		{leader: 0, term: 1, wantLeader: 0, wantTerm: 1}, // an election in term 1
		{leader: 2, term: 1, wantLeader: 2, wantTerm: 1}, // node 2 won it
		{leader: 3, term: 1, wantLeader: 2, wantTerm: 1, unchanged: true},
		{leader: 0, term: 1, wantLeader: 2, wantTerm: 1, unchanged: true},
		{leader: 2, term: 1, wantLeader: 2, wantTerm: 1, unchanged: true},
		{leader: 3, term: 4, wantLeader: 3, wantTerm: 4},
		{leader: 1, term: 3, wantLeader: 3, wantTerm: 4, unchanged: true}, // late
		{leader: 0, term: 5, wantLeader: 0, wantTerm: 5},                  // a new election
		{leader: 1, term: 4, wantLeader: 0, wantTerm: 5, unchanged: true},
		{leader: 1, term: 5, wantLeader: 1, wantTerm: 5},
	}
	a := fixture(t)
	for i, st := range steps {
		res := a.ok(ReportLeader{Group: 1003, Leader: st.leader, Term: st.term})
		require.Equal(t, st.unchanged, res.Unchanged, "step %d", i)
		require.Equal(t, "orders", res.Topic)
		p, _ := a.s.Partition("orders", 3)
		require.Equal(t, []PartitionInfo{p}, res.Partitions)
		require.Equal(t, st.wantLeader, p.Leader, "step %d", i)
		require.Equal(t, st.wantTerm, p.LeaderTerm, "step %d", i)
	}
	other, _ := a.s.Partition("orders", 2)
	require.Equal(t, uint64(0), other.Leader)
}

func TestMoveReplicas(t *testing.T) {
	a := fixture(t)
	old := a.replicas("orders", 2)
	res := a.ok(MoveReplicas{Topic: "orders", Partition: 2, Replicas: []uint64{old[1], old[0], old[2]}})
	require.Equal(t, []Move{{Topic: "orders", Partition: 2, Group: 1002, Old: old, New: []uint64{old[1], old[0], old[2]}}}, res.Moves)
	require.Empty(t, res.Moves[0].Added(), "a new preferred leader, no data moves")
	require.Empty(t, res.Moves[0].Removed())

	res = a.ok(MoveReplicas{Topic: "orders", Partition: 2, Replicas: []uint64{1, 2, 3}})
	require.Equal(t, []uint64{1, 2, 3}, a.replicas("orders", 2))
	m := res.Moves[0]
	for _, id := range []uint64{1, 2, 3} {
		require.Equal(t, !contains(old, id), contains(m.Added(), id), "node %d", id)
	}
	for _, id := range old {
		require.Equal(t, !contains([]uint64{1, 2, 3}, id), contains(m.Removed(), id), "node %d", id)
	}

	res = a.ok(MoveReplicas{Topic: "orders", Partition: 2, Replicas: []uint64{1, 2, 3}})
	require.True(t, res.Unchanged)
	require.Empty(t, res.Moves)

	// A draining replica may stay, and be reordered.
	a.ok(DrainNode{ID: 3})
	a.ok(MoveReplicas{Topic: "orders", Partition: 2, Replicas: []uint64{3, 5, 1}})
	require.Equal(t, []uint64{3, 5, 1}, a.replicas("orders", 2))
}

func contains(s []uint64, id uint64) bool { return indexOf(s, id) >= 0 }

func TestSetSecurity(t *testing.T) {
	a := newApplier(t)
	res := a.ok(SetSecurity{Key: "user/alice", Value: []byte{0, 1, 2}})
	require.Equal(t, "user/alice", res.SecurityKey)
	require.False(t, res.Unchanged)
	v, ok := a.s.Security("user/alice")
	require.True(t, ok)
	require.Equal(t, []byte{0, 1, 2}, v)
	v[0] = 9
	v, _ = a.s.Security("user/alice")
	require.Equal(t, byte(0), v[0], "a copy")

	require.True(t, a.ok(SetSecurity{Key: "user/alice", Value: []byte{0, 1, 2}}).Unchanged)
	a.ok(SetSecurity{Key: "acl/1", Value: []byte("x")})
	require.Equal(t, []string{"acl/1", "user/alice"}, a.s.SecurityKeys())

	res = a.ok(SetSecurity{Key: "user/alice"})
	require.False(t, res.Unchanged)
	_, ok = a.s.Security("user/alice")
	require.False(t, ok)
	require.True(t, a.ok(SetSecurity{Key: "user/alice"}).Unchanged)
	require.Equal(t, []string{"acl/1"}, a.s.SecurityKeys())
}

func TestCoordinator(t *testing.T) {
	a := cluster(t, 1, 2, 3, 4, 5)
	groups := make([]string, 500)
	owner := map[string]uint64{}
	per := map[uint64]int{}
	for i := range groups {
		groups[i] = "group-" + strings.Repeat("g", i%7) + string(rune('a'+i%26)) + string(rune('0'+i/26%10)) + string(rune('0'+i/260))
		owner[groups[i]] = a.s.Coordinator(groups[i])
		per[owner[groups[i]]]++
	}
	require.Len(t, per, 5, "every node coordinates some")
	for id, n := range per {
		require.Greater(t, n, 50, "node %d coordinates %d of 500", id, n)
	}
	require.Equal(t, owner, coordinators(a.s.Clone(), groups), "a function of the state")

	// Draining node 2 moves its groups only, and they spread.
	a.ok(DrainNode{ID: 2})
	after := coordinators(a.s, groups)
	moved := map[uint64]int{}
	for _, g := range groups {
		if owner[g] != 2 {
			require.Equal(t, owner[g], after[g], "group %s moved off node %d", g, owner[g])
		} else {
			require.NotEqual(t, uint64(2), after[g])
			moved[after[g]]++
		}
	}
	require.Len(t, moved, 4)

	// A new node takes some of everyone's, and nothing moves elsewhere.
	a.ok(addNode(6))
	later := coordinators(a.s, groups)
	took := 0
	for _, g := range groups {
		if later[g] != after[g] {
			require.Equal(t, uint64(6), later[g])
			took++
		}
	}
	require.Greater(t, took, 50)
}

func coordinators(s *State, groups []string) map[string]uint64 {
	out := map[string]uint64{}
	for _, g := range groups {
		out[g] = s.Coordinator(g)
	}
	return out
}

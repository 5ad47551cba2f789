package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// report builds node id's view: every node reachable, the controller led
// by 1, and partition 0 of "t" led by leader at commit/last.
func report(id int, leader uint64, commit, last uint64) httpapi.Cluster {
	state := "StateFollower"
	if uint64(id) == leader {
		state = "StateLeader"
	}
	c := httpapi.Cluster{NodeID: uint64(id), Controller: httpapi.RaftGroup{Group: 1, Leader: 1}}
	for n := uint64(1); n <= 3; n++ {
		c.Nodes = append(c.Nodes, httpapi.ClusterNode{ID: n, Reachable: true})
	}
	c.Partitions = []httpapi.ClusterPart{{Topic: "t", Partition: 0, Replicas: []uint64{1, 2, 3}, Leader: leader,
		Local: &httpapi.RaftGroup{Group: 1000, Leader: leader, State: state, Commit: commit, LastIndex: last}}}
	return c
}

func TestView(t *testing.T) {
	v := view{reports: map[int]httpapi.Cluster{1: report(1, 2, 10, 10), 2: report(2, 2, 10, 10), 3: report(3, 2, 10, 10)}}
	l, err := v.leader("t", 0)
	require.NoError(t, err)
	require.Equal(t, 2, l)
	require.Empty(t, v.healthy(3, 1, "t"))
	require.Empty(t, v.converged(3, 1, "t"))

	v.reports[3] = report(3, 2, 9, 10)
	require.Empty(t, v.healthy(3, 1, "t"))
	require.Equal(t, "t/0: node 3 at commit 9 of 10", v.converged(3, 1, "t"))

	v.reports[3] = report(3, 3, 10, 10) // two nodes claim to lead
	require.Contains(t, v.healthy(3, 1, "t"), "no agreed leader")

	r := report(3, 2, 10, 10)
	r.Nodes[0].Reachable = false
	v.reports[3] = r
	require.Equal(t, "node 3 does not reach node 1", v.healthy(3, 1, "t"))

	delete(v.reports, 3)
	require.Equal(t, "2 of 3 nodes answer", v.healthy(3, 1, "t"))

	// A retired node (wiped, refused) is neither expected to answer nor
	// to be reached; the two others are healthy and converged without it.
	out := view{reports: map[int]httpapi.Cluster{1: report(1, 2, 10, 10), 2: report(2, 2, 10, 10)}, out: map[int]bool{3: true}}
	for id := range out.reports {
		out.reports[id].Nodes[2].Reachable = false
	}
	require.Empty(t, out.healthy(2, 1, "t"))
	require.Empty(t, out.converged(2, 1, "t"))
	out.out = nil
	require.Contains(t, out.healthy(2, 1, "t"), "does not reach node 3")

	// A node that is down or knows no leader does not hide the one that
	// leads; of two claims, the higher term's wins.
	v.reports[3] = report(3, 0, 0, 0)
	id, g, err := v.claimedLeader("t", 0)
	require.NoError(t, err)
	require.Equal(t, 2, id)
	require.Equal(t, uint64(10), g.Commit)
	r = report(1, 1, 5, 5)
	r.Partitions[0].Local.Term = 7
	v.reports[1] = r
	id, _, err = v.claimedLeader("t", 0)
	require.NoError(t, err)
	require.Equal(t, 1, id)
}

// replacing builds node id's view of a cluster where node 3 is being
// replaced by node 4: the nodes and their statuses, and partition 0 of
// "t" led by node 1 with replicas and its group's voters and learners.
func replacing(id int, statuses map[uint64]string, replicas, voters, learners []uint64) httpapi.Cluster {
	c := httpapi.Cluster{NodeID: uint64(id), Controller: httpapi.RaftGroup{Group: 1, Leader: 1, Voters: []uint64{1, 2, 4}}}
	for _, n := range []uint64{1, 2, 3, 4} {
		c.Nodes = append(c.Nodes, httpapi.ClusterNode{ID: n, Status: statuses[n], Reachable: statuses[n] != nodeRemoved})
	}
	state := "StateFollower"
	if id == 1 {
		state = "StateLeader"
	}
	c.Partitions = []httpapi.ClusterPart{{Topic: "t", Partition: 0, Replicas: replicas, Leader: 1,
		Local: &httpapi.RaftGroup{Group: 1000, Leader: 1, State: state, Voters: voters, Learners: learners}}}
	return c
}

// TestViewReplaced: a replacement is done when the old node is removed
// and out of the controller, and every partition's replicas are the
// members, all voters; a removed node is not expected to be reached.
func TestViewReplaced(t *testing.T) {
	active := map[uint64]string{1: nodeActive, 2: nodeActive, 3: nodeRemoved, 4: nodeActive}
	members := []uint64{1, 2, 4}
	v := view{reports: map[int]httpapi.Cluster{}, out: map[int]bool{}}
	set := func(statuses map[uint64]string, replicas, voters, learners []uint64) {
		for _, id := range []int{1, 2, 4} {
			v.reports[id] = replacing(id, statuses, replicas, voters, learners)
		}
	}
	set(active, members, members, nil)
	require.Empty(t, v.replaced(3, 3, 1, "t"))
	require.Empty(t, v.healthy(3, 1, "t"), "node 3 is removed: nobody need reach it, retired or not")
	st, err := v.nodeStatus(4)
	require.NoError(t, err)
	require.Equal(t, nodeActive, st)

	set(active, []uint64{1, 2, 4}, []uint64{1, 2}, []uint64{4})
	require.Contains(t, v.replaced(3, 3, 1, "t"), "learners [4]")
	set(active, []uint64{1, 2, 3}, []uint64{1, 2, 3}, nil)
	require.Equal(t, "node 1: t/0 has replicas [1 2 3]", v.replaced(3, 3, 1, "t"))
	set(active, []uint64{1, 2}, []uint64{1, 2}, nil)
	require.Equal(t, "node 1: t/0 has replicas [1 2]", v.replaced(3, 3, 1, "t"))

	joining := map[uint64]string{1: nodeActive, 2: nodeActive, 3: nodeActive, 4: "joining"}
	set(joining, members, members, nil)
	v.reports[1].Nodes[2].Reachable = false
	v.out[3] = true // retired: its status is active until remove-node
	require.Contains(t, v.replaced(3, 3, 1, "t"), `node 3 is not removed ("active"`)
	_, err = v.nodeStatus(7)
	require.ErrorContains(t, err, "does not know node 7")

	set(active, members, members, nil)
	r := v.reports[2]
	r.Nodes[3].Status = "joining" // node 2 has not applied it yet
	v.reports[2] = r
	_, err = v.nodeStatus(4)
	require.ErrorContains(t, err, "node 4 is")

	set(active, members, members, nil)
	r = v.reports[4]
	r.Controller.Voters = []uint64{1, 2, 3, 4}
	v.reports[4] = r
	require.Equal(t, "node 4: the controller still includes node 3", v.replaced(3, 3, 1, "t"))

	delete(v.reports, 4)
	require.Equal(t, "2 of 3 nodes answer", v.replaced(3, 3, 1, "t"))
}

// TestOutcome: only a NOT_LEADER that does not say the batch may have
// been stored is a certain refusal.
func TestOutcome(t *testing.T) {
	require.Equal(t, checker.Failed, outcome(wire.NotLeader(2, "10.77.0.2:7070", "partition 0 of t")))
	require.Equal(t, checker.Failed, outcome(wire.NotLeader(0, "", "partition 0 of t")))
	require.Equal(t, checker.Unknown, outcome(wire.NotLeader(2, "10.77.0.2:7070", "partition 0 of t; the leader "+
		"stepped down with this batch in flight: it may have been stored (an idempotent producer's retry is stored once)")))
	require.Equal(t, checker.Unknown, outcome(client.ErrConnectionLost))
	require.Equal(t, checker.Unknown, outcome(errors.New("context deadline exceeded")))
	require.Equal(t, checker.Unknown, outcome(wire.ErrShuttingDown))
}

// testRouter is a router of members ids (no clients: route's client is
// nil) with every partition routed to the first.
func testRouter(partitions int, ids ...int) *router {
	r := &router{clients: map[int]*client.Client{}, addrs: map[string]int{}, leader: make([]int, partitions)}
	for _, id := range ids {
		r.add(id, nodeIP(id)+":"+clientPort, nil)
	}
	for p := range r.leader {
		r.leader[p] = ids[0]
	}
	return r
}

func routed(r *router, p int) int {
	id, _ := r.route(p)
	return id
}

// TestRouterFollowsNotLeader: a NOT_LEADER naming another node sends the
// next attempt there at once; anything else moves on to the next node
// after a pause.
func TestRouterFollowsNotLeader(t *testing.T) {
	r := testRouter(1, 1, 2, 3)
	require.False(t, r.failed(0, 1, wire.NotLeader(3, "10.77.0.3:7070", "")))
	require.Equal(t, 3, routed(r, 0))
	require.True(t, r.failed(0, 3, wire.NotLeader(3, "10.77.0.3:7070", ""))) // names itself: stale
	require.Equal(t, 1, routed(r, 0))
	require.True(t, r.failed(0, 1, client.ErrConnectionLost))
	require.Equal(t, 2, routed(r, 0))
	require.True(t, r.failed(0, 3, client.ErrConnectionLost)) // an older attempt's failure changes nothing
	require.Equal(t, 2, routed(r, 0))
}

// TestRouterFollowsMembership: a replaced node is forgotten (the
// partitions routed to it move on, a NOT_LEADER naming it is followed no
// more) and its replacement, under a higher id, learned: NOT_LEADER
// reaches it, and failures go round the members in id order.
func TestRouterFollowsMembership(t *testing.T) {
	r := testRouter(3, 1, 2, 3)
	r.leader = []int{1, 2, 3}
	r.forget(3)
	require.Equal(t, []int{1, 2, 1}, []int{routed(r, 0), routed(r, 1), routed(r, 2)}, "node 3's partition goes round to node 1")
	require.True(t, r.failed(1, 2, wire.NotLeader(3, "10.77.0.3:7070", "")), "a forgotten node is no leader to follow")
	require.Equal(t, 1, routed(r, 1))
	require.True(t, r.failed(0, 3, client.ErrConnectionLost), "an attempt at node 3 before it was forgotten")
	require.Equal(t, 1, routed(r, 0))

	require.Nil(t, r.add(4, "10.77.0.4:7070", nil))
	require.Equal(t, []int{1, 2, 4}, r.ids)
	require.False(t, r.failed(0, 1, wire.NotLeader(4, "10.77.0.4:7070", "")))
	require.Equal(t, 4, routed(r, 0))
	for _, want := range []int{1, 2, 4, 1} {
		require.True(t, r.failed(0, routed(r, 0), client.ErrConnectionLost))
		require.Equal(t, want, routed(r, 0))
	}

	// A second replacement: node 1 by node 5.
	r.leader = []int{1, 4, 1}
	r.forget(1)
	require.Equal(t, []int{2, 4, 2}, []int{routed(r, 0), routed(r, 1), routed(r, 2)})
	r.add(5, "10.77.0.5:7070", nil)
	require.True(t, r.failed(1, 4, client.ErrConnectionLost))
	require.Equal(t, 5, routed(r, 1))
	require.True(t, r.failed(1, 5, client.ErrConnectionLost))
	require.Equal(t, 2, routed(r, 1), "round again from the highest id")

	// No member left: no node to route to, and no client.
	for _, id := range []int{2, 4, 5} {
		r.forget(id)
	}
	id, c := r.route(0)
	require.Zero(t, id)
	require.Nil(t, c)
}

// TestNodeBookkeeping: a replacement takes the next id (ids are never
// reused), the members' addresses as --peers, and the replaced node is
// left out of the live nodes but kept (its log, its id).
func TestNodeBookkeeping(t *testing.T) {
	tt := &test{dir: t.TempDir(), bin: "ratatoskr"}
	first := peerList([]int{1, 2, 3})
	require.Equal(t, "1=10.77.0.1:7400,2=10.77.0.2:7400,3=10.77.0.3:7400", first)
	for range 3 {
		_, err := tt.addNode(first)
		require.NoError(t, err)
	}
	tt.node(2).retire()
	require.Equal(t, []int{1, 3}, idsOf(tt.live()))
	n, err := tt.addNode(peerList(idsOf(tt.live())))
	require.NoError(t, err)
	require.Equal(t, 4, n.id)
	require.Equal(t, "1=10.77.0.1:7400,3=10.77.0.3:7400", n.peer)
	require.Equal(t, "10.77.0.4:7400", n.clusterAddr())
	require.DirExists(t, n.dir)
	require.Same(t, n, tt.node(4))
	require.Equal(t, []int{1, 3, 4}, idsOf(tt.live()))
	require.Panics(t, func() { tt.node(5) })
}

// TestSuiteNamespaces: cleanup finds the suite's namespaces (a dead
// run's, whatever their ids) in `ip netns list`, and no other.
func TestSuiteNamespaces(t *testing.T) {
	list := "rtj-n12 (id: 5)\nrtj-n1\nother (id: 0)\nrtj-hub (id: 1)\n\n"
	require.Equal(t, []string{"rtj-n12", "rtj-n1", "rtj-hub"}, suiteNamespaces(list))
	require.Empty(t, suiteNamespaces(""))
}

// TestOthersRefuse: a wiped node counts as refused when another member's
// log (since its start) says it does not admit it; node 1 is not node 10.
func TestOthersRefuse(t *testing.T) {
	tt := &test{dir: t.TempDir(), bin: "ratatoskr"}
	for range 3 {
		_, err := tt.addNode("")
		require.NoError(t, err)
	}
	write := func(n *node, text string) {
		require.NoError(t, os.WriteFile(filepath.Join(n.dir, "node.log"), []byte(text), 0o644))
	}
	refusal := func(id int) string {
		return fmt.Sprintf(`level=ERROR msg="cluster transport: not admitted" err="transport: not admitted: this node does not admit node %d (data directory 73148a): ..."`+"\n", id)
	}
	write(tt.node(1), "---- jepsen: start node 1\n")
	write(tt.node(2), refusal(1)+"---- jepsen: start node 2\n"+refusal(10))
	write(tt.node(3), "---- jepsen: start node 3\n")
	require.False(t, tt.othersRefuse(tt.node(1)), "before its last start, or another node")
	write(tt.node(3), "---- jepsen: start node 3\n"+refusal(1))
	require.True(t, tt.othersRefuse(tt.node(1)))
	write(tt.node(1), "---- jepsen: start node 1\n"+refusal(1))
	write(tt.node(3), "---- jepsen: start node 3\n")
	require.False(t, tt.othersRefuse(tt.node(1)), "its own log is not another member's")
	tt.node(3).retire()
	write(tt.node(3), "---- jepsen: start node 3\n"+refusal(1))
	require.False(t, tt.othersRefuse(tt.node(1)), "a retired node is no member")
}

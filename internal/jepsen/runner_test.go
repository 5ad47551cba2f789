package main

import (
	"errors"
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

// TestRouterFollowsNotLeader: a NOT_LEADER naming another node sends the
// next attempt there at once; anything else moves on to the next node
// after a pause.
func TestRouterFollowsNotLeader(t *testing.T) {
	r := &router{clients: make([]*client.Client, 3), leader: []int{1},
		addrs: map[string]int{"10.77.0.1:7070": 1, "10.77.0.2:7070": 2, "10.77.0.3:7070": 3}}
	require.False(t, r.failed(0, 1, wire.NotLeader(3, "10.77.0.3:7070", "")))
	require.Equal(t, 3, r.route(0))
	require.True(t, r.failed(0, 3, wire.NotLeader(3, "10.77.0.3:7070", ""))) // names itself: stale
	require.Equal(t, 1, r.route(0))
	require.True(t, r.failed(0, 1, client.ErrConnectionLost))
	require.Equal(t, 2, r.route(0))
	require.True(t, r.failed(0, 3, client.ErrConnectionLost)) // an older attempt's failure changes nothing
	require.Equal(t, 2, r.route(0))
}

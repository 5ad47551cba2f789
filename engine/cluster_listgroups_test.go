package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// TestClusterListGroupsFromAnyNode: ListGroups at any node of a cluster
// lists the groups every coordinator has, not only its own (a node
// request to each other node, cluster.Host.Ask).
func TestClusterListGroupsFromAnyNode(t *testing.T) {
	const topic = "listed"
	nodes := startReplicatedTopic(t, topic, 1)
	// Two groups with different coordinators.
	coords := map[uint64]string{}
	for i := 0; len(coords) < 2 && i < 40; i++ {
		name := fmt.Sprintf("g%d", i)
		coords[coordinatorOf(t, nodes, name).cfg.NodeID] = name
	}
	require.Len(t, coords, 2, "two groups coordinated by two nodes")
	cl := dialCluster(t, clusterAddrs(nodes, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	want := map[string]bool{}
	for _, name := range coords {
		want[name] = true
		gc, err := cl.JoinGroup(ctx, client.GroupConfig{Group: name, Topic: topic, Start: client.Earliest,
			Handler: func(*client.GroupMessage) error { return nil }})
		require.NoError(t, err)
		t.Cleanup(func() { _ = gc.Close() })
	}
	for _, e := range nodes {
		c := dial(t, e)
		require.Eventually(t, func() bool {
			groups, err := c.ListGroups(ctx)
			if err != nil {
				return false
			}
			got := map[string]bool{}
			for _, g := range groups {
				if g.Topic == topic && g.Members == 1 {
					got[g.Group] = true
				}
			}
			return len(got) == len(want)
		}, 60*time.Second, 20*time.Millisecond, "node %d lists both groups with their member", e.cfg.NodeID)
	}
}

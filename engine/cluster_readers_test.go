package engine

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/storage"
)

// Reader replicas (readers.go): a group's coordinator that holds no
// replica of a partition of the consumed topic reads it through a reader
// replica, a Raft learner, which it gives up once no group here consumes
// the topic.

// TestClusterGroupReadsPartitionsElsewhere: a topic of one replica per
// partition, spread over three nodes, so the group's coordinator holds
// at most one of them. The group gets every message published before and
// after it joined, commits them all, and the coordinator is a reader of
// the partitions it holds no replica of; once the consumer leaves, it
// gives them up and drops their logs.
func TestClusterGroupReadsPartitionsElsewhere(t *testing.T) {
	linger := readerLinger
	readerLinger = 300 * time.Millisecond
	t.Cleanup(func() { readerLinger = linger })

	const topic, group, partitions = "spread", "readers", 3
	nodes := startTestCluster(t, 3)
	require.Eventually(t, func() bool { return len(nodes[0].cluster.view.Load().ActiveNodes()) == 3 },
		60*time.Second, 10*time.Millisecond, "every node registered, so the partitions spread over them")
	createReplicated(t, nodes[0], topic, partitions, 1)
	for _, e := range nodes {
		waitTopic(t, e, topic)
	}
	coord := coordinatorOf(t, nodes, group)
	id := coord.cfg.NodeID
	var elsewhere []int
	v := coord.cluster.view.Load()
	for p := range partitions {
		leaderOf(t, nodes, topic, p)
		if pi, _ := v.Partition(topic, p); !slices.Contains(pi.Replicas, id) {
			elsewhere = append(elsewhere, p)
		}
	}
	require.NotEmpty(t, elsewhere, "the coordinator holds a replica of every partition")

	cl := dialCluster(t, clusterAddrs(nodes, indexOf(nodes, coord)),
		client.WithErrorHandler(func(err error) { t.Logf("client: %v", err) }))
	first := publishKeyed(t, cl, topic, "a", 60)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l := newGroupLog()
	gc, err := cl.JoinGroup(ctx, client.GroupConfig{Group: group, Topic: topic, Start: client.Earliest,
		Handler: l.handle, AutoCommitInterval: -1})
	require.NoError(t, err)
	l.await(t, first)
	second := publishKeyed(t, cl, topic, "b", 60)
	l.await(t, append(first, second...))
	commitAll(t, ctx, gc, client.AckOffset, nodes, group, len(first)+len(second))

	v = coord.cluster.view.Load()
	for _, p := range elsewhere {
		pi, _ := v.Partition(topic, p)
		require.Equal(t, []uint64{id}, pi.Readers, "partition %d: the coordinator reads it", p)
		rep := coord.topics.get([]byte(topic)).Parts[p].Replica.(*replica)
		require.True(t, rep.local, "partition %d: a replica on the coordinator", p)
		st, err := coord.cluster.host.Status(rep.group)
		require.NoError(t, err)
		require.Contains(t, st.Learners, id, "partition %d: a learner, counting for no quorum", p)
	}

	require.NoError(t, gc.Close())
	require.Eventually(t, func() bool {
		v := coord.cluster.view.Load()
		for _, p := range elsewhere {
			pi, _ := v.Partition(topic, p)
			tp := coord.topics.get([]byte(topic))
			if len(pi.Readers) > 0 || tp == nil {
				return false
			}
			if _, offline := tp.Parts[p].Log.(*storage.OfflineLog); !offline {
				return false
			}
		}
		return true
	}, 60*time.Second, 10*time.Millisecond, "the coordinator gives its readers up once the group has no member")
}

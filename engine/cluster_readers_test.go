package engine

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
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

// TestClusterReaderOfItsInitialReplicaJoins: a node that held a partition
// when it was created (PartitionInfo.Initial), whose replica then moved
// away and was dropped, and that becomes a reader of it, joins the group
// empty, as any new replica does: it must not start over the group's
// first configuration, where it is a voter, alone here. With its leader
// down (no one tells it the real configuration) it would elect itself
// and lead the partition from an empty log.
func TestClusterReaderOfItsInitialReplicaJoins(t *testing.T) {
	const topic = "moved"
	nodes, a, b := movedAway(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var rest []*Engine
	for _, e := range nodes {
		if e != b {
			rest = append(rest, e)
		}
	}
	require.NoError(t, rest[0].cluster.propose(ctx, meta.SetReader{Topic: topic, Node: a.cfg.NodeID, On: true}))
	var rep *replica
	require.Eventually(t, func() bool {
		rep = a.topics.get([]byte(topic)).Parts[0].Replica.(*replica)
		return rep.local
	}, 60*time.Second, 10*time.Millisecond, "a reader replica built on node %d", a.cfg.NodeID)
	st, err := a.cluster.host.Status(rep.group)
	require.NoError(t, err)
	require.NotContains(t, st.Voters, a.cfg.NodeID, "a reader started as a voter of the group's first configuration")
	require.Error(t, rep.Leads(), "a reader leads")
}

// TestClusterTopicDeletedWhileReaderCatchesUp: a group whose coordinator
// has a reader replica of a partition that has not caught up yet (its
// leader is down) still consumes the topic's build from before the
// reader was added; when the topic is deleted, the group goes with it.
func TestClusterTopicDeletedWhileReaderCatchesUp(t *testing.T) {
	const topic, group, partitions = "doomed", "readers", 3
	nodes := startTestClusterWith(t, 3, func(c *Config) { c.AutoCreateTopics = false }) // the member must not create it again
	require.Eventually(t, func() bool { return len(nodes[0].cluster.view.Load().ActiveNodes()) == 3 },
		60*time.Second, 10*time.Millisecond, "every node registered")
	createReplicated(t, nodes[0], topic, partitions, 1)
	for _, e := range nodes {
		waitTopic(t, e, topic)
	}
	coord := coordinatorOf(t, nodes, group)
	id := coord.cfg.NodeID
	v := coord.cluster.view.Load()
	p := -1
	var down *Engine
	for i := range partitions {
		leaderOf(t, nodes, topic, i)
		if pi, _ := v.Partition(topic, i); pi.Replicas[0] != id && p < 0 {
			p = i
			down = nodes[slices.IndexFunc(nodes, func(e *Engine) bool { return e.cfg.NodeID == pi.Replicas[0] })]
		}
	}
	require.GreaterOrEqual(t, p, 0, "the coordinator holds every partition")
	shutdown(t, down)
	var rest []*Engine
	for _, e := range nodes {
		if e != down {
			rest = append(rest, e)
		}
	}
	coord = coordinatorOf(t, rest, group)

	cl := dialCluster(t, clusterAddrs(rest, indexOf(rest, coord)),
		client.WithErrorHandler(func(err error) { t.Logf("client: %v", err) }))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := newGroupLog()
	gc, err := cl.JoinGroup(ctx, client.GroupConfig{Group: group, Topic: topic, Start: client.Earliest,
		Handler: l.handle, AutoCommitInterval: -1})
	require.NoError(t, err)
	defer func() { _ = gc.Close() }()
	require.Eventually(t, func() bool {
		pi, _ := coord.cluster.view.Load().Partition(topic, p)
		rep := coord.topics.get([]byte(topic)).Parts[p].Replica.(*replica)
		return slices.Contains(pi.Readers, coord.cfg.NodeID) && rep.local
	}, 60*time.Second, 10*time.Millisecond, "the coordinator reads partition %d, whose leader is down", p)

	require.NoError(t, coord.deleteTopicBy(byBroker, topic))
	require.Eventually(t, func() bool {
		return !slices.ContainsFunc(coord.groups.List(), func(g wire.GroupSummary) bool { return g.Group == group })
	}, 30*time.Second, 10*time.Millisecond, "the group of a deleted topic is gone")
	b := coord.cluster.readers
	forgot := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for key := range b.asked {
			if key.topic == topic {
				return false
			}
		}
		_, used := b.used[topic]
		return !used
	}
	deadline := time.Now().Add(30 * time.Second)
	for !forgot() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ok := forgot()
	b.mu.Lock()
	left := fmt.Sprint(b.asked, b.used)
	b.mu.Unlock()
	require.True(t, ok, "the reader bookkeeping forgets a deleted topic: %s", left)
}

// TestClusterReplicaMovedBackJoins: a partition of one replica moves from
// node a, which created it, to node b, then back to a while b is down. a's
// new replica must join the group empty and wait for b (whose log holds
// every acknowledged batch): started over the group's first
// configuration, where a is the only voter, it would elect itself and
// lead from an empty log.
func TestClusterReplicaMovedBackJoins(t *testing.T) {
	const topic = "moved-back"
	_, a, _ := movedAway(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	require.NoError(t, a.cluster.propose(ctx, meta.MoveReplicas{Topic: topic, Replicas: []uint64{a.cfg.NodeID}}))
	var rep *replica
	require.Eventually(t, func() bool {
		rep = a.topics.get([]byte(topic)).Parts[0].Replica.(*replica)
		return rep.local
	}, 60*time.Second, 10*time.Millisecond, "node %d holds a replica again", a.cfg.NodeID)
	pi, _ := a.cluster.view.Load().Partition(topic, 0)
	require.True(t, pi.Moved)
	st, err := a.cluster.host.Status(rep.group)
	require.NoError(t, err)
	require.Empty(t, st.Voters, "a replica of a moved partition started over its first configuration")
	require.Error(t, rep.Leads())
}

// movedAway starts three nodes with a topic of one partition of one
// replica, on node a, which created it; moves the replica to node b, and
// stops b once it leads the partition and a dropped its replica.
func movedAway(t *testing.T, topic string) (nodes []*Engine, a, b *Engine) {
	t.Helper()
	nodes = startTestCluster(t, 3)
	require.Eventually(t, func() bool { return len(nodes[0].cluster.view.Load().ActiveNodes()) == 3 },
		60*time.Second, 10*time.Millisecond, "every node registered")
	createReplicated(t, nodes[0], topic, 1, 1)
	for _, e := range nodes {
		waitTopic(t, e, topic)
	}
	pi, _ := nodes[0].cluster.view.Load().Partition(topic, 0)
	require.False(t, pi.Moved)
	a = nodes[slices.IndexFunc(nodes, func(e *Engine) bool { return e.cfg.NodeID == pi.Replicas[0] })]
	b = nodes[(indexOf(nodes, a)+1)%len(nodes)]
	leaderOf(t, nodes, topic, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, a.cluster.propose(ctx, meta.MoveReplicas{Topic: topic, Replicas: []uint64{b.cfg.NodeID}}))
	require.Eventually(t, func() bool {
		tp := a.topics.get([]byte(topic))
		_, offline := tp.Parts[0].Log.(*storage.OfflineLog)
		rep, ok := b.topics.get([]byte(topic)).Parts[0].Replica.(*replica)
		return offline && ok && rep.Leads() == nil
	}, 60*time.Second, 10*time.Millisecond, "the replica moved from node %d to node %d", a.cfg.NodeID, b.cfg.NodeID)
	shutdown(t, b)
	return nodes, a, b
}

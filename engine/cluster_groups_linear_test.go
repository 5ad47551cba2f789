package engine

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// A deposed coordinator (groupsrepl.go, Confirm): a node cut off from
// the others believes it leads the group's offsets partition until
// CheckQuorum steps it down, while the others elect a new coordinator
// that takes commits. It must not answer a DescribeGroup, or a JoinGroup
// whose assignment starts at the committed offsets, with its stale state.

// committedSum adds a description's committed offsets up.
func committedSum(info wire.GroupInfo) int64 {
	var sum int64
	for _, p := range info.Partitions {
		sum += max(p.Committed, 0)
	}
	return sum
}

// TestClusterDeposedCoordinatorAnswersNoStaleOffsets: a group commits 40
// messages through its coordinator; the coordinator's cluster links are
// cut (it keeps serving clients); a DescribeGroup and a JoinGroup sent to
// it at once, while it still believes it coordinates, are refused with
// NOT_LEADER instead of answered from what it holds. The group moves to
// the new coordinator and commits 40 more, which the old one never shows.
func TestClusterDeposedCoordinatorAnswersNoStaleOffsets(t *testing.T) {
	const topic, group, partitions = "orders", "ledger", 3
	nodes := startReplicatedTopic(t, topic, partitions)
	coord := coordinatorOf(t, nodes, group)
	cl := dialCluster(t, clusterAddrs(nodes, indexOf(nodes, coord)),
		client.WithErrorHandler(func(err error) { t.Logf("client: %v", err) }))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	l := newGroupLog()
	gc, err := cl.JoinGroup(ctx, client.GroupConfig{Group: group, Topic: topic, Start: client.Earliest,
		Handler: l.handle, AutoCommitInterval: -1})
	require.NoError(t, err)
	defer func() { _ = gc.Close() }()
	first := publishKeyed(t, cl, topic, "a", 40)
	l.await(t, first)
	commitAll(t, ctx, gc, client.AckOffset, nodes, group, len(first))

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	direct, err := client.Dial(ctx, coord.Addr().String(), client.WithLogger(quiet), client.WithErrorHandler(func(error) {}))
	require.NoError(t, err)
	defer func() { _ = direct.Close() }()
	info, err := direct.DescribeGroup(ctx, group)
	require.NoError(t, err, "the coordinator confirms its leadership and answers")
	require.Equal(t, int64(len(first)), committedSum(info.GroupInfo))

	// Cut off: no Raft message in or out; clients still reach it.
	require.NoError(t, coord.cluster.tr.Close())
	require.NoError(t, coord.grepl.Coordinates(group), "it still believes it coordinates the group")
	joined := make(chan error, 1)
	go func() {
		g, err := client.JoinGroup(ctx, coord.Addr().String(), client.GroupConfig{Group: group, Topic: topic,
			Handler: func(*client.GroupMessage) error { return nil }}, client.WithLogger(quiet))
		if err == nil {
			_ = g.Close()
		}
		joined <- err
	}()
	_, err = direct.DescribeGroup(ctx, group)
	require.Equal(t, wire.CodeNotLeader, wire.CodeOf(err), "a deposed coordinator answered a describe: %v", err)
	err = <-joined
	require.Equal(t, wire.CodeNotLeader, wire.CodeOf(err), "a deposed coordinator took a join: %v", err)

	var rest []*Engine
	for _, e := range nodes {
		if e != coord {
			rest = append(rest, e)
		}
	}
	next := coordinatorOf(t, rest, group)
	awaitMember(t, next, group)
	// The cut-off node may also lead partitions of the topic until its
	// CheckQuorum steps it down: a publish it takes meanwhile fails as
	// "may have been stored", which this plain producer would not retry.
	require.Eventually(t, func() bool {
		for _, p := range coord.topics.get([]byte(topic)).Parts {
			if p.Replica.(*replica).Leads() == nil {
				return false
			}
		}
		return true
	}, 60*time.Second, 10*time.Millisecond, "the cut-off node stepped down from the topic's partitions")
	for p := range partitions {
		leaderOf(t, rest, topic, p)
	}
	second := publishKeyed(t, cl, topic, "b", 40)
	l.await(t, append(first, second...))
	commitAll(t, ctx, gc, client.AckOffset, rest, group, len(first)+len(second))

	_, err = direct.DescribeGroup(ctx, group)
	require.Equal(t, wire.CodeNotLeader, wire.CodeOf(err), "%v", err)
	at := dial(t, next)
	info, err = at.DescribeGroup(ctx, group)
	require.NoError(t, err)
	require.Equal(t, int64(len(first)+len(second)), committedSum(info.GroupInfo))
}

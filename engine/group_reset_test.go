package engine

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestResetGroupPartitions: a per-partition reset moves the listed
// partitions, each to its own position, and leaves the others; a bad
// target moves nothing.
func TestResetGroupPartitions(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "rp", client.TopicConfig{Partitions: 3}))
	for p := range 3 {
		for range 40 {
			require.NoError(t, c.PublishAsync(ctx, "rp", client.Message{Value: []byte("v")}, client.ToPartition(p)))
		}
	}
	require.NoError(t, c.Flush(ctx))
	require.ErrorIs(t, c.ResetGroupPartitions(ctx, "nobody", map[int]client.Position{0: client.Earliest}),
		client.ErrUnknownGroup)

	h := newHandled()
	g := offsetMember(t, e, "rg", "rp", "m", h)
	require.Eventually(t, func() bool { return h.count() == 120 }, 30*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, c.ResetGroupPartitions(ctx, "rg", map[int]client.Position{0: client.Earliest}),
		client.ErrGroupActive)
	require.NoError(t, g.Close())
	committed := func() []int64 {
		info, err := c.DescribeGroup(ctx, "rg")
		require.NoError(t, err)
		out := make([]int64, len(info.Partitions))
		for i, p := range info.Partitions {
			out[i] = p.Committed
		}
		return out
	}
	require.Equal(t, []int64{40, 40, 40}, committed())

	for _, bad := range []struct {
		to   map[int]client.Position
		want error
	}{
		{map[int]client.Position{0: client.AtOffset(5), 3: client.Earliest}, client.ErrUnknownPartition},
		{map[int]client.Position{0: client.AtOffset(5), 1: client.AtOffset(41)}, client.ErrOffsetOutOfRange},
	} {
		require.ErrorIs(t, c.ResetGroupPartitions(ctx, "rg", bad.to), bad.want)
		require.Equal(t, []int64{40, 40, 40}, committed(), "a refused reset moves nothing")
	}

	require.NoError(t, c.ResetGroupPartitions(ctx, "rg", map[int]client.Position{0: client.AtOffset(10), 2: client.Earliest}))
	require.Equal(t, []int64{10, 40, 0}, committed())

	// A member that joins now starts where the reset put each partition.
	h2 := newHandled()
	g2 := offsetMember(t, e, "rg", "rp", "m2", h2)
	defer func() { _ = g2.Close() }()
	require.Eventually(t, func() bool { return h2.count() == 30+40 }, 30*time.Second, 5*time.Millisecond)
}

// TestResetGroupPartitionsFrames: the list form is refused when it names
// a partition twice, and, sent without its flag (as to a broker that
// predates it), is malformed rather than read as a whole-group reset.
func TestResetGroupPartitionsFrames(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "rf", client.TopicConfig{Partitions: 2}))
	// A group is kept once it has no members only with committed offsets
	// (PROTOCOL.md §9.11): its member handles a message and commits.
	_, err := c.Publish(ctx, "rf", client.Message{Value: []byte("x")}, client.ToPartition(0))
	require.NoError(t, err)
	h := newHandled()
	g := offsetMember(t, e, "fg", "rf", "m", h)
	require.Eventually(t, func() bool { return h.count() == 1 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, g.Commit(ctx))
	require.NoError(t, g.Close())

	req := wire.ResetGroup{Group: "fg", Start: wire.Start{Kind: wire.StartEarliest}, Partitions: []wire.PartitionTarget{
		{Partition: 1, Start: wire.Start{Kind: wire.StartEarliest}}, {Partition: 1, Start: wire.Start{Kind: wire.StartLatest}}}}
	body := req.Append(nil)
	r := dialRaw(t, e)
	r.hello()
	r.send(append(wire.AppendHeader(nil, wire.TypeResetGroup, req.Flags(), 2, len(body)), body...))
	f := r.next()
	require.Equal(t, wire.TypeError, f.Type)
	werr, err := wire.DecodeError(f.Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeInvalidArgument, werr.Code, werr.Message)
	require.Contains(t, werr.Message, "listed twice")

	r.send(append(wire.AppendHeader(nil, wire.TypeResetGroup, 0, 3, len(body)), body...))
	r.expectErrorThenClose(wire.CodeMalformed)
}

package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestClusterOffsetsCheckpoints: the offsets topic stays small. While a
// group commits again and again, its coordinator checkpoints the groups of
// its offsets partition, and every replica's retention removes the
// segments before the last whole checkpoint; a group that committed once,
// at the start, keeps its offsets through that, and a new coordinator
// replays both groups' last commits.
func TestClusterOffsetsCheckpoints(t *testing.T) {
	const topic, busy = "orders", "billing"
	nodes := startTestClusterWith(t, 3, func(c *Config) {
		c.OffsetsSegmentBytes = 64 << 10
		c.RetentionInterval = 50 * time.Millisecond
	})
	createReplicated(t, nodes[0], topic, 1, 3)
	for _, e := range nodes {
		waitTopic(t, e, topic)
		e.grepl.cpMin.Store(300)
	}
	k := OffsetsPartition(busy, offsetsPartitions)
	quiet := ""
	for i := 0; quiet == ""; i++ {
		if g := fmt.Sprint("quiet-", i); OffsetsPartition(g, offsetsPartitions) == k {
			quiet = g
		}
	}
	coord := coordinatorOf(t, nodes, busy)
	set := func(group string, off int64) {
		ch := make(chan error, 1)
		coord.grepl.store.Set(group, topic, []wire.PartitionOffset{{Partition: 0, Offset: off}}, func(err error) { ch <- err })
		require.NoError(t, <-ch)
	}
	set(quiet, 7)
	const commits = 3000
	for i := range commits {
		set(busy, int64(i))
	}
	// Every replica removed the segments before a checkpoint.
	for _, e := range nodes {
		require.Eventually(t, func() bool {
			p, _ := e.grepl.replicaOf(k)
			if p == nil {
				return false
			}
			start, _ := p.Log.Bounds()
			return start > 0
		}, 60*time.Second, 10*time.Millisecond, "node %d's offsets partition %d keeps its start", e.cfg.NodeID, k)
	}
	p, rep := coord.grepl.replicaOf(k)
	require.Positive(t, rep.floor.Load())
	start, end := p.Log.Bounds()
	require.Less(t, end-start, int64(commits), "the partition holds less than every commit")
	groups, err := replayOffsets(p, coord.log)
	require.NoError(t, err)
	require.Equal(t, int64(7), groups[quiet].Offsets[0], "the quiet group's only commit is in a checkpoint")
	require.Equal(t, int64(commits-1), groups[busy].Offsets[0])

	// A new coordinator replays what is left, and has both.
	shutdown(t, coord)
	var rest []*Engine
	for _, e := range nodes {
		if e != coord {
			rest = append(rest, e)
		}
	}
	next := coordinatorOf(t, rest, busy)
	for g, want := range map[string]int64{quiet: 7, busy: commits - 1} {
		st, ok := next.grepl.store.Group(g)
		require.True(t, ok, "group %s at the new coordinator", g)
		require.Equal(t, want, st.Offsets[0], "group %s", g)
	}
}

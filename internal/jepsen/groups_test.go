package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
)

// The workload's groups hash to every offsets partition once, as the
// broker places them.
func TestGroupNamesCoverEveryOffsetsPartition(t *testing.T) {
	names := groupNames()
	require.Len(t, names, offsetsPartitions)
	for k, name := range names {
		require.Equal(t, k, engine.OffsetsPartition(name, offsetsPartitions), name)
	}
}

func TestGroupSummaryCounts(t *testing.T) {
	h := &checker.History{GroupOffsets: []checker.GroupOffset{
		{Group: "a", Commit: true}, {Group: "a"}, {Group: "b"},
	}}
	require.Contains(t, groupSummary(h), "3 observations of 2 groups: 1 committed offsets acknowledged, 2 read back")
}

package engine

import (
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

// TestPartitionsDoNotCostDescriptors: partitions hold their segment files
// open only within --max-open-files, so a topic of many partitions (each
// of which used to hold two descriptors for good) cannot starve the
// listener of descriptors; every partition still takes writes and reads.
func TestPartitionsDoNotCostDescriptors(t *testing.T) {
	const budget, parts = 16, 64
	e := startBroker(t, func(c *Config) { c.MaxOpenFiles = budget })
	ctx := testCtx(t)
	c := dial(t, e)
	before := openFDs(t)
	require.NoError(t, c.CreateTopic(ctx, "wide", client.TopicConfig{Partitions: parts}))
	for p := range parts {
		_, err := c.Publish(ctx, "wide", client.Message{Value: []byte(strconv.Itoa(p))}, client.ToPartition(p))
		require.NoError(t, err)
	}
	for p := 0; p < parts; p += 7 {
		require.Equal(t, []string{strconv.Itoa(p)}, values(fetchAll(t, c, "wide", p)))
	}
	require.LessOrEqual(t, openFDs(t)-before, budget+32, "the partitions hold no more descriptors than the budget")
	m := scrape(t, e)
	require.LessOrEqual(t, m["ratatoskr_storage_open_files"], float64(budget))
	require.Equal(t, float64(budget), m["ratatoskr_storage_open_files_limit"])
	require.Positive(t, m["ratatoskr_storage_file_evictions_total"])
	require.Greater(t, m["ratatoskr_storage_file_opens_total"], float64(budget))
}

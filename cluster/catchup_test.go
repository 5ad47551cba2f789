package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/cluster/transport"
)

// TestCatchUpFetchesTheLogWhole: a follower cut off while the leader goes
// far past the catch-up window is sent a snapshot when it comes back,
// fetches the batches whole, adopts them, and holds the leader's whole
// log, from offset 0 (no retention: nothing is missing, unlike a
// snapshot past retention); later it leads, and nothing acked is lost.
func TestCatchUpFetchesTheLogWhole(t *testing.T) {
	window := 20 * int64(len((&testCluster{}).batch("cut-000")))
	c := buildTestCluster(t, 3, true, false, window)
	lead := c.leader(0)
	behind := c.follower(lead)
	acked := map[int64]string{}
	publish := func(id uint64, n int, tag string) { c.publishAcked(acked, id, n, tag) }
	publish(lead, 20, "before")
	c.waitConverged(20)

	c.net.isolate(behind, c.ids)
	publish(lead, 300, "cut")
	c.net.heal()
	publish(lead, 10, "after")
	end := int64(20 + 300 + 10)
	c.waitConverged(end)

	st, err := c.nodes[behind].host.Status(testGroup)
	require.NoError(t, err)
	require.GreaterOrEqual(t, st.Snapshots, 1, "the follower installed a snapshot")
	require.Positive(t, st.Fetched, "and fetched the batches before it")
	require.False(t, st.Fetching)
	require.GreaterOrEqual(t, c.nodes[behind].log.Adopted(), 1)
	lst, err := c.nodes[lead].host.Status(testGroup)
	require.NoError(t, err)
	require.Positive(t, lst.ChunksServed)

	start, recs := recordsFrom(t, c.nodes[behind].log)
	require.Zero(t, start, "the follower holds the whole log")
	for off, v := range acked {
		require.Equal(t, v, recs[off], "offset %d", off)
	}
	// Its OnBatch (the idempotent producers' table) heard of every batch:
	// those it fetched (all within a chunk here) replayed after the install.
	c.amu.Lock()
	heard := slices.Sorted(slices.Values(c.bases[behind]))
	c.amu.Unlock()
	heard = slices.Compact(heard)
	require.Len(t, heard, int(end))

	// It can lead: the old leader crashes, and the other two go on.
	c.crash(lead)
	next := c.leader(lead)
	publish(next, 10, "later")
	c.start(lead)
	c.waitConverged(end + 10)
	for _, id := range c.ids {
		start, recs := recordsFrom(t, c.nodes[id].log)
		require.Zero(t, start, "node %d", id)
		require.Len(t, recs, int(end+10), "node %d", id)
		for off, v := range acked {
			require.Equal(t, v, recs[off], "node %d offset %d", id, off)
		}
	}
}

// TestCatchUpOfANewReplica: a replica added to a group whose log is well
// past the catch-up window fetches it whole over a network that drops,
// duplicates and reorders messages, and ends with the same log as the
// others, from their start.
func TestCatchUpOfANewReplica(t *testing.T) {
	c := newMemClusterCatchUp(t, 23, 10*int64(len((&testCluster{}).batch("a000"))))
	propose := c.proposeAtLeader
	for i := range 200 {
		propose(fmt.Sprintf("a%03d", i))
	}
	c.waitVisible(200)
	c.net.SetFaults(transport.Faults{Drop: 0.1, Duplicate: 0.1, Reorder: 0.1, Delay: time.Millisecond,
		Jitter: 3 * time.Millisecond})

	c.replace3By4()
	c.net.SetFaults(transport.Faults{})

	st4, err := c.host(4).Status(testGroup)
	require.NoError(t, err)
	require.GreaterOrEqual(t, st4.Snapshots, 1, "node 4 installed a snapshot")
	require.Positive(t, st4.Fetched, "and fetched the log whole")
	start4, recs4 := recordsFrom(t, c.logs[4])
	start1, recs1 := recordsFrom(t, c.logs[1])
	require.Zero(t, start4)
	require.Zero(t, start1)
	require.Equal(t, recs1, recs4, "node 4 holds what node 1 holds")
	require.Equal(t, "a000", recs4[0])
	require.Equal(t, "b1", recs4[len(recs4)-1])
}

package cluster

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// isChunk says an envelope carries a catch-up chunk.
func isChunk(e Envelope) bool {
	return e.Msg.Type == raftpb.MsgSnapStatus && bytes.Equal(e.Msg.Context, fetchChunkCtx)
}

// fetchHeld is a three-node cluster with a catch-up window of 20 batches
// whose follower behind, cut off while its leader lead went 300 batches
// ahead, is fetching them whole, with every chunk to it dropped: it
// returns once the first chunk was, with the acknowledged values by
// offset.
func fetchHeld(t *testing.T) (c *testCluster, lead, behind uint64, acked map[int64]string) {
	t.Helper()
	c = buildTestCluster(t, 3, true, false, 20*int64(len((&testCluster{}).batch("cut-000"))))
	lead = c.leader(0)
	behind = c.follower(lead)
	acked = map[int64]string{}
	c.publishAcked(acked, lead, 20, "before")
	c.waitConverged(20)
	c.net.isolate(behind, c.ids)
	c.publishAcked(acked, lead, 300, "cut")
	var chunks atomic.Int64
	c.setFilter(func(_, to uint64, e Envelope) bool {
		if to == behind && isChunk(e) {
			chunks.Add(1)
			return false // none: the follower waits, fetching
		}
		return true
	})
	c.net.heal()
	waitFor(t, "a chunk", func() bool { return chunks.Load() > 0 })
	return c, lead, behind, acked
}

// setFilter sets the test network's filter (nil: none).
func (c *testCluster) setFilter(f func(from, to uint64, e Envelope) bool) {
	c.net.mu.Lock()
	c.net.filter = f
	c.net.mu.Unlock()
}

// TestReview2CatchUpSurvivesRestartAndLeaderChange: a follower that is
// fetching the leader's batches whole restarts mid-fetch, then its leader
// crashes; once chunks flow again it converges on the others' log, and
// nothing acknowledged is lost.
func TestReview2CatchUpSurvivesRestartAndLeaderChange(t *testing.T) {
	c, lead, behind, acked := fetchHeld(t)
	st, err := c.nodes[behind].host.Status(testGroup)
	require.NoError(t, err)
	require.True(t, st.Fetching)

	c.crash(behind)
	c.start(behind)
	c.crash(lead)
	next := c.leader(lead)
	// With lead down, behind is the only other voter: what next takes
	// now commits once behind fetched the batches, when chunks flow again
	// (next serves them from the start: it sets its catch-up horizon as
	// it takes the lead).
	var after []<-chan Result
	for i := range 10 {
		after = append(after, c.proposeAsync(next, fmt.Sprintf("after-%03d", i)))
	}
	c.setFilter(nil)
	for i, ch := range after {
		r := <-ch
		require.NoError(t, r.Err)
		acked[r.Base] = fmt.Sprintf("after-%03d", i)
	}
	c.start(lead)
	end := int64(20 + 300 + 10)
	c.waitConverged(end)
	for _, id := range c.ids {
		_, recs := recordsFrom(t, c.nodes[id].log)
		start, _ := c.nodes[id].log.Bounds()
		for off, v := range acked {
			if off >= start {
				require.Equal(t, v, recs[off-start], "node %d offset %d", id, off)
			}
		}
	}
}

// TestReview2CatchUpAfterRetentionMidFetch: the leader's retention removes
// the batches a follower is fetching; the follower is refused, waits for
// the next snapshot, and converges on the leader's log from its new start.
func TestReview2CatchUpAfterRetentionMidFetch(t *testing.T) {
	size := int64(len((&testCluster{}).batch("cut-000")))
	c, lead, behind, acked := fetchHeld(t)
	publish := func(id uint64, n int, tag string) { c.publishAcked(acked, id, n, tag) }
	c.retain.Store(100 * size)
	waitFor(t, "retention on the leader", func() bool {
		start, _ := c.nodes[lead].log.Bounds()
		return start > 0
	})
	c.setFilter(nil)
	publish(lead, 10, "after")
	c.waitConverged(330)
	ls, lrecs := recordsFrom(t, c.nodes[lead].log)
	fs, frecs := recordsFrom(t, c.nodes[behind].log)
	require.LessOrEqual(t, fs, int64(330))
	for i, v := range frecs {
		if off := fs + int64(i); off >= ls {
			require.Equal(t, lrecs[off-ls], v, "offset %d", off)
		}
	}
	st, err := c.nodes[behind].host.Status(testGroup)
	require.NoError(t, err)
	require.False(t, st.Fetching)
}

// proposeAsync proposes value v at node id; the channel gets the outcome.
func (c *testCluster) proposeAsync(id uint64, v string) <-chan Result {
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	bb.Append(1, nil, []byte(v), nil)
	ch := make(chan Result, 1)
	c.nodes[id].host.Propose(testGroup, bb.Finish(), func(r Result) { ch <- r })
	return ch
}

package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// logFrom reads what e's replica of topic/0 holds from its log's start to
// its visible end: the start and each record's value (-1 and none while
// the node has not opened the topic).
func logFrom(t *testing.T, e *Engine, topic string) (int64, []string) {
	t.Helper()
	tp := e.topics.get([]byte(topic))
	if tp == nil {
		return -1, nil
	}
	l := tp.Parts[0].Log
	for {
		start, end := l.Bounds()
		var vals []string
		err := l.Read(start, 1<<30, func(b wire.Batch) bool {
			it := b.Records()
			var r wire.Record
			for it.Next(&r) {
				if r.Offset == start+int64(len(vals)) && r.Offset < end {
					vals = append(vals, string(r.Value))
				}
			}
			return true
		})
		if errors.Is(err, storage.ErrOffsetOutOfRange) {
			continue // retention moved the start meanwhile
		}
		require.NoError(t, err)
		return start, vals
	}
}

// TestClusterRetentionAndSnapshot: a replicated topic's retention removes
// its old segments on every replica, and a replica that was down while the
// leader removed what it lacked is sent a snapshot when it comes back: it
// starts its log again at the leader's start, catches up from there, and
// holds every acknowledged message from there on. The offsets topic keeps
// its records (no retention), and refuses to be given one.
func TestClusterRetentionAndSnapshot(t *testing.T) {
	const topic = "rolling"
	nodes := startTestClusterWith(t, 3, func(c *Config) {
		c.SegmentBytes, c.MaxFrameBytes, c.MaxMessageBytes = 1<<20, 256<<10, 128<<10
		c.RetentionInterval = 50 * time.Millisecond
	})
	lead, down, others := replicatedTopicOnThree(t, nodes, topic, wire.KV{Key: ConfigRetentionBytes, Value: strconv.Itoa(2 << 20)})
	c := dial(t, lead)
	acked := map[int64]string{}
	publish := func(n int) {
		for range n {
			v := fmt.Sprintf("m%04d-", len(acked))
			v += string(bytes.Repeat([]byte{'x'}, 64<<10-len(v)))
			ack, err := c.Publish(testCtx(t), topic, client.Message{Value: []byte(v)}, client.ToPartition(0))
			require.NoError(t, err)
			acked[ack.Offset] = v
		}
	}
	publish(10)
	for _, e := range nodes {
		require.Eventually(t, func() bool { _, vals := logFrom(t, e, topic); return len(vals) == 10 },
			60*time.Second, 10*time.Millisecond)
	}

	back := restartNodeAfter(t, down, others, func() {
		// 5 MiB while it is down: the leader's retention (2 MiB, 1 MiB
		// segments) removes everything the down node holds.
		publish(80)
		require.Eventually(t, func() bool { start, _ := lead.topics.get([]byte(topic)).Parts[0].Log.Bounds(); return start > 10 },
			60*time.Second, 10*time.Millisecond, "the leader's retention")
	})
	publish(5)
	end := int64(len(acked))
	require.Eventually(t, func() bool {
		start, vals := logFrom(t, back, topic)
		return start+int64(len(vals)) == end
	}, 60*time.Second, 10*time.Millisecond, "the restarted replica catches up")
	start, vals := logFrom(t, back, topic)
	require.Greater(t, start, int64(10), "it started its log again past what it held")
	for i, v := range vals {
		require.Equal(t, acked[start+int64(i)], v, "offset %d", start+int64(i))
	}
	// Every replica keeps about the bound (2 MiB, plus the active segment).
	for _, e := range []*Engine{lead, back} {
		require.Eventually(t, func() bool {
			return e.topics.get([]byte(topic)).Parts[0].Log.Stats().Bytes <= 4<<20
		}, 60*time.Second, 10*time.Millisecond, "node %d applies retention", e.cfg.NodeID)
	}

	// The admin API shows it: the restarted replica installed a snapshot
	// and its log's first entry is past the ones it lost; a node that
	// stayed up sent it.
	local := func(e *Engine) httpapi.RaftGroup { return localGroupView(t, e, topic) }
	g := local(back)
	require.GreaterOrEqual(t, g.Snapshots, 1)
	require.Greater(t, g.FirstIndex, uint64(11), "it holds none of the entries of the first 10 messages")
	sent := 0
	for _, e := range others {
		sent += local(e).SnapshotsSent
	}
	require.GreaterOrEqual(t, sent, 1)

	// The offsets topic keeps everything, and says so.
	_, err := lead.createTopicBy(byBroker, OffsetsTopic, offsetsPartitions,
		[]wire.KV{{Key: ConfigReplicas, Value: "3"}, {Key: ConfigRetention, Value: "0"}, {Key: ConfigRetentionBytes, Value: "0"}}, true)
	require.NoError(t, err)
	waitTopic(t, lead, OffsetsTopic)
	err = lead.topics.checkUpdate(OffsetsTopic, []wire.KV{{Key: ConfigRetentionBytes, Value: "100"}})
	require.ErrorContains(t, err, "stays 0")
	require.NoError(t, lead.topics.checkUpdate(topic, []wire.KV{{Key: ConfigRetentionBytes, Value: "100"}}))
}

// TestRetentionTicks: the host applies retention every RetentionInterval
// whatever the tick; the default configuration (RaftTick zero: the
// host's 50 ms) does so every 5 s, not every 5000 ticks (250 s), as it
// did when the zero tick was taken for a millisecond.
func TestRetentionTicks(t *testing.T) {
	cfg := DefaultConfig()
	require.Zero(t, cfg.RaftTick)
	require.Equal(t, 5*time.Second, cfg.RetentionInterval)
	require.Equal(t, 100, retentionTicks(&cfg))
	require.Equal(t, 5*time.Second, time.Duration(retentionTicks(&cfg))*cluster.DefaultTickInterval)
	cfg.RaftTick, cfg.RetentionInterval = 20*time.Millisecond, 50*time.Millisecond
	require.Equal(t, 2, retentionTicks(&cfg))
	cfg.RetentionInterval = time.Millisecond // shorter than a tick: every tick
	require.Equal(t, 1, retentionTicks(&cfg))
}

// TestClusterCatchUpFetchesWhole: a replica that was down while its
// leader went further ahead than the catch-up window fetches the batches
// whole from the leader's segments (through its stage, then adopted) and
// holds the whole log from offset 0, every acknowledged message in place;
// its stage directory is gone afterwards, and the admin API counts what it
// fetched and what the leader served.
func TestClusterCatchUpFetchesWhole(t *testing.T) {
	const topic = "behind"
	nodes := startTestClusterWith(t, 3, func(c *Config) {
		c.SegmentBytes, c.MaxFrameBytes, c.MaxMessageBytes = 1<<20, 256<<10, 128<<10
		c.CatchUpBytes = 256 << 10
	})
	lead, down, others := replicatedTopicOnThree(t, nodes, topic)
	c := dial(t, lead)
	var acked []string
	publish := func(n int) {
		for range n {
			v := fmt.Sprintf("m%04d-", len(acked))
			v += string(bytes.Repeat([]byte{'x'}, 32<<10-len(v)))
			ack, err := c.Publish(testCtx(t), topic, client.Message{Value: []byte(v)}, client.ToPartition(0))
			require.NoError(t, err)
			require.Equal(t, int64(len(acked)), ack.Offset)
			acked = append(acked, v)
		}
	}
	publish(5)
	for _, e := range nodes {
		require.Eventually(t, func() bool { _, vals := logFrom(t, e, topic); return len(vals) == 5 },
			60*time.Second, 10*time.Millisecond)
	}
	// 3 MiB while it is down: well past the window (256 KiB) and the
	// segment size (1 MiB).
	back := restartNodeAfter(t, down, others, func() { publish(96) })
	publish(3)
	require.Eventually(t, func() bool {
		start, vals := logFrom(t, back, topic)
		return start+int64(len(vals)) == int64(len(acked))
	}, 60*time.Second, 10*time.Millisecond, "the restarted replica catches up")
	start, vals := logFrom(t, back, topic)
	require.Zero(t, start, "it holds the whole log")
	require.Equal(t, acked, vals)

	local := func(e *Engine) httpapi.RaftGroup { return localGroupView(t, e, topic) }
	g := local(back)
	require.GreaterOrEqual(t, g.Snapshots, 1)
	require.Greater(t, g.Fetched, int64(2<<20), "it fetched the batches it lacked, whole")
	served := 0
	for _, e := range others {
		served += local(e).ChunksServed
	}
	require.Positive(t, served)
	var stages []string
	require.NoError(t, filepath.WalkDir(back.cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == storage.StageDir {
			stages = append(stages, path)
		}
		return err
	}))
	require.Empty(t, stages, "the stage was adopted and dropped")
}

// replicatedTopicOnThree creates topic (one partition, three replicas,
// and kvs) through the first of three nodes, waits until every node has
// it, and returns its leader, a follower and the other two nodes.
func replicatedTopicOnThree(t *testing.T, nodes []*Engine, topic string, kvs ...wire.KV) (lead, down *Engine, others []*Engine) {
	t.Helper()
	kvs = append([]wire.KV{{Key: ConfigReplicas, Value: "3"}}, kvs...)
	require.Eventually(t, func() bool {
		_, err := nodes[0].createTopicBy(byBroker, topic, 1, kvs, false)
		return err == nil
	}, 60*time.Second, 50*time.Millisecond, "create %s", topic)
	for _, e := range nodes {
		waitTopic(t, e, topic)
	}
	lead = leaderOf(t, nodes, topic, 0)
	for _, e := range nodes {
		if e != lead && down == nil {
			down = e
		} else {
			others = append(others, e)
		}
	}
	return lead, down, others
}

// localGroupView is what e's admin API shows of its replica of topic's
// partition 0.
func localGroupView(t *testing.T, e *Engine, topic string) httpapi.RaftGroup {
	t.Helper()
	var view httpapi.Cluster
	newAdmin(t, e).json("GET", "/api/v1/cluster", "", 200, &view)
	for _, cp := range view.Partitions {
		if cp.Topic == topic && cp.Local != nil {
			return *cp.Local
		}
	}
	t.Fatalf("node %d shows no replica of %s", e.cfg.NodeID, topic)
	return httpapi.RaftGroup{}
}

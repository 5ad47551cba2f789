package engine

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/topic"
)

// logBuffer collects a broker's log as text lines, every level included.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// logger is a debug-level text logger writing to l.
func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the lines logged so far that contain every part.
func (l *logBuffer) lines(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.b.String()) {
		if allIn(line, parts) {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
	}
	return out
}

// aboveDebug returns the lines logged at Info or above.
func (l *logBuffer) aboveDebug() []string {
	var out []string
	for _, lv := range []string{"level=INFO", "level=WARN", "level=ERROR"} {
		out = append(out, l.lines(lv)...)
	}
	return out
}

// reset forgets what was logged.
func (l *logBuffer) reset() {
	l.mu.Lock()
	l.b.Reset()
	l.mu.Unlock()
}

// inPartition matches the files of partition p of topic.
func inPartition(topic string, p int) func(string) bool {
	dir := "/topics/" + topic + "/" + fmt.Sprint(p) + "/"
	return func(name string) bool { return strings.Contains(name, dir) }
}

// TestOfflinePartitionAtStart: a partition whose log cannot be opened at
// start goes offline on its own; the broker starts, says so once at
// ERROR and in every report, refuses that partition's publishes and reads
// with PARTITION_OFFLINE, keeps the group's committed offset for it, and
// serves every other partition. A restart with the log readable brings it
// back with its data.
func TestOfflinePartitionAtStart(t *testing.T) {
	efs := vfs.NewErrors(vfs.NewMem())
	logs := &logBuffer{}
	onFS := func(c *Config) { c.FS, c.DataDir, c.Logger = efs, "data", logs.logger() }
	e := startBroker(t, onFS)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "t", client.TopicConfig{Partitions: 3}))
	for p := range 3 {
		for i := range 10 {
			_, err := c.Publish(ctx, "t", client.Message{Value: fmt.Appendf(nil, "%d-%d", p, i)}, client.ToPartition(p))
			require.NoError(t, err)
		}
	}
	h := newHandled()
	g := offsetMember(t, e, "g", "t", "m1", h)
	require.Eventually(t, func() bool { return h.count() == 30 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, g.Close())
	require.NoError(t, e.Shutdown(ctx))

	efs.Inject(vfs.OpOpen, inPartition("t", 1), syscall.EIO, 0)
	logs.reset()
	e2 := startBroker(t, onFS)
	offline := logs.lines("level=ERROR", "partition offline")
	require.Len(t, offline, 1, "logged once: %v", logs.aboveDebug())
	require.Contains(t, offline[0], "path=data/topics/t/1")
	require.Contains(t, offline[0], "input/output error")
	require.Len(t, logs.lines("level=WARN", "recovered topics", "offline_partitions=1"), 1)

	c2 := dial(t, e2)
	info, err := c2.DescribeTopic(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, client.PartitionOffline, info.Partitions[1].State)
	require.Contains(t, info.Partitions[1].Reason, "input/output error")
	require.Equal(t, client.PartitionOnline, info.Partitions[0].State)
	require.Equal(t, client.PartitionOnline, info.Partitions[2].State)

	_, err = c2.Publish(ctx, "t", client.Message{Value: []byte("x")}, client.ToPartition(1))
	require.ErrorIs(t, err, client.ErrPartitionOffline)
	require.False(t, client.MayHaveBeenStored(err), "refused, not stored")
	_, err = c2.Fetch(ctx, "t", 1, client.Earliest)
	require.ErrorIs(t, err, client.ErrPartitionOffline)
	_, err = dial(t, e2).Subscribe(ctx, "t", func(*client.Delivery) {}, client.FromPartition(1))
	require.ErrorIs(t, err, client.ErrPartitionOffline)
	_, err = dial(t, e2).Subscribe(ctx, "t", func(*client.Delivery) {}, client.FromPartition(1), client.StartAt(client.Earliest))
	require.ErrorIs(t, err, client.ErrPartitionOffline)
	require.Equal(t, seq("0-", 10), values(fetchAll(t, c2, "t", 0)), "the other partitions serve")

	// A subscription to every partition covers the ones that serve, and a
	// publish to any partition lands on one of them.
	_, replayed, err := dial(t, e2).SubscribeChan(ctx, "t", 100, client.StartAt(client.Earliest))
	require.NoError(t, err)
	for range 20 {
		d := <-replayed
		require.NotEqual(t, int32(1), d.Partition)
	}
	for range 30 {
		ack, err := c2.Publish(ctx, "t", client.Message{Value: []byte("any")})
		require.NoError(t, err)
		require.NotEqual(t, int32(1), ack.Partition, "the broker picks a partition that serves")
	}

	// A group member owns the offline partition too: it gets the others'
	// messages, and the offset committed for partition 1 is kept.
	h2 := newHandled()
	g2 := offsetMember(t, e2, "g", "t", "m2", h2)
	require.Eventually(t, func() bool { return h2.count() == 30 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, g2.Close())
	gi, err := c2.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, int64(10), gi.Partitions[1].Committed, "the offline partition's commit survives")
	var acked sync.Map
	gm := joinGroup(t, e2, client.GroupConfig{Group: "gm", Topic: "t", Mode: client.AckMessage, Start: client.Earliest,
		Handler: func(m *client.GroupMessage) error {
			acked.Store([2]int64{int64(m.Partition), m.Offset}, true)
			return nil
		}})
	require.Eventually(t, func() bool {
		n := 0
		acked.Range(func(any, any) bool { n++; return true })
		return n == 50
	}, 15*time.Second, 5*time.Millisecond, "message mode serves the other partitions")
	require.NoError(t, gm.Close())

	checkOfflineReports(t, e2)

	// The state clears only by a restart that opens the log.
	efs.Clear()
	info, err = c2.DescribeTopic(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, client.PartitionOffline, info.Partitions[1].State)
	e3 := restart(t, e2, onFS)
	c3 := dial(t, e3)
	require.Equal(t, seq("1-", 10), values(fetchAll(t, c3, "t", 1)), "its data is intact")
	gi, err = c3.DescribeGroup(ctx, "g")
	require.NoError(t, err)
	require.Equal(t, int64(10), gi.Partitions[1].Committed)

	// A topic with an offline partition can be deleted, data and all.
	require.NoError(t, e3.Shutdown(ctx))
	efs.Inject(vfs.OpOpen, inPartition("t", 1), syscall.EIO, 0)
	e4 := startBroker(t, onFS)
	c4 := dial(t, e4)
	require.NoError(t, c4.DeleteTopic(ctx, "t"))
	efs.Clear()
	require.Eventually(t, func() bool {
		_, err := efs.Stat("data/topics/t")
		return err != nil
	}, 10*time.Second, 10*time.Millisecond, "the topic's directory is removed")
	require.NoError(t, c4.CreateTopic(ctx, "t", client.TopicConfig{Partitions: 3}))
	info, err = c4.DescribeTopic(ctx, "t")
	require.NoError(t, err)
	require.Equal(t, client.PartitionOnline, info.Partitions[1].State)
	require.Zero(t, info.Partitions[1].EndOffset, "a new topic of that name")
}

// checkOfflineReports checks that partition t/1 shows as offline in the
// admin API, the metrics, the health report and /readyz.
func checkOfflineReports(t *testing.T, e *Engine) {
	t.Helper()
	var tj topicJSON
	newAdmin(t, e).json(http.MethodGet, "/api/v1/topics/t", "", http.StatusOK, &tj)
	require.Equal(t, "offline", tj.Parts[1].State)
	require.Contains(t, tj.Parts[1].Reason, "input/output error")
	require.Equal(t, "online", tj.Parts[0].State)
	require.Equal(t, 1, tj.Totals.Offline)

	m := scrape(t, e)
	require.Equal(t, 1.0, m["ratatoskr_partitions_offline"])
	require.Equal(t, 0.0, m["ratatoskr_partitions_read_only"])
	require.Equal(t, 2.0, m[`ratatoskr_partition_state{topic="t",partition="1"}`])
	require.Equal(t, 0.0, m[`ratatoskr_partition_state{topic="t",partition="0"}`])

	h := getHealth(t, e)
	require.Equal(t, HealthDegraded, h.Status)
	require.Len(t, h.Reasons, 1, h.Reasons)
	require.Contains(t, h.Reasons[0], "partition t/1 offline: ")
	require.Equal(t, 1, h.Topics[0].Offline)
	require.Equal(t, []PartitionHealth{{Partition: 1, State: "offline", Reason: h.Topics[0].Problems[0].Reason}},
		h.Topics[0].Problems)

	code, body := httpGet(t, e, "/readyz")
	require.Equal(t, http.StatusOK, code, "the other partitions serve")
	require.True(t, strings.HasPrefix(body, "degraded: partition t/1 offline: "), body)
}

// simulateListenerDown records a stopped native listener as the
// listener's goroutine does. Health reads it through
// server.ListenerProblem.
func simulateListenerDown(e *Engine, why string) { e.srv.SetListenerDown(why) }

// readErrorLog is a log whose reads failed n times, as a disk going bad
// makes them.
type readErrorLog struct {
	storage.Log
	n uint64
}

func (l readErrorLog) Stats() storage.LogStats {
	st := l.Log.Stats()
	st.ReadErrors = l.n
	return st
}

// addTopicWithLog adds a one-partition topic whose log is l, as load
// would; no shard ever runs it.
func addTopicWithLog(e *Engine, name string, l storage.Log) {
	p := shard.NewPartition(name, 0, e.shards[0].Shard(), l, shard.SyncPolicy{})
	tc := e.topics.defaults()
	tc.Partitions = 1
	t := topic.New(name, tc, []*shard.Partition{p})
	e.topics.mu.Lock()
	defer e.topics.mu.Unlock()
	m := maps.Clone(e.topics.snap.Snapshot())
	m[name] = t
	e.topics.snap.Replace(m)
}

// readyzSays checks /readyz's status and that its body starts with prefix.
func readyzSays(t *testing.T, e *Engine, status int, prefix string) {
	t.Helper()
	code, body := httpGet(t, e, "/readyz")
	require.Equal(t, status, code, body)
	require.True(t, strings.HasPrefix(body, prefix), "readyz: %q, want it to start with %q", body, prefix)
}

// degradedFor checks that the health report is degraded with one reason
// that starts with prefix.
func degradedFor(t *testing.T, e *Engine, prefix string) HealthReport {
	t.Helper()
	h := getHealth(t, e)
	require.Equal(t, HealthDegraded, h.Status, h.Reasons)
	require.Len(t, h.Reasons, 1, h.Reasons)
	require.True(t, strings.HasPrefix(h.Reasons[0], prefix), "reason %q, want it to start with %q", h.Reasons[0], prefix)
	return h
}

// TestHealthReportsEachProblem: /readyz and the health report say what is
// wrong, naming the component or the partition. A dead listener makes the
// broker unready (503); a partition problem leaves it ready (the other
// partitions serve) but degraded.
func TestHealthReportsEachProblem(t *testing.T) {
	t.Run("listener down", func(t *testing.T) {
		e := startBroker(t, nil)
		readyzSays(t, e, http.StatusOK, "ready\n")
		simulateListenerDown(e, "the native listener stopped: accept: too many open files")
		readyzSays(t, e, http.StatusServiceUnavailable, "native listener down: the native listener stopped: accept")
		h := getHealth(t, e)
		require.Equal(t, HealthUnhealthy, h.Status)
		require.Equal(t, []string{"native listener down: the native listener stopped: accept: too many open files"}, h.Reasons)
		require.Equal(t, 0.0, scrape(t, e)["ratatoskr_ready"])
	})

	t.Run("read-only after a failed fsync", func(t *testing.T) {
		efs := vfs.NewErrors(vfs.NewMem())
		e := startBroker(t, func(c *Config) { c.FS, c.DataDir = efs, "data" })
		ctx := testCtx(t)
		c := dial(t, e)
		_, err := c.Publish(ctx, "ro", client.Message{Value: []byte("0")})
		require.NoError(t, err)
		efs.InjectSync(inPartition("ro", 0), syscall.EIO, 0)
		_, err = c.Publish(ctx, "ro", client.Message{Value: []byte("1")})
		require.ErrorIs(t, err, client.ErrOutcomeUnknown)
		efs.Clear()
		expireDiskProbe(e)

		readyzSays(t, e, http.StatusOK, "degraded: partition ro/0 read-only: fsync failed: ")
		h := degradedFor(t, e, "partition ro/0 read-only: fsync failed: ")
		require.Equal(t, 1, h.Topics[0].ReadOnly)
		m := scrape(t, e)
		require.Equal(t, 1.0, m["ratatoskr_partitions_read_only"])
		require.Equal(t, 1.0, m[`ratatoskr_partition_state{topic="ro",partition="0"}`])
		info, err := c.DescribeTopic(ctx, "ro")
		require.NoError(t, err)
		require.Equal(t, client.PartitionReadOnly, info.Partitions[0].State)
		require.Contains(t, info.Partitions[0].Reason, "input/output error")
	})

	t.Run("corruption found by a read", func(t *testing.T) {
		e := startBroker(t, corruptOneRecord(t))
		readyzSays(t, e, http.StatusOK, "ready\n") // a clean start trusts the index
		require.Len(t, fetchAll(t, dial(t, e), "bits", 0), 199)
		readyzSays(t, e, http.StatusOK, "degraded: partition bits/0: 1 corrupt range(s) found, the first [")
		h := degradedFor(t, e, "partition bits/0: 1 corrupt range(s) found")
		require.Equal(t, []PartitionHealth{{Partition: 0, State: "online", CorruptRanges: 1}}, h.Topics[0].Problems)
	})

	t.Run("read errors", func(t *testing.T) {
		e := startBroker(t, nil)
		addTopicWithLog(e, "flaky", readErrorLog{Log: storage.NewMemLog(1 << 20), n: 3})
		readyzSays(t, e, http.StatusOK, "degraded: partition flaky/0: 3 read(s) failed with I/O errors")
		h := degradedFor(t, e, "partition flaky/0: 3 read(s) failed")
		require.Equal(t, []PartitionHealth{{Partition: 0, State: "online", ReadErrors: 3}}, h.Topics[0].Problems)
		require.Equal(t, 3.0, scrape(t, e)[`ratatoskr_storage_read_errors_total{topic="flaky",partition="0"}`])
	})
}

// TestRecoveryLogs: a new partition logs nothing above Debug, and a
// recovery after a crash logs one line at Info for the whole load rather
// than one per partition.
func TestRecoveryLogs(t *testing.T) {
	fsys := vfs.NewMem()
	logs := &logBuffer{}
	e := startBroker(t, func(c *Config) { c.FS, c.DataDir, c.Logger = fsys, "data", logs.logger() })
	require.Len(t, logs.lines("level=INFO", "recovered topics", "topics=0 partitions=0"), 1)
	ctx := testCtx(t)
	c := dial(t, e)
	logs.reset()
	require.NoError(t, c.CreateTopic(ctx, "many", client.TopicConfig{Partitions: 8}))
	require.Empty(t, logs.aboveDebug(), "new partitions log nothing above Debug")
	require.Len(t, logs.lines("level=DEBUG", "recovered partition", "topic=many"), 8)
	for p := range 8 {
		_, err := c.Publish(ctx, "many", client.Message{Value: []byte("v")}, client.ToPartition(p))
		require.NoError(t, err)
	}

	crashed := fsys.Crash()
	logs2 := &logBuffer{}
	startBroker(t, func(c *Config) { c.FS, c.DataDir, c.Logger = crashed, "data", logs2.logger() })
	require.Len(t, logs2.lines("level=DEBUG", "recovered partition", "clean=false"), 8, "%s", logs2.aboveDebug())
	require.Empty(t, logs2.lines("level=INFO", "recovered partition"))
	sum := logs2.lines("level=INFO", "recovered topics")
	require.Len(t, sum, 1)
	for _, part := range []string{"topics=1", "partitions=8", "segments=8", "scanned=8", "truncated_bytes=0",
		"corrupt_ranges=0", "offline_partitions=0", "took="} {
		require.Contains(t, sum[0], part)
	}
}

// TestDashboardLogHidesToken: the log names the dashboard's address and
// where the token comes from, never the token.
func TestDashboardLogHidesToken(t *testing.T) {
	logs := &logBuffer{}
	e := startBroker(t, func(c *Config) { c.Logger = logs.logger() })
	dash := logs.lines("msg=dashboard")
	require.Len(t, dash, 1)
	require.Contains(t, dash[0], "url=http://"+e.HTTPAddr()+"/ ")
	require.Contains(t, dash[0], "token_from="+AdminTokenPath(e.cfg.DataDir)+" ")
	require.Len(t, e.http.Token(), 64)
	require.Empty(t, logs.lines(e.http.Token()), "the token is in no log line")

	const tok = "configured-admin-token-0123456789"
	logs2 := &logBuffer{}
	startBroker(t, func(c *Config) { c.Logger, c.AdminToken = logs2.logger(), tok })
	dash = logs2.lines("msg=dashboard")
	require.Len(t, dash, 1)
	require.Contains(t, dash[0], "the configuration")
	require.Empty(t, logs2.lines(tok))
}

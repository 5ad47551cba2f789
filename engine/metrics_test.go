package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// httpGet returns the status and body of GET path on e's HTTP address.
func httpGet(t *testing.T, e *Engine, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, "http://"+e.HTTPAddr()+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+e.http.Token())
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// scrape reads /metrics into series -> value.
func scrape(t *testing.T, e *Engine) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, e, "/metrics")
	require.Equal(t, http.StatusOK, code)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(t, i, "malformed line %q", line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, "line %q", line)
		_, dup := out[line[:i]]
		require.False(t, dup, "series %s written twice", line[:i])
		out[line[:i]] = v
	}
	return out
}

// sumOf adds the values of every series of the family name whose labels
// contain all of the given label pairs.
func sumOf(m map[string]float64, name string, labels ...string) float64 {
	total := 0.0
	for series, v := range m {
		fam, lbls, _ := strings.Cut(series, "{")
		if fam != name {
			continue
		}
		if !allIn(lbls, labels) {
			continue
		}
		total += v
	}
	return total
}

func allIn(lbls string, labels []string) bool {
	for _, l := range labels {
		if !strings.Contains(lbls, l) {
			return false
		}
	}
	return true
}

func TestMetricsMoveUnderLoad(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Shards = 2 })
	ctx := testCtx(t)
	pub, subc := dial(t, e), dial(t, e)
	require.NoError(t, pub.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 2}))
	var got atomic.Int64
	_, err := subc.Subscribe(ctx, "orders", func(*client.Delivery) { got.Add(1) })
	require.NoError(t, err)

	before := scrape(t, e)
	const n = 300
	publishN(t, pub, "orders", 0, n)
	require.Eventually(t, func() bool { return got.Load() == n }, 30*time.Second, time.Millisecond)
	_, err = pub.DescribeTopic(ctx, "no-such-topic")
	require.Error(t, err)
	after := scrape(t, e)

	delta := func(name string, labels ...string) float64 {
		return sumOf(after, name, labels...) - sumOf(before, name, labels...)
	}
	topic := `topic="orders"`
	require.InDelta(t, n, delta("ratatoskr_published_messages_total", topic), 0)
	require.InDelta(t, n, delta("ratatoskr_delivered_messages_total", topic), 0, "one subscriber gets each once")
	pubBytes, delBytes := delta("ratatoskr_published_bytes_total", topic), delta("ratatoskr_delivered_bytes_total", topic)
	require.Positive(t, pubBytes)
	require.Greater(t, delBytes, pubBytes, "a delivery frame is the batch plus its frame header")
	for p := range 2 {
		part := `partition="` + strconv.Itoa(p) + `"`
		require.Positive(t, delta("ratatoskr_published_messages_total", topic, part), "keys spread over both partitions")
		require.InDelta(t, 1, sumOf(after, "ratatoskr_subscribers", topic, part), 0)
		require.Positive(t, sumOf(after, "ratatoskr_storage_bytes", topic, part))
		require.GreaterOrEqual(t, sumOf(after, "ratatoskr_storage_segments", topic, part), 1.0)
	}

	batches := delta("ratatoskr_publish_batch_messages_count")
	require.Positive(t, batches)
	require.InDelta(t, n, delta("ratatoskr_publish_batch_messages_sum"), 0, "the batch sizes add up to what was sent")
	require.InDelta(t, batches, delta("ratatoskr_publish_ack_seconds_count"), 0, "one ack per batch")
	require.Positive(t, delta("ratatoskr_fsync_seconds_count"), "fsync=always syncs")
	require.InDelta(t, batches, delta("ratatoskr_shard_published_batches_total"), 0)
	require.Positive(t, sumOf(after, "ratatoskr_shard_busy_seconds_total"))
	require.InDelta(t, 2*8192, sumOf(after, "ratatoskr_shard_inbox_capacity"), 0)

	require.InDelta(t, 2, after["ratatoskr_connections"], 0)
	require.InDelta(t, 1, after["ratatoskr_topics"], 0)
	require.InDelta(t, 1, after["ratatoskr_ready"], 0)
	require.InDelta(t, 1, delta("ratatoskr_errors_total", `code="unknown_topic"`), 0)
	require.Positive(t, delta("ratatoskr_direct_writes_total"), "the publisher's loop wrote deliveries itself")
	require.Contains(t, after, "go_goroutines", "Go runtime metrics")
}

func TestMetricsConsumerLag(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 1}))
	var handled atomic.Int64
	g := joinGroup(t, e, client.GroupConfig{Group: "billing", Topic: "orders", Start: client.Earliest,
		AutoCommitInterval: -1, Handler: func(*client.GroupMessage) error { handled.Add(1); return nil }})
	waitAssigned(t, []int{1}, g)

	publishN(t, c, "orders", 0, 10)
	require.Eventually(t, func() bool { return handled.Load() == 10 }, 30*time.Second, time.Millisecond)
	require.NoError(t, g.Commit(ctx))
	publishN(t, c, "orders", 10, 5) // handled, never committed

	m := scrape(t, e)
	require.InDelta(t, 5, m[`ratatoskr_consumer_lag_messages{group="billing",topic="orders",partition="0"}`], 0)
	require.InDelta(t, 1, m[`ratatoskr_consumer_group_members{group="billing",topic="orders"}`], 0)
}

// gatedFS blocks the opening of files under one directory until release
// is closed; blocked is closed when the first such open waits.
type gatedFS struct {
	vfs.FS
	under   string
	blocked chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if strings.HasPrefix(name, g.under) {
		g.once.Do(func() { close(g.blocked) })
		<-g.release
	}
	return g.FS.OpenFile(name, flag, perm)
}

func TestReadyzDuringRecovery(t *testing.T) {
	dir := t.TempDir()
	first := startBroker(t, func(c *Config) { c.DataDir = dir })
	c := dial(t, first)
	require.NoError(t, c.CreateTopic(testCtx(t), "orders", client.TopicConfig{Partitions: 1}))
	publishN(t, c, "orders", 0, 10)
	require.NoError(t, c.Close())
	require.NoError(t, first.Shutdown(testCtx(t)))

	gate := &gatedFS{FS: vfs.Default(), under: dir + "/topics/orders/", blocked: make(chan struct{}), release: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir, cfg.FS = "127.0.0.1:0", "127.0.0.1:0", dir, gate
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := New(cfg)
	require.NoError(t, err)
	started := make(chan error, 1)
	go func() { started <- e.Start(testCtx(t)) }()
	var release sync.Once
	t.Cleanup(func() {
		release.Do(func() { close(gate.release) })
		if <-started != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})

	select {
	case <-gate.blocked:
	case err := <-started:
		t.Fatalf("Start returned %v without opening the topic's log", err)
	}
	code, body := httpGet(t, e, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "recovering")
	code, _ = httpGet(t, e, "/healthz")
	require.Equal(t, http.StatusOK, code, "alive while recovering")
	require.Equal(t, HealthUnhealthy, getHealth(t, e).Status)
	require.NotContains(t, scrapeBody(t, e), "ratatoskr_consumer_lag", "groups are not read while they load")

	release.Do(func() { close(gate.release) })
	err = <-started
	started <- err // for the cleanup
	require.NoError(t, err)
	code, body = httpGet(t, e, "/readyz")
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ready\n", body)

	require.NoError(t, e.Shutdown(testCtx(t)))
	rec := httptest.NewRecorder() // the HTTP listener is closed by now
	e.http.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Contains(t, rec.Body.String(), "shutting down")
}

func scrapeBody(t *testing.T, e *Engine) string {
	t.Helper()
	_, body := httpGet(t, e, "/metrics")
	return body
}

// expireDiskProbe makes the next readiness check probe the disk again.
func expireDiskProbe(e *Engine) {
	e.disk.mu.Lock()
	e.disk.at = time.Time{}
	e.disk.mu.Unlock()
}

func TestReadyzDiskNotWritable(t *testing.T) {
	efs := vfs.NewErrors(vfs.Default())
	e := startBroker(t, func(c *Config) { c.FS = efs })
	code, _ := httpGet(t, e, "/readyz")
	require.Equal(t, http.StatusOK, code)

	probe := func(name string) bool { return strings.HasSuffix(name, "/"+probeFile) }
	efs.Inject(vfs.OpSync, probe, syscall.EIO, 0)
	expireDiskProbe(e)
	code, body := httpGet(t, e, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "data directory not writable")
	require.Contains(t, body, "input/output error")
	h := getHealth(t, e)
	require.Equal(t, HealthUnhealthy, h.Status)
	require.Len(t, h.Reasons, 1)

	efs.Clear()
	expireDiskProbe(e)
	code, _ = httpGet(t, e, "/readyz")
	require.Equal(t, http.StatusOK, code)
	_, err := efs.Stat(e.cfg.DataDir + "/" + probeFile)
	require.ErrorIs(t, err, fs.ErrNotExist, "the probe file is removed")
}

func getHealth(t *testing.T, e *Engine) HealthReport {
	t.Helper()
	code, body := httpGet(t, e, "/api/v1/health")
	require.Equal(t, http.StatusOK, code)
	var h HealthReport
	require.NoError(t, json.Unmarshal([]byte(body), &h))
	return h
}

func TestAPIHealth(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Shards = 2; c.HistoryInterval = 10 * time.Millisecond })
	ctx := testCtx(t)
	pub, subc := dial(t, e), dial(t, e)
	require.NoError(t, pub.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 3}))
	_, err := subc.Subscribe(ctx, "orders", func(*client.Delivery) {})
	require.NoError(t, err)
	publishN(t, pub, "orders", 0, 50)

	_, body := httpGet(t, e, "/api/v1/health")
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &raw))
	require.ElementsMatch(t, []string{"status", "reasons", "uptime_seconds", "broker", "topics", "dependencies", "cluster", "resources"}, keys(raw))
	require.JSONEq(t, `[]`, string(raw["reasons"]))
	shape := map[string]map[string]any{}
	for _, k := range []string{"broker", "cluster", "resources"} {
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw[k], &m))
		shape[k] = m
	}
	require.ElementsMatch(t, []string{"alive", "topic_count", "total_subscribers", "connections", "message_rate", "error_rate"}, keys(shape["broker"]))
	require.ElementsMatch(t, []string{"mode", "nodes"}, keys(shape["cluster"]))
	require.ElementsMatch(t, []string{"memory_bytes", "memory_sys_bytes", "goroutines", "gomaxprocs", "inbox_depths",
		"disk_path", "disk_used_bytes", "disk_free_bytes", "disk_usage_ratio"}, keys(shape["resources"]))
	var topics []map[string]any
	require.NoError(t, json.Unmarshal(raw["topics"], &topics))
	require.Len(t, topics, 1)
	require.ElementsMatch(t, []string{"name", "partitions", "subscribers", "messages", "bytes", "message_rate",
		"read_only_partitions", "offline_partitions", "partition_problems"}, keys(topics[0]))
	require.Equal(t, []any{}, topics[0]["partition_problems"])

	h := getHealth(t, e)
	require.Equal(t, HealthHealthy, h.Status, h.Reasons)
	require.Positive(t, h.UptimeSeconds)
	require.True(t, h.Broker.Alive)
	require.Equal(t, 1, h.Broker.TopicCount)
	require.EqualValues(t, 1, h.Broker.TotalSubscribers)
	require.EqualValues(t, 2, h.Broker.Connections)
	require.Equal(t, TopicHealth{Name: "orders", Partitions: 3, Subscribers: 1, Messages: 50,
		Bytes: h.Topics[0].Bytes, MessageRate: h.Topics[0].MessageRate, Problems: []PartitionHealth{}}, h.Topics[0])
	require.Positive(t, h.Topics[0].Bytes)
	require.Equal(t, ClusterHealth{Mode: "standalone", Nodes: 1}, h.Cluster)
	r := h.Resources
	require.Positive(t, r.MemoryBytes)
	require.GreaterOrEqual(t, r.MemorySysBytes, r.MemoryBytes)
	require.Positive(t, r.Goroutines)
	require.Positive(t, r.GOMAXPROCS)
	require.Len(t, r.InboxDepths, 2)
	require.Equal(t, e.cfg.DataDir, r.DiskPath)
	require.Positive(t, r.DiskFreeBytes)
	require.InDelta(t, float64(r.DiskUsedBytes)/float64(r.DiskUsedBytes+r.DiskFreeBytes), r.DiskUsageRatio, 1e-9)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestMetricsHistory(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.HistoryInterval = 10 * time.Millisecond
		c.HistoryRetention = time.Minute
	})
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 1}))
	publishN(t, c, "orders", 0, 40)

	var rep HistoryReport
	require.Eventually(t, func() bool {
		_, body := httpGet(t, e, "/api/v1/metrics/history")
		rep = HistoryReport{}
		require.NoError(t, json.Unmarshal([]byte(body), &rep))
		n := len(rep.Samples)
		return n >= 3 && rep.Samples[n-1].PublishedMessages == 40
	}, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, rep.Samples[0].MessageRate, "the first sample, taken at start, has nothing to compare with")
	require.True(t, slices.ContainsFunc(rep.Samples, func(s HistorySample) bool { return s.MessageRate > 0 }),
		"the publishes show as a rate")
	require.InDelta(t, 0.01, rep.IntervalSeconds, 1e-9)
	require.True(t, slices.IsSortedFunc(rep.Samples, func(a, b HistorySample) int { return a.Time.Compare(b.Time) }), "oldest first")
	last := rep.Samples[len(rep.Samples)-1]
	require.EqualValues(t, 40, last.Topics["orders"].PublishedMessages)
	require.EqualValues(t, 1, last.Connections)
	require.Positive(t, last.MemoryBytes)
	require.Positive(t, last.Goroutines)
	for i, s := range rep.Samples[1:] {
		prev := rep.Samples[i]
		require.InDelta(t, s.Time.Sub(prev.Time).Seconds(), s.IntervalSeconds, 1e-6)
		want := float64(s.PublishedMessages-prev.PublishedMessages) / s.IntervalSeconds
		require.InDelta(t, want, s.MessageRate, 1e-6, "rate since the previous sample")
		require.InDelta(t, want, s.Topics["orders"].MessageRate, 1e-6)
	}

	require.NoError(t, e.Shutdown(ctx))
	select {
	case <-e.history.Done():
	default:
		t.Fatal("the collector is still running after Shutdown")
	}
}

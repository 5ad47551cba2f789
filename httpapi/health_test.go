package httpapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// flakyTopic is a one-partition topic whose reads failed n times.
func flakyTopic(name string, n uint64) Topic {
	t := fakeTopic(name, 1)
	t.Parts[0].Log.ReadErrors = n
	return t
}

// TestReadyz: 503 with the broker's reasons when it should get no
// traffic; 200 "degraded: " with the partitions' problems when it serves
// with some in trouble; else 200 "ready".
func TestReadyz(t *testing.T) {
	b := newFake()
	h := handler(t, b)
	code, body, hdr := call(h, "", "GET", "/readyz", "")
	require.Equal(t, 200, code)
	require.Equal(t, "ready\n", body)
	require.Equal(t, "text/plain; charset=utf-8", hdr.Get("Content-Type"))

	off := fakeTopic("t", 2)
	off.Parts[1].State, off.Parts[1].Reason = wire.PartitionOffline, "open: input/output error"
	off.Parts[1].Log.Offline = off.Parts[1].Reason
	b.addTopic(off)
	code, body, _ = call(h, "", "GET", "/readyz", "")
	require.Equal(t, 200, code, "the other partitions serve")
	require.Equal(t, "degraded: partition t/1 offline: open: input/output error\n", body)

	b.notReady = []string{"native listener down: accept: too many open files", "another"}
	code, body, _ = call(h, "", "GET", "/readyz", "")
	require.Equal(t, 503, code)
	require.Equal(t, "native listener down: accept: too many open files; another\n", body)
}

// TestDependencyDownIsDegraded: a Redis that does not answer costs only
// its topics, so the broker is degraded, not unready, and says which
// server is down, in /readyz and in the health report.
func TestDependencyDownIsDegraded(t *testing.T) {
	b := newFake()
	h := handler(t, b)
	b.deps = []Dependency{{Name: "redis", Addr: "127.0.0.1:6379", Up: true, Persistence: "aof appendfsync=always"}}
	code, body, _ := call(h, "", "GET", "/readyz", "")
	require.Equal(t, 200, code)
	require.Equal(t, "ready\n", body)
	rep := New(Config{}, b).Health()
	require.Equal(t, HealthHealthy, rep.Status)
	require.Equal(t, b.deps, rep.Dependencies)

	b.deps[0].Up, b.deps[0].Error = false, "dial tcp 127.0.0.1:6379: connect: connection refused"
	code, body, _ = call(h, "", "GET", "/readyz", "")
	require.Equal(t, 200, code, "the other topics serve")
	require.Equal(t, "degraded: dependency redis at 127.0.0.1:6379 is down: dial tcp 127.0.0.1:6379: connect: connection refused\n", body)
	rep = New(Config{}, b).Health()
	require.Equal(t, HealthDegraded, rep.Status)
	require.Equal(t, []string{"dependency redis at 127.0.0.1:6379 is down: dial tcp 127.0.0.1:6379: connect: connection refused"}, rep.Reasons)
	require.False(t, rep.Dependencies[0].Up)
}

// TestPartitionProblemsAreCapped: a disk gone bad can hit thousands of
// partitions; the reports list a few and count the rest.
func TestPartitionProblemsAreCapped(t *testing.T) {
	b := newFake()
	for i := range maxListedProblems + 5 {
		b.addTopic(flakyTopic(fmt.Sprintf("flaky%02d", i), 1))
	}
	s := New(Config{}, b)
	h := s.Health()
	require.Equal(t, HealthDegraded, h.Status)
	require.Len(t, h.Reasons, maxListedProblems+1)
	require.Equal(t, "partition flaky00/0: 1 read(s) failed with I/O errors", h.Reasons[0])
	require.Equal(t, "and 5 more partition problem(s)", h.Reasons[maxListedProblems])
	_, body, _ := call(s.routes(testToken), "", "GET", "/readyz", "")
	require.True(t, strings.HasSuffix(body, "; and 5 more partition problem(s)\n"), body)
}

// TestHealthReport: the report's figures come from the broker's views and
// the newest history sample.
func TestHealthReport(t *testing.T) {
	b := newFake()
	b.uptime = 90 * time.Second
	b.conns = []Connection{{Remote: "a"}, {Remote: "b"}}
	b.shards = []Shard{{ID: 0, InboxDepth: 2, InboxCap: 8}, {ID: 1, InboxDepth: 0, InboxCap: 8}}
	orders := fakeTopic("orders", 2)
	orders.Subscriptions = 3
	orders.Parts[0].Log = storage.LogStats{Start: 2, End: 10, Bytes: 80}
	orders.Parts[1].Log = storage.LogStats{End: 5, Bytes: 50, Corrupt: []storage.Range{{From: 1, To: 2}}}
	b.addTopic(orders)
	hist := NewHistory(time.Second, time.Hour, nil)
	t0 := time.Unix(1000, 0)
	hist.add(HistorySample{Time: t0, Topics: map[string]TopicSample{"orders": {}}})
	hist.add(HistorySample{Time: t0.Add(2 * time.Second), PublishedMessages: 40, Errors: 1,
		Topics: map[string]TopicSample{"orders": {PublishedMessages: 40}}})
	dir := t.TempDir()
	s := New(Config{DataDir: dir, History: hist}, b)

	h := s.Health()
	require.Equal(t, HealthDegraded, h.Status)
	require.Equal(t, []string{"partition orders/1: 1 corrupt range(s) found, the first [1, 2)"}, h.Reasons)
	require.InDelta(t, 90, h.UptimeSeconds, 0)
	require.Equal(t, BrokerHealth{Alive: true, TopicCount: 1, TotalSubscribers: 3, Connections: 2,
		MessageRate: 20, ErrorRate: 0.5}, h.Broker)
	require.Equal(t, []TopicHealth{{Name: "orders", Partitions: 2, Subscribers: 3, Messages: 13, Bytes: 130,
		MessageRate: 20, Problems: []PartitionHealth{{Partition: 1, State: "online", CorruptRanges: 1}}}}, h.Topics)
	require.Equal(t, ClusterHealth{Mode: "standalone", Nodes: 1}, h.Cluster)
	require.Equal(t, []int{2, 0}, h.Resources.InboxDepths)
	require.Equal(t, dir, h.Resources.DiskPath)
	require.Positive(t, h.Resources.DiskFreeBytes)
	require.Positive(t, h.Resources.Goroutines)

	var raw map[string]json.RawMessage
	okJSON(t, s.routes(testToken), "GET", "/api/v1/health", "", 200, &raw)
	require.ElementsMatch(t, []string{"status", "reasons", "uptime_seconds", "broker", "topics", "dependencies", "cluster", "resources"},
		keys(raw))

	b.notReady = []string{"shutting down"}
	h = s.Health()
	require.Equal(t, HealthUnhealthy, h.Status)
	require.Equal(t, []string{"shutting down"}, h.Reasons, "not ready: the partitions' problems are left out")
}

// TestHealthDegradedReasons: a full shard inbox, an error rate above both
// thresholds and a nearly full data file system each degrade the broker.
func TestHealthDegradedReasons(t *testing.T) {
	h := HealthReport{Broker: BrokerHealth{MessageRate: 100, ErrorRate: 5},
		Resources: ResourcesHealth{DiskUsageRatio: 0.95}}
	shards := []Shard{{ID: 0, InboxDepth: 4, InboxCap: 8}, {ID: 1, InboxDepth: 5, InboxCap: 8}}
	require.Equal(t, []string{"p", "shard 1 inbox is 5 of 8 full", "errors at 5.0/s", "data file system 95% full"},
		degradedReasons(&h, shards, []string{"p"}))
	h.Broker.ErrorRate, h.Resources.DiskUsageRatio = 0.9, 0.5
	require.Empty(t, degradedReasons(&h, shards[:1], nil), "errors below 1/s do not count")
	h.Broker.ErrorRate, h.Broker.MessageRate = 5, 1000
	require.Empty(t, degradedReasons(&h, shards[:1], nil), "errors below 1% of the messages do not count")
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

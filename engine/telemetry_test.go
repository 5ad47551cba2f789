package engine

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// TestAuditLogRecordsAdminAPIChange: a PATCH through the admin API is
// recorded twice: as the admin action, with the token as actor and the
// caller's address, and as the topic change it caused, with the same
// origin; a refused token is an auth line.
func TestAuditLogRecordsAdminAPIChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	e := startBroker(t, func(c *Config) { c.AuditLog = path })
	a := newAdmin(t, e)
	a.json("POST", "/api/v1/topics", `{"name":"orders","partitions":2}`, 201, nil)
	a.json("PATCH", "/api/v1/topics/orders", `{"retention":"2h"}`, 200, nil)
	a.fails("PATCH", "/api/v1/topics/orders", `{"retention":"soon"}`, 400, "invalid_argument", "retention")
	a.fails("PATCH", "/api/v1/topics/orders", `{"retention":`, 400, "invalid_json", "bad request body")
	wrong := a
	wrong.token = "nope"
	wrong.fails("DELETE", "/api/v1/topics/orders", "", 401, "unauthorized", "not the admin token")

	var recs []map[string]any
	require.Eventually(t, func() bool {
		recs = auditRecords(t, path)
		return findAudit(recs, string(EventAuth), "") != nil
	}, 10*time.Second, 10*time.Millisecond)
	var actions, changes []map[string]any
	for _, r := range recs {
		switch {
		case r["kind"] == string(EventAdminAction) && r["target"] == "topic/orders":
			actions = append(actions, r)
		case r["kind"] == string(EventTopicUpdated):
			changes = append(changes, r)
		}
	}
	require.Len(t, actions, 4, "create, the change and the two refused changes")
	require.Contains(t, actions[3]["outcome"], "unexpected EOF", "a body that is not JSON is audited too")
	patch := actions[1]
	require.Equal(t, "PATCH /api/v1/topics/orders", patch["action"])
	require.Equal(t, "admin-token", patch["actor"])
	require.Equal(t, "ok", patch["outcome"])
	require.True(t, strings.HasPrefix(patch["remote"].(string), "127.0.0.1:"), "%v", patch["remote"])
	require.Contains(t, actions[2]["outcome"], "retention")
	require.Len(t, changes, 2)
	require.Equal(t, "admin-token", changes[0]["actor"], "the topic change names the API as its origin")
	require.Equal(t, patch["remote"], changes[0]["remote"])

	var auth map[string]any
	for _, r := range recs {
		if r["kind"] == string(EventAuth) {
			auth = r
		}
	}
	require.Equal(t, "DELETE /api/v1/topics/orders", auth["action"])
	require.Contains(t, auth["outcome"], "not the admin token")
}

// TestEventLogWritesTraffic: the event log has every kind, a line per
// stored batch with its offset, count and bytes.
func TestEventLogWritesTraffic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	e := startBroker(t, func(c *Config) { c.EventLog = path })
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "t", client.TopicConfig{}))
	for i := range 3 {
		_, err := c.Publish(ctx, "t", client.Message{Value: fmt.Appendf(nil, "v%d", i)})
		require.NoError(t, err)
	}
	var batches []map[string]any
	require.Eventually(t, func() bool {
		batches = batches[:0]
		for _, r := range auditRecords(t, path) {
			if r["kind"] == string(EventBatchPublished) {
				batches = append(batches, r)
			}
		}
		return len(batches) == 3
	}, 10*time.Second, 10*time.Millisecond)
	for i, b := range batches {
		require.Equal(t, "t", b["topic"])
		require.EqualValues(t, 0, b["partition"])
		require.EqualValues(t, i, b["offset"])
		require.EqualValues(t, 1, b["count"])
		require.Greater(t, b["bytes"], float64(0))
	}
	require.NotNil(t, findAudit(auditRecords(t, path), string(EventTopicCreated), "topic/t"))
}

// TestCorruptRangesInMetricsAndAPI: a corrupt range found by a read (a
// sealed segment is checked as it is read) is in the admin API's partition
// view and in the metrics.
func TestCorruptRangesInMetricsAndAPI(t *testing.T) {
	reopen := corruptOneRecord(t)
	e2 := startBroker(t, reopen)
	require.Len(t, fetchAll(t, dial(t, e2), "bits", 0), 199)
	var parts struct {
		Partitions []struct {
			Corrupt []struct{ From, To int64 } `json:"corrupt"`
		} `json:"partitions"`
	}
	newAdmin(t, e2).json("GET", "/api/v1/topics/bits/partitions", "", 200, &parts)
	require.Len(t, parts.Partitions[0].Corrupt, 1)
	r := parts.Partitions[0].Corrupt[0]
	require.Equal(t, int64(1), r.To-r.From, "one message lost to the flipped bit")
	m := scrape(t, e2)
	require.Equal(t, 1.0, m[`ratatoskr_storage_corrupt_ranges{topic="bits",partition="0"}`])
	require.Equal(t, 1.0, m[`ratatoskr_storage_corrupt_messages{topic="bits",partition="0"}`])
}

// TestPluginMetrics: a plugin's panics and deliveries are in the metrics.
func TestPluginMetrics(t *testing.T) {
	e := startBrokerWith(t, func(c *Config) { c.HTTPAddr = "127.0.0.1:0" }, WithPlugin(panicker{}))
	pubSub(t, e, "orders", 10)
	require.Eventually(t, func() bool {
		m := scrape(t, e)
		return m[`ratatoskr_plugin_panics_total{plugin="panicker"}`] >= 10 &&
			m[`ratatoskr_plugin_events_delivered_total{plugin="panicker"}`] >= 10
	}, 5*time.Second, 10*time.Millisecond)
	m := scrape(t, e)
	require.Contains(t, m, `ratatoskr_plugin_events_dropped_total{plugin="panicker"}`)
	require.Contains(t, m, `ratatoskr_plugin_queue_length{plugin="panicker"}`)
}

// TestLongTopicNameNeedsANamedDeadLetterTopic: a message-mode group of a
// topic whose "<topic>.dlq" would not be a valid name is refused at join,
// rather than dropping its dead letters later; naming one makes it work.
func TestLongTopicNameNeedsANamedDeadLetterTopic(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	name := strings.Repeat("t", 249)
	require.NoError(t, c.CreateTopic(ctx, name, client.TopicConfig{}))
	cfg := client.GroupConfig{Group: "g", Topic: name, Mode: client.AckMessage,
		Handler: func(*client.GroupMessage) error { return nil }}
	_, err := client.JoinGroup(ctx, e.Addr().String(), cfg)
	require.ErrorContains(t, err, "default dead-letter topic")
	_, err = c.UpdateTopic(ctx, name, map[string]string{"dead-letter-topic": "short-dlq"})
	require.NoError(t, err)
	joinGroup(t, e, cfg)
}

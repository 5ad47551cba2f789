package telemetry

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// readLines reads the JSON lines of a log file.
func readLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %q", sc.Text())
		out = append(out, m)
	}
	require.NoError(t, sc.Err())
	return out
}

// TestAuditLogLines: the audit log writes changes, access and connections
// as one JSON object a line, and leaves traffic out; the event log writes
// every event, batches with their offset and bytes.
func TestAuditLogLines(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.FixedZone("x", 3600))
	created := Event{Time: at, Kind: EventTopicCreated, Topic: "orders", Partition: -1,
		Actor: "client", Remote: "10.0.0.1:5000", Action: "create", Target: "topic/orders"}
	batch := Event{Time: at, Kind: EventBatchPublished, Topic: "orders", Partition: 2, Offset: 40, Count: 3, Bytes: 300}
	refused := Event{Time: at, Kind: EventConnRefused, Partition: -1, Remote: "10.0.0.2:6000", Err: errors.New("too many connections")}

	dir := t.TempDir()
	audit, err := OpenAuditLog(filepath.Join(dir, "audit.log"))
	require.NoError(t, err)
	events, err := OpenEventLog(filepath.Join(dir, "events.log"))
	require.NoError(t, err)
	require.Equal(t, "audit-log", audit.Name())
	require.Equal(t, "event-log", events.Name())
	require.False(t, audit.Accepts(EventBatchPublished), "the audit log records no traffic")
	require.True(t, events.Accepts(EventBatchPublished))
	for _, ev := range []Event{created, batch, refused} {
		require.NoError(t, audit.Handle(ev))
		require.NoError(t, events.Handle(ev))
	}
	require.NoError(t, audit.Close())
	require.NoError(t, events.Close())

	want := []map[string]any{
		{"time": "2026-01-02T02:04:05.006Z", "kind": "topic.created", "actor": "client", "remote": "10.0.0.1:5000",
			"action": "create", "target": "topic/orders", "outcome": "ok", "topic": "orders"},
		{"time": "2026-01-02T02:04:05.006Z", "kind": "connection.refused", "actor": "", "remote": "10.0.0.2:6000",
			"action": "connection.refused", "target": "", "outcome": "too many connections"},
	}
	require.Equal(t, want, readLines(t, filepath.Join(dir, "audit.log")))
	got := readLines(t, filepath.Join(dir, "events.log"))
	require.Len(t, got, 3)
	require.Equal(t, map[string]any{"time": "2026-01-02T02:04:05.006Z", "kind": "batch.published", "actor": "",
		"remote": "", "action": "batch.published", "target": "", "outcome": "ok", "topic": "orders",
		"partition": 2.0, "count": 3.0, "offset": 40.0, "bytes": 300.0}, got[1])
}

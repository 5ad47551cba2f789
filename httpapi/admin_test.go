package httpapi

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestAdminRefusesWhileStartingOrDraining: before Start has finished the
// admin API answers 503 not_ready with Retry-After; once shutdown begins,
// 503 shutting_down instead of changing state it can no longer apply.
func TestAdminRefusesWhileStartingOrDraining(t *testing.T) {
	b := newFake()
	s := New(Config{}, b)
	called := false
	h := s.whenReady(func(http.ResponseWriter, *http.Request) { called = true })

	b.starting = "recovering topics and consumer groups"
	w := httptest.NewRecorder()
	h(w, httptest.NewRequest("GET", "/api/v1/topics", nil))
	require.False(t, called)
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, "1", w.Header().Get("Retry-After"))
	require.Contains(t, w.Body.String(), `"not_ready"`)
	require.Contains(t, w.Body.String(), "the broker is not ready: recovering topics")

	b.starting, b.draining = "", true
	w = httptest.NewRecorder()
	h(w, httptest.NewRequest("DELETE", "/api/v1/topics/x", nil))
	require.False(t, called)
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Contains(t, w.Body.String(), "shutting_down")
}

// TestTopicsAPI: the topic endpoints' JSON, from the broker's views, and
// the requests refused before the broker is asked.
func TestTopicsAPI(t *testing.T) {
	b := newFake()
	orders := fakeTopic("orders", 3)
	orders.Config.Retention = "30m0s"
	orders.Parts[0].Log = storage.LogStats{Start: 1, End: 3, Bytes: 100, Segments: 1,
		Corrupt: []storage.Range{{From: 1, To: 2}}}
	orders.Parts[0].Subscribers = 2
	orders.Parts[1].Log = storage.LogStats{End: 2, Bytes: 50, ReadOnly: "fsync failed"}
	orders.Parts[1].State, orders.Parts[1].Reason = wire.PartitionReadOnly, "fsync failed"
	orders.Parts[2].Shard = 1
	b.addTopic(orders)
	h := handler(t, b)

	var list struct{ Topics []topicJSON }
	okJSON(t, h, "GET", "/api/v1/topics", "", 200, &list)
	require.Len(t, list.Topics, 1)
	require.Nil(t, list.Topics[0].Parts, "the list leaves partitions out")
	require.Equal(t, topicTotals{Messages: 4, EndOffsets: 5, Bytes: 150, Subscribers: 2, ReadOnly: 1}, list.Topics[0].Totals)
	require.Equal(t, "30m0s", list.Topics[0].Config.Retention)

	var desc topicJSON
	okJSON(t, h, "GET", "/api/v1/topics/orders", "", 200, &desc)
	require.Len(t, desc.Parts, 3)
	require.Equal(t, partitionJSON{ID: 0, StartOffset: 1, EndOffset: 3, Messages: 2, Bytes: 100, Segments: 1,
		Subscribers: 2, Corrupt: []rangeJSON{{From: 1, To: 2}}, State: "online"}, desc.Parts[0])
	require.Equal(t, "read-only", desc.Parts[1].State)
	require.Equal(t, "fsync failed", desc.Parts[1].Reason)
	require.Equal(t, 1, desc.Parts[2].Shard)
	require.NotNil(t, desc.Parts[2].Corrupt, "an empty list, not null")
	var parts struct {
		Topic      string
		Partitions []partitionJSON
	}
	okJSON(t, h, "GET", "/api/v1/topics/orders/partitions", "", 200, &parts)
	require.Equal(t, "orders", parts.Topic)
	require.Equal(t, desc.Parts, parts.Partitions)
	fails(t, h, testToken, "GET", "/api/v1/topics/nosuch", "", 404, "unknown_topic", `"nosuch"`)
	fails(t, h, testToken, "GET", "/api/v1/topics/nosuch/partitions", "", 404, "unknown_topic", `"nosuch"`)

	var created topicJSON
	okJSON(t, h, "POST", "/api/v1/topics", `{"name":"cache","partitions":2,"config":{"retention":3600,"max_subscribers":7,"retention_bytes":"1048576","storage":"memory"}}`, 201, &created)
	require.Equal(t, "cache", created.Name)
	require.Len(t, created.Parts, 2)
	require.Equal(t, []wire.KV{{Key: "max-subscribers", Value: "7"}, {Key: "retention", Value: "1h0m0s"},
		{Key: "retention-bytes", Value: "1048576"}, {Key: "storage", Value: "memory"}}, b.created["cache"],
		"snake case keys in the protocol's spelling, numbers where natural, keys sorted")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"orders"}`, 409, "topic_exists", "orders")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":`, 400, "invalid_json", "bad request body")
	fails(t, h, testToken, "POST", "/api/v1/topics", ``, 400, "invalid_json", "empty")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"x"} {}`, 400, "invalid_json", "after the JSON value")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"x","replicas":3}`, 400, "invalid_json", `unknown field "replicas"`)
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"partitions":3}`, 400, "invalid_argument", `"name" is required`)
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"x","partitions":17}`, 400, "invalid_argument", "partitions must be 1..16, got 17")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"x","partitions":0}`, 400, "invalid_argument", "partitions must be 1..16")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"x","config":{"fsync":5}}`, 400, "invalid_argument", "fsync must be a string")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"x","config":{"max_subscribers":true}}`, 400, "invalid_argument", "must be a string or a number")
	fails(t, h, testToken, "POST", "/api/v1/topics", `{"name":"x","config":{"retention-bytes":1}}`, 400, "invalid_argument",
		`topic config keys are snake_case in the admin API: "retention_bytes", not "retention-bytes"`)
	big := `{"name":"x","config":{"dead_letter_topic":"` + strings.Repeat("a", maxAdminBody) + `"}}`
	fails(t, h, testToken, "POST", "/api/v1/topics", big, 413, "body_too_large", "larger than")
	require.NotContains(t, b.created, "x", "nothing refused reached the broker")

	var patched topicJSON
	okJSON(t, h, "PATCH", "/api/v1/topics/orders", `{"fsync":"interval=50ms","max_deliveries":3}`, 200, &patched)
	require.Equal(t, "orders", patched.Name)
	require.Len(t, patched.Parts, 3)
	require.Equal(t, []wire.KV{{Key: "fsync", Value: "interval=50ms"}, {Key: "max-deliveries", Value: "3"}}, b.changed["orders"])
	fails(t, h, testToken, "PATCH", "/api/v1/topics/nosuch", `{"retention":"1h"}`, 404, "unknown_topic", "nosuch")
	fails(t, h, testToken, "PATCH", "/api/v1/topics/orders", `{}`, 400, "invalid_argument", "no config keys")
	fails(t, h, testToken, "PATCH", "/api/v1/topics/orders", `["retention"]`, 400, "invalid_json", "")

	code, body, _ := call(h, testToken, "DELETE", "/api/v1/topics/cache", "")
	require.Equal(t, 204, code)
	require.Empty(t, body)
	fails(t, h, testToken, "DELETE", "/api/v1/topics/cache", "", 404, "unknown_topic", "cache")

	actions := b.eventsOf(telemetry.EventAdminAction)
	require.NotEmpty(t, actions)
	last := actions[len(actions)-1]
	require.Equal(t, "admin-token", last.Actor)
	require.Equal(t, "DELETE /api/v1/topics/cache", last.Action)
	require.Equal(t, "topic/cache", last.Target)
	require.Error(t, last.Err)
	require.Equal(t, -1, last.Partition)
}

// TestErrorStatuses: a broker's protocol error keeps its code, in snake
// case, with the HTTP status that matches it; any other error is a 500.
func TestErrorStatuses(t *testing.T) {
	b := newFake()
	b.addTopic(fakeTopic("t", 1))
	h := handler(t, b)
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{wire.Errorf(wire.CodeTooManyTopics, "maximum of 1"), 429, "too_many_topics"},
		{wire.Errorf(wire.CodeStorageFull, ""), 507, "storage_full"},
		{wire.Errorf(wire.CodeShuttingDown, "bye"), 503, "shutting_down"},
		{wire.Errorf(wire.CodeInvalidArgument, "bad"), 400, "invalid_argument"},
		{errors.New("disk on fire"), 500, "internal_error"},
	} {
		b.topicErr = c.err
		fails(t, h, testToken, "PATCH", "/api/v1/topics/t", `{"retention":"1h"}`, c.status, c.code, "")
	}
}

func TestGroupsAPI(t *testing.T) {
	b := newFake()
	h := handler(t, b)
	var empty struct{ Groups []groupJSON }
	okJSON(t, h, "GET", "/api/v1/groups", "", 200, &empty)
	require.NotNil(t, empty.Groups, "an empty list, not null")
	require.Empty(t, empty.Groups)

	b.groups["workers"] = wire.GroupInfo{Group: "workers", Topic: "jobs", Mode: wire.AckMessage, Generation: 4,
		Members: []string{"m1", "m2"}, Partitions: []wire.GroupPartition{
			{Partition: 0, Owner: "m2", Committed: 3, End: 5, Lag: 2, Pending: 1},
			{Partition: 1, Owner: "m2", Committed: -1, End: 4, Lag: -1},
			{Partition: 2, Committed: 0, End: 7, Lag: 7},
		}}
	var gj groupJSON
	okJSON(t, h, "GET", "/api/v1/groups/workers", "", 200, &gj)
	require.Equal(t, groupJSON{Name: "workers", Topic: "jobs", Mode: "message", Generation: 4,
		Members: []groupMemberJSON{{ID: "m1", Partitions: []int32{}}, {ID: "m2", Partitions: []int32{0, 1}}},
		Partitions: []groupPartitionJSON{
			{Partition: 0, Owner: "m2", Committed: 3, End: 5, Lag: 2, Pending: 1},
			{Partition: 1, Owner: "m2", Committed: -1, End: 4, Lag: -1},
			{Partition: 2, Committed: 0, End: 7, Lag: 7},
		}, Lag: 9}, gj, "the lag sums the partitions with a commit")
	var list struct{ Groups []groupJSON }
	okJSON(t, h, "GET", "/api/v1/groups", "", 200, &list)
	require.Equal(t, []groupJSON{gj}, list.Groups)
	fails(t, h, testToken, "GET", "/api/v1/groups/nosuch", "", 404, "unknown_group", "nosuch")

	ts := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	for body, want := range map[string]wire.Start{
		`{"to":"earliest"}`:                           {Kind: wire.StartEarliest},
		`{"to":"latest"}`:                             {Kind: wire.StartLatest},
		`{"to":"offset","offset":2}`:                  {Kind: wire.StartOffset, Value: 2},
		`{"to":"time","time":"2000-01-01T00:00:00Z"}`: {Kind: wire.StartTime, Value: ts.UnixNano()},
	} {
		okJSON(t, h, "POST", "/api/v1/groups/workers/reset", body, 200, &gj)
		require.Equal(t, want, b.resets["workers"], body)
		require.Equal(t, "workers", gj.Name)
	}
	fails(t, h, testToken, "POST", "/api/v1/groups/workers/reset", `{"to":"offset"}`, 400, "invalid_argument", `needs a non-negative "offset"`)
	fails(t, h, testToken, "POST", "/api/v1/groups/workers/reset", `{"to":"offset","offset":-1}`, 400, "invalid_argument", `needs a non-negative "offset"`)
	fails(t, h, testToken, "POST", "/api/v1/groups/workers/reset", `{"to":"time","time":"yesterday"}`, 400, "invalid_argument", "RFC 3339")
	fails(t, h, testToken, "POST", "/api/v1/groups/workers/reset", `{"to":"middle"}`, 400, "invalid_argument", `"middle"`)
	fails(t, h, testToken, "POST", "/api/v1/groups/workers/reset", `{"to":"earliest","force":true}`, 400, "invalid_json", `unknown field "force"`)
	fails(t, h, testToken, "POST", "/api/v1/groups/nosuch/reset", `{"to":"earliest"}`, 404, "unknown_group", "nosuch")
	require.Equal(t, "mode 9", wire.AckMode(9).String())
}

func TestConnectionsAndShardsAPI(t *testing.T) {
	b := newFake()
	h := handler(t, b)
	var conns struct{ Connections []Connection }
	code, body, _ := call(h, testToken, "GET", "/api/v1/connections", "")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"connections":[]}`, body)

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.conns = []Connection{
		{Remote: "10.0.0.2:1", Client: "late", ConnectedAt: t0.Add(time.Minute), Subscriptions: 1, QueuedBytes: 10},
		{Remote: "10.0.0.1:1", Client: "early", ConnectedAt: t0, Groups: 2},
	}
	okJSON(t, h, "GET", "/api/v1/connections", "", 200, &conns)
	require.Equal(t, []Connection{b.conns[1], b.conns[0]}, conns.Connections, "oldest first")

	b.shards = []Shard{{ID: 0, InboxDepth: 3, InboxCap: 8, Partitions: 2, Batches: 5, Messages: 50}, {ID: 1}}
	var raw map[string][]map[string]any
	okJSON(t, h, "GET", "/api/v1/shards", "", 200, &raw)
	require.Len(t, raw["shards"], 2)
	require.Equal(t, map[string]any{"id": 0.0, "inbox_depth": 3.0, "partitions": 2.0, "batches": 5.0, "messages": 50.0},
		raw["shards"][0], "the inbox capacity is not part of the answer")
}

// TestConfigKVs: JSON config values as the protocol's strings.
func TestConfigKVs(t *testing.T) {
	kvs, err := ConfigKVs(map[string]json.RawMessage{"retention": []byte(`1.5`), "dead_letter_topic": []byte(`"d"`)})
	require.NoError(t, err)
	require.Equal(t, []wire.KV{{Key: "dead-letter-topic", Value: "d"}, {Key: "retention", Value: "1.5s"}}, kvs)
	_, err = ConfigKVs(map[string]json.RawMessage{"retention": []byte(`1e400`)})
	require.ErrorContains(t, err, "retention must be a duration")
	_, err = ConfigKVs(map[string]json.RawMessage{"storage": []byte(`1`)})
	require.ErrorContains(t, err, "storage must be a string, got 1")
	_, err = ConfigKVs(map[string]json.RawMessage{"max_deliveries": []byte(`[]`)})
	require.ErrorContains(t, err, "max_deliveries must be a string or a number, got []", "the key as it was sent")
	_, err = ConfigKVs(map[string]json.RawMessage{"dead-letter-topic": []byte(`"d"`)})
	require.ErrorContains(t, err, `"dead_letter_topic", not "dead-letter-topic"`)
	_, err = ConfigKVs(map[string]json.RawMessage{"colour": []byte(`"blue"`)})
	require.ErrorContains(t, err, `unknown topic config key "colour"; the keys are max_subscribers, storage,`)
	_, err = ConfigKVs(map[string]json.RawMessage{"Retention": []byte(`"1h"`)})
	require.ErrorContains(t, err, `unknown topic config key "Retention"`, "keys are case-sensitive")
}

// TestTopicConfigKeys: a GET's config answers exactly the keys ConfigKVs
// takes.
func TestTopicConfigKeys(t *testing.T) {
	b, err := json.Marshal(TopicConfig{})
	require.NoError(t, err)
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m))
	require.ElementsMatch(t, ConfigKeys(), slices.Collect(maps.Keys(m)))
	kvs, err := ConfigKVs(m)
	require.NoError(t, err, "a GET's config can be sent back")
	require.Len(t, kvs, len(ConfigKeys()))
}

// TestSnakeKeyError: a refused value's message names the key as the
// admin API spells it; a key-like word later in the message is left alone.
func TestSnakeKeyError(t *testing.T) {
	err := snakeKeyError(wire.Errorf(wire.CodeInvalidArgument, `max-deliveries must be 1..1048576, got "max-deliveries"`))
	require.Equal(t, `max_deliveries must be 1..1048576, got "max-deliveries"`, err.(*wire.Error).Message)
	for _, e := range []error{
		wire.Errorf(wire.CodeInvalidArgument, "a topic cannot be its own dead-letter topic"),
		wire.Errorf(wire.CodeInvalidArgument, "bad-key is refused"),
		wire.Errorf(wire.CodeTooManyTopics, "max-subscribers is not a key here"),
		errors.New("max-subscribers plain error"),
		nil,
	} {
		require.Equal(t, e, snakeKeyError(e))
	}
}

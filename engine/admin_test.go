package engine

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The admin API's answers as docs/ADMIN.md documents them, decoded here on
// their own: httpapi's handlers are tested against a fake broker there;
// these tests check that the engine's answers come through the wiring.
type (
	apiError struct {
		Error struct{ Code, Message string }
	}
	topicTotals struct {
		Messages    int64 `json:"messages"`
		EndOffsets  int64 `json:"end_offsets"`
		Bytes       int64 `json:"bytes"`
		Subscribers int   `json:"subscribers"`
		ReadOnly    int   `json:"read_only_partitions"`
		Offline     int   `json:"offline_partitions"`
	}
	partitionJSON struct {
		ID          int32                      `json:"id"`
		Shard       int                        `json:"shard"`
		StartOffset int64                      `json:"start_offset"`
		EndOffset   int64                      `json:"end_offset"`
		Messages    int64                      `json:"messages"`
		Bytes       int64                      `json:"bytes"`
		Segments    int                        `json:"segments"`
		Subscribers int                        `json:"subscribers"`
		Corrupt     []struct{ From, To int64 } `json:"corrupt"`
		State       string                     `json:"state"`
		Reason      string                     `json:"reason"`
		ReadErrors  uint64                     `json:"read_errors"`
	}
	topicJSON struct {
		Name       string              `json:"name"`
		Partitions int                 `json:"partitions"`
		Config     httpapi.TopicConfig `json:"config"`
		Totals     topicTotals         `json:"totals"`
		Parts      []partitionJSON     `json:"partition_details"`
	}
	groupJSON struct {
		Name       string
		Topic      string
		Mode       string
		Generation uint32
		Members    []struct {
			ID         string
			Partitions []int32
		}
		Partitions []struct {
			Partition      int32
			Owner          string
			Committed, End int64
			Lag            int64
			Pending        uint32
		}
		Lag int64
	}
	shardJSON struct {
		ID         int    `json:"id"`
		InboxDepth int    `json:"inbox_depth"`
		Partitions int    `json:"partitions"`
		Batches    uint64 `json:"batches"`
		Messages   uint64 `json:"messages"`
	}
)

// admin calls a broker's admin API with a token.
type admin struct {
	t          *testing.T
	base       string
	token      string
	user, pass string // HTTP Basic instead of the token, when set
}

func newAdmin(t *testing.T, e *Engine) admin {
	return admin{t: t, base: "http://" + e.HTTPAddr(), token: e.http.Token()}
}

// do sends a request and returns the status, the body and the headers.
func (a admin) do(method, path, body string) (int, []byte, http.Header) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	require.NoError(a.t, err)
	switch {
	case a.user != "":
		req.SetBasicAuth(a.user, a.pass)
	case a.token != "":
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer func() { _ = res.Body.Close() }()
	b, err := io.ReadAll(res.Body)
	require.NoError(a.t, err)
	return res.StatusCode, b, res.Header
}

// json sends a request, checks the status and decodes the answer into v.
func (a admin) json(method, path, body string, status int, v any) {
	a.t.Helper()
	code, b, _ := a.do(method, path, body)
	require.Equal(a.t, status, code, "%s %s: %s", method, path, b)
	if v != nil {
		require.NoError(a.t, json.Unmarshal(b, v), "%s", b)
	}
}

// fails sends a request and checks its JSON error: status, code, and a
// fragment of the message.
func (a admin) fails(method, path, body string, status int, code, msgPart string) {
	a.t.Helper()
	got, b, h := a.do(method, path, body)
	require.Equal(a.t, status, got, "%s %s: %s", method, path, b)
	require.Equal(a.t, "application/json", h.Get("Content-Type"))
	var e apiError
	require.NoError(a.t, json.Unmarshal(b, &e), "%s", b)
	require.Equal(a.t, code, e.Error.Code, "%s", b)
	require.Contains(a.t, e.Error.Message, msgPart)
}

func TestAdminTopics(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.AutoCreateTopics = false; c.MaxPartitions = 16 })
	a := newAdmin(t, e)

	var created topicJSON
	a.json("POST", "/api/v1/topics", `{"name":"orders","partitions":3,"config":{"retention":"30m","max_subscribers":7,"retention_bytes":"1048576"}}`, 201, &created)
	require.Equal(t, "orders", created.Name)
	require.Equal(t, 3, created.Partitions)
	require.Len(t, created.Parts, 3)
	require.Equal(t, "30m0s", created.Config.Retention)
	require.Equal(t, 7, created.Config.MaxSubscribers)
	require.Equal(t, int64(1<<20), created.Config.RetentionBytes)
	require.Equal(t, "disk", created.Config.Storage)
	var mem topicJSON
	a.json("POST", "/api/v1/topics", `{"name":"cache","config":{"storage":"memory","retention":3600}}`, 201, &mem)
	require.Equal(t, 1, mem.Partitions, "the broker's default partition count")
	require.Equal(t, "1h0m0s", mem.Config.Retention, "a number is seconds")
	require.Equal(t, "never", mem.Config.Fsync)

	a.fails("POST", "/api/v1/topics", `{"name":"orders"}`, 409, "topic_exists", "orders")
	a.fails("POST", "/api/v1/topics", `{"name":`, 400, "invalid_json", "bad request body")
	a.fails("POST", "/api/v1/topics", ``, 400, "invalid_json", "empty")
	a.fails("POST", "/api/v1/topics", `{"name":"x"} {}`, 400, "invalid_json", "after the JSON value")
	a.fails("POST", "/api/v1/topics", `{"name":"x","replicas":3}`, 400, "invalid_json", `unknown field "replicas"`)
	a.fails("POST", "/api/v1/topics", `{"name":"x","partitions":"3"}`, 400, "invalid_json", "partitions")
	a.fails("POST", "/api/v1/topics", `{"partitions":3}`, 400, "invalid_argument", `"name" is required`)
	a.fails("POST", "/api/v1/topics", `{"name":"bad/name"}`, 400, "invalid_argument", "")
	a.fails("POST", "/api/v1/topics", `{"name":"x","partitions":17}`, 400, "invalid_argument", "partitions must be 1..16")
	a.fails("POST", "/api/v1/topics", `{"name":"x","partitions":0}`, 400, "invalid_argument", "partitions must be 1..16")
	a.fails("POST", "/api/v1/topics", `{"name":"x","config":{"retention":"soon"}}`, 400, "invalid_argument", "retention must be a duration")
	a.fails("POST", "/api/v1/topics", `{"name":"x","config":{"fsync":"sometimes"}}`, 400, "invalid_argument", "fsync")
	a.fails("POST", "/api/v1/topics", `{"name":"x","config":{"fsync":5}}`, 400, "invalid_argument", "fsync must be a string")
	a.fails("POST", "/api/v1/topics", `{"name":"x","config":{"colour":"blue"}}`, 400, "invalid_argument",
		`unknown topic config key "colour"; the keys are max_subscribers, storage, fsync, retention, retention_bytes, dead_letter_topic, max_deliveries`)
	a.fails("POST", "/api/v1/topics", `{"name":"x","config":{"max_subscribers":true}}`, 400, "invalid_argument", "max_subscribers must be a string or a number")
	a.fails("POST", "/api/v1/topics", `{"name":"x","config":{"max_subscribers":-1}}`, 400, "invalid_argument",
		`max_subscribers must be 1..`) // the broker's message, in the admin API's spelling
	a.fails("POST", "/api/v1/topics", `{"name":"x","config":{"max-subscribers":7}}`, 400, "invalid_argument",
		`topic config keys are snake_case in the admin API: "max_subscribers", not "max-subscribers"`)
	big := `{"name":"x","config":{"dead_letter_topic":"` + strings.Repeat("a", 1<<20) + `"}}`
	a.fails("POST", "/api/v1/topics", big, 413, "body_too_large", "larger than")

	var list struct{ Topics []topicJSON }
	a.json("GET", "/api/v1/topics", "", 200, &list)
	require.Len(t, list.Topics, 2)
	require.Equal(t, "cache", list.Topics[0].Name)
	require.Equal(t, "orders", list.Topics[1].Name)
	require.Nil(t, list.Topics[1].Parts, "the list leaves partitions out")

	c := dial(t, e)
	ctx := testCtx(t)
	for i := range 5 {
		_, err := c.Publish(ctx, "orders", client.Message{Value: []byte("hello")}, client.ToPartition(i%2))
		require.NoError(t, err)
	}
	a.json("GET", "/api/v1/topics", "", 200, &list)
	require.Equal(t, topicTotals{Messages: 5, EndOffsets: 5, Bytes: list.Topics[1].Totals.Bytes}, list.Topics[1].Totals)
	require.Positive(t, list.Topics[1].Totals.Bytes)

	var desc topicJSON
	a.json("GET", "/api/v1/topics/orders", "", 200, &desc)
	require.Len(t, desc.Parts, 3)
	require.Equal(t, int64(3), desc.Parts[0].EndOffset)
	require.Equal(t, int64(2), desc.Parts[1].EndOffset)
	require.Equal(t, int64(0), desc.Parts[2].EndOffset)
	require.Equal(t, int32(2), desc.Parts[2].ID)
	require.Equal(t, e.topics.get([]byte("orders")).Parts[1].Shard.ID(), desc.Parts[1].Shard)
	require.NotNil(t, desc.Parts[0].Corrupt)
	var parts struct {
		Topic      string
		Partitions []partitionJSON
	}
	a.json("GET", "/api/v1/topics/orders/partitions", "", 200, &parts)
	require.Equal(t, "orders", parts.Topic)
	require.Equal(t, desc.Parts, parts.Partitions)
	a.fails("GET", "/api/v1/topics/nosuch", "", 404, "unknown_topic", `"nosuch"`)
	a.fails("GET", "/api/v1/topics/nosuch/partitions", "", 404, "unknown_topic", `"nosuch"`)

	var patched topicJSON
	a.json("PATCH", "/api/v1/topics/orders", `{"fsync":"interval=50ms","max_subscribers":9,"dead_letter_topic":"orders.failed","max_deliveries":"3"}`, 200, &patched)
	require.Equal(t, "interval=50ms", patched.Config.Fsync)
	require.Equal(t, 9, patched.Config.MaxSubscribers)
	require.Equal(t, "orders.failed", patched.Config.DeadLetterTopic)
	require.Equal(t, 3, patched.Config.MaxDeliveries)
	require.Equal(t, "30m0s", patched.Config.Retention, "keys not named keep their value")
	require.Equal(t, 9, e.topics.get([]byte("orders")).Config().MaxSubscribers)
	a.fails("PATCH", "/api/v1/topics/nosuch", `{"retention":"1h"}`, 404, "unknown_topic", "nosuch")
	a.fails("PATCH", "/api/v1/topics/orders", `{"storage":"memory"}`, 400, "invalid_argument", "storage cannot be changed")
	a.fails("PATCH", "/api/v1/topics/orders", `{"retention":"-1h"}`, 400, "invalid_argument", "retention")
	a.fails("PATCH", "/api/v1/topics/orders", `{"dead_letter_topic":"orders"}`, 400, "invalid_argument", "own dead-letter topic")
	a.fails("PATCH", "/api/v1/topics/orders", `{"retention_bytes":-1}`, 400, "invalid_argument", "retention_bytes must be a number of bytes")
	a.fails("PATCH", "/api/v1/topics/orders", `{"dead-letter-topic":"x"}`, 400, "invalid_argument", `"dead_letter_topic", not "dead-letter-topic"`)
	a.fails("PATCH", "/api/v1/topics/orders", `{}`, 400, "invalid_argument", "no config keys")
	a.fails("PATCH", "/api/v1/topics/orders", `["retention"]`, 400, "invalid_json", "")
	a.fails("PATCH", "/api/v1/topics/cache", `{"fsync":"always"}`, 400, "invalid_argument", "memory topic")

	code, body, _ := a.do("DELETE", "/api/v1/topics/cache", "")
	require.Equal(t, 204, code)
	require.Empty(t, body)
	require.Nil(t, e.topics.get([]byte("cache")))
	a.fails("DELETE", "/api/v1/topics/cache", "", 404, "unknown_topic", "cache")
}

func TestAdminTopicLimit(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxTopics = 1 })
	a := newAdmin(t, e)
	a.json("POST", "/api/v1/topics", `{"name":"one"}`, 201, nil)
	a.fails("POST", "/api/v1/topics", `{"name":"two"}`, 429, "too_many_topics", "maximum of 1")
}

// TestAdminPersistence checks that a PATCH is written like any topic
// config, and that a generated token is kept and reused across restarts.
func TestAdminPersistence(t *testing.T) {
	dir := t.TempDir()
	e := startBroker(t, func(c *Config) { c.DataDir = dir })
	b, err := os.ReadFile(AdminTokenPath(dir))
	require.NoError(t, err)
	tok := strings.TrimSpace(string(b))
	require.Len(t, tok, 64, "32 random bytes in hex")
	require.Equal(t, tok, e.http.Token())
	st, err := os.Stat(AdminTokenPath(dir))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	a := newAdmin(t, e)
	a.json("POST", "/api/v1/topics", `{"name":"orders","partitions":2}`, 201, nil)
	var got topicJSON
	a.json("PATCH", "/api/v1/topics/orders", `{"retention":"2h"}`, 200, &got)
	require.Equal(t, "2h0m0s", got.Config.Retention)
	a.json("GET", "/api/v1/topics/orders", "", 200, &got)
	require.Equal(t, "2h0m0s", got.Config.Retention)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(ctx))

	e2 := startBroker(t, func(c *Config) { c.DataDir = dir })
	require.Equal(t, tok, e2.http.Token(), "the generated token is reused")
	a2 := newAdmin(t, e2)
	a2.json("GET", "/api/v1/topics/orders", "", 200, &got)
	require.Equal(t, "2h0m0s", got.Config.Retention)
	require.Equal(t, 2, got.Partitions)
	stale := a2
	stale.token = "0" + tok[1:]
	if stale.token == tok {
		stale.token = "1" + tok[1:]
	}
	stale.fails("GET", "/api/v1/topics", "", 401, "unauthorized", "not the admin token")
}

func TestAdminEmptyTokenFile(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(AdminTokenPath(dir), []byte("\n"), 0o600))
	cfg := DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", dir
	e, err := New(cfg)
	require.NoError(t, err)
	err = e.Start(context.Background())
	require.ErrorContains(t, err, "admin.token is empty")
}

func TestAdminGroups(t *testing.T) {
	e := startBroker(t, nil)
	a := newAdmin(t, e)
	a.json("POST", "/api/v1/topics", `{"name":"jobs","partitions":2}`, 201, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	for i := range 6 {
		_, err := c.Publish(ctx, "jobs", client.Message{Value: []byte("job")}, client.ToPartition(i%2))
		require.NoError(t, err)
	}
	var empty struct{ Groups []groupJSON }
	a.json("GET", "/api/v1/groups", "", 200, &empty)
	require.Empty(t, empty.Groups)

	h := newHandled()
	g := offsetMember(t, e, "workers", "jobs", "m1", h)
	var gj groupJSON
	require.Eventually(t, func() bool {
		a.json("GET", "/api/v1/groups/workers", "", 200, &gj)
		return gj.Lag == 0 && len(gj.Partitions) == 2 && gj.Partitions[0].Committed == 3 && gj.Partitions[1].Committed == 3
	}, 10*time.Second, 20*time.Millisecond, "the member commits everything")
	require.Equal(t, "jobs", gj.Topic)
	require.Equal(t, "offset", gj.Mode)
	require.Len(t, gj.Members, 1)
	require.Equal(t, g.MemberID(), gj.Members[0].ID)
	require.Equal(t, []int32{0, 1}, gj.Members[0].Partitions)
	require.Equal(t, g.MemberID(), gj.Partitions[1].Owner)
	require.Equal(t, int64(3), gj.Partitions[1].End)

	var list struct{ Groups []groupJSON }
	a.json("GET", "/api/v1/groups", "", 200, &list)
	require.Len(t, list.Groups, 1)
	require.Equal(t, "workers", list.Groups[0].Name)

	a.fails("POST", "/api/v1/groups/workers/reset", `{"to":"earliest"}`, 409, "group_has_members", "stop them")
	require.NoError(t, g.Close())
	require.Eventually(t, func() bool {
		a.json("GET", "/api/v1/groups/workers", "", 200, &gj)
		return len(gj.Members) == 0
	}, 10*time.Second, 20*time.Millisecond)

	a.json("POST", "/api/v1/groups/workers/reset", `{"to":"earliest"}`, 200, &gj)
	require.Equal(t, int64(0), gj.Partitions[0].Committed)
	require.Equal(t, int64(6), gj.Lag)
	a.json("POST", "/api/v1/groups/workers/reset", `{"to":"offset","offset":2}`, 200, &gj)
	require.Equal(t, int64(2), gj.Partitions[1].Committed)
	require.Equal(t, int64(2), gj.Lag)
	a.json("POST", "/api/v1/groups/workers/reset", `{"to":"latest"}`, 200, &gj)
	require.Equal(t, int64(0), gj.Lag)
	a.json("POST", "/api/v1/groups/workers/reset", `{"to":"time","time":"2000-01-01T00:00:00Z"}`, 200, &gj)
	require.Equal(t, int64(6), gj.Lag, "every message is newer than 2000")

	a.fails("POST", "/api/v1/groups/workers/reset", `{"to":"offset","offset":99}`, 400, "offset_out_of_range", "outside")
	a.fails("POST", "/api/v1/groups/workers/reset", `{"to":"offset"}`, 400, "invalid_argument", `needs a non-negative "offset"`)
	a.fails("POST", "/api/v1/groups/workers/reset", `{"to":"time","time":"yesterday"}`, 400, "invalid_argument", "RFC 3339")
	a.fails("POST", "/api/v1/groups/workers/reset", `{"to":"middle"}`, 400, "invalid_argument", `"middle"`)
	a.fails("POST", "/api/v1/groups/workers/reset", `{"to":"earliest","force":true}`, 400, "invalid_json", `unknown field "force"`)
	a.fails("POST", "/api/v1/groups/workers/reset", `{`, 400, "invalid_json", "")
	a.fails("POST", "/api/v1/groups/nosuch/reset", `{"to":"earliest"}`, 404, "unknown_group", "nosuch")
	a.fails("GET", "/api/v1/groups/nosuch", "", 404, "unknown_group", "nosuch")
}

func TestAdminConnectionsAndShards(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.Shards = 2 })
	a := newAdmin(t, e)
	var conns struct{ Connections []httpapi.Connection }
	a.json("GET", "/api/v1/connections", "", 200, &conns)
	require.Empty(t, conns.Connections)

	a.json("POST", "/api/v1/topics", `{"name":"feed","partitions":3}`, 201, nil)
	c := dial(t, e, client.WithName("admin-test"))
	ctx := testCtx(t)
	_, err := c.Subscribe(ctx, "feed", func(*client.Delivery) {})
	require.NoError(t, err)
	_, err = c.Publish(ctx, "feed", client.Message{Value: []byte("x")})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		a.json("GET", "/api/v1/connections", "", 200, &conns)
		return len(conns.Connections) == 1 && conns.Connections[0].Subscriptions == 1
	}, 10*time.Second, 20*time.Millisecond)
	cj := conns.Connections[0]
	require.Equal(t, "admin-test", cj.Client)
	require.Contains(t, cj.Remote, "127.0.0.1:")
	require.Zero(t, cj.Groups)
	require.False(t, cj.ConnectedAt.IsZero())

	var shards struct{ Shards []shardJSON }
	a.json("GET", "/api/v1/shards", "", 200, &shards)
	require.Len(t, shards.Shards, 2)
	parts, msgs := 0, uint64(0)
	for i, s := range shards.Shards {
		require.Equal(t, i, s.ID)
		parts += s.Partitions
		msgs += s.Messages
	}
	require.Equal(t, 3, parts)
	require.Equal(t, uint64(1), msgs)
}

// snakeKey is the admin API's one key style.
var snakeKey = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// checkKeyStyle walks a JSON answer and fails on any object key that is
// not snake_case. The keys of objects that dataKeyed names by their path
// are data (topic names), not field names, and are not checked.
func checkKeyStyle(t *testing.T, where string, v any, path string, dataKeyed func(path string) bool) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if !dataKeyed(path) {
				require.Regexp(t, snakeKey, k, "%s: key %q at %s is not snake_case", where, k, path)
			}
			checkKeyStyle(t, where, child, path+"."+k, dataKeyed)
		}
	case []any:
		for _, child := range v {
			checkKeyStyle(t, where, child, path+"[]", dataKeyed)
		}
	}
}

// TestAdminJSONKeyStyle: every key of every admin API answer, errors
// included, is snake_case (docs/ADMIN.md, "Conventions").
func TestAdminJSONKeyStyle(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.HistoryInterval = 10 * time.Millisecond })
	a := newAdmin(t, e)
	ctx := testCtx(t)
	a.json("POST", "/api/v1/topics", `{"name":"orders","partitions":2}`, 201, nil)
	c := dial(t, e, client.WithName("key-style"))
	publishN(t, c, "orders", 0, 10)
	g := joinGroup(t, e, client.GroupConfig{Group: "billing", Topic: "orders", Start: client.Earliest,
		AutoCommitInterval: -1, Handler: func(*client.GroupMessage) error { return nil }})
	waitAssigned(t, []int{2}, g)
	require.NoError(t, g.Commit(ctx))
	require.Eventually(t, func() bool {
		var h HistoryReport
		a.json("GET", "/api/v1/metrics/history", "", 200, &h)
		return len(h.Samples) >= 2
	}, 10*time.Second, 10*time.Millisecond)

	historyTopics := func(path string) bool { return path == ".samples[].topics" }
	none := func(string) bool { return false }
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/v1/topics", ""},
		{"GET", "/api/v1/topics/orders", ""},
		{"GET", "/api/v1/topics/orders/partitions", ""},
		{"PATCH", "/api/v1/topics/orders", `{"retention_bytes":1048576,"max_deliveries":3}`},
		{"POST", "/api/v1/topics", `{"name":"more","config":{"dead_letter_topic":"dead","max_subscribers":5}}`},
		{"GET", "/api/v1/groups", ""},
		{"GET", "/api/v1/groups/billing", ""},
		{"GET", "/api/v1/connections", ""},
		{"GET", "/api/v1/shards", ""},
		{"GET", "/api/v1/health", ""},
		{"GET", "/api/v1/metrics/history", ""},
		{"GET", "/api/v1/topics/nosuch", ""},
		{"POST", "/api/v1/groups/billing/reset", `{"to":"earliest"}`}, // refused: it has a member
	} {
		where := r.method + " " + r.path
		_, body, h := a.do(r.method, r.path, r.body)
		require.Equal(t, "application/json", h.Get("Content-Type"), where)
		var v any
		require.NoError(t, json.Unmarshal(body, &v), "%s: %s", where, body)
		dataKeyed := none
		if r.path == "/api/v1/metrics/history" {
			dataKeyed = historyTopics
		}
		checkKeyStyle(t, where, v, "", dataKeyed)
	}
}

// TestAdminConfigKeys: the admin API's config keys are the protocol's
// (package topic) in snake case, in what it answers and what it takes.
func TestAdminConfigKeys(t *testing.T) {
	var protocol, want []string
	for _, kv := range (TopicConfig{}).KVs() {
		protocol = append(protocol, kv.Key)
		want = append(want, strings.ReplaceAll(kv.Key, "-", "_"))
	}
	require.Equal(t, want, httpapi.ConfigKeys())

	b, err := json.Marshal(httpapi.TopicConfig{})
	require.NoError(t, err)
	var answered map[string]any
	require.NoError(t, json.Unmarshal(b, &answered))
	require.ElementsMatch(t, want, keys(answered), "a GET's config keys are the keys a PATCH takes")

	for i, k := range want {
		kvs, err := httpapi.ConfigKVs(map[string]json.RawMessage{k: json.RawMessage(`"v"`)})
		require.NoError(t, err, k)
		require.Equal(t, []wire.KV{{Key: protocol[i], Value: "v"}}, kvs)
	}
}

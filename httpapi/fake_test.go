package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// fakeBroker is a Broker of plain data that tests set up and read: no
// shards, sockets or clocks, so handlers are tested alone. Changes are
// applied without validation (engine's tests cover that through the
// wiring) and recorded.
type fakeBroker struct {
	mu       sync.Mutex
	starting string
	draining bool
	deps     []Dependency
	notReady []string
	uptime   time.Duration
	topics   map[string]Topic
	groups   map[string]wire.GroupInfo
	conns    []Connection
	shards   []Shard
	metrics  string
	events   []telemetry.Event
	// topicErr, when set, is the answer of every topic change.
	topicErr error
	// created and changed record the key/values of the changes asked.
	created map[string][]wire.KV
	changed map[string][]wire.KV
	resets  map[string]wire.Start
	// onTopics runs at each Topics call, under the lock.
	onTopics func(b *fakeBroker)
	// cluster, when set, is the node's view of its cluster.
	cluster *Cluster
}

func newFake() *fakeBroker {
	return &fakeBroker{topics: map[string]Topic{}, groups: map[string]wire.GroupInfo{},
		created: map[string][]wire.KV{}, changed: map[string][]wire.KV{}, resets: map[string]wire.Start{}}
}

func (b *fakeBroker) locked(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f()
}

func (b *fakeBroker) Starting() (s string) { b.locked(func() { s = b.starting }); return }
func (b *fakeBroker) Draining() (d bool)   { b.locked(func() { d = b.draining }); return }

func (b *fakeBroker) NotReady(bool) (r []string) {
	b.locked(func() {
		r = slices.Clone(b.notReady)
		if b.draining {
			r = []string{"shutting down"}
		}
	})
	return
}

func (b *fakeBroker) Uptime() (d time.Duration) { b.locked(func() { d = b.uptime }); return }
func (b *fakeBroker) Dependencies() (d []Dependency) {
	b.locked(func() { d = append(d, b.deps...) })
	return
}
func (b *fakeBroker) ConnectionCount() (n int64) {
	b.locked(func() { n = int64(len(b.conns)) })
	return
}

func (b *fakeBroker) Topics() []Topic {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.onTopics != nil {
		b.onTopics(b)
	}
	out := make([]Topic, 0, len(b.topics))
	for _, t := range b.topics {
		out = append(out, cloneTopic(t))
	}
	slices.SortFunc(out, func(a, b Topic) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (b *fakeBroker) Topic(name string) (Topic, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[name]
	return cloneTopic(t), ok
}

func cloneTopic(t Topic) Topic {
	t.Parts = slices.Clone(t.Parts)
	return t
}

func unknownTopic(name string) error {
	return wire.Errorf(wire.CodeUnknownTopic, "no topic named "+strconv.Quote(name))
}

func (b *fakeBroker) CreateTopic(_ Origin, name string, partitions uint32, kvs []wire.KV) (Topic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.topicErr != nil {
		return Topic{}, b.topicErr
	}
	if _, ok := b.topics[name]; ok {
		return Topic{}, wire.Errorf(wire.CodeTopicExists, "topic "+strconv.Quote(name)+" exists")
	}
	b.created[name] = kvs
	t := fakeTopic(name, max(int(partitions), 1))
	b.topics[name] = t
	return cloneTopic(t), nil
}

func (b *fakeBroker) UpdateTopic(_ Origin, name string, kvs []wire.KV) (Topic, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.topicErr != nil {
		return Topic{}, b.topicErr
	}
	t, ok := b.topics[name]
	if !ok {
		return Topic{}, unknownTopic(name)
	}
	b.changed[name] = kvs
	return cloneTopic(t), nil
}

func (b *fakeBroker) DeleteTopic(_ Origin, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.topics[name]; !ok {
		return unknownTopic(name)
	}
	delete(b.topics, name)
	return nil
}

func (b *fakeBroker) Groups() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := make([]string, 0, len(b.groups))
	for name := range b.groups {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func (b *fakeBroker) DescribeGroup(name string) (wire.GroupInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	gi, ok := b.groups[name]
	if !ok {
		return wire.GroupInfo{}, wire.Errorf(wire.CodeUnknownGroup, "no group named "+strconv.Quote(name))
	}
	return gi, nil
}

func (b *fakeBroker) ResetGroup(_ context.Context, _ Origin, name string, st wire.Start) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.groups[name]; !ok {
		return wire.Errorf(wire.CodeUnknownGroup, "no group named "+strconv.Quote(name))
	}
	b.resets[name] = st
	return nil
}

func (b *fakeBroker) Connections() (c []Connection) {
	b.locked(func() { c = slices.Clone(b.conns) })
	return
}
func (b *fakeBroker) Shards() (s []Shard) { b.locked(func() { s = slices.Clone(b.shards) }); return }

func (b *fakeBroker) Cluster() (c Cluster, ok bool) {
	b.locked(func() {
		if b.cluster != nil {
			c, ok = *b.cluster, true
		}
	})
	return
}
func (b *fakeBroker) TransferLeader(Origin, string, int, uint64) error { return nil }
func (b *fakeBroker) Rebalance(context.Context, Origin) error          { return nil }
func (b *fakeBroker) AddNode(_ context.Context, _ Origin, id uint64, addr string) error {
	if id == 0 || addr == "" {
		return wire.Errorf(wire.CodeInvalidArgument, "id and cluster_addr are required")
	}
	return nil
}
func (b *fakeBroker) RemoveNode(_ context.Context, _ Origin, id uint64) error {
	if id == 0 {
		return wire.Errorf(wire.CodeInvalidArgument, "id is required")
	}
	return nil
}

func (b *fakeBroker) WriteMetrics(w io.Writer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, _ = io.WriteString(w, b.metrics)
}

func (b *fakeBroker) Emit(ev telemetry.Event) { b.locked(func() { b.events = append(b.events, ev) }) }

// eventsOf returns the events of kind emitted so far.
func (b *fakeBroker) eventsOf(kind telemetry.EventKind) []telemetry.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []telemetry.Event
	for _, ev := range b.events {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// fakeTopic is an online topic of n empty partitions on shard 0.
func fakeTopic(name string, n int) Topic {
	t := Topic{Name: name, Config: TopicConfig{Storage: "disk", Fsync: "always", Retention: "0s"},
		Parts: make([]Partition, n)}
	for i := range t.Parts {
		t.Parts[i] = Partition{ID: int32(i), State: wire.PartitionOnline}
	}
	return t
}

// addTopic adds t to the broker.
func (b *fakeBroker) addTopic(t Topic) { b.locked(func() { b.topics[t.Name] = t }) }

// testToken is the admin token of the servers tests start.
const testToken = "test-token"

// serve starts a Server of b on 127.0.0.1 port 0 for the test's
// lifetime, with testToken unless mutate changes it.
func serve(t *testing.T, b Broker, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", AdminToken: testToken, FS: vfs.Default(), DataDir: t.TempDir(),
		MaxPartitions: 16}
	if mutate != nil {
		mutate(&cfg)
	}
	s := New(cfg, b)
	require.NoError(t, s.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

// handler is the handler of a Server of b that serves nothing itself:
// requests go straight to it, with no socket.
func handler(t *testing.T, b Broker) http.Handler {
	t.Helper()
	s := New(Config{AdminToken: testToken, FS: vfs.Default(), DataDir: t.TempDir(), MaxPartitions: 16}, b)
	return s.routes(testToken)
}

// call sends a request to h with token (none when "") and returns the
// status, body and headers of the answer.
func call(h http.Handler, token, method, path, body string) (int, string, http.Header) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.String(), w.Header()
}

// okJSON calls h with the test token, checks the status and decodes the
// answer into v.
func okJSON(t *testing.T, h http.Handler, method, path, body string, status int, v any) {
	t.Helper()
	code, got, _ := call(h, testToken, method, path, body)
	require.Equal(t, status, code, "%s %s: %s", method, path, got)
	if v != nil {
		require.NoError(t, json.Unmarshal([]byte(got), v), got)
	}
}

// fails calls h with token and checks the JSON error: status, code, and
// a fragment of the message.
func fails(t *testing.T, h http.Handler, token, method, path, body string, status int, code, msgPart string) {
	t.Helper()
	got, b, hdr := call(h, token, method, path, body)
	require.Equal(t, status, got, "%s %s: %s", method, path, b)
	require.Equal(t, "application/json", hdr.Get("Content-Type"))
	var e apiError
	require.NoError(t, json.Unmarshal([]byte(b), &e), b)
	require.Equal(t, code, e.Error.Code, b)
	require.Contains(t, e.Error.Message, msgPart)
}

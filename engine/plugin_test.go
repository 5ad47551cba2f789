package engine

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// recorder is a plugin that keeps every event.
type recorder struct {
	name string
	mu   sync.Mutex
	evs  []Event
}

func (r *recorder) Name() string { return r.name }

func (r *recorder) Handle(ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, ev)
	return nil
}

// events returns the events that match keep, in order.
func (r *recorder) events(keep func(Event) bool) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, ev := range r.evs {
		if keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor waits until some event matches keep and returns the first.
func (r *recorder) waitFor(t *testing.T, what string, keep func(Event) bool) Event {
	t.Helper()
	var got []Event
	require.Eventually(t, func() bool { got = r.events(keep); return len(got) > 0 }, 30*time.Second, 5*time.Millisecond, what)
	return got[0]
}

func aboutTopic(name string) func(Event) bool {
	return func(ev Event) bool { return ev.Topic == name }
}

// panicker panics on every event.
type panicker struct{}

func (panicker) Name() string       { return "panicker" }
func (panicker) Handle(Event) error { panic("plugin bug") }

// blocker blocks on every event until release is closed.
type blocker struct{ release chan struct{} }

func (b blocker) Name() string { return "blocker" }
func (b blocker) Handle(Event) error {
	<-b.release
	return nil
}

// pubSub publishes n messages to a new topic and checks a subscriber gets
// them all, in order.
func pubSub(t *testing.T, e *Engine, topic string, n int) {
	t.Helper()
	ctx := testCtx(t)
	pub, sub := dial(t, e), dial(t, e)
	require.NoError(t, pub.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}))
	got := make(chan client.Delivery, n)
	_, err := sub.Subscribe(ctx, topic, func(d *client.Delivery) { got <- d.Clone() })
	require.NoError(t, err)
	for i := range n {
		ack, err := pub.Publish(ctx, topic, client.Message{Value: fmt.Appendf(nil, "m%d", i)})
		require.NoError(t, err)
		require.Equal(t, int64(i), ack.Offset)
	}
	for i := range n {
		select {
		case d := <-got:
			require.Equal(t, fmt.Sprintf("m%d", i), string(d.Value))
		case <-ctx.Done():
			t.Fatalf("delivery %d never came", i)
		}
	}
}

// TestPanickingPluginDoesNotDisturbDelivery: a plugin that panics on every
// event is counted and keeps getting events; publish and subscribe work,
// and another plugin still sees everything.
func TestPanickingPluginDoesNotDisturbDelivery(t *testing.T) {
	rec := &recorder{name: "rec"}
	e := startBrokerWith(t, nil, WithPlugin(panicker{}), WithPlugin(rec))
	pubSub(t, e, "orders", 50)
	rec.waitFor(t, "the other plugin saw the last batch", func(ev Event) bool {
		return ev.Kind == EventBatchPublished && ev.Offset == 49
	})
	require.Eventually(t, func() bool {
		st := e.PluginStats()
		return st[0].Queued == 0 && st[0].Panics == st[0].Delivered
	}, 5*time.Second, 5*time.Millisecond)
	st := e.PluginStats()
	require.Equal(t, "panicker", st[0].Name)
	require.GreaterOrEqual(t, st[0].Panics, uint64(50), "one per batch at least, and it kept receiving")
	require.Zero(t, st[0].Dropped)
	require.Equal(t, "rec", st[1].Name)
	require.Zero(t, st[1].Panics)
}

// TestBlockingPluginNeverStallsPublishing: a plugin that never returns
// fills its queue; later events are dropped for it and counted, and
// publishing goes on.
func TestBlockingPluginNeverStallsPublishing(t *testing.T) {
	b := blocker{release: make(chan struct{})}
	e := startBrokerWith(t, nil, WithPlugin(b), WithPluginQueue(4))
	t.Cleanup(func() { close(b.release) }) // runs before the broker's shutdown
	pubSub(t, e, "orders", 100)
	st := e.PluginStats()[0]
	require.Equal(t, 4, st.Queued)
	require.Equal(t, uint64(1), st.Delivered, "stuck in its first event")
	require.GreaterOrEqual(t, st.Dropped, uint64(100-5), "every batch past the queue was dropped")
}

// TestPluginSeesEventsInOrder: a plugin gets a topic's life in order:
// created, a subscriber joined, each batch with its partition, offsets and
// size, the subscriber left, deleted.
func TestPluginSeesEventsInOrder(t *testing.T) {
	rec := &recorder{name: "rec"}
	e := startBrokerWith(t, nil, WithPlugin(rec))
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 2}))
	sub, err := c.Subscribe(ctx, "orders", func(*client.Delivery) {})
	require.NoError(t, err)
	for i := range 3 {
		ack, err := c.Publish(ctx, "orders", client.Message{Value: []byte("hello")}, client.ToPartition(1))
		require.NoError(t, err)
		require.Equal(t, int64(i), ack.Offset)
	}
	require.NoError(t, sub.Unsubscribe(ctx))
	require.NoError(t, c.DeleteTopic(ctx, "orders"))
	rec.waitFor(t, "topic deleted", func(ev Event) bool { return ev.Kind == EventTopicDeleted })

	evs := rec.events(aboutTopic("orders"))
	var kinds []EventKind
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
	}
	require.Equal(t, []EventKind{EventTopicCreated, EventSubscriberJoined, EventBatchPublished, EventBatchPublished,
		EventBatchPublished, EventSubscriberLeft, EventTopicDeleted}, kinds)
	for i, ev := range evs[2:5] {
		require.Equal(t, 1, ev.Partition)
		require.Equal(t, int64(i), ev.Offset)
		require.Equal(t, 1, ev.Count)
		require.Greater(t, ev.Bytes, int64(len("hello")))
	}
	for _, ev := range evs {
		require.False(t, ev.Time.IsZero())
		require.NoError(t, ev.Err)
		if ev.Kind != EventBatchPublished {
			require.Equal(t, "client", ev.Actor)
			require.Equal(t, "topic/orders", ev.Target)
			require.Equal(t, -1, ev.Partition)
			require.NotEmpty(t, ev.Remote)
		}
	}
	acc := rec.waitFor(t, "connection accepted", func(ev Event) bool { return ev.Kind == EventConnAccepted })
	require.Equal(t, evs[0].Remote, acc.Remote, "the same connection")
}

// TestPluginSeesDeadLetters: a message-mode group that gives up on a
// message emits one dead-letter event for it, besides its group changes.
func TestPluginSeesDeadLetters(t *testing.T) {
	rec := &recorder{name: "rec"}
	e := startBrokerWith(t, nil, WithPlugin(rec))
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "jobs", client.TopicConfig{Partitions: 1}))
	for _, v := range []string{"a", "poison", "b"} {
		_, err := c.Publish(ctx, "jobs", client.Message{Value: []byte(v)})
		require.NoError(t, err)
	}
	joinGroup(t, e, client.GroupConfig{Group: "workers", Topic: "jobs", Mode: client.AckMessage,
		Start: client.Earliest, MaxDeliveries: 2, Handler: func(m *client.GroupMessage) error {
			if string(m.Value) == "poison" {
				return errors.New("cannot parse")
			}
			return nil
		}})
	ev := rec.waitFor(t, "dead-lettered", func(ev Event) bool { return ev.Kind == EventMessageDeadLetter })
	require.Equal(t, "jobs", ev.Topic)
	require.Equal(t, 0, ev.Partition)
	require.Equal(t, int64(1), ev.Offset)
	require.Equal(t, 1, ev.Count)
	require.Equal(t, "workers", ev.Group)
	require.Equal(t, "topic/jobs.dlq", ev.Target)
	require.NoError(t, ev.Err)

	join := rec.waitFor(t, "member joined", func(ev Event) bool { return ev.Kind == EventGroupChanged && ev.Action == "join" })
	require.Equal(t, "workers", join.Group)
	require.Equal(t, 1, join.Count)
	require.True(t, strings.HasPrefix(join.Target, "group/workers/member/"), join.Target)
	rec.waitFor(t, "rebalanced", func(ev Event) bool { return ev.Kind == EventGroupChanged && ev.Action == "rebalance" })
	rec.waitFor(t, "the DLQ's batch", func(ev Event) bool { return ev.Kind == EventBatchPublished && ev.Topic == "jobs.dlq" })
	// Nothing outstanding: nothing can be dead-lettered from now on, and the
	// dead-letter topic holds every letter; their events are handled once an
	// event emitted after them is.
	waitAllAcked(t, c, "workers")
	require.Equal(t, 1, total(topicEnds(t, c, "jobs.dlq")), "one dead letter")
	pluginBarrier(t, e, rec)
	require.Len(t, rec.events(func(ev Event) bool { return ev.Kind == EventMessageDeadLetter }), 1)
}

// pluginBarrier opens a connection and waits until rec has handled its
// connection event: a plugin's queue is first in, first out, so every
// event emitted before it has been handled too.
func pluginBarrier(t *testing.T, e *Engine, rec *recorder) {
	t.Helper()
	accepted := func(ev Event) bool { return ev.Kind == EventConnAccepted }
	n := len(rec.events(accepted))
	dial(t, e)
	require.Eventually(t, func() bool { return len(rec.events(accepted)) > n }, 30*time.Second, time.Millisecond,
		"the barrier's connection event")
}

// TestNoBatchHookWithoutBatchPlugins: the shards get no batch hook unless
// some plugin accepts batch events; the audit log does not.
func TestNoBatchHookWithoutBatchPlugins(t *testing.T) {
	e := startBrokerWith(t, nil)
	require.Nil(t, e.batchHook())
	e = startBrokerWith(t, func(c *Config) { c.AuditLog = filepath.Join(t.TempDir(), "audit.log") })
	require.Nil(t, e.batchHook())
	e = startBrokerWith(t, nil, WithPlugin(&recorder{name: "rec"}))
	require.NotNil(t, e.batchHook())
}

// TestBatchEventAllocatesNothing: with plugins, handing a batch event to
// their queues allocates nothing, whether it is queued or dropped.
func TestBatchEventAllocatesNothing(t *testing.T) {
	b := blocker{release: make(chan struct{})}
	e := startBrokerWith(t, nil, WithPlugin(b), WithPluginQueue(8))
	t.Cleanup(func() { close(b.release) })
	p := shard.NewPartition("orders", 3, e.shards[0].Shard(), storage.NewMemLog(1<<20), shard.SyncPolicy{Mode: shard.SyncNever})
	hook := e.batchHook()
	allocs := testing.AllocsPerRun(100, func() { hook(p, 10, 5, 500) })
	require.Zero(t, allocs)
	require.Positive(t, e.PluginStats()[0].Dropped)
}

// auditRecords reads the audit log's lines, each of which must be a JSON
// object with every required field.
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %q", sc.Text())
		for _, k := range []string{"time", "kind", "actor", "remote", "action", "target", "outcome"} {
			require.Contains(t, m, k, "line %q", sc.Text())
		}
		ts, err := time.Parse(time.RFC3339Nano, m["time"].(string))
		require.NoError(t, err)
		require.Len(t, m["time"], len("2006-01-02T15:04:05.000Z"), "UTC with milliseconds")
		require.WithinDuration(t, time.Now(), ts, time.Minute)
		out = append(out, m)
	}
	require.NoError(t, sc.Err())
	return out
}

// findAudit returns the first record with the kind and target.
func findAudit(recs []map[string]any, kind, target string) map[string]any {
	for _, r := range recs {
		if r["kind"] == kind && r["target"] == target {
			return r
		}
	}
	return nil
}

// TestAuditLogRecordsChanges: the audit log gets one JSON line for each
// topic create (and a refused one), update and delete, for an admin
// action and for the connection, and none for traffic.
func TestAuditLogRecordsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	e := startBrokerWith(t, func(c *Config) { c.AuditLog = path })
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "audited", client.TopicConfig{Partitions: 2}))
	require.Error(t, c.CreateTopic(ctx, "audited", client.TopicConfig{Partitions: 2}))
	_, err := c.UpdateTopic(ctx, "audited", map[string]string{"retention": "2h"})
	require.NoError(t, err)
	_, err = c.Publish(ctx, "audited", client.Message{Value: []byte("not audited")})
	require.NoError(t, err)
	require.NoError(t, c.DeleteTopic(ctx, "audited"))
	e.emit(Event{Kind: EventAdminAction, Partition: -1, Actor: "admin-token", Remote: "10.0.0.9:4242",
		Action: "PATCH /api/v1/topics/orders", Target: "topic/orders"})

	var recs []map[string]any
	require.Eventually(t, func() bool {
		recs = auditRecords(t, path)
		return findAudit(recs, string(EventAdminAction), "topic/orders") != nil
	}, 10*time.Second, 10*time.Millisecond, "flushed once the queue ran empty")

	var kinds []string
	for _, r := range recs {
		if r["target"] == "topic/audited" {
			kinds = append(kinds, r["kind"].(string))
			require.Equal(t, "client", r["actor"])
			require.Equal(t, "audited", r["topic"])
			require.NotContains(t, r, "partition")
		}
	}
	require.Equal(t, []string{"topic.created", "topic.created", "topic.updated", "topic.deleted"}, kinds)
	created := findAudit(recs, "topic.created", "topic/audited")
	require.Equal(t, "ok", created["outcome"])
	require.Equal(t, "create", created["action"])
	refused := recs[len(recs)-1]
	for _, r := range recs {
		if r["kind"] == "topic.created" && r["outcome"] != "ok" {
			refused = r
		}
	}
	require.Contains(t, refused["outcome"], "exists")

	admin := findAudit(recs, string(EventAdminAction), "topic/orders")
	require.Equal(t, "admin-token", admin["actor"])
	require.Equal(t, "10.0.0.9:4242", admin["remote"])
	require.Equal(t, "PATCH /api/v1/topics/orders", admin["action"])
	require.Equal(t, "ok", admin["outcome"])

	var accepted map[string]any
	for _, r := range recs {
		require.NotEqual(t, string(EventBatchPublished), r["kind"])
		if r["kind"] == string(EventConnAccepted) {
			accepted = r
		}
	}
	require.NotNil(t, accepted)
	require.Equal(t, created["remote"], accepted["remote"])
	require.Equal(t, "connect", accepted["action"])

	shutdown(t, e)
	recs = auditRecords(t, path)
	require.NotNil(t, findAudit(recs, string(EventConnClosed), ""), "closes written before the file was closed")
}

// TestAuditLogDirectoryMustExist: a path in a missing directory is refused
// by Validate, naming the setting.
func TestAuditLogDirectoryMustExist(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AuditLog = filepath.Join(t.TempDir(), "missing", "audit.log")
	err := cfg.Validate()
	require.ErrorContains(t, err, "AuditLog")
	require.ErrorContains(t, err, "does not exist")
	cfg.AuditLog = AuditStderr
	require.NoError(t, cfg.Validate())
}

// TestRefusedConnectionsAndAuth: a connection whose first frame is not a
// Hello is refused; a Hello asking for authentication the broker does not
// offer is an auth event and a refusal; and both appear in the audit log.
func TestRefusedConnectionsAndAuth(t *testing.T) {
	rec := &recorder{name: "rec"}
	path := filepath.Join(t.TempDir(), "audit.log")
	e := startBrokerWith(t, func(c *Config) { c.AuditLog = path }, WithPlugin(rec))

	r := dialRaw(t, e)
	r.sendFrame(wire.TypePing, 1, nil)
	require.Equal(t, wire.TypeError, r.next().Type)
	ev := rec.waitFor(t, "refused", func(ev Event) bool { return ev.Kind == EventConnRefused })
	require.Equal(t, r.c.LocalAddr().String(), ev.Remote)
	require.Equal(t, wire.CodeHandshakeRequired, wire.CodeOf(ev.Err))

	r = dialRaw(t, e)
	r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: 1, MaxVersion: 1, AuthMechanism: "PLAIN"}).Append(nil))
	require.Equal(t, wire.TypeError, r.next().Type)
	ev = rec.waitFor(t, "auth failed", func(ev Event) bool { return ev.Kind == EventAuth })
	require.Equal(t, r.c.LocalAddr().String(), ev.Remote)
	require.Equal(t, wire.CodeAuthFailed, wire.CodeOf(ev.Err))

	require.Eventually(t, func() bool {
		recs := auditRecords(t, path)
		n := 0
		for _, m := range recs {
			if m["kind"] == string(EventConnRefused) || m["kind"] == string(EventAuth) {
				require.NotEqual(t, "ok", m["outcome"])
				n++
			}
		}
		return n == 3
	}, 10*time.Second, 10*time.Millisecond, "two refusals and an auth failure")
}

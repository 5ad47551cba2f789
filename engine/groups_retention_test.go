package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
)

// lockedBuffer is a log destination safe for the broker's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// committedMember joins group in offset mode and waits until it has
// committed the one message of topic; closing it leaves the group.
func committedMember(t *testing.T, e *Engine, c *client.Client, group, topic string) *client.GroupConsumer {
	t.Helper()
	g := joinGroup(t, e, client.GroupConfig{Group: group, Topic: topic, Mode: client.AckOffset,
		Start: client.Earliest, AutoCommitInterval: 10 * time.Millisecond,
		Handler: func(*client.GroupMessage) error { return nil }})
	require.Eventually(t, func() bool {
		info, err := c.DescribeGroup(testCtx(t), group)
		return err == nil && info.Partitions[0].Committed == 1
	}, 15*time.Second, 5*time.Millisecond, "group %s did not commit", group)
	return g
}

// leaveGroup closes g and waits until its group has no members and its
// feeds have stopped, so that a retention pass may remove it.
func leaveGroup(t *testing.T, e *Engine, g *client.GroupConsumer, group string) {
	t.Helper()
	require.NoError(t, g.Close())
	require.Eventually(t, func() bool { return e.groups.Idle(group) }, 15*time.Second, 5*time.Millisecond)
}

func groupNames(t *testing.T, c *client.Client) []string {
	t.Helper()
	list, err := c.ListGroups(testCtx(t))
	require.NoError(t, err)
	var names []string
	for _, g := range list {
		names = append(names, g.Group)
	}
	return names
}

// activity reads the stored last activity of each group.
func activity(e *Engine, groups ...string) map[string]time.Time {
	out := map[string]time.Time{}
	for _, g := range groups {
		if at, ok := e.groups.Store().ActiveAt(g); ok {
			out[g] = at
		}
	}
	return out
}

// TestGroupRetentionRemovesIdleGroups: a pass removes exactly the groups
// that have had no member and no commit for the retention, with an event
// and a log line; a commit or a member leaving restarts the count, a group
// with members never expires, and the times survive a restart.
func TestGroupRetentionRemovesIdleGroups(t *testing.T) {
	dir := t.TempDir()
	logs := &lockedBuffer{}
	rec := &recorder{name: "rec"}
	cfg := func(c *Config) {
		c.DataDir, c.GroupRetention = dir, 7*24*time.Hour
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	e := startBrokerWith(t, cfg, WithPlugin(rec))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	clock := newTestClock(t0)
	e.groups.Store().SetClock(clock.now)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "t", client.TopicConfig{Partitions: 1}))
	publishN(t, c, "t", 0, 1)

	committedMember(t, e, c, "busy", "t") // stays a member
	leaveGroup(t, e, committedMember(t, e, c, "idle", "t"), "idle")
	leaveGroup(t, e, committedMember(t, e, c, "back", "t"), "back")
	clock.set(t0.Add(3 * day))
	leaveGroup(t, e, committedMember(t, e, c, "recent", "t"), "recent")
	clock.set(t0.Add(5 * day))
	// A member comes back and leaves without committing (mode none).
	back := joinGroup(t, e, client.GroupConfig{Group: "back", Topic: "t", Mode: client.AckNone,
		Handler: func(*client.GroupMessage) error { return nil }})
	waitAssigned(t, []int{1}, back)
	leaveGroup(t, e, back, "back")

	e.groups.ExpireIdle(t0.Add(7*day + time.Hour))
	require.Equal(t, []string{"back", "busy", "recent"}, groupNames(t, c))
	_, err := c.DescribeGroup(ctx, "idle")
	require.ErrorIs(t, err, client.ErrUnknownGroup)
	code, body, _ := newAdmin(t, e).do("GET", "/api/v1/groups/idle", "")
	require.Equal(t, http.StatusNotFound, code, "%s", body)
	ev := rec.waitFor(t, "the removal's event", func(ev Event) bool {
		return ev.Kind == EventGroupChanged && ev.Action == "retention"
	})
	require.Equal(t, Event{Kind: EventGroupChanged, Topic: "t", Partition: -1, Group: "idle", Actor: "broker",
		Action: "retention", Target: "group/idle"}, Event{Kind: ev.Kind, Topic: ev.Topic, Partition: ev.Partition,
		Group: ev.Group, Actor: ev.Actor, Action: ev.Action, Target: ev.Target, Err: ev.Err})
	require.Regexp(t, `level=INFO msg="consumer group removed[^"]*" group=idle topic=t idle=169h0m0s`, logs.String())
	require.Len(t, rec.events(func(ev Event) bool { return ev.Action == "retention" }), 1, "only idle was removed")

	before := activity(e, "idle", "back", "busy", "recent")
	require.Equal(t, map[string]time.Time{
		"back":   t0.Add(5 * day),
		"busy":   t0.Add(7*day + time.Hour), // refreshed by the pass: it has a member
		"recent": t0.Add(3 * day),
	}, utc(before))

	// After a restart the groups and their times are back, idle is not.
	shutdown(t, e)
	e = startBroker(t, cfg)
	c = dial(t, e)
	require.Equal(t, []string{"back", "busy", "recent"}, groupNames(t, c))
	require.Equal(t, before, utc(activity(e, "idle", "back", "busy", "recent")))
	e.groups.ExpireIdle(t0.Add(10*day + time.Hour))
	require.Equal(t, []string{"back", "busy"}, groupNames(t, c))

	// A group with a member never expires.
	e.groups.Store().SetClock(clock.now)
	g := joinGroup(t, e, client.GroupConfig{Group: "back", Topic: "t", Mode: client.AckOffset,
		Handler: func(*client.GroupMessage) error { return nil }})
	waitAssigned(t, []int{1}, g)
	e.groups.ExpireIdle(t0.Add(1000 * day))
	require.Equal(t, []string{"back"}, groupNames(t, c))
}

func utc(m map[string]time.Time) map[string]time.Time {
	for k, v := range m {
		m[k] = v.UTC()
	}
	return m
}

// TestGroupRetentionZeroKeepsGroups: with retention 0 a group without
// members is never removed.
func TestGroupRetentionZeroKeepsGroups(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.GroupRetention = 0 })
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(testCtx(t), "t", client.TopicConfig{Partitions: 1}))
	publishN(t, c, "t", 0, 1)
	leaveGroup(t, e, committedMember(t, e, c, "g", "t"), "g")
	e.groups.ExpireIdle(time.Now().Add(100 * 365 * 24 * time.Hour))
	require.Equal(t, []string{"g"}, groupNames(t, c))
}

// TestGroupsConvertedFromGroupsJSON: a broker started on the data of the
// previous version, whose groups.json held every group's offsets, has the
// groups with their offsets, and groups.json is gone.
func TestGroupsConvertedFromGroupsJSON(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *Config) { c.DataDir = dir }
	e := startBroker(t, cfg)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(testCtx(t), "orders", client.TopicConfig{Partitions: 2}))
	publishN(t, c, "orders", 0, 100)
	shutdown(t, e)
	require.NoError(t, os.WriteFile(filepath.Join(dir, offsets.LegacyFile),
		legacyJSON(t, map[string]map[int32]int64{"billing": {0: 10, 1: 20}}, "orders"), 0o644))

	e = startBroker(t, cfg)
	c = dial(t, e)
	info, err := c.DescribeGroup(testCtx(t), "billing")
	require.NoError(t, err)
	require.Equal(t, int64(10), info.Partitions[0].Committed)
	require.Equal(t, int64(20), info.Partitions[1].Committed)
	require.NoFileExists(t, filepath.Join(dir, offsets.LegacyFile))
	require.FileExists(t, filepath.Join(dir, offsets.LogFile))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(ctx))
}

// testClock is a settable clock for the offset store's activity stamps.
type testClock struct{ ms atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.set(t)
	return c
}

func (c *testClock) now() time.Time  { return time.UnixMilli(c.ms.Load()) }
func (c *testClock) set(t time.Time) { c.ms.Store(t.UnixMilli()) }

// legacyJSON is a groups.json as the version before the offsets log wrote
// it.
func legacyJSON(t *testing.T, groups map[string]map[int32]int64, topic string) []byte {
	f := map[string]any{"version": 1, "groups": map[string]any{}}
	for name, offs := range groups {
		f["groups"].(map[string]any)[name] = map[string]any{"topic": topic, "offsets": offs}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	require.NoError(t, err)
	return b
}

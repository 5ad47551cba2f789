package engine

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestRuntimeRetentionChange: a topic created with no bound keeps
// everything until its retention is changed at run time; then the oldest
// segments go without a restart, and the new config survives one.
func TestRuntimeRetentionChange(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.SegmentBytes, c.MaxFrameBytes, c.MaxMessageBytes = 1<<20, 1<<20, 64<<10
		c.RetentionInterval = 20 * time.Millisecond
	})
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "ret", client.TopicConfig{Retention: client.KeepForever}))
	value := make([]byte, 10_000)
	for range 800 { // ~8 MB: eight segments
		require.NoError(t, c.PublishAsync(ctx, "ret", client.Message{Value: value}))
	}
	require.NoError(t, c.Flush(ctx))
	sh := e.shards[e.topics.get([]byte("ret")).Parts[0].Shard.ID()]
	from := sh.RetentionPasses()
	require.Eventually(t, func() bool { return sh.RetentionPasses() >= from+5 }, 30*time.Second, 5*time.Millisecond,
		"five retention passes")
	info, err := c.DescribeTopic(ctx, "ret")
	require.NoError(t, err)
	require.Equal(t, int64(0), info.Partitions[0].StartOffset, "no bound: nothing deleted")

	info, err = c.UpdateTopic(ctx, "ret", map[string]string{"retention-bytes": "2097152", "max-deliveries": "3",
		"dead-letter-topic": "ret-dead", "max-subscribers": "7"})
	require.NoError(t, err)
	require.Equal(t, "2097152", info.Config["retention-bytes"])
	require.Equal(t, "ret-dead", info.Config["dead-letter-topic"])
	require.Eventually(t, func() bool {
		info, err := c.DescribeTopic(ctx, "ret")
		return err == nil && info.Partitions[0].Bytes <= 3<<20 && info.Partitions[0].StartOffset > 0
	}, 5*time.Second, 20*time.Millisecond, "the new bound applies without a restart")

	e2 := restart(t, e, nil)
	after, err := dial(t, e2).DescribeTopic(ctx, "ret")
	require.NoError(t, err)
	require.Equal(t, info.Config, after.Config, "the change survives a restart")
	require.Equal(t, "7", after.Config["max-subscribers"])
	require.Equal(t, "3", after.Config["max-deliveries"])
}

// TestRuntimeFsyncChange: a topic switched to fsync=always acks only
// durable messages from then on, and back.
func TestRuntimeFsyncChange(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "f", client.TopicConfig{Fsync: "never"}))
	for _, policy := range []string{"always", "interval=5ms", "never", "always"} {
		info, err := c.UpdateTopic(ctx, "f", map[string]string{"fsync": policy})
		require.NoError(t, err)
		require.Equal(t, policy, info.Config["fsync"])
		for range 20 {
			_, err := c.Publish(ctx, "f", client.Message{Value: []byte("x")})
			require.NoError(t, err)
		}
	}
	got, err := c.DescribeTopic(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, int64(80), got.Partitions[0].EndOffset)
	require.Equal(t, int64(80), int64(len(fetchAll(t, c, "f", 0))))
}

func TestRuntimeConfigErrors(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "t", client.TopicConfig{}))
	require.NoError(t, c.CreateTopic(ctx, "mem", client.TopicConfig{Storage: "memory"}))
	for _, tc := range []struct {
		topic   string
		changes map[string]string
		want    string
	}{
		{"nope", map[string]string{"retention": "1h"}, "no topic named"},
		{"t", map[string]string{"storage": "memory"}, "storage cannot be changed"},
		{"t", map[string]string{"colour": "blue"}, `unknown topic config key "colour"`},
		{"t", map[string]string{"retention": "soon"}, "retention"},
		{"t", map[string]string{"fsync": "sometimes"}, "fsync"},
		{"t", map[string]string{"max-deliveries": "-1"}, "max-deliveries"},
		{"t", map[string]string{"dead-letter-topic": "t"}, "own dead-letter topic"},
		{"t", map[string]string{"dead-letter-topic": "bad name!"}, "dead-letter-topic"},
		{"mem", map[string]string{"fsync": "always"}, "memory topic"},
	} {
		_, err := c.UpdateTopic(ctx, tc.topic, tc.changes)
		require.ErrorContains(t, err, tc.want, "%s %v", tc.topic, tc.changes)
	}
	// Nothing changed, and storage given unchanged is accepted.
	info, err := c.UpdateTopic(ctx, "t", map[string]string{"storage": "disk"})
	require.NoError(t, err)
	require.Equal(t, "", info.Config["dead-letter-topic"])
	require.NotEqual(t, "0s", info.Config["retention"])
}

// TestTopicDeadLetterSettings: a message-mode group that sets no
// max-deliveries or dead-letter topic takes the topic's, as they are when
// the message runs out of attempts.
func TestTopicDeadLetterSettings(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "jobs", client.TopicConfig{MaxDeliveries: 9}))
	_, err := c.UpdateTopic(ctx, "jobs", map[string]string{"max-deliveries": "2", "dead-letter-topic": "graveyard"})
	require.NoError(t, err)
	_, err = c.Publish(ctx, "jobs", client.Message{Value: []byte("poison")})
	require.NoError(t, err)

	seen := newAttempts()
	joinGroup(t, e, client.GroupConfig{Group: "w", Topic: "jobs", Mode: client.AckMessage, Start: client.Earliest,
		Handler: func(m *client.GroupMessage) error {
			seen.add(string(m.Value), m.Attempt)
			return errors.New("no")
		}})
	require.Eventually(t, func() bool {
		info, err := c.DescribeTopic(ctx, "graveyard")
		return err == nil && info.Partitions[0].EndOffset == 1
	}, 10*time.Second, 5*time.Millisecond, "the topic's dead-letter topic got the message")
	_, n := seen.get("poison")
	require.Equal(t, []uint32{1, 2}, n, "the topic's max-deliveries, as changed at run time")
	_, err = c.DescribeTopic(ctx, "jobs.dlq")
	require.ErrorIs(t, err, client.ErrUnknownTopic, "the default dead-letter topic is not used")
}

// TestConfigChangesUnderLoad: config changes through the admin API while
// producers publish and a subscriber follows: every publish is acked and
// delivered once, in order, and the race detector finds nothing.
func TestConfigChangesUnderLoad(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.RetentionInterval = 5 * time.Millisecond })
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "hot", client.TopicConfig{Partitions: 2, Fsync: "never"}))
	got := make(chan string, 10_000)
	_, err := dial(t, e).Subscribe(ctx, "hot", func(d *client.Delivery) { got <- string(d.Value) },
		client.StartAt(client.Earliest))
	require.NoError(t, err)

	stop := make(chan struct{})
	changed := make(chan int)
	go func() {
		url := "http://" + e.HTTPAddr() + "/api/v1/topics/hot"
		policies := []string{"always", "interval=2ms", "never"}
		n := 0
		for ; ; n++ {
			select {
			case <-stop:
				changed <- n
				return
			default:
			}
			body := fmt.Sprintf(`{"fsync":%q,"retention":"%dh","max_subscribers":%d,"max_deliveries":%d}`,
				policies[n%3], 1+n%5, 100+n, 1+n%9)
			// Not the admin helper: it calls FailNow, which this
			// goroutine must not.
			req, _ := http.NewRequest("PATCH", url, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.http.Token())
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("PATCH %s: %v", body, err)
				continue
			}
			_ = res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Errorf("PATCH %s: %s", body, res.Status)
			}
		}
	}()
	const msgs = 3000
	for i := range msgs {
		_, err := c.Publish(ctx, "hot", client.Message{Key: []byte{byte(i % 2)}, Value: fmt.Appendf(nil, "%d", i)})
		require.NoError(t, err)
	}
	close(stop)
	require.Positive(t, <-changed, "some changes ran during the publishes")
	seen := map[string]bool{}
	for len(seen) < msgs {
		select {
		case v := <-got:
			require.False(t, seen[v], "delivered twice: %s", v)
			seen[v] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("delivered %d of %d", len(seen), msgs)
		}
	}
}

// TestZeroMeansTheSameInCreateAndUpdate: each setting's 0 (or empty) has
// one meaning whether a topic is created with it or updated to it, and
// DescribeTopic reports what a setting left to a default stands for.
func TestZeroMeansTheSameInCreateAndUpdate(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.DefaultRetentionBytes = 1 << 30 })
	ctx := testCtx(t)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(ctx, "zero", client.TopicConfig{Retention: client.KeepForever,
		RetentionBytes: client.UnboundedBytes}))
	created, err := c.DescribeTopic(ctx, "zero")
	require.NoError(t, err)
	require.NoError(t, c.CreateTopic(ctx, "set", client.TopicConfig{Retention: time.Hour, RetentionBytes: 1 << 20,
		MaxSubscribers: 3, MaxDeliveries: 9, DeadLetterTopic: "elsewhere"}))
	updated, err := c.UpdateTopic(ctx, "set", map[string]string{"retention": "0", "retention-bytes": "0",
		"max-subscribers": "0", "max-deliveries": "0", "dead-letter-topic": ""})
	require.NoError(t, err)
	want := map[string]string{"retention": "0s", "retention-bytes": "0",
		"max-subscribers": fmt.Sprint(e.cfg.MaxSubscribers), "max-deliveries": "0", "dead-letter-topic": ""}
	for k, v := range want {
		require.Equal(t, v, created.Config[k], "create: %s", k)
		require.Equal(t, v, updated.Config[k], "update: %s", k)
	}
	require.Equal(t, map[string]string{"max-deliveries": "5", "dead-letter-topic": "zero.dlq"}, created.Defaults)
	require.Equal(t, map[string]string{"max-deliveries": "5", "dead-letter-topic": "set.dlq"}, updated.Defaults)
	require.Equal(t, "5", updated.Effective("max-deliveries"))
	require.Equal(t, "0s", updated.Effective("retention"))

	// A topic that sets its own has no defaults to report.
	own, err := c.UpdateTopic(ctx, "set", map[string]string{"max-deliveries": "2", "dead-letter-topic": "graves"})
	require.NoError(t, err)
	require.Empty(t, own.Defaults)
	require.Equal(t, "2", own.Effective("max-deliveries"))
}

// TestDescribeWithoutDefaultsFlag: a client that does not ask for the
// defaults (any client older than wire.FlagDefaults) gets the seven
// entries and nothing else.
func TestDescribeWithoutDefaultsFlag(t *testing.T) {
	e := startBroker(t, nil)
	require.NoError(t, dial(t, e).CreateTopic(testCtx(t), "plain", client.TopicConfig{}))
	r := dialRaw(t, e)
	r.hello()
	for _, flags := range []uint8{0, wire.FlagDefaults} {
		body := wire.AppendName(nil, "plain")
		r.send(append(wire.AppendHeader(nil, wire.TypeDescribeTopic, flags, 2, len(body)), body...))
		f := r.next()
		require.Equal(t, wire.TypeTopicInfo, f.Type)
		info, err := wire.DecodeTopicInfo(f.Body, 1)
		require.NoError(t, err)
		keys := make([]string, len(info.Config))
		for i, kv := range info.Config {
			keys[i] = kv.Key
		}
		want := []string{"max-subscribers", "storage", "fsync", "retention", "retention-bytes",
			"dead-letter-topic", "max-deliveries", "encryption"}
		if flags != 0 {
			want = append(want, "default.dead-letter-topic", "default.max-deliveries")
		}
		require.Equal(t, want, keys)
	}
}

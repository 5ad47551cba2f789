package engine

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
	"github.com/ratatoskr-mq/ratatoskr/internal/redistest"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// startRedisBroker runs a broker whose storage=redis topics live in srv,
// with its data in dir (a restart reuses it).
func startRedisBroker(t *testing.T, srv *redistest.Server, dir string, mutate func(*Config)) *Engine {
	t.Helper()
	return startBroker(t, func(c *Config) {
		c.DataDir = dir
		c.RedisURL = srv.URL("", "")
		c.RedisTimeout = 2 * time.Second
		if mutate != nil {
			mutate(c)
		}
	})
}

// TestRedisTopicKeepsOffsetsAcrossRestarts: a storage=redis topic takes
// publishes on several partitions, describes its Redis and that server's
// persistence, and after a broker restart holds every message at the same
// offset and goes on from there.
func TestRedisTopicKeepsOffsetsAcrossRestarts(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Fsync: "always"})
	dir := t.TempDir()
	e := startRedisBroker(t, srv, dir, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 3, Storage: "redis"}))
	info, err := c.DescribeTopic(ctx, "orders")
	require.NoError(t, err)
	require.Equal(t, "redis", info.Config["storage"])
	require.Equal(t, srv.Addr, info.Config["redis"])
	require.Equal(t, "aof appendfsync=always", info.Config["redis-persistence"])
	require.Equal(t, "always", info.Config["fsync"], "acked once Redis answered")

	want := map[int][]string{}
	for i := range 300 {
		key := "k" + strconv.Itoa(i%7)
		v := "v" + strconv.Itoa(i)
		ack, err := c.Publish(ctx, "orders", client.Message{Key: []byte(key), Value: []byte(v)})
		require.NoError(t, err)
		require.Equal(t, int64(len(want[int(ack.Partition)])), ack.Offset)
		want[int(ack.Partition)] = append(want[int(ack.Partition)], v)
	}
	check := func(c *client.Client) {
		for p := range 3 {
			got := fetchAll(t, c, "orders", p)
			require.Len(t, got, len(want[p]))
			for i, d := range got {
				require.Equal(t, int64(i), d.Offset)
				require.Equal(t, want[p][i], string(d.Value))
			}
		}
	}
	check(c)
	n, err := srv.Do("XLEN", "ratatoskr:{orders/0}:log")
	require.NoError(t, err)
	require.NotEqual(t, ":0", n, "the batches are in Redis")

	shutdown(t, e)
	e = startRedisBroker(t, srv, dir, nil)
	c = dial(t, e)
	check(c)
	ack, err := c.Publish(ctx, "orders", client.Message{Value: []byte("after")}, client.ToPartition(1))
	require.NoError(t, err)
	require.Equal(t, int64(len(want[1])), ack.Offset, "offsets go on after the restart")

	// Deleting the topic deletes its keys; a topic of the name starts anew.
	require.NoError(t, c.DeleteTopic(ctx, "orders"))
	require.Eventually(t, func() bool {
		n, err := srv.Do("EXISTS", "ratatoskr:{orders/1}:log", "ratatoskr:{orders/1}:meta")
		return err == nil && n == ":0"
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 3, Storage: "redis"}))
	ack, err = c.Publish(ctx, "orders", client.Message{Value: []byte("new")}, client.ToPartition(1))
	require.NoError(t, err)
	require.Equal(t, int64(0), ack.Offset)
}

// TestRedisTopicRefusals: a broker without Redis refuses storage=redis
// topics, and keys of another kind under a topic's name fail its create
// with the reason.
func TestRedisTopicRefusals(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	err := c.CreateTopic(testCtx(t), "r", client.TopicConfig{Storage: "redis"})
	require.ErrorIs(t, err, wire.ErrInvalidArgument)
	require.Contains(t, err.Error(), "--redis-url")

	srv := redistest.Start(t, redistest.Options{})
	e = startRedisBroker(t, srv, t.TempDir(), nil)
	c = dial(t, e)
	_, err = srv.Do("SET", "ratatoskr:{taken/0}:log", "not a stream")
	require.NoError(t, err)
	err = c.CreateTopic(testCtx(t), "taken", client.TopicConfig{Storage: "redis"})
	require.Error(t, err)
	require.Contains(t, err.Error(), "holds a string")
	err = c.CreateTopic(testCtx(t), "enc", client.TopicConfig{Storage: "redis", Encryption: "on"})
	require.ErrorIs(t, err, wire.ErrInvalidArgument)
}

// readyz returns /readyz's status and body.
func readyz(t *testing.T, e *Engine) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + e.HTTPAddr() + "/readyz")
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// publishUntil publishes v to partition 0 of topic until it is acked.
func publishUntil(t *testing.T, c *client.Client, topic, v string) client.Ack {
	t.Helper()
	var ack client.Ack
	require.Eventually(t, func() bool {
		var err error
		ack, err = c.Publish(testCtx(t), topic, client.Message{Value: []byte(v)}, client.ToPartition(0))
		if err != nil {
			require.True(t, client.IsRetryable(err), "a Redis fault is retryable: %v", err)
		}
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	return ack
}

// TestRedisDownFailsOnlyItsTopics: Redis killed (SIGKILL, with AOF
// always) fails the publishes to its topics with a retryable error while
// disk topics go on, /readyz says which dependency is down, and once Redis
// is back the partition takes publishes again with every acknowledged
// message in place, in order, once.
func TestRedisDownFailsOnlyItsTopics(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Fsync: "always"})
	e := startRedisBroker(t, srv, t.TempDir(), func(c *Config) { c.RedisTimeout = 500 * time.Millisecond })
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "r", client.TopicConfig{Partitions: 1, Storage: "redis"}))
	require.NoError(t, c.CreateTopic(ctx, "d", client.TopicConfig{Partitions: 1, Storage: "disk"}))
	var acked []string
	for i := range 50 {
		v := "before-" + strconv.Itoa(i)
		_, err := c.Publish(ctx, "r", client.Message{Value: []byte(v)})
		require.NoError(t, err)
		acked = append(acked, v)
	}
	code, body := readyz(t, e)
	require.Equal(t, 200, code)
	require.Equal(t, "ready\n", body)

	srv.Kill()
	_, err := c.Publish(ctx, "r", client.Message{Value: []byte("while-down")})
	require.Error(t, err)
	require.True(t, client.IsRetryable(err), "retryable: %v", err)
	require.True(t, errors.Is(err, client.ErrStorageUnavailable) || errors.Is(err, client.ErrOutcomeUnknown), "%v", err)
	for i := range 20 {
		_, err := c.Publish(ctx, "d", client.Message{Value: []byte("disk-" + strconv.Itoa(i))})
		require.NoError(t, err, "a disk topic is unaffected")
	}
	require.Eventually(t, func() bool {
		code, body := readyz(t, e)
		return code == 200 && strings.HasPrefix(body, "degraded: dependency redis at "+srv.Addr+" is down")
	}, 10*time.Second, 10*time.Millisecond)
	h := e.Health()
	require.Equal(t, HealthDegraded, h.Status)
	require.Len(t, h.Dependencies, 1)
	require.False(t, h.Dependencies[0].Up)
	_, err = c.Publish(ctx, "r", client.Message{Value: []byte("while-down-2")})
	require.ErrorIs(t, err, client.ErrStorageUnavailable, "fails at once while Redis is known down")

	srv.Restart()
	publishUntil(t, c, "r", "after")
	acked = append(acked, "after")
	require.Eventually(t, func() bool { code, body := readyz(t, e); return code == 200 && body == "ready\n" },
		10*time.Second, 10*time.Millisecond)

	got := fetchAll(t, c, "r", 0)
	var vals []string
	for i, d := range got {
		require.Equal(t, int64(i), d.Offset, "no hole")
		vals = append(vals, string(d.Value))
	}
	// Every acknowledged message is there, once and in order; a publish
	// that failed with OUTCOME_UNKNOWN may or may not be.
	require.Equal(t, acked, filter(vals, acked))
}

// filter keeps the values of vals that are in keep.
func filter(vals, keep []string) []string {
	in := map[string]bool{}
	for _, k := range keep {
		in[k] = true
	}
	var out []string
	for _, v := range vals {
		if in[v] {
			out = append(out, v)
		}
	}
	return out
}

// TestRedisHungFailsInDoubtAndRecovers: a Redis that stops answering
// (SIGSTOP) fails publishes within the broker's --redis-timeout with
// OUTCOME_UNKNOWN, or STORAGE_UNAVAILABLE once it is known down; when it
// answers again the partition goes on, and the write in doubt was removed
// before the next one: no offset is held twice and none is missing.
func TestRedisHungFailsInDoubtAndRecovers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Fsync: "always"})
	e := startRedisBroker(t, srv, t.TempDir(), func(c *Config) { c.RedisTimeout = 300 * time.Millisecond })
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "r", client.TopicConfig{Partitions: 1, Storage: "redis"}))
	acked := []string{}
	for i := range 10 {
		v := "a" + strconv.Itoa(i)
		_, err := c.Publish(ctx, "r", client.Message{Value: []byte(v)})
		require.NoError(t, err)
		acked = append(acked, v)
	}
	srv.Pause()
	_, err := c.Publish(ctx, "r", client.Message{Value: []byte("hung")})
	require.Error(t, err)
	require.True(t, client.IsRetryable(err), "%v", err)
	srv.Resume()
	publishUntil(t, c, "r", "resumed")
	acked = append(acked, "resumed")
	got := fetchAll(t, c, "r", 0)
	var vals []string
	for i, d := range got {
		require.Equal(t, int64(i), d.Offset)
		vals = append(vals, string(d.Value))
	}
	require.Equal(t, acked, filter(vals, acked))
	require.LessOrEqual(t, len(vals), len(acked)+1, "at most the write in doubt more: %v", vals)
}

// TestRedisOutOfMemoryIsRetryable: a Redis at its maxmemory refuses the
// write; the publish fails with STORAGE_UNAVAILABLE saying so, nothing of
// it is stored, and publishes succeed again once Redis has room.
func TestRedisOutOfMemoryIsRetryable(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	e := startRedisBroker(t, srv, t.TempDir(), nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "r", client.TopicConfig{Partitions: 1, Storage: "redis"}))
	_, err := c.Publish(ctx, "r", client.Message{Value: []byte("first")})
	require.NoError(t, err)
	_, err = srv.Do("CONFIG", "SET", "maxmemory", "1")
	require.NoError(t, err)
	_, err = c.Publish(ctx, "r", client.Message{Value: []byte("refused")})
	require.ErrorIs(t, err, client.ErrStorageUnavailable)
	require.Contains(t, err.Error(), "out of memory")
	require.True(t, client.IsRetryable(err))
	// Reads and the health of the server are unaffected.
	require.Len(t, fetchAll(t, c, "r", 0), 1)
	_, err = srv.Do("CONFIG", "SET", "maxmemory", "0")
	require.NoError(t, err)
	ack := publishUntil(t, c, "r", "second")
	require.Equal(t, int64(1), ack.Offset, "the refused publish took no offset")
}

// TestRedisInvalidBatchIsReportedAndSkipped: an entry that is not a valid
// batch (written by something else) is reported as a corrupt range in
// describe and the health report, reads skip it, and the partition goes on.
func TestRedisInvalidBatchIsReportedAndSkipped(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	dir := t.TempDir()
	e := startRedisBroker(t, srv, dir, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "r", client.TopicConfig{Partitions: 1, Storage: "redis"}))
	for i := range 3 {
		_, err := c.Publish(ctx, "r", client.Message{Value: []byte(fmt.Sprint(i))})
		require.NoError(t, err)
	}
	shutdown(t, e)
	// A foreign entry at offset 3, and the log's end moved past it.
	_, err := srv.Do("XADD", "ratatoskr:{r/0}:log", "3-*", "b", "garbage", "t", "0000000000000000000", "z", "0000000000000000000")
	require.NoError(t, err)
	_, err = srv.Do("HSET", "ratatoskr:{r/0}:meta", "end", "4")
	require.NoError(t, err)

	e = startRedisBroker(t, srv, dir, nil)
	c = dial(t, e)
	ack, err := c.Publish(ctx, "r", client.Message{Value: []byte("4")})
	require.NoError(t, err)
	require.Equal(t, int64(4), ack.Offset)
	var vals []string
	for _, d := range fetchAll(t, c, "r", 0) {
		vals = append(vals, string(d.Value))
	}
	require.Equal(t, []string{"0", "1", "2", "4"}, vals)
	info, err := c.DescribeTopic(ctx, "r")
	require.NoError(t, err)
	require.Equal(t, 1, info.Partitions[0].Corrupt)
	h := e.Health()
	require.Equal(t, HealthDegraded, h.Status)
	require.Contains(t, strings.Join(h.Reasons, "\n"), "partition r/0: 1 corrupt range(s) found, the first [3, 4)")
}

// TestRedisOverTLSWithPassword: the broker reaches a TLS-only Redis that
// wants a client certificate and an ACL user, from its settings
// (--redis-url rediss://user@host, --redis-password, --redis-tls-*); a
// wrong password fails Start with the reason.
func TestRedisOverTLSWithPassword(t *testing.T) {
	bundle, err := devcert.Generate()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, bundle.Write(dir, false))
	srv := redistest.Start(t, redistest.Options{TLSDir: dir, User: "broker", Password: "pw-0123456789"})
	tlsSettings := func(c *Config) {
		c.RedisURL = "rediss://broker@" + srv.Addr
		c.RedisPassword = "pw-0123456789"
		c.RedisTLSCAFile = filepath.Join(dir, devcert.Files.CA)
		c.RedisTLSCertFile = filepath.Join(dir, devcert.Files.Client)
		c.RedisTLSKeyFile = filepath.Join(dir, devcert.Files.ClientKey)
	}
	e := startBroker(t, tlsSettings)
	c := dial(t, e)
	require.NoError(t, c.CreateTopic(testCtx(t), "sec", client.TopicConfig{Storage: "redis"}))
	_, err = c.Publish(testCtx(t), "sec", client.Message{Value: []byte("x")})
	require.NoError(t, err)
	require.Equal(t, []string{"x"}, values(fetchAll(t, c, "sec", 0)))

	err = startErr(t, t.TempDir(), func(c *Config) {
		tlsSettings(c)
		c.RedisPassword = "wrong"
	})
	require.Error(t, err)
	require.Contains(t, err.Error(), "refused the credentials")
}

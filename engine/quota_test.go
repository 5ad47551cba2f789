package engine

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/server"
)

// quotaTenant starts a secure broker with tenant acme under quotas q and
// a user of it that may do anything within it.
func quotaTenant(t *testing.T, q auth.Quotas) *Engine {
	t.Helper()
	e, _ := startSecure(t, nil)
	sec := e.Security()
	require.NoError(t, sec.AddTenant("acme", q))
	require.NoError(t, sec.AddUser("app", "acme", auth.RoleTenantAdmin, "app-password"))
	return e
}

func acmeDial(t *testing.T, e *Engine) (*client.Client, error) {
	t.Helper()
	return tryDial(t, e, client.WithCredentials("app", "app-password"))
}

func TestConnectionQuota(t *testing.T) {
	e := quotaTenant(t, auth.Quotas{Connections: 2})
	a, err := acmeDial(t, e)
	require.NoError(t, err)
	_, err = acmeDial(t, e)
	require.NoError(t, err)
	_, err = acmeDial(t, e)
	require.ErrorIs(t, err, client.ErrQuotaExceeded)
	require.ErrorContains(t, err, "quota of 2 connections")
	require.NoError(t, a.Close())
	require.Eventually(t, func() bool { _, err := acmeDial(t, e); return err == nil }, 30*time.Second, 10*time.Millisecond,
		"a closed connection frees its place")
}

func TestTopicAndPartitionQuotas(t *testing.T) {
	e := quotaTenant(t, auth.Quotas{Topics: 2, Partitions: 3})
	c, err := acmeDial(t, e)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "t1", client.TopicConfig{Partitions: 1}))
	require.NoError(t, c.CreateTopic(ctx, "t2", client.TopicConfig{Partitions: 2}))
	err = c.CreateTopic(ctx, "t3", client.TopicConfig{Partitions: 1})
	require.ErrorIs(t, err, client.ErrQuotaExceeded)
	require.ErrorContains(t, err, "quota of 2 topics")
	_, err = c.Publish(ctx, "auto", client.Message{Value: []byte("x")})
	require.ErrorIs(t, err, client.ErrQuotaExceeded, "auto-creation counts too")
	require.NoError(t, c.DeleteTopic(ctx, "t1"))
	err = c.CreateTopic(ctx, "t3", client.TopicConfig{Partitions: 2})
	require.ErrorIs(t, err, client.ErrQuotaExceeded)
	require.ErrorContains(t, err, "quota of 3")
	require.NoError(t, c.CreateTopic(ctx, "t3", client.TopicConfig{Partitions: 1}))
	// The broker's own namespace is not the tenant's: the admin is not held.
	admin := dial(t, e, client.WithToken(e.http.Token()))
	for _, n := range []string{"a", "b", "c"} {
		require.NoError(t, admin.CreateTopic(ctx, n, client.TopicConfig{Partitions: 2}))
	}
	// Raising the quota applies at once.
	require.NoError(t, e.Security().SetQuotas("acme", auth.Quotas{Topics: 3, Partitions: 4}))
	require.NoError(t, c.CreateTopic(ctx, "t4", client.TopicConfig{Partitions: 1}))
}

// A tenant at its storage quota gets QUOTA_EXCEEDED and stores nothing of
// the refused batch; everything acknowledged before is in the log.
func TestStorageQuotaRefusesWholeBatches(t *testing.T) {
	e := quotaTenant(t, auth.Quotas{StorageBytes: 64 << 10})
	c, err := acmeDial(t, e)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "logs", client.TopicConfig{}))
	var acked int64
	value := make([]byte, 1000)
	for {
		_, err := c.Publish(ctx, "logs", client.Message{Value: value})
		if err != nil {
			require.ErrorIs(t, err, client.ErrQuotaExceeded)
			require.ErrorContains(t, err, "storage quota")
			break
		}
		acked++
		require.Less(t, acked, int64(1000), "the quota never refused")
	}
	require.Positive(t, acked)
	f, err := c.Fetch(ctx, "logs", 0, client.Earliest, client.MaxBytes(8<<20))
	require.NoError(t, err)
	require.Equal(t, acked, f.End, "exactly the acknowledged messages are stored")
	_, err = c.Ping(ctx)
	require.NoError(t, err, "the connection stays")

	require.NoError(t, e.Security().SetQuotas("acme", auth.Quotas{StorageBytes: 1 << 20}))
	_, err = c.Publish(ctx, "logs", client.Message{Value: value})
	require.NoError(t, err, "a raised quota applies to the next publish")
}

// Over its publish rate a tenant is slowed, not refused: every message is
// acknowledged, and the broker held the connection back.
func TestPublishRateQuotaThrottles(t *testing.T) {
	e := quotaTenant(t, auth.Quotas{PublishBytesPerSec: 256 << 10})
	c, err := acmeDial(t, e)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "fast", client.TopicConfig{Storage: "memory"}))
	value := make([]byte, 1024)
	const n = 768 // 768 KiB: a second's burst, then two seconds' worth at the rate
	start := time.Now()
	for range n {
		require.NoError(t, c.PublishAsync(ctx, "fast", client.Message{Value: value}))
	}
	require.NoError(t, c.Flush(ctx), "throttled, never dropped")
	elapsed := time.Since(start)
	f, err := c.Fetch(ctx, "fast", 0, client.Earliest, client.MaxBytes(8<<20))
	require.NoError(t, err)
	require.EqualValues(t, n, f.End)
	var throttled time.Duration
	for _, tc := range e.srv.Tenants() {
		if tc.Tenant == "acme" {
			throttled = tc.Throttled
		}
	}
	require.Positive(t, throttled, "the broker held the connection back")
	// A lower bound only: a slow machine takes longer, never shorter.
	require.GreaterOrEqual(t, elapsed, time.Second, "768 KiB at 256 KiB/s after a 256 KiB burst takes 2 s")
}

// Over its delivery rate a tenant's subscriber is slowed: it gets every
// message, later, and the broker counts the time it held deliveries back.
func TestDeliveryRateQuotaThrottles(t *testing.T) {
	e := quotaTenant(t, auth.Quotas{DeliveryBytesPerSec: 256 << 10})
	pub, err := acmeDial(t, e)
	require.NoError(t, err)
	sub, err := acmeDial(t, e)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, pub.CreateTopic(ctx, "feed", client.TopicConfig{Storage: "memory"}))
	got := make(chan struct{}, 1024)
	_, err = sub.Subscribe(ctx, "feed", func(*client.Delivery) { got <- struct{}{} })
	require.NoError(t, err)

	// Six waves of 128 KiB, each sent once the last has arrived: two fit
	// the second's burst, and each after waits for the one before it to
	// be paid for at 256 KiB/s.
	value := make([]byte, 1024)
	start := time.Now()
	for range 6 {
		for range 128 {
			require.NoError(t, pub.PublishAsync(ctx, "feed", client.Message{Value: value}))
		}
		require.NoError(t, pub.Flush(ctx))
		for range 128 {
			recv(t, ctx, got)
		}
	}
	elapsed := time.Since(start)
	acme := func() (c server.TenantCounters) {
		for _, tc := range e.srv.Tenants() {
			if tc.Tenant == "acme" {
				c = tc
			}
		}
		return c
	}
	// The broker counts a flush once its write returns, which may be after
	// the client has read it.
	require.Eventually(t, func() bool { return acme().DeliveredBytes >= 768*1024 }, 30*time.Second, time.Millisecond,
		"every delivered byte counted")
	require.Positive(t, acme().DeliveryThrottled, "the broker held deliveries back")
	// A lower bound only: a slow machine takes longer, never shorter.
	require.GreaterOrEqual(t, elapsed, time.Second, "waves 4 to 6 wait for the ones before them")
}

// The messages-per-second quota throttles like the bytes one: small
// messages over the rate are all acknowledged, later.
func TestPublishMessageRateQuotaThrottles(t *testing.T) {
	e := quotaTenant(t, auth.Quotas{PublishMsgsPerSec: 500})
	c, err := acmeDial(t, e)
	require.NoError(t, err)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "small", client.TopicConfig{Storage: "memory"}))
	// Six waves of 250, each flushed: a batch over the rate is taken whole
	// and the connection held after it, so the waiting shows from wave 3.
	const n = 1500 // a second's burst of 500, then two seconds' worth
	start := time.Now()
	for range 6 {
		for range n / 6 {
			require.NoError(t, c.PublishAsync(ctx, "small", client.Message{Value: []byte("m")}))
		}
		require.NoError(t, c.Flush(ctx))
	}
	elapsed := time.Since(start)
	f, err := c.Fetch(ctx, "small", 0, client.Earliest, client.MaxBytes(8<<20))
	require.NoError(t, err)
	require.EqualValues(t, n, f.End)
	require.GreaterOrEqual(t, elapsed, time.Second, "1500 messages at 500/s after a burst of 500 take 2 s")
}

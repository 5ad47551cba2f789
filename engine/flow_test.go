package engine

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// stuckSubscriber subscribes a raw connection to every partition of topic
// and then reads nothing, like a client that stopped reading its socket.
func stuckSubscriber(t *testing.T, e *Engine, topic string) *rawConn {
	t.Helper()
	r := dialRaw(t, e)
	r.hello()
	r.sendFrame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: topic, Partition: wire.PartitionAny}).Append(nil))
	require.Equal(t, wire.TypeSubscribeOK, r.next().Type)
	return r
}

// outboxOf finds the broker's outbox of a raw connection.
func outboxOf(t *testing.T, e *Engine, r *rawConn) *outbox.Outbox {
	t.Helper()
	out := e.srv.Outbox(r.c.LocalAddr().String())
	require.NotNil(t, out, "no session for %s", r.c.LocalAddr())
	return out
}

// publishMiB publishes n MiB in 1 KiB messages and waits for every ack.
func publishMiB(ctx context.Context, t *testing.T, pub *client.Client, topic string, n int) int {
	t.Helper()
	value := make([]byte, 1<<10)
	for range n << 10 {
		require.NoError(t, pub.PublishAsync(ctx, topic, client.Message{Value: value}))
	}
	require.NoError(t, pub.Flush(ctx))
	return n << 10
}

// readRecords reads Deliver frames from r until it has n records, checking
// that their offsets run on from first without a gap.
func readRecords(t *testing.T, r *rawConn, first int64, n int) {
	t.Helper()
	next := first
	for next < first+int64(n) {
		f, err := r.read(10 * time.Second)
		require.NoError(t, err, "after offset %d of %d", next-first, n)
		if f.Type != wire.TypeDeliver {
			continue
		}
		v, err := wire.DecodeBatchView(f.Body)
		require.NoError(t, err)
		require.Equal(t, next, v.Batch.BaseOffset(), "no gap, no duplicate")
		next += int64(v.Batch.Count())
	}
}

// TestStuckSubscriberDoesNotHoldProducer: a subscriber that stops reading
// stops holding acks once it is stuck, however long the ack delay, so its
// producer and the other subscribers go on at full speed; it keeps what
// was published meanwhile (within its limit) and gets all of it, in order,
// when it reads again.
func TestStuckSubscriberDoesNotHoldProducer(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.MaxAckDelay, c.SlowConsumerTimeout = time.Hour, time.Hour
		c.MaxPendingBytes = 16 << 20 // soft limit: 4 MiB
	})
	ctx := testCtx(t)
	pub := dial(t, e, client.WithMaxPendingBytes(1<<20))
	require.NoError(t, pub.CreateTopic(ctx, "stuck", client.TopicConfig{Storage: "memory"}))
	stuck := stuckSubscriber(t, e, "stuck")
	var healthyGot atomic.Int64
	healthy := dial(t, e)
	_, err := healthy.Subscribe(ctx, "stuck", func(*client.Delivery) { healthyGot.Add(1) })
	require.NoError(t, err)

	// 12 MiB is past the stuck subscriber's soft limit even after the
	// kernel's socket buffers took their part. Held for the ack delay,
	// the producer's 1 MiB window would stop it for an hour: the test's
	// context ends first.
	msgs := publishMiB(ctx, t, pub, "stuck", 12)
	// Normally the stuck subscriber is past its soft limit now. On a
	// loaded machine the producer can be slow enough that the subscriber
	// counts as stuck (a second without progress) before it gets there,
	// and its later deliveries are detached instead of queued: the
	// producer must not be held either way, and that is what follows.
	over, _ := outboxOf(t, e, stuck).Pressure()
	t.Logf("stuck subscriber past its soft limit: %v", over)
	require.Eventually(t, func() bool { return healthyGot.Load() == int64(msgs) }, 20*time.Second, time.Millisecond)
	require.Zero(t, e.Stats().SlowConsumers)

	readRecords(t, stuck, 0, msgs)

	_ = stuck.c.Close()
	_ = healthy.Close()
	_ = pub.Close()
	require.Eventually(t, func() bool { return e.srv.Counters().OutboundBytes == 0 }, 10*time.Second, time.Millisecond,
		"what connections held is given back when they close")
}

// TestOutboundBoundCutsFurthestBehind: past --max-outbound-bytes, the
// connection holding the most is disconnected as a slow consumer, and the
// others stay connected and lose nothing.
func TestOutboundBoundCutsFurthestBehind(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.MaxPendingBytes, c.MaxOutboundBytes = 32<<20, 32<<20
		// Never stuck: they stand for subscribers that read, too slowly
		// (a stuck one would be detached and hold nothing more).
		c.SlowConsumerTimeout, c.StuckConsumerAfter = time.Hour, time.Hour
	})
	ctx := testCtx(t)
	pub := dial(t, e)
	require.NoError(t, pub.CreateTopic(ctx, "bound", client.TopicConfig{Storage: "memory"}))
	behind := stuckSubscriber(t, e, "bound")
	behindOut := outboxOf(t, e, behind)
	first := publishMiB(ctx, t, pub, "bound", 14)
	later := stuckSubscriber(t, e, "bound")
	laterOut := outboxOf(t, e, later)
	msgs := 0
	for e.srv.Counters().SlowCuts[outbox.SlowBudget] == 0 {
		require.Less(t, msgs, 40<<10, "the bound was never enforced")
		msgs += publishMiB(ctx, t, pub, "bound", 1)
	}

	require.Equal(t, outbox.SlowBudget, behindOut.SlowReason())
	require.Equal(t, outbox.NotSlow, laterOut.SlowReason())
	readRecords(t, later, int64(first), msgs)
	for {
		f, err := behind.read(10 * time.Second)
		if err != nil {
			break // closed
		}
		if f.Type == wire.TypeError {
			werr, _ := wire.DecodeError(f.Body)
			require.Equal(t, wire.CodeSlowConsumer, werr.Code)
			require.Contains(t, werr.Message, "broker-wide")
		}
	}
	require.Equal(t, uint64(1), e.srv.Counters().SlowCuts[outbox.SlowBudget])
	require.Zero(t, e.srv.Counters().SlowCuts[outbox.SlowLimit]+e.srv.Counters().SlowCuts[outbox.SlowTimeout])
	var m bytes.Buffer
	e.writeMetrics(&m)
	require.Contains(t, m.String(), `ratatoskr_slow_consumer_disconnects_total{reason="broker_limit"} 1`+"\n")
	require.Contains(t, m.String(), "ratatoskr_outbound_bytes_limit 33554432\n")

	_ = later.c.Close()
	_ = pub.Close()
	require.Eventually(t, func() bool { return e.srv.Counters().OutboundBytes == 0 }, 10*time.Second, time.Millisecond)
	m.Reset()
	e.writeMetrics(&m)
	require.True(t, strings.Contains(m.String(), "ratatoskr_outbound_bytes 0\n"))
}

// detachedCount is the live subscriptions the broker's shards detached.
func detachedCount(e *Engine) uint64 {
	var n uint64
	for _, s := range e.shards {
		n += s.Detached()
	}
	return n
}

// TestStuckSubscriberIsDetachedAndResumes: once a subscriber is stuck, its
// live subscription is detached: publishes no longer queue anything for
// it, so it costs them nothing. When it reads again it gets everything,
// from where it stopped, in order and with no gap, by a replay that joins
// the live tail again.
func TestStuckSubscriberIsDetachedAndResumes(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.StuckConsumerAfter, c.SlowConsumerTimeout = 100*time.Millisecond, time.Hour
	})
	ctx := testCtx(t)
	pub := dial(t, e)
	require.NoError(t, pub.CreateTopic(ctx, "det", client.TopicConfig{Storage: "memory"}))
	stuck := stuckSubscriber(t, e, "det")
	out := outboxOf(t, e, stuck)
	msgs := 0
	for detachedCount(e) == 0 {
		require.Less(t, msgs, 256<<10, "the stuck subscriber was never detached")
		msgs += publishMiB(ctx, t, pub, "det", 1)
	}
	queued := out.Queued()
	msgs += publishMiB(ctx, t, pub, "det", 8)
	require.Equal(t, queued, out.Queued(), "nothing more is queued for a detached subscriber")
	require.Zero(t, e.srv.Counters().Resumed)

	readRecords(t, stuck, 0, msgs)
	require.Positive(t, e.srv.Counters().Resumed, "it resumed with a replay")
	// And it is live again: the next publish reaches it.
	_, err := pub.Publish(ctx, "det", client.Message{Value: []byte("live")})
	require.NoError(t, err)
	readRecords(t, stuck, int64(msgs), 1)
}

// TestDetachedSubscriberIsCutAtTheTimeout: a detached subscriber that never
// reads again holds little, so it is cut by how long its socket took
// nothing (the slow-consumer timeout), not by its limit.
func TestDetachedSubscriberIsCutAtTheTimeout(t *testing.T) {
	e := startBroker(t, func(c *Config) {
		c.StuckConsumerAfter, c.SlowConsumerTimeout = 100*time.Millisecond, 500*time.Millisecond
		c.MaxPendingBytes = 256 << 20 // soft limit 64 MiB, far from reach
	})
	ctx := testCtx(t)
	pub := dial(t, e)
	require.NoError(t, pub.CreateTopic(ctx, "cut", client.TopicConfig{Storage: "memory"}))
	stuck := stuckSubscriber(t, e, "cut")
	out := outboxOf(t, e, stuck)
	// Fill its socket until the broker holds a backlog for it, then go on
	// one message at a time until it is judged stuck and detached: how
	// fast this machine publishes then decides nothing about how much is
	// queued for it when that happens.
	msgs := 0
	for out.Queued() == 0 {
		require.Less(t, msgs, 32<<10, "the subscriber's socket never filled")
		msgs += publishMiB(ctx, t, pub, "cut", 1)
	}
	value := make([]byte, 1<<10)
	for detachedCount(e) == 0 {
		_, err := pub.Publish(ctx, "cut", client.Message{Value: value})
		require.NoError(t, err)
	}
	over, _ := out.Pressure()
	require.False(t, over, "under its soft limit: only the timeout can cut it")
	require.Eventually(t, func() bool { return e.Stats().SlowConsumers == 1 }, 30*time.Second, time.Millisecond)
	for {
		f, err := stuck.read(10 * time.Second)
		if err != nil {
			break
		}
		if f.Type == wire.TypeError {
			we, err := wire.DecodeError(f.Body)
			require.NoError(t, err)
			require.Equal(t, wire.CodeSlowConsumer, we.Code)
		}
	}
}

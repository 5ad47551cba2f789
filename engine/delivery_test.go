package engine

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestFIFOPerPartitionProperty: for any list of batches published to a
// partition, every subscriber receives the messages in publish order.
func TestFIFOPerPartitionProperty(t *testing.T) {
	e := startBroker(t, nil)
	pub := dial(t, e)
	subs := []*client.Client{dial(t, e), dial(t, e)}
	n := 0
	rapid.Check(t, func(rt *rapid.T) {
		// A deadline per case, not for the whole run: a hundred cases on a
		// loaded machine under the race detector took longer than one.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n++
		topic := fmt.Sprintf("fifo-%d", n)
		batches := rapid.SliceOfN(rapid.IntRange(1, 50), 1, 20).Draw(rt, "batch sizes")
		sizes := rapid.IntRange(0, 2000).Draw(rt, "value size")
		partitions := rapid.IntRange(1, 4).Draw(rt, "partitions")
		require.NoError(rt, pub.CreateTopic(ctx, topic, client.TopicConfig{Partitions: partitions}))

		var total int
		for _, b := range batches {
			total += b
		}
		received := make([]chan client.Delivery, len(subs))
		for i, sc := range subs {
			ch := make(chan client.Delivery, total)
			received[i] = ch
			_, err := sc.Subscribe(ctx, topic, func(d *client.Delivery) { ch <- d.Clone() })
			require.NoError(rt, err)
		}
		// Each batch is published asynchronously and flushed as a unit, so
		// batches of different sizes reach the broker as separate frames.
		seq := 0
		for _, b := range batches {
			for range b {
				v := make([]byte, sizes+8)
				copy(v, fmt.Sprintf("%08d", seq))
				p := seq % partitions
				require.NoError(rt, pub.PublishAsync(ctx, topic, client.Message{Value: v}, client.ToPartition(p)))
				seq++
			}
			require.NoError(rt, pub.Flush(ctx))
		}
		for _, ch := range received {
			last := map[int32]int{}
			for range total {
				var d client.Delivery
				select {
				case d = <-ch:
				case <-time.After(10 * time.Second):
					rt.Fatalf("timed out")
				}
				var got int
				_, err := fmt.Sscanf(string(d.Value[:8]), "%08d", &got)
				require.NoError(rt, err)
				require.Equal(rt, int32(got%partitions), d.Partition)
				if prev, ok := last[d.Partition]; ok {
					require.Greater(rt, got, prev, "partition %d out of order", d.Partition)
				}
				last[d.Partition] = got
			}
		}
	})
}

// TestKilledSubscribersProperty: after any subset of subscribers is killed
// (their connections dropped without a goodbye), the topic keeps delivering
// every message to the rest.
func TestKilledSubscribersProperty(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	pub := dial(t, e)
	round := 0
	rapid.Check(t, func(rt *rapid.T) {
		round++
		topic := fmt.Sprintf("kill-%d", round)
		count := rapid.IntRange(1, 8).Draw(rt, "subscribers")
		kill := rapid.SliceOfNDistinct(rapid.IntRange(0, count-1), 0, count-1, rapid.ID[int]).Draw(rt, "killed")
		killed := map[int]bool{}
		for _, k := range kill {
			killed[k] = true
		}
		type sub struct {
			raw *rawConn
			got atomic.Int64
		}
		subs := make([]*sub, count)
		for i := range subs {
			s := &sub{raw: dialRaw(t, e)}
			s.raw.hello()
			s.raw.sendFrame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: topic, Partition: wire.PartitionAny}).Append(nil))
			require.Equal(rt, wire.TypeSubscribeOK, s.raw.next().Type)
			subs[i] = s
		}
		for i := range subs {
			if killed[i] {
				// An abortive close: RST, no goodbye.
				_ = subs[i].raw.c.(*net.TCPConn).SetLinger(0)
				_ = subs[i].raw.c.Close()
			}
		}
		const msgs = 200
		for i := range msgs {
			require.NoError(rt, pub.PublishAsync(ctx, topic, client.Message{Value: []byte(fmt.Sprint(i))}))
		}
		require.NoError(rt, pub.Flush(ctx))
		for i, s := range subs {
			if killed[i] {
				continue
			}
			for s.got.Load() < msgs {
				f, err := s.raw.read(10 * time.Second)
				require.NoError(rt, err)
				require.Equal(rt, wire.TypeDeliver, f.Type)
				v, err := wire.DecodeBatchView(f.Body)
				require.NoError(rt, err)
				s.got.Add(int64(v.Batch.Count()))
			}
			require.Equal(rt, int64(msgs), s.got.Load())
			_ = s.raw.c.Close()
		}
	})
	require.Eventually(t, func() bool { return e.Stats().Connections == 1 }, 30*time.Second, 10*time.Millisecond)
}

// TestSlowConsumerIsDisconnected: a subscriber that stops reading is
// disconnected once its backlog passes the limit; the publisher and a
// healthy subscriber carry on, and no buffer stays allocated.
func TestSlowConsumerIsDisconnected(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxPendingBytes = 8 << 20; c.SlowConsumerTimeout = time.Second })
	ctx := testCtx(t)
	pub := dial(t, e, client.WithMaxPendingBytes(1<<20))

	slow := dialRaw(t, e)
	slow.hello()
	slow.sendFrame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: "firehose", Partition: wire.PartitionAny}).Append(nil))
	require.Equal(t, wire.TypeSubscribeOK, slow.next().Type)

	var healthyGot atomic.Int64
	healthy := dial(t, e)
	_, err := healthy.Subscribe(ctx, "firehose", func(*client.Delivery) { healthyGot.Add(1) })
	require.NoError(t, err)

	// Publish until the stuck subscriber is disconnected: past its limit,
	// or behind for longer than the timeout while acks are held for it.
	value := make([]byte, 1000)
	msgs := 0
	deadline := time.Now().Add(20 * time.Second)
	for e.Stats().SlowConsumers == 0 && time.Now().Before(deadline) {
		for range 1000 {
			require.NoError(t, pub.PublishAsync(ctx, "firehose", client.Message{Value: value}))
		}
		msgs += 1000
	}
	require.NoError(t, pub.Flush(ctx))
	require.Equal(t, uint64(1), e.Stats().SlowConsumers)
	require.Eventually(t, func() bool { return healthyGot.Load() == int64(msgs) }, 20*time.Second, 10*time.Millisecond,
		"the healthy subscriber got everything")

	// The slow subscriber finds the stream ending: with the slow-consumer
	// error if it got through, or just closed.
	for {
		f, err := slow.read(10 * time.Second)
		if err != nil {
			break
		}
		if f.Type == wire.TypeError {
			werr, _ := wire.DecodeError(f.Body)
			require.Equal(t, wire.CodeSlowConsumer, werr.Code)
		}
	}
	require.Eventually(t, func() bool { return storage.LiveBufs() == 0 }, 30*time.Second, 10*time.Millisecond,
		"buffers held for the slow consumer are released")
}

func TestGracefulShutdownFlushes(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	pub := dial(t, e, client.WithoutReconnect())
	var got atomic.Int64
	sc := dial(t, e)
	_, err := sc.Subscribe(ctx, "t", func(*client.Delivery) { got.Add(1) })
	require.NoError(t, err)
	const msgs = 100_000
	for range msgs {
		require.NoError(t, pub.PublishAsync(ctx, "t", client.Message{Value: []byte("0123456789")}))
	}
	require.NoError(t, pub.Flush(ctx))
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(sctx))
	// Written before the close; the client's handler may still be working
	// through them.
	require.Eventually(t, func() bool { return got.Load() == msgs }, 30*time.Second, time.Millisecond,
		"every acked message reached the subscriber before close")
	_, err = pub.Publish(ctx, "t", client.Message{Value: []byte("late")})
	require.Error(t, err)
	require.True(t, client.IsRetryable(err), "a publish after shutdown fails with a retryable error: %v", err)
	require.Zero(t, storage.LiveBufs())
}

func TestConcurrentPublishers(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	require.NoError(t, dial(t, e).CreateTopic(ctx, "multi", client.TopicConfig{Partitions: 3}))
	var got atomic.Int64
	sc := dial(t, e)
	_, err := sc.Subscribe(ctx, "multi", func(*client.Delivery) { got.Add(1) })
	require.NoError(t, err)
	var wg sync.WaitGroup
	const producers, each = 4, 1000 // synchronous publishes, each waiting for an fsync
	for p := range producers {
		c := dial(t, e)
		wg.Go(func() {
			for i := range each {
				_, err := c.Publish(ctx, "multi", client.Message{Value: []byte(fmt.Sprint(p, i))}, client.ToPartition(i%3))
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { return got.Load() == producers*each }, 30*time.Second, 5*time.Millisecond)
	require.Equal(t, uint64(producers*each), e.Stats().Messages)
}

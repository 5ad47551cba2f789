package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// A run over the gRPC front end: one producer through a PublishStream,
// one subscriber through Subscribe, every message delivered once, in
// order.
func TestRunOverGRPC(t *testing.T) {
	e := brokertest.Start(t, func(c *engine.Config) { c.GRPCAddr = "127.0.0.1:0" })

	// PerCall 1 publishes with PublishAsync, which the connection
	// buffers into requests; the default with PublishBatchAsync.
	for _, perCall := range []int{0, 1} {
		lc := DefaultConfig()
		lc.Server, lc.Protocol, lc.PerCall = e.GRPCAddr(), "grpc", perCall
		lc.Topic = "grpc-" + string(rune('a'+perCall))
		lc.Count, lc.Producers, lc.Subscribers, lc.Partitions = 5000, 1, 1, 2
		var progress bytes.Buffer
		res, err := Run(context.Background(), lc, &progress)
		require.NoError(t, err, progress.String())
		require.Equal(t, uint64(5000), res.Published)
		require.Equal(t, uint64(5000), res.Delivered)
		require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
	}
	require.Contains(t, Protocols(), "grpc")
}

// A producer that publishes while requests are in flight, then stops
// without a Flush: the request it was filling still goes (the ack reader
// sends it when the stream drains), with every record in order and
// headers, partitions and targets switching as asked.
func TestGRPCConnSendsHeldRequestWithoutFlush(t *testing.T) {
	e := brokertest.Start(t, func(c *engine.Config) { c.GRPCAddr = "127.0.0.1:0" })

	ctx := context.Background()
	lc := DefaultConfig()
	lc.Server = e.GRPCAddr()
	cn, err := dialGRPC(ctx, &lc, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cn.Close() })
	for _, topic := range []string{"held-a", "held-b"} {
		require.NoError(t, cn.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 2}))
	}
	const calls, per = 200, 50
	msgs := make([]client.Message, per)
	for i := range calls {
		topic := "held-a"
		if i%50 == 49 {
			topic = "held-b" // another target now and then
		}
		for j := range msgs {
			msgs[j] = client.Message{Value: fmt.Appendf(nil, "%d-%d", i, j),
				Headers: []client.Header{{Key: "h", Value: []byte{byte(j)}}}}
		}
		require.NoError(t, cn.PublishBatchAsync(ctx, topic, msgs, client.ToPartition(i%2)))
	}
	one := client.Message{Value: []byte("last")}
	require.NoError(t, cn.PublishAsync(ctx, "held-a", one, client.ToPartition(1)))
	total := func(topic string) int64 {
		info, err := cn.DescribeTopic(ctx, topic)
		require.NoError(t, err)
		var n int64
		for _, p := range info.Partitions {
			n += p.EndOffset - p.StartOffset
		}
		return n
	}
	require.Eventually(t, func() bool {
		return total("held-a") == (calls-4)*per+1 && total("held-b") == 4*per
	}, 10*time.Second, 10*time.Millisecond)

	// What was stored is what was sent, in order, headers included.
	var got []string
	done := make(chan struct{})
	sub, err := cn.subscribe(ctx, "held-b", func(d *client.Delivery) {
		if d.Partition != 1 {
			return
		}
		require.Len(t, d.Headers, 1)
		got = append(got, string(d.Value))
		if len(got) == 4*per {
			close(done)
		}
	}, client.StartAt(client.Earliest))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe(ctx) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("got %d of %d deliveries", len(got), 4*per)
	}
	for k, i := range []int{49, 99, 149, 199} {
		for j := range per {
			require.Equal(t, fmt.Sprintf("%d-%d", i, j), got[k*per+j])
		}
	}
}

package gateway_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
)

// BenchmarkPublish compares publishing through an in-process session (a
// Unix socket pair into the event loops) with the native client over
// loopback TCP: 128 B messages, 64 per call, to a memory topic.
func BenchmarkPublish(b *testing.B) {
	for _, via := range []string{"in-process", "tcp"} {
		b.Run(via, func(b *testing.B) { benchPublish(b, via) })
	}
}

func benchPublish(b *testing.B, via string) {
	e := startBroker(b, nil)
	ctx := context.Background()
	var c *client.Client
	if via == "tcp" {
		var err error
		c, err = client.Dial(ctx, e.Addr().String())
		require.NoError(b, err)
	} else {
		s, err := e.Gateway().Dedicated(ctx, "bench", gateway.Credentials{Remote: "127.0.0.1:1"})
		require.NoError(b, err)
		c = s.Client
	}
	defer func() { _ = c.Close() }()
	require.NoError(b, c.CreateTopic(ctx, "bench", client.TopicConfig{Storage: "memory"}))
	msgs := make([]client.Message, 64)
	for i := range msgs {
		msgs[i].Value = make([]byte, 128)
	}
	b.SetBytes(64 * 128)
	b.ResetTimer()
	for range b.N {
		if err := c.PublishBatchAsync(ctx, "bench", msgs, client.ToPartition(0)); err != nil {
			b.Fatal(err)
		}
	}
	require.NoError(b, c.Flush(ctx))
	b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "msg/s")
}

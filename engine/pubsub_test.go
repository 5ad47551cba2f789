package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

func TestPublishSubscribeEndToEnd(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	pub := dial(t, e)
	subc := dial(t, e)

	require.NoError(t, pub.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 1}))
	got := make(chan client.Delivery, 100)
	_, err := subc.Subscribe(ctx, "orders", func(d *client.Delivery) { got <- d.Clone() })
	require.NoError(t, err)

	for i := range 10 {
		ack, err := pub.Publish(ctx, "orders", client.Message{Value: []byte(fmt.Sprintf("m%d", i))})
		require.NoError(t, err)
		require.Equal(t, int64(i), ack.Offset)
	}
	for i := range 10 {
		d := <-got
		require.Equal(t, fmt.Sprintf("m%d", i), string(d.Value))
		require.Equal(t, int64(i), d.Offset)
		require.Equal(t, "orders", d.Topic)
	}
}

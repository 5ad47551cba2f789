package loadtest

import (
	"context"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// TestRunOverWebSocket runs the tool over the WebSocket gateway (the
// binary protocol, on the broker's HTTP listener): one producer and one
// subscriber, a topic created and described over the socket, every
// message delivered once and in order.
func TestRunOverWebSocket(t *testing.T) {
	e := brokertest.Start(t, func(c *engine.Config) { c.HTTPAddr = "127.0.0.1:0" })

	lc := DefaultConfig()
	lc.Protocol, lc.Server, lc.Topic = "ws", e.HTTPAddr(), "over-ws"
	lc.Count, lc.Producers, lc.Subscribers, lc.Partitions, lc.Durable = 5000, 1, 1, 2, true
	lc.Drain = 20 * time.Second
	res, err := Run(context.Background(), lc, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(5000), res.Published)
	require.Equal(t, uint64(5000), res.Delivered)
	require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
	require.True(t, res.Durable, "the topic was created as asked, over the socket")
	require.Equal(t, "always", res.Fsync)
	require.Equal(t, 2, res.Partitions)

	// A second run finds the topic, described over the socket.
	lc.Count, lc.Partitions = 1000, 0
	res, err = Run(context.Background(), lc, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(1000), res.Delivered)
	require.Zero(t, res.Lost+res.Duplicated+res.Reordered)
}

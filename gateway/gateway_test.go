package gateway_test

import (
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// startBroker runs a broker on 127.0.0.1 port 0 for the test.
func startBroker(t testing.TB, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	return brokertest.Start(t, mutate)
}

func TestSessionPublishSubscribeFetch(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) { c.AutoCreateTopics = false })
	g := e.Gateway()
	ctx := t.Context()
	s, release, err := g.Acquire(ctx, "test", gateway.Credentials{Remote: "192.0.2.7:4000"})
	require.NoError(t, err)
	defer release()
	require.NoError(t, s.CreateTopic(ctx, "t", client.TopicConfig{Partitions: 2, Storage: "disk"}))

	sub, err := g.Dedicated(ctx, "test", gateway.Credentials{Remote: "192.0.2.8:4000"})
	require.NoError(t, err)
	defer func() { _ = sub.Close() }()
	got := make(chan client.Delivery, 16)
	batches := 0
	_, err = sub.Subscribe(ctx, "t", func(d *client.Delivery) { got <- d.Clone() },
		client.FromPartition(1), client.StartAt(client.Earliest), client.DispatchInline(), client.OnBatchEnd(func() { batches++ }))
	require.NoError(t, err)

	msgs := []client.Message{{Key: []byte("a"), Value: []byte("one"), Headers: []client.Header{{Key: "h", Value: []byte("v")}}},
		{Value: []byte("two")}}
	acks, err := s.PublishBatch(ctx, "t", msgs, client.ToPartition(1))
	require.NoError(t, err)
	require.Equal(t, []client.Ack{{Partition: 1, Offset: 0}, {Partition: 1, Offset: 1}}, acks)
	for i := range msgs {
		d := <-got
		require.Equal(t, int64(i), d.Offset)
		require.Equal(t, msgs[i].Value, d.Value)
	}

	f, err := s.Fetch(ctx, "t", 1, client.AtOffset(0))
	require.NoError(t, err)
	require.Len(t, f.Messages, 2)
	require.Equal(t, "h", f.Messages[0].Headers[0].Key)

	// The sessions show as the gateway's, under their clients' addresses.
	vias := map[string]string{}
	for _, c := range e.Connections() {
		vias[c.Remote] = c.Via
	}
	require.Equal(t, "test", vias["192.0.2.7:4000"])
	require.Equal(t, "test", vias["192.0.2.8:4000"])

	// A second Acquire with the same credentials shares the session.
	s2, release2, err := g.Acquire(ctx, "test", gateway.Credentials{Remote: "192.0.2.9:1"})
	require.NoError(t, err)
	release2()
	require.Same(t, s, s2)

	_, err = s.PublishBatch(ctx, "nope", msgs)
	require.ErrorIs(t, err, wire.ErrUnknownTopic)
	require.Equal(t, gateway.KindNotFound, gateway.KindOf(err))
}

package client_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// PublishBatchInto writes the acks into the slice it is given when that is
// large enough, whatever its length, and allocates when it is not; the
// acks are where the messages were stored, as PublishBatch reports them.
func TestPublishBatchIntoReusesTheSlice(t *testing.T) {
	c := dialT(t, brokerAddr)
	ctx := ctxT(t)
	msgs := make([]client.Message, 300)
	for i := range msgs {
		msgs[i] = client.Message{Value: fmt.Appendf(nil, "m%d", i)}
	}
	// Too small: a new slice.
	small := make([]client.Ack, 5)
	acks, err := c.PublishBatchInto(ctx, small, "into", msgs, client.ToPartition(0))
	require.NoError(t, err)
	require.Len(t, acks, len(msgs))
	require.NotSame(t, &small[0], &acks[0])
	first := acks[0].Offset
	for i, a := range acks {
		require.Equal(t, int32(0), a.Partition)
		require.Equal(t, first+int64(i), a.Offset)
	}
	// Large enough, with stale contents and another length: reused.
	big := make([]client.Ack, 7, 1000)
	for i := range big[:cap(big)] {
		big[:cap(big)][i] = client.Ack{Partition: 9, Offset: 999}
	}
	acks, err = c.PublishBatchInto(ctx, big, "into", msgs, client.ToPartition(0))
	require.NoError(t, err)
	require.Len(t, acks, len(msgs))
	require.Same(t, &big[0], &acks[0])
	for i, a := range acks {
		require.Equal(t, client.Ack{Partition: 0, Offset: first + int64(len(msgs)+i)}, a)
	}
	// A failure marks every message, as PublishBatch does.
	acks, err = c.PublishBatchInto(ctx, acks, "bad topic name!", msgs[:3])
	require.Error(t, err)
	require.Len(t, acks, 3)
	for _, a := range acks {
		require.Equal(t, client.Ack{Partition: -1, Offset: -1}, a)
	}
}

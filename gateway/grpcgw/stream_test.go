package grpcgw_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

// A PublishStream client sends many requests before reading any ack: the
// acks come back in request order, with each request's offsets, and the
// records are stored in stream order.
func TestPublishStreamPipelinesInOrder(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) { c.AutoCreateTopics = false })
	ctx := testCtx(t)
	c, _ := dial(t, e.GRPCAddr(), nil, "")
	_, err := c.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "pipe", Partitions: 2})
	require.NoError(t, err)
	st, err := c.PublishStream(ctx)
	require.NoError(t, err)

	// More requests than the server holds in flight, sent without reading:
	// the server goes on taking them as it answers.
	const requests, per = 300, 5
	sent := make(chan error, 1)
	go func() {
		for i := range requests {
			req := &pb.PublishRequest{Topic: "pipe", Id: uint64(1000 + i), Partition: part(int32(i % 2))}
			for j := range per {
				req.Records = append(req.Records, &pb.Record{Value: []byte(strconv.Itoa(i*per + j))})
			}
			if err := st.Send(req); err != nil {
				sent <- err
				return
			}
		}
		sent <- st.CloseSend()
	}()
	next := [2]int64{}
	for i := range requests {
		ack, err := st.Recv()
		require.NoError(t, err)
		require.Equal(t, uint64(1000+i), ack.Id, "acks in request order")
		require.Len(t, ack.Offsets, per)
		p := i % 2
		for j := range per {
			require.Equal(t, int32(p), ack.Partitions[j])
			require.Equal(t, next[p], ack.Offsets[j])
			next[p]++
		}
	}
	require.NoError(t, <-sent)
	_, err = st.Recv()
	require.Error(t, err, "the stream ends after the last ack")

	// The log holds the records in stream order.
	f, err := c.Fetch(ctx, &pb.FetchRequest{Topic: "pipe", Partition: 1, Start: earliest()})
	require.NoError(t, err)
	require.Len(t, f.Records, requests/2*per)
	for k, r := range f.Records {
		i, j := 2*(k/per)+1, k%per
		require.Equal(t, strconv.Itoa(i*per+j), string(r.Value))
	}
}

// A request with a record too large fails the stream from itself on: the
// requests before it, which the server may have merged with it into one
// publish, are stored and acknowledged first, and nothing after it is
// stored.
func TestPublishStreamOversizedRequestFailsAlone(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) { c.AutoCreateTopics, c.MaxMessageBytes = false, 1000 })
	ctx := testCtx(t)
	c, _ := dial(t, e.GRPCAddr(), nil, "")
	_, err := c.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "big", Partitions: 1})
	require.NoError(t, err)
	st, err := c.PublishStream(ctx)
	require.NoError(t, err)
	const good, per = 50, 4
	for i := range good + 10 {
		req := &pb.PublishRequest{Topic: "big", Id: uint64(i + 1)}
		for range per {
			req.Records = append(req.Records, &pb.Record{Value: []byte("small")})
		}
		if i == good {
			req.Records[1].Value = make([]byte, 2000)
		}
		require.NoError(t, st.Send(req))
	}
	for i := range good {
		ack, err := st.Recv()
		require.NoError(t, err, "ack %d", i+1)
		require.Equal(t, uint64(i+1), ack.Id)
		require.Equal(t, int64(i*per), ack.Offsets[0])
	}
	_, err = st.Recv()
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "request 51, record 1")
	f, err := c.Fetch(ctx, &pb.FetchRequest{Topic: "big", Start: earliest(), MaxBytes: 1 << 20})
	require.NoError(t, err)
	require.Len(t, f.Records, good*per, "the requests before the bad one, and none after")
}

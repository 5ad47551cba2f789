package grpcgw_test

import (
	"bytes"
	"context"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

// rawCodec sends a []byte as it is, as the proto codec's name, and
// decodes into a *[]byte.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// Bytes that are no protobuf message get InvalidArgument or Internal, on
// unary calls and streams, and the broker goes on serving.
func TestMalformedMessages(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c, cc := dial(t, e.GRPCAddr(), nil, "")
	bad := [][]byte{
		{0xff, 0xff, 0xff, 0xff},                         // a tag of an invalid field number
		{0x12, 0x10, 0x0a},                               // records: a length past the end
		{0x12, 0x03, 0x0a, 0x05, 0x01},                   // a record whose key runs past it
		{0x0a, 0x80},                                     // a truncated varint length
		{0x1a, 0x02, 0x01, 0x02},                         // partition with the wrong wire type
		bytes.Repeat([]byte{0x12, 0x02, 0x1a, 0x00}, 10), // records with empty headers: valid
	}
	isBad := func(err error) bool {
		code := status.Code(err)
		return code == codes.InvalidArgument || code == codes.Internal
	}
	for i, b := range bad {
		var out []byte
		err := cc.Invoke(ctx, "/ratatoskr.v1.Broker/Publish", b, &out, grpc.ForceCodecV2(rawCodec{}))
		if i == len(bad)-1 {
			// Valid, with no topic: the broker's own InvalidArgument.
			requireCode(t, codes.InvalidArgument, err)
			continue
		}
		require.True(t, isBad(err), "input %d: %v", i, err)

		desc := &grpc.StreamDesc{StreamName: "PublishStream", ServerStreams: true, ClientStreams: true}
		st, err := cc.NewStream(ctx, desc, "/ratatoskr.v1.Broker/PublishStream", grpc.ForceCodecV2(rawCodec{}))
		require.NoError(t, err)
		require.NoError(t, st.SendMsg(b))
		err = st.RecvMsg(&out)
		require.True(t, isBad(err), "stream input %d: %v", i, err)
	}
	// The fuzz-like inputs above hurt nobody: the broker serves.
	ack, err := c.Publish(ctx, &pb.PublishRequest{Topic: "still", Records: records("ok")})
	require.NoError(t, err)
	require.Equal(t, []int64{0}, ack.Offsets)
}

// A request past MaxRecvBytes, and a record past the broker's largest
// message, are ResourceExhausted; the connection stays usable.
func TestOversizedRequests(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c, _ := dial(t, e.GRPCAddr(), nil, "")
	huge := make([]byte, 17<<20)
	_, err := c.Publish(ctx, &pb.PublishRequest{Topic: "big", Records: []*pb.Record{{Value: huge}}})
	requireCode(t, codes.ResourceExhausted, err)

	st, err := c.PublishStream(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Send(&pb.PublishRequest{Topic: "big", Records: []*pb.Record{{Value: huge}}}))
	_, err = st.Recv()
	requireCode(t, codes.ResourceExhausted, err)

	tooLarge := make([]byte, engine.DefaultConfig().MaxMessageBytes+1)
	_, err = c.Publish(ctx, &pb.PublishRequest{Topic: "big", Records: []*pb.Record{{Value: tooLarge}}})
	requireCode(t, codes.ResourceExhausted, err)
	require.Contains(t, err.Error(), "message of")

	_, err = c.Publish(ctx, &pb.PublishRequest{Topic: "big", Records: records("small")})
	require.NoError(t, err)
}

// Unknown topics are NotFound when topics are not created on first use;
// negative partitions and offsets are InvalidArgument.
func TestUnknownTopicAndInvalidArguments(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) { c.AutoCreateTopics = false })
	ctx := testCtx(t)
	c, _ := dial(t, e.GRPCAddr(), nil, "")
	_, err := c.Publish(ctx, &pb.PublishRequest{Topic: "nope", Records: records("x")})
	requireCode(t, codes.NotFound, err)
	_, err = c.Fetch(ctx, &pb.FetchRequest{Topic: "nope"})
	requireCode(t, codes.NotFound, err)
	_, err = c.DescribeTopic(ctx, &pb.DescribeTopicRequest{Name: "nope"})
	requireCode(t, codes.NotFound, err)
	_, err = c.DeleteTopic(ctx, &pb.DeleteTopicRequest{Name: "nope"})
	requireCode(t, codes.NotFound, err)
	sub, err := c.Subscribe(ctx, &pb.SubscribeRequest{Topic: "nope"})
	require.NoError(t, err)
	_, err = sub.Recv()
	requireCode(t, codes.NotFound, err)
	st, err := c.PublishStream(ctx)
	require.NoError(t, err)
	require.NoError(t, st.Send(&pb.PublishRequest{Topic: "nope", Records: records("x")}))
	_, err = st.Recv()
	requireCode(t, codes.NotFound, err)

	_, err = c.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "t", Config: map[string]string{"colour": "blue"}})
	requireCode(t, codes.InvalidArgument, err)
	_, err = c.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "t", Config: map[string]string{"retention": "soon"}})
	requireCode(t, codes.InvalidArgument, err)
	_, err = c.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "t"})
	require.NoError(t, err)
	_, err = c.Publish(ctx, &pb.PublishRequest{Topic: "t", Partition: part(-1), Records: records("x")})
	requireCode(t, codes.InvalidArgument, err)
	_, err = c.Publish(ctx, &pb.PublishRequest{Topic: "t", Partition: part(5), Records: records("x")})
	requireCode(t, codes.NotFound, err)
	_, err = c.Fetch(ctx, &pb.FetchRequest{Topic: "t", Start: &pb.Position{Kind: &pb.Position_Offset{Offset: -3}}})
	requireCode(t, codes.InvalidArgument, err)
	_, err = c.Fetch(ctx, &pb.FetchRequest{Topic: "t", Start: &pb.Position{Kind: &pb.Position_Offset{Offset: 100}}})
	requireCode(t, codes.OutOfRange, err)
}

// subscribeHandlers counts the goroutines in the gRPC front end's
// Subscribe, the handler's and its sender's.
func subscribeHandlers() int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return strings.Count(b.String(), "grpcgw.(*Server).Subscribe")
}

// A subscriber that stops reading while much is published is cut as a
// slow consumer: its call ends on the server, its goroutines end, and the
// broker serves everyone else throughout.
func TestSlowSubscriberIsCut(t *testing.T) {
	e := startBroker(t, func(c *engine.Config) {
		c.SlowConsumerTimeout = 300 * time.Millisecond
		c.StuckConsumerAfter = 100 * time.Millisecond
		c.MaxPendingBytes = c.MaxFrameBytes
	})
	ctx := testCtx(t)
	streams := func() int { return e.Gateway().Metrics().OpenStreams("grpc") }
	pub, _ := dial(t, e.GRPCAddr(), nil, "")
	_, err := pub.CreateTopic(ctx, &pb.CreateTopicRequest{Name: "firehose"})
	require.NoError(t, err)

	stuck, _ := dial(t, e.GRPCAddr(), nil, "")
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := stuck.Subscribe(sctx, &pb.SubscribeRequest{Topic: "firehose"})
	require.NoError(t, err)
	_, err = sub.Recv() // in place; from now on it reads nothing
	require.NoError(t, err)
	require.Equal(t, 1, streams())

	value := make([]byte, 16<<10)
	req := &pb.PublishRequest{Topic: "firehose"}
	for range 64 {
		req.Records = append(req.Records, &pb.Record{Value: value})
	}
	// Publish (1 MiB a request) until the broker has cut the stuck
	// session and the server has ended its call; bounded by ctx.
	require.Eventually(t, func() bool {
		_, err := pub.Publish(ctx, req)
		require.NoError(t, err)
		return streams() == 0
	}, 20*time.Second, time.Millisecond)

	// Everyone else is served.
	ack, err := pub.Publish(ctx, &pb.PublishRequest{Topic: "firehose", Partition: part(0), Records: records("after")})
	require.NoError(t, err)
	f, err := pub.Fetch(ctx, &pb.FetchRequest{Topic: "firehose", Start: &pb.Position{Kind: &pb.Position_Offset{Offset: ack.Offsets[0]}}})
	require.NoError(t, err)
	require.Equal(t, "after", string(f.Records[0].Value))

	// The client, reading again, gets what was sent, then the error.
	for {
		_, err = sub.Recv()
		if err != nil {
			break
		}
	}
	code := status.Code(err)
	require.True(t, code == codes.ResourceExhausted || code == codes.Unavailable, "%v", err)
	cancel()
	require.Eventually(t, func() bool { return subscribeHandlers() == 0 }, 10*time.Second, 10*time.Millisecond)
}

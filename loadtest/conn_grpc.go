package loadtest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ratatoskr-mq/ratatoskr/client"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

// The gRPC front end (gateway/grpcgw) as a load-test protocol: producers
// publish through a PublishStream, pipelined; subscribers read a
// Subscribe stream.
func init() { registerProtocol("grpc", dialGRPC) }

// grpcInFlight bounds a producer's PublishStream requests sent and not yet
// acknowledged; past it a publish waits for an ack.
const grpcInFlight = 128

// grpcBuffered is how many PublishAsync messages go in one request.
const grpcBuffered = 256

func dialGRPC(_ context.Context, cfg *Config, _ []client.Option) (conn, error) {
	tc := insecure.NewCredentials()
	if cfg.TLS != nil {
		tc = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(tc),
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.ForceCodecV2(pb.Codec{}))}
	switch {
	case cfg.Token != "":
		opts = append(opts, grpc.WithPerRPCCredentials(authMetadata("Bearer "+cfg.Token)))
	case cfg.User != "":
		opts = append(opts, grpc.WithPerRPCCredentials(authMetadata("Basic "+
			base64.StdEncoding.EncodeToString([]byte(cfg.User+":"+cfg.Password)))))
	}
	cc, err := grpc.NewClient(cfg.Server, opts...)
	if err != nil {
		return nil, fmt.Errorf("loadtest: grpc %s: %w", cfg.Server, err)
	}
	return &grpcConn{cc: cc, bc: pb.NewBrokerClient(cc), slots: make(chan struct{}, grpcInFlight)}, nil
}

// authMetadata sends an authorization header with every call; over
// plaintext too, as a load test of a loopback broker does.
type authMetadata string

func (a authMetadata) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(a)}, nil
}

func (authMetadata) RequireTransportSecurity() bool { return false }

// grpcConn is one producer's or subscriber's gRPC client.
type grpcConn struct {
	cc *grpc.ClientConn
	bc pb.BrokerClient

	// The publishing side: one PublishStream, opened by the first
	// publish. mu orders the sends; slots holds a token per request in
	// flight, which the ack reader takes back.
	mu     sync.Mutex
	stream pb.Broker_PublishStreamClient
	cancel context.CancelFunc
	slots  chan struct{}
	acked  chan struct{} // closed when the ack reader ends
	ackErr error         // why it ended; read after acked is closed
	req    pb.PublishRequest
	recs   []pb.Record // the records req points into, reused
	nextID uint64
	// pending is PublishAsync's buffered request: topic and partition of
	// its messages, sent when full, when another target comes, or on Flush.
	pending     []client.Message
	pendTopic   string
	pendPart    *int32
	pendHeaders []client.Header
}

// open starts the PublishStream and its ack reader. mu held.
func (c *grpcConn) open() error {
	if c.stream != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := c.bc.PublishStream(ctx)
	if err != nil {
		cancel()
		return err
	}
	c.stream, c.cancel, c.acked = st, cancel, make(chan struct{})
	go c.readAcks(st)
	return nil
}

// readAcks takes back a slot per ack, in order; the ids must follow.
func (c *grpcConn) readAcks(st pb.Broker_PublishStreamClient) {
	defer close(c.acked)
	var resp pb.PublishResponse
	want := uint64(1)
	for {
		if err := st.RecvMsg(&resp); err != nil {
			c.ackErr = err
			return
		}
		if resp.Id != want {
			c.ackErr = fmt.Errorf("loadtest: grpc ack %d, expected %d", resp.Id, want)
			return
		}
		want++
		<-c.slots
	}
}

// send sends one request of msgs. mu held.
func (c *grpcConn) send(ctx context.Context, topic string, part *int32, msgs []client.Message) error {
	if err := c.open(); err != nil {
		return err
	}
	select {
	case c.slots <- struct{}{}:
	case <-c.acked:
		return c.ackFailure()
	case <-ctx.Done():
		return ctx.Err()
	}
	if cap(c.recs) < len(msgs) {
		c.recs = make([]pb.Record, len(msgs))
		c.req.Records = make([]*pb.Record, len(msgs))
		for i := range c.recs {
			c.req.Records[i] = &c.recs[i]
		}
	}
	c.req.Records = c.req.Records[:len(msgs)]
	for i := range msgs {
		m, r := &msgs[i], &c.recs[i]
		r.Key, r.Value, r.TimestampNs = m.Key, m.Value, 0
		if !m.Timestamp.IsZero() {
			r.TimestampNs = m.Timestamp.UnixNano()
		}
		r.Headers = r.Headers[:0]
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, &pb.Header{Key: h.Key, Value: h.Value})
		}
	}
	c.nextID++
	c.req.Topic, c.req.Partition, c.req.Id = topic, part, c.nextID
	// SendMsg has encoded the request when it returns: msgs may be reused.
	if err := c.stream.Send(&c.req); err != nil {
		return c.streamFailure(err)
	}
	return nil
}

// streamFailure is the error a failed Send stands for: the stream's
// status, which the ack reader gets.
func (c *grpcConn) streamFailure(err error) error {
	select {
	case <-c.acked:
		return c.ackFailure()
	case <-time.After(5 * time.Second):
		return err
	}
}

func (c *grpcConn) ackFailure() error {
	if c.ackErr == nil {
		return errors.New("loadtest: grpc publish stream ended")
	}
	return c.ackErr
}

func partitionOf(opts []client.PublishOption) *int32 {
	for _, o := range opts {
		if p, ok := o.Partition(); ok {
			v := int32(p)
			return &v
		}
	}
	return nil
}

func (c *grpcConn) PublishBatchAsync(ctx context.Context, topic string, msgs []client.Message, opts ...client.PublishOption) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.sendPending(ctx); err != nil {
		return err
	}
	return c.send(ctx, topic, partitionOf(opts), msgs)
}

// PublishAsync buffers msg into the next request.
func (c *grpcConn) PublishAsync(ctx context.Context, topic string, msg client.Message, opts ...client.PublishOption) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	part := partitionOf(opts)
	if len(c.pending) > 0 && (topic != c.pendTopic || !samePart(part, c.pendPart)) {
		if err := c.sendPending(ctx); err != nil {
			return err
		}
	}
	c.pendTopic, c.pendPart = topic, part
	// The caller may reuse msg's slices: keep copies.
	msg.Key = append([]byte(nil), msg.Key...)
	msg.Value = append([]byte(nil), msg.Value...)
	if len(msg.Headers) > 0 {
		h0 := len(c.pendHeaders)
		for _, h := range msg.Headers {
			c.pendHeaders = append(c.pendHeaders, client.Header{Key: h.Key, Value: append([]byte(nil), h.Value...)})
		}
		msg.Headers = c.pendHeaders[h0:]
	}
	c.pending = append(c.pending, msg)
	if len(c.pending) >= grpcBuffered {
		return c.sendPending(ctx)
	}
	return nil
}

func samePart(a, b *int32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// sendPending sends what PublishAsync buffered. mu held.
func (c *grpcConn) sendPending(ctx context.Context) error {
	if len(c.pending) == 0 {
		return nil
	}
	err := c.send(ctx, c.pendTopic, c.pendPart, c.pending)
	clear(c.pending)
	c.pending, c.pendHeaders = c.pending[:0], c.pendHeaders[:0]
	return err
}

// Flush sends what is buffered and waits for every request's ack: it
// takes every slot, which it has once the ack reader has given them all
// back.
func (c *grpcConn) Flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.sendPending(ctx); err != nil {
		return err
	}
	if c.stream == nil {
		return nil
	}
	taken := 0
	defer func() {
		for range taken {
			<-c.slots
		}
	}()
	for taken < cap(c.slots) {
		select {
		case c.slots <- struct{}{}:
			taken++
		case <-c.acked:
			return c.ackFailure()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (c *grpcConn) Close() error {
	c.mu.Lock()
	if c.stream != nil {
		_ = c.stream.CloseSend()
		c.cancel()
		<-c.acked
	}
	c.mu.Unlock()
	return c.cc.Close()
}

// subscribe reads a Subscribe stream, calling h with one Delivery reused
// for every record.
func (c *grpcConn) subscribe(ctx context.Context, topic string, h func(*client.Delivery), opts ...client.SubscribeOption) (subscription, error) {
	set := client.SettingsOf(opts...)
	req := &pb.SubscribeRequest{Topic: topic, Start: grpcPosition(set.Start)}
	if set.Partition >= 0 {
		p := int32(set.Partition)
		req.Partition = &p
	}
	sctx, cancel := context.WithCancel(context.Background())
	st, err := c.bc.Subscribe(sctx, req)
	if err != nil {
		cancel()
		return nil, err
	}
	// The first response says the subscription is in place.
	var resp pb.SubscribeResponse
	first := make(chan error, 1)
	go func() { first <- st.RecvMsg(&resp) }()
	select {
	case err = <-first:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s := &grpcSub{cancel: cancel, done: make(chan struct{})}
	go s.run(st, topic, h, set.BatchEnd)
	return s, nil
}

// grpcSub is a Subscribe stream.
type grpcSub struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *grpcSub) run(st pb.Broker_SubscribeClient, topic string, h func(*client.Delivery), batchEnd func()) {
	defer close(s.done)
	var resp pb.SubscribeResponse
	d := client.Delivery{Topic: topic}
	for st.RecvMsg(&resp) == nil {
		for _, r := range resp.Records {
			d.Partition, d.Offset, d.Key, d.Value = r.Partition, r.Offset, r.Key, r.Value
			d.Timestamp = time.Unix(0, r.TimestampNs)
			d.Headers = d.Headers[:0]
			for _, hd := range r.Headers {
				d.Headers = append(d.Headers, client.Header{Key: hd.Key, Value: hd.Value})
			}
			h(&d)
		}
		if batchEnd != nil {
			batchEnd()
		}
	}
}

func (s *grpcSub) Unsubscribe(context.Context) error {
	s.cancel()
	<-s.done
	return nil
}

func (s *grpcSub) Done() <-chan struct{} { return s.done }

func grpcPosition(p client.Position) *pb.Position {
	st := p.Start()
	switch p {
	case client.Earliest:
		return &pb.Position{Kind: &pb.Position_Earliest{Earliest: true}}
	case client.Latest:
		return &pb.Position{Kind: &pb.Position_Latest{Latest: true}}
	}
	if p == client.AtOffset(st.Value) {
		return &pb.Position{Kind: &pb.Position_Offset{Offset: st.Value}}
	}
	return &pb.Position{Kind: &pb.Position_TimeNs{TimeNs: st.Value}}
}

func (c *grpcConn) CreateTopic(ctx context.Context, name string, cfg client.TopicConfig) error {
	kv := map[string]string{}
	set := func(k, v string, on bool) {
		if on {
			kv[k] = v
		}
	}
	set("storage", cfg.Storage, cfg.Storage != "")
	set("fsync", cfg.Fsync, cfg.Fsync != "")
	set("dead-letter-topic", cfg.DeadLetterTopic, cfg.DeadLetterTopic != "")
	set("encryption", cfg.Encryption, cfg.Encryption != "")
	set("max-subscribers", strconv.Itoa(cfg.MaxSubscribers), cfg.MaxSubscribers > 0)
	set("max-deliveries", strconv.Itoa(cfg.MaxDeliveries), cfg.MaxDeliveries > 0)
	set("replicas", strconv.Itoa(cfg.Replicas), cfg.Replicas > 0)
	set("retention", "0s", cfg.Retention == client.KeepForever)
	set("retention", cfg.Retention.String(), cfg.Retention > 0)
	set("retention-bytes", "0", cfg.RetentionBytes == client.UnboundedBytes)
	set("retention-bytes", strconv.FormatInt(cfg.RetentionBytes, 10), cfg.RetentionBytes > 0)
	_, err := c.bc.CreateTopic(ctx, &pb.CreateTopicRequest{Name: name, Partitions: int32(cfg.Partitions), Config: kv})
	return grpcErr(err)
}

// grpcErr makes the statuses the run tells apart match the client's
// errors.
func grpcErr(err error) error {
	switch status.Code(err) {
	case codes.AlreadyExists:
		return fmt.Errorf("%w: %w", client.ErrTopicExists, err)
	case codes.NotFound:
		return fmt.Errorf("%w: %w", client.ErrUnknownTopic, err)
	}
	return err
}

func (c *grpcConn) DeleteTopic(ctx context.Context, name string) error {
	_, err := c.bc.DeleteTopic(ctx, &pb.DeleteTopicRequest{Name: name})
	return grpcErr(err)
}

func (c *grpcConn) DescribeTopic(ctx context.Context, name string) (client.TopicInfo, error) {
	ti, err := c.bc.DescribeTopic(ctx, &pb.DescribeTopicRequest{Name: name})
	if err != nil {
		return client.TopicInfo{}, grpcErr(err)
	}
	info := client.TopicInfo{Name: ti.Name, Config: ti.Config, Defaults: ti.Defaults}
	for _, p := range ti.Partitions {
		info.Partitions = append(info.Partitions, client.PartitionInfo{ID: int(p.Id), StartOffset: p.StartOffset,
			EndOffset: p.EndOffset, Subscribers: int(p.Subscribers), Bytes: p.Bytes, Segments: int(p.Segments),
			Corrupt: int(p.Corrupt), Reason: p.Reason})
	}
	return info, nil
}

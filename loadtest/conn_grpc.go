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
	"google.golang.org/grpc/experimental"
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

// A producer's messages accumulate in one request (pb.PublishEncoder)
// while grpcEager or more requests are in flight, up to grpcRequestBytes;
// with fewer in flight the request goes at once, as the native client
// writes when its connection is idle. So a paced producer's messages are
// not held back, and an unpaced one's go in large requests, whose
// per-request cost (a gRPC message, an ack, a PublishBatch in the
// gateway) is spread over thousands of records: requests of 64 records
// spent most of the gateway's time on that cost.
const (
	grpcEager        = 4
	grpcRequestBytes = 256 << 10
)

func dialGRPC(_ context.Context, cfg *Config, _ []client.Option) (conn, error) {
	tc := insecure.NewCredentials()
	if cfg.TLS != nil {
		tc = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(tc),
		grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(16 << 20),
		// Reads land in buffers from pb.BufferPool, which skips the
		// clearing gRPC's default pool does; larger socket buffers mean
		// fewer system calls for streams of large messages.
		experimental.WithBufferPool(pb.BufferPool()),
		grpc.WithReadBufferSize(256 << 10), grpc.WithWriteBufferSize(256 << 10),
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
	return &grpcConn{cc: cc, bc: pb.NewBrokerClient(cc), slots: make(chan struct{}, grpcInFlight),
		requestBytes: grpcRequestBytes}, nil
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
	nextID uint64
	// enc is the request being filled, for encTopic and encPart; open
	// says it was started. It is sent when it reaches requestBytes, when
	// another target comes, when few requests are in flight, or on Flush.
	enc          pb.PublishEncoder
	encOpen      bool
	encTopic     string
	encPart      *int32
	requestBytes int
	hdrs         []pb.Header // the headers of the record being added
	hptrs        []*pb.Header
	one          [1]client.Message // PublishAsync's message as a batch
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
		if len(c.slots) < grpcEager && c.mu.TryLock() {
			// A request filling while many were in flight goes now
			// rather than with the next publish, which a paced producer
			// may make only much later. A publisher holding mu sends it
			// itself.
			err := c.sendEager(context.Background())
			c.mu.Unlock()
			if err != nil {
				return // the stream failed; its reader sees why
			}
		}
	}
}

// sendRequest sends the request being filled, if it has records. mu held.
func (c *grpcConn) sendRequest(ctx context.Context) error {
	if !c.encOpen || c.enc.Records() == 0 {
		return nil
	}
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
	c.nextID++
	c.enc.SetID(c.nextID)
	c.encOpen = false
	// SendMsg hands the encoder's buffer to gRPC and leaves it empty.
	if err := c.stream.SendMsg(&c.enc); err != nil {
		return c.streamFailure(err)
	}
	return nil
}

// sendEager sends the request being filled when few are in flight, or
// when it is full. mu held.
func (c *grpcConn) sendEager(ctx context.Context) error {
	if len(c.slots) < grpcEager || c.enc.Len() >= c.requestBytes {
		return c.sendRequest(ctx)
	}
	return nil
}

// add adds msgs to the request being filled, first sending it when it is
// for another target. mu held.
func (c *grpcConn) add(ctx context.Context, topic string, part *int32, msgs []client.Message) error {
	if c.encOpen && (topic != c.encTopic || !samePart(part, c.encPart)) {
		if err := c.sendRequest(ctx); err != nil {
			return err
		}
	}
	if !c.encOpen {
		c.enc.Start(topic, part)
		c.encOpen, c.encTopic, c.encPart = true, topic, part
	}
	for i := range msgs {
		m := &msgs[i]
		var ts int64
		if !m.Timestamp.IsZero() {
			ts = m.Timestamp.UnixNano()
		}
		c.enc.Add(m.Key, m.Value, ts, c.headers(m.Headers))
		if c.enc.Len() >= c.requestBytes {
			if err := c.sendRequest(ctx); err != nil {
				return err
			}
			c.enc.Start(topic, part)
			c.encOpen = true
		}
	}
	return c.sendEager(ctx)
}

// headers is hs as the encoder takes them, in slices reused per record.
func (c *grpcConn) headers(hs []client.Header) []*pb.Header {
	if len(hs) == 0 {
		return nil
	}
	c.hdrs, c.hptrs = c.hdrs[:0], c.hptrs[:0]
	for _, h := range hs {
		c.hdrs = append(c.hdrs, pb.Header{Key: h.Key, Value: h.Value})
	}
	for i := range c.hdrs {
		c.hptrs = append(c.hptrs, &c.hdrs[i])
	}
	return c.hptrs
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

// PublishBatchAsync adds msgs to the request being filled; the record
// bytes are copied, so msgs may be reused at once.
func (c *grpcConn) PublishBatchAsync(ctx context.Context, topic string, msgs []client.Message, opts ...client.PublishOption) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.add(ctx, topic, partitionOf(opts), msgs)
}

// PublishAsync adds msg to the request being filled.
func (c *grpcConn) PublishAsync(ctx context.Context, topic string, msg client.Message, opts ...client.PublishOption) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.one[0] = msg
	err := c.add(ctx, topic, partitionOf(opts), c.one[:])
	c.one[0] = client.Message{}
	return err
}

func samePart(a, b *int32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// Flush sends what is buffered and waits for every request's ack: it
// takes every slot, which it has once the ack reader has given them all
// back.
func (c *grpcConn) Flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.sendRequest(ctx); err != nil {
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
	c.enc.Reset()
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
	// The buffer decoded into is reused: the handler sees each record's
	// bytes only during its call.
	var resp pb.SubscribeBuffer
	d := client.Delivery{Topic: topic}
	for st.RecvMsg(&resp) == nil {
		for _, r := range resp.Response.Records {
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

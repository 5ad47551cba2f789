package grpcgw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// maxInFlight and maxInFlightBytes bound the requests a PublishStream
// holds received and not yet acknowledged, and their records' bytes. Past
// either the server stops reading the stream, and HTTP/2 flow control
// stops the client: a producer is slowed by withheld acks, never by the
// server's memory. Many small requests in flight keep a stream busy across
// the round trips of its publishes (a quarter of these was a third slower
// on a loaded two-core machine).
const (
	maxInFlight      = 256
	maxInFlightBytes = 16 << 20
)

// Publish stores one batch.
func (s *Server) Publish(ctx context.Context, req *pb.PublishRequest) (*pb.PublishResponse, error) {
	sess, release, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	var c converter
	msgs, opts, err := c.messages(req)
	if err != nil {
		return nil, err
	}
	acks, err := sess.PublishBatch(ctx, req.Topic, msgs, opts...)
	if err != nil {
		return nil, err
	}
	s.g.Metrics().Published(via, len(acks))
	resp := &pb.PublishResponse{Id: req.Id}
	fillAck(resp, acks)
	return resp, nil
}

// fillAck sets resp's acks from acks, reusing its slices.
func fillAck(resp *pb.PublishResponse, acks []client.Ack) {
	resp.Partitions, resp.Offsets = resp.Partitions[:0], resp.Offsets[:0]
	for _, a := range acks {
		resp.Partitions = append(resp.Partitions, a.Partition)
		resp.Offsets = append(resp.Offsets, a.Offset)
	}
}

// converter turns requests' records into the client's messages, reusing
// its slices from one call to the next: the messages' bytes alias the
// request's, which PublishBatch copies before it returns.
type converter struct {
	msgs    []client.Message
	headers []client.Header
}

// messages converts req's records, appended to what c holds since reset.
func (c *converter) messages(req *pb.PublishRequest) ([]client.Message, []client.PublishOption, error) {
	if req.Partition != nil && *req.Partition < 0 {
		return nil, nil, invalid("partition must not be negative")
	}
	start := len(c.msgs)
	for _, r := range req.Records {
		if r == nil {
			continue
		}
		m := client.Message{Key: r.Key, Value: r.Value}
		if len(m.Key) == 0 {
			m.Key = nil // proto3 bytes have no presence: empty is no key
		}
		if r.TimestampNs != 0 {
			m.Timestamp = time.Unix(0, r.TimestampNs)
		}
		if len(r.Headers) > 0 {
			h0 := len(c.headers)
			for _, h := range r.Headers {
				if h != nil {
					c.headers = append(c.headers, client.Header{Key: h.Key, Value: h.Value})
				}
			}
			m.Headers = c.headers[h0:len(c.headers):len(c.headers)]
		}
		c.msgs = append(c.msgs, m)
	}
	return c.msgs[start:], partitionOpts(req.Partition), nil
}

// flat is messages for a stream's request.
func (c *converter) flat(req *pb.PublishBuffer) ([]client.Message, []client.PublishOption, error) {
	var part *int32
	if req.HasPartition {
		if req.Partition < 0 {
			return nil, nil, invalid("partition must not be negative")
		}
		part = &req.Partition
	}
	start := len(c.msgs)
	for i := range req.Records {
		r := &req.Records[i]
		m := client.Message{Key: r.Key, Value: r.Value}
		if len(m.Key) == 0 {
			m.Key = nil // proto3 bytes have no presence: empty is no key
		}
		if r.TimestampNs != 0 {
			m.Timestamp = time.Unix(0, r.TimestampNs)
		}
		if len(r.Headers) > 0 {
			h0 := len(c.headers)
			for _, h := range r.Headers {
				c.headers = append(c.headers, client.Header{Key: h.Key, Value: h.Value})
			}
			m.Headers = c.headers[h0:len(c.headers):len(c.headers)]
		}
		c.msgs = append(c.msgs, m)
	}
	return c.msgs[start:], partitionOpts(part), nil
}

// reset forgets the converted messages, keeping the slices' room and
// dropping their references to the requests' bytes.
func (c *converter) reset() {
	clear(c.msgs)
	clear(c.headers)
	c.msgs, c.headers = c.msgs[:0], c.headers[:0]
}

func partitionOpts(p *int32) []client.PublishOption {
	if p == nil {
		return nil
	}
	return []client.PublishOption{client.ToPartition(int(*p))}
}

// requests holds PublishStream's requests answered, for the streams'
// readers to decode into again (pb.Codec fills their records and buffer
// anew): a stream of large requests has dozens in flight, and a request
// decoded afresh grows its slices of thousands of records (a tenth of a
// busy gateway's time). A pool, not a list per stream, lets the memory go
// when the streams are idle.
var requests = sync.Pool{New: func() any { return new(pb.PublishBuffer) }}

// PublishStream takes batches and acknowledges each, in order.
//
// A goroutine reads requests into a queue of at most maxInFlight; this
// one publishes what the queue holds. Consecutive requests for the same
// topic and partition go to the broker as one PublishBatch call, and
// their acks are split back per request: while one call waits for its
// acks, the next requests queue up and go together in the next call, so
// the stream is pipelined (the client need not wait for an ack before it
// sends more) while the records keep the stream's order.
func (s *Server) PublishStream(stream pb.Broker_PublishStreamServer) error {
	ctx := stream.Context()
	sess, err := s.dedicated(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = sess.Close() }()
	queue := make(chan *pb.PublishBuffer, maxInFlight)
	room := semaphore.NewWeighted(maxInFlightBytes)
	var recvErr error // written by the reader before it closes queue
	go func() {
		defer close(queue)
		for {
			req := requests.Get().(*pb.PublishBuffer)
			if err := stream.RecvMsg(req); err != nil {
				requests.Put(req)
				if !errors.Is(err, io.EOF) {
					recvErr = err
				}
				return
			}
			if err := room.Acquire(ctx, weight(req)); err != nil {
				return
			}
			select {
			case queue <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	p := publisher{s: s, sess: sess, stream: stream, room: room}
	for {
		var req *pb.PublishBuffer
		var ok bool
		select {
		case req, ok = <-queue:
		case <-s.stopping:
			return gateway.ErrClosed
		case <-s.g.Done():
			return gateway.ErrClosed
		case <-sess.Done():
			return sessionEnded(sess)
		}
		if !ok {
			return recvErr
		}
		p.reqs = append(p.reqs[:0], req)
		p.reqs = drain(queue, p.reqs)
		if err := p.publish(ctx); err != nil {
			return err
		}
	}
}

// drain appends what queue holds now, without waiting.
func drain(queue <-chan *pb.PublishBuffer, reqs []*pb.PublishBuffer) []*pb.PublishBuffer {
	for len(reqs) < maxInFlight {
		select {
		case r, ok := <-queue:
			if !ok {
				return reqs
			}
			reqs = append(reqs, r)
		default:
			return reqs
		}
	}
	return reqs
}

// publisher is a PublishStream's publishing side.
type publisher struct {
	s      *Server
	sess   *gateway.Session
	stream pb.Broker_PublishStreamServer
	reqs   []*pb.PublishBuffer
	room   *semaphore.Weighted
	conv   converter
	ends   []int        // ends[i]: the end of reqs[i]'s messages in conv.msgs
	acks   []client.Ack // reused by every PublishBatchInto
	resp   pb.PublishResponse
}

// publish publishes p.reqs in runs of the same topic and partition and
// answers each request.
func (p *publisher) publish(ctx context.Context) error {
	for i := 0; i < len(p.reqs); {
		j := i + 1
		for j < len(p.reqs) && sameTarget(p.reqs[i], p.reqs[j]) {
			j++
		}
		if err := p.publishRun(ctx, p.reqs[i:j]); err != nil {
			return err
		}
		i = j
	}
	for _, r := range p.reqs {
		p.room.Release(weight(r))
		requests.Put(r)
	}
	clear(p.reqs)
	return nil
}

// weight is what a request counts against maxInFlightBytes: its records'
// bytes, at most the whole bound, so that one request larger than it
// still goes through alone.
func weight(req *pb.PublishBuffer) int64 {
	return min(int64(req.Bytes()), maxInFlightBytes)
}

func sameTarget(a, b *pb.PublishBuffer) bool {
	return a.Topic == b.Topic && a.HasPartition == b.HasPartition && a.Partition == b.Partition
}

// publishRun publishes requests of one topic and partition as one batch
// and sends their acks; on a failure, the requests before the first
// failed record are still acknowledged, then the stream ends with the
// error.
func (p *publisher) publishRun(ctx context.Context, run []*pb.PublishBuffer) error {
	defer p.conv.reset()
	p.ends = p.ends[:0]
	var opts []client.PublishOption
	limit := p.sess.MaxMessageBytes()
	for i, req := range run {
		msgs, o, err := p.conv.flat(req)
		if err == nil {
			err = checkSizes(req.ID, msgs, limit)
		}
		if err != nil {
			// The requests before this one are stored and acknowledged
			// first: a bad request fails the stream from itself on, not
			// the good ones it was merged with.
			if i > 0 {
				if perr := p.sendRun(ctx, run[:i], opts); perr != nil {
					return perr
				}
			}
			return err
		}
		opts = o
		p.ends = append(p.ends, len(p.conv.msgs))
	}
	return p.sendRun(ctx, run, opts)
}

// checkSizes refuses a request with a record larger than the broker
// takes, before anything of its run is queued.
func checkSizes(id uint64, msgs []client.Message, limit int) error {
	for j := range msgs {
		m := &msgs[j]
		if size := wire.MessageSize(m.Key, m.Value, m.Headers); size > limit {
			return wire.Errorf(wire.CodeMessageTooLarge, fmt.Sprintf("request %d, record %d: %d bytes; the broker allows %d",
				id, j, size, limit))
		}
	}
	return nil
}

// sendRun publishes the messages of run (converted, p.ends[i] past the
// last of run[i]) and acknowledges each request that was stored whole, in
// order, up to the first that was not.
func (p *publisher) sendRun(ctx context.Context, run []*pb.PublishBuffer, opts []client.PublishOption) error {
	acks, err := p.sess.PublishBatchInto(ctx, p.acks, run[0].Topic, p.conv.msgs[:p.ends[len(run)-1]], opts...)
	p.acks = acks
	start := 0
	for i, req := range run {
		part := acks[start:p.ends[i]]
		if err != nil && (len(part) == 0 || !allStored(part)) {
			break // this request failed, or nothing tells that it did not
		}
		p.resp.Id = req.ID
		fillAck(&p.resp, part)
		if serr := p.stream.Send(&p.resp); serr != nil {
			return serr
		}
		p.s.g.Metrics().Published(via, len(part))
		start = p.ends[i]
	}
	return err
}

func allStored(acks []client.Ack) bool {
	for _, a := range acks {
		if a.Offset < 0 {
			return false
		}
	}
	return true
}

// sessionEnded is why a stream's session ended.
func sessionEnded(sess *gateway.Session) error {
	if err := sess.Err(); err != nil {
		return err
	}
	return gateway.ErrUnavailable
}

package grpcgw

import (
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/gateway"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// A Subscribe stream's responses are handed from the session's reader to
// the stream's sender through a queue of frameQueue responses; frameBytes
// ends a response early when a broker batch is larger, so that a response
// stays well inside a client's default receive bound (4 MiB).
const (
	frameQueue = 4
	frameBytes = 1 << 20
)

// frame is a response being filled or sent. recs keeps every Delivery
// made for it, so that the next use fills them again instead of
// allocating: resp.Records is recs[:n].
type frame struct {
	resp  pb.SubscribeResponse
	recs  []*pb.Delivery
	n     int
	bytes int
}

func (f *frame) add(d *client.Delivery) {
	if f.n == len(f.recs) {
		f.recs = append(f.recs, &pb.Delivery{})
	}
	r := f.recs[f.n]
	f.n++
	r.Partition, r.Offset, r.TimestampNs = d.Partition, d.Offset, d.Timestamp.UnixNano()
	r.Key = append(r.Key[:0], d.Key...)
	r.Value = append(r.Value[:0], d.Value...)
	old := r.Headers[:cap(r.Headers)]
	r.Headers = r.Headers[:0]
	for i, h := range d.Headers {
		ph := &pb.Header{}
		if i < len(old) && old[i] != nil {
			ph = old[i]
		}
		ph.Key, ph.Value = h.Key, append(ph.Value[:0], h.Value...)
		r.Headers = append(r.Headers, ph)
	}
	f.bytes += len(d.Key) + len(d.Value) + 32
}

// seal makes resp hold the frame's records.
func (f *frame) seal() {
	f.resp.Records = f.recs[:f.n]
}

func (f *frame) reset() {
	f.n, f.bytes = 0, 0
	f.resp.Records = nil
}

// Subscribe delivers a topic's records.
//
// The handler runs on the session's reader (client.DispatchInline) and
// copies each record into the current response; at the end of each broker
// batch (client.OnBatchEnd) the response goes to the sender, a goroutine
// of its own that writes it to the stream. When the client stops reading,
// the sender blocks in Send, the queue fills, the reader blocks, and the
// broker, whose writes to the session then stall, cuts the session as a
// slow consumer; after Config.StallTimeout the reader gives up waiting
// (put) and the call ends with ResourceExhausted. The sender is not this
// goroutine so that the call can end while Send is blocked: gRPC unblocks
// it when the call ends.
func (s *Server) Subscribe(req *pb.SubscribeRequest, stream pb.Broker_SubscribeServer) error {
	ctx := stream.Context()
	start, err := position(req.Start, client.Latest)
	if err != nil {
		return err
	}
	opts := []client.SubscribeOption{client.StartAt(start), client.DispatchInline()}
	if req.Partition != nil {
		if *req.Partition < 0 {
			return invalid("partition must not be negative")
		}
		opts = append(opts, client.FromPartition(int(*req.Partition)))
	}
	sess, err := s.dedicated(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = sess.Close() }()
	quit := make(chan struct{})
	defer close(quit) // before sess.Close: a reader blocked handing a frame over returns
	out := make(chan *frame, frameQueue)
	free := make(chan *frame, frameQueue+2)
	stalled := make(chan struct{})
	cur := new(frame)
	dead := false // the reader's: the stream is ending, take nothing more
	handoff := func() {
		if dead || cur.n == 0 {
			return
		}
		cur.seal()
		if !s.put(out, cur, quit) {
			if !dead {
				dead = true
				close(stalled)
			}
			return
		}
		select {
		case cur = <-free:
		default:
			cur = new(frame)
		}
	}
	handler := func(d *client.Delivery) {
		if dead {
			return
		}
		cur.add(d)
		if cur.bytes >= frameBytes {
			handoff()
		}
	}
	opts = append(opts, client.OnBatchEnd(handoff))
	if _, err := sess.Subscribe(ctx, req.Topic, handler, opts...); err != nil {
		return err
	}
	// The first response is empty: it tells the client that the
	// subscription is in place, so that what it publishes from now on is
	// delivered even from Latest. No other goroutine sends yet.
	if err := stream.Send(&pb.SubscribeResponse{}); err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() {
		for {
			var f *frame
			select {
			case f = <-out:
			case <-quit:
				return
			}
			n := f.n
			err := stream.Send(&f.resp)
			f.reset()
			select {
			case free <- f:
			default:
			}
			if err != nil {
				sendErr <- err
				return
			}
			s.g.Metrics().Delivered(via, n)
		}
	}()
	select {
	case err := <-sendErr:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopping:
		return gateway.ErrClosed
	case <-s.g.Done():
		return gateway.ErrClosed
	case <-sess.Done():
		return sessionEnded(sess)
	case <-stalled:
		return wire.Errorf(wire.CodeSlowConsumer, "slow consumer: the client took no message for "+s.stall.String())
	}
}

// put hands f to the sender. When the sender is stuck (the client reads
// nothing) for the stall bound it gives up and returns false: the reader
// that waits here is the session's, and only once it returns can the
// session see that the broker cut it as a slow consumer. It also returns
// false when the call ends.
func (s *Server) put(out chan<- *frame, f *frame, quit <-chan struct{}) bool {
	select {
	case out <- f:
		return true
	default:
	}
	t := time.NewTimer(s.stall)
	defer t.Stop()
	select {
	case out <- f:
		return true
	case <-quit:
	case <-t.C:
	}
	return false
}

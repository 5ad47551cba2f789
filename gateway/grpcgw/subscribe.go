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

// frame is a response being filled or sent: the records are encoded as
// they come (pb.SubscribeEncoder), and gRPC takes the encoded buffer as it
// is when the frame is sent.
type frame struct {
	enc   pb.SubscribeEncoder
	n     int
	bytes int
	hdrs  []pb.Header // the headers of the record being added
	hptrs []*pb.Header
}

func (f *frame) add(d *client.Delivery) {
	var hs []*pb.Header
	if len(d.Headers) > 0 {
		f.hdrs, f.hptrs = f.hdrs[:0], f.hptrs[:0]
		for _, h := range d.Headers {
			f.hdrs = append(f.hdrs, pb.Header{Key: h.Key, Value: h.Value})
		}
		for i := range f.hdrs {
			f.hptrs = append(f.hptrs, &f.hdrs[i])
		}
		hs = f.hptrs
	}
	f.enc.Add(d.Partition, d.Offset, d.Key, d.Value, d.Timestamp.UnixNano(), hs)
	f.n++
	f.bytes += len(d.Key) + len(d.Value) + 32
}

// reset empties the frame; a buffer a failed send left is released.
func (f *frame) reset() {
	f.n, f.bytes = 0, 0
	f.enc.Reset()
	clear(f.hdrs)
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
	sub, err := sess.Subscribe(ctx, req.Topic, handler, opts...)
	if err != nil {
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
			// SendMsg takes the encoder's buffer (pb.Codec).
			err := stream.SendMsg(&f.enc)
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
	case <-sub.Done():
		if err := sess.Err(); err != nil {
			return sessionEnded(sess)
		}
		return wire.Errorf(wire.CodeShuttingDown, "the subscription ended")
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

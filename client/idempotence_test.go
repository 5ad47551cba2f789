package client_test

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// idemBroker accepts one connection, answers Hello, InitProducer and
// DescribeTopic itself, and hands each Publish to the test, which acks it
// when it likes: enough to watch how an idempotent client numbers and
// paces its batches.
type idemBroker struct {
	ln         net.Listener
	partitions int
	publishes  chan idemPublish
	wmu        sync.Mutex
	conn       net.Conn
	ids        chan int64 // the producer ids to hand out, in order
}

type idemPublish struct {
	corr      uint32
	partition int32
	id        int64
	seq       int32
	count     int
}

func newFakeBroker(t *testing.T, partitions int, ids ...int64) *idemBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &idemBroker{ln: ln, partitions: partitions, publishes: make(chan idemPublish, 1000),
		ids: make(chan int64, len(ids))}
	for _, id := range ids {
		f.ids <- id
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		f.wmu.Lock()
		f.conn = conn
		f.wmu.Unlock()
		f.serve(conn)
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.wmu.Lock()
		if f.conn != nil {
			_ = f.conn.Close()
		}
		f.wmu.Unlock()
		<-done
	})
	return f
}

func (f *idemBroker) send(frame []byte) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	_, _ = f.conn.Write(frame)
}

func (f *idemBroker) serve(conn net.Conn) {
	r := bufio.NewReader(conn)
	for {
		h, body, err := readTestFrame(r)
		if err != nil {
			return
		}
		switch h.Type {
		case wire.TypeHello:
			ok := wire.HelloOK{Version: wire.Version, MaxFrameBytes: wire.DefaultMaxFrameBytes,
				MaxMessageBytes: wire.DefaultMaxMessageBytes, ServerName: "fake"}
			b := ok.Append(nil)
			f.send(append(wire.AppendHeader(nil, wire.TypeHelloOK, 0, h.Corr, len(b)), b...))
		case wire.TypeInitProducer:
			f.send(wire.AppendProducerID(nil, h.Corr, <-f.ids))
		case wire.TypeDescribeTopic:
			info := wire.TopicInfo{Name: string(body[2:]), Partitions: make([]wire.PartitionInfo, f.partitions)}
			for i := range info.Partitions {
				info.Partitions[i].ID = uint32(i)
			}
			b := info.Append(nil, wire.Version)
			f.send(append(wire.AppendHeader(nil, wire.TypeTopicInfo, 0, h.Corr, len(b)), b...))
		case wire.TypePublish:
			v, err := wire.DecodeBatchView(body)
			if err != nil {
				return
			}
			f.publishes <- idemPublish{corr: h.Corr, partition: v.Partition, id: v.Batch.ProducerID(),
				seq: v.Batch.ProducerSeq(), count: v.Batch.Count()}
		}
	}
}

func (f *idemBroker) ack(p idemPublish) {
	f.send(wire.AppendPublishAck(nil, p.corr, wire.PublishAck{Partition: p.partition, Count: uint32(p.count)}))
}

func (f *idemBroker) fail(p idemPublish, code wire.Code) {
	b := wire.AppendError(nil, code, "injected")
	f.send(append(wire.AppendHeader(nil, wire.TypeError, 0, p.corr, len(b)), b...))
}

// next waits for the next Publish the client sends.
func (f *idemBroker) next(t *testing.T) idemPublish {
	t.Helper()
	select {
	case p := <-f.publishes:
		return p
	case <-time.After(30 * time.Second):
		t.Fatal("no publish arrived")
		return idemPublish{}
	}
}

// none checks that no Publish is waiting: the client sent everything it
// was allowed to, since it sends at once. A publish that is not sent yet
// would show up in the next check that expects one.
func (f *idemBroker) none(t *testing.T) {
	t.Helper()
	select {
	case p := <-f.publishes:
		t.Fatalf("unexpected publish %+v", p)
	default:
	}
}

// TestIdempotentClientNumbersBatchesPerPartition: every batch carries the
// producer id from the broker and its partition's sequence, counted in
// records; unkeyed messages go to a partition the client picks.
func TestIdempotentClientNumbersBatchesPerPartition(t *testing.T) {
	f := newFakeBroker(t, 2, 42)
	c := dialT(t, f.ln.Addr().String(), client.WithIdempotence())
	require.Equal(t, int64(42), c.ProducerID())
	ctx := ctxT(t)
	next := map[int32]int32{}
	for i := range 6 {
		n := 1 + i%3
		msgs := make([]client.Message, n)
		for j := range msgs {
			msgs[j] = client.Message{Value: fmt.Appendf(nil, "%d-%d", i, j)}
		}
		require.NoError(t, c.PublishBatchAsync(ctx, "t", msgs, client.ToPartition(i%2)))
		p := f.next(t)
		require.Equal(t, int32(i%2), p.partition)
		require.Equal(t, int64(42), p.id)
		require.Equal(t, next[p.partition], p.seq, "batch %d", i)
		require.Equal(t, n, p.count)
		next[p.partition] += int32(n)
		f.ack(p)
	}
	// Unkeyed: not PartitionAny, a partition of the topic, numbered there.
	require.NoError(t, c.PublishAsync(ctx, "t", client.Message{Value: []byte("x")}))
	p := f.next(t)
	require.Contains(t, []int32{0, 1}, p.partition)
	require.Equal(t, next[p.partition], p.seq)
	f.ack(p)
	require.NoError(t, c.Flush(ctx))
}

// TestIdempotentClientBoundsBatchesInFlight: at most ProducerWindow
// batches per partition are unanswered; the next waits for an ack, and
// another partition does not wait for this one.
func TestIdempotentClientBoundsBatchesInFlight(t *testing.T) {
	f := newFakeBroker(t, 2, 7)
	c := dialT(t, f.ln.Addr().String(), client.WithIdempotence())
	ctx := ctxT(t)
	publish := func(part int) {
		require.NoError(t, c.PublishBatchAsync(ctx, "t", []client.Message{{Value: []byte("v")}}, client.ToPartition(part)))
	}
	var sent []idemPublish
	for range client.ProducerWindow {
		publish(0)
		sent = append(sent, f.next(t))
	}
	publish(0) // the sixth: held
	publish(1) // another partition: sent
	p := f.next(t)
	require.Equal(t, int32(1), p.partition)
	f.ack(p)
	f.none(t)

	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush(ctx) }()
	f.ack(sent[0]) // room for the sixth
	sixth := f.next(t)
	require.Equal(t, int32(0), sixth.partition)
	require.Equal(t, int32(client.ProducerWindow), sixth.seq)
	for _, p := range append(sent[1:], sixth) {
		f.ack(p)
	}
	require.NoError(t, <-flushed)
}

// TestIdempotentClientRenewsAfterAFailure: a batch refused as not stored
// leaves a hole in its partition's sequence; the client takes a new
// producer id and numbers from 0 again, and batches sealed meanwhile wait
// for it.
func TestIdempotentClientRenewsAfterAFailure(t *testing.T) {
	f := newFakeBroker(t, 1, 7, 8)
	var errs []error
	var mu sync.Mutex
	c := dialT(t, f.ln.Addr().String(), client.WithIdempotence(), client.WithErrorHandler(func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}))
	ctx := ctxT(t)
	require.NoError(t, c.PublishBatchAsync(ctx, "t", []client.Message{{Value: []byte("a")}}, client.ToPartition(0)))
	p := f.next(t)
	require.Equal(t, int32(0), p.seq)
	f.fail(p, wire.CodeStorageFull)
	require.ErrorIs(t, c.Flush(ctx), client.ErrStorageFull)
	require.Eventually(t, func() bool { return c.ProducerID() == 8 }, 30*time.Second, time.Millisecond)
	require.NoError(t, c.PublishBatchAsync(ctx, "t", []client.Message{{Value: []byte("b")}}, client.ToPartition(0)))
	p = f.next(t)
	require.Equal(t, int64(8), p.id)
	require.Equal(t, int32(0), p.seq)
	f.ack(p)
	require.NoError(t, c.Flush(ctx))
}

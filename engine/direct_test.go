package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// dialSmallWindow connects a raw client whose receive buffer is a few
// kilobytes, so the broker's socket to it fills after little data.
func dialSmallWindow(t *testing.T, e *Engine) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", e.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

// TestDirectWritesKeepOrderWhenSocketFills publishes on one event loop to
// a subscriber on the other, one message per publish, so each delivery is
// written directly by the publisher's loop (FlushDirect). The subscriber
// reads nothing until every publish is acked, so its socket fills: direct
// writes come up short, their rest goes to the subscriber's own loop, and
// from then on gnet's backlog keeps the direct path off until that loop
// has written it. Every message must still arrive once and in order. On a
// memory topic the publisher's loop writes the deliveries; on a durable one
// with fsync=always, the syncer does, after the fsync.
func TestDirectWritesKeepOrderWhenSocketFills(t *testing.T) {
	for _, tc := range []client.TopicConfig{
		{Partitions: 1, Storage: "memory"},
		{Partitions: 1, Storage: "disk", Fsync: "always"},
	} {
		t.Run(tc.Storage, func(t *testing.T) { testDirectWrites(t, tc) })
	}
}

func testDirectWrites(t *testing.T, tc client.TopicConfig) {
	e := startBroker(t, func(c *Config) {
		c.EventLoops = 2
		// The subscriber stops reading while most messages are published,
		// which on a loaded machine can take longer than the stuck and
		// slow-consumer bounds: it stands for a slow reader, never for a
		// stuck one, so neither may end its subscription.
		c.StuckConsumerAfter, c.SlowConsumerTimeout = time.Hour, time.Hour
	})
	ctx := testCtx(t)
	pub := dial(t, e) // the first connection: loop 0
	require.NoError(t, pub.CreateTopic(ctx, "direct", tc))

	sub := dialSmallWindow(t, e) // the second: loop 1
	sub.hello()
	sub.sendFrame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: "direct", Partition: wire.PartitionAny}).Append(nil))
	require.Equal(t, wire.TypeSubscribeOK, sub.next().Type)

	// 6 MiB: more than the socket buffers hold, less than the quarter of
	// MaxPendingBytes at which the broker would hold acks back. The
	// subscriber reads nothing until three quarters are published, then reads
	// slower than the publisher, so the socket keeps filling and draining
	// while gnet holds a backlog: a direct write then must not overtake it.
	const n, size = 3072, 2048
	started := make(chan struct{})
	received := make(chan error, 1)
	go func() { received <- readInOrder(sub, n, size, started) }()
	val := make([]byte, size)
	for i := range n {
		if i == 3*n/4 {
			close(started)
		}
		binary.BigEndian.PutUint32(val, uint32(i))
		_, err := pub.Publish(ctx, "direct", client.Message{Value: val})
		require.NoError(t, err)
	}
	require.NoError(t, <-received, "broker counters: %+v", e.srv.Counters())
	st := e.Stats()
	require.Positive(t, st.DirectWrites, "no delivery was written by the publisher's loop or the syncer")
	require.Positive(t, st.DirectShort, "the subscriber's socket never refused part of a direct write")
}

// readInOrder reads n deliveries of size bytes, numbered in order, after
// start is closed, pausing every few frames.
func readInOrder(sub *rawConn, n, size int, start chan struct{}) error {
	<-start
	next := 0
	for frames := 0; next < n; frames++ {
		if frames%8 == 7 {
			time.Sleep(2 * time.Millisecond) // a slow reader, under test: its socket refuses part of direct writes
		}
		f, err := sub.read(10 * time.Second)
		if err != nil {
			return fmt.Errorf("after %d messages: %w", next, err)
		}
		if f.Type == wire.TypeError {
			e, _ := wire.DecodeError(f.Body)
			return fmt.Errorf("error after %d messages: %v", next, e)
		}
		if f.Type != wire.TypeDeliver {
			return fmt.Errorf("frame type %v after %d messages", f.Type, next)
		}
		v, err := wire.DecodeBatchView(f.Body)
		if err != nil {
			return err
		}
		it := v.Batch.Records()
		var r wire.Record
		for it.Next(&r) {
			if r.Offset != int64(next) || len(r.Value) != size || binary.BigEndian.Uint32(r.Value) != uint32(next) {
				return fmt.Errorf("message %d: offset %d, %d bytes, payload %d", next, r.Offset, len(r.Value),
					binary.BigEndian.Uint32(r.Value))
			}
			next++
		}
		if err := it.Err(); err != nil {
			return err
		}
	}
	if _, err := sub.read(100 * time.Millisecond); err == nil {
		return errors.New("a frame after the last delivery")
	}
	return nil
}

// TestResetSubscribersDoNotHangTheLoop: when a write fails (the peer reset
// the connection), gnet closes the connection from inside that write,
// calling OnClose on the loop while the loop's flush holds the
// connection's write lock. Subscribers resetting their connections while a
// publisher keeps them busy must leave the loop serving.
func TestResetSubscribersDoNotHangTheLoop(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.EventLoops = 1 })
	ctx := testCtx(t)
	pub := dial(t, e)
	require.NoError(t, pub.CreateTopic(ctx, "resets", client.TopicConfig{Partitions: 1, Storage: "memory"}))
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		val := make([]byte, 1024)
		for pctx.Err() == nil {
			_ = pub.PublishAsync(pctx, "resets", client.Message{Value: val})
		}
	})
	for start := time.Now(); time.Since(start) < 2*time.Second; {
		c, err := net.DialTimeout("tcp", e.Addr().String(), 5*time.Second)
		require.NoError(t, err)
		sub := &rawConn{t: t, c: c}
		sub.hello()
		sub.sendFrame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: "resets", Partition: wire.PartitionAny}).Append(nil))
		require.Equal(t, wire.TypeSubscribeOK, sub.next().Type)
		require.NoError(t, c.(*net.TCPConn).SetLinger(0))
		require.NoError(t, c.Close()) // a reset, with deliveries on the way
	}
	stop()
	wg.Wait()
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := pub.Publish(actx, "resets", client.Message{Value: []byte("alive")})
	require.NoError(t, err, "the loop still serves")
}

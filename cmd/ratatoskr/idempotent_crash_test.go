package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// idemConn is a raw protocol connection: the test controls every frame,
// so it can resend the exact bytes of unacknowledged batches after a
// restart without the client's reconnect logic.
type idemConn struct {
	c  net.Conn
	rd []byte
}

func dialIdem(t *testing.T, addr string) *idemConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	ic := &idemConn{c: c}
	body := (&wire.Hello{MinVersion: 1, MaxVersion: 2, ClientName: "idem"}).Append(nil)
	require.NoError(t, ic.write(append(wire.AppendHeader(nil, wire.TypeHello, 0, 1, len(body)), body...)))
	f, err := ic.read()
	require.NoError(t, err)
	require.Equal(t, wire.TypeHelloOK, f.Type)
	return ic
}

func (ic *idemConn) write(b []byte) error {
	_ = ic.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := ic.c.Write(b)
	return err
}

func (ic *idemConn) read() (wire.Frame, error) {
	_ = ic.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		f, n, err := wire.ReadFrame(ic.rd, 1<<30)
		if err != nil {
			return f, err
		}
		if n > 0 {
			f.Body = append([]byte(nil), f.Body...)
			ic.rd = ic.rd[n:]
			return f, nil
		}
		buf := make([]byte, 64<<10)
		m, err := ic.c.Read(buf)
		ic.rd = append(ic.rd, buf[:m]...)
		if err != nil {
			return f, err
		}
	}
}

// TestKill9IdempotentRetryStoresOnce publishes idempotent batches,
// pipelined five deep as the client does, to an fsync=always topic, kills
// the broker with SIGKILL once a random number of them are acked, restarts
// it (the producer table rebuilt from the log), and resends on a new
// connection, byte for byte and in order, every unacknowledged batch and
// the five acked before them. The log then holds every batch sent exactly
// once, in order.
func TestKill9IdempotentRetryStoresOnce(t *testing.T) {
	data := t.TempDir()
	s := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.addr, client.WithoutIdempotence())
	require.NoError(t, err)
	require.NoError(t, c.CreateTopic(ctx, "k9i", client.TopicConfig{Storage: "disk", Fsync: "always"}))
	_ = c.Close()

	ic := dialIdem(t, s.addr)
	require.NoError(t, ic.write(wire.AppendHeader(nil, wire.TypeInitProducer, 0, 2, 0)))
	f, err := ic.read()
	require.NoError(t, err)
	id, err := wire.DecodeProducerID(f.Body)
	require.NoError(t, err)

	const total = 5000
	frames := make([][]byte, total)
	for i := range frames {
		buf, start := wire.StartFrame(nil, wire.TypePublish, 0, uint32(i+10))
		buf = wire.AppendBatchPrefix(buf, "k9i", 0)
		var bb wire.BatchBuilder
		bb.Start(buf, id, int32(2*i))
		bb.Append(time.Now().UnixNano(), nil, fmt.Appendf(nil, "%d-0", i), nil)
		bb.Append(time.Now().UnixNano(), nil, fmt.Appendf(nil, "%d-1", i), nil)
		frames[i] = bb.Finish()
		wire.FinishFrame(frames[i], start)
	}

	// Pipelined: a sender keeps at most five batches unanswered.
	var mu sync.Mutex
	acks := map[int]int64{} // batch -> base offset
	window := make(chan struct{}, 5)
	sent := 0
	killAt := 20 + rand.IntN(400)
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for {
			f, err := ic.read()
			if err != nil {
				return
			}
			a, err := wire.DecodePublishAck(f.Body)
			if f.Type != wire.TypePublishAck || err != nil {
				t.Errorf("answer %v: %v", f.Type, err)
				return
			}
			mu.Lock()
			acks[int(f.Corr)-10] = a.BaseOffset
			n := len(acks)
			mu.Unlock()
			<-window
			if n == killAt {
				if err := s.cmd.Process.Kill(); err != nil {
					t.Errorf("kill: %v", err)
				}
			}
		}
	}()
send:
	for sent < total {
		select {
		case window <- struct{}{}:
		case <-killed:
			break send
		}
		sent++ // handed to the socket, whole or not
		if ic.write(frames[sent-1]) != nil {
			break
		}
	}
	<-killed
	if err := <-s.exited; err == nil {
		t.Fatal("a broker killed with SIGKILL exited cleanly")
	}
	s.exited <- errors.New("killed")
	// Acks of a partition come in order: the acked batches are a prefix.
	firstUnacked := 0
	for {
		if _, ok := acks[firstUnacked]; !ok {
			break
		}
		firstUnacked++
	}
	require.Len(t, acks, firstUnacked)
	t.Logf("acked %d batches (kill at %d), sent %d", firstUnacked, killAt, sent)

	s = startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	ic = dialIdem(t, s.addr)
	// The unacked batches are what a client resends. Acked ones are sent
	// again too: the partition remembers its last 5 stored batches, and at
	// most sent-1 was stored, so those from sent-5 on get their original
	// ack; an older one may be DUPLICATE_SEQUENCE (stored before, not
	// again).
	for i := max(firstUnacked-5, 0); i < sent; i++ {
		require.NoError(t, ic.write(frames[i]))
		f, err := ic.read()
		require.NoError(t, err)
		if f.Type == wire.TypeError && i < sent-5 {
			e, err := wire.DecodeError(f.Body)
			require.NoError(t, err)
			require.Equal(t, wire.CodeDuplicateSequence, e.Code, "batch %d: %v", i, e)
			continue
		}
		require.Equal(t, wire.TypePublishAck, f.Type, "batch %d", i)
		a, err := wire.DecodePublishAck(f.Body)
		require.NoError(t, err)
		if base, ok := acks[i]; ok {
			require.Equal(t, base, a.BaseOffset, "batch %d was acked before the kill", i)
		}
		require.Equal(t, int64(2*i), a.BaseOffset, "batch %d", i)
	}

	c, err = client.Dial(ctx, s.addr, client.WithoutIdempotence())
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	var n int64
	pos := client.Earliest
	for {
		f, err := c.Fetch(ctx, "k9i", 0, pos)
		require.NoError(t, err)
		for _, m := range f.Messages {
			require.Equal(t, fmt.Sprintf("%d-%d", n/2, n%2), string(m.Value), "offset %d", n)
			n++
		}
		if len(f.Messages) == 0 || f.Next >= f.End {
			break
		}
		pos = client.AtOffset(f.Next)
	}
	require.Equal(t, int64(2*sent), n, "every batch sent, once")
}

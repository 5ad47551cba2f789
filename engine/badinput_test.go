package engine

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// rawConn is a protocol-level connection for sending whatever bytes a test
// wants and reading frames back.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	rd []byte
}

func dialRaw(t testing.TB, e *Engine) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.Addr().String(), 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

func (r *rawConn) send(b []byte) {
	r.t.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := r.c.Write(b)
	require.NoError(r.t, err)
}

func (r *rawConn) sendFrame(t wire.Type, corr uint32, body []byte) {
	r.send(append(wire.AppendHeader(nil, t, 0, corr, len(body)), body...))
}

func (r *rawConn) hello() {
	r.t.Helper()
	r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: 1, MaxVersion: 1, ClientName: "raw"}).Append(nil))
	f := r.next()
	require.Equal(r.t, wire.TypeHelloOK, f.Type)
}

// next reads one frame, failing the test on timeout or close.
func (r *rawConn) next() wire.Frame {
	r.t.Helper()
	f, err := r.read(5 * time.Second)
	require.NoError(r.t, err)
	return f
}

func (r *rawConn) read(timeout time.Duration) (wire.Frame, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, n, err := wire.ReadFrame(r.rd, 1<<30)
		if err != nil {
			return f, err
		}
		if n > 0 {
			f.Body = append([]byte(nil), f.Body...)
			r.rd = r.rd[n:]
			return f, nil
		}
		buf := make([]byte, 64<<10)
		m, err := r.c.Read(buf)
		r.rd = append(r.rd, buf[:m]...)
		if err != nil {
			return f, err
		}
	}
}

// expectErrorThenClose reads an Error frame with the wanted code and then
// end of stream.
func (r *rawConn) expectErrorThenClose(code wire.Code) {
	r.t.Helper()
	f := r.next()
	require.Equal(r.t, wire.TypeError, f.Type, "expected an Error frame")
	e, err := wire.DecodeError(f.Body)
	require.NoError(r.t, err)
	require.Equal(r.t, code, e.Code, "error %v", e)
	r.expectClosed()
}

func (r *rawConn) expectClosed() {
	r.t.Helper()
	for {
		_, err := r.read(5 * time.Second)
		if err == nil {
			continue
		}
		var ne net.Error
		require.False(r.t, errors.As(err, &ne) && ne.Timeout(), "connection still open")
		return
	}
}

func publishFrame(topic string, partition int32, corr uint32, values ...string) []byte {
	buf, start := wire.StartFrame(nil, wire.TypePublish, 0, corr)
	buf = wire.AppendBatchPrefix(buf, topic, partition)
	var bb wire.BatchBuilder
	bb.Start(buf, -1, -1)
	for _, v := range values {
		bb.Append(time.Now().UnixNano(), nil, []byte(v), nil)
	}
	buf = bb.Finish()
	wire.FinishFrame(buf, start)
	return buf
}

// TestBadInput sends each kind of bad input on its own connection and
// checks it gets an error frame (where one can be sent) and is closed,
// while a healthy client on the same broker keeps publishing and receiving.
func TestBadInput(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	healthy := dial(t, e)
	got := make(chan string, 100)
	_, err := healthy.Subscribe(ctx, "healthy", func(d *client.Delivery) { got <- string(d.Value) })
	require.NoError(t, err)

	header := func(length uint32, typ wire.Type) []byte {
		b := binary.BigEndian.AppendUint32(nil, length)
		return append(b, byte(typ), 0, 0, 0, 0, 0, 0, 9)
	}
	cases := []struct {
		name      string
		handshake bool
		send      []byte
		code      wire.Code
	}{
		{"frame before handshake", false, publishFrame("x", 0, 1, "v"), wire.CodeHandshakeRequired},
		{"garbage bytes", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wire.CodeFrameTooLarge},
		{"claims 4 GiB", true, header(0xFFFFFFFF, wire.TypePublish), wire.CodeFrameTooLarge},
		{"length below header", true, header(3, wire.TypePing), wire.CodeMalformed},
		{"unknown frame type", true, header(12, wire.Type(0x7e)), wire.CodeUnknownType},
		{"server-only frame type", true, header(12, wire.TypeDeliver), wire.CodeUnknownType},
		{"malformed body", true, append(header(15, wire.TypeCreateTopic), 0, 9, 'x'), wire.CodeMalformed},
		{"truncated publish body", true, append(header(14, wire.TypePublish), 0, 1), wire.CodeMalformed},
		{"second hello", true, append(header(12+10, wire.TypeHello), make([]byte, 10)...), wire.CodeMalformed},
		{"bad version", false, helloFrame(7, 9), wire.CodeUnsupportedVersion},
		{"credentials without auth", false, func() []byte {
			body := (&wire.Hello{MinVersion: 1, MaxVersion: 1, AuthMechanism: "token", AuthData: []byte("x")}).Append(nil)
			return append(wire.AppendHeader(nil, wire.TypeHello, 0, 1, len(body)), body...)
		}(), wire.CodeAuthFailed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, e)
			if c.handshake {
				r.hello()
			}
			r.send(c.send)
			r.expectErrorThenClose(c.code)
		})
	}

	// Bad content inside a well-formed frame gets an error and the
	// connection stays usable.
	r := dialRaw(t, e)
	r.hello()
	corrupt := publishFrame("healthy", 0, 5, "v")
	corrupt[len(corrupt)-1] ^= 0xff
	r.send(corrupt)
	f := r.next()
	require.Equal(t, wire.TypeError, f.Type)
	require.Equal(t, uint32(5), f.Corr)
	e2, _ := wire.DecodeError(f.Body)
	require.Equal(t, wire.CodeCorruptBatch, e2.Code)
	r.sendFrame(wire.TypePing, 6, nil)
	require.Equal(t, wire.TypePong, r.next().Type)

	_, err = healthy.Publish(ctx, "healthy", client.Message{Value: []byte("still here")})
	require.NoError(t, err)
	require.Equal(t, "still here", <-got)
	require.Equal(t, int64(2), e.Stats().Connections, "every bad connection was closed; the corrupt-batch one stays")
}

func TestTruncatedFrameThenDisconnect(t *testing.T) {
	e := startBroker(t, nil)
	r := dialRaw(t, e)
	r.hello()
	frame := publishFrame("t", 0, 1, "hello")
	r.send(frame[:len(frame)-3])
	require.NoError(t, r.c.Close())
	require.Eventually(t, func() bool { return e.Stats().Connections == 0 }, 30*time.Second, 10*time.Millisecond)
	c := dial(t, e)
	_, err := c.Publish(testCtx(t), "t", client.Message{Value: []byte("x")})
	require.NoError(t, err)
}

func TestOversizedMessage(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxMessageBytes = 1000 })
	ctx := testCtx(t)
	c := dial(t, e)
	_, err := c.Publish(ctx, "t", client.Message{Value: make([]byte, 1001)})
	require.ErrorIs(t, err, client.ErrMessageTooLarge, "the client checks the announced limit")

	// A client that ignores the limit gets an error from the broker.
	r := dialRaw(t, e)
	r.hello()
	r.send(publishFrame("t", 0, 3, string(make([]byte, 1001))))
	f := r.next()
	require.Equal(t, wire.TypeError, f.Type)
	werr, _ := wire.DecodeError(f.Body)
	require.Equal(t, wire.CodeMessageTooLarge, werr.Code)
	_, err = c.Publish(ctx, "t", client.Message{Value: make([]byte, 1000)})
	require.NoError(t, err)
}

func TestNoReadClientDoesNotHang(t *testing.T) {
	e := startBroker(t, nil)
	r := dialRaw(t, e)
	r.hello()
	// Half a header, then silence: the broker must keep serving others.
	r.send([]byte{0, 0})
	c := dial(t, e)
	_, err := c.Publish(testCtx(t), "t", client.Message{Value: []byte("x")})
	require.NoError(t, err)
}

func helloFrame(minV, maxV uint16) []byte {
	body := (&wire.Hello{MinVersion: minV, MaxVersion: maxV}).Append(nil)
	return append(wire.AppendHeader(nil, wire.TypeHello, 0, 1, len(body)), body...)
}

// TestDeliverIsCleanCopyOfPublish: flags a publisher sets do not reach
// subscribers, and a publish refused for a corrupt batch creates no topic.
func TestDeliverIsCleanCopyOfPublish(t *testing.T) {
	e := startBroker(t, nil)
	sub := dialRaw(t, e)
	sub.hello()
	sub.sendFrame(wire.TypeSubscribe, 2, (&wire.Subscribe{Topic: "clean", Partition: wire.PartitionAny}).Append(nil))
	require.Equal(t, wire.TypeSubscribeOK, sub.next().Type)

	pub := dialRaw(t, e)
	pub.hello()
	frame := publishFrame("clean", 0, 77, "v")
	frame[5] = 0x80 // flags
	pub.send(frame)
	require.Equal(t, wire.TypePublishAck, pub.next().Type)
	d := sub.next()
	require.Equal(t, wire.TypeDeliver, d.Type)
	require.Zero(t, d.Flags)
	require.Zero(t, d.Corr)

	bad := publishFrame("never-created", 0, 78, "v")
	bad[len(bad)-1] ^= 1
	pub.send(bad)
	require.Equal(t, wire.TypeError, pub.next().Type)
	require.Nil(t, e.topics.get([]byte("never-created")))
}

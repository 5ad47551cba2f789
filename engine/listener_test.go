package engine

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// dialRawFrom is dialRaw from a given loopback source address, so a test
// can play several hosts.
func dialRawFrom(t testing.TB, e *Engine, src string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", e.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

// expectRefused reads Error(LIMIT_EXCEEDED) with corr 0, then end of stream.
func (r *rawConn) expectRefused() {
	r.t.Helper()
	r.expectErrorThenClose(wire.CodeLimitExceeded)
}

func TestMaxConnectionsRefusesOneMore(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxConnections = 3 })
	conns := make([]*rawConn, 3)
	for i := range conns {
		conns[i] = dialRaw(t, e)
		conns[i].hello()
	}
	dialRaw(t, e).expectRefused()

	// A closed connection makes room again.
	require.NoError(t, conns[0].c.Close())
	require.Eventually(t, func() bool { return e.srv.Counters().Connections == 2 }, 20*time.Second, time.Millisecond)
	dialRaw(t, e).hello()
	require.Equal(t, uint64(1), e.srv.Counters().RefusedMax)
	var b bytes.Buffer
	e.writeMetrics(&b)
	require.Contains(t, b.String(), `ratatoskr_connections_refused_total{reason="max_connections"} 1`)
}

func TestUnfinishedHandshakesAreBoundedPerAddress(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxHandshakesPerAddr = 4 })
	bare := make([]*rawConn, 4)
	for i := range bare {
		bare[i] = dialRawFrom(t, e, "127.0.0.1")
	}
	dialRawFrom(t, e, "127.0.0.1").expectRefused()
	// Another host is not held back by the first one's bare connections.
	dialRawFrom(t, e, "127.0.0.2").hello()

	// A finished handshake frees its place.
	bare[0].hello()
	dialRawFrom(t, e, "127.0.0.1").hello()
	// A bare connection that closes frees its place too.
	require.NoError(t, bare[1].c.Close())
	require.Eventually(t, func() bool {
		r := dialRawFrom(t, e, "127.0.0.1")
		r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: 1, MaxVersion: 1}).Append(nil))
		f, err := r.read(10 * time.Second)
		return err == nil && f.Type == wire.TypeHelloOK
	}, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(1), e.srv.Counters().RefusedPerAddr)
}

func TestHandshakeTimeoutClosesSilentConnections(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.HandshakeTimeout = time.Second })
	good := dialRaw(t, e)
	good.hello()
	// Half a Hello, and nothing more.
	half := dialRaw(t, e)
	hello := append(wire.AppendHeader(nil, wire.TypeHello, 0, 1, 20), make([]byte, 8)...)
	half.send(hello)
	half.expectErrorThenClose(wire.CodeHandshakeRequired)
	require.Equal(t, uint64(1), e.srv.Counters().HandshakeTimeouts)

	// Both deadlines have passed; the connection that said Hello in time
	// was left alone.
	require.Eventually(t, func() bool { return e.srv.Counters().HandshakesChecked >= 2 }, 20*time.Second, time.Millisecond)
	good.sendFrame(wire.TypePing, 7, nil)
	f := good.next()
	require.Equal(t, wire.TypePong, f.Type)
	require.Equal(t, uint32(7), f.Corr)
}

// A listener that fails for good (here: its socket closed under it) is
// reported as fatal, and the broker says so, instead of living on deaf.
func TestListenerFailureIsFatal(t *testing.T) {
	e := startBroker(t, nil)
	require.Empty(t, e.srv.ListenerProblem())
	require.NoError(t, e.srv.CloseListenerSocket())
	select {
	case err := <-e.Fatal():
		require.ErrorContains(t, err, "native listener failed")
	case <-time.After(20 * time.Second):
		t.Fatal("no fatal error after the listener failed")
	}
	require.Contains(t, e.srv.ListenerProblem(), "native listener failed")
}

// The connections accepted before a burst of refusals keep working.
func TestRefusalsLeaveOthersServing(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxConnections = 4 })
	c := dial(t, e)
	// Each of the other three finishes its handshake, so all four are
	// registered before the refusals start (a refused one fails here, with
	// the broker's reason, rather than leaving the test waiting).
	for range 3 {
		dialRaw(t, e).hello()
	}
	require.Equal(t, int64(4), e.srv.Counters().Connections, "connections: %+v", e.srv.Connections())
	for range 10 {
		dialRaw(t, e).expectRefused()
	}
	_, err := c.Publish(testCtx(t), "still", client.Message{Value: []byte("up")})
	require.NoError(t, err)
	require.Equal(t, uint64(10), e.srv.Counters().RefusedMax)
}

// A connection that finished its handshake, or closed, is let go by the
// handshake deadlines at once rather than kept until its deadline.
func TestHandshakeDeadlinesLetFinishedConnectionsGo(t *testing.T) {
	e := startBroker(t, nil) // a 10 s timeout: no deadline passes during the test
	for range 50 {
		r := dialRaw(t, e)
		r.hello()
		require.NoError(t, r.c.Close())
	}
	bare := dialRaw(t, e)
	require.Eventually(t, func() bool {
		return e.srv.HandshakesHeld() == 1
	}, 30*time.Second, time.Millisecond, "only the bare connection is held")
	_ = bare
}

// A connection counts once against MaxConnections: from OnOpen on it is a
// connection, no longer one being registered, even while the goroutine
// that registered it has yet to finish. Counted twice, a burst of
// connections on a busy machine was refused below the limit.
func TestRegisteredConnectionCountsOnce(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.MaxConnections = 2 })
	hold, release := make(chan struct{}), make(chan struct{})
	var let sync.Once
	letGo := func() { let.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the broker's own cleanup, which waits for registrations
	f := func() { hold <- struct{}{}; <-release }
	e.srv.OnEnrolled(f)
	first := dialRaw(t, e)
	<-hold // registered, its goroutine not yet finished
	require.Equal(t, int64(1), e.srv.Counters().Connections+e.srv.Counters().Enrolling)
	second := dialRaw(t, e)
	select {
	case <-hold:
	case <-time.After(30 * time.Second):
		t.Fatalf("the second connection was not registered: %d refused at the limit", e.srv.Counters().RefusedMax)
	}
	letGo()
	first.hello()
	second.hello()
	require.Zero(t, e.srv.Counters().RefusedMax)
	dialRaw(t, e).expectRefused()
}

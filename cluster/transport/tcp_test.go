package transport

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
	"github.com/stretchr/testify/require"
)

// sink is a handler that records what each peer sent, in order.
type sink struct {
	mu    sync.Mutex
	got   map[uint64][]Envelope
	calls int
}

func newSink() *sink { return &sink{got: map[uint64][]Envelope{}} }

func (s *sink) handle(from uint64, envs []Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got[from] = append(s.got[from], envs...)
	s.calls++
}

func (s *sink) from(id uint64) []Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Envelope(nil), s.got[id]...)
}

func (s *sink) count(id uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got[id])
}

func (s *sink) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *sink) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.got {
		n += len(e)
	}
	return n
}

var quiet = slog.New(slog.DiscardHandler)

// testConfig is a node of cluster "test" on a free loopback port with
// short back-offs, and timeouts long enough for a loaded machine (a
// connection that timed out would break the tests' counts).
func testConfig(id uint64, h Handler) TCPConfig {
	return TCPConfig{NodeID: id, ClusterID: "test", ListenAddr: "127.0.0.1:0", Handler: h,
		BackoffMin: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Logger: quiet,
		DialTimeout: patience, HandshakeTimeout: patience, WriteTimeout: patience}
}

// startTCP starts a transport closed at the test's end.
func startTCP(t *testing.T, cfg TCPConfig) *TCP {
	t.Helper()
	tr, err := NewTCP(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// link makes every transport a peer of every other.
func link(t *testing.T, nodes map[uint64]*TCP) {
	for id, n := range nodes {
		for pid, p := range nodes {
			if pid != id {
				require.NoError(t, n.SetPeer(pid, p.Addr().String()))
			}
		}
	}
}

// TestTCPRoundTrip: three nodes send each other the messages of many
// groups from many goroutines... one per sender, so that each sender's
// order is defined; every message arrives, intact and in its sender's
// order, and the handler sees batches.
func TestTCPRoundTrip(t *testing.T) {
	noLeaks(t)
	const groups, perGroup = 64, 30
	sinks := map[uint64]*sink{}
	nodes := map[uint64]*TCP{}
	for id := uint64(1); id <= 3; id++ {
		sinks[id] = newSink()
		nodes[id] = startTCP(t, testConfig(id, sinks[id].handle))
	}
	link(t, nodes)

	var wg sync.WaitGroup
	for from, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := map[uint64]uint64{}
			for i := range perGroup {
				for g := range uint64(groups) {
					for to := range nodes {
						if to == from {
							continue
						}
						// Each Send carries one message of one group, as a
						// group's Ready would; Index counts per destination.
						n.Send(to, []Envelope{{Group: g, Msg: testMsg(from, to, seq[to], i%40)}})
						seq[to]++
					}
				}
			}
		}()
	}
	wg.Wait()
	const want = groups * perGroup
	for to, s := range sinks {
		for from := range nodes {
			if from == to {
				continue
			}
			eventually(t, func() bool { return s.count(from) == want }, "node %d got %d of %d from %d", to, s.count(from), want, from)
			got := s.from(from)
			for i, e := range got {
				require.Equal(t, uint64(i), e.Msg.Index, "node %d from %d: order", to, from)
				require.Equal(t, uint64(i%groups), e.Group)
				require.Equal(t, from, e.Msg.From)
				require.Len(t, e.Msg.Entries[0].Data, (i/groups)%40)
			}
		}
	}
	for id, n := range nodes {
		// The sender counts a write when it returns, maybe after delivery.
		eventually(t, func() bool { return n.Stats().MessagesSent == 2*want }, "node %d counted its sends", id)
		st := n.Stats()
		require.Equal(t, uint64(2*want), st.MessagesSent, "node %d", id)
		require.Equal(t, uint64(2*want), st.MessagesReceived, "node %d", id)
		require.Zero(t, st.Dropped(), "node %d", id)
		require.Zero(t, st.Reconnects, "node %d: the order above is one connection's", id)
		require.Equal(t, st.Writes, st.FramesSent, "node %d: frames fit the limit", id)
		require.LessOrEqual(t, st.FramesSent, st.MessagesSent)
		require.False(t, n.Unreachable(id%3+1))
	}
}

// holdFlushes makes a transport's writers wait, before each drain, until
// release is called; it returns when the first writer waits.
func holdFlushes(tr *TCP) (waiting <-chan struct{}, release func()) {
	w := make(chan struct{}, 1)
	gate := make(chan struct{})
	var once sync.Once
	tr.beforeFlush = func(uint64) {
		select {
		case w <- struct{}{}:
		default:
		}
		<-gate
	}
	return w, func() { once.Do(func() { close(gate) }) }
}

// TestTCPBatching: what is queued while the writer is busy leaves in one
// write, as one frame, or as several frames when the frame limit says so.
func TestTCPBatching(t *testing.T) {
	for _, c := range []struct {
		name     string
		maxFrame int
	}{{"one frame", 0}, {"split frames", 4 << 10}} {
		t.Run(c.name, func(t *testing.T) {
			noLeaks(t)
			s := newSink()
			b := startTCP(t, testConfig(2, s.handle))
			cfg := testConfig(1, func(uint64, []Envelope) {})
			cfg.MaxFrameBytes = c.maxFrame
			a := startTCP(t, cfg)
			waiting, release := holdFlushes(a)
			defer release()
			require.NoError(t, a.SetPeer(2, b.Addr().String()))

			const n = 1000
			a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 100)}})
			<-waiting // the writer woke for the first message and waits to drain
			for i := uint64(1); i < n; i++ {
				a.Send(2, []Envelope{{Group: i % 7, Msg: testMsg(1, 2, i, 100)}})
			}
			release()
			eventually(t, func() bool { return s.count(1) == n }, "got %d of %d", s.count(1), n)
			for i, e := range s.from(1) {
				require.Equal(t, uint64(i), e.Msg.Index)
			}
			eventually(t, func() bool { return a.Stats().MessagesSent == n }, "the sender counted its write")
			st := a.Stats()
			require.Equal(t, uint64(1), st.Writes, "one write for everything queued")
			if c.maxFrame == 0 {
				require.Equal(t, uint64(1), st.FramesSent)
			} else {
				require.Greater(t, st.FramesSent, uint64(10), "frames split at the limit")
			}
			require.Equal(t, st.FramesSent, b.Stats().FramesReceived)
			require.Equal(t, st.BytesSent, b.Stats().BytesReceived)
		})
	}
}

// TestTCPQueueLimit: with the writer held, Sends past the peer's queue
// limit drop and count instead of blocking; a message over the frame
// limit is dropped on Send.
func TestTCPQueueLimit(t *testing.T) {
	noLeaks(t)
	s := newSink()
	b := startTCP(t, testConfig(2, s.handle))
	cfg := testConfig(1, func(uint64, []Envelope) {})
	cfg.MaxQueueBytes = 8 << 10
	cfg.MaxFrameBytes = 64 << 10
	a := startTCP(t, cfg)
	waiting, release := holdFlushes(a)
	defer release()
	require.NoError(t, a.SetPeer(2, b.Addr().String()))

	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 100)}})
	<-waiting
	const n = 500 // about 60 KiB of messages for an 8 KiB queue
	for i := uint64(1); i < n; i++ {
		a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, i, 100)}})
	}
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, n, 100<<10)}}) // over the frame limit
	st := a.Stats()
	require.NotZero(t, st.DroppedQueueFull)
	require.Equal(t, uint64(1), st.DroppedTooLarge)
	release()
	kept := n - int(st.DroppedQueueFull)
	eventually(t, func() bool { return s.count(1) == kept }, "got %d of %d", s.count(1), kept)
	eventually(t, func() bool { return a.Stats().MessagesSent == uint64(kept) }, "sent %d of %d", a.Stats().MessagesSent, kept)

	// The queue is free again: the next message goes through.
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, n+1, 10)}})
	eventually(t, func() bool { return s.count(1) == kept+1 }, "after the drain")
}

// freeAddr is a loopback address nobody listens on (a port just freed).
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestTCPUnreachable: a peer nobody answers for is reported unreachable,
// to OnUnreachable too, and sends to it drop and count at once; an
// unknown node counts apart.
func TestTCPUnreachable(t *testing.T) {
	noLeaks(t)
	var reported atomic.Uint64
	cfg := testConfig(1, func(uint64, []Envelope) {})
	cfg.OnUnreachable = func(to uint64) { reported.Store(to) }
	a := startTCP(t, cfg)
	require.NoError(t, a.SetPeer(2, freeAddr(t)))
	eventually(t, func() bool { return a.Unreachable(2) && reported.Load() == 2 }, "peer 2 unreachable, and reported")
	before := a.Stats().DroppedUnreachable
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 1)}, {Group: 2, Msg: testMsg(1, 2, 1, 1)}})
	require.GreaterOrEqual(t, a.Stats().DroppedUnreachable, before+2)
	require.NotZero(t, a.Stats().DialFailures)

	a.Send(9, []Envelope{{Group: 1, Msg: testMsg(1, 9, 0, 1)}})
	require.Equal(t, uint64(1), a.Stats().DroppedUnknownPeer)
	require.True(t, a.Unreachable(9))

	require.Error(t, a.SetPeer(1, "127.0.0.1:1"), "itself")
	require.Error(t, a.SetPeer(0, "127.0.0.1:1"), "node 0")
	a.RemovePeer(2)
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 1)}})
	require.Equal(t, uint64(2), a.Stats().DroppedUnknownPeer)
}

// TestTCPReconnect: a peer that restarts on the same address is connected
// to again, and a peer that moves is followed.
func TestTCPReconnect(t *testing.T) {
	noLeaks(t)
	a := startTCP(t, testConfig(1, func(uint64, []Envelope) {}))
	s1 := newSink()
	b1, err := NewTCP(testConfig(2, s1.handle))
	require.NoError(t, err)
	addr := b1.Addr().String()
	require.NoError(t, a.SetPeer(2, addr))
	sendUntil := func(s *sink) func() bool {
		return func() bool {
			a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 10)}})
			return s.count(1) > 0
		}
	}
	eventually(t, sendUntil(s1), "first incarnation")
	require.NoError(t, b1.Close())

	s2 := newSink()
	cfg := testConfig(2, s2.handle)
	cfg.ListenAddr = addr
	b2 := startTCP(t, cfg)
	eventually(t, sendUntil(s2), "second incarnation on the same address")
	require.NotZero(t, a.Stats().Reconnects)
	require.False(t, a.Unreachable(2))

	// Node 2 moves to another address.
	s3 := newSink()
	b3 := startTCP(t, testConfig(2, s3.handle))
	require.NoError(t, b2.Close())
	require.NoError(t, a.SetPeer(2, b3.Addr().String()))
	eventually(t, sendUntil(s3), "third incarnation at a new address")
}

// TestTCPReconnectWhenThePeerCallsBack: a node backing off from a peer
// that was down dials it again as soon as the peer connects to it, not
// after the backoff (an hour here: the test would time out).
func TestTCPReconnectWhenThePeerCallsBack(t *testing.T) {
	noLeaks(t)
	cfg := testConfig(1, func(uint64, []Envelope) {})
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	a := startTCP(t, cfg)
	addr := freeAddr(t)
	require.NoError(t, a.SetPeer(2, addr))
	eventually(t, func() bool { return a.Stats().DialFailures > 0 }, "a's first attempt fails: backing off for an hour")

	s := newSink()
	bcfg := testConfig(2, s.handle)
	bcfg.ListenAddr = addr
	b := startTCP(t, bcfg)
	require.NoError(t, b.SetPeer(1, a.Addr().String()))
	eventually(t, func() bool {
		b.Send(1, []Envelope{{Group: 1, Msg: testMsg(2, 1, 0, 1)}}) // b calls a
		a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 10)}})
		return s.count(1) > 0
	}, "a reaches b once b connected to it")
}

// TestTCPHandshakeRefused: a peer of another cluster, or a node at the
// address of another, is refused by both sides; nothing is delivered.
func TestTCPHandshakeRefused(t *testing.T) {
	noLeaks(t)
	s := newSink()
	b := startTCP(t, testConfig(2, s.handle))
	other := testConfig(1, func(uint64, []Envelope) {})
	other.ClusterID = "another"
	a := startTCP(t, other)
	require.NoError(t, a.SetPeer(2, b.Addr().String()))
	c := startTCP(t, testConfig(3, func(uint64, []Envelope) {}))
	require.NoError(t, c.SetPeer(9, b.Addr().String())) // node 2 is not node 9

	eventually(t, func() bool {
		a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 1)}})
		c.Send(9, []Envelope{{Group: 1, Msg: testMsg(3, 9, 0, 1)}})
		return a.Unreachable(2) && c.Unreachable(9) && b.Stats().Refused >= 2
	}, "refused")
	require.NotZero(t, a.Stats().DialFailures)
	require.NotZero(t, c.Stats().DialFailures)
	require.Zero(t, s.total())
	require.Zero(t, b.Stats().FramesReceived)
}

// TestTCPAdmitDisk: the data directory ids. Node 1 knows node 3 by disk
// X; node 3 comes back with disk Y. Its messages to node 1 are refused
// (node 1 judges the dialer's hello), and node 1's messages to it are not
// sent (node 1 judges the acceptor's ack): nothing crosses either way,
// while node 2, whose disk is the one known, is admitted. An Admit that
// answers ErrNotYet refuses for now only, and admits once ready.
func TestTCPAdmitDisk(t *testing.T) {
	noLeaks(t)
	known := map[uint64]DiskID{2: {2}, 3: {'X'}}
	admit := func(peer uint64, disk DiskID) error {
		if want, ok := known[peer]; ok && want != disk {
			return fmt.Errorf("node %d's data directory is %x, not %x", peer, disk[:], want[:])
		}
		return nil
	}
	s1, s2, s3 := newSink(), newSink(), newSink()
	cfg1 := testConfig(1, s1.handle)
	cfg1.Disk, cfg1.Admit = DiskID{1}, admit
	n1 := startTCP(t, cfg1)
	cfg2 := testConfig(2, s2.handle)
	cfg2.Disk = DiskID{2}
	n2 := startTCP(t, cfg2)
	cfg3 := testConfig(3, s3.handle)
	cfg3.Disk = DiskID{'Y'}
	var refusedBy atomic.Uint64
	var refusal atomic.Pointer[string]
	cfg3.OnRefused = func(peer uint64, reason string) {
		refusedBy.Store(peer)
		refusal.Store(&reason)
	}
	n3 := startTCP(t, cfg3)
	link(t, map[uint64]*TCP{1: n1, 2: n2, 3: n3})

	eventually(t, func() bool {
		n2.Send(1, []Envelope{{Group: 1, Msg: testMsg(2, 1, 0, 1)}})
		n1.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 1)}})
		n3.Send(1, []Envelope{{Group: 1, Msg: testMsg(3, 1, 0, 1)}})
		n1.Send(3, []Envelope{{Group: 1, Msg: testMsg(1, 3, 0, 1)}})
		return s1.count(2) > 0 && s2.count(1) > 0 && n1.Stats().Refused > 0 && n3.Unreachable(1) && n1.Unreachable(3) &&
			n1.Stats().DialFailures > 0
	}, "node 2 admitted both ways, node 3 refused both ways")
	require.Zero(t, s1.count(3), "node 3's messages reached node 1")
	require.Zero(t, s3.total(), "node 1's messages reached node 3")
	require.Zero(t, n3.Stats().FramesReceived)
	eventually(t, func() bool { return refusal.Load() != nil }, "node 3 hears why node 1 refused it")
	require.Equal(t, uint64(1), refusedBy.Load())
	require.Contains(t, *refusal.Load(), "node 3's data directory is 59")

	// The handshake's refusal names the refusing node and says why.
	c := rawPeer(t, n1, false)
	_, err := c.Write(appendHello(nil, hello{version: Version, from: 3, to: 1, disk: DiskID{'Y'}, cluster: "test"}))
	require.NoError(t, err)
	_, err = readAck(c)
	require.ErrorIs(t, err, ErrNotAdmitted)
	require.ErrorContains(t, err, "by node 1")
	require.ErrorContains(t, err, "node 3's data directory is 59", "the acceptor's reason")

	// Not ready yet: refused with ErrNotYet, admitted once ready.
	var ready atomic.Bool
	s4 := newSink()
	cfg4 := testConfig(4, s4.handle)
	cfg4.Admit = func(uint64, DiskID) error {
		if !ready.Load() {
			return ErrNotYet
		}
		return nil
	}
	n4 := startTCP(t, cfg4)
	require.NoError(t, n2.SetPeer(4, n4.Addr().String()))
	eventually(t, func() bool {
		n2.Send(4, []Envelope{{Group: 1, Msg: testMsg(2, 4, 0, 1)}})
		return n4.Stats().Refused > 0
	}, "refused while not ready")
	require.Zero(t, s4.total())
	c = rawPeer(t, n4, false)
	_, err = c.Write(appendHello(nil, hello{version: Version, from: 2, to: 4, cluster: "test"}))
	require.NoError(t, err)
	_, err = readAck(c)
	require.ErrorIs(t, err, ErrNotYet)
	ready.Store(true)
	eventually(t, func() bool {
		n2.Send(4, []Envelope{{Group: 1, Msg: testMsg(2, 4, 0, 1)}})
		return s4.count(2) > 0
	}, "admitted once ready")
}

// rawPeer dials tr and, with handshake, runs the dialer's handshake by hand.
func rawPeer(t *testing.T, tr *TCP, handshake bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", tr.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(patience)))
	if handshake {
		_, err = c.Write(appendHello(nil, hello{version: Version, from: 7, to: tr.cfg.NodeID, cluster: "test"}))
		require.NoError(t, err)
		_, err = readAck(c)
		require.NoError(t, err)
	}
	return c
}

// requireClosed waits for the server to close c.
func requireClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server did not close the connection")
}

// TestTCPBadInput: malformed handshakes and frames from a raw connection
// close that connection, are counted, and do not stop the server from
// serving others.
func TestTCPBadInput(t *testing.T) {
	noLeaks(t)
	s := newSink()
	cfg := testConfig(2, s.handle)
	cfg.MaxFrameBytes = 1 << 16
	b := startTCP(t, cfg)

	bad := 0
	for name, f := range badFrames(t) {
		t.Run(name, func(t *testing.T) {
			c := rawPeer(t, b, true)
			_, err := c.Write(f.frame)
			require.NoError(t, err)
			requireClosed(t, c)
			bad++
		})
	}
	eventually(t, func() bool { return b.Stats().BadFrames == uint64(bad) }, "bad frames counted: %d", b.Stats().BadFrames)

	refused := []struct {
		name  string
		bytes []byte
	}{
		{"wrong magic", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"TLS on plaintext", []byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"node 0", appendHello(nil, hello{version: Version, from: 0, cluster: "test"})},
		{"version", appendHello(nil, hello{version: 99, from: 5, cluster: "test"})},
		{"short hello", []byte("RTKC\x00")},
	}
	for _, r := range refused {
		t.Run(r.name, func(t *testing.T) {
			c := rawPeer(t, b, false)
			_, err := c.Write(r.bytes)
			require.NoError(t, err)
			if r.name == "short hello" {
				require.NoError(t, c.(*net.TCPConn).CloseWrite())
			}
			requireClosed(t, c)
		})
	}
	eventually(t, func() bool { return b.Stats().Refused == uint64(len(refused)) }, "refused: %d", b.Stats().Refused)

	// A frame's header announcing more than the limit closes the
	// connection before any of it is read.
	c := rawPeer(t, b, true)
	var h [8]byte
	binary.BigEndian.PutUint32(h[:], 1<<30)
	_, err := c.Write(h[:])
	require.NoError(t, err)
	requireClosed(t, c)

	// The server still serves a real peer.
	a := startTCP(t, testConfig(1, func(uint64, []Envelope) {}))
	require.NoError(t, a.SetPeer(2, b.Addr().String()))
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 10)}})
	eventually(t, func() bool { return s.count(1) == 1 }, "a real peer after the bad ones")
	require.Zero(t, s.count(7), "nothing of the bad frames was delivered")
}

// TestTCPHandshakeTimeout: a dialer that says nothing is dropped after
// HandshakeTimeout, and counted.
func TestTCPHandshakeTimeout(t *testing.T) {
	noLeaks(t)
	cfg := testConfig(2, func(uint64, []Envelope) {})
	cfg.HandshakeTimeout = 50 * time.Millisecond
	b := startTCP(t, cfg)
	c := rawPeer(t, b, false)
	requireClosed(t, c)
	eventually(t, func() bool { return b.Stats().Refused == 1 }, "counted")
}

// TestTCPMutualTLS: nodes with certificates of the cluster's CA talk;
// a node without a client certificate, or with one of another CA, is
// refused.
func TestTCPMutualTLS(t *testing.T) {
	noLeaks(t)
	ca, err := devcert.Generate()
	require.NoError(t, err)
	otherCA, err := devcert.Generate()
	require.NoError(t, err)
	server, err := ca.ServerTLS(true)
	require.NoError(t, err)
	client, err := ca.ClientTLS(true)
	require.NoError(t, err)
	noCert, err := ca.ClientTLS(false)
	require.NoError(t, err)
	foreign, err := otherCA.ClientTLS(true)
	require.NoError(t, err)
	foreign.RootCAs = noCert.RootCAs // it trusts the server, the server does not trust it

	withTLS := func(id uint64, h Handler, c *tls.Config) *TCP {
		cfg := testConfig(id, h)
		cfg.ServerTLS, cfg.ClientTLS = server, c
		return startTCP(t, cfg)
	}
	sa, sb := newSink(), newSink()
	a := withTLS(1, sa.handle, client)
	b := withTLS(2, sb.handle, client)
	link(t, map[uint64]*TCP{1: a, 2: b})
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 10)}})
	b.Send(1, []Envelope{{Group: 1, Msg: testMsg(2, 1, 0, 10)}})
	eventually(t, func() bool { return sa.count(2) == 1 && sb.count(1) == 1 }, "over mutual TLS")

	for name, c := range map[string]*tls.Config{"no client certificate": noCert, "another CA": foreign} {
		t.Run(name, func(t *testing.T) {
			refused := b.Stats().Refused
			x := withTLS(3, func(uint64, []Envelope) {}, c)
			require.NoError(t, x.SetPeer(2, b.Addr().String()))
			eventually(t, func() bool {
				x.Send(2, []Envelope{{Group: 1, Msg: testMsg(3, 2, 0, 1)}})
				return x.Unreachable(2) && b.Stats().Refused > refused
			}, "refused")
			require.Zero(t, sb.count(3))
			require.NoError(t, x.Close())
		})
	}

	// A plaintext node cannot talk to a TLS one.
	plain := startTCP(t, testConfig(4, func(uint64, []Envelope) {}))
	require.NoError(t, plain.SetPeer(2, b.Addr().String()))
	eventually(t, func() bool { return plain.Unreachable(2) }, "plaintext to TLS")
	require.Zero(t, sb.count(4))
}

// TestTCPCloseUnblocks: Close returns while a dial waits on a peer that
// never answers the handshake and while a write waits on a peer that
// never reads; no goroutine is left (noLeaks). The timeouts are an hour,
// so only Close can end them.
func TestTCPCloseUnblocks(t *testing.T) {
	noLeaks(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = silent.Close() }()
	stuck, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = stuck.Close() }()
	var held sync.WaitGroup
	held.Add(2)
	handshook := make(chan struct{})
	accepted := make(chan net.Conn, 2)
	go func() { // accepts and says nothing
		defer held.Done()
		if c, err := silent.Accept(); err == nil {
			accepted <- c
		}
	}()
	go func() { // answers the handshake, then never reads
		defer held.Done()
		c, err := stuck.Accept()
		if err != nil {
			return
		}
		accepted <- c
		if _, err := readHello(c); err == nil {
			_, _ = c.Write(appendAck(nil, ack{status: statusOK, node: 3}))
		}
		close(handshook)
	}()
	defer func() {
		for range 2 {
			_ = (<-accepted).Close()
		}
		held.Wait()
	}()

	cfg := testConfig(1, func(uint64, []Envelope) {})
	cfg.HandshakeTimeout, cfg.WriteTimeout, cfg.DialTimeout = time.Hour, time.Hour, time.Hour
	a, err := NewTCP(cfg)
	require.NoError(t, err)
	require.NoError(t, a.SetPeer(2, silent.Addr().String()))
	require.NoError(t, a.SetPeer(3, stuck.Addr().String()))
	<-handshook
	eventually(t, func() bool { return a.Stats().Connects == 1 }, "connected to the stuck peer")
	// Far more than the socket buffers hold, so the writer blocks.
	for i := range 64 {
		a.Send(3, []Envelope{{Group: 1, Msg: testMsg(1, 3, uint64(i), 1<<20)}})
	}
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 1)}})
	require.NoError(t, a.Close())
	require.NoError(t, a.Close(), "twice")
	a.Send(3, []Envelope{{Group: 1, Msg: testMsg(1, 3, 0, 1)}}) // after Close: dropped, no panic
}

func TestTCPConfigValidate(t *testing.T) {
	ok := testConfig(1, func(uint64, []Envelope) {})
	for name, mod := range map[string]func(*TCPConfig){
		"node 0":          func(c *TCPConfig) { c.NodeID = 0 },
		"no cluster":      func(c *TCPConfig) { c.ClusterID = "" },
		"long cluster":    func(c *TCPConfig) { c.ClusterID = string(make([]byte, 256)) },
		"no address":      func(c *TCPConfig) { c.ListenAddr = "" },
		"no handler":      func(c *TCPConfig) { c.Handler = nil },
		"half TLS":        func(c *TCPConfig) { c.ServerTLS = &tls.Config{} },
		"self as peer":    func(c *TCPConfig) { c.Peers = map[uint64]string{1: "x:1"} },
		"tiny frames":     func(c *TCPConfig) { c.MaxFrameBytes = 8 },
		"negative limits": func(c *TCPConfig) { c.MaxQueueBytes = -1 },
	} {
		c := ok
		mod(&c)
		require.Error(t, c.Validate(), name)
	}
	c := ok
	c.WriteTimeout, c.MaxFrameBytes = 0, 0
	require.NoError(t, c.Validate())
	require.Equal(t, DefaultMaxFrameBytes, c.MaxFrameBytes)
	require.Equal(t, DefaultMaxQueueBytes, c.MaxQueueBytes)
	require.Equal(t, DefaultWriteTimeout, c.WriteTimeout)
}

// TestTCPAddPeer: AddPeer adds a node the transport does not know and
// leaves a known one where it is (SetPeer moves it); a removed node can be
// added again.
func TestTCPAddPeer(t *testing.T) {
	noLeaks(t)
	a := startTCP(t, testConfig(1, func(uint64, []Envelope) {}))
	s := newSink()
	b := startTCP(t, testConfig(2, s.handle))
	require.NoError(t, a.AddPeer(2, b.Addr().String()))
	require.NoError(t, a.AddPeer(2, "127.0.0.1:1"), "known: kept where it is")
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 0, 1)}})
	eventually(t, func() bool { return s.count(1) == 1 }, "delivered at the address first added")
	require.Error(t, a.AddPeer(1, "127.0.0.1:1"), "itself")
	a.RemovePeer(2)
	require.NoError(t, a.AddPeer(2, b.Addr().String()))
	a.Send(2, []Envelope{{Group: 1, Msg: testMsg(1, 2, 1, 1)}})
	eventually(t, func() bool { return s.count(1) == 2 }, "added again after its removal")
}

package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of TCPConfig's limits and timeouts.
const (
	DefaultMaxFrameBytes    = 64 << 20 // 64 MiB
	DefaultMaxQueueBytes    = 64 << 20 // 64 MiB per peer
	DefaultDialTimeout      = 5 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultBackoffMin       = 50 * time.Millisecond
	DefaultBackoffMax       = 5 * time.Second
)

// TCPConfig configures a TCP transport. Zero limits and timeouts take the
// defaults above.
type TCPConfig struct {
	// NodeID is this node's id, not 0.
	NodeID uint64
	// ClusterID names the cluster (1 to 255 bytes); peers of another
	// cluster are refused on both sides of the handshake.
	ClusterID string
	// Disk is this node's data directory id, sent in both directions'
	// handshakes; zero for none.
	Disk DiskID
	// Admit, when set, judges a peer's data directory on every handshake,
	// on both sides: given the peer's id and DiskID, an error refuses it.
	// The acceptor answers the dialer with a refusal; the dialer closes a
	// connection whose acceptor it does not admit. A node whose data was
	// lost so never exchanges a Raft message with the nodes that remember
	// what it had acknowledged. It runs on connection goroutines and must
	// not block for long.
	Admit func(peer uint64, disk DiskID) error
	// ListenAddr is where peers connect, such as "10.0.0.1:7400" or
	// "127.0.0.1:0" (Addr tells the port bound).
	ListenAddr string
	// Peers maps node ids to their addresses; SetPeer and RemovePeer
	// change it at run time.
	Peers map[uint64]string
	// Handler receives what peers send.
	Handler Handler
	// ServerTLS and ClientTLS turn on TLS for inbound and outbound
	// connections; both or neither. For mutual TLS between nodes, give
	// ServerTLS ClientCAs and ClientAuth tls.RequireAndVerifyClientCert, and
	// ClientTLS a certificate and RootCAs. A ClientTLS without ServerName
	// verifies each peer against the host of its address.
	ServerTLS, ClientTLS *tls.Config
	// MaxFrameBytes bounds one frame, header included, both ways: a
	// message that alone does not fit is dropped on Send, a longer frame
	// read closes its connection. Every node of a cluster should have the
	// same, or a node's frames can be too long for its peers.
	MaxFrameBytes int
	// MaxQueueBytes bounds the messages queued for one peer (their encoded
	// sizes); what does not fit is dropped.
	MaxQueueBytes int
	// DialTimeout bounds a TCP connect; HandshakeTimeout the TLS and
	// transport handshakes that follow, on both sides; WriteTimeout one
	// write of a drained queue: a peer that does not read for that long
	// loses its connection.
	DialTimeout, HandshakeTimeout, WriteTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between connection
	// attempts to a peer: it doubles from BackoffMin after each failure up
	// to BackoffMax, and each wait is drawn in [d/2, d).
	BackoffMin, BackoffMax time.Duration
	// OnRefused, when set, is called from the peer's goroutine each time
	// the peer refuses this node's handshake (its Admit), with the reason
	// it gave; it must not block.
	OnRefused func(peer uint64, reason string)
	// OnUnreachable, when set, is called from the peer's goroutine each
	// time a connection attempt or a write to that peer fails (for raft's
	// ReportUnreachable). It must not block.
	OnUnreachable func(to uint64)
	// Logger receives connection failures and refusals; nil for
	// slog.Default().
	Logger *slog.Logger
}

// Validate checks the configuration and fills in defaults.
func (c *TCPConfig) Validate() error {
	switch {
	case c.NodeID == 0:
		return errors.New("transport: NodeID must not be 0")
	case c.ClusterID == "" || len(c.ClusterID) > MaxClusterIDLen:
		return fmt.Errorf("transport: ClusterID must be 1 to %d bytes", MaxClusterIDLen)
	case c.ListenAddr == "":
		return errors.New("transport: ListenAddr is required")
	case c.Handler == nil:
		return errors.New("transport: Handler is required")
	case (c.ServerTLS == nil) != (c.ClientTLS == nil):
		return errors.New("transport: ServerTLS and ClientTLS go together")
	case c.MaxFrameBytes < 0 || c.MaxQueueBytes < 0:
		return errors.New("transport: negative limit")
	}
	for id := range c.Peers {
		if id == 0 || id == c.NodeID {
			return fmt.Errorf("transport: peer id %d: not 0 and not this node", id)
		}
	}
	c.fill()
	if c.MaxFrameBytes <= frameOverhead+minEntrySize {
		return fmt.Errorf("transport: MaxFrameBytes %d is too small", c.MaxFrameBytes)
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	return nil
}

func (c *TCPConfig) fill() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.MaxQueueBytes == 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	def(&c.DialTimeout, DefaultDialTimeout)
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// TCP is the transport between nodes over TCP (or TLS): one outbound
// connection per peer, written by the peer's goroutine (peer.go), and an
// accept loop whose connections each have a reader (inbound.go).
//
// Lock order: TCP.mu, then a peer's mu. Send takes only the peer's.
type TCP struct {
	cfg TCPConfig
	log *slog.Logger
	ln  net.Listener
	// ctx is canceled by Close; every peer's context derives from it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the transport started
	stats  counters

	// peers is replaced whole under mu (copy on write), so Send reads it
	// with one atomic load.
	peers atomic.Pointer[map[uint64]*peer]

	mu     sync.Mutex
	closed bool                  // guarded by mu
	conns  map[net.Conn]struct{} // inbound connections; guarded by mu
	byNode map[uint64]net.Conn   // the newest inbound connection of each node; guarded by mu

	// When the repeatable warnings were last logged (Unix ns): a peer
	// that keeps sending too much or keeps being refused is logged at
	// Warn once per warnInterval and at Debug in between.
	warnedTooLarge, warnedRefused atomic.Int64

	// beforeFlush, set by tests before the peers start, runs in a peer's
	// writer before it takes the queue: a test holds it to let Sends pile
	// up, so batching is checked by counts rather than timing.
	beforeFlush func(peer uint64)
}

var _ Transport = (*TCP)(nil)

// NewTCP listens on cfg.ListenAddr and starts connecting to cfg.Peers.
func NewTCP(cfg TCPConfig) (*TCP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, err
	}
	t := &TCP{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), ln: ln,
		conns: map[net.Conn]struct{}{}, byNode: map[uint64]net.Conn{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.peers.Store(&map[uint64]*peer{})
	t.wg.Add(1)
	go t.acceptLoop()
	for id, addr := range cfg.Peers {
		if err := t.SetPeer(id, addr); err != nil {
			_ = t.Close()
			return nil, err
		}
	}
	return t, nil
}

// Addr is the address the transport listens on.
func (t *TCP) Addr() net.Addr { return t.ln.Addr() }

// Stats returns the transport's counters.
func (t *TCP) Stats() Stats { return t.stats.snapshot() }

// Send queues envs for node to; see Transport.
func (t *TCP) Send(to uint64, envs []Envelope) {
	p := (*t.peers.Load())[to]
	if p == nil {
		t.stats.dropUnknown.Add(uint64(len(envs)))
		return
	}
	p.enqueue(envs)
}

// Unreachable reports whether the last attempt to reach node to failed,
// or to is not a peer.
func (t *TCP) Unreachable(to uint64) bool {
	p := (*t.peers.Load())[to]
	return p == nil || p.unreachable.Load()
}

// SetPeer adds node id at addr, or moves it there: a peer whose address
// changes loses its connection and queue and connects anew.
func (t *TCP) SetPeer(id uint64, addr string) error { return t.setPeer(id, addr, true) }

// setPeer adds node id at addr, and moves a known one there if move.
func (t *TCP) setPeer(id uint64, addr string, move bool) error {
	if id == 0 || id == t.cfg.NodeID {
		return fmt.Errorf("transport: peer id %d: not 0 and not this node", id)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	old := *t.peers.Load()
	if p := old[id]; p != nil && (p.addr == addr || !move) {
		return nil
	}
	peers := clonePeers(old)
	if p := old[id]; p != nil {
		p.stop()
	}
	p := newPeer(t, id, addr)
	peers[id] = p
	t.peers.Store(&peers)
	t.wg.Add(1)
	go p.run()
	return nil
}

// AddPeer adds node id at addr unless the transport knows it already
// (whose address only SetPeer changes): a node learns new members from
// the cluster's metadata, whose address for a known node may be older than
// its own configuration's.
func (t *TCP) AddPeer(id uint64, addr string) error { return t.setPeer(id, addr, false) }

// RemovePeer forgets node id: its connections both ways are closed and
// what was queued for it is dropped. A node that dials again is judged by
// Admit afresh.
func (t *TCP) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.byNode[id]; c != nil {
		// Its connection to this node too: a removed node dials again,
		// and hears why Admit refuses it now.
		_ = c.Close()
	}
	old := *t.peers.Load()
	p := old[id]
	if p == nil {
		return
	}
	peers := clonePeers(old)
	delete(peers, id)
	t.peers.Store(&peers)
	p.stop()
}

func clonePeers(m map[uint64]*peer) map[uint64]*peer {
	c := make(map[uint64]*peer, len(m)+1)
	for id, p := range m {
		c[id] = p
	}
	return c
}

// warnInterval spaces the repeatable warnings (warnRarely).
const warnInterval = 10 * time.Second

// warnRarely logs at Warn when last is at least warnInterval old, and at
// Debug otherwise.
func (t *TCP) warnRarely(last *atomic.Int64, msg string, args ...any) {
	now := time.Now().UnixNano()
	if prev := last.Load(); now-prev >= int64(warnInterval) && last.CompareAndSwap(prev, now) {
		t.log.Warn(msg, args...)
		return
	}
	t.log.Debug(msg, args...)
}

// Close stops the listener, every connection and goroutine, and waits for
// them; the handler is not called after it returns. Messages still queued
// are dropped.
func (t *TCP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, p := range *t.peers.Load() {
		p.stop()
	}
	t.cancel()
	err := t.ln.Close()
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return err
}

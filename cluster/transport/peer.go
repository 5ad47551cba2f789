package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// peer is the outbound side of one node pair: the queue Send fills and
// the goroutine (run) that keeps a connection to the peer and writes
// everything queued as one batch of frames per wake-up.
type peer struct {
	t    *TCP
	id   uint64
	addr string
	// ctx is canceled by stop, when the peer is removed or the transport
	// closes; stopped tells Send the same without taking ctx's lock.
	ctx     context.Context
	cancel  context.CancelFunc
	stopped atomic.Bool
	// wake has room for one token: Sends coalesce into one wake-up.
	wake chan struct{}
	// retry cuts a wait between connection attempts short (one token):
	// the peer just connected to this node, so it is back (Retry).
	retry chan struct{}
	// unreachable is set when a connection attempt or a write failed, and
	// cleared when a connection is made. While it is set Send drops.
	unreachable atomic.Bool

	// The queue is bounded by MaxQueueBytes so a peer that is slow or
	// down cannot make its sender hold unbounded memory: what does not fit
	// is dropped and counted, and Raft sends it again.
	mu     sync.Mutex
	queue  []queued // guarded by mu
	spare  []queued // the previous batch's slice, reused; guarded by mu
	queued int      // bytes of the queue's messages; guarded by mu

	// Owned by run.
	fb        frameBuf
	connected bool // a connection was made before: the next is a reconnect
	failing   bool // the last attempt failed, so it was logged already
}

// queued is one message waiting in a peer's queue with its encoded size.
type queued struct {
	group uint64
	msg   *raftpb.Message // points into the envelopes Send was given
	size  int
}

func newPeer(t *TCP, id uint64, addr string) *peer {
	p := &peer{t: t, id: id, addr: addr, wake: make(chan struct{}, 1), retry: make(chan struct{}, 1)}
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	return p
}

// stop ends the peer's goroutine and connection; later Sends drop.
func (p *peer) stop() {
	p.stopped.Store(true)
	p.cancel()
}

// enqueue is Send for this peer. Sizing happens outside the lock (proto
// caches each size in its message for the writer's marshal); small
// batches keep their sizes on the stack.
func (p *peer) enqueue(envs []Envelope) {
	var sizesBuf [32]int
	sizes := sizesBuf[:0]
	if p.unreachable.Load() || p.stopped.Load() {
		p.t.stats.dropUnreachable.Add(uint64(len(envs)))
		return
	}
	for _, e := range envs {
		sizes = append(sizes, e.Msg.Size())
	}
	var full, tooLarge uint64
	p.mu.Lock()
	for i := range envs {
		e := &envs[i]
		switch {
		case entrySize(e.Group, sizes[i])+frameOverhead > p.t.cfg.MaxFrameBytes:
			tooLarge++
		case p.queued+sizes[i] > p.t.cfg.MaxQueueBytes:
			full++
		default:
			p.queue = append(p.queue, queued{e.Group, &e.Msg, sizes[i]})
			p.queued += sizes[i]
		}
	}
	p.mu.Unlock()
	if tooLarge > 0 {
		p.t.stats.dropTooLarge.Add(tooLarge)
		p.t.warnRarely(&p.t.warnedTooLarge, "cluster transport: message over the frame limit dropped",
			"peer", p.id, "messages", tooLarge, "limit", p.t.cfg.MaxFrameBytes)
	}
	if full > 0 {
		p.t.stats.dropFull.Add(full)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take swaps the queue for the spare slice and returns what was queued.
func (p *peer) take() []queued {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.queue
	p.queue, p.spare, p.queued = p.spare[:0], nil, 0
	return q
}

// giveBack returns a written batch's slice for reuse, its pointers cleared
// so the messages can be collected.
func (p *peer) giveBack(q []queued) {
	clear(q)
	if cap(q) > 1<<16 {
		return // let an unusually large batch's slice go
	}
	p.mu.Lock()
	p.spare = q[:0]
	p.mu.Unlock()
}

// run keeps a connection to the peer and writes what is queued, until
// the peer is stopped.
func (p *peer) run() {
	defer p.t.wg.Done()
	var c *outConn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	backoff := time.Duration(0)
	for {
		if c == nil {
			if !p.sleep(backoff) {
				return
			}
			conn, err := p.t.dial(p.ctx, p.addr, p.id)
			if err != nil {
				p.failed(err, "connect")
				backoff = p.nextBackoff(backoff)
				continue
			}
			c = p.up(conn)
			backoff = p.t.cfg.BackoffMin
		}
		select {
		case <-p.ctx.Done():
			return
		case <-c.dead:
			c.close()
			c = nil
			p.failed(errPeerClosed, "read")
			continue
		case <-p.wake:
		}
		if err := p.flush(c.conn); err != nil {
			c.close()
			c = nil
			p.failed(err, "write")
		}
	}
}

var errPeerClosed = errors.New("transport: peer closed the connection")

// flush writes everything queued as frames with one write.
func (p *peer) flush(conn net.Conn) error {
	if h := p.t.beforeFlush; h != nil {
		h(p.id)
	}
	q := p.take()
	defer p.giveBack(q)
	if len(q) == 0 {
		return nil
	}
	if cap(p.fb.b) > bigBuffer {
		p.fb.b = nil
	}
	p.fb.reset(p.t.cfg.MaxFrameBytes)
	msgs := 0
	for _, m := range q {
		if err := p.fb.add(m.group, m.msg, m.size); err != nil {
			p.t.stats.dropTooLarge.Add(1)
			p.t.log.Error("cluster transport: message not encoded", "peer", p.id, "err", err)
			continue
		}
		msgs++
	}
	p.fb.finish()
	if p.fb.frames == 0 {
		return nil
	}
	_ = conn.SetWriteDeadline(time.Now().Add(p.t.cfg.WriteTimeout))
	p.t.stats.writes.Add(1)
	if _, err := conn.Write(p.fb.b); err != nil {
		p.t.stats.dropUnreachable.Add(uint64(msgs))
		return err
	}
	// Counted once the write returned, which can be after the peer
	// handled the frames; messages last, so a reader that saw them sees
	// the frames and bytes too.
	s := &p.t.stats
	s.framesSent.Add(uint64(p.fb.frames))
	s.bytesSent.Add(uint64(len(p.fb.b)))
	s.msgsSent.Add(uint64(msgs))
	return nil
}

// up records a new connection and starts its watcher.
func (p *peer) up(conn net.Conn) *outConn {
	if p.connected {
		p.t.stats.reconnects.Add(1)
	}
	p.t.stats.connects.Add(1)
	p.connected = true
	if p.failing {
		p.t.log.Info("cluster transport: peer reachable again", "peer", p.id, "addr", p.addr)
	}
	p.failing = false
	p.unreachable.Store(false)
	c := &outConn{conn: conn, dead: make(chan struct{})}
	// A stop closes the connection at once, even under a blocked write.
	// The stop's close must not read unhook: a peer stopped already runs
	// it at once, on another goroutine, before the assignment.
	c.unhook = context.AfterFunc(p.ctx, c.closeConn)
	p.t.wg.Add(1)
	go c.watch(&p.t.wg)
	return c
}

// failed marks the peer unreachable, drops its queue and tells
// OnUnreachable. Only the first failure in a row is logged as a warning.
func (p *peer) failed(err error, op string) {
	if p.ctx.Err() != nil {
		return // stopping: not the peer's fault
	}
	p.unreachable.Store(true)
	if op == "connect" {
		p.t.stats.dialFailures.Add(1)
	}
	q := p.take()
	p.t.stats.dropUnreachable.Add(uint64(len(q)))
	p.giveBack(q)
	switch {
	case errors.Is(err, ErrNotAdmitted):
		// Not a network fault: the peer refuses this node, or this node
		// the peer (TCPConfig.Admit). Said at every attempt (they back off).
		p.t.log.Error("cluster transport: not admitted", "peer", p.id, "addr", p.addr, "err", err)
		var re *RefusedError
		if f := p.t.cfg.OnRefused; f != nil && errors.As(err, &re) {
			f(re.Peer, re.Reason)
		}
	case p.failing || errors.Is(err, ErrNotYet):
		p.t.log.Debug("cluster transport: peer still unreachable", "peer", p.id, "addr", p.addr, "op", op, "err", err)
	default:
		p.t.log.Warn("cluster transport: peer unreachable", "peer", p.id, "addr", p.addr, "op", op, "err", err)
	}
	p.failing = true
	if f := p.t.cfg.OnUnreachable; f != nil {
		f(p.id)
	}
}

// sleep waits d, drawn in [d/2, d), or until the peer connects to this
// node; false when the peer was stopped.
func (p *peer) sleep(d time.Duration) bool {
	if d <= 0 {
		return p.ctx.Err() == nil
	}
	d = d/2 + rand.N(d/2+1)
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-p.retry:
		return true
	case <-p.ctx.Done():
		return false
	}
}

func (p *peer) nextBackoff(d time.Duration) time.Duration {
	if d < p.t.cfg.BackoffMin {
		return p.t.cfg.BackoffMin
	}
	return min(2*d, p.t.cfg.BackoffMax)
}

// outConn is an outbound connection. The peer only writes to it; its
// watcher reads, so that a peer closing the connection is noticed at once
// rather than on the write after next.
type outConn struct {
	conn   net.Conn
	dead   chan struct{} // closed when the watcher's read returns
	unhook func() bool   // cancels the close on the peer's stop
	once   sync.Once
}

func (c *outConn) watch(wg *sync.WaitGroup) {
	defer wg.Done()
	defer close(c.dead)
	var b [1]byte
	_, _ = c.conn.Read(b[:]) // the acceptor never writes after its ack
	_ = c.conn.Close()
}

// close closes the connection, from the peer's goroutine.
func (c *outConn) close() {
	c.unhook()
	c.closeConn()
}

func (c *outConn) closeConn() {
	c.once.Do(func() { _ = c.conn.Close() })
}

// dial connects to node to at addr and runs the client side of the
// handshakes. Canceling ctx aborts it.
func (t *TCP) dial(ctx context.Context, addr string, to uint64) (net.Conn, error) {
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// A close while the handshake runs fails its reads and writes at once.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	conn, err := t.clientHandshake(raw, addr, to)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	return conn, nil
}

func (t *TCP) clientHandshake(raw net.Conn, addr string, to uint64) (net.Conn, error) {
	_ = raw.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	conn := raw
	if cfg := t.cfg.ClientTLS; cfg != nil {
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(raw, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		conn = tc
	}
	var b [helloFixedSize + MaxClusterIDLen]byte
	h := appendHello(b[:0], hello{version: Version, from: t.cfg.NodeID, to: to, disk: t.cfg.Disk, cluster: t.cfg.ClusterID})
	if _, err := conn.Write(h); err != nil {
		return nil, err
	}
	disk, err := readAck(conn)
	if err != nil {
		return nil, err
	}
	if t.cfg.Admit != nil {
		switch err := t.cfg.Admit(to, disk); {
		case errors.Is(err, ErrNotYet):
			return nil, err
		case err != nil:
			return nil, fmt.Errorf("%w: this node does not admit node %d (data directory %x): %w", ErrNotAdmitted, to,
				disk[:], err)
		}
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, nil
}

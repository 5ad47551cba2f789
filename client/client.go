// Package client is the native Go client for Ratatoskr.
//
// A Client is a TCP connection to a broker, safe for concurrent use. It
// runs two goroutines: a writer that sends everything queued in one write
// whenever the connection is idle (so batching costs no latency at low
// rates), and a reader that routes acks, responses and deliveries. When
// the connection is lost the reader dials again (the same broker or
// another address given to Dial), with backoff and jitter, and carries on:
// subscriptions resume where they left off, queued publishes are sent on
// the new connection (see WithReconnect and reconnect.go).
//
//	c, err := client.Dial(ctx, "127.0.0.1:7070")
//	ack, err := c.Publish(ctx, "orders", client.Message{Value: []byte("hello")})
//	sub, err := c.Subscribe(ctx, "orders", func(d *client.Delivery) { ... })
//
// Publish waits for the broker's acknowledgement; PublishAsync queues the
// message and returns, and Flush waits for everything queued before it.
// The client imports no server package: it speaks only the wire protocol.
//
// A cluster (docs/CLUSTER.md) takes a Cluster instead: DialCluster with
// the nodes' addresses returns a client with the same publish, subscribe
// and fetch calls that keeps a Client per node and sends each partition's
// requests to the node that leads it, following the leader when it
// changes (cluster.go):
//
//	cl, err := client.DialCluster(ctx, "10.0.0.1:7070,10.0.0.2:7070,10.0.0.3:7070", client.WithIdempotence())
//	ack, err := cl.Publish(ctx, "orders", client.Message{Key: []byte("user-42"), Value: v})
//	sub, err := cl.Subscribe(ctx, "orders", func(d *client.Delivery) { ... })
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
	"github.com/xdg-go/scram"
)

// Client is a connection to a broker.
//
// Lock order: wconn before wmu before pmu; smu and mmu are never held
// with another lock.
type Client struct {
	opts  options
	addrs []string // where to dial, in order of preference
	link  atomic.Pointer[link]
	corr  atomic.Uint32

	// wconn is held by whoever writes to the connection (the holder of the
	// writing role), and by the reader while it takes stock of a lost
	// connection, so that a write is either done or not started.
	wconn sync.Mutex

	// Outgoing side, guarded by wmu.
	wmu        sync.Mutex
	live       bool                // the connection takes writes; false while reconnecting
	maxBatch   int                 // largest record batch a frame may carry
	batchBytes int                 // seal a batch at this size
	open       map[batchKey]*batch // batches being filled
	last       *batch              // most recently appended-to open batch
	outq       []outFrame          // frames ready to write, in order
	spareq     []outFrame          // the writer's previous outq, reused
	wake       chan struct{}       // signals the writer; capacity 1
	sealed     uint64              // batches sealed so far: each batch's place in the send order

	// The writing role: whoever holds it (a publisher on an idle
	// connection, or the writer goroutine) owns wbufs and recycle.
	writing   atomic.Bool
	lastWrite atomic.Int64 // clock() after the last write
	wbufs     net.Buffers
	recycle   []*[]byte

	// In-flight side, guarded by pmu.
	pmu      sync.Mutex
	inflight map[uint32]*batch
	calls    map[uint32]chan response
	subCalls map[uint32]*subCall // Subscribe calls in flight
	// subEnds are the subscriptions that asked the broker to say when it
	// ends them (wire.FlagEndNotice), by their Subscribe's corr: the
	// broker answers that corr a second time, with an Error, to end one.
	subEnds  map[uint32]*Subscription
	unacked  atomic.Int64 // bytes reserved by publishes not yet acked
	space    chan struct{}
	waiting  atomic.Int32 // goroutines waiting for space
	asyncErr error        // first async publish error since the last Flush
	// doneFrames are kept frames whose batches are acked, for the writer
	// to recycle (see batch.kept).
	doneFrames []*[]byte

	smu     sync.Mutex
	subs    map[string][]*Subscription // guarded by smu; copied on change
	subSnap atomic.Pointer[map[string][]*Subscription]
	staged  []*Subscription           // reader-owned: subscriptions with staged deliveries
	group   atomic.Pointer[groupSink] // set on a group consumer's connection

	mmu  sync.Mutex
	meta map[string]int // topic -> partition count

	idem *idempotence // set at Dial when idempotent (idempotence.go); its fields guarded by wmu

	closing   chan struct{}
	closeOnce sync.Once
	err       atomic.Pointer[error] // why the client stopped
	wg        sync.WaitGroup

	runID       uint64 // reader-owned: the broker run of the current connection
	reconnected atomic.Uint64

	// cluster is set on a Cluster's connection to one node (cluster.go):
	// the client then never reconnects, and hands the batches it cannot
	// deliver (NOT_LEADER, a lost connection) to the Cluster.
	cluster *Cluster
}

// link is one connection and what its handshake settled.
type link struct {
	net.Conn
	hello wire.HelloOK
}

// hello is the current connection's handshake answer.
func (c *Client) hello() *wire.HelloOK { return &c.link.Load().hello }

type response struct {
	typ  wire.Type
	body []byte // a copy
	err  error
}

// Dial connects to a broker and completes the handshake. addr is one
// address (host:port) or several separated by commas; they are tried in
// order, and WithServers adds more. After a lost connection the client
// dials them again, from the one that last worked (see WithReconnect).
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, f := range opts {
		f(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	addrs := splitAddrs(addr, o.servers)
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: no broker address to dial", ErrInvalidArgument)
	}
	c := &Client{
		opts: o, addrs: addrs, open: map[batchKey]*batch{}, wake: make(chan struct{}, 1),
		inflight: map[uint32]*batch{}, calls: map[uint32]chan response{}, subCalls: map[uint32]*subCall{}, subEnds: map[uint32]*Subscription{},
		space: make(chan struct{}),
		subs:  map[string][]*Subscription{}, meta: map[string]int{}, closing: make(chan struct{}),
		cluster: o.cluster,
	}
	l, err := c.dialFirst(ctx)
	if err != nil {
		return nil, err
	}
	c.attach(l, nil)
	if o.idempotent {
		c.idem = &idempotence{renewing: true, parts: map[batchKey]*partSeq{}, sticky: map[string]*stickyPart{}}
	}
	c.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
	if o.idempotent {
		if err := c.initIdempotence(ctx); err != nil {
			_ = c.Close()
			return nil, err
		}
	}
	c.setState(StateConnected, nil)
	return c, nil
}

// dialOne connects to addr and completes the handshake, within ctx or,
// when ctx has no deadline, the dial timeout.
func (c *Client) dialOne(ctx context.Context, addr string) (*link, error) {
	if _, ok := ctx.Deadline(); !ok && c.opts.dialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.dialTimeout)
		defer cancel()
	}
	var conn net.Conn
	var err error
	if c.opts.dialer != nil {
		conn, err = c.opts.dialer(ctx, addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("ratatoskr: dial %s: %w", addr, err)
	}
	if c.opts.tls != nil {
		if conn, err = c.tlsHandshake(ctx, conn, addr); err != nil {
			return nil, err
		}
	}
	l := &link{Conn: conn}
	if l.hello, err = c.handshake(ctx, conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return l, nil
}

// tlsHandshake runs the TLS handshake over conn, within ctx, closing conn
// when it fails.
func (c *Client) tlsHandshake(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	cfg := c.opts.tls.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		if notTLS(err) {
			return nil, fmt.Errorf("ratatoskr: TLS handshake with %s: the broker's port may be plaintext "+
				"(it did not answer in TLS: use the broker's --tls-addr port, or connect without TLS): %w", addr, err)
		}
		return nil, fmt.Errorf("ratatoskr: TLS handshake with %s (is it a TLS port?): %w", addr, err)
	}
	return tc, nil
}

// notTLS reports whether a failed TLS handshake means the peer does not
// speak TLS: it answered with something else, or hung up on the
// ClientHello (a Ratatoskr broker's plaintext port closes a connection
// that starts with one).
func notTLS(err error) bool {
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// attach makes l the connection writes go to and settles the limits its
// handshake announced. A batch frame holds a header, the topic, the
// partition and the batch; maxBatch is the most its batch may take.
// Before the connection takes writes, under the same hold of wmu, queue
// (if not nil) puts in order what must go out first: once live is set, a
// writer may write the queue at any moment.
func (c *Client) attach(l *link, queue func()) {
	c.link.Store(l)
	c.runID = l.hello.RunID
	c.wmu.Lock()
	c.maxBatch = int(l.hello.MaxFrameBytes) - wire.HeaderSize - 2 - wire.MaxTopicNameLen - 4 - 64
	c.batchBytes = max(1, min(c.opts.batchBytes, c.maxBatch))
	if queue != nil {
		queue()
	}
	c.live = true
	c.wmu.Unlock()
}

// handshake sends Hello and reads HelloOK synchronously, before the
// connection is handed to the reader and writer; with credentials it runs
// the authentication exchange in between.
func (c *Client) handshake(ctx context.Context, conn net.Conn) (wire.HelloOK, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer func() { _ = conn.SetDeadline(time.Time{}) }()
	}
	h := wire.Hello{MinVersion: wire.MinVersion, MaxVersion: wire.Version, ClientName: c.opts.name}
	var conv *scram.ClientConversation
	switch {
	case c.opts.user != "":
		sc, err := scram.SHA256.NewClient(c.opts.user, c.opts.password, "")
		if err != nil {
			return wire.HelloOK{}, fmt.Errorf("ratatoskr: credentials: %w", err)
		}
		conv = sc.NewConversation()
		first, err := conv.Step("")
		if err != nil {
			return wire.HelloOK{}, fmt.Errorf("ratatoskr: credentials: %w", err)
		}
		h.AuthMechanism, h.AuthData = "SCRAM-SHA-256", []byte(first)
	case c.opts.token != "":
		h.AuthMechanism, h.AuthData = "TOKEN", []byte(c.opts.token)
	case c.opts.external:
		h.AuthMechanism = "EXTERNAL"
	}
	body := h.Append(nil)
	if _, err := conn.Write(append(wire.AppendHeader(nil, wire.TypeHello, 0, 1, len(body)), body...)); err != nil {
		return wire.HelloOK{}, fmt.Errorf("ratatoskr: handshake: %w", err)
	}
	for {
		typ, resp, err := c.readHandshakeFrame(conn)
		if err != nil {
			return wire.HelloOK{}, err
		}
		switch typ {
		case wire.TypeHelloOK:
			if conv != nil && !conv.Valid() {
				return wire.HelloOK{}, fmt.Errorf("%w: handshake: the broker accepted the connection without proving it knows the user's keys", ErrProtocol)
			}
			hello, err := wire.DecodeHelloOK(resp)
			if err != nil {
				return hello, fmt.Errorf("%w: handshake: %w", ErrProtocol, err)
			}
			if v := hello.Version; v < wire.MinVersion || v > wire.Version {
				return hello, fmt.Errorf("%w: handshake: the broker picked version %d, not one of %d..%d",
					ErrProtocol, v, wire.MinVersion, wire.Version)
			}
			return hello, nil
		case wire.TypeAuthChallenge:
			if conv == nil || conv.Done() {
				return wire.HelloOK{}, fmt.Errorf("%w: handshake: an authentication challenge the client did not ask for", ErrProtocol)
			}
			data, err := wire.DecodeAuth(resp)
			if err != nil {
				return wire.HelloOK{}, fmt.Errorf("%w: handshake: %w", ErrProtocol, err)
			}
			next, err := conv.Step(string(data))
			if err != nil {
				return wire.HelloOK{}, fmt.Errorf("%w: handshake: the broker's SCRAM answer is not valid (it does not know the user's keys): %w", ErrProtocol, err)
			}
			if conv.Done() {
				continue // the broker's proof checked out; HelloOK follows
			}
			body := wire.AppendAuth(nil, []byte(next))
			if _, err := conn.Write(append(wire.AppendHeader(nil, wire.TypeAuthContinue, 0, 1, len(body)), body...)); err != nil {
				return wire.HelloOK{}, fmt.Errorf("ratatoskr: handshake: %w", err)
			}
		case wire.TypeError:
			e, derr := wire.DecodeError(resp)
			if derr != nil {
				return wire.HelloOK{}, fmt.Errorf("%w: handshake: %w", ErrProtocol, derr)
			}
			return wire.HelloOK{}, e
		default:
			return wire.HelloOK{}, fmt.Errorf("%w: handshake answered with %s", ErrProtocol, typ)
		}
	}
}

// readHandshakeFrame reads one whole frame of the handshake.
func (c *Client) readHandshakeFrame(conn net.Conn) (wire.Type, []byte, error) {
	var hdr [wire.HeaderSize]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		var remote *net.OpError // crypto/tls reports an alert from the peer as a "remote error"
		if errors.As(err, &remote) && remote.Op == "remote error" {
			// With TLS 1.3 the broker checks the client's certificate
			// after the client's side of the handshake is done: its
			// refusal comes as an alert on the first read.
			return 0, nil, fmt.Errorf("ratatoskr: handshake: the broker refused the TLS connection "+
				"(a broker with mutual TLS needs a client certificate its CA signed; see WithTLS): %w", err)
		}
		if c.opts.tls == nil && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			// A TLS listener hangs up on a Hello it cannot read.
			return 0, nil, fmt.Errorf("ratatoskr: handshake: the connection closed before the broker answered (a TLS port? see WithTLS): %w", err)
		}
		return 0, nil, fmt.Errorf("ratatoskr: handshake: %w", err)
	}
	fh, err := wire.ParseHeader(hdr[:], 1<<20)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: handshake: %w", ErrProtocol, err)
	}
	resp := make([]byte, fh.Length-wire.HeaderSize)
	if _, err := io.ReadFull(conn, resp); err != nil {
		return 0, nil, fmt.Errorf("ratatoskr: handshake: %w", err)
	}
	return fh.Type, resp, nil
}

// MaxMessageBytes is the broker's limit on one message (key, value, headers).
func (c *Client) MaxMessageBytes() int { return int(c.hello().MaxMessageBytes) }

// Close closes the connection at once. Publishes not yet acknowledged fail
// with ErrClosed and subscriptions end after their queued deliveries; call
// Flush first to wait for acknowledgements.
func (c *Client) Close() error {
	c.shutdown(ErrClosed)
	c.wg.Wait()
	return nil
}

// Done is closed when the client stops: after Close, or when a lost
// connection is not to be redialled or redialling gave up (Err says why).
func (c *Client) Done() <-chan struct{} { return c.closing }

// Err returns why the client stopped, or nil while it runs.
func (c *Client) Err() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// shutdown stops the client with cause, failing everything in flight.
func (c *Client) shutdown(cause error) {
	c.closeOnce.Do(func() {
		if c.cluster != nil {
			c.stopNode(cause)
			return
		}
		c.err.Store(&cause)
		close(c.closing)
		_ = c.link.Load().Close()
		c.failInflight(cause)
		if !errors.Is(cause, ErrClosed) {
			c.report(cause)
		}
		c.setState(StateClosed, cause)
	})
}

func (c *Client) failInflight(cause error) {
	c.wmu.Lock()
	c.pmu.Lock()
	failed := make([]*batch, 0, len(c.open)+len(c.inflight))
	for k, b := range c.open {
		delete(c.open, k)
		failed = append(failed, b)
	}
	c.last = nil
	failed = c.takeWaiting(failed)
	for corr, b := range c.inflight {
		delete(c.inflight, corr)
		failed = append(failed, b)
	}
	c.failCalls(cause)
	if len(failed) > 0 && c.asyncErr == nil {
		c.asyncErr = cause
	}
	c.unacked.Store(0)
	c.wakeSpaceWaiters()
	c.pmu.Unlock()
	c.wmu.Unlock()
	for _, b := range failed {
		b.complete(wire.PublishAck{}, cause)
	}
}

func (c *Client) report(err error) {
	if c.opts.errorHandler != nil {
		c.opts.errorHandler(err)
	} else {
		c.opts.logger.Warn("ratatoskr client", "err", err)
	}
}

// stopped returns the error to give a caller once the client has stopped.
func (c *Client) stopped() error {
	if err := c.Err(); err != nil {
		return err
	}
	return ErrClosed
}

func (c *Client) nextCorr() uint32 {
	for {
		if id := c.corr.Add(1); id != 0 {
			return id
		}
	}
}

// signalWriter wakes the writer if it is not already due to run.
func (c *Client) signalWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// call sends a request frame and waits for its response.
func (c *Client) call(ctx context.Context, t wire.Type, flags uint8, body []byte) (response, error) {
	return c.callWith(ctx, t, flags, body, nil)
}

// callWith is call for a Subscribe: sc, when not nil, gets the
// SubscribeOK on the reader before any of its subscriptions' deliveries
// are dispatched.
func (c *Client) callWith(ctx context.Context, t wire.Type, flags uint8, body []byte, sc *subCall) (response, error) {
	corr := c.nextCorr()
	ch := make(chan response, 1)
	c.pmu.Lock()
	if c.Err() != nil {
		c.pmu.Unlock()
		return response{}, c.stopped()
	}
	c.calls[corr] = ch
	if sc != nil {
		sc.waited = true
		c.subCalls[corr] = sc
		if sc.endNotice {
			c.subEnds[corr] = sc.subs[0]
			sc.subs[0].endCorr = corr
		}
	}
	c.pmu.Unlock()
	frame := append(wire.AppendHeader(make([]byte, 0, wire.HeaderSize+len(body)), t, flags, corr, len(body)), body...)
	c.wmu.Lock()
	c.outq = append(c.outq, outFrame{frame: frame})
	c.wmu.Unlock()
	c.kick(clock())
	select {
	case r := <-ch:
		if r.err == nil && r.typ == wire.TypeError {
			e, err := wire.DecodeError(r.body)
			if err != nil {
				return r, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return r, e
		}
		return r, r.err
	case <-ctx.Done():
		c.pmu.Lock()
		delete(c.calls, corr)
		delete(c.subCalls, corr)
		c.pmu.Unlock()
		return response{}, ctx.Err()
	}
}

// expect checks that a response has the wanted type.
func expect(r response, t wire.Type) error {
	if r.typ != t {
		return fmt.Errorf("%w: expected %s, got %s", ErrProtocol, t, r.typ)
	}
	return nil
}

// Ping measures a round trip to the broker.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	r, err := c.call(ctx, wire.TypePing, 0, nil)
	if err != nil {
		return 0, err
	}
	return time.Since(start), expect(r, wire.TypePong)
}

// partitions returns the partition count of a topic, asking the broker
// (and creating the topic where the broker auto-creates) the first time.
func (c *Client) partitions(ctx context.Context, topic string) (int, error) {
	c.mmu.Lock()
	n, ok := c.meta[topic]
	c.mmu.Unlock()
	if ok {
		return n, nil
	}
	info, err := c.describe(ctx, topic, wire.FlagAutoCreate)
	if err != nil {
		return 0, err
	}
	return len(info.Partitions), nil
}

// forget drops cached metadata after an error that says it is stale.
func (c *Client) forget(topic string) {
	c.mmu.Lock()
	delete(c.meta, topic)
	c.mmu.Unlock()
	c.dropSticky(topic, -1)
}

// KeyPartition is the partition a key maps to: FNV-1a (32-bit) of the key,
// modulo the partition count. It is part of the client's contract: the same
// key always lands in the same partition while the count stays the same.
func KeyPartition(key []byte, partitions int) int {
	h := fnv.New32a()
	_, _ = h.Write(key)
	return int(h.Sum32() % uint32(partitions))
}

// readLoop reads frames and routes them, and when the connection fails
// dials a new one and carries on, until the client stops.
func (c *Client) readLoop() {
	defer c.wg.Done()
	defer c.endSubscriptions()
	buf := make([]byte, 0, 1<<20)
	for {
		err := c.readConn(c.link.Load(), &buf)
		if c.Err() != nil {
			return
		}
		if errors.Is(err, ErrProtocol) || !c.opts.reconnect {
			c.shutdown(err)
			return
		}
		if err = c.reconnect(err); err != nil {
			c.shutdown(err)
			return
		}
		buf = buf[:0]
	}
}

// readConn reads one connection until it fails, and says why.
func (c *Client) readConn(l *link, bufp *[]byte) error {
	buf := *bufp
	defer func() { *bufp = buf }()
	// A response may carry a whole batch plus a header a little larger
	// than a publish's, so allow some slack over the announced limit.
	maxFrame := l.hello.MaxFrameBytes + 4096
	for {
		if len(buf) == cap(buf) {
			buf = growReadBuf(buf, maxFrame)
		}
		n, err := l.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		consumed, perr := c.handleFrames(buf, maxFrame)
		c.flushStaged()
		if perr != nil {
			return perr
		}
		buf = buf[:copy(buf, buf[consumed:])]
		if err != nil {
			return fmt.Errorf("%w: %w", ErrConnectionLost, err)
		}
	}
}

// growReadBuf doubles the read buffer, up to what the largest frame needs.
func growReadBuf(buf []byte, maxFrame uint32) []byte {
	n := min(2*cap(buf), int(maxFrame)+wire.HeaderSize)
	n = max(n, cap(buf)+4096)
	nb := make([]byte, len(buf), n)
	copy(nb, buf)
	return nb
}

func (c *Client) handleFrames(buf []byte, maxFrame uint32) (int, error) {
	consumed := 0
	for {
		f, n, err := wire.ReadFrame(buf[consumed:], maxFrame)
		if err != nil {
			return consumed, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if n == 0 {
			return consumed, nil
		}
		consumed += n
		if err := c.handleFrame(f); err != nil {
			return consumed, err
		}
	}
}

func (c *Client) handleFrame(f wire.Frame) error {
	switch f.Type {
	case wire.TypeDeliver:
		return c.deliver(f.Body)
	case wire.TypePublishAck:
		a, err := wire.DecodePublishAck(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		c.acked(f.Corr, a, nil)
	case wire.TypeError:
		return c.errorFrame(f)
	case wire.TypeAssignment:
		if gs := c.group.Load(); gs != nil {
			gs.stage(evAssignment, f.Body)
		}
	case wire.TypeRedeliver:
		if gs := c.group.Load(); gs != nil {
			gs.stage(evRedeliver, f.Body)
		}
	case wire.TypePing:
		c.wmu.Lock()
		c.outq = append(c.outq, outFrame{frame: wire.AppendHeader(nil, wire.TypePong, 0, f.Corr, 0)})
		c.wmu.Unlock()
		c.signalWriter()
	default:
		c.respond(f.Corr, response{typ: f.Type, body: append([]byte(nil), f.Body...)})
	}
	return nil
}

// errorFrame routes an Error: to the publish or call it answers, or, with
// correlation id 0, as the reason the broker is closing the connection.
func (c *Client) errorFrame(f wire.Frame) error {
	e, err := wire.DecodeError(f.Body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if f.Corr == 0 {
		return fmt.Errorf("%w: %w", ErrConnectionLost, e)
	}
	if c.acked(f.Corr, wire.PublishAck{}, e) || c.subscriptionEnded(f.Corr, e) {
		return nil
	}
	c.respond(f.Corr, response{typ: wire.TypeError, body: append([]byte(nil), f.Body...)})
	return nil
}

// subscriptionEnded ends the subscription whose Subscribe, answered
// already, corr was, if the broker ends it with e (wire.FlagEndNotice),
// and reports whether it did. An Error while the Subscribe still waits
// for its answer is that answer.
func (c *Client) subscriptionEnded(corr uint32, e *wire.Error) bool {
	c.pmu.Lock()
	s := c.subEnds[corr]
	_, waiting := c.calls[corr]
	if s == nil || waiting || c.subCalls[corr] != nil {
		c.pmu.Unlock()
		return false
	}
	delete(c.subEnds, corr)
	c.pmu.Unlock()
	s.ended.Store(e)
	c.removeSub(s)
	return true
}

func (c *Client) respond(corr uint32, r response) {
	c.pmu.Lock()
	ch, ok := c.calls[corr]
	delete(c.calls, corr)
	sc := c.subCalls[corr]
	delete(c.subCalls, corr)
	c.pmu.Unlock()
	if sc != nil {
		c.subscribed(sc, r)
	}
	if !ok && sc == nil && r.typ == wire.TypeError {
		// The answer to a one-way frame (Ack, Nack) that failed, or to a
		// call that gave up waiting.
		if e, err := wire.DecodeError(r.body); err == nil {
			c.report(e)
		}
	}
	if ok {
		ch <- r
	}
}

// Topic administration.

// TopicConfig is the configuration of a new topic. Zero fields take the
// broker's defaults.
type TopicConfig struct {
	Partitions     int
	MaxSubscribers int
	// Storage is "disk" (a durable log) or "memory".
	Storage string
	// Fsync is "always" (ack after fsync), "interval=DURATION" or "never".
	Fsync string
	// Retention keeps messages this long; zero takes the broker's default.
	// Use KeepForever to keep them until deleted by size.
	Retention time.Duration
	// RetentionBytes bounds each partition's log; zero takes the broker's
	// default. Use UnboundedBytes for no bound.
	RetentionBytes int64
	// DeadLetterTopic and MaxDeliveries are the defaults of the topic's
	// message-mode consumer groups: where messages go after MaxDeliveries
	// deliveries. Empty and zero take "<topic>.dlq" and the broker's 5.
	DeadLetterTopic string
	MaxDeliveries   int
	// Encryption is "on" (encrypted at rest, under the broker's master
	// key) or "off" for a disk topic; empty takes the broker's default.
	// It is fixed at creation.
	Encryption string
	// Replicas is how many nodes of a cluster hold each partition: 1, 3
	// or 5; zero takes the cluster's default (3 with three nodes or more).
	// Fixed at creation.
	Replicas int
}

// KeepForever as TopicConfig.Retention disables retention by age.
const KeepForever time.Duration = -1

// UnboundedBytes as TopicConfig.RetentionBytes disables retention by size.
const UnboundedBytes int64 = -1

// TopicSummary is one entry of ListTopics.
type TopicSummary struct {
	Name       string
	Partitions int
}

// PartitionInfo describes one partition.
type PartitionInfo struct {
	ID          int
	StartOffset int64 // first offset the log holds
	EndOffset   int64 // visible end: the offset after the last message readers can see
	Subscribers int
	Bytes       int64 // size of the log
	Segments    int
	Corrupt     int // ranges found corrupt (reported, not removed)
	// State says whether the partition serves; Reason why it does not. A
	// broker that speaks only protocol version 1 reports no state: every
	// partition then reads as online.
	State  PartitionState
	Reason string
}

// PartitionState says whether a partition takes publishes and serves reads.
type PartitionState = wire.PartitionState

// Partition states, as DescribeTopic reports them.
const (
	// PartitionOnline: it serves.
	PartitionOnline = wire.PartitionOnline
	// PartitionReadOnly: it refuses publishes until the broker restarts (a
	// failed fsync or write); what it holds stays readable.
	PartitionReadOnly = wire.PartitionReadOnly
	// PartitionOffline: its log could not be opened; it serves nothing
	// until the broker restarts with the log repaired.
	PartitionOffline = wire.PartitionOffline
)

// TopicInfo describes a topic.
type TopicInfo struct {
	Name string
	// Config is the topic's configuration, as the broker stores it.
	Config map[string]string
	// Defaults holds, for each key of Config left at the value that stands
	// for a default (a max-deliveries of 0, an empty dead-letter-topic),
	// the value it stands for. Empty from a broker that does not report
	// defaults (wire.FlagDefaults).
	Defaults   map[string]string
	Partitions []PartitionInfo
}

// Effective is the value a setting takes: its default where the topic
// leaves it to one, else the topic's own.
func (t TopicInfo) Effective(key string) string {
	if v, ok := t.Defaults[key]; ok {
		return v
	}
	return t.Config[key]
}

func (cfg TopicConfig) kvs() []wire.KV {
	var kvs []wire.KV
	add := func(k, v string) { kvs = append(kvs, wire.KV{Key: k, Value: v}) }
	if cfg.MaxSubscribers > 0 {
		add("max-subscribers", strconv.Itoa(cfg.MaxSubscribers))
	}
	if cfg.Replicas > 0 {
		add("replicas", strconv.Itoa(cfg.Replicas))
	}
	if cfg.Storage != "" {
		add("storage", cfg.Storage)
	}
	if cfg.Fsync != "" {
		add("fsync", cfg.Fsync)
	}
	switch {
	case cfg.Retention == KeepForever:
		add("retention", "0s")
	case cfg.Retention > 0:
		add("retention", cfg.Retention.String())
	}
	switch {
	case cfg.RetentionBytes == UnboundedBytes:
		add("retention-bytes", "0")
	case cfg.RetentionBytes > 0:
		add("retention-bytes", strconv.FormatInt(cfg.RetentionBytes, 10))
	}
	if cfg.DeadLetterTopic != "" {
		add("dead-letter-topic", cfg.DeadLetterTopic)
	}
	if cfg.MaxDeliveries > 0 {
		add("max-deliveries", strconv.Itoa(cfg.MaxDeliveries))
	}
	if cfg.Encryption != "" {
		add("encryption", cfg.Encryption)
	}
	return kvs
}

// CreateTopic creates a topic; ErrTopicExists if it exists.
func (c *Client) CreateTopic(ctx context.Context, name string, cfg TopicConfig) error {
	if cfg.Partitions < 0 || cfg.MaxSubscribers < 0 {
		return wire.Errorf(wire.CodeInvalidArgument, "partitions and max subscribers must not be negative")
	}
	req := wire.CreateTopic{Name: name, Partitions: uint32(cfg.Partitions), Config: cfg.kvs()}
	r, err := c.call(ctx, wire.TypeCreateTopic, 0, req.Append(nil))
	if err != nil {
		return err
	}
	return expect(r, wire.TypeOK)
}

// DeleteTopic deletes a topic; ErrUnknownTopic if there is none.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	c.forget(name)
	r, err := c.call(ctx, wire.TypeDeleteTopic, 0, wire.AppendName(nil, name))
	if err != nil {
		return err
	}
	return expect(r, wire.TypeOK)
}

// ListTopics lists the broker's topics, sorted by name.
func (c *Client) ListTopics(ctx context.Context) ([]TopicSummary, error) {
	r, err := c.call(ctx, wire.TypeListTopics, 0, nil)
	if err != nil {
		return nil, err
	}
	if err := expect(r, wire.TypeTopicList); err != nil {
		return nil, err
	}
	list, err := wire.DecodeTopicList(r.body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	out := make([]TopicSummary, len(list))
	for i, t := range list {
		out[i] = TopicSummary{Name: t.Name, Partitions: int(t.Partitions)}
	}
	return out, nil
}

// UpdateTopic changes settings of a topic while it runs: "retention" (a
// duration, "0s" keeps forever), "retention-bytes", "max-subscribers",
// "fsync" ("always", "interval=D", "never"; disk topics),
// "dead-letter-topic" and "max-deliveries". The change is durable and takes
// effect at once (retention at the broker's next retention pass). It
// returns the topic's new description.
func (c *Client) UpdateTopic(ctx context.Context, name string, changes map[string]string) (TopicInfo, error) {
	req := wire.CreateTopic{Name: name}
	for _, k := range slices.Sorted(maps.Keys(changes)) {
		req.Config = append(req.Config, wire.KV{Key: k, Value: changes[k]})
	}
	r, err := c.call(ctx, wire.TypeAlterTopic, wire.FlagDefaults, req.Append(nil))
	if err != nil {
		return TopicInfo{}, err
	}
	return c.topicInfo(name, r)
}

// DescribeTopic returns a topic's configuration and partitions.
func (c *Client) DescribeTopic(ctx context.Context, name string) (TopicInfo, error) {
	return c.describe(ctx, name, 0)
}

func (c *Client) describe(ctx context.Context, name string, flags uint8) (TopicInfo, error) {
	r, err := c.call(ctx, wire.TypeDescribeTopic, flags|wire.FlagDefaults, wire.AppendName(nil, name))
	if err != nil {
		return TopicInfo{}, err
	}
	return c.topicInfo(name, r)
}

// topicInfo decodes a TopicInfo answer and caches the partition count.
func (c *Client) topicInfo(name string, r response) (TopicInfo, error) {
	if err := expect(r, wire.TypeTopicInfo); err != nil {
		return TopicInfo{}, err
	}
	wi, err := wire.DecodeTopicInfo(r.body, c.hello().Version)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	info := TopicInfo{Name: wi.Name, Config: map[string]string{}, Defaults: map[string]string{},
		Partitions: make([]PartitionInfo, len(wi.Partitions))}
	for _, kv := range wi.Config {
		if key, ok := strings.CutPrefix(kv.Key, wire.DefaultPrefix); ok {
			info.Defaults[key] = kv.Value
		} else {
			info.Config[kv.Key] = kv.Value
		}
	}
	for i, p := range wi.Partitions {
		info.Partitions[i] = PartitionInfo{ID: int(p.ID), StartOffset: p.StartOffset,
			EndOffset: p.EndOffset, Subscribers: int(p.Subscribers), Bytes: p.Bytes,
			Segments: int(p.Segments), Corrupt: int(p.Corrupt), State: p.State, Reason: p.Reason}
	}
	c.mmu.Lock()
	c.meta[name] = len(info.Partitions)
	c.mmu.Unlock()
	c.dropSticky(name, len(info.Partitions))
	return info, nil
}

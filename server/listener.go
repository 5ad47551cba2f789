package server

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The native listener: the broker accepts connections itself and hands
// each to a gnet event loop (gnet.Client.EnrollContext), instead of letting
// gnet accept them. gnet's acceptor treats any accept(2) error other than
// EAGAIN, EINTR and a reset as fatal: with the descriptors exhausted
// (EMFILE) its main reactor exits, every connection is dropped and the port
// stays dead while the process lives. Here, as in net/http, an error that
// passes (EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED) is waited out with
// a backoff and the loop goes on; any other error is fatal for the broker
// (Server.Fatal, handed on by Engine.Fatal), so that a supervisor restarts it rather than leaving a
// process that accepts nothing.
//
// Admission happens here too, before a connection costs an event loop
// anything: at most MaxConnections at once, and at most
// MaxHandshakesPerAddr connections per source address that have not
// finished their handshake. A refused connection gets Error(LIMIT_EXCEEDED)
// with corr 0 and is closed. A connection that sends no complete Hello
// within HandshakeTimeout is closed (handshakes, below).
type listener struct {
	srv     *Server
	ln      net.Listener
	cli     *gnet.Client
	closing atomic.Bool
	done    chan struct{} // closed when the accept loop has returned

	pending pendingHandshakes
	hs      handshakeDeadlines

	enrolling       atomic.Int64  // admitted, not yet registered with a loop (counts against MaxConnections)
	enrollers       chan struct{} // bounds enrolling to maxEnrolling
	acceptErrors    atomic.Uint64 // accepts or registrations that failed for want of descriptors
	lastWarn        atomic.Int64  // when outOfFDs last logged (Unix ns)
	refusedMax      atomic.Uint64 // refused at MaxConnections
	refusedPerAddr  atomic.Uint64 // refused at MaxHandshakesPerAddr
	handshakeClosed atomic.Uint64 // closed at HandshakeTimeout

	enrolled atomic.Pointer[func()] // tests: runs after a registration, before its goroutine ends
}

// startListener binds the native address, starts the event loops and the
// accept loop.
func (srv *Server) startListener() error {
	ln, err := net.Listen("tcp", srv.cfg.Addr)
	if err != nil {
		return err
	}
	cli, err := gnet.NewClient(&handler{srv: srv},
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(srv.cfg.EventLoops),
		gnet.WithReadBufferCap(readBufferCap),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{srv.log}),
	)
	if err == nil {
		err = cli.Start()
	}
	if err != nil {
		_ = ln.Close()
		return err
	}
	l := &listener{srv: srv, ln: ln, cli: cli, done: make(chan struct{}), enrollers: make(chan struct{}, maxEnrolling)}
	l.pending.counts = map[string]int{}
	l.hs.init(srv.cfg.HandshakeTimeout, l.expire)
	srv.lis, srv.addr = l, ln.Addr()
	go l.acceptLoop()
	return nil
}

// stop closes the listening socket and waits for the accept loop; the
// connections stay (stopLoops closes them).
func (l *listener) stop() {
	if l.closing.CompareAndSwap(false, true) {
		_ = l.ln.Close()
		l.hs.stop()
	}
	<-l.done
	for range maxEnrolling { // the registrations under way finish
		l.enrollers <- struct{}{}
	}
}

// stopLoops stops the event loops, closing every connection.
func (l *listener) stopLoops() error { return l.cli.Stop() }

// Accept backoff: as net/http's, from 5 ms doubling to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

func (l *listener) acceptLoop() {
	defer close(l.done)
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err == nil {
			delay = 0
			l.admit(c)
			continue
		}
		if l.closing.Load() {
			return
		}
		if !acceptErrorPasses(err) {
			l.srv.listenerFailed(err)
			return
		}
		delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
		l.outOfFDs(err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.hs.quit:
			t.Stop()
			return
		}
	}
}

// outOfFDs counts an accept or registration that failed for want of
// descriptors (or memory) and says so in the log, at most every 10 s.
func (l *listener) outOfFDs(err error) {
	l.acceptErrors.Add(1)
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last < int64(10*time.Second) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	l.srv.log.Warn("accept failed: out of file descriptors or memory; refusing connections until some close",
		"err", err, "connections", l.srv.connections.Load(), "fd_limit", FDLimit(), "failures", l.acceptErrors.Load())
}

// fdOf returns a connection's descriptor, or -1.
func fdOf(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// acceptErrorPasses reports whether an accept error is one that goes away
// by itself: descriptors or memory exhausted for now, or a connection
// that was reset while it waited in the queue.
func acceptErrorPasses(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// listenerFailed records that the native listener is gone for good and
// tells whoever runs the broker (Server.Fatal). The error keeps the
// "engine:" prefix operators know.
func (srv *Server) listenerFailed(err error) {
	why := "the native listener failed: " + err.Error()
	srv.listenerErr.Store(&why)
	srv.log.Error("native listener failed; the broker accepts no connections and should be restarted", "err", err)
	select {
	case srv.fatal <- errors.New("engine: " + why):
	default:
	}
}

// admit hands an accepted connection to an event loop, or refuses it.
func (l *listener) admit(c net.Conn) {
	srv := l.srv
	addr := hostOf(c.RemoteAddr())
	if n := srv.connections.Load() + l.enrolling.Load(); n >= int64(srv.cfg.MaxConnections) {
		l.refusedMax.Add(1)
		refuseConn(c, "the broker has its maximum of "+strconv.Itoa(srv.cfg.MaxConnections)+" connections")
		return
	}
	if !l.pending.take(addr, srv.cfg.MaxHandshakesPerAddr) {
		l.refusedPerAddr.Add(1)
		refuseConn(c, strconv.Itoa(srv.cfg.MaxHandshakesPerAddr)+" connections from "+addr+
			" have not finished their handshake yet")
		return
	}
	// gnet duplicates the descriptor (and closes ours), so a connection
	// whose descriptor is the last one free cannot be registered: it is
	// told so instead of being dropped without a word.
	if fd := fdOf(c); fd >= FDLimit()-1 {
		l.pending.give(addr)
		l.outOfFDs(syscall.EMFILE)
		refuseConn(c, "the broker is out of file descriptors")
		return
	}
	// Registering waits for the chosen loop to run OnOpen; it runs on a
	// goroutine of its own, so that a loop that is slow to get to it (a
	// long inline pass, a full shard inbox) holds up only its own new
	// connections, not every accept. At most maxEnrolling wait at once.
	acc := &accepted{addr: addr, l: l}
	l.enrolling.Add(1)
	l.enrollers <- struct{}{}
	go func() {
		defer func() {
			<-l.enrollers
			acc.release()
		}()
		l.enroll(c, acc)
	}()
}

// maxEnrolling bounds the connections being handed to their loops at once.
const maxEnrolling = 64

// enroll hands an admitted connection to an event loop.
func (l *listener) enroll(c net.Conn, acc *accepted) {
	addr := acc.addr
	remote := c.RemoteAddr().String()
	gc, err := l.cli.EnrollContext(c, acc)
	if err != nil {
		l.pending.give(addr)
		if acceptErrorPasses(err) {
			l.outOfFDs(err)
		} else {
			l.srv.log.Debug("connection not registered", "remote", remote, "err", err)
		}
		return
	}
	_ = gc // the loop owns it now; it may even be closed and reused already
	// EnrollContext returns once OnOpen has run on the loop, which left
	// the connection's transport in acc (or refused the connection); when
	// gnet could not add the socket to its poller it returns without
	// OnOpen, and the address's place is given back here.
	switch {
	case !acc.opened:
		l.pending.give(addr)
	case acc.t != nil:
		l.hs.add(acc.t)
	}
	if f := l.enrolled.Load(); f != nil {
		(*f)()
	}
}

// accepted is a connection's gnet context from accept to OnOpen, and how
// OnOpen hands the accept loop the transport it made.
type accepted struct {
	addr   string
	l      *listener
	opened bool // OnOpen ran
	t      *gnetTransport
	// counted is set once the connection no longer counts as enrolling:
	// when OnOpen counts it as a connection, or when enrolling ends
	// without OnOpen. A connection is never counted twice, so that one
	// whose enroll goroutine is slow to finish does not make the limit
	// refuse others.
	counted atomic.Bool
}

// release stops counting the connection as enrolling, once.
func (a *accepted) release() {
	if a.counted.CompareAndSwap(false, true) {
		a.l.enrolling.Add(-1)
	}
}

// refuseConn tells a connection why it is refused and closes it. The
// socket is new and its send buffer empty, so the write does not block;
// the deadline only guards against the impossible.
func refuseConn(c net.Conn, why string) {
	body := wire.AppendError(nil, wire.CodeLimitExceeded, why)
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write(append(wire.AppendHeader(nil, wire.TypeError, 0, 0, len(body)), body...))
	_ = c.Close()
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// pendingHandshakes counts, per source address, the connections that have
// not finished their handshake.
type pendingHandshakes struct {
	mu     sync.Mutex
	counts map[string]int
}

// take counts one more for addr, unless addr has max already.
func (p *pendingHandshakes) take(addr string, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts[addr] >= max {
		return false
	}
	p.counts[addr]++
	return true
}

// give counts one less for addr: its connection finished its handshake or
// closed before.
func (p *pendingHandshakes) give(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.counts[addr]; n > 1 {
		p.counts[addr] = n - 1
	} else {
		delete(p.counts, addr)
	}
}

// handshakeDone ends t's handshake accounting, once: on its Hello, or on
// its close before one. On the connection's loop.
func (t *gnetTransport) handshakeDone() {
	if t.hsAddr == "" {
		return
	}
	if l := t.s.srv.lis; l != nil {
		l.pending.give(t.hsAddr)
	}
	t.hsAddr = ""
	t.handshook.Store(true)
	if e := t.hsEntry.Load(); e != nil {
		e.t.Store(nil)
	}
}

// handshakeDeadlines closes connections that have not finished their
// handshake in time. Every connection gets the same timeout, so deadlines
// arrive in accept order and a FIFO is a priority queue; one goroutine
// waits for the oldest.
type handshakeDeadlines struct {
	timeout time.Duration
	expire  func(*gnetTransport)
	mu      sync.Mutex
	queue   []*hsEntry
	kick    chan struct{}
	quit    chan struct{}
	checked atomic.Uint64 // connections whose deadline passed or was not needed, for tests
}

// hsEntry is a connection waiting for its handshake deadline. Its
// transport is let go (t cleared) as soon as the handshake ends, so that a
// connection that said Hello or closed is not kept alive in the queue
// until its deadline.
type hsEntry struct {
	t        atomic.Pointer[gnetTransport]
	deadline time.Time
}

func (h *handshakeDeadlines) init(timeout time.Duration, expire func(*gnetTransport)) {
	h.timeout, h.expire = timeout, expire
	h.kick, h.quit = make(chan struct{}, 1), make(chan struct{})
	go h.run()
}

func (h *handshakeDeadlines) stop() { close(h.quit) }

func (h *handshakeDeadlines) add(t *gnetTransport) {
	if t.handshook.Load() {
		h.checked.Add(1) // nothing to wait for
		return
	}
	e := &hsEntry{deadline: time.Now().Add(h.timeout)}
	e.t.Store(t)
	t.hsEntry.Store(e)
	if t.handshook.Load() { // it ended meanwhile, maybe before hsEntry was set
		e.t.Store(nil)
	}
	h.mu.Lock()
	h.queue = append(h.queue, e)
	first := len(h.queue) == 1
	h.mu.Unlock()
	if first {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

func (h *handshakeDeadlines) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := h.expired(time.Now())
		if wait <= 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-h.kick:
		case <-timer.C:
		case <-h.quit:
			return
		}
	}
}

// expired handles every entry whose deadline passed and returns how long
// until the next one (0: none queued).
func (h *handshakeDeadlines) expired(now time.Time) time.Duration {
	h.mu.Lock()
	n := 0
	for n < len(h.queue) && !h.queue[n].deadline.After(now) {
		n++
	}
	due := make([]*gnetTransport, 0, n)
	for _, e := range h.queue[:n] {
		if t := e.t.Load(); t != nil {
			due = append(due, t)
		}
	}
	skipped := n - len(due)
	clear(h.queue[:n])
	h.queue = h.queue[n:]
	var next time.Duration
	if len(h.queue) > 0 {
		next = h.queue[0].deadline.Sub(now)
	}
	if len(h.queue) == 0 {
		h.queue = nil // let the backing array go
	}
	h.mu.Unlock()
	for _, t := range due {
		if !t.handshook.Load() {
			h.expire(t)
		}
	}
	h.checked.Add(uint64(len(due) + skipped))
	return next
}

// expire closes t if it still has not finished its handshake.
func (l *listener) expire(t *gnetTransport) {
	_ = t.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if t.closed || t.s.handshaken || t.s.closed {
			return nil
		}
		l.handshakeClosed.Add(1)
		err := wire.Errorf(wire.CodeHandshakeRequired,
			"no Hello within the handshake timeout of "+l.srv.cfg.HandshakeTimeout.String())
		t.s.sendErr(0, err)
		t.s.refused(err)
		t.flush()
		_ = t.c.Close()
		return nil
	}))
}

// The listener's families.
var (
	mRefused = promtext.NewCounter("ratatoskr_connections_refused_total",
		"Connections refused with LIMIT_EXCEEDED before the handshake, by reason: max_connections, handshakes_per_address.")
	mHandshakeTimeouts = promtext.NewCounter("ratatoskr_handshake_timeouts_total",
		"Connections closed because no whole Hello came within --handshake-timeout.")
	mAcceptErrors = promtext.NewCounter("ratatoskr_accept_errors_total",
		"Connections that could not be accepted or registered for want of file descriptors or memory.")
)

// writeMetrics writes the listener's counters (docs/METRICS.md).
func (l *listener) writeMetrics(w io.Writer) {
	mRefused.WriteHeader(w)
	mRefused.WriteSample(w, `{reason="max_connections"}`, strconv.FormatUint(l.refusedMax.Load(), 10))
	mRefused.WriteSample(w, `{reason="handshakes_per_address"}`, strconv.FormatUint(l.refusedPerAddr.Load(), 10))
	mHandshakeTimeouts.WriteUint(w, l.handshakeClosed.Load())
	mAcceptErrors.WriteUint(w, l.acceptErrors.Load())
}

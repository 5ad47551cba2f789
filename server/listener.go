package server

import (
	"context"
	"errors"
	"io"
	"net"
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
	acceptor
	cli *gnet.Client

	enrolling atomic.Int64  // admitted, not yet registered with a loop (counts against MaxConnections)
	enrollers chan struct{} // bounds enrolling to maxEnrolling

	enrolled atomic.Pointer[func()] // tests: runs after a registration, before its goroutine ends
}

// acceptor is an accept loop, shared by the plaintext and the TLS
// listeners: it hands each connection to admit, and waits out the errors
// that pass with a backoff.
type acceptor struct {
	srv     *Server
	ln      net.Listener
	name    string // "native" or "TLS", for the logs
	closing atomic.Bool
	quit    chan struct{} // closed by close: ends a backoff
	done    chan struct{} // closed when the accept loop has returned
}

func newAcceptor(srv *Server, ln net.Listener, name string) acceptor {
	return acceptor{srv: srv, ln: ln, name: name, quit: make(chan struct{}), done: make(chan struct{})}
}

// close closes the listening socket and waits for the accept loop.
func (a *acceptor) close() {
	if a.ln == nil { // loops without a socket (startListener)
		return
	}
	if a.closing.CompareAndSwap(false, true) {
		_ = a.ln.Close()
		close(a.quit)
	}
	<-a.done
}

// startListener binds the native address and starts the event loops.
// Without an address the loops start all the same, with no socket: they
// serve the gateways' in-process connections (local.go).
func (srv *Server) startListener() error {
	var ln net.Listener
	if srv.cfg.Addr != "" {
		var err error
		if ln, err = net.Listen("tcp", srv.cfg.Addr); err != nil {
			return err
		}
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
		if ln != nil {
			_ = ln.Close()
		}
		return err
	}
	l := &listener{acceptor: newAcceptor(srv, ln, "native"), cli: cli, enrollers: make(chan struct{}, maxEnrolling)}
	srv.lis = l
	if ln != nil {
		srv.addr = ln.Addr()
	}
	return nil
}

// stop closes the listening socket and waits for the accept loop; the
// connections stay (stopLoops closes them).
func (l *listener) stop() {
	l.close()
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

func (a *acceptor) run(admit func(net.Conn)) {
	defer close(a.done)
	var delay time.Duration
	for {
		c, err := a.ln.Accept()
		if err == nil {
			delay = 0
			admit(c)
			continue
		}
		if a.closing.Load() {
			return
		}
		if !acceptErrorPasses(err) {
			a.srv.listenerFailed(a.name, err)
			return
		}
		delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
		a.srv.outOfFDs(err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-a.quit:
			t.Stop()
			return
		}
	}
}

// outOfFDs counts an accept or registration that failed for want of
// descriptors (or memory) and says so in the log, at most every 10 s.
func (srv *Server) outOfFDs(err error) {
	srv.acceptErrors.Add(1)
	now := time.Now().UnixNano()
	last := srv.lastWarn.Load()
	if now-last < int64(10*time.Second) || !srv.lastWarn.CompareAndSwap(last, now) {
		return
	}
	srv.log.Warn("accept failed: out of file descriptors or memory; refusing connections until some close",
		"err", err, "connections", srv.connections.Load(), "fd_limit", FDLimit(), "failures", srv.acceptErrors.Load())
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
func (srv *Server) listenerFailed(name string, err error) {
	why := "the " + name + " listener failed: " + err.Error()
	srv.listenerErr.Store(&why)
	srv.log.Error(name+" listener failed; the broker accepts no connections there and should be restarted", "err", err)
	select {
	case srv.fatal <- errors.New("engine: " + why):
	default:
	}
}

// admit hands an accepted connection to an event loop, or refuses it.
func (l *listener) admit(c net.Conn) {
	srv := l.srv
	addr := hostOf(c.RemoteAddr())
	if why, ok := srv.adm.admit(addr, srv.preConnections()); !ok {
		refuseConn(c, why)
		return
	}
	// gnet duplicates the descriptor (and closes ours), so a connection
	// whose descriptor is the last one free cannot be registered: it is
	// told so instead of being dropped without a word.
	if fd := fdOf(c); fd >= FDLimit()-1 {
		srv.adm.pending.give(addr)
		srv.outOfFDs(syscall.EMFILE)
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
		l.srv.adm.pending.give(addr)
		if acceptErrorPasses(err) {
			l.srv.outOfFDs(err)
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
		l.srv.adm.pending.give(addr)
	case acc.t != nil:
		l.srv.adm.hs.add(&acc.t.hs)
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
	// local is the peer an in-process connection serves (local.go); nil
	// for an accepted one.
	local *LocalPeer
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

// expire closes t if it still has not finished its handshake.
func (t *gnetTransport) expire() {
	_ = t.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if t.closed || t.s.handshaken || t.s.closed {
			return nil
		}
		t.s.srv.adm.timedOut(t.s)
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

// writeAcceptMetrics writes the accept errors (docs/METRICS.md).
func (srv *Server) writeAcceptMetrics(w io.Writer) {
	mAcceptErrors.WriteUint(w, srv.acceptErrors.Load())
}

package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// readBufferCap is the size of each event loop's read buffer: one read
// syscall takes up to this much from a socket.
const readBufferCap = 256 << 10

// handler adapts gnet's callbacks to sessions.
type handler struct {
	gnet.BuiltinEventEngine
	srv *Server
}

func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	srv := h.srv
	acc, _ := c.Context().(*accepted)
	if acc != nil {
		acc.opened = true
	}
	if srv.draining.Load() {
		if acc != nil {
			srv.adm.pending.give(acc.addr)
		}
		if srv.observed() {
			srv.emit(telemetry.Event{Kind: telemetry.EventConnRefused, Partition: -1, Actor: "client", Remote: c.RemoteAddr().String(),
				Action: "connect", Err: ErrShuttingDown})
		}
		body := wire.AppendError(nil, wire.CodeShuttingDown, "the broker is shutting down")
		return append(wire.AppendHeader(nil, wire.TypeError, 0, 0, len(body)), body...), gnet.Close
	}
	t := &gnetTransport{c: c, el: c.EventLoop(), fd: c.Fd(), remote: c.RemoteAddr().String()}
	if acc != nil {
		t.hs.addr, acc.t = acc.addr, t
		if acc.local != nil {
			t.remote = acc.local.Remote
		}
	}
	t.hs.expire = t.expire
	t.s = newSession(srv, t)
	if acc != nil && acc.local != nil {
		t.s.peerCert, t.s.info.via = acc.local.Cert, acc.local.Via
	}
	c.SetContext(t)
	srv.sessions.Store(t.s, struct{}{})
	srv.connections.Add(1)
	if acc != nil {
		acc.release() // counted as a connection now, no longer as enrolling
	}
	srv.accepted.Add(1)
	srv.emit(telemetry.Event{Kind: telemetry.EventConnAccepted, Partition: -1, Actor: "client", Remote: t.remote, Action: "connect"})
	return nil, gnet.None
}

func (h *handler) OnTraffic(c gnet.Conn) gnet.Action {
	t := c.Context().(*gnetTransport)
	closeConn := t.s.onData(c)
	if !closeConn {
		t.s.noteInbound(c.InboundBuffered())
	}
	t.s.noteCounts()
	t.s.runShards(t.el)
	t.flush()
	if closeConn {
		return gnet.Close
	}
	return gnet.None
}

func (h *handler) OnClose(c gnet.Conn, err error) gnet.Action {
	t, ok := c.Context().(*gnetTransport)
	if !ok {
		return gnet.None
	}
	// gnet closes the socket after OnClose returns; a direct write from
	// another loop that is under way finishes first, and none starts after.
	// When gnet closes the connection from inside a write of our own flush
	// (a write error), this loop holds wmu already, so no direct write can
	// be running, and taking it again would deadlock the loop.
	if t.flushing {
		t.wclosed, t.carry = true, nil
	} else {
		t.wmu.Lock()
		t.wclosed, t.carry = true, nil
		t.wmu.Unlock()
	}
	t.hs.done(&h.srv.adm)
	t.s.onClose()
	t.closed = true
	h.srv.sessions.Delete(t.s)
	h.srv.connections.Add(-1)
	if err != nil {
		h.srv.log.Debug("connection closed", "remote", t.remote, "err", err)
	}
	h.srv.emit(telemetry.Event{Kind: telemetry.EventConnClosed, Partition: -1, Actor: "client", Remote: t.remote, Action: "disconnect", Err: err})
	return gnet.None
}

// gnetTransport is a session's connection on a gnet event loop.
//
// The loop writes the connection through gnet (which buffers what the
// socket does not take), but a shard running inline on another loop may
// write it directly with writev on the socket (FlushDirect) instead of
// waking this loop's thread. wmu makes the two take turns, and a direct
// write happens only while gnet holds nothing unsent for the connection,
// so gnet never writes the socket on its own meanwhile and bytes never
// overtake each other. What a direct write leaves over goes to carry,
// which the loop writes through gnet before anything else.
type gnetTransport struct {
	c      gnet.Conn
	el     gnet.EventLoop
	fd     int
	s      *session
	remote string
	closed bool // set on the loop in OnClose; gnet's Conn is not touched after
	// unsent is what gnet holds unsent plus carry, as of the last write;
	// written under wmu.
	unsent atomic.Int64

	wmu     sync.Mutex
	carry   []byte // guarded by wmu
	werr    error  // a direct write failed; guarded by wmu
	wclosed bool   // OnClose ran; guarded by wmu
	// flushing is set while flush holds wmu; read and written on the loop
	// only (see OnClose).
	flushing bool
	// hs is the connection's handshake accounting (admission.go); on the
	// loop.
	hs hsConn
}

// directMax is the most a direct write takes: a few deliveries of a lightly
// loaded topic. Larger batches mean the publishing loop is busy, and their
// loops write them in parallel with it.
const directMax = 32 << 10

// flush writes what the session has queued; on the loop.
func (t *gnetTransport) flush() {
	if t.closed { // OnClose ran, maybe within this very OnTraffic
		return
	}
	t.wmu.Lock()
	t.flushing = true
	defer func() {
		t.flushing = false
		t.wmu.Unlock()
	}()
	if t.werr != nil {
		t.s.srv.log.Debug("direct write failed", "remote", t.remote, "err", t.werr)
		_ = t.c.Close()
		return
	}
	if len(t.carry) > 0 {
		_, err := t.c.Writev([][]byte{t.carry})
		t.carry = nil
		t.unsent.Store(int64(t.c.OutboundBuffered()))
		if err != nil {
			_ = t.c.Close()
			return
		}
	}
	t.s.flush()
}

// FlushDirect implements outbox.DirectFlusher: it writes the session's
// queued frames from the calling goroutine, if this loop is not writing,
// gnet holds nothing unsent, and they are few (TakeDirect).
func (t *gnetTransport) FlushDirect() bool {
	if t.s.quota.noDirect.Load() || !t.wmu.TryLock() {
		return false
	}
	defer t.wmu.Unlock()
	if t.wclosed || t.werr != nil || t.unsent.Load() != 0 {
		return false
	}
	p := t.s.out.TakeDirect(directMax)
	if p == nil {
		return false
	}
	t.carry, t.werr = writevFD(t.fd, p.IOV, t.carry[:0])
	t.unsent.Store(int64(len(t.carry)))
	t.s.out.Done(p, len(t.carry))
	t.s.srv.directWrites.Add(1)
	if len(t.carry) > 0 || t.werr != nil {
		t.s.srv.directShort.Add(1)
		t.ScheduleFlush()
	}
	return true
}

// writevFD writes iov to a non-blocking socket and returns a copy of what
// it did not take, appended to rest.
func writevFD(fd int, iov [][]byte, rest []byte) ([]byte, error) {
	for len(iov) > 0 {
		n, err := unix.Writev(fd, iov[:min(len(iov), outbox.MaxIOV)])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			return rest[:0], err
		}
		for n > 0 { // n is at most what iov holds
			if n < len(iov[0]) {
				iov[0] = iov[0][n:]
				break
			}
			n -= len(iov[0])
			iov = iov[1:]
		}
	}
	for _, b := range iov {
		rest = append(rest, b...)
	}
	return rest, nil
}

// ScheduleFlush implements outbox.Flusher: it queues a flush on the loop.
func (t *gnetTransport) ScheduleFlush() {
	if err := t.el.Execute(context.Background(), t); err != nil {
		// The broker is stopping; gnet closes the connection itself.
		t.s.srv.log.Debug("flush not scheduled", "remote", t.remote, "err", err)
	}
}

// Owner implements outbox.Flusher: the event loop that writes this connection.
func (t *gnetTransport) Owner() any { return t.el }

// FlushNow implements outbox.Flusher; the caller is on the connection's loop.
func (t *gnetTransport) FlushNow() { t.flush() }

// Run is the flush task gnet runs on the connection's loop.
func (t *gnetTransport) Run(context.Context) error {
	t.flush()
	return nil
}

func (t *gnetTransport) writev(iov [][]byte) error {
	_, err := t.c.Writev(iov)
	t.unsent.Store(int64(t.c.OutboundBuffered()))
	return err
}

func (t *gnetTransport) backlog() int {
	n := t.c.OutboundBuffered()
	t.unsent.Store(int64(n))
	return n
}

// unsentBytes implements transport.
func (t *gnetTransport) unsentBytes() int64 { return t.unsent.Load() }

func (t *gnetTransport) close()             { _ = t.c.Close() }
func (t *gnetTransport) remoteAddr() string { return t.remote }

// goodbye implements transport: gnet writes the goodbye before it closes
// the connection, and done runs on the loop once it has.
func (t *gnetTransport) goodbye(done func()) bool {
	return t.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if !t.closed {
			t.s.out.SendError(0, ErrShuttingDown)
			t.flush()
		}
		done()
		return nil
	})) == nil
}

// handshaken implements transport.
func (t *gnetTransport) handshaken() { t.hs.done(&t.s.srv.adm) }

// onLoop implements transport: fn, then the rest of a read's work.
func (t *gnetTransport) onLoop(fn func() bool) bool {
	return t.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		closeConn := fn()
		if t.closed {
			return nil
		}
		if !closeConn {
			closeConn = t.s.onData(t.c)
		}
		if !closeConn {
			t.s.noteInbound(t.c.InboundBuffered())
		}
		t.s.noteCounts()
		t.s.runShards(t.el)
		t.flush()
		if closeConn {
			_ = t.c.Close()
		}
		return nil
	})) == nil
}

// gnetLogger routes gnet's logs into slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "src", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "src", "gnet") }

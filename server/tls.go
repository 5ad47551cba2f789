package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/telemetry/promtext"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The TLS listener serves the native protocol over crypto/tls (gnet has no
// TLS). It drives the same sessions as the gnet listener through the
// transport interface, with three goroutines per connection:
//
//   - the reader runs the TLS handshake, then reads the connection into
//     the session's inbound buffer (tlsInbound) and runs the read's work
//     (decode, dispatch, the shards inline, the flush) holding t.mu;
//   - the worker runs what other goroutines ask of the connection
//     (ScheduleFlush, onLoop, goodbye), holding t.mu too;
//   - the writer writes what the session's flushes copied into the write
//     queue's pooled 256 KiB chunks, one tls.Conn.Write per chunk (16 TLS
//     records), never a write per frame.
//
// t.mu is what gnet's event loop is for the gnet transport: "the
// transport's goroutine" of session.go is whoever holds it. Nothing
// blocks while holding it: reads and writes happen outside it, so a
// client that stops reading stalls only its writer, and the session can
// still be judged slow and closed. Lock order: t.mu, then the outbox's
// lock, then t.wmu.
//
// Admission is the gnet listener's (admission.go). The TLS handshake is
// part of the handshake: the socket's read deadline is the accept time
// plus HandshakeTimeout until Hello, for the TLS handshake and the Hello
// alike. A connection refused at admission is closed without a word: it
// has no TLS session to carry one.

// tlsListener is the native protocol's TLS listener.
type tlsListener struct {
	acceptor
	certs *Certs
	cfg   *tls.Config

	handshaking atomic.Int64 // admitted, TLS handshake not finished (counts against MaxConnections)
	wg          sync.WaitGroup
	mu          sync.Mutex
	conns       map[*tlsTransport]struct{} // guarded by mu
	stopping    bool                       // guarded by mu: no new connection is tracked

	failures [numTLSFailures]atomic.Uint64 // failed TLS handshakes, by reason
	lastWarn atomic.Int64                  // when a failed handshake was last logged (Unix ns)
}

// Why TLS handshakes fail, for the metric.
const (
	tlsNotTLS        = iota // the client did not speak TLS (a plaintext client)
	tlsNoClientCert         // mutual TLS: the client sent no certificate
	tlsBadClientCert        // mutual TLS: its certificate did not verify
	tlsTimeout              // not done within HandshakeTimeout
	tlsOtherFailure         // anything else (the client gave up, rejected ours, ...)
	numTLSFailures
)

var tlsFailureNames = [numTLSFailures]string{"not_tls", "no_client_cert", "bad_client_cert", "timeout", "other"}

// startTLSListener binds the TLS address and starts its accept loop.
func (srv *Server) startTLSListener() error {
	if srv.cfg.Certs == nil {
		return errors.New("TLS listener without a certificate")
	}
	ln, err := net.Listen("tcp", srv.cfg.TLSAddr)
	if err != nil {
		return err
	}
	l := &tlsListener{acceptor: newAcceptor(srv, ln, "TLS"), certs: srv.cfg.Certs, cfg: srv.cfg.Certs.Native(),
		conns: map[*tlsTransport]struct{}{}}
	srv.tls, srv.tlsAddr = l, ln.Addr()
	return nil
}

// admit starts serving an accepted connection, or closes it.
func (l *tlsListener) admit(c net.Conn) {
	srv := l.srv
	addr := hostOf(c.RemoteAddr())
	if why, ok := srv.adm.admit(addr, srv.preConnections()); !ok {
		srv.log.Debug("TLS connection refused", "remote", c.RemoteAddr().String(), "why", why)
		_ = c.Close()
		return
	}
	t := newTLSTransport(l, c)
	t.hs.addr = addr
	l.handshaking.Add(1)
	if !l.track(t) {
		l.handshaking.Add(-1)
		srv.adm.pending.give(addr)
		_ = c.Close()
		return
	}
	go t.serve()
}

// track registers t, unless the listener is stopping.
func (l *tlsListener) track(t *tlsTransport) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		return false
	}
	l.conns[t] = struct{}{}
	l.wg.Add(1)
	return true
}

func (l *tlsListener) untrack(t *tlsTransport) {
	l.mu.Lock()
	delete(l.conns, t)
	l.mu.Unlock()
}

// closeAll closes every connection and waits until their goroutines end.
func (l *tlsListener) closeAll() {
	l.mu.Lock()
	l.stopping = true
	conns := make([]*tlsTransport, 0, len(l.conns))
	for t := range l.conns {
		conns = append(conns, t)
	}
	l.mu.Unlock()
	for _, t := range conns {
		t.close()
	}
	l.wg.Wait()
}

// failed counts and logs a failed TLS handshake (the log at most every
// 10 s: a scanner must not flood it).
func (l *tlsListener) failed(t *tlsTransport, why int, err error) {
	l.failures[why].Add(1)
	if why == tlsTimeout {
		l.srv.adm.handshakeClosed.Add(1)
	}
	l.srv.emit(telemetry.Event{Kind: telemetry.EventConnRefused, Partition: -1, Actor: "client", Remote: t.remote,
		Action: "tls-handshake", Err: err})
	if !everyTenSeconds(&l.lastWarn) {
		l.srv.log.Debug("TLS handshake failed", "remote", t.remote, "reason", tlsFailureNames[why], "err", err)
		return
	}
	msg := "TLS handshake failed"
	if why == tlsNotTLS {
		msg = "a client that does not speak TLS connected to the TLS port (plaintext clients use --addr); closed"
	}
	l.srv.log.Warn(msg, "remote", t.remote, "reason", tlsFailureNames[why], "err", err)
}

// classifyTLS says why a TLS handshake failed.
func classifyTLS(err error) int {
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return tlsTimeout
	case errors.As(err, &rh):
		return tlsNotTLS
	case errors.As(err, &cv):
		return tlsBadClientCert
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return tlsNoClientCert // crypto/tls has no error type for it
	}
	return tlsOtherFailure
}

// tlsTransport is a session's TLS connection.
type tlsTransport struct {
	l        *tlsListener
	raw      net.Conn
	io       *rawIO // under conn: large reads, and a chunk's records in one write
	conn     *tls.Conn
	remote   string
	accepted time.Time
	hs       hsConn // handshake accounting (admission.go); under mu

	// mu is the transport's goroutine (see above).
	mu      sync.Mutex
	s       *session   // set once the TLS handshake succeeded; under mu
	in      tlsInbound // the read side; see tlsInbound for who touches what
	closed  bool       // finish ran; under mu
	waiting bool       // the reader waits for the parked session (wake); under mu
	wake    chan struct{}

	closing atomic.Bool   // close was called: nothing more is read into the session
	started atomic.Bool   // the writer runs
	done    chan struct{} // closed by finish: the worker ends
	wdone   chan struct{} // closed when the writer has ended

	// The worker's queue.
	qmu        sync.Mutex
	tasks      []func() // guarded by qmu
	tasksEnded bool     // guarded by qmu: the worker is gone
	flushWant  atomic.Bool
	kick       chan struct{}

	// The writer's side.
	wmu      sync.Mutex
	wcond    *sync.Cond
	wq       []*[]byte // chunks of flushed frames not yet handed to the writer; guarded by wmu
	wqBytes  int       // bytes in wq; guarded by wmu
	wspare   []*[]byte // the writer's previous list, reused; guarded by wmu
	writing  int       // bytes in the write under way; guarded by wmu
	werr     error     // the connection failed to write; guarded by wmu
	wclose   bool      // close once wq is written; guarded by wmu
	reported bool      // the last backlog reported to the outbox was not 0; guarded by wmu
	unsent   atomic.Int64
}

func newTLSTransport(l *tlsListener, c net.Conn) *tlsTransport {
	t := &tlsTransport{l: l, raw: c, remote: c.RemoteAddr().String(), accepted: time.Now(),
		wake: make(chan struct{}, 1), done: make(chan struct{}), wdone: make(chan struct{}), kick: make(chan struct{}, 1)}
	t.wcond = sync.NewCond(&t.wmu)
	return t
}

// serve is the reader goroutine: the TLS handshake, then reads until the
// connection ends.
func (t *tlsTransport) serve() {
	defer t.l.wg.Done()
	defer t.l.untrack(t)
	if !t.handshake() {
		return
	}
	t.l.wg.Add(2)
	t.started.Store(true)
	go t.work()
	go t.write()
	err := t.readLoop()
	t.finish(err)
}

// handshake runs the TLS handshake within the handshake deadline and makes
// the session; false when the connection ended instead.
func (t *tlsTransport) handshake() bool {
	l, srv := t.l, t.l.srv
	_ = t.raw.SetDeadline(t.accepted.Add(srv.cfg.HandshakeTimeout))
	t.io = &rawIO{Conn: t.raw}
	t.conn = tls.Server(t.io, l.cfg)
	err := t.conn.Handshake()
	l.handshaking.Add(-1)
	if err != nil || t.closing.Load() {
		if !t.closing.Load() { // not closed by the broker's own shutdown
			l.failed(t, classifyTLS(err), err)
		}
		t.hs.done(&srv.adm)
		_ = t.raw.Close()
		return false
	}
	if srv.draining.Load() {
		t.hs.done(&srv.adm)
		body := wire.AppendError(nil, wire.CodeShuttingDown, "the broker is shutting down")
		_, _ = t.conn.Write(append(wire.AppendHeader(nil, wire.TypeError, 0, 0, len(body)), body...))
		_ = t.raw.Close()
		return false
	}
	// The write side has no deadline from now on; the read side keeps
	// the handshake's until Hello (handshaken).
	_ = t.raw.SetWriteDeadline(time.Time{})
	t.mu.Lock()
	t.s = newSession(srv, t)
	if st := t.conn.ConnectionState(); len(st.PeerCertificates) > 0 {
		t.s.peerCert = st.PeerCertificates[0]
	}
	srv.sessions.Store(t.s, struct{}{})
	srv.connections.Add(1)
	srv.accepted.Add(1)
	t.mu.Unlock()
	srv.emit(telemetry.Event{Kind: telemetry.EventConnAccepted, Partition: -1, Actor: "client", Remote: t.remote, Action: "connect"})
	return true
}

// minReadSpace is the least room a read is given: a whole TLS record.
const minReadSpace = 16 << 10

// readLoop reads until the connection fails or closes.
func (t *tlsTransport) readLoop() error {
	for {
		buf := t.readSpace()
		n, err := t.conn.Read(buf)
		t.mu.Lock()
		t.in.w += n
		if n > 0 {
			t.process(false)
		}
		if err != nil && !t.readFailed(err) {
			t.mu.Unlock()
			return err
		}
		t.mu.Unlock()
	}
}

// readFailed handles a read error under mu and reports whether to read
// on: the handshake deadline passing before Hello closes the connection;
// after Hello it was lifted, and a read it interrupted reads again.
func (t *tlsTransport) readFailed(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || t.closing.Load() {
		return false
	}
	if !t.s.handshaken {
		t.l.srv.adm.timedOut(t.s)
		t.flushLocked()
		t.close()
	}
	return true
}

// readSpace returns where the next read goes: the free tail of the
// inbound buffer, compacted or grown as needed. While the session is
// parked (off-loop work, or paused by the memory guard) and readBufferCap
// bytes wait unprocessed, it waits instead: a parked connection stops
// reading, and TCP pushes back on its client.
func (t *tlsTransport) readSpace() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := &t.in
	for in.buffered() >= readBufferCap && t.s.parked && !t.closing.Load() {
		t.waiting = true
		t.mu.Unlock()
		<-t.wake
		t.mu.Lock()
		t.waiting = false
	}
	if t.closing.Load() {
		in.r = in.w // nothing more is taken: what is read is dropped
	}
	return in.space(minReadSpace)
}

// process runs a read's work on what the inbound buffer holds, as gnet's
// OnTraffic does; closeConn says the connection is to close already.
// Under mu.
func (t *tlsTransport) process(closeConn bool) {
	s := t.s
	if t.closed || t.closing.Load() {
		return
	}
	if !closeConn {
		closeConn = s.onData(&t.in)
	}
	if !closeConn {
		s.noteInbound(t.in.buffered())
	}
	s.noteCounts()
	s.runShards(t)
	t.flushLocked()
	if closeConn {
		t.close()
	}
	if t.waiting && !s.parked {
		t.wakeReader()
	}
}

func (t *tlsTransport) wakeReader() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// flushLocked writes what the session has queued. Under mu.
func (t *tlsTransport) flushLocked() {
	if !t.closed {
		t.s.flush()
	}
}

// finish releases the session once the connection has ended: on the
// reader, after its last read. The writer gets what it holds out first
// (within closeGrace): an error frame that explains a close, say.
func (t *tlsTransport) finish(err error) {
	srv := t.l.srv
	t.close()
	<-t.wdone
	_ = t.raw.Close()
	t.mu.Lock()
	t.closed = true
	t.hs.done(&srv.adm)
	t.s.onClose()
	t.in.release()
	t.mu.Unlock()
	close(t.done)
	srv.sessions.Delete(t.s)
	srv.connections.Add(-1)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		srv.log.Debug("connection closed", "remote", t.remote, "err", err)
	} else {
		err = nil
	}
	srv.emit(telemetry.Event{Kind: telemetry.EventConnClosed, Partition: -1, Actor: "client", Remote: t.remote, Action: "disconnect", Err: err})
}

// closeGrace bounds how long a closing connection may take to write what
// it holds: a client that does not read loses the rest, as with gnet,
// which writes what the socket takes and closes.
const closeGrace = 500 * time.Millisecond

// close closes the connection after the frames already written, within
// closeGrace. Safe from any goroutine.
func (t *tlsTransport) close() {
	t.closing.Store(true)
	t.wmu.Lock()
	first := !t.wclose
	t.wclose = true
	t.wcond.Signal()
	t.wmu.Unlock()
	if first {
		_ = t.raw.SetWriteDeadline(time.Now().Add(closeGrace))
		if !t.started.Load() {
			_ = t.raw.Close() // still in the TLS handshake: no writer to close it
		}
	}
	t.wakeReader()
}

// The worker.

// work runs the tasks other goroutines queue, holding mu, until finish;
// then it runs those still queued, so that each one queued runs once.
func (t *tlsTransport) work() {
	defer t.l.wg.Done()
	for {
		select {
		case <-t.kick:
			t.runTasks(false)
		case <-t.done:
			t.runTasks(true)
			return
		}
	}
}

func (t *tlsTransport) runTasks(last bool) {
	t.qmu.Lock()
	tasks := t.tasks
	t.tasks = nil
	t.tasksEnded = t.tasksEnded || last
	t.qmu.Unlock()
	flush := t.flushWant.Swap(false)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, fn := range tasks {
		fn()
	}
	if flush {
		t.flushLocked()
	}
}

// queue gets fn run by the worker; false when the worker is gone.
func (t *tlsTransport) queue(fn func()) bool {
	t.qmu.Lock()
	if t.tasksEnded {
		t.qmu.Unlock()
		return false
	}
	t.tasks = append(t.tasks, fn)
	t.qmu.Unlock()
	t.kickWorker()
	return true
}

func (t *tlsTransport) kickWorker() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// ScheduleFlush implements outbox.Flusher.
func (t *tlsTransport) ScheduleFlush() {
	if !t.flushWant.Swap(true) {
		t.kickWorker()
	}
}

// Owner implements outbox.Flusher: the connection itself, since its
// goroutine is whoever holds its mu.
func (t *tlsTransport) Owner() any { return t }

// FlushNow implements outbox.Flusher; the caller holds mu.
func (t *tlsTransport) FlushNow() { t.flushLocked() }

// FlushDirect implements outbox.DirectFlusher: a shard running inline
// for another connection flushes this one at once when no one holds its
// mu, saving the worker's wake-up.
func (t *tlsTransport) FlushDirect() bool {
	if !t.mu.TryLock() {
		return false
	}
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.s.flush()
	return true
}

// onLoop implements transport.
func (t *tlsTransport) onLoop(fn func() bool) bool {
	return t.queue(func() {
		closeConn := fn()
		t.process(closeConn)
	})
}

// goodbye implements transport.
func (t *tlsTransport) goodbye(done func()) bool {
	return t.queue(func() {
		if !t.closed {
			t.s.out.SendError(0, ErrShuttingDown)
			t.flushLocked()
		}
		done()
	})
}

// handshaken implements transport: Hello lifts the handshake deadline.
func (t *tlsTransport) handshaken() {
	t.hs.done(&t.l.srv.adm)
	_ = t.raw.SetReadDeadline(time.Time{})
}

func (t *tlsTransport) remoteAddr() string { return t.remote }

// TLSIdentity is what a verified client certificate says of its holder:
// its subject's common name and its URI and DNS names.
type TLSIdentity struct {
	CommonName string
	URIs       []string
	DNSNames   []string
}

// String is the identity as the logs and the admin API show it.
func (id TLSIdentity) String() string {
	parts := make([]string, 0, 1+len(id.URIs)+len(id.DNSNames))
	parts = append(parts, "CN="+id.CommonName)
	for _, u := range id.URIs {
		parts = append(parts, "URI="+u)
	}
	for _, d := range id.DNSNames {
		parts = append(parts, "DNS="+d)
	}
	return strings.Join(parts, ",")
}

// tlsIdentity is the identity of the session's verified client
// certificate (mutual TLS); ok is false without one.
func (s *session) tlsIdentity() (id TLSIdentity, ok bool) {
	return identityOf(s.peerCert)
}

func identityOf(c *x509.Certificate) (TLSIdentity, bool) {
	if c == nil {
		return TLSIdentity{}, false
	}
	id := TLSIdentity{CommonName: c.Subject.CommonName, DNSNames: c.DNSNames}
	for _, u := range c.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	return id, true
}

// The TLS families.
var (
	mTLSFailures = promtext.NewCounter("ratatoskr_tls_handshake_failures_total",
		"TLS handshakes on the TLS port that failed, by reason: not_tls (a plaintext client), no_client_cert, bad_client_cert, timeout, other.")
	mTLSOnPlain = promtext.NewCounter("ratatoskr_tls_on_plaintext_port_total",
		"Connections to the plaintext port that began a TLS handshake (a TLS client on the wrong port); closed.")
)

// writeTLSMetrics writes the TLS listener's figures (docs/METRICS.md).
func (srv *Server) writeTLSMetrics(w io.Writer) {
	mTLSOnPlain.WriteUint(w, srv.tlsOnPlain.Load())
	if srv.cfg.Certs != nil {
		srv.cfg.Certs.WriteMetrics(w)
	}
	if srv.tls == nil {
		return
	}
	mTLSFailures.WriteHeader(w)
	for i, name := range tlsFailureNames {
		mTLSFailures.WriteSample(w, `{reason="`+name+`"}`, strconv.FormatUint(srv.tls.failures[i].Load(), 10))
	}
}

// tlsOnPlaintext reports whether what a connection to the plaintext port
// sent first is a TLS handshake record (content type 22, version 3.x):
// a TLS client on the wrong port. It is logged, counted and closed
// without an answer, which the client could not read anyway. Only for
// a first frame that did not parse, so it costs the hot path nothing.
func (s *session) tlsOnPlaintext(in inbound) bool {
	b, err := in.Peek(3)
	if err != nil || b[0] != 0x16 || b[1] != 0x03 {
		return false
	}
	s.srv.tlsOnPlain.Add(1)
	if everyTenSeconds(&s.srv.tlsPlainWarn) {
		s.srv.log.Warn("a TLS client connected to the plaintext port (TLS clients use --tls-addr); closed", "remote", s.by.Remote)
	}
	s.refused(errTLSOnPlaintext)
	return true
}

var errTLSOnPlaintext = errors.New("a TLS handshake on the plaintext port")

// everyTenSeconds reports whether a warning last logged at *last may be
// logged again, and if so records now: what a client can trigger at will
// must not flood the log.
func everyTenSeconds(last *atomic.Int64) bool {
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(10*time.Second) && last.CompareAndSwap(prev, now)
}

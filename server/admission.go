package server

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Admission is shared by the listeners (the plaintext one feeding gnet,
// listener.go, and the TLS one, tls.go): a connection from either counts
// against the same MaxConnections, the same per-address bound on
// unfinished handshakes (a host cannot double its share by using both
// ports) and the same handshake deadlines.
type admission struct {
	srv     *Server
	pending pendingHandshakes
	hs      handshakeDeadlines

	refusedMax      atomic.Uint64 // refused at MaxConnections
	refusedPerAddr  atomic.Uint64 // refused at MaxHandshakesPerAddr
	handshakeClosed atomic.Uint64 // closed at HandshakeTimeout
}

func (a *admission) init(srv *Server) {
	a.srv = srv
	a.pending.counts = map[string]int{}
	a.hs.init(srv.cfg.HandshakeTimeout)
}

// stop ends the handshake deadlines' goroutine.
func (a *admission) stop() { a.hs.stop() }

// admit decides whether a new connection from addr may proceed; before
// are the connections admitted but not yet counted in srv.connections. On
// success addr counts as handshaking until hsConn.done. On refusal it
// returns why, for the refused client.
func (a *admission) admit(addr string, before int64) (why string, ok bool) {
	srv := a.srv
	if n := srv.connections.Load() + before; n >= int64(srv.cfg.MaxConnections) {
		a.refusedMax.Add(1)
		return "the broker has its maximum of " + strconv.Itoa(srv.cfg.MaxConnections) + " connections", false
	}
	if !a.pending.take(addr, srv.cfg.MaxHandshakesPerAddr) {
		a.refusedPerAddr.Add(1)
		return strconv.Itoa(srv.cfg.MaxHandshakesPerAddr) + " connections from " + addr +
			" have not finished their handshake yet", false
	}
	return "", true
}

// timedOut counts a connection closed at its handshake deadline and tells
// its session why (nil: closed before it had one, during TLS's own
// handshake).
func (a *admission) timedOut(s *session) {
	a.handshakeClosed.Add(1)
	if s == nil {
		return
	}
	err := wire.Errorf(wire.CodeHandshakeRequired,
		"no Hello within the handshake timeout of "+a.srv.cfg.HandshakeTimeout.String())
	s.sendErr(0, err)
	s.refused(err)
}

// hsConn is a connection's part in admission while it has not finished
// its handshake: its source address, counted against MaxHandshakesPerAddr,
// and its place in the handshake deadlines. Each transport embeds one.
type hsConn struct {
	// addr is counted until done; on the transport's goroutine.
	addr string
	// handshook is set when the handshake ended (Hello or close), so the
	// deadlines skip the connection without visiting its goroutine.
	handshook atomic.Bool
	entry     atomic.Pointer[hsEntry] // its place in the deadlines, cleared when it ends
	// expire closes the connection if it still has not finished its
	// handshake; from the deadlines' goroutine. Only gnet connections are
	// in the deadlines: a TLS connection's socket has a read deadline.
	expire func()
}

// done ends the handshake accounting, once: on Hello, or on a close
// before one. On the transport's goroutine.
func (h *hsConn) done(a *admission) {
	if h.addr == "" {
		return
	}
	a.pending.give(h.addr)
	h.addr = ""
	h.handshook.Store(true)
	if e := h.entry.Load(); e != nil {
		e.c.Store(nil)
	}
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

// handshakeDeadlines closes connections that have not finished their
// handshake in time. Every connection gets the same timeout from when it
// is added, so deadlines arrive in order and a FIFO is a priority queue;
// one goroutine waits for the oldest.
type handshakeDeadlines struct {
	timeout time.Duration
	mu      sync.Mutex
	queue   []*hsEntry
	kick    chan struct{}
	quit    chan struct{}
	checked atomic.Uint64 // connections whose deadline passed or was not needed, for tests
}

// hsEntry is a connection waiting for its handshake deadline. The
// connection is let go (c cleared) as soon as its handshake ends, so that
// a connection that said Hello or closed is not kept alive in the queue
// until its deadline.
type hsEntry struct {
	c        atomic.Pointer[hsConn]
	deadline time.Time
}

func (h *handshakeDeadlines) init(timeout time.Duration) {
	h.timeout = timeout
	h.kick, h.quit = make(chan struct{}, 1), make(chan struct{})
	go h.run()
}

func (h *handshakeDeadlines) stop() { close(h.quit) }

func (h *handshakeDeadlines) add(c *hsConn) {
	if c.handshook.Load() {
		h.checked.Add(1) // nothing to wait for
		return
	}
	e := &hsEntry{deadline: time.Now().Add(h.timeout)}
	e.c.Store(c)
	c.entry.Store(e)
	if c.handshook.Load() { // it ended meanwhile, maybe before entry was set
		e.c.Store(nil)
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
	due := make([]*hsConn, 0, n)
	for _, e := range h.queue[:n] {
		if c := e.c.Load(); c != nil {
			due = append(due, c)
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
	for _, c := range due {
		if !c.handshook.Load() {
			c.expire()
		}
	}
	h.checked.Add(uint64(len(due) + skipped))
	return next
}

// writeMetrics writes the admission counters (docs/METRICS.md).
func (a *admission) writeMetrics(w io.Writer) {
	mRefused.WriteHeader(w)
	mRefused.WriteSample(w, `{reason="max_connections"}`, strconv.FormatUint(a.refusedMax.Load(), 10))
	mRefused.WriteSample(w, `{reason="handshakes_per_address"}`, strconv.FormatUint(a.refusedPerAddr.Load(), 10))
	mHandshakeTimeouts.WriteUint(w, a.handshakeClosed.Load())
}

// Package engine is the broker's composition root and, for now, most of
// what it composes: the native listener and connection sessions, the topic
// registry, the group coordinator, the metrics and the plugin runners.
// The pure parts and the HTTP side (httpapi, wired in http.go) live below
// it (docs/DESIGN.md, "Package map").
//
// Threads and data flow (see docs/DESIGN.md):
//
//	client ─TCP─▶ gnet event loop ─op─▶ shard inbox ─▶ shard pass ─frames─▶ Outbox ─▶ writev ─▶ client
//
// An event loop decodes frames (decode.go), answers admin requests
// itself, and copies each publish once into a pooled buffer that is
// already the Deliver frame. It pushes the publish into its partition's
// shard inbox and usually runs the shard's pass itself, inline: the shard
// stamps offsets, queues the ack and fans the same buffer out to every
// subscriber's Outbox. At the end of the pass the loop writes its own
// connections' outboxes at once and the others directly when they allow
// it; what is left is kicked to the connection's own loop, which writes
// everything queued for it in one writev. Durable topics are written and
// fsynced by the shard's syncer, which runs the pass that acks them.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// readBufferCap is the size of each event loop's read buffer: one read
// syscall takes up to this much from a socket.
const readBufferCap = 256 << 10

// Engine is a running broker.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	shards []*driver.Driver
	topics *registry
	groups *coord.Coordinator
	cache  *storage.BlockCache
	// reclaim deletes the data of deleted topics and segments in the
	// background (storage.Reclaimer); from Start on.
	reclaim *storage.Reclaimer

	lis      *listener // the native listener and its event loops (listener.go)
	addr     net.Addr
	fatal    chan error // the broker cannot go on serving (Fatal)
	draining atomic.Bool
	sessions sync.Map // *session -> struct{}
	// listenerErr says why the native listener stopped serving while the
	// broker was not shutting down; nil while it serves.
	listenerErr atomic.Pointer[string]

	http *httpapi.Server // the HTTP side (http.go)

	plugins plugins
	fetches fetcher     // the reader pool of pull fetches (fetch.go)
	replays *replayPool // the workers of replays (replays.go)

	// diskWork runs topic creations, deletions and config changes off
	// the event loops (offloop.go); autoCreates limits auto-creation.
	diskWork    *diskWorker
	diskStarted bool
	autoCreates *tokenBucket
	mem         *memGuard // the inbound memory bound (inflight.go)

	connections   atomic.Int64
	accepted      atomic.Uint64
	slowConsumers atomic.Uint64
	resumed       atomic.Uint64 // detached subscriptions resumed with a replay
	outbound      outbound      // the broker-wide outbound bound and cuts by reason (outbound.go)
	directWrites  atomic.Uint64 // deliveries written by another loop's thread (FlushDirect)
	directShort   atomic.Uint64 // direct writes the socket did not take whole
	errorsByCode  [32]atomic.Uint64

	// Observability (metrics.go, ready.go, http.go).
	metricSet *metrics.Set
	startedAt time.Time
	notReady  atomic.Pointer[string] // why Start has not finished; nil once it has
	disk      diskProbe
	history   *httpapi.History
}

// New validates cfg and returns a broker that is not listening yet. Its
// plugins (WithPlugin, and the audit log when Config.AuditLog is set)
// already run.
func New(cfg Config, opts ...Option) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, fatal: make(chan error, 1), metricSet: metrics.NewSet(),
		diskWork: newDiskWorker(), autoCreates: newTokenBucket(cfg.AutoCreateRate), outbound: newOutbound(&cfg),
		replays: newReplayPool(replayWorkers())}
	e.mem = newMemGuard(e, cfg.MaxInflightBytes)
	e.setNotReady("not started")
	e.newHTTP()
	if err := e.startPlugins(opts); err != nil {
		return nil, err
	}
	e.shards = make([]*driver.Driver, cfg.Shards)
	states := make([]*shard.Shard, cfg.Shards)
	for i := range e.shards {
		e.shards[i] = driver.New(driver.Config{Pin: pinner(cfg.PinShards), Logger: cfg.Logger,
			RetentionInterval: cfg.RetentionInterval, Shard: shard.Config{ID: i, Shards: cfg.Shards,
				MaxAckDelay: cfg.MaxAckDelay, SlowConsumerTimeout: cfg.SlowConsumerTimeout, StuckAfter: cfg.StuckConsumerAfter,
				OnBatch: e.batchHook(), Observer: newShardMetrics(e.metricSet, i)}})
		states[i] = e.shards[i].Shard()
	}
	cache, err := storage.NewBlockCache(cfg.CacheBytes)
	if err != nil {
		e.stopPluginsAfterFailure()
		return nil, fmt.Errorf("engine: read cache: %w", err)
	}
	e.cache = cache
	e.topics = newRegistry(&e.cfg, states, cache)
	e.groups = newCoordinator(e)
	return e, nil
}

// Start starts the HTTP server, recovers the topics and groups, and starts
// the shards and the native listener; it returns once they accept
// connections. HTTP comes first so that /readyz can say that recovery
// runs. When it fails, the plugins are stopped too.
func (e *Engine) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			e.stopPluginsAfterFailure()
		}
	}()
	if err := storage.MkdirDurable(e.cfg.FS, e.cfg.DataDir, 1); err != nil {
		return fmt.Errorf("engine: data directory: %w", err)
	}
	rc, err := storage.NewReclaimer(e.cfg.FS, e.cfg.DataDir+"/"+trashDir, e.log)
	if err != nil {
		return fmt.Errorf("engine: data directory: %w", err)
	}
	e.reclaim, e.topics.trash = rc, rc
	defer func() {
		if err != nil {
			rc.Close()
		}
	}()
	e.startedAt = time.Now()
	e.setNotReady("recovering topics and consumer groups")
	if err := e.startHTTP(); err != nil {
		return err
	}
	for _, s := range e.shards {
		s.Start()
	}
	if err := e.topics.load(); err != nil {
		e.stopShards()
		e.stopHTTP(ctx)
		return fmt.Errorf("engine: recovery: %w", err)
	}
	if err := e.groups.Load(); err != nil {
		e.stopShards()
		e.stopHTTP(ctx)
		_ = e.topics.closeAll()
		return fmt.Errorf("engine: consumer groups: %w", err)
	}
	e.setNotReady("starting the native listener")
	e.diskWork.start()
	e.diskStarted = true
	e.mem.start()
	if err := e.startListener(); err != nil {
		e.diskWork.close(true)
		e.mem.stop()
		e.stopShards()
		e.groups.Close()
		_ = e.topics.closeAll()
		e.stopHTTP(ctx)
		return fmt.Errorf("engine: listen %s: %w", e.cfg.Addr, err)
	}
	e.setNotReady("")
	e.history.Start()
	e.log.Info("ratatoskr listening", "addr", e.addr.String(), "http", e.HTTPAddr(),
		"shards", len(e.shards), "event_loops", e.cfg.EventLoops)
	return nil
}

// listenerProblem says why the native listener is not serving, or "".
func (e *Engine) listenerProblem() string {
	if why := e.listenerErr.Load(); why != nil {
		return *why
	}
	return ""
}

// Addr is the native protocol address the broker listens on.
func (e *Engine) Addr() net.Addr { return e.addr }

// HTTPAddr is the HTTP address, or "" when HTTP is disabled.
func (e *Engine) HTTPAddr() string {
	return e.http.Addr()
}

// Shutdown stops the broker gracefully: it refuses new connections and
// publishes, lets the shards finish what they hold, waits (up to the
// configured timeout or ctx) for queued frames to be written, tells every
// client it is shutting down, and closes everything.
func (e *Engine) Shutdown(ctx context.Context) error {
	if !e.draining.CompareAndSwap(false, true) {
		return errors.New("engine: already shut down")
	}
	if e.cfg.ShutdownTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.ShutdownTimeout)
		defer cancel()
	}
	e.history.Close()
	e.stopShards()
	e.waitFlushed(ctx)
	var err error
	if e.lis != nil {
		e.lis.stop()
		e.sayGoodbye(ctx)
		err = e.lis.stopLoops()
	}
	// After the loops, whose connections' close ran what was parked.
	e.diskWork.close(e.diskStarted)
	if e.diskStarted {
		e.mem.stop()
	}
	e.fetches.stop() // the connections are closed: their fetches have ended
	e.stopHTTP(ctx)
	e.groups.Close()
	if cerr := e.topics.closeAll(); cerr != nil {
		e.log.Error("closing logs", "err", cerr)
		err = errors.Join(err, cerr)
	}
	e.cache.Close()
	if e.reclaim != nil {
		e.reclaim.Close()
	}
	// The plugins get their own grace period: the steps above may have used
	// up ctx, and the audit log's last lines (the closes) matter.
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), pluginGrace)
	defer pcancel()
	if perr := e.plugins.stop(pctx); perr != nil {
		e.log.Error("stopping plugins", "err", perr)
		err = errors.Join(err, perr)
	}
	e.log.Info("ratatoskr stopped")
	return err
}

// Fatal delivers an error when the broker can no longer serve (its
// native listener failed for good). Whoever runs the broker should then
// shut it down and exit non-zero, so that a supervisor restarts it.
func (e *Engine) Fatal() <-chan error { return e.fatal }

// sayGoodbye tells every client that the broker is going away and waits
// (up to ctx) until each loop has written it.
func (e *Engine) sayGoodbye(ctx context.Context) {
	var wg sync.WaitGroup
	e.sessions.Range(func(k, _ any) bool {
		wg.Add(1)
		if !k.(*session).t.goodbye(wg.Done) {
			wg.Done()
		}
		return true
	})
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (e *Engine) stopShards() {
	for _, s := range e.shards {
		s.Stop()
	}
}

// waitFlushed polls until no session has frames queued or unsent.
func (e *Engine) waitFlushed(ctx context.Context) {
	for {
		pending := false
		e.sessions.Range(func(k, _ any) bool {
			s := k.(*session)
			pending = s.out.Queued() > 0 || s.t.unsentBytes() > 0
			return !pending
		})
		if !pending {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// origin says who asked for a change, for its telemetry event: the actor
// ("client", "admin-token", "broker") and the peer's address.
type origin struct{ actor, remote string }

// byBroker is the origin of changes the broker makes on its own.
var byBroker = origin{actor: "broker"}

// createTopicBy is createTopic on behalf of by. A topic actually created
// emits EventTopicCreated; so does a failed explicit create (existOK
// false), with its error.
func (e *Engine) createTopicBy(by origin, name string, partitions uint32, kvs []wire.KV, existOK bool) (*Topic, error) {
	tc, err := e.topics.parseTopicConfig(partitions, kvs)
	var t *Topic
	created := false
	if err == nil {
		t, created, err = e.topics.create(name, tc, existOK)
	}
	if created || err != nil && !existOK {
		e.emitTopic(EventTopicCreated, by, name, "create", err)
	}
	return t, err
}

// updateTopicBy is updateTopic on behalf of by; it emits EventTopicUpdated.
func (e *Engine) updateTopicBy(by origin, name string, kvs []wire.KV) (*Topic, error) {
	t, err := e.topics.update(name, kvs)
	e.emitTopic(EventTopicUpdated, by, name, "update", err)
	return t, err
}

// deleteTopicBy is deleteTopic on behalf of by; it emits EventTopicDeleted.
func (e *Engine) deleteTopicBy(by origin, name string) error {
	t := e.topics.get([]byte(name))
	err := e.topics.remove(name)
	e.emitTopic(EventTopicDeleted, by, name, "delete", err)
	if err != nil {
		return err
	}
	e.groups.TopicRemoved(groupTopic{t})
	return nil
}

func (e *Engine) emitTopic(kind EventKind, by origin, name, action string, err error) {
	if !e.observed() {
		return
	}
	e.emit(Event{Kind: kind, Topic: name, Partition: -1, Actor: by.actor, Remote: by.remote,
		Action: action, Target: "topic/" + name, Err: err})
}

func (e *Engine) countError(c wire.Code) {
	if int(c) < len(e.errorsByCode) {
		e.errorsByCode[c].Add(1)
	}
}

// Stats is a snapshot of the broker's counters.
type Stats struct {
	Connections   int64
	Accepted      uint64
	SlowConsumers uint64
	// DirectWrites counts outbox flushes written straight to the socket by
	// the thread that produced them (a shard inline on another event
	// loop), and DirectShort those of them the socket did not take whole.
	DirectWrites uint64
	DirectShort  uint64
	Topics       int
	Batches      uint64
	Messages     uint64
	Errors       map[string]uint64
}

// Stats returns the broker's counters.
func (e *Engine) Stats() Stats {
	st := Stats{Connections: e.connections.Load(), Accepted: e.accepted.Load(),
		SlowConsumers: e.slowConsumers.Load(), DirectWrites: e.directWrites.Load(), DirectShort: e.directShort.Load(),
		Topics: e.topics.count(), Errors: map[string]uint64{}}
	for _, s := range e.shards {
		b, m := s.Stats()
		st.Batches += b
		st.Messages += m
	}
	for c := range e.errorsByCode {
		if n := e.errorsByCode[c].Load(); n > 0 {
			st.Errors[wire.Code(c).String()] = n
		}
	}
	return st
}

// handler adapts gnet's callbacks to sessions.
type handler struct {
	gnet.BuiltinEventEngine
	e *Engine
}

func (h *handler) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	e := h.e
	acc, _ := c.Context().(*accepted)
	if acc != nil {
		acc.opened = true
	}
	if e.draining.Load() {
		if acc != nil {
			e.lis.pending.give(acc.addr)
		}
		if e.observed() {
			e.emit(Event{Kind: EventConnRefused, Partition: -1, Actor: "client", Remote: c.RemoteAddr().String(),
				Action: "connect", Err: errShuttingDown})
		}
		body := wire.AppendError(nil, wire.CodeShuttingDown, "the broker is shutting down")
		return append(wire.AppendHeader(nil, wire.TypeError, 0, 0, len(body)), body...), gnet.Close
	}
	t := &gnetTransport{c: c, el: c.EventLoop(), fd: c.Fd(), remote: c.RemoteAddr().String()}
	if acc != nil {
		t.hsAddr, acc.t = acc.addr, t
	}
	t.s = newSession(e, t)
	c.SetContext(t)
	e.sessions.Store(t.s, struct{}{})
	e.connections.Add(1)
	if acc != nil {
		acc.release() // counted as a connection now, no longer as enrolling
	}
	e.accepted.Add(1)
	e.emit(Event{Kind: EventConnAccepted, Partition: -1, Actor: "client", Remote: t.remote, Action: "connect"})
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
	t.handshakeDone()
	t.s.onClose()
	t.closed = true
	h.e.sessions.Delete(t.s)
	h.e.connections.Add(-1)
	if err != nil {
		h.e.log.Debug("connection closed", "remote", t.remote, "err", err)
	}
	h.e.emit(Event{Kind: EventConnClosed, Partition: -1, Actor: "client", Remote: t.remote, Action: "disconnect", Err: err})
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
	// hsAddr is the source address counted against MaxHandshakesPerAddr
	// until the handshake ends (handshakeDone); on the loop.
	hsAddr string
	// handshook is set when the handshake ended (Hello or close), so the
	// handshake timeout skips the connection without visiting its loop.
	handshook atomic.Bool
	hsEntry   atomic.Pointer[hsEntry] // its place in the handshake deadlines, cleared when it ends
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
		t.s.e.log.Debug("direct write failed", "remote", t.remote, "err", t.werr)
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
	if !t.wmu.TryLock() {
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
	t.s.e.directWrites.Add(1)
	if len(t.carry) > 0 || t.werr != nil {
		t.s.e.directShort.Add(1)
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
		// The engine is stopping; gnet closes the connection itself.
		t.s.e.log.Debug("flush not scheduled", "remote", t.remote, "err", err)
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
			sendErrTo(t.s.out, 0, errShuttingDown)
			t.flush()
		}
		done()
		return nil
	})) == nil
}

// handshaken implements transport.
func (t *gnetTransport) handshaken() { t.handshakeDone() }

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

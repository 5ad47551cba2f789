// Package server is the broker's network side: the native listener (its
// own accept loop feeding gnet's event loops), the TLS listener (tls.go,
// crypto/tls with goroutines per connection, certificates reloaded from
// their files: certs.go), the admission and handshake limits both share
// (admission.go), the gnet transport, the sessions that speak the protocol over
// a connection (request dispatch, the publish path, subscriptions, group
// requests, pull fetches and replays), the resumable frame decoder, and
// the per-connection and broker-wide bounds on what connections make the
// broker hold (inbound memory, outbound bytes, fetches, auto-creation).
//
// It reaches the rest of the broker through Broker (topic changes, the
// plugins' events) and a few handles given in Config: the topic table the
// publish path reads (topic.Table), the group coordinator (group/coord)
// and the shards' count. A session sees its connection only through the
// transport interface, so a second listener (TLS, WebSocket) can drive
// the same sessions.
//
// Threads: each connection's session runs on its event loop (on the TLS
// listener: under its connection's mutex, tls.go); reads run
// on the reader pool (fetch.go) and the replay pool (replays.go); work
// that touches the disk runs on the disk worker (offloop.go); the memory
// guard (inflight.go) and the handshake deadlines (listener.go) have a
// goroutine each.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Broker is what the network side asks of the rest of the broker: the
// changes to topics that write the disk (run off the event loops), and the
// plugins' events. Every method is safe from any goroutine.
type Broker interface {
	// CreateTopic creates a topic on behalf of by; with existOK an
	// existing topic of that name is returned instead (auto-creation).
	CreateTopic(by Origin, name string, partitions uint32, kvs []wire.KV, existOK bool) (*topic.Topic, error)
	// UpdateTopic changes a topic's runtime config.
	UpdateTopic(by Origin, name string, kvs []wire.KV) (*topic.Topic, error)
	// DeleteTopic deletes a topic and waits until its partitions are gone.
	DeleteTopic(by Origin, name string) error
	// Observed reports whether any plugin takes events: when not, events
	// are not even built.
	Observed() bool
	// Emit hands an event to the plugins.
	Emit(ev telemetry.Event)
}

// Origin says who asked for a change, for its telemetry event: the actor
// ("client", "admin-token", "broker") and the peer's address.
type Origin struct {
	Actor, Remote string
	// Principal and Tenant are the authenticated user and its tenant, when
	// the broker authenticates clients.
	Principal, Tenant string
}

// Group is how the coordinator names who asked for a change.
func (by Origin) Group() coord.Origin { return coord.Origin{Actor: by.Actor, Remote: by.Remote} }

// Config is what the server serves with: the handles it shares with the
// rest of the broker, and the limits of the network side (engine.Config
// documents each of them).
type Config struct {
	Broker Broker
	// Topics is the broker's topic table: the publish path looks a topic
	// up there with one atomic load, no interface call.
	Topics *topic.Table
	// Groups is the group coordinator the sessions' group requests go to.
	Groups *coord.Coordinator
	// Shards is the number of shards, which sizes each outbox.
	Shards int
	Logger *slog.Logger

	// Addr is the plaintext native listener; "" for none.
	Addr string
	// TLSAddr is the TLS native listener, with Certs; "" for none.
	TLSAddr              string
	Certs                *Certs
	EventLoops           int
	MaxConnections       int
	MaxHandshakesPerAddr int
	HandshakeTimeout     time.Duration
	MaxMessageBytes      int
	MaxFrameBytes        int
	// BrokerOnly names the topics only the broker writes (a cluster's
	// offsets topic): a client's publish to one is refused.
	BrokerOnly          string
	MaxPendingBytes     int
	MaxInflightBytes    int64
	SlowConsumerTimeout time.Duration
	MaxOutboundBytes    int64
	MaxFetchesPerConn   int
	MaxFetchWait        time.Duration
	AutoCreateTopics    bool
	AutoCreateRate      float64

	// Auth authenticates clients and answers what they may do; nil turns
	// authentication off: every connection is anonymous and may do
	// anything.
	Auth *auth.Authenticator
	// AuthFailures rate-limits failed authentications per source address;
	// required with Auth.
	AuthFailures *auth.FailLimiter
}

// Server is the network side of a broker.
type Server struct {
	cfg    Config
	b      Broker
	log    *slog.Logger
	topics *topic.Table
	groups *coord.Coordinator

	lis     *listener // the native listener and its event loops (listener.go); nil without Addr
	addr    net.Addr
	tls     *tlsListener // the TLS listener (tls.go); nil without TLSAddr
	tlsAddr net.Addr
	adm     admission // shared by both listeners (admission.go)
	// Accept errors of both listeners (listener.go: outOfFDs), and TLS
	// clients that came to the plaintext port (tlsOnPlaintext).
	acceptErrors atomic.Uint64
	lastWarn     atomic.Int64
	tlsOnPlain   atomic.Uint64
	tlsPlainWarn atomic.Int64 // when tlsOnPlaintext last logged (Unix ns)
	fatal        chan error   // the listener cannot go on serving (Fatal)
	draining     atomic.Bool
	sessions     sync.Map // *session -> struct{}
	// listenerErr says why the native listener stopped serving while the
	// broker was not shutting down; nil while it serves.
	listenerErr atomic.Pointer[string]

	fetches fetcher     // the reader pool of pull fetches (fetch.go)
	replays *replayPool // the workers of replays (replays.go)

	// diskWork runs topic creations, deletions and config changes off
	// the event loops (offloop.go); autoCreates limits auto-creation.
	diskWork    *diskWorker
	diskStarted bool
	started     bool // Start succeeded: Stop has something to stop
	autoCreates *tokenBucket
	mem         *memGuard // the inbound memory bound (inflight.go)

	connections   atomic.Int64
	accepted      atomic.Uint64
	slowConsumers atomic.Uint64
	resumed       atomic.Uint64 // detached subscriptions resumed with a replay
	outbound      outbound      // the broker-wide outbound bound and cuts by reason (outbound.go)
	directWrites  atomic.Uint64 // deliveries written by another loop's thread (FlushDirect)
	directShort   atomic.Uint64 // direct writes the socket did not take whole
	errorsByCode  [40]atomic.Uint64

	// Authentication (auth.go): outcomes, and the users whose connections
	// were closed, so a login racing with a revocation does not outlive it.
	authSuccesses atomic.Uint64
	authFailures  atomic.Uint64
	authDenials   atomic.Uint64
	revokedMu     sync.Mutex
	revokedAt     map[string]uint64 // guarded by revokedMu
	revokeSeq     atomic.Uint64
	tenants       sync.Map // tenant name -> *tenantState (quota.go)

	// runID tells clients (HelloOK, version 3) which run of the broker
	// they speak to: a reconnecting client that sees another one knows
	// that memory topics started again at offset 0.
	runID uint64
}

// New returns a server that is not listening yet.
func New(cfg Config) *Server {
	srv := &Server{cfg: cfg, b: cfg.Broker, log: cfg.Logger, topics: cfg.Topics, groups: cfg.Groups,
		fatal: make(chan error, 1), revokedAt: map[string]uint64{}, diskWork: newDiskWorker(), autoCreates: newTokenBucket(cfg.AutoCreateRate),
		outbound: newOutbound(&cfg), replays: newReplayPool(replayWorkers()), runID: rand.Uint64()}
	srv.mem = newMemGuard(srv, cfg.MaxInflightBytes)
	return srv
}

// Start starts the disk worker, the memory guard and the native
// listener; it returns once the listener accepts connections. When it
// fails, what it started is stopped.
func (srv *Server) Start() error {
	srv.diskWork.start()
	srv.diskStarted = true
	srv.mem.start()
	srv.adm.init(srv)
	if err := srv.startListeners(); err != nil {
		srv.adm.stop()
		srv.diskWork.close(true)
		srv.mem.stop()
		return err
	}
	srv.started = true
	return nil
}

// startListeners binds the plaintext listener and the TLS one, those
// configured, then starts their accept loops (which read both); when the
// second fails to bind, the first is closed.
func (srv *Server) startListeners() error {
	if err := srv.startListener(); err != nil {
		return err
	}
	if srv.cfg.TLSAddr != "" {
		if err := srv.startTLSListener(); err != nil {
			if srv.lis.ln != nil {
				_ = srv.lis.ln.Close()
			}
			_ = srv.lis.stopLoops()
			srv.lis, srv.addr = nil, nil
			return fmt.Errorf("TLS listener %s: %w", srv.cfg.TLSAddr, err)
		}
	}
	if srv.lis.ln != nil {
		go srv.lis.run(srv.lis.admit)
	}
	if srv.tls != nil {
		go srv.tls.run(srv.tls.admit)
	}
	return nil
}

// preConnections counts the connections admitted but not yet counted in
// connections: being registered with a gnet loop, or in their TLS
// handshake.
func (srv *Server) preConnections() int64 {
	var n int64
	if srv.lis != nil {
		n += srv.lis.enrolling.Load()
	}
	if srv.tls != nil {
		n += srv.tls.handshaking.Load()
	}
	return n
}

// Drain makes the server refuse new connections, publishes and joins
// (with SHUTTING_DOWN); the first step of a shutdown.
func (srv *Server) Drain() bool { return srv.draining.CompareAndSwap(false, true) }

// Draining reports whether Drain was called.
func (srv *Server) Draining() bool { return srv.draining.Load() }

// Stop closes the listener, tells every client that the broker is going
// away and waits (up to ctx) until each loop has written it, then stops
// the event loops, closing every connection.
func (srv *Server) Stop(ctx context.Context) error {
	if !srv.started { // never started, or Start failed and stopped what it had started
		return nil
	}
	if srv.lis != nil {
		srv.lis.stop()
	}
	if srv.tls != nil {
		srv.tls.close()
	}
	srv.sayGoodbye(ctx)
	var err error
	if srv.lis != nil {
		err = srv.lis.stopLoops()
	}
	if srv.tls != nil {
		srv.tls.closeAll()
	}
	srv.adm.stop()
	return err
}

// Close stops what outlives the connections: the disk worker (running
// what is queued), the memory guard and the readers. After Stop, whose
// connections' close ran what was parked.
func (srv *Server) Close() {
	srv.diskWork.close(srv.diskStarted)
	if srv.diskStarted {
		srv.mem.stop()
	}
	srv.fetches.stop() // the connections are closed: their fetches have ended
}

// Addr is the native protocol address the server listens on; nil before
// Start, or without a plaintext listener.
func (srv *Server) Addr() net.Addr { return srv.addr }

// TLSAddr is the native protocol's TLS address; nil before Start, or
// without a TLS listener.
func (srv *Server) TLSAddr() net.Addr { return srv.tlsAddr }

// Fatal delivers an error when the native listener failed for good.
func (srv *Server) Fatal() <-chan error { return srv.fatal }

// emit hands an event to the plugins.
func (srv *Server) emit(ev telemetry.Event) { srv.b.Emit(ev) }

// observed reports whether any plugin takes events.
func (srv *Server) observed() bool { return srv.b.Observed() }

// ErrShuttingDown is the answer to what the broker refuses while it
// shuts down.
var ErrShuttingDown = wire.Errorf(wire.CodeShuttingDown, "the broker is shutting down")

// errSessionClosed is what a continuation gets when its connection closed
// while the work ran; nothing is sent.
var errSessionClosed = errors.New("engine: connection closed")

// FrameOverhead is room for a frame header, a topic name and a batch
// header around a message of the maximum size.
const FrameOverhead = wire.HeaderSize + 2 + wire.MaxTopicNameLen + 4 + wire.BatchHeaderSize + 64

func invalid(msg string) error { return wire.Errorf(wire.CodeInvalidArgument, msg) }

// sayGoodbye tells every client that the broker is going away and waits
// (up to ctx) until each loop has written it.
func (srv *Server) sayGoodbye(ctx context.Context) {
	var wg sync.WaitGroup
	srv.sessions.Range(func(k, _ any) bool {
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

// WaitFlushed polls until no session has frames queued or unsent.
func (srv *Server) WaitFlushed(ctx context.Context) {
	for {
		pending := false
		srv.sessions.Range(func(k, _ any) bool {
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

// ListenerProblem says why the native listener is not serving, or "".
func (srv *Server) ListenerProblem() string {
	if why := srv.listenerErr.Load(); why != nil {
		return *why
	}
	return ""
}

func (srv *Server) countError(c wire.Code) {
	if int(c) < len(srv.errorsByCode) {
		srv.errorsByCode[c].Add(1)
	}
}

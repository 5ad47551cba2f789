// Package gateway is the protocol-neutral session API that the broker's
// other front ends (gRPC, HTTP, WebSocket) drive.
//
// A gateway session is a session of the native protocol on an in-process
// connection (server.ConnectLocal), driven by the Go client: publish
// (batches, keys, headers, a partition), subscribe and unsubscribe from a
// start position, fetch, acks, topic and group admin are the client's
// calls, and the broker applies authentication, ACLs, tenant quotas, flow
// control and its metrics to them in the session, where it applies them
// to the native protocol. A front end holds nothing but a Session, so it
// cannot go around them. The native protocol keeps its own path; nothing
// here is on it.
//
// Credentials are the front end's client's, passed through: a bearer
// token (TOKEN), a user and password (SCRAM-SHA-256, run in process), or
// a client certificate the front end verified (EXTERNAL). A Session for
// requests (Acquire) is shared by every request with the same
// credentials and front end, and closed after it is idle for
// Config.IdleTimeout; one for a stream (Dedicated) is the stream's own, so
// a client that stops reading is a slow consumer of its own session,
// bounded and cut like any other, and nobody else's.
package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/server"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Connector opens in-process connections to the broker
// (server.Server.ConnectLocal).
type Connector interface {
	ConnectLocal(peer server.LocalPeer) (net.Conn, error)
}

// Config configures a Gateway.
type Config struct {
	Broker Connector
	// IdleTimeout closes a shared session unused this long. Default 1 min.
	IdleTimeout time.Duration
	// MaxSessions bounds the shared sessions held at once; past it the
	// least recently used idle one is closed, and with none idle a new
	// one is refused (LIMIT_EXCEEDED). Default 1024.
	MaxSessions int
	// StreamPendingBytes bounds what a stream's session holds delivered
	// and not yet written to its client, past the broker's own bound
	// (client.WithSubscriptionPendingBytes). Default 8 MiB.
	StreamPendingBytes int
	Logger             *slog.Logger
}

// Credentials are what a front end's client presented.
type Credentials struct {
	Token          string
	User, Password string
	// Cert is a client certificate the front end verified (mutual TLS).
	Cert *x509.Certificate
	// Remote is the client's address, host:port.
	Remote string
}

// key is what shared sessions are found by: a digest of the credentials,
// so the table holds no secret.
func (c *Credentials) key(via string) [32]byte {
	h := sha256.New()
	for _, s := range []string{via, c.Token, c.User, c.Password} {
		_, _ = fmt.Fprintf(h, "%d:%s|", len(s), s)
	}
	if c.Cert != nil {
		_, _ = h.Write(c.Cert.Raw)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// Gateway hands front ends their sessions.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics

	mu     sync.Mutex
	shared map[[32]byte]*entry
	closed bool
	quit   chan struct{}
	done   chan struct{}
}

// entry is a shared session, or one being opened (ready not closed yet).
type entry struct {
	ready   chan struct{}
	s       *Session
	err     error
	refs    int
	lastUse time.Time
}

// New makes a gateway; Close ends its sessions.
func New(cfg Config) *Gateway {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Minute
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1024
	}
	if cfg.StreamPendingBytes <= 0 {
		cfg.StreamPendingBytes = 8 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, metrics: newMetrics(), shared: map[[32]byte]*entry{},
		quit: make(chan struct{}), done: make(chan struct{})}
	go g.janitor()
	return g
}

// Metrics are the gateways' counters, by front end.
func (g *Gateway) Metrics() *Metrics { return g.metrics }

// ErrClosed is returned once the gateway is closed.
var ErrClosed = wire.Errorf(wire.CodeShuttingDown, "the broker is shutting down")

// Session is a front end's session with the broker: the Go client's
// calls on an in-process native session (see the package comment).
type Session struct {
	*client.Client
	via    string
	shared bool
}

// Via is the front end the session serves.
func (s *Session) Via() string { return s.via }

// Acquire returns the shared session for cred on front end via, opening
// it (and authenticating) when there is none; release gives it back.
// A failed authentication is not kept: the next request tries again, and
// counts against the address's failure budget in the broker.
func (g *Gateway) Acquire(ctx context.Context, via string, cred Credentials) (s *Session, release func(), err error) {
	k := cred.key(via)
	for {
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			return nil, nil, ErrClosed
		}
		e := g.shared[k]
		if e == nil {
			if err := g.makeRoom(); err != nil {
				g.mu.Unlock()
				return nil, nil, err
			}
			e = &entry{ready: make(chan struct{}), refs: 1}
			g.shared[k] = e
			g.mu.Unlock()
			e.s, e.err = g.open(ctx, via, cred, true)
			g.mu.Lock()
			if e.err != nil {
				delete(g.shared, k)
			}
			close(e.ready)
			g.mu.Unlock()
			if e.err != nil {
				return nil, nil, e.err
			}
			return e.s, g.releaser(e), nil
		}
		e.refs++
		g.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			g.unref(e)
			return nil, nil, ctx.Err()
		}
		if e.err != nil || e.s.Err() != nil {
			// Its opening failed (another request's credentials, the same
			// as these: try afresh) or the session ended (the broker cut
			// it, the credential was revoked): drop it and open anew.
			g.mu.Lock()
			e.refs--
			if g.shared[k] == e {
				delete(g.shared, k)
			}
			g.mu.Unlock()
			if e.s != nil {
				_ = e.s.Close() // it ended already; Close only releases it
			}
			if e.err != nil && (!ownFailure(e.err) || ctx.Err() != nil) {
				return nil, nil, e.err
			}
			continue // the opener's own deadline or cancellation: try on this request's
		}
		return e.s, g.releaser(e), nil
	}
}

// ownFailure reports whether an open failed for the request that opened
// (its context ended), not for the credentials or the broker: a request
// that waited on it then opens on its own.
func ownFailure(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (g *Gateway) releaser(e *entry) func() {
	var once sync.Once
	return func() { once.Do(func() { g.unref(e) }) }
}

func (g *Gateway) unref(e *entry) {
	g.mu.Lock()
	e.refs--
	e.lastUse = time.Now()
	g.mu.Unlock()
}

// makeRoom closes the least recently used idle shared session when the
// table is full; with none idle it refuses. Under mu.
func (g *Gateway) makeRoom() error {
	if len(g.shared) < g.cfg.MaxSessions {
		return nil
	}
	var oldestKey [32]byte
	var oldest *entry
	for k, e := range g.shared {
		if e.refs == 0 && e.s != nil && (oldest == nil || e.lastUse.Before(oldest.lastUse)) {
			oldestKey, oldest = k, e
		}
	}
	if oldest == nil {
		return wire.Errorf(wire.CodeLimitExceeded, fmt.Sprintf("the gateway holds %d sessions, all in use; retry later", len(g.shared)))
	}
	delete(g.shared, oldestKey)
	go func() { _ = oldest.s.Close() }()
	return nil
}

// Dedicated opens a session of its own for one stream (a subscription, a
// WebSocket); the caller closes it.
func (g *Gateway) Dedicated(ctx context.Context, via string, cred Credentials) (*Session, error) {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return g.open(ctx, via, cred, false)
}

// open connects and authenticates a session.
func (g *Gateway) open(ctx context.Context, via string, cred Credentials, shared bool) (*Session, error) {
	peer := server.LocalPeer{Remote: cred.Remote, Cert: cred.Cert, Via: via}
	opts := []client.Option{
		client.WithName("gateway-" + via),
		client.WithDialer(func(context.Context, string) (net.Conn, error) { return g.cfg.Broker.ConnectLocal(peer) }),
		client.WithoutReconnect(),
		client.WithSubscriptionPendingBytes(g.cfg.StreamPendingBytes),
		client.WithLogger(g.log),
		client.WithErrorHandler(func(err error) { g.log.Debug("gateway session", "via", via, "remote", cred.Remote, "err", err) }),
	}
	switch {
	case cred.Token != "":
		opts = append(opts, client.WithToken(cred.Token))
	case cred.User != "" || cred.Password != "":
		opts = append(opts, client.WithCredentials(cred.User, cred.Password))
	case cred.Cert != nil:
		opts = append(opts, client.WithCertificateIdentity())
	}
	c, err := client.Dial(ctx, "in-process", opts...)
	if err != nil {
		g.metrics.sessionFailed(via)
		return nil, unwrapDial(err)
	}
	g.metrics.sessionOpened(via)
	return &Session{Client: c, via: via, shared: shared}, nil
}

// unwrapDial returns the broker's refusal inside a failed Dial, so front
// ends map it by its code; other failures stay as they are.
func unwrapDial(err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// janitor closes shared sessions idle past IdleTimeout, and drops ended
// ones.
func (g *Gateway) janitor() {
	defer close(g.done)
	tick := time.NewTicker(max(g.cfg.IdleTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-g.quit:
			return
		case now := <-tick.C:
			g.sweep(now)
		}
	}
}

func (g *Gateway) sweep(now time.Time) {
	var idle []*Session
	g.mu.Lock()
	for k, e := range g.shared {
		if e.s == nil || e.refs > 0 {
			continue
		}
		if now.Sub(e.lastUse) >= g.cfg.IdleTimeout || e.s.Err() != nil {
			delete(g.shared, k)
			idle = append(idle, e.s)
		}
	}
	g.mu.Unlock()
	for _, s := range idle {
		_ = s.Close()
	}
}

// Done is closed when the gateway closes: a stream (a subscription, an
// event stream, a WebSocket) ends then.
func (g *Gateway) Done() <-chan struct{} { return g.quit }

// Waiters is how many requests wait for a shared session another request
// is opening (for tests).
func (g *Gateway) Waiters() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, e := range g.shared {
		select {
		case <-e.ready:
		default:
			n += e.refs - 1
		}
	}
	return n
}

// Sessions is how many shared sessions the gateway holds.
func (g *Gateway) Sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.shared)
}

// Close closes every shared session and stops the janitor. Dedicated
// sessions are their streams' to close.
func (g *Gateway) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	var all []*Session
	for k, e := range g.shared {
		if e.s != nil {
			all = append(all, e.s)
		}
		delete(g.shared, k)
	}
	g.mu.Unlock()
	close(g.quit)
	<-g.done
	for _, s := range all {
		_ = s.Close()
	}
}

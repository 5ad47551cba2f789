// Package httpapi is the broker's HTTP side: the probes (/healthz,
// /readyz), /metrics, the health report, the metrics history, the admin
// API under /api/v1/ (docs/ADMIN.md), the admin token that guards them,
// and the dashboard's static files (web/).
//
// It reaches the broker only through Broker, which engine implements:
// engine imports httpapi, never the other way (docs/DESIGN.md, "Package
// map"). Handlers run on net/http's goroutines; they read views the
// Broker builds and change state through it.
package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/auth"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// Config is what the HTTP side needs besides the broker; engine fills it
// from its own Config.
type Config struct {
	// Addr is the listen address; "" serves nothing (Start does not listen).
	Addr string
	// AdminToken is the bearer token; "" uses DataDir/admin.token, which
	// Start generates when it is missing.
	AdminToken string
	FS         vfs.FS
	DataDir    string
	// Pprof serves Go's profiler under /debug/pprof/, behind the token.
	Pprof bool
	// MaxPartitions bounds the partitions of a topic created here.
	MaxPartitions int
	// History is the metrics history the health report and
	// /api/v1/metrics/history read; nil serves an empty one.
	History *History
	Logger  *slog.Logger
	// Auth checks the credentials of requests besides the admin token:
	// HTTP Basic (a user's password) and bearer JWTs. nil: the admin
	// token only.
	Auth *auth.Authenticator
	// AuthFailures rate-limits failed credentials per source address,
	// shared with the native protocol; nil: no limit.
	AuthFailures *auth.FailLimiter
	// TLS, when set, serves HTTPS with it instead of HTTP.
	TLS *tls.Config
	// Gateway serves /v1/, the HTTP and WebSocket gateways (package
	// gateway): it authenticates its requests itself, with the clients'
	// credentials, not the admin token. nil: no /v1/.
	Gateway http.Handler
}

// Server is the HTTP side of one broker.
type Server struct {
	cfg Config
	b   Broker

	authEvents eventLimiter     // refused admin-token checks (token.go)
	now        func() time.Time // the clock of auth events; tests fix it

	mu      sync.Mutex
	token   string // resolved by Start
	handler http.Handler
	ln      net.Listener
	srv     *http.Server
}

// New returns the HTTP side of b; it serves nothing until Start.
func New(cfg Config, b Broker) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.History == nil {
		cfg.History = NewHistory(time.Hour, time.Hour, nil)
	}
	return &Server{cfg: cfg, b: b, now: time.Now}
}

// Start resolves the admin token and serves the HTTP endpoints: /healthz
// answers 200 while the process is alive and serving; /readyz says
// whether it is ready for traffic (health.go). Everything else but the
// dashboard's static files needs the admin token: /metrics,
// /api/v1/health (health.go), /api/v1/metrics/history (history.go) and
// the admin API (admin.go). Without an address it does nothing.
func (s *Server) Start() error {
	if s.cfg.Addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("engine: http listen %s: %w", s.cfg.Addr, err)
	}
	tok, tokenFrom, err := s.adminToken()
	if err != nil {
		_ = ln.Close()
		return err
	}
	scheme := "http"
	if s.cfg.TLS != nil {
		ln, scheme = tls.NewListener(ln, s.cfg.TLS), "https"
	}
	h := s.routes(tok)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.token, s.handler, s.ln, s.srv = tok, h, ln, srv
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("http server stopped", "err", err)
		}
	}()
	// A log line travels to log stores and terminals others read; the token
	// does not. `ratatoskr dashboard-url` prints the address with it.
	s.cfg.Logger.Info("dashboard", "url", DashboardURLScheme(scheme, ln.Addr().String(), ""), "token_from", tokenFrom,
		"with_token", "ratatoskr dashboard-url")
	return nil
}

// routes builds the handler of every endpoint, with token as the admin token.
func (s *Server) routes(token string) http.Handler {
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.Handler { return s.requireAuth(token, adminOnly, h) }
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", auth(s.metrics))
	mux.Handle("GET /api/v1/health", auth(s.apiHealth))
	mux.Handle("GET /api/v1/metrics/history", auth(s.apiHistory))
	s.registerAdmin(mux, auth)
	s.registerSecurity(mux, func(h http.HandlerFunc) http.Handler { return s.requireAuth(token, tenantAdmins, h) })
	registerDashboard(mux)
	if s.cfg.Gateway != nil {
		mux.Handle("/v1/", s.cfg.Gateway)
	}
	if s.cfg.Pprof {
		mux.Handle("/debug/pprof/", auth(pprof.Index))
		mux.Handle("/debug/pprof/profile", auth(pprof.Profile))
		mux.Handle("/debug/pprof/trace", auth(pprof.Trace))
		mux.Handle("/debug/pprof/symbol", auth(pprof.Symbol))
	}
	return mux
}

// Shutdown stops serving, waiting for requests in flight up to ctx; safe
// when Start never listened.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Shutdown(ctx)
	}
}

// Addr is the address served, or "" when nothing is.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Token is the admin token Start resolved, or "" before.
func (s *Server) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// Handler is what Start serves, for calls without the listener (tests
// after Shutdown); nil before Start.
func (s *Server) Handler() http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handler
}

// DashboardURL is the dashboard's address on an HTTP listener at addr
// (host:port), with the admin token in the fragment when token is not
// empty: the dashboard reads it from there, and a browser never sends a
// fragment to the server.
func DashboardURL(addr, token string) string { return DashboardURLScheme("http", addr, token) }

// DashboardURLScheme is DashboardURL with the scheme, http or https.
func DashboardURLScheme(scheme, addr, token string) string {
	if token == "" {
		return scheme + "://" + addr + "/"
	}
	return scheme + "://" + addr + "/#token=" + token
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.b.Draining() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// metrics serves GET /metrics in the Prometheus text format.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	var b bytes.Buffer
	s.b.WriteMetrics(&b)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

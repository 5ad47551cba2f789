package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startHTTP serves the HTTP endpoints: /healthz answers 200 while the
// process is alive and serving; /readyz says whether it is ready for
// traffic (health.go). Everything else but the dashboard's static files
// needs the admin token: /metrics (metrics.go), /api/v1/health
// (health.go), /api/v1/metrics/history (history.go) and the admin API
// (admin.go).
func (e *Engine) startHTTP() error {
	if e.cfg.HTTPAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", e.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("engine: http listen %s: %w", e.cfg.HTTPAddr, err)
	}
	var tokenFrom string
	if e.token, tokenFrom, err = e.adminToken(); err != nil {
		_ = ln.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", e.healthz)
	mux.HandleFunc("GET /readyz", e.readyz)
	mux.Handle("GET /metrics", e.requireToken(http.HandlerFunc(e.metricsHandler)))
	mux.Handle("GET /api/v1/health", e.requireToken(http.HandlerFunc(e.apiHealth)))
	mux.Handle("GET /api/v1/metrics/history", e.requireToken(http.HandlerFunc(e.apiHistory)))
	e.registerAdmin(mux)
	registerDashboard(mux)
	if e.cfg.Pprof {
		mux.Handle("/debug/pprof/", e.requireToken(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/profile", e.requireToken(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/trace", e.requireToken(http.HandlerFunc(pprof.Trace)))
		mux.Handle("/debug/pprof/symbol", e.requireToken(http.HandlerFunc(pprof.Symbol)))
	}
	e.httpLn = ln
	e.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := e.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("http server stopped", "err", err)
		}
	}()
	// A log line travels to log stores and terminals others read; the token
	// does not. `ratatoskr dashboard-url` prints the address with it.
	e.log.Info("dashboard", "url", DashboardURL(ln.Addr().String(), ""), "token_from", tokenFrom,
		"with_token", "ratatoskr dashboard-url")
	return nil
}

// DashboardURL is the dashboard's address on an HTTP listener at addr
// (host:port), with the admin token in the fragment when token is not
// empty: the dashboard reads it from there, and a browser never sends a
// fragment to the server.
func DashboardURL(addr, token string) string {
	if token == "" {
		return "http://" + addr + "/"
	}
	return "http://" + addr + "/#token=" + token
}

func (e *Engine) stopHTTP(ctx context.Context) {
	if e.httpSrv != nil {
		_ = e.httpSrv.Shutdown(ctx)
	}
}

func (e *Engine) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if e.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("shutting down\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

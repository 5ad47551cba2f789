// Package httpgw is the broker's HTTP front end: REST calls to publish,
// fetch and manage topics, and Server-Sent Events to follow a topic, all
// under /v1 on the broker's HTTP listener, with the clients' own
// credentials. docs/HTTP.md is the user's guide and docs/openapi.yaml
// the reference; Routes is the table both are checked against.
//
// Every request runs on a gateway session (package gateway): a shared one
// for request/response calls (Gateway.Acquire), a dedicated one for an
// event stream (Gateway.Dedicated), so the broker applies its
// authentication, ACLs, quotas and flow control as for a native client.
// This package only turns HTTP into session calls and back.
package httpgw

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// via names this front end in the gateway's sessions and metrics.
const via = "http"

// Config configures the handler.
type Config struct {
	Gateway *gateway.Gateway
	Logger  *slog.Logger
	// MaxBodyBytes bounds a publish request's body; past it the request
	// fails with 413. Default 64 MiB.
	MaxBodyBytes int64
	// MaxMessageBytes is the broker's bound on one message (key, value
	// and headers); a larger record fails its request with 413. Default
	// wire.DefaultMaxMessageBytes.
	MaxMessageBytes int
	// ChunkRecords is how many records of a streamed (NDJSON) body are
	// read, checked and published together. Default 4096.
	ChunkRecords int
	// Heartbeat is how often an idle event stream gets a comment line,
	// which keeps proxies from closing it. Default 15 s.
	Heartbeat time.Duration
	// StreamWriteTimeout bounds one write to an event stream: a client
	// that reads nothing for this long is cut. Default 30 s.
	StreamWriteTimeout time.Duration
}

// Route is one endpoint: a method and a path pattern of net/http's
// ServeMux, under /v1.
type Route struct {
	Method, Path string
}

// Routes lists the endpoints New serves, and /v1/ws, which the WebSocket
// front end serves beside it (docs/WEBSOCKET.md); docs/openapi.yaml
// describes exactly these.
func Routes() []Route {
	out := make([]Route, 0, len(routeTable)+1)
	for _, r := range routeTable {
		out = append(out, r.Route)
	}
	return append(out, Route{http.MethodGet, "/v1/ws"})
}

type route struct {
	Route
	h func(*handler, http.ResponseWriter, *http.Request)
}

// routeTable is every endpoint this package serves, in one place, so the
// OpenAPI test reads the same table the mux is built from.
var routeTable = []route{
	{Route{http.MethodPost, "/v1/topics/{topic}/messages"}, (*handler).publish},
	{Route{http.MethodGet, "/v1/topics/{topic}/partitions/{partition}/messages"}, (*handler).fetch},
	{Route{http.MethodGet, "/v1/topics/{topic}/stream"}, (*handler).stream},
	{Route{http.MethodGet, "/v1/topics"}, (*handler).listTopics},
	{Route{http.MethodPost, "/v1/topics"}, (*handler).createTopic},
	{Route{http.MethodGet, "/v1/topics/{topic}"}, (*handler).describeTopic},
	{Route{http.MethodDelete, "/v1/topics/{topic}"}, (*handler).deleteTopic},
	{Route{http.MethodPatch, "/v1/topics/{topic}"}, (*handler).updateTopic},
}

type handler struct {
	cfg Config
	g   *gateway.Gateway
	log *slog.Logger
}

// New returns the handler of the /v1 routes (Routes); the broker mounts
// it at /v1/ on its HTTP listener.
func New(cfg Config) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 20
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = wire.DefaultMaxMessageBytes
	}
	if cfg.ChunkRecords <= 0 {
		cfg.ChunkRecords = 4096
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{cfg: cfg, g: cfg.Gateway, log: cfg.Logger}
	mux := http.NewServeMux()
	for _, r := range routeTable {
		f := r.h
		mux.HandleFunc(r.Method+" "+r.Path, func(w http.ResponseWriter, req *http.Request) { f(h, w, req) })
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			h.noRoute(w, r, mux)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// noRoute answers a request no route takes, 404 or 405 as the mux
// decides, with the JSON error body of every other error.
func (h *handler) noRoute(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	rec := &statusOnly{header: http.Header{}}
	mux.ServeHTTP(rec, r)
	status, code := http.StatusNotFound, "not_found"
	msg := "no such endpoint: " + r.URL.Path
	if rec.status == http.StatusMethodNotAllowed {
		status, code = rec.status, "method_not_allowed"
		msg = r.Method + " is not allowed on " + r.URL.Path + "; allowed: " + rec.header.Get("Allow")
		w.Header().Set("Allow", rec.header.Get("Allow"))
	}
	h.g.Metrics().Request(via, badRequest(msg))
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}

// statusOnly is a ResponseWriter that keeps the status and headers only.
type statusOnly struct {
	header http.Header
	status int
}

func (s *statusOnly) Header() http.Header { return s.header }

func (s *statusOnly) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}

func (s *statusOnly) WriteHeader(status int) { s.status = status }

// credentials are what the request presents: a bearer token, HTTP Basic,
// or a client certificate the TLS handshake verified.
func credentials(r *http.Request) gateway.Credentials {
	c := gateway.Credentials{Remote: r.RemoteAddr}
	if tok, ok := bearer(r); ok {
		c.Token = tok
	} else if u, p, ok := r.BasicAuth(); ok {
		c.User, c.Password = u, p
	}
	c.Cert = verifiedCert(r)
	return c
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && (h[:7] == "Bearer " || h[:7] == "bearer ") {
		return h[7:], true
	}
	return "", false
}

// verifiedCert is the client's certificate when the handshake verified
// it against the broker's client CAs; an unverified one counts for
// nothing.
func verifiedCert(r *http.Request) *x509.Certificate {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return r.TLS.VerifiedChains[0][0]
}

// session runs f on the shared session of the request's credentials and
// counts the request.
func (h *handler) session(w http.ResponseWriter, r *http.Request, f func(s *gateway.Session) error) {
	s, release, err := h.g.Acquire(r.Context(), via, credentials(r))
	if err == nil {
		err = f(s)
		release()
	}
	h.g.Metrics().Request(via, err)
	if err != nil {
		h.fail(w, err)
	}
}

// requestError is a fault of the request itself, found by this package
// before the broker saw it.
type requestError struct {
	status int
	code   string
	msg    string
	line   int // the body's line at fault, counted from 1, or 0
}

func (e *requestError) Error() string {
	if e.line > 0 {
		return "line " + strconv.Itoa(e.line) + ": " + e.msg
	}
	return e.msg
}

func badRequest(msg string) error {
	return &requestError{status: http.StatusBadRequest, code: "invalid", msg: msg}
}

func tooLarge(msg string) error {
	return &requestError{status: http.StatusRequestEntityTooLarge, code: "too_large", msg: msg}
}

// errorBody is the body of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Line is the line of an NDJSON body (or the record of a JSON one)
	// at fault, counted from 1.
	Line int `json:"line,omitempty"`
}

// errorOf maps err to its status and body.
func errorOf(err error) (int, errorDetail) {
	var re *requestError
	if errors.As(err, &re) {
		return re.status, errorDetail{Code: re.code, Message: re.Error(), Line: re.line}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, errorDetail{Code: "too_large",
			Message: "the request body is larger than the limit of " + strconv.FormatInt(mbe.Limit, 10) + " bytes"}
	}
	k := gateway.KindOf(err)
	return gateway.HTTPStatus(k), errorDetail{Code: k.String(), Message: err.Error()}
}

// fail writes err's error response.
func (h *handler) fail(w http.ResponseWriter, err error) {
	status, d := errorOf(err)
	if status == http.StatusUnauthorized {
		w.Header().Add("WWW-Authenticate", `Bearer realm="ratatoskr"`)
		w.Header().Add("WWW-Authenticate", `Basic realm="ratatoskr"`)
	}
	if status >= 500 && !errors.Is(err, context.Canceled) {
		h.log.Warn("http gateway request failed", "status", status, "err", err)
	}
	writeJSON(w, status, errorBody{Error: d})
}

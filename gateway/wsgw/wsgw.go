// Package wsgw is the broker's WebSocket front end, served at /v1/ws on
// the broker's HTTP listener (docs/WEBSOCKET.md is the user's guide).
//
// One WebSocket is one dedicated gateway session (gateway.Dedicated): the
// broker authenticates it, applies its ACLs and quotas, and cuts it as a
// slow consumer like any other session. Commands come as JSON text frames
// or as binary frames (package wsproto); each command's reply, and a
// subscription's deliveries, come in the kind of frame the command came
// in. A subscription's handler runs inline on the session's reader
// (client.DispatchInline) and writes one WebSocket message per broker
// batch: a client that stops reading stops its own session only, and is
// cut when a write stays blocked for Config.WriteTimeout.
//
// Credentials: an Authorization header (Bearer or Basic) or a verified
// TLS client certificate open the session at the upgrade, and a refusal
// is an HTTP status; a browser, which cannot set headers, sends an auth
// command first instead, and a refusal closes the socket with
// CloseUnauthenticated.
package wsgw

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/ratatoskr-mq/ratatoskr/gateway"
)

// Path is where the broker's HTTP listener serves the handler.
const Path = "/v1/ws"

// Via names this front end in the gateway's metrics and sessions.
const Via = "ws"

// Subprotocol is the WebSocket subprotocol the handler agrees to when a
// client offers it. Offering it is optional; it changes nothing but lets a
// client make sure it talks to this protocol.
const Subprotocol = "ratatoskr.v1"

// Close codes the handler ends a WebSocket with (besides the standard
// 1000 normal closure and 1009 message too big, which the WebSocket
// library sends for a frame past MaxMessageBytes).
const (
	// CloseGoingAway: the broker is shutting down.
	CloseGoingAway = websocket.StatusGoingAway // 1001
	// CloseSlowConsumer: the client did not take what was written to it
	// for WriteTimeout, or the broker cut its session as a slow consumer.
	CloseSlowConsumer = websocket.StatusPolicyViolation // 1008, reason "slow consumer"
	// CloseInternal: the session ended for a reason of the broker's own.
	CloseInternal = websocket.StatusInternalError // 1011
	// CloseTryAgainLater: the broker could not open a session now (it is
	// starting, or at a limit); retry.
	CloseTryAgainLater = websocket.StatusTryAgainLater // 1013
	// CloseUnauthenticated: missing or refused credentials (no auth command
	// within AuthTimeout where the broker requires one, a refused auth
	// command, or credentials revoked while connected). It mirrors HTTP 401.
	CloseUnauthenticated websocket.StatusCode = 4401
)

// Config configures the handler.
type Config struct {
	Gateway *gateway.Gateway
	Logger  *slog.Logger
	// MaxMessageBytes bounds one incoming WebSocket message (a command, a
	// publish of many records); a larger one closes the socket with 1009.
	// Default 4 MiB.
	MaxMessageBytes int
	// OriginPatterns are the host patterns (path.Match syntax) of other
	// origins whose pages may open a WebSocket; the broker's own origin
	// always may (websocket.AcceptOptions.OriginPatterns).
	OriginPatterns []string
	// AuthTimeout bounds the wait for a client's first command when it
	// presented no credentials at the upgrade. Default 10 s.
	AuthTimeout time.Duration
	// WriteTimeout is how long one write to the client may stay blocked
	// before the client counts as a slow consumer and is cut. Default 5 s,
	// the broker's own slow-consumer timeout.
	WriteTimeout time.Duration
	// MaxPublishBytes bounds the publish commands one socket has queued
	// and in flight; past it the handler stops reading the socket until
	// acks come back. Default 8 MiB.
	MaxPublishBytes int
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 4 << 20
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.MaxPublishBytes <= 0 {
		c.MaxPublishBytes = 8 << 20
	}
}

// Handler serves WebSockets.
type Handler struct {
	cfg     Config
	log     *slog.Logger
	g       *gateway.Gateway
	metrics wsMetrics
}

// New returns the WebSocket handler; mount it at Path.
func New(cfg Config) *Handler {
	cfg.setDefaults()
	return &Handler{cfg: cfg, log: cfg.Logger, g: cfg.Gateway}
}

// ServeHTTP serves one WebSocket, until it closes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this is the broker's WebSocket endpoint: open a WebSocket (docs/WEBSOCKET.md)", http.StatusUpgradeRequired)
		return
	}
	cred, presented := credentials(r)
	var sess *gateway.Session
	if presented {
		// Credentials at the upgrade are checked before it, so that a
		// refusal is an HTTP status a non-browser client reads plainly.
		var err error
		if sess, err = h.g.Dedicated(r.Context(), Via, cred); err != nil {
			h.g.Metrics().Request(Via, err)
			http.Error(w, err.Error(), gateway.HTTPStatus(gateway.KindOf(err)))
			return
		}
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol},
		OriginPatterns: h.cfg.OriginPatterns, CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		// Accept answered the request (a bad handshake or origin).
		h.log.Debug("websocket refused", "remote", r.RemoteAddr, "err", err)
		if sess != nil {
			_ = sess.Close()
		}
		return
	}
	ws.SetReadLimit(int64(h.cfg.MaxMessageBytes))
	c := newConn(h, ws, cred)
	c.serve(sess)
}

// credentials are what the upgrade request presents: an Authorization
// header (Bearer token or Basic user and password) or a verified client
// certificate; presented is false when it has none of them.
func credentials(r *http.Request) (cred gateway.Credentials, presented bool) {
	cred.Remote = r.RemoteAddr
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		cred.Cert = r.TLS.PeerCertificates[0]
		presented = true
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		if tok, ok := cutScheme(auth, "Bearer "); ok {
			cred.Token = tok
			return cred, true
		}
		if u, p, ok := r.BasicAuth(); ok {
			cred.User, cred.Password = u, p
			return cred, true
		}
		// An Authorization header of another scheme is a credential
		// the broker will refuse, not the absence of one.
		cred.Token = auth
		return cred, true
	}
	return cred, presented
}

func cutScheme(s, scheme string) (string, bool) {
	if len(s) > len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
		return strings.TrimSpace(s[len(scheme):]), true
	}
	return "", false
}

// background is the context of writes: a blocked write is ended by the
// write watchdog closing the connection, not by a context (a context
// would cost a timer per write).
var background = context.Background()

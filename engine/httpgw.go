package engine

import (
	"net/http"

	"github.com/ratatoskr-mq/ratatoskr/gateway/httpgw"
)

// gatewayHandler is what the HTTP listener serves at /v1/: the HTTP
// gateway (package httpgw), on the broker's gateway sessions. A broker
// with authentication off serves it only on loopback, unless
// AllowAnonymous says anonymous access is meant: /v1/ publishes and
// reads without the admin token, so anyone who reaches the address
// could (docs/GATEWAYS.md).
func (e *Engine) gatewayHandler() http.Handler {
	if !e.cfg.Auth && !e.cfg.AllowAnonymous && e.cfg.HTTPAddr != "" && !IsLoopback(e.cfg.HTTPAddr) {
		e.log.Warn("the HTTP gateway (/v1/) is off: the HTTP address is not loopback and authentication is off; "+
			"turn authentication on, or allow anonymous access", "http_addr", e.cfg.HTTPAddr)
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", httpgw.New(httpgw.Config{Gateway: e.gw, Logger: e.log, MaxMessageBytes: e.cfg.MaxMessageBytes}))
	e.ws = e.WebSocketHandler()
	mux.Handle("GET /v1/ws", e.ws) // the WebSocket gateway (wsgw.go)
	return mux
}

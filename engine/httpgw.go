package engine

import (
	"net/http"

	"github.com/ratatoskr-mq/ratatoskr/gateway/httpgw"
)

// gatewayHandler is what the HTTP listener serves at /v1/: the HTTP
// gateway (package httpgw), on the broker's gateway sessions.
func (e *Engine) gatewayHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", httpgw.New(httpgw.Config{Gateway: e.gw, Logger: e.log, MaxMessageBytes: e.cfg.MaxMessageBytes}))
	// The WebSocket gateway mounts here: mux.Handle("GET /v1/ws", ...).
	return mux
}

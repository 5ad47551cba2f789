package engine

import (
	"github.com/ratatoskr-mq/ratatoskr/gateway/wsgw"
)

// WebSocketHandler is the WebSocket gateway (package wsgw), served at
// wsgw.Path on the broker's HTTP listener. A WebSocket message holds a
// publish of many records, so it is bounded by MaxFrameBytes, as a
// native publish batch is.
func (e *Engine) WebSocketHandler() *wsgw.Handler {
	return wsgw.New(wsgw.Config{Gateway: e.gw, Logger: e.log, MaxMessageBytes: e.cfg.MaxFrameBytes})
}

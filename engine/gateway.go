package engine

import (
	"net"

	"github.com/ratatoskr-mq/ratatoskr/gateway"
	"github.com/ratatoskr-mq/ratatoskr/server"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The gateways (gRPC, HTTP /v1, WebSocket) reach the broker through
// in-process native sessions (package gateway, server.ConnectLocal).

// newGateway makes the gateways' session source; they serve from Start
// on, and Shutdown closes their sessions before the listeners stop.
func (e *Engine) newGateway() {
	e.gw = gateway.New(gateway.Config{Broker: e, Logger: e.log})
}

// Gateway is the session source of the broker's gateways.
func (e *Engine) Gateway() *gateway.Gateway { return e.gw }

// ConnectLocal opens an in-process native session serving peer
// (server.Server.ConnectLocal): the gateways' Connector. It refuses while
// the broker starts or stops.
func (e *Engine) ConnectLocal(peer server.LocalPeer) (net.Conn, error) {
	if !e.serving.Load() {
		if why := e.notReady.Load(); why != nil {
			return nil, wire.Errorf(wire.CodeShuttingDown, "the broker is not serving yet: "+*why)
		}
		return nil, wire.Errorf(wire.CodeShuttingDown, "the broker is shutting down")
	}
	return e.srv.ConnectLocal(peer)
}

// Connections lists the open client connections, the gateways' in-process
// sessions among them (server.Conn.Via).
func (e *Engine) Connections() []server.Conn { return e.srv.Connections() }

package server

import (
	"io"
	"log/slog"
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// fakeBroker is a broker with no topics to change and no plugins: what
// the server's unit tests need of the rest of the broker.
type fakeBroker struct{}

func (fakeBroker) CreateTopic(Origin, string, uint32, []wire.KV, bool) (*topic.Topic, error) {
	return nil, invalid("no topics here")
}
func (fakeBroker) UpdateTopic(Origin, string, []wire.KV) (*topic.Topic, error) {
	return nil, invalid("no topics here")
}
func (fakeBroker) DeleteTopic(Origin, string) error { return invalid("no topics here") }
func (fakeBroker) Observed() bool                   { return false }
func (fakeBroker) Emit(telemetry.Event)             {}

// newTestServer is a server that is not listening, over fakeBroker.
func newTestServer(t testing.TB) *Server {
	t.Helper()
	return New(Config{Broker: fakeBroker{}, Topics: topic.NewTable(), Shards: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxPendingBytes: 1 << 20,
		MaxInflightBytes: 64 << 20, MaxOutboundBytes: 64 << 20, AutoCreateRate: 1})
}

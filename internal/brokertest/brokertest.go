// Package brokertest runs a broker in process for the tests of the
// packages above the engine (the gateways'): on 127.0.0.1 port 0, in a
// temporary directory, stopped when the test ends.
package brokertest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// Start runs a broker with the native protocol on 127.0.0.1 port 0 and
// no other listener, unless mutate asks for one, for the test's lifetime.
func Start(t testing.TB, mutate func(*engine.Config)) *engine.Engine {
	t.Helper()
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr = "127.0.0.1:0", ""
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.ShutdownTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := engine.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Start(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return e
}

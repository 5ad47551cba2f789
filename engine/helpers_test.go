package engine

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// startBroker runs a broker on 127.0.0.1 port 0 (native protocol and
// HTTP) for the test's lifetime.
func startBroker(t testing.TB, mutate func(*Config)) *Engine {
	t.Helper()
	return startBrokerWith(t, mutate)
}

// startBrokerWith is startBroker with New's options.
func startBrokerWith(t testing.TB, mutate func(*Config), opts ...Option) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.ShutdownTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := New(cfg, opts...)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Start(ctx))
	t.Cleanup(func() { shutdown(t, e) })
	return e
}

// shutdown stops e; a second call (after a test did it itself) is harmless.
func shutdown(t testing.TB, e *Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.Shutdown(ctx)
}

// dial connects a client that is closed when the test ends.
func dial(t testing.TB, e *Engine, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.Addr().String(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

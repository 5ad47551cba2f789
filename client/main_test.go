package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"testing"

	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// brokerAddr is a broker shared by the examples and tests of this package.
// The client itself imports no server package; only its tests start one.
var brokerAddr string

func TestMain(m *testing.M) {
	if p := os.Getenv(sinkEnv); p != "" {
		os.Exit(runSink(p))
	}
	os.Exit(runWithBroker(m))
}

// runWithBroker runs the tests against a shared broker, and removes its
// data directory afterwards.
func runWithBroker(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ratatoskr-client-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	e, err := startEngine(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	brokerAddr = e.Addr().String()
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = e.Shutdown(ctx)
	return code
}

// startEngine starts a broker with its data in dir (a test's t.TempDir,
// removed after the test's own cleanups have stopped the broker).
func startEngine(dir string, mutate func(*engine.Config)) (*engine.Engine, error) {
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr = "127.0.0.1:0", ""
	cfg.DataDir = dir
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := engine.New(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e, e.Start(ctx)
}

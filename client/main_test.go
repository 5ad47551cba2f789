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
	e, err := startEngine(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	brokerAddr = e.Addr().String()
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = e.Shutdown(ctx)
	cancel()
	os.Exit(code)
}

func startEngine(mutate func(*engine.Config)) (*engine.Engine, error) {
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr = "127.0.0.1:0", ""
	dir, err := os.MkdirTemp("", "ratatoskr-client-test")
	if err != nil {
		return nil, err
	}
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

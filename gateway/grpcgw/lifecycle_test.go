package grpcgw_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	pb "github.com/ratatoskr-mq/ratatoskr/proto/ratatoskr/v1"
)

// The health service says NOT_SERVING once shutdown begins; streams end
// with Unavailable, and the broker stops.
func TestShutdownEndsStreamsAndHealth(t *testing.T) {
	e := startBroker(t, nil)
	ctx := testCtx(t)
	c, cc := dial(t, e.GRPCAddr(), nil, "")
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{Service: "ratatoskr.v1.Broker"})
	require.NoError(t, err)
	st, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, st.Status)
	sub, err := c.Subscribe(ctx, &pb.SubscribeRequest{Topic: "t"})
	require.NoError(t, err)
	_, err = sub.Recv()
	require.NoError(t, err)

	stopped := make(chan error, 1)
	go func() { stopped <- e.Shutdown(context.Background()) }()
	st, err = watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, st.Status)
	_, err = sub.Recv()
	requireCode(t, codes.Unavailable, err)
	require.NoError(t, <-stopped)
}

// GRPCAddr is validated; "off" serves none.
func TestGRPCAddrConfig(t *testing.T) {
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.GRPCAddr = "no-port"
	_, err := engine.New(cfg)
	require.ErrorContains(t, err, "GRPCAddr")
	cfg.GRPCAddr = "0.0.0.0:0"
	_, err = engine.New(cfg)
	require.ErrorContains(t, err, "not a loopback address")

	e := startBroker(t, func(c *engine.Config) { c.GRPCAddr = "off" })
	require.Empty(t, e.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(ctx))
}

package loadtest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// A run over the gRPC front end: one producer through a PublishStream,
// one subscriber through Subscribe, every message delivered once, in
// order.
func TestRunOverGRPC(t *testing.T) {
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.GRPCAddr, cfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(cfg)
	require.NoError(t, err)
	require.NoError(t, e.Start(context.Background()))
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })

	// PerCall 1 publishes with PublishAsync, which the connection
	// buffers into requests; the default with PublishBatchAsync.
	for _, perCall := range []int{0, 1} {
		lc := DefaultConfig()
		lc.Server, lc.Protocol, lc.PerCall = e.GRPCAddr(), "grpc", perCall
		lc.Topic = "grpc-" + string(rune('a'+perCall))
		lc.Count, lc.Producers, lc.Subscribers, lc.Partitions = 5000, 1, 1, 2
		var progress bytes.Buffer
		res, err := Run(context.Background(), lc, &progress)
		require.NoError(t, err, progress.String())
		require.Equal(t, uint64(5000), res.Published)
		require.Equal(t, uint64(5000), res.Delivered)
		require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
	}
	require.Contains(t, Protocols(), "grpc")
}

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

// TestRunOverHTTP runs producers and a subscriber through the broker's
// HTTP gateway (NDJSON publishes, an event stream) and loses nothing.
func TestRunOverHTTP(t *testing.T) {
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(cfg)
	require.NoError(t, err)
	require.NoError(t, e.Start(context.Background()))
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })

	lc := DefaultConfig()
	lc.Protocol, lc.Server = "http", e.HTTPAddr()
	lc.Count, lc.Producers, lc.Subscribers, lc.Partitions = 20_000, 2, 1, 2
	var progress bytes.Buffer
	res, err := Run(context.Background(), lc, &progress)
	require.NoError(t, err, progress.String())
	require.Equal(t, uint64(20_000), res.Published)
	require.Equal(t, uint64(20_000), res.Delivered)
	require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
}

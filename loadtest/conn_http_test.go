package loadtest

import (
	"bytes"
	"context"
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/internal/brokertest"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// TestRunOverHTTP runs producers and a subscriber through the broker's
// HTTP gateway (NDJSON publishes, an event stream) and loses nothing.
func TestRunOverHTTP(t *testing.T) {
	e := brokertest.Start(t, func(c *engine.Config) { c.HTTPAddr = "127.0.0.1:0" })

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

//go:build !race

package client_test

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// The race detector makes sync.Pool drop some of what is put back, and
// changes which goroutine runs where, so what a test of buffer reuse
// counts there is not the client's: this file is built without it.

// TestLargeBatchesReuseTheirBuffers: a client sealing 1 MiB batches keeps
// reusing its frame buffers, as one with the default 256 KiB does; it
// used to allocate a fresh, zeroed buffer for every batch. The broker is
// the sink in a child process, so the allocations counted are the
// client's.
func TestLargeBatchesReuseTheirBuffers(t *testing.T) {
	addr := startSink(t, 1)
	ctx := ctxT(t)
	c := dialT(t, addr, client.WithBatchBytes(1<<20), client.WithoutReconnect())
	msgs := make([]client.Message, 256)
	for i := range msgs {
		msgs[i].Value = make([]byte, 1000)
	}
	publish := func(bytes int) {
		for range bytes / (len(msgs) * 1000) {
			require.NoError(t, c.PublishBatchAsync(ctx, "t", msgs, client.ToPartition(0)))
		}
		require.NoError(t, c.Flush(ctx))
	}
	publish(8 << 20) // fill the pool
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	publish(64 << 20)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	require.Less(t, allocated, uint64(16<<20), "64 MiB published in 1 MiB batches allocated %d MiB", allocated>>20)
}

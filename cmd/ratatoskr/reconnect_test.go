package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// TestSubFollowsAcrossRestart: `sub` keeps following a durable topic
// across a broker restart, with no gap and no duplicate, instead of
// exiting when the connection drops.
func TestSubFollowsAcrossRestart(t *testing.T) {
	data := t.TempDir()
	s := startServerIn(t, data, nil, "--addr", "127.0.0.1:0", "--http-addr", "")
	addr := s.addr
	type result struct {
		out, errOut string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, code := runCLIFor(t, 120*time.Second, "sub", "follow", "--from", "earliest", "-n", "6", "--server", addr)
		done <- result{out, errOut, code}
	}()
	_, errOut, code := runCLI(t, nil, "pub", "follow", "m1", "m2", "m3", "--server", addr)
	require.Zero(t, code, errOut)
	// sub has subscribed (its first connection is not retried) before the
	// broker stops.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.WithoutReconnect())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := c.DescribeTopic(ctx, "follow")
		return err == nil && info.Partitions[0].Subscribers == 1
	}, 60*time.Second, 5*time.Millisecond)
	require.NoError(t, c.Close())

	require.NoError(t, s.stop(t))
	startServerIn(t, data, nil, "--addr", addr, "--http-addr", "")
	_, errOut, code = runCLI(t, nil, "pub", "follow", "m4", "m5", "m6", "--server", addr)
	require.Zero(t, code, errOut)

	r := <-done
	require.Zero(t, r.code, r.errOut)
	require.Equal(t, "m1\nm2\nm3\nm4\nm5\nm6\n", r.out)
	require.Contains(t, r.errOut, "shutting down; reconnecting\n", "the lost connection is reported once")
	require.Contains(t, r.errOut, "ratatoskr: reconnected\n")
	require.NotContains(t, r.errOut, "WARN")
}

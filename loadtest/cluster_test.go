package loadtest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/engine"
)

// startCluster runs three brokers as one cluster in this process and
// returns their native addresses, comma-separated.
func startCluster(t *testing.T) string {
	t.Helper()
	peers := map[uint64]string{1: "127.0.0.1:0", 2: "127.0.0.1:0", 3: "127.0.0.1:0"}
	var nodes []*engine.Engine
	var addrs []string
	for id := uint64(1); id <= 3; id++ {
		cfg := engine.DefaultConfig()
		cfg.Addr, cfg.HTTPAddr, cfg.ClusterAddr, cfg.DataDir = "127.0.0.1:0", "", "127.0.0.1:0", t.TempDir()
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg.NodeID, cfg.Peers, cfg.RaftTick = id, peers, 20*time.Millisecond
		cfg.ShutdownTimeout = 5 * time.Second
		e, err := engine.New(cfg)
		require.NoError(t, err)
		require.NoError(t, e.Start(context.Background()))
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = e.Shutdown(ctx)
		})
		nodes = append(nodes, e)
		addrs = append(addrs, e.Addr().String())
	}
	for i, e := range nodes {
		for j, o := range nodes {
			if i != j {
				require.NoError(t, e.SetPeer(uint64(j+1), o.ClusterAddr().String()))
			}
		}
	}
	return strings.Join(addrs, ",")
}

// TestRunAgainstACluster: given several addresses, the producers and
// subscribers are cluster clients; every message of a three-partition
// replicated topic arrives once, in each producer's order.
func TestRunAgainstACluster(t *testing.T) {
	addrs := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := client.DialCluster(ctx, addrs)
	require.NoError(t, err)
	defer func() { _ = cl.Close() }()
	// The cluster forms (a controller elected, the nodes registered)
	// before it takes a topic.
	require.Eventually(t, func() bool {
		err := cl.CreateTopic(ctx, "lt", client.TopicConfig{Partitions: 3, Replicas: 3, Storage: "memory"})
		return err == nil || errors.Is(err, client.ErrTopicExists)
	}, time.Minute, 50*time.Millisecond)

	cfg := DefaultConfig()
	cfg.Server, cfg.Topic, cfg.Count, cfg.Producers, cfg.Subscribers = addrs, "lt", 6000, 3, 2
	cfg.Idempotence = true
	res, err := Run(ctx, cfg, nil)
	require.NoError(t, err)
	require.Equal(t, 3, res.Partitions)
	require.Equal(t, uint64(6000), res.Published)
	require.Equal(t, uint64(12000), res.Delivered)
	require.Zero(t, res.Lost+res.Duplicated+res.Reordered+res.Malformed)
}

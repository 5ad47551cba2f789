package driver

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// countingLog counts fsyncs.
type countingLog struct {
	storage.Staged
	syncs atomic.Int64
}

func (c *countingLog) Sync() (int64, error) {
	c.syncs.Add(1)
	return c.Staged.Sync()
}

// gatedLog also holds each write of staged batches until the test opens
// its gate.
type gatedLog struct {
	countingLog
	gate   chan struct{}
	inside atomic.Bool
}

func (g *gatedLog) WritePending() (int64, error) {
	g.inside.Store(true)
	<-g.gate
	return g.Staged.WritePending()
}

// memDiskLog is a disk log on an in-memory file system.
func memDiskLog(t *testing.T) storage.Staged {
	t.Helper()
	l, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: vfs.NewMem(), Dir: "t/0"})
	require.NoError(t, err)
	return l
}

// publishOne adopts a partition of topic "t" with fsync=never on log and
// publishes one batch (correlation 1) to it; it returns the partition and
// the producer's outbox.
func publishOne(t *testing.T, s *Driver, log storage.Log) (*shard.Partition, *outbox.Outbox) {
	t.Helper()
	p := shard.NewPartition("t", 0, s.Shard(), log, shard.SyncPolicy{Mode: shard.SyncNever})
	require.NoError(t, p.Adopt())
	t.Cleanup(func() { _ = p.Log.Close() })
	var k kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	b, off := deliverBuf(t, "t", 3)
	require.NoError(t, p.Publish(prod, 1, b, off))
	s.Wake()
	return p, prod
}

// TestSwitchToAlwaysWaitsForFsync: a publish staged after a switch to
// fsync=always, while a write requested under fsync=never is still
// running, is acked only after an fsync covers it.
func TestSwitchToAlwaysWaitsForFsync(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	g := &gatedLog{countingLog: countingLog{Staged: memDiskLog(t)}, gate: make(chan struct{})}
	p, prod := publishOne(t, s, g)
	require.Eventually(t, g.inside.Load, 30*time.Second, time.Millisecond, "the never-mode write is running")

	require.NoError(t, p.SetSync(shard.SyncPolicy{Mode: shard.SyncAlways}))
	b2, off2 := deliverBuf(t, "t", 5)
	require.NoError(t, p.Publish(prod, 2, b2, off2)) // staged behind the running write
	s.Wake()
	close(g.gate)

	acked := map[uint32]bool{}
	require.Eventually(t, func() bool {
		for _, f := range frames(t, prod) {
			if f.Type == wire.TypePublishAck {
				acked[f.Corr] = true
			}
		}
		return acked[2]
	}, 5*time.Second, time.Millisecond)
	require.Positive(t, g.syncs.Load(), "publish 2 was acked only after an fsync")
}

// TestIntervalSyncRunsAndStops: a partition with fsync=interval is synced
// on its interval, also when it got the policy at run time, and no more
// once it leaves it.
func TestIntervalSyncRunsAndStops(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	c := &countingLog{Staged: memDiskLog(t)}
	p, prod := publishOne(t, s, c)
	waitQueued(t, prod, wire.PublishAckSize) // handled and acked
	require.Zero(t, c.syncs.Load(), "never: no fsync")
	require.False(t, s.syncer.ticking.Load(), "never: no interval ticker")

	require.NoError(t, p.SetSync(shard.SyncPolicy{Mode: shard.SyncInterval, Interval: 20 * time.Millisecond}))
	s.Wake()
	require.Eventually(t, func() bool { return c.syncs.Load() >= 3 }, 30*time.Second, time.Millisecond,
		"synced on its interval")

	require.NoError(t, p.SetSync(shard.SyncPolicy{Mode: shard.SyncNever}))
	s.Wake()
	// The syncer stops its ticker on the first pass that finds no interval
	// partition, after any tick already under way: from then on nothing
	// can sync on an interval, so the count must stay where it is.
	require.Eventually(t, func() bool { return !s.syncer.ticking.Load() }, 30*time.Second, time.Millisecond,
		"the interval ticker stops once no partition uses it")
	n := c.syncs.Load()
	s.syncer.mu.Lock()
	_, tracked := s.syncer.lastRun[p]
	s.syncer.mu.Unlock()
	require.False(t, tracked, "no interval fsync after leaving the policy")
	b, off := deliverBuf(t, "t", 3) // a publish under never: written, not synced
	require.NoError(t, p.Publish(prod, 2, b, off))
	s.Wake()
	waitQueued(t, prod, 2*wire.PublishAckSize)
	require.Equal(t, n, c.syncs.Load(), "no interval fsync after leaving the policy")
}

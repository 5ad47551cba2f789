package driver

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// batchRecord is one OnBatch call.
type batchRecord struct {
	part        *shard.Partition
	base        int64
	count       int
	bytes       int
	visibleThen int64
}

type batchRecorder struct {
	mu  sync.Mutex
	got []batchRecord
}

func (r *batchRecorder) hook(p *shard.Partition, base int64, count, bytes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, batchRecord{p, base, count, bytes, p.EndOffset()})
}

func (r *batchRecorder) records() []batchRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]batchRecord(nil), r.got...)
}

// TestOnBatchOncePerVisibleBatch: the hook sees every stored batch once,
// in offset order, with its size, and only once readers can see it; for
// a memory log at once, for a disk log after its fsync.
func TestOnBatchOncePerVisibleBatch(t *testing.T) {
	for _, kind := range []string{"memory", "disk"} {
		t.Run(kind, func(t *testing.T) {
			var rec batchRecorder
			s := startShard(t, shard.Config{Shards: 1, OnBatch: rec.hook})
			var p *shard.Partition
			if kind == "disk" {
				l, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: vfs.NewMem(), Dir: "t/0"})
				require.NoError(t, err)
				p = shard.NewPartition("t", 0, s.Shard(), l, shard.SyncPolicy{Mode: shard.SyncAlways})
			} else {
				p = memPartition(t, "t", s)
			}
			t.Cleanup(func() { _ = p.Log.Close() }) // releases the batches it holds
			var k kicks
			prod := outbox.NewOutbox(1<<20, 1, &k)
			var sizes []int
			for i, n := range []int{3, 5, 1} {
				b, off := deliverBuf(t, "t", n)
				sizes = append(sizes, len(b.B)-off)
				require.NoError(t, p.Publish(prod, uint32(i), b, off))
				s.Wake()
			}
			require.Eventually(t, func() bool { return len(rec.records()) == 3 }, 30*time.Second, time.Millisecond)
			got := rec.records()
			for i, want := range []struct{ base, count int64 }{{0, 3}, {3, 5}, {8, 1}} {
				require.Same(t, p, got[i].part)
				require.Equal(t, want.base, got[i].base)
				require.Equal(t, int(want.count), got[i].count)
				require.Equal(t, sizes[i], got[i].bytes)
				require.GreaterOrEqual(t, got[i].visibleThen, want.base+want.count, "called after the batch became visible")
			}
		})
	}
}

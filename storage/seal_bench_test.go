package storage

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Encryption at rest against the plain log, on the OS file system (direct
// I/O where it is allowed): the rounds of each pair alternate, so run
// them with -count and compare pairwise (see docs/PERFORMANCE.md).

const (
	benchRecords   = 100 // records per batch
	benchValue     = 128 // bytes per value
	benchGroup     = 8   // batches per write (group commit)
	benchLogBatchs = 2000
)

func benchBatch(base int64) wire.Batch {
	var bb wire.BatchBuilder
	bb.Start(nil, -1, -1)
	v := make([]byte, benchValue)
	for i := range benchRecords {
		v[0] = byte(i)
		bb.Append(time.Now().UnixNano(), nil, v, nil)
	}
	b := wire.Batch(bb.Finish())
	b.SetBaseOffset(base)
	return b
}

func benchKeys(b *testing.B, enc bool) *crypt.Keyring {
	if !enc {
		return nil
	}
	return testKeyring(b, 1)
}

// BenchmarkDurableAppend writes groups of benchGroup batches of
// benchRecords 128-byte messages, each group followed by an fsync
// (fsync=always) or not (never), in msg/s.
func BenchmarkDurableAppend(b *testing.B) {
	for _, fsync := range []string{"always", "never"} {
		for _, enc := range []bool{false, true} {
			b.Run(fmt.Sprintf("fsync=%s/encrypted=%v", fsync, enc), func(b *testing.B) {
				l, _, err := OpenDiskLog(DiskConfig{FS: vfs.Default(), Dir: b.TempDir() + "/t/0",
					Keys: benchKeys(b, enc), Logger: quiet})
				require.NoError(b, err)
				defer func() { _ = l.Close() }()
				batch := benchBatch(0)
				b.SetBytes(int64(len(batch) * benchGroup))
				b.ReportAllocs()
				b.ResetTimer()
				end := int64(0)
				for range b.N {
					for range benchGroup {
						batch.SetBaseOffset(end)
						require.NoError(b, l.Stage(nil, batch))
						end += benchRecords
					}
					if _, err := l.WritePending(); err != nil {
						b.Fatal(err)
					}
					if fsync == "always" {
						if _, err := l.Sync(); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(end)/b.Elapsed().Seconds(), "msg/s")
			})
		}
	}
}

// BenchmarkReplay reads a log of benchLogBatchs batches from the start,
// through a block cache (warm after the first round, so the figure is the
// read path's CPU: CRC, and for the encrypted log the decryption), in
// msg/s.
func BenchmarkReplay(b *testing.B) {
	for _, enc := range []bool{false, true} {
		b.Run(fmt.Sprintf("encrypted=%v", enc), func(b *testing.B) {
			cache, err := NewBlockCache(512 << 20)
			require.NoError(b, err)
			defer cache.Close()
			l, _, err := OpenDiskLog(DiskConfig{FS: vfs.Default(), Dir: b.TempDir() + "/t/0",
				Keys: benchKeys(b, enc), Cache: cache, Logger: quiet})
			require.NoError(b, err)
			defer func() { _ = l.Close() }()
			batch := benchBatch(0)
			end := int64(0)
			for range benchLogBatchs {
				batch.SetBaseOffset(end)
				require.NoError(b, l.Append(nil, batch))
				end += benchRecords
			}
			l.SetVisible(end)
			read := func() int {
				n := 0
				require.NoError(b, l.Read(0, 1<<40, func(bt wire.Batch) bool { n += bt.Count(); return true }))
				return n
			}
			require.Equal(b, int(end), read())
			b.SetBytes(int64(len(batch) * benchLogBatchs))
			b.ReportAllocs()
			b.ResetTimer()
			msgs := 0
			for range b.N {
				msgs += read()
			}
			b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

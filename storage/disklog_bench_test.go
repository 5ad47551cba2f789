package storage

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// BenchmarkOpenDiskLog opens a log of 100 segments on the OS file system,
// after a clean shutdown (indexes trusted, nothing synced) and after an
// unclean one (the last segment scanned, every segment fsynced, here with
// nothing dirty left to write: the cost of the fsyncs alone).
func BenchmarkOpenDiskLog(b *testing.B) {
	const segments = 100
	for _, clean := range []bool{true, false} {
		b.Run(fmt.Sprintf("clean=%v", clean), func(b *testing.B) {
			cfg := DiskConfig{FS: vfs.Default(), Dir: b.TempDir() + "/t/0", SegmentBytes: 64 << 10, Logger: quiet}
			l, _, err := OpenDiskLog(cfg)
			require.NoError(b, err)
			for end := int64(0); l.Stats().Segments < segments; end += 8 {
				require.NoError(b, l.Append(nil, makeBatch(end, 8, 1)))
			}
			require.NoError(b, l.Close())
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				if !clean {
					require.NoError(b, cfg.FS.Remove(cfg.Dir+"/"+cleanMarker))
				}
				b.StartTimer()
				l, rec, err := OpenDiskLog(cfg)
				b.StopTimer()
				require.NoError(b, err)
				require.Equal(b, clean, rec.Clean)
				require.NoError(b, l.Close())
				b.StartTimer()
			}
		})
	}
}

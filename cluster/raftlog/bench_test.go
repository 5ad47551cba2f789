package raftlog

import (
	"fmt"
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
)

// BenchmarkAppend appends Readys of small batches (one 100-byte record
// each, as a producer that does not batch sends them) to a Raft log over a
// disk log in a temporary directory, and syncs after each Ready, as a
// follower catching up under fsync=always does: per entry, the cost of
// writing the partition log.
func BenchmarkAppend(b *testing.B) {
	for _, perReady := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("entries=%d", perReady), func(b *testing.B) {
			l, _, err := storage.OpenDiskLog(storage.DiskConfig{FS: vfs.Default(), Dir: b.TempDir() + "/p",
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = l.Close() }()
			s, err := Open(l, &MemMeta{})
			if err != nil {
				b.Fatal(err)
			}
			data := batch(1, string(make([]byte, 100)))
			ents := make([]raftpb.Entry, perReady)
			next := uint64(1)
			b.SetBytes(int64(perReady * len(data)))
			b.ResetTimer()
			for range b.N {
				for i := range ents {
					ents[i] = raftpb.Entry{Term: 1, Index: next, Data: data}
					next++
				}
				if err := s.Append(ents); err != nil {
					b.Fatal(err)
				}
				if err := s.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*perReady)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

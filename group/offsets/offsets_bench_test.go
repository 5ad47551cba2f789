package offsets

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// benchGroups is the number of groups the store holds in the commit
// benchmarks: the scale at which issue 11 measured 867 KB written per
// commit.
const benchGroups = 10000

func benchGroupName(i int) string { return fmt.Sprintf("group-%05d", i%benchGroups) }

// BenchmarkOffsetCommit is one commit cycle on the real disk: dirty groups
// of benchGroups commit one partition's offset each and wait until it is
// durable. B-written/op and syncs/op are what the cycle cost the disk.
func BenchmarkOffsetCommit(b *testing.B) {
	for _, dirty := range []int{1, 100} {
		b.Run(fmt.Sprintf("groups=%d/dirty=%d", benchGroups, dirty), func(b *testing.B) {
			benchOffsetCommit(b, dirty)
		})
	}
}

func benchOffsetCommit(b *testing.B, dirty int) {
	fsys := newCountFS(vfs.Default())
	s := New(fsys, b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := s.Load(); err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer s.Close()
	commit := func(from, n int, off int64) {
		var wg sync.WaitGroup
		wg.Add(n)
		for i := from; i < from+n; i++ {
			s.Set(benchGroupName(i), "orders", []wire.PartitionOffset{{Partition: 0, Offset: off}}, func(err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			})
		}
		wg.Wait()
	}
	commit(0, benchGroups, 1)
	fsys.reset()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		commit(i*dirty, dirty, int64(i+2))
	}
	b.StopTimer()
	_, bytes, syncs := fsys.snapshot()
	b.ReportMetric(float64(bytes)/float64(b.N), "B-written/op")
	b.ReportMetric(float64(syncs)/float64(b.N), "syncs/op")
}

// BenchmarkOffsetCommitPerGroupFiles is the I/O of the layout that was
// measured and not taken (docs/PERFORMANCE.md, issue 11): a file per
// group, each dirty group's file replaced atomically (write, fsync,
// rename) and the directory synced once per cycle.
func BenchmarkOffsetCommitPerGroupFiles(b *testing.B) {
	for _, dirty := range []int{1, 100} {
		b.Run(fmt.Sprintf("groups=%d/dirty=%d", benchGroups, dirty), func(b *testing.B) {
			benchPerGroupFiles(b, dirty)
		})
	}
}

func benchPerGroupFiles(b *testing.B, dirty int) {
	fsys := newCountFS(vfs.Default())
	dir := b.TempDir()
	write := func(i int, off int64) {
		name := dir + "/" + benchGroupName(i) + ".json"
		data, _ := json.Marshal(map[string]any{"topic": "orders", "offsets": map[int32]int64{0: off}, "active": 1764199500000})
		f, err := fsys.OpenFile(name+".tmp", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = fsys.Rename(name+".tmp", name)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	for i := range benchGroups {
		write(i, 1)
	}
	fsys.reset()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		for d := range dirty {
			write(i*dirty+d, int64(i+2))
		}
		if err := fsys.SyncDir(dir); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_, bytes, syncs := fsys.snapshot()
	b.ReportMetric(float64(bytes)/float64(b.N), "B-written/op")
	b.ReportMetric(float64(syncs)/float64(b.N), "syncs/op")
}

// BenchmarkOffsetSnapshot is the compaction of the offsets log holding
// benchGroups groups: every group's record written as a new log, which
// happens once the log is compactFactor times its live state.
func BenchmarkOffsetSnapshot(b *testing.B) {
	fsys := newCountFS(vfs.Default())
	s := New(fsys, b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := s.Load(); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := range benchGroups {
		s.Set(benchGroupName(i), "orders", []wire.PartitionOffset{{Partition: 0, Offset: 1}}, nil)
	}
	fsys.reset()
	for b.Loop() {
		s.mu.Lock()
		buf := s.encode(true)
		s.mu.Unlock()
		if err := s.writeSnapshot(buf); err != nil {
			b.Fatal(err)
		}
	}
	_, bytes, syncs := fsys.snapshot()
	b.ReportMetric(float64(bytes)/float64(b.N), "B-written/op")
	b.ReportMetric(float64(syncs)/float64(b.N), "syncs/op")
}

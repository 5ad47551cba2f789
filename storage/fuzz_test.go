package storage

import (
	"bytes"
	"os"
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// FuzzRecover writes random bytes as a partition's last segment (and
// sometimes a random index for it) and opens the log: recovery must never
// panic, and whatever it keeps must read back as valid batches in offset
// order. Small segments and a dense index keep each execution cheap (the
// default 128 MiB segment sizes a 540 KB index) and put the index to work
// on inputs of a few kilobytes.
func FuzzRecover(f *testing.F) {
	var good []byte
	for i := range int64(20) {
		good = append(good, makeBatch(i*3, 3, i)...)
	}
	f.Add(good, []byte(nil))
	f.Add(good[:len(good)-7], []byte(nil))
	f.Add(append(append([]byte{}, good[:200]...), make([]byte, 300)...), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, segment, index []byte) {
		fsys := vfs.NewMem()
		if err := fsys.MkdirAll("t/0", 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name string, b []byte) {
			fh, err := fsys.OpenFile("t/0/"+name, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = fh.Write(b)
			_ = fh.Close()
		}
		write(segmentName(0, logSuffix), segment)
		if index != nil {
			write(segmentName(0, indexSuffix), index)
			write(cleanMarker, nil)
		}
		l, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/0", SegmentBytes: 64 << 10, IndexInterval: 64, Logger: quiet})
		if err != nil {
			return
		}
		_, end := l.Bounds()
		next := int64(-1)
		_ = l.Read(0, 1<<30, func(b wire.Batch) bool {
			if b.BaseOffset() < next {
				t.Fatalf("batch %d after %d", b.BaseOffset(), next)
			}
			next = b.BaseOffset() + int64(b.Count())
			return true
		})
		if next > end {
			t.Fatalf("read to %d past the end %d", next, end)
		}
		_ = l.Close()
	})
}

// FuzzRecoverEncrypted is FuzzRecover on an encrypted log, whose keyring
// holds a fixed key so that the seeds' sealed batches open: whatever the
// bytes, opening never panics, and a read serves only batches that
// authenticated, in offset order, within the end; every one is a valid
// plain batch.
func FuzzRecoverEncrypted(f *testing.F) {
	kr := crypt.NewKeyring()
	if err := kr.Add(1, bytes.Repeat([]byte{7}, crypt.KeySize), true); err != nil {
		f.Fatal(err)
	}
	w := &sealer{keys: kr}
	if err := w.begin(&segment{}); err != nil {
		f.Fatal(err)
	}
	var batches []wire.Batch
	for i := range int64(20) {
		batches = append(batches, makeBatch(i*3, 3, i))
	}
	good := bytes.Clone(w.group(batches))
	f.Add(good)
	f.Add(good[:len(good)-7])
	f.Add(append(bytes.Clone(good[:300]), make([]byte, 300)...))
	f.Fuzz(func(t *testing.T, segment []byte) {
		fsys := vfs.NewMem()
		if err := fsys.MkdirAll("t/0", 0o755); err != nil {
			t.Fatal(err)
		}
		fh, err := fsys.OpenFile("t/0/"+segmentName(0, logSuffix), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fh.Write(segment)
		_ = fh.Close()
		l, _, err := OpenDiskLog(DiskConfig{FS: fsys, Dir: "t/0", SegmentBytes: 64 << 10, IndexInterval: 64,
			Keys: kr, Logger: quiet})
		if err != nil {
			return
		}
		_, end := l.Bounds()
		next := int64(-1)
		_ = l.Read(0, 1<<30, func(b wire.Batch) bool {
			if b.BaseOffset() < next {
				t.Fatalf("batch %d after %d", b.BaseOffset(), next)
			}
			if _, err := wire.CheckBatch(b, 1<<20, 1<<20); err != nil {
				t.Fatalf("served a batch that does not check: %v", err)
			}
			next = b.BaseOffset() + int64(b.Count())
			return true
		})
		if next > end {
			t.Fatalf("read to %d past the end %d", next, end)
		}
		_ = l.Close()
	})
}

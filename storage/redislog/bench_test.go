package redislog

import (
	"context"
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/internal/redistest"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// benchBatch is a batch of n records of 128-byte values stamped at base.
func benchBatch(base int64, n int) *storage.Buf {
	var bb wire.BatchBuilder
	bb.Start(nil, -1, -1)
	v := make([]byte, 128)
	for i := range n {
		bb.Append(int64(i), nil, v, nil)
	}
	b := wire.Batch(bb.Finish())
	b.SetBaseOffset(base)
	buf := storage.NewBuf(len(b))
	copy(buf.B, b)
	return buf
}

// BenchmarkAppend writes batches of 100 records of 128 B, 16 batches per
// write (what a shard stages between two writes under load), to a Redis
// with AOF everysec; it reports records per second.
func BenchmarkAppend(b *testing.B) {
	_, s := openStore(b, redistest.Options{})
	l, err := s.OpenLog(context.Background(), "bench", 0, true)
	if err != nil {
		b.Fatal(err)
	}
	const perBatch, perWrite = 100, 16
	b.SetBytes(perBatch * perWrite * 128)
	b.ReportAllocs()
	off := int64(0)
	for b.Loop() {
		for range perWrite {
			buf := benchBatch(off, perBatch)
			if err := l.Stage(buf, wire.Batch(buf.B)); err != nil {
				b.Fatal(err)
			}
			buf.Release()
			off += perBatch
		}
		if _, err := l.WritePending(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(off)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkReplay reads a log of 100-record batches from the start in
// 1 MiB reads, as a replay does; it reports records per second.
func BenchmarkReplay(b *testing.B) {
	_, s := openStore(b, redistest.Options{})
	l, err := s.OpenLog(context.Background(), "bench", 0, true)
	if err != nil {
		b.Fatal(err)
	}
	const perBatch, batches = 100, 20000
	for i := range batches {
		buf := benchBatch(int64(i*perBatch), perBatch)
		if err := l.Stage(buf, wire.Batch(buf.B)); err != nil {
			b.Fatal(err)
		}
		buf.Release()
		if i%64 == 63 || i == batches-1 {
			if _, err := l.WritePending(); err != nil {
				b.Fatal(err)
			}
		}
	}
	end, _ := l.Sync()
	l.SetVisible(end)
	b.ReportAllocs()
	records := 0
	for b.Loop() {
		for off := int64(0); off < end; {
			if err := l.Read(off, 1<<20, func(bt wire.Batch) bool {
				off = bt.BaseOffset() + int64(bt.Count())
				records += bt.Count()
				return true
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
}

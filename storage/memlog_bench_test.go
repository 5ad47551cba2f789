package storage

import (
	"testing"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// BenchmarkMemLogAppendAtBound appends to a memory log that is at its
// byte bound, so every append also trims the oldest batch: the steady
// state of a busy memory topic.
func BenchmarkMemLogAppendAtBound(b *testing.B) {
	const held = 200_000 // batches the bound holds
	one := makeBatch(0, 1, 0)
	m := NewMemLog(int64(held * len(one)))
	buf := NewBuf(len(one))
	copy(buf.B, one)
	batch := wire.Batch(buf.B)
	for range held {
		_ = m.Append(buf, batch)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = m.Append(buf, batch)
	}
	b.StopTimer()
	_ = m.Close()
	buf.Release()
}

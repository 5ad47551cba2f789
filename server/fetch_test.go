package server

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// retainingLog is a log whose retention runs between a reader's Bounds
// and its first Read: the earliest offset the reader found is gone when
// it reads.
type retainingLog struct {
	*storage.MemLog
	once sync.Once
}

func (l *retainingLog) Read(offset int64, maxBytes int, fn func(wire.Batch) bool) error {
	l.once.Do(func() { _, _ = l.Retain(time.Time{}, 0, 1) })
	return l.MemLog.Read(offset, maxBytes, fn)
}

// A fetch from the earliest offset whose start retention removes under it
// reads from the new earliest instead of answering OFFSET_OUT_OF_RANGE.
func TestFetchEarliestFollowsRetention(t *testing.T) {
	srv := newTestServer(t)
	d := driver.New(driver.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	log := &retainingLog{MemLog: storage.NewMemLog(1 << 20)}
	p := shard.NewPartition("ret", 0, d.Shard(), log, shard.SyncPolicy{Mode: shard.SyncNever})
	for i := range 3 {
		var bb wire.BatchBuilder
		bb.Start(nil, -1, -1)
		bb.Append(int64(i), nil, []byte("m"), nil)
		batch := wire.Batch(bb.Finish())
		batch.SetBaseOffset(int64(i))
		buf := storage.NewBuf(len(batch))
		copy(buf.B, batch)
		require.NoError(t, log.Append(buf, wire.Batch(buf.B)))
		buf.Release()
	}
	log.SetVisible(3)

	offset, frame, err := srv.readFrom(p, wire.Start{Kind: wire.StartEarliest}, 1<<20)
	require.NoError(t, err)
	start, _ := log.Bounds()
	require.Positive(t, start, "retention ran")
	require.Equal(t, start, offset, "read from the new earliest")
	h, _, err := wire.DecodeFetchResult(frame[wire.HeaderSize:])
	require.NoError(t, err)
	require.Equal(t, start, h.Offset)

	// An offset the client named is still out of range once it is gone.
	_, _, err = srv.readFrom(p, wire.Start{Kind: wire.StartOffset, Value: 0}, 1<<20)
	require.ErrorIs(t, err, wire.ErrOffsetOutOfRange)
}

package redislog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/internal/redistest"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openStore starts a redis-server and connects a Store to it.
func openStore(t testing.TB, o redistest.Options) (*redistest.Server, *Store) {
	t.Helper()
	srv := redistest.Start(t, o)
	s := connect(t, srv.URL(o.User, o.Password))
	return srv, s
}

func connect(t testing.TB, url string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{URL: url, Logger: quiet, Timeout: 2 * time.Second, ProbeEvery: 50 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// batch builds a batch of n records stamped at base, with timestamps ts,
// ts+1, ...
func batch(base int64, n int, ts int64) (*storage.Buf, wire.Batch) {
	var bb wire.BatchBuilder
	bb.Start(nil, -1, -1)
	for i := range n {
		bb.Append(ts+int64(i), nil, fmt.Appendf(nil, "value-%d", base+int64(i)), nil)
	}
	b := wire.Batch(bb.Finish())
	b.SetBaseOffset(base)
	buf := storage.NewBuf(len(b))
	copy(buf.B, b)
	return buf, wire.Batch(buf.B)
}

func appendN(t *testing.T, l *Log, from int64, batches, per int, ts int64) int64 {
	t.Helper()
	off := from
	for i := range batches {
		buf, b := batch(off, per, ts+int64(i)*1000)
		require.NoError(t, l.Append(buf, b))
		buf.Release()
		off += int64(per)
	}
	end, err := l.Sync()
	require.NoError(t, err)
	require.Equal(t, off, end)
	l.SetVisible(end)
	return off
}

func readAll(t *testing.T, l *Log, from int64) []int64 {
	t.Helper()
	var bases []int64
	_, end := l.Bounds()
	for from < end {
		n := 0
		require.NoError(t, l.Read(from, 1<<20, func(b wire.Batch) bool {
			bases = append(bases, b.BaseOffset())
			from = b.BaseOffset() + int64(b.Count())
			n++
			return true
		}))
		if n == 0 {
			break
		}
	}
	return bases
}

func TestSmokeAppendReadReopen(t *testing.T) {
	_, s := openStore(t, redistest.Options{})
	l, err := s.OpenLog(context.Background(), "t", 0, true)
	require.NoError(t, err)
	end := appendN(t, l, 0, 10, 3, 1000)
	require.Equal(t, int64(30), end)
	require.Equal(t, []int64{0, 3, 6, 9, 12, 15, 18, 21, 24, 27}, readAll(t, l, 0))
	require.Equal(t, []int64{3, 6, 9, 12, 15, 18, 21, 24, 27}, readAll(t, l, 4))
	off, err := l.OffsetForTime(3000)
	require.NoError(t, err)
	require.Equal(t, int64(6), off)
	off, err = l.OffsetForTime(1 << 60)
	require.NoError(t, err)
	require.Equal(t, int64(30), off)
	require.NoError(t, l.Close())

	_, err = s.OpenLog(context.Background(), "t", 0, true)
	require.Error(t, err, "create over existing keys")
	l, err = s.OpenLog(context.Background(), "t", 0, false)
	require.NoError(t, err)
	start, vend := l.Bounds()
	require.Equal(t, int64(0), start)
	require.Equal(t, int64(30), vend)
	end = appendN(t, l, 30, 2, 5, 20000)
	require.Equal(t, int64(40), end)

	n, err := l.Retain(time.Unix(0, 21000), time.Nanosecond*10000, 0)
	require.NoError(t, err)
	require.Equal(t, 10, n)
	start, _ = l.Bounds()
	require.Equal(t, int64(30), start)
	require.Equal(t, []int64{30, 35}, readAll(t, l, 30))
	require.ErrorIs(t, l.Read(0, 100, func(wire.Batch) bool { return true }), storage.ErrOffsetOutOfRange)
	require.NoError(t, l.Drop())
}

package redislog

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/internal/devcert"
	"github.com/ratatoskr-mq/ratatoskr/internal/redistest"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// TestLostBatchesAreReportedAndWritesGoOn: a Redis that restarted without
// persistence lost the acknowledged batches. The next write notices that
// the log ends below where the broker wrote it, reports the lost offsets
// as a corrupt range, and goes on at the broker's offsets.
func TestLostBatchesAreReportedAndWritesGoOn(t *testing.T) {
	srv, s := openStore(t, redistest.Options{Fsync: "off"})
	l, err := s.OpenLog(context.Background(), "t", 0, true)
	require.NoError(t, err)
	end := appendN(t, l, 0, 5, 2, 1000)
	srv.Kill()
	srv.Restart()
	require.Eventually(t, func() bool { return s.Health() == nil }, 10*time.Second, 5*time.Millisecond)
	appendRetry(t, l, end, 3, 9000)
	end, _ = l.Sync()
	l.SetVisible(end)
	require.Equal(t, int64(13), end)
	require.Equal(t, []storage.Range{{From: 0, To: 10}}, l.Stats().Corrupt)
	require.Equal(t, []int64{10}, readAll(t, l, 0))
}

// appendRetry appends a batch of n records at base until it is written.
// After the server restarted, the first write on a connection its death
// broke fails in doubt (EOF); it is retried, as a producer retries
// OUTCOME_UNKNOWN, and the retry removes whatever the failed one left.
func appendRetry(t *testing.T, l *Log, base int64, n int, ts int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		buf, b := batch(base, n, ts)
		defer buf.Release()
		err := l.Append(buf, b)
		if err != nil {
			require.ErrorIs(t, err, storage.ErrUnavailable)
		}
		return err == nil
	}, 10*time.Second, 5*time.Millisecond)
}

// TestAnotherWriterIsFenced: two brokers writing one partition (the same
// prefix on one Redis) never interleave: the one whose view is stale gets
// ErrFailed, says why, and writes nothing.
func TestAnotherWriterIsFenced(t *testing.T) {
	_, s := openStore(t, redistest.Options{})
	a, err := s.OpenLog(context.Background(), "t", 0, true)
	require.NoError(t, err)
	appendN(t, a, 0, 2, 1, 1)
	b, err := s.OpenLog(context.Background(), "t", 0, false)
	require.NoError(t, err)
	appendN(t, b, 2, 1, 1, 1)
	buf, batch := batch(2, 1, 1)
	defer buf.Release()
	err = a.Append(buf, batch)
	require.ErrorIs(t, err, storage.ErrFailed)
	require.Contains(t, a.Stats().ReadOnly, "another broker writes to")
	require.ErrorIs(t, a.Stage(buf, batch), storage.ErrFailed)
	require.Equal(t, []int64{0, 1, 2}, readAll(t, b, 0))
}

// TestWriteInDoubtIsRemovedFirst: batches a write in doubt left above the
// written end (it was applied, but its answer never came) are removed by
// the next write, in the same script, so their offsets hold the new
// batches, once.
func TestWriteInDoubtIsRemovedFirst(t *testing.T) {
	_, s := openStore(t, redistest.Options{})
	l, err := s.OpenLog(context.Background(), "t", 0, true)
	require.NoError(t, err)
	appendN(t, l, 0, 2, 1, 1)
	// What a write whose answer was lost leaves: two batches past the
	// written end, which a second handle on the keys writes here.
	other, err := s.OpenLog(context.Background(), "t", 0, false)
	require.NoError(t, err)
	appendN(t, other, 2, 2, 1, 1)
	l.doubt = true
	buf, b := batch(2, 3, 7)
	require.NoError(t, l.Append(buf, b))
	buf.Release()
	l.SetVisible(5)
	var got []wire.Batch
	require.NoError(t, l.Read(0, 1<<20, func(b wire.Batch) bool { got = append(got, append(wire.Batch(nil), b...)); return true }))
	require.Len(t, got, 3)
	require.Equal(t, int64(2), got[2].BaseOffset())
	require.Equal(t, 3, got[2].Count(), "the new batch, not the one in doubt")
	reopened, err := s.OpenLog(context.Background(), "t", 0, false)
	require.NoError(t, err)
	_, end := reopened.Bounds()
	require.Equal(t, int64(5), end)
}

// TestUnreachableFailsFastAndRecovers: with the server gone, a write fails
// with ErrUnavailable (nothing stored, so no doubt), then at once while the
// server is known down; the store's probe notices its return.
func TestUnreachableFailsFastAndRecovers(t *testing.T) {
	srv, s := openStore(t, redistest.Options{Fsync: "always"})
	l, err := s.OpenLog(context.Background(), "t", 0, true)
	require.NoError(t, err)
	appendN(t, l, 0, 1, 1, 1)
	srv.Kill()
	buf, b := batch(1, 1, 1)
	defer buf.Release()
	err = l.Append(buf, b)
	require.ErrorIs(t, err, storage.ErrUnavailable)
	require.Error(t, s.Health())
	require.Contains(t, s.Health().Error(), "unreachable since")
	start := time.Now()
	require.ErrorIs(t, l.Append(buf, b), storage.ErrUnavailable)
	require.Less(t, time.Since(start), time.Second, "known down: no wait for a timeout")
	srv.Restart()
	require.Eventually(t, func() bool { return s.Health() == nil }, 10*time.Second, 5*time.Millisecond)
	appendRetry(t, l, 1, 1, 1)
	l.SetVisible(2)
	require.Equal(t, []int64{0, 1}, readAll(t, l, 0))
}

// TestPersistenceIsReported: the store reads the server's settings.
func TestPersistenceIsReported(t *testing.T) {
	for _, tc := range []struct{ fsync, want string }{
		{"always", "aof appendfsync=always"}, {"everysec", "aof appendfsync=everysec"}, {"no", "aof appendfsync=no"},
		{"off", "none"},
	} {
		_, s := openStore(t, redistest.Options{Fsync: tc.fsync})
		require.Equal(t, tc.want, s.Persistence().String())
	}
	_, s := openStore(t, redistest.Options{Fsync: "off", Extra: []string{"--save", "60 1000"}})
	require.Equal(t, "rdb snapshots only (save 60 1000)", s.Persistence().String())
}

// TestTLSAndACLUser: a Redis that wants TLS with client certificates and
// an ACL user keeps logs for a store configured with both; wrong
// credentials fail Open with the reason, at once.
func TestTLSAndACLUser(t *testing.T) {
	bundle, err := devcert.Generate()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, bundle.Write(dir, false))
	srv := redistest.Start(t, redistest.Options{TLSDir: dir, User: "broker", Password: "s3cret-pass"})
	tc, err := bundle.ClientTLS(true)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{URL: "rediss://broker:s3cret-pass@" + srv.Addr, TLS: tc, Logger: quiet})
	require.NoError(t, err)
	defer s.Close()
	l, err := s.OpenLog(ctx, "secure", 0, true)
	require.NoError(t, err)
	appendN(t, l, 0, 3, 2, 1)
	require.Equal(t, []int64{0, 2, 4}, readAll(t, l, 0))

	_, err = Open(ctx, Config{URL: "rediss://broker:wrong@" + srv.Addr, TLS: tc, Logger: quiet})
	require.Error(t, err)
	require.Contains(t, err.Error(), "refused the credentials")
	// Without a client certificate the server refuses every handshake;
	// Open waits for it as long as its context allows.
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	_, err = Open(short, Config{URL: "rediss://broker:s3cret-pass@" + srv.Addr, Logger: quiet,
		TLS: &tls.Config{RootCAs: tc.RootCAs, MinVersion: tls.VersionTLS12}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "unreachable")
}

// TestRetentionRunsOutOfMemory: a Redis at its maxmemory refuses appends,
// but retention still trims there, which is how it gets room back.
func TestRetentionRunsOutOfMemory(t *testing.T) {
	srv, s := openStore(t, redistest.Options{})
	l, err := s.OpenLog(context.Background(), "t", 0, true)
	require.NoError(t, err)
	end := appendN(t, l, 0, 10, 2, 1000)
	_, err = srv.Do("CONFIG", "SET", "maxmemory", "1")
	require.NoError(t, err)
	buf, b := batch(end, 1, 99000)
	defer buf.Release()
	err = l.Append(buf, b)
	require.ErrorIs(t, err, storage.ErrUnavailable)
	require.Contains(t, err.Error(), "out of memory")
	n, err := l.Retain(time.Unix(0, 50000), 10*time.Microsecond, 0)
	require.NoError(t, err)
	require.Equal(t, 9, n, "every batch but the last is older than the bound")
	start, _ := l.Bounds()
	require.Equal(t, end-2, start)
	off, err := l.OffsetForTime(0)
	require.NoError(t, err, "time lookups read, out of memory or not")
	require.Equal(t, end-2, off)
}

package server

import (
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
)

// idleFlusher stands in for a connection that is never written.
type idleFlusher struct{}

func (idleFlusher) ScheduleFlush() {}
func (idleFlusher) Owner() any     { return nil }
func (idleFlusher) FlushNow()      {}

// TestReplaysAreBounded starts ten times more replays than the pool has
// workers. The partition's shard is not running at first, so each replay
// that reaches its join waits on its worker for the shard: the pool fills
// and the rest stay queued, holding no goroutine. Half of them are then
// cancelled, one while it waits for its join; once the shard runs, every
// replay ends, the cancelled ones leave no live subscription, and the
// workers go away.
func TestReplaysAreBounded(t *testing.T) {
	srv := newTestServer(t)
	d := driver.New(driver.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	p := shard.NewPartition("replays", 0, d.Shard(), storage.NewMemLog(1<<20), shard.SyncPolicy{Mode: shard.SyncNever})
	const limit, jobs = 4, 40
	pool := newReplayPool(limit)
	baseline := runtime.NumGoroutine()

	cancels := make([]atomic.Bool, jobs)
	done := make([]chan struct{}, jobs)
	for i := range jobs {
		j := srv.newReplay(outbox.NewOutbox(1<<20, 1, idleFlusher{}), p, 0, &cancels[i])
		j.done = make(chan struct{})
		done[i] = j.done
		pool.start(j)
	}
	require.Eventually(t, func() bool { return d.InboxLen() == limit }, 30*time.Second, time.Millisecond,
		"the first %d replays wait for their joins", limit)
	workers, peak := pool.stats()
	require.Equal(t, limit, workers)
	require.Equal(t, limit, peak)
	require.LessOrEqual(t, runtime.NumGoroutine(), baseline+limit+2, "queued replays hold no goroutine")

	// The queue is first in, first out: replays 0..limit-1 wait for
	// their joins, the others are queued. Cancel replay 1 and every odd
	// queued one.
	cancelled := 0
	for i := range jobs {
		if i == 1 || i >= limit && i%2 == 1 {
			cancels[i].Store(true)
			cancelled++
		}
	}
	d.Start()
	t.Cleanup(d.Stop)
	deadline := time.After(30 * time.Second)
	for i := range jobs {
		select {
		case <-done[i]:
		case <-deadline:
			t.Fatalf("replay %d did not end", i)
		}
	}

	// A join from here goes through the shard after the unsubscribes the
	// cancelled replays queued, and counts itself.
	barrier := make(chan struct{})
	require.NoError(t, p.CatchUp(outbox.NewOutbox(1<<20, 1, idleFlusher{}), 0, nil, func(int64, bool) { close(barrier) }))
	d.Wake()
	<-barrier
	require.Equal(t, jobs-cancelled+1, p.Subscribers(), "live: every replay that was not cancelled, and the barrier")
	require.Eventually(t, func() bool { w, _ := pool.stats(); return w == 0 }, 30*time.Second, time.Millisecond,
		"idle workers end")
	_, peak = pool.stats()
	require.Equal(t, limit, peak, "never more than the bound")
}

// TestCancelledReplayLeavesTheNextSubscription: a connection unsubscribes
// from a partition while its subscription's replay waits for its join,
// and at once subscribes to it again. The shard knows both subscriptions
// by the connection's outbox alone, so the first replay must not join
// and then undo its join: that removal, queued after the second
// subscription's join, took the second one's place, and the second
// subscription was answered SubscribeOK and then never fed, nor ended.
func TestCancelledReplayLeavesTheNextSubscription(t *testing.T) {
	srv := newTestServer(t)
	d := driver.New(driver.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	p := shard.NewPartition("resubscribed", 0, d.Shard(), storage.NewMemLog(1<<20), shard.SyncPolicy{Mode: shard.SyncNever})
	pool := newReplayPool(2)
	out := outbox.NewOutbox(1<<20, 1, idleFlusher{})

	// The shard is not running: the first replay waits for its join.
	var first, second atomic.Bool
	j1 := srv.newReplay(out, p, 0, &first)
	j1.done = make(chan struct{})
	pool.start(j1)
	require.Eventually(t, func() bool { return d.InboxLen() == 1 }, 30*time.Second, time.Millisecond,
		"the first replay waits for its join")
	// Unsubscribed as a session does it (session.unsubscribe): cancelled,
	// then removed from the partition.
	first.Store(true)
	require.NoError(t, p.Unsubscribe(out, nil))
	j2 := srv.newReplay(out, p, 0, &second)
	j2.done = make(chan struct{})
	pool.start(j2)
	require.Eventually(t, func() bool { return d.InboxLen() == 3 }, 30*time.Second, time.Millisecond,
		"the second replay waits for its join")

	d.Start()
	t.Cleanup(d.Stop)
	for _, done := range []chan struct{}{j1.done, j2.done} {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("a replay did not end")
		}
	}
	// A join from here goes through the shard after anything the replays
	// queued, and counts itself.
	barrier := make(chan struct{})
	require.NoError(t, p.CatchUp(outbox.NewOutbox(1<<20, 1, idleFlusher{}), 0, nil, func(int64, bool) { close(barrier) }))
	d.Wake()
	<-barrier
	require.Equal(t, 2, p.Subscribers(), "live: the second subscription, and the barrier")
}

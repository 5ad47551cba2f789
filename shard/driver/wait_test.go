package driver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
)

// wakeLog records each waiter's wake-up.
type wakeLog chan wakeUp

type wakeUp struct {
	id  int
	end int64
	ok  bool
}

type idWaker struct {
	id  int
	log wakeLog
}

func (w idWaker) Woken(end int64, ok bool) { w.log <- wakeUp{w.id, end, ok} }

func (l wakeLog) next(t *testing.T) wakeUp {
	t.Helper()
	select {
	case u := <-l:
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no waiter was woken")
		return wakeUp{}
	}
}

// TestWaitersAreWithdrawnWokenAndDropped: a withdrawn waiter is gone at
// once and never woken; the rest are woken, each once, by new data or by a
// delete; withdrawing a woken waiter is harmless.
func TestWaitersAreWithdrawnWokenAndDropped(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	p := memPartition(t, "w", s)
	log := make(wakeLog, 16)
	ws := make([]*shard.Waiter, 4)
	for i := range ws {
		ws[i] = &shard.Waiter{Waker: idWaker{i, log}}
		require.NoError(t, p.Wait(ws[i], 0))
	}
	s.Wake()
	require.Eventually(t, func() bool { return p.Waiters() == 4 }, 30*time.Second, time.Millisecond)

	require.NoError(t, p.Unwait(ws[0]))
	require.NoError(t, p.Unwait(ws[2]))
	require.NoError(t, p.Unwait(ws[2]))
	s.Wake()
	require.Eventually(t, func() bool { return p.Waiters() == 2 }, 30*time.Second, time.Millisecond)

	var k kicks
	b, off := deliverBuf(t, "w", 1)
	require.NoError(t, p.Publish(outbox.NewOutbox(1<<20, 1, &k), 1, b, off))
	s.Wake()
	got := map[int]wakeUp{}
	for range 2 {
		u := log.next(t)
		got[u.id] = u
	}
	require.Equal(t, map[int]wakeUp{1: {1, 1, true}, 3: {3, 1, true}}, got)
	require.Zero(t, p.Waiters())
	require.NoError(t, p.Unwait(ws[1]), "withdrawing a woken waiter is a no-op")

	// Data already past the offset: woken at once, never registered.
	require.NoError(t, p.Wait(ws[0], 0))
	s.Wake()
	require.Equal(t, wakeUp{0, 1, true}, log.next(t))

	// A delete wakes the rest with ok false, and later waits at once.
	require.NoError(t, p.Wait(ws[2], 1))
	s.Wake()
	require.Eventually(t, func() bool { return p.Waiters() == 1 }, 30*time.Second, time.Millisecond)
	require.NoError(t, p.Delete(nil))
	s.Wake()
	require.Equal(t, wakeUp{2, -1, false}, log.next(t))
	require.NoError(t, p.Wait(ws[3], 1))
	s.Wake()
	require.Equal(t, wakeUp{3, -1, false}, log.next(t))
	require.Zero(t, p.Waiters())
	require.Empty(t, log, "every waiter was woken once")
}

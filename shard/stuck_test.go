package shard

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// stalled judges any stall stuck at once.
var stalled = stall{quiet: 1, stuck: 1}

// stallFor has o's writer report that the network layer holds 100 bytes
// and, as far as the writer saw, has taken none of them for d: the reader
// stopped d ago. The writer's clock is moved rather than waited for.
func stallFor(o *Outbox, d time.Duration) {
	pend, _ := o.Take()
	o.Done(pend, 100)
	o.mu.Lock()
	o.stalledSince -= int64(d)
	o.mu.Unlock()
}

// stuckSub subscribes an outbox of limit bytes to p whose network layer
// has held a backlog and taken none of it for d: a reader that stopped.
func stuckSub(t *testing.T, s *Shard, p *Partition, limit int, f Flusher, d time.Duration) *Outbox {
	t.Helper()
	sub := NewOutbox(limit, 1, f)
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.NoError(t, <-done)
	stallFor(sub, d)
	return sub
}

// TestStuckSubscriberHoldsNoAcks: a subscriber past its soft limit whose
// socket has taken nothing for StuckAfter does not hold its producer's
// acks, however long MaxAckDelay is; it keeps what was delivered to it.
func TestStuckSubscriberHoldsNoAcks(t *testing.T) {
	s := startShard(t, Config{Shards: 1, MaxAckDelay: time.Hour, SlowConsumerTimeout: time.Hour})
	p := memPartition(t, "t", s)
	var k, subKicks kicks
	prod := NewOutbox(1<<20, 1, &k)
	sub := stuckSub(t, s, p, 16<<10, &subKicks, s.cfg.StuckAfter) // soft limit: 4 KiB

	const batches = 5
	for corr := range uint32(batches) {
		b, off := deliverBuf(t, "t", 200) // about 1.2 KiB
		require.NoError(t, p.Publish(prod, corr, b, off))
		s.Wake()
		// Held, the ack would wait an hour: the bound of waitQueued fails the test first.
		waitQueued(t, prod, int(corr+1)*wire.PublishAckSize)
	}
	require.Len(t, frames(t, prod), batches)
	over, _ := sub.Pressure()
	require.True(t, over, "the stuck subscriber is past its soft limit")
	require.Greater(t, sub.Queued(), 5<<10, "it keeps what was delivered, within its limit")
	require.Equal(t, NotSlow, sub.SlowReason())
	require.Equal(t, 1, p.Subscribers())
}

// TestStuckSubscriberCutWithoutHeldAcks: a stuck subscriber past its soft
// limit is disconnected at the slow-consumer timeout even though no ack is
// held for it and nothing more is published.
func TestStuckSubscriberCutWithoutHeldAcks(t *testing.T) {
	s := startShard(t, Config{Shards: 1, MaxAckDelay: time.Millisecond, SlowConsumerTimeout: 50 * time.Millisecond})
	p := memPartition(t, "t", s)
	var k, subKicks kicks
	prod := NewOutbox(1<<20, 1, &k)
	sub := stuckSub(t, s, p, 4<<10, &subKicks, 0)
	b, off := deliverBuf(t, "t", 200)
	require.NoError(t, p.Publish(prod, 1, b, off))
	s.Wake()
	waitQueued(t, prod, wire.PublishAckSize) // no ack is held from here on
	require.Eventually(t, func() bool { return sub.SlowReason() == SlowTimeout }, 10*time.Second, time.Millisecond,
		"cut at the timeout by the shard's watch")
	_, slow := sub.Take()
	require.True(t, slow, "its writer closes the connection")
}

// TestParkedOutboxHoldsBackUntilProgress: a parked outbox that a shard
// watches gives its writer nothing while the network layer takes nothing,
// and gets everything written, in order, once it takes a byte.
func TestParkedOutboxHoldsBackUntilProgress(t *testing.T) {
	var k kicks
	o := NewOutbox(1<<20, 1, &k)
	stallFor(o, 1)
	small, large := storage.NewBuf(100), storage.NewBuf(8<<10)
	defer small.Release()
	defer large.Release()
	small.B[0], large.B[0] = 1, 2
	now := clock() + 1
	require.Equal(t, SentQuiet, o.deliver(small, small.B, now, stalled, nil, 0))
	require.Equal(t, int32(2), small.Refs(), "a parked outbox references even small frames")
	o.watch(1)
	require.Equal(t, SentQuiet, o.deliver(large, large.B, now, stalled, nil, 0))
	require.True(t, o.SendCopy([]byte{3}))

	pend, slow := o.Take()
	require.False(t, slow)
	require.Empty(t, pend.IOV, "nothing is handed over while the reader is stopped")
	o.Done(pend, 100)
	require.Zero(t, k.n.Load(), "no progress, no new flush")

	pend, _ = o.Take()
	o.Done(pend, 40) // the reader took 60 bytes
	require.Equal(t, int64(1), k.n.Load(), "progress gets the held frames written")
	pend, _ = o.Take()
	require.Len(t, pend.IOV, 3)
	require.Equal(t, []byte{1, 2, 3}, []byte{pend.IOV[0][0], pend.IOV[1][0], pend.IOV[2][0]})
	o.Done(pend, 0)
	require.Equal(t, int32(1), small.Refs(), "written frames are released")
	require.Equal(t, int32(1), large.Refs())
}

// TestParkedOutboxWithoutWatcherHoldsNothingBack: frames are held back only
// while a shard watches the outbox; otherwise nothing would ask for them
// again once the reader resumes.
func TestParkedOutboxWithoutWatcherHoldsNothingBack(t *testing.T) {
	var k kicks
	o := NewOutbox(1<<20, 1, &k)
	stallFor(o, 1)
	b := storage.NewBuf(100)
	defer b.Release()
	require.Equal(t, SentQuiet, o.deliver(b, b.B, clock()+1, stalled, nil, 0))
	pend, _ := o.Take()
	require.Len(t, pend.IOV, 1)
	o.Done(pend, 200)
}

// TestParkedOutboxManyFrames: frames queued while parked span many blocks
// and come out whole and in order; cutting such an outbox releases them.
func TestParkedOutboxManyFrames(t *testing.T) {
	var k kicks
	o := NewOutbox(1<<30, 1, &k)
	o.watch(1)
	const n = 2 * releaseAsideBlocks * blockFrames
	bufs := make([]*storage.Buf, n)
	for i := range bufs {
		bufs[i] = storage.NewBuf(8)
		bufs[i].B[0] = byte(i)
	}
	stallFor(o, 1)
	for _, b := range bufs {
		require.Equal(t, SentQuiet, o.deliver(b, b.B, clock()+1, stalled, nil, 0))
	}
	pend, _ := o.Take()
	require.Empty(t, pend.IOV)
	o.Done(pend, 0) // the reader drained everything
	pend, _ = o.Take()
	require.Len(t, pend.IOV, n)
	for i, iov := range pend.IOV {
		require.Equal(t, byte(i), iov[0])
	}
	o.Done(pend, 0)

	stallFor(o, 1)
	for _, b := range bufs {
		require.Equal(t, SentQuiet, o.deliver(b, b.B, clock()+1, stalled, nil, 0))
	}
	o.MarkSlow()
	require.Eventually(t, func() bool { return bufs[n-1].Refs() == 1 }, 10*time.Second, time.Millisecond,
		"a cut outbox lets go of what it held")
	for _, b := range bufs {
		require.Equal(t, int32(1), b.Refs())
		b.Release()
	}
}

// TestBudgetCutsFurthestBehindFirst: past the broker-wide bound, the
// outboxes holding the most are cut until the total is within it; the
// others stay, and the total returns to zero when they close.
func TestBudgetCutsFurthestBehindFirst(t *testing.T) {
	b := NewBudget(10 << 10)
	var ka, kb, kc kicks
	a, bb, c := b.NewOutbox(8<<10, 1, &ka), b.NewOutbox(8<<10, 1, &kb), b.NewOutbox(8<<10, 1, &kc)
	require.True(t, a.SendCopy(make([]byte, 3<<10)))
	require.True(t, bb.SendCopy(make([]byte, 5<<10)))
	require.True(t, c.SendCopy(make([]byte, 1<<10)))
	require.Equal(t, int64(9<<10), b.Total())
	require.Equal(t, NotSlow, bb.SlowReason(), "within the bound")

	require.True(t, c.SendCopy(make([]byte, 2<<10))) // 11 KiB: past it
	require.Eventually(t, func() bool { return bb.SlowReason() == SlowBudget }, 10*time.Second, time.Millisecond)
	require.Equal(t, int64(1), kb.n.Load(), "its writer is kicked to close the connection")
	require.Equal(t, int64(6<<10), b.Total())
	require.Equal(t, NotSlow, a.SlowReason())
	require.Equal(t, NotSlow, c.SlowReason())

	// What the network layer holds counts too, until the connection closes.
	pend, _ := a.Take()
	a.Done(pend, 2<<10)
	require.Equal(t, int64(5<<10), b.Total())
	for _, o := range []*Outbox{a, bb, c} {
		o.Close()
	}
	require.Zero(t, b.Total())
}

// TestQuietSubscriberIsWatchedNotKicked: once a subscriber's socket has
// taken nothing for a couple of watch ticks, deliveries no longer kick its
// writer (each kick would only copy the frame into a backlog that does not
// move) and it is parked; the watch tick asks its writer, which gets the
// frames written as soon as the socket takes bytes, and any progress makes
// it an ordinary subscriber again. The shard is driven by hand, its clock
// moved forward rather than waited for.
func TestQuietSubscriberIsWatchedNotKicked(t *testing.T) {
	s := New(Config{Shards: 1, StuckAfter: time.Hour})
	p := NewPartition("t", 0, s, storage.NewMemLog(1<<20), SyncPolicy{Mode: SyncNever})
	defer func() { _ = p.Log.Close() }()
	var k kicks
	sub := NewOutbox(1<<20, 1, &k)
	defer sub.Close()
	p.addSub(sub)
	b, _ := deliverBuf(t, "t", 1)
	defer b.Release()
	fan := func(at int64) {
		s.pass++
		s.now = at
		s.touched = s.touched[:0]
		s.fanOut(p, b, 0, 1)
	}

	stallFor(sub, 0) // the socket is full and takes nothing
	fan(clock())
	require.Equal(t, []*Outbox{sub}, s.touched, "kicked while it may still be draining")
	stallFor(sub, time.Duration(s.cfg.stall.quiet)) // as seen after a while
	fan(clock())
	require.Empty(t, s.touched, "quiet: not kicked")
	require.Equal(t, []*Outbox{sub}, s.watch)

	s.checkWatched()
	require.Equal(t, int64(1), k.n.Load(), "the watch tick asks its writer")
	pend, _ := sub.Take()
	require.Empty(t, pend.IOV, "parked: nothing is handed to a socket that takes nothing")
	sub.Done(pend, 50) // the socket took bytes
	require.Equal(t, int64(2), k.n.Load(), "progress gets the frames written")
	pend, _ = sub.Take()
	require.Len(t, pend.IOV, 1, "the frame queued while parked")
	sub.Done(pend, 50)
	fan(clock())
	require.Equal(t, []*Outbox{sub}, s.touched, "progress: kicked again")
}

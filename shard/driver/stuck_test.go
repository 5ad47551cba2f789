package driver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// stallFor has o's writer report that the network layer holds 100 bytes
// and, as far as the writer saw, has taken none of them for d: the reader
// stopped d ago. The writer's clock is moved rather than waited for.
func stallFor(o *outbox.Outbox, d time.Duration) {
	pend, _ := o.Take()
	o.Done(pend, 100)
	o.Backdate(d)
}

// stuckSub subscribes an outbox of limit bytes to p whose network layer
// has held a backlog and taken none of it for d: a reader that stopped.
func stuckSub(t *testing.T, s *Driver, p *shard.Partition, limit int, f outbox.Flusher, d time.Duration) *outbox.Outbox {
	t.Helper()
	sub := outbox.NewOutbox(limit, 1, f)
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, shard.NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.NoError(t, <-done)
	stallFor(sub, d)
	return sub
}

// TestStuckSubscriberHoldsNoAcks: a subscriber past its soft limit whose
// socket has taken nothing for StuckAfter does not hold its producer's
// acks, however long MaxAckDelay is; it keeps what was delivered to it.
func TestStuckSubscriberHoldsNoAcks(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1, MaxAckDelay: time.Hour, SlowConsumerTimeout: time.Hour})
	p := memPartition(t, "t", s)
	var k, subKicks kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	sub := stuckSub(t, s, p, 16<<10, &subKicks, s.Shard().Config().StuckAfter) // soft limit: 4 KiB

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
	require.Equal(t, outbox.NotSlow, sub.SlowReason())
	require.Equal(t, 1, p.Subscribers())
}

// TestStuckSubscriberCutWithoutHeldAcks: a stuck subscriber past its soft
// limit is disconnected at the slow-consumer timeout even though no ack is
// held for it and nothing more is published.
func TestStuckSubscriberCutWithoutHeldAcks(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1, MaxAckDelay: time.Millisecond, SlowConsumerTimeout: 50 * time.Millisecond})
	p := memPartition(t, "t", s)
	var k, subKicks kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	sub := stuckSub(t, s, p, 4<<10, &subKicks, 0)
	b, off := deliverBuf(t, "t", 200)
	require.NoError(t, p.Publish(prod, 1, b, off))
	s.Wake()
	waitQueued(t, prod, wire.PublishAckSize) // no ack is held from here on
	require.Eventually(t, func() bool { return sub.SlowReason() == outbox.SlowTimeout }, 10*time.Second, time.Millisecond,
		"cut at the timeout by the shard's watch")
	_, slow := sub.Take()
	require.True(t, slow, "its writer closes the connection")
}

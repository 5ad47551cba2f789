package driver

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// kicks counts ScheduleFlush calls; tests drain outboxes themselves.
type kicks struct{ n atomic.Int64 }

func (k *kicks) ScheduleFlush() { k.n.Add(1) }
func (k *kicks) Owner() any     { return k }
func (k *kicks) FlushNow()      { k.n.Add(1) }

func startShard(t *testing.T, cfg shard.Config) *Driver {
	t.Helper()
	s := New(Config{Shard: cfg})
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// deliverBuf builds a Deliver frame of n records, as the engine would hand
// it to a shard, and returns it with the batch offset.
func deliverBuf(t *testing.T, topic string, n int) (*storage.Buf, int) {
	t.Helper()
	frame, start := wire.StartFrame(nil, wire.TypeDeliver, 0, 0)
	frame = wire.AppendBatchPrefix(frame, topic, 0)
	off := len(frame)
	var bb wire.BatchBuilder
	bb.Start(frame, -1, -1)
	for i := range n {
		bb.Append(int64(i), nil, []byte("v"), nil)
	}
	frame = bb.Finish()
	wire.FinishFrame(frame, start)
	b := storage.NewBuf(len(frame))
	copy(b.B, frame)
	return b, off
}

// frames takes everything queued in an outbox and decodes it.
func frames(t *testing.T, o *outbox.Outbox) []wire.Frame {
	t.Helper()
	p, _ := o.Take()
	var all []byte
	for _, b := range p.IOV {
		all = append(all, b...)
	}
	o.Done(p, 0)
	var out []wire.Frame
	for len(all) > 0 {
		f, n, err := wire.ReadFrame(all, 1<<30)
		require.NoError(t, err)
		require.NotZero(t, n)
		f.Body = append([]byte(nil), f.Body...)
		out = append(out, f)
		all = all[n:]
	}
	return out
}

func waitQueued(t *testing.T, o *outbox.Outbox, min int) {
	t.Helper()
	require.Eventually(t, func() bool { return o.Queued() >= min }, 30*time.Second, time.Millisecond)
}

func TestPublishStampsOffsetsAcksAndFansOut(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	p := memPartition(t, "t", s)
	var k kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	subs := []*outbox.Outbox{outbox.NewOutbox(1<<20, 1, &k), outbox.NewOutbox(1<<20, 1, &k)}
	done := make(chan error, 1)
	j := shard.NewJoin(len(subs), func(err error) { done <- err })
	for _, o := range subs {
		require.NoError(t, p.Subscribe(o, j))
		s.Wake()
	}
	require.NoError(t, <-done)

	for i, n := range []int{3, 5} {
		b, off := deliverBuf(t, "t", n)
		require.NoError(t, p.Publish(prod, uint32(10+i), b, off))
		s.Wake()
	}
	waitQueued(t, prod, 2*wire.PublishAckSize)
	acks := frames(t, prod)
	require.Len(t, acks, 2)
	for i, want := range []wire.PublishAck{{Partition: 0, BaseOffset: 0, Count: 3}, {Partition: 0, BaseOffset: 3, Count: 5}} {
		require.Equal(t, wire.TypePublishAck, acks[i].Type)
		require.Equal(t, uint32(10+i), acks[i].Corr)
		got, err := wire.DecodePublishAck(acks[i].Body)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	for _, o := range subs {
		waitQueued(t, o, 1)
		ds := frames(t, o)
		require.Len(t, ds, 2)
		var offsets []int64
		for _, d := range ds {
			v, err := wire.DecodeBatchView(d.Body)
			require.NoError(t, err)
			_, err = wire.CheckBatch(v.Batch, 1<<20, wire.DefaultMaxFrameBytes)
			require.NoError(t, err, "stamping kept the CRC valid")
			offsets = append(offsets, v.Batch.BaseOffset())
		}
		require.Equal(t, []int64{0, 3}, offsets)
	}
	require.Equal(t, int64(8), p.EndOffset())
	require.Equal(t, 2, p.Subscribers())
	require.Positive(t, k.n.Load(), "touched outboxes were kicked")
	var read []int64
	require.NoError(t, p.Log.Read(0, 1<<20, func(b wire.Batch) bool { read = append(read, b.BaseOffset()); return true }))
	require.Equal(t, []int64{0, 3}, read, "the memory log holds both batches")
	require.NoError(t, p.Log.Close())
	require.Eventually(t, func() bool { return storage.LiveBufs() == 0 }, time.Second, time.Millisecond,
		"the log's references were the last")
}

// TestRunInlineWritesOwnLoopAtOnce: a shard run inline by an event loop
// writes the outboxes of that loop's connections itself and schedules the
// others.
func TestRunInlineWritesOwnLoopAtOnce(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	p := memPartition(t, "t", s)
	mine, other := &ownedFlusher{owner: "loop-1"}, &ownedFlusher{owner: "loop-2"}
	prodOut := outbox.NewOutbox(1<<20, 1, mine)
	subOut := outbox.NewOutbox(1<<20, 1, other)
	mine.o, other.o = prodOut, subOut
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(subOut, shard.NewJoin(1, func(err error) { done <- err })))
	s.RunInline("loop-1")
	require.NoError(t, <-done)
	b, off := deliverBuf(t, "t", 2)
	require.NoError(t, p.Publish(prodOut, 1, b, off))
	s.RunInline("loop-1")
	require.Equal(t, int64(1), mine.now.Load(), "the ack was written inline")
	require.Zero(t, mine.scheduled.Load())
	require.Equal(t, int64(1), other.scheduled.Load(), "the other loop's subscriber got a scheduled flush")
	require.Zero(t, other.now.Load())
}

type ownedFlusher struct {
	owner          string
	o              *outbox.Outbox
	now, scheduled atomic.Int64
}

func (f *ownedFlusher) ScheduleFlush() { f.scheduled.Add(1) }
func (f *ownedFlusher) Owner() any     { return f.owner }
func (f *ownedFlusher) FlushNow() {
	f.now.Add(1)
	p, _ := f.o.Take()
	f.o.Done(p, 0)
}

func TestDeletedPartitionRefusesPublish(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1})
	p := memPartition(t, "gone", s)
	var k kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	require.NoError(t, p.Delete(nil))
	s.Wake()
	b, off := deliverBuf(t, "gone", 1)
	require.NoError(t, p.Publish(prod, 7, b, off))
	s.Wake()
	waitQueued(t, prod, 1)
	fs := frames(t, prod)
	require.Len(t, fs, 1)
	require.Equal(t, wire.TypeError, fs[0].Type)
	e, err := wire.DecodeError(fs[0].Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeUnknownTopic, e.Code)
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(outbox.NewOutbox(1<<20, 1, &k), shard.NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.ErrorIs(t, <-done, wire.ErrUnknownTopic)
}

// TestHeldAcksUntilSubscriberDrains: an ack is held while a subscriber is
// past its soft limit, and released when it drains.
func TestHeldAcksUntilSubscriberDrains(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1, MaxAckDelay: time.Hour, SlowConsumerTimeout: time.Hour})
	p := memPartition(t, "t", s)
	var k kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	sub := outbox.NewOutbox(4<<10, 1, &k) // soft limit: 1 KiB
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, shard.NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.NoError(t, <-done)

	b, off := deliverBuf(t, "t", 200) // about 1.2 KiB: past the soft limit
	require.NoError(t, p.Publish(prod, 1, b, off))
	s.Wake()
	waitQueued(t, sub, 1)
	// The shard polls held acks every millisecond: let it look at them a
	// few times, each of which could have released the ack and did not.
	from := s.Shard().HeldChecks()
	require.Eventually(t, func() bool { return s.Shard().HeldChecks() >= from+5 }, 30*time.Second, time.Millisecond)
	require.Zero(t, prod.Queued(), "the ack is held while the subscriber is behind")

	frames(t, sub) // the subscriber's writer drains it
	waitQueued(t, prod, wire.PublishAckSize)
	require.Len(t, frames(t, prod), 1)
}

// TestHeldAckReleasedAfterMaxDelay and the stuck subscriber is dropped
// after the slow-consumer timeout.
func TestHeldAckBoundsAndSlowTimeout(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1, MaxAckDelay: 30 * time.Millisecond, SlowConsumerTimeout: 200 * time.Millisecond})
	p := memPartition(t, "t", s)
	var k kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	sub := outbox.NewOutbox(4<<10, 1, &k)
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, shard.NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.NoError(t, <-done)
	b, off := deliverBuf(t, "t", 200)
	start := time.Now()
	require.NoError(t, p.Publish(prod, 1, b, off))
	s.Wake()
	waitQueued(t, prod, wire.PublishAckSize)
	require.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond, "held until the max ack delay")

	// Keep publishing while the subscriber never drains: it is dropped.
	require.Eventually(t, func() bool {
		b, off := deliverBuf(t, "t", 1)
		_ = p.Publish(prod, 2, b, off)
		s.Wake()
		return p.Subscribers() == 0
	}, 5*time.Second, 10*time.Millisecond)
	_, slow := sub.Take()
	require.True(t, slow)
	require.Equal(t, outbox.SlowTimeout, sub.SlowReason())
}

// TestBusySubscriberIsNotTimedOut: a subscriber held above its soft limit
// by flow control, but still reading, is not taken for a stuck one.
func TestBusySubscriberIsNotTimedOut(t *testing.T) {
	s := startShard(t, shard.Config{Shards: 1, MaxAckDelay: 5 * time.Millisecond, SlowConsumerTimeout: 100 * time.Millisecond})
	p := memPartition(t, "t", s)
	var k kicks
	prod := outbox.NewOutbox(1<<20, 1, &k)
	sub := outbox.NewOutbox(64<<10, 1, &k) // soft limit: 16 KiB
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, shard.NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.NoError(t, <-done)
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		b, off := deliverBuf(t, "t", 200)
		require.NoError(t, p.Publish(prod, 1, b, off))
		s.Wake()
		time.Sleep(2 * time.Millisecond) // paces the producer in real time, against the real slow-consumer timeout under test
		// The writer hands everything to the socket, which takes some
		// but keeps a backlog above the soft limit: it drains a little
		// even when the writer had nothing new for it.
		pend, slow := sub.Take()
		require.False(t, slow)
		sub.Done(pend, 20<<10-i%2<<10)
	}
	require.Equal(t, 1, p.Subscribers(), "still subscribed after 5 timeouts of steady progress")
	frames(t, prod)
}

// TestStopWhileRunningInline: Stop returns even when an event loop holds
// the run token at the moment the shard goroutine is told to stop.
func TestStopWhileRunningInline(t *testing.T) {
	for range 200 {
		s := New(Config{})
		s.Start()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
					s.RunInline("loop")
				}
			}
		}()
		finished := make(chan struct{})
		go func() { s.Stop(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Fatal("Stop hung while another thread ran the shard inline")
		}
		close(stop)
		<-done
	}
}

// memPartition is a partition of a non-durable topic: a memory log, acks
// as soon as subscribers allow. When the test ends the shard stops and the
// log is closed, so the buffers it holds are released before the next
// test counts live buffers.
func memPartition(t *testing.T, topic string, s *Driver) *shard.Partition {
	p := shard.NewPartition(topic, 0, s.Shard(), storage.NewMemLog(64<<20), shard.SyncPolicy{Mode: shard.SyncNever})
	t.Cleanup(func() {
		s.Stop()
		_ = p.Log.Close()
	})
	return p
}

package shard

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// kicks counts ScheduleFlush calls; tests drain outboxes themselves.
type kicks struct{ n atomic.Int64 }

func (k *kicks) ScheduleFlush() { k.n.Add(1) }
func (k *kicks) Owner() any     { return k }
func (k *kicks) FlushNow()      { k.n.Add(1) }

func startShard(t *testing.T, cfg Config) *Shard {
	t.Helper()
	s := New(cfg)
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
func frames(t *testing.T, o *Outbox) []wire.Frame {
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

func waitQueued(t *testing.T, o *Outbox, min int) {
	t.Helper()
	require.Eventually(t, func() bool { return o.Queued() >= min }, 30*time.Second, time.Millisecond)
}

func TestPublishStampsOffsetsAcksAndFansOut(t *testing.T) {
	s := startShard(t, Config{Shards: 1})
	p := memPartition(t, "t", s)
	var k kicks
	prod := NewOutbox(1<<20, 1, &k)
	subs := []*Outbox{NewOutbox(1<<20, 1, &k), NewOutbox(1<<20, 1, &k)}
	done := make(chan error, 1)
	j := NewJoin(len(subs), func(err error) { done <- err })
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
			_, err = wire.CheckBatch(v.Batch, 1<<20)
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
	s := startShard(t, Config{Shards: 1})
	p := memPartition(t, "t", s)
	mine, other := &ownedFlusher{owner: "loop-1"}, &ownedFlusher{owner: "loop-2"}
	prodOut := NewOutbox(1<<20, 1, mine)
	subOut := NewOutbox(1<<20, 1, other)
	mine.o, other.o = prodOut, subOut
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(subOut, NewJoin(1, func(err error) { done <- err })))
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
	o              *Outbox
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
	s := startShard(t, Config{Shards: 1})
	p := memPartition(t, "gone", s)
	var k kicks
	prod := NewOutbox(1<<20, 1, &k)
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
	require.NoError(t, p.Subscribe(NewOutbox(1<<20, 1, &k), NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.ErrorIs(t, <-done, wire.ErrUnknownTopic)
}

// TestHeldAcksUntilSubscriberDrains: an ack is held while a subscriber is
// past its soft limit, and released when it drains.
func TestHeldAcksUntilSubscriberDrains(t *testing.T) {
	s := startShard(t, Config{Shards: 1, MaxAckDelay: time.Hour, SlowConsumerTimeout: time.Hour})
	p := memPartition(t, "t", s)
	var k kicks
	prod := NewOutbox(1<<20, 1, &k)
	sub := NewOutbox(4<<10, 1, &k) // soft limit: 1 KiB
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, NewJoin(1, func(err error) { done <- err })))
	s.Wake()
	require.NoError(t, <-done)

	b, off := deliverBuf(t, "t", 200) // about 1.2 KiB: past the soft limit
	require.NoError(t, p.Publish(prod, 1, b, off))
	s.Wake()
	waitQueued(t, sub, 1)
	// The shard polls held acks every millisecond: let it look at them a
	// few times, each of which could have released the ack and did not.
	from := s.heldChecks.Load()
	require.Eventually(t, func() bool { return s.heldChecks.Load() >= from+5 }, 30*time.Second, time.Millisecond)
	require.Zero(t, prod.Queued(), "the ack is held while the subscriber is behind")

	frames(t, sub) // the subscriber's writer drains it
	waitQueued(t, prod, wire.PublishAckSize)
	require.Len(t, frames(t, prod), 1)
}

// TestHeldAckReleasedAfterMaxDelay and the stuck subscriber is dropped
// after the slow-consumer timeout.
func TestHeldAckBoundsAndSlowTimeout(t *testing.T) {
	s := startShard(t, Config{Shards: 1, MaxAckDelay: 30 * time.Millisecond, SlowConsumerTimeout: 200 * time.Millisecond})
	p := memPartition(t, "t", s)
	var k kicks
	prod := NewOutbox(1<<20, 1, &k)
	sub := NewOutbox(4<<10, 1, &k)
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, NewJoin(1, func(err error) { done <- err })))
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
	require.Equal(t, SlowTimeout, sub.SlowReason())
}

func TestOutboxHardLimitMakesSlowConsumer(t *testing.T) {
	var k kicks
	o := NewOutbox(1000, 1, &k)
	b := storage.NewBuf(600)
	defer b.Release()
	require.Equal(t, SentUnderPressure, o.SendRef(b, b.B, 1))
	require.Equal(t, Refused, o.SendRef(b, b.B, 1), "past the hard limit")
	require.Equal(t, Refused, o.SendRef(b, b.B, 1), "refused from then on")
	require.Zero(t, o.Queued(), "what it held was dropped")
	o.Kick()
	require.Equal(t, int64(1), k.n.Load(), "a slow outbox is kicked so its writer closes it")
	_, slow := o.Take()
	require.True(t, slow)
	require.Equal(t, SlowLimit, o.SlowReason())
}

func TestOutboxCoalescesSmallAndReferencesLarge(t *testing.T) {
	var k kicks
	o := NewOutbox(1<<20, 1, &k)
	small := storage.NewBuf(100)
	large := storage.NewBuf(8 << 10)
	for range 3 {
		require.Equal(t, Sent, o.SendRef(small, small.B, 1))
	}
	require.Equal(t, Sent, o.SendRef(large, large.B, 1))
	require.True(t, o.SendCopy([]byte("ack")))
	p, _ := o.Take()
	require.Len(t, p.IOV, 3, "small frames share one iovec; the large one is by reference")
	require.Equal(t, 300, len(p.IOV[0]))
	require.Equal(t, int32(2), large.Refs(), "referenced, not copied")
	o.Done(p, 0)
	require.Equal(t, int32(1), large.Refs())
	small.Release()
	large.Release()
}

// TestBusySubscriberIsNotTimedOut: a subscriber held above its soft limit
// by flow control, but still reading, is not taken for a stuck one.
func TestBusySubscriberIsNotTimedOut(t *testing.T) {
	s := startShard(t, Config{Shards: 1, MaxAckDelay: 5 * time.Millisecond, SlowConsumerTimeout: 100 * time.Millisecond})
	p := memPartition(t, "t", s)
	var k kicks
	prod := NewOutbox(1<<20, 1, &k)
	sub := NewOutbox(64<<10, 1, &k) // soft limit: 16 KiB
	done := make(chan error, 1)
	require.NoError(t, p.Subscribe(sub, NewJoin(1, func(err error) { done <- err })))
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

// TestPressureWithoutCrossingStartsNow: an outbox found over its soft limit
// through its backlog alone is not treated as over since the clock's epoch.
func TestPressureWithoutCrossingStartsNow(t *testing.T) {
	var k kicks
	o := NewOutbox(4000, 1, &k)
	p, _ := o.Take()
	o.Done(p, 2000) // the socket holds 2000 bytes: past the 1000-byte soft limit
	over, since := o.Pressure()
	require.True(t, over)
	require.InDelta(t, float64(clock()), float64(since), float64(time.Second))
}

// TestStopWhileRunningInline: Stop returns even when an event loop holds
// the run token at the moment the shard goroutine is told to stop.
func TestStopWhileRunningInline(t *testing.T) {
	for range 200 {
		s := New(Config{Shards: 1})
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
func memPartition(t *testing.T, topic string, s *Shard) *Partition {
	p := NewPartition(topic, 0, s, storage.NewMemLog(64<<20), SyncPolicy{Mode: SyncNever})
	t.Cleanup(func() {
		s.Stop()
		_ = p.Log.Close()
	})
	return p
}

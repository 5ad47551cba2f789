package outbox

import (
	"errors"
	"strings"
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

// stalled judges any stall stuck at once.
var stalled = Stall{Quiet: 1, Stuck: 1}

// stallFor has o's writer report that the network layer holds 100 bytes
// and, as far as the writer saw, has taken none of them for d.
func stallFor(o *Outbox, d time.Duration) {
	pend, _ := o.Take()
	o.Done(pend, 100)
	o.Backdate(d)
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
	now := Clock() + 1
	require.Equal(t, SentQuiet, o.Deliver(small, small.B, now, stalled, nil, 0))
	require.Equal(t, int32(2), small.Refs(), "a parked outbox references even small frames")
	o.Watch(0)
	require.Equal(t, SentQuiet, o.Deliver(large, large.B, now, stalled, nil, 0))
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
	require.Equal(t, SentQuiet, o.Deliver(b, b.B, Clock()+1, stalled, nil, 0))
	pend, _ := o.Take()
	require.Len(t, pend.IOV, 1)
	o.Done(pend, 200)
}

// TestParkedOutboxManyFrames: frames queued while parked span many blocks
// and come out whole and in order; cutting such an outbox releases them.
func TestParkedOutboxManyFrames(t *testing.T) {
	var k kicks
	o := NewOutbox(1<<30, 1, &k)
	o.Watch(0)
	const n = 2 * releaseAsideBlocks * blockFrames
	bufs := make([]*storage.Buf, n)
	for i := range bufs {
		bufs[i] = storage.NewBuf(8)
		bufs[i].B[0] = byte(i)
	}
	stallFor(o, 1)
	for _, b := range bufs {
		require.Equal(t, SentQuiet, o.Deliver(b, b.B, Clock()+1, stalled, nil, 0))
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
		require.Equal(t, SentQuiet, o.Deliver(b, b.B, Clock()+1, stalled, nil, 0))
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

// TestPressureWithoutCrossingStartsNow: an outbox found over its soft limit
// through its backlog alone is not treated as over since the clock's epoch.
func TestPressureWithoutCrossingStartsNow(t *testing.T) {
	var k kicks
	o := NewOutbox(4000, 1, &k)
	p, _ := o.Take()
	o.Done(p, 2000) // the socket holds 2000 bytes: past the 1000-byte soft limit
	over, since := o.Pressure()
	require.True(t, over)
	require.InDelta(t, float64(Clock()), float64(since), float64(time.Second))
}

// TestSendErrorAndDelivery: the frames every sender queues alike decode
// as the protocol says, an Error's message cut at MaxErrorMessage.
func TestSendErrorAndDelivery(t *testing.T) {
	var k kicks
	o := NewOutbox(1<<20, 1, &k)
	defer o.Close()
	long := strings.Repeat("x", 3000)
	o.SendError(7, wire.Errorf(wire.CodeStorageError, long))
	o.SendError(0, errors.New("plain"))
	var bb wire.BatchBuilder
	bb.Start(nil, -1, -1)
	bb.Append(1, nil, []byte("v"), nil)
	batch := wire.Batch(bb.Finish())
	prefix := wire.AppendBatchPrefix(nil, "t", 3)
	o.SendDelivery(prefix, batch)

	pend, _ := o.Take()
	var all []byte
	for _, b := range pend.IOV {
		all = append(all, b...)
	}
	o.Done(pend, 0)
	var frames []wire.Frame
	for len(all) > 0 {
		f, n, err := wire.ReadFrame(all, 1<<20)
		require.NoError(t, err)
		frames = append(frames, f)
		all = all[n:]
	}
	require.Len(t, frames, 3)
	e, err := wire.DecodeError(frames[0].Body)
	require.NoError(t, err)
	require.Equal(t, uint32(7), frames[0].Corr)
	require.Equal(t, wire.CodeStorageError, e.Code)
	require.Equal(t, long[:MaxErrorMessage], e.Message)
	e, err = wire.DecodeError(frames[1].Body)
	require.NoError(t, err)
	require.Equal(t, "plain", e.Message)
	v, err := wire.DecodeBatchView(frames[2].Body)
	require.NoError(t, err)
	require.Equal(t, "t", string(v.Topic))
	require.Equal(t, int32(3), v.Partition)
	require.Equal(t, []byte(batch), []byte(v.Batch))
}

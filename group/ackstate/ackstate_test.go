package ackstate

import (
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// TestAckStateModel drives a State with random deliveries, acks, nacks
// and expiries and compares it with a plain map model: the floor is the
// first unacked offset, unacked counts what is delivered and not acked,
// and every unacked message is either in flight or waiting for a retry.
func TestAckStateModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		start := rapid.Int64Range(0, 500).Draw(t, "start")
		a := New(start)
		acked := map[int64]bool{}
		now := int64(0)
		for range rapid.IntRange(1, 200).Draw(t, "steps") {
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 0: // deliver a batch
				n := rapid.Int64Range(1, 150).Draw(t, "n")
				a.Delivered(a.next, a.next+n, now+10)
			case 1: // ack a range
				if a.next == start {
					continue
				}
				from := rapid.Int64Range(start, a.next).Draw(t, "from")
				to := rapid.Int64Range(from, a.next+5).Draw(t, "to")
				before := a.unacked
				n := a.Ack(from, to)
				newly := 0
				for o := from; o < min(to, a.next); o++ {
					if !acked[o] {
						acked[o] = true
						newly++
					}
				}
				require.Equal(t, newly, n)
				require.Equal(t, before-n, a.unacked)
			case 2: // nack one
				if a.next == start {
					continue
				}
				o := rapid.Int64Range(start, a.next-1).Draw(t, "nack")
				require.Equal(t, !acked[o], a.Nack(o, 0, "r", now, []int64{3}))
			case 3: // time passes; expired and due messages are redelivered
				now += rapid.Int64Range(1, 20).Draw(t, "dt")
				a.Expire(now, nil)
				redo := map[uint32][]int64{}
				dead := a.Due(now, 1000, nil, redo)
				require.Empty(t, dead)
				for attempt, offs := range redo {
					for _, o := range offs {
						require.False(t, acked[o], "redelivery of acked %d", o)
					}
					a.Redelivered(offs, attempt, now+10)
				}
			case 4: // a new owner takes over
				a.Takeover(now)
			}
			// The model's view.
			floor := start
			for floor < a.next && acked[floor] {
				floor++
			}
			require.Equal(t, floor, a.floor)
			unacked := 0
			for o := start; o < a.next; o++ {
				require.Equal(t, acked[o], a.Acked(o), "offset %d", o)
				if !acked[o] {
					unacked++
				}
			}
			require.Equal(t, unacked, a.unacked)
		}
		// Eventually every unacked message comes back.
		pending := map[int64]bool{}
		for o := start; o < a.next; o++ {
			if !acked[o] {
				pending[o] = true
			}
		}
		for range 50 {
			now += 100
			a.Expire(now, nil)
			redo := map[uint32][]int64{}
			a.Due(now, 1000, nil, redo)
			for attempt, offs := range redo {
				for _, o := range offs {
					delete(pending, o)
				}
				a.Redelivered(offs, attempt, now+10)
			}
		}
		require.Empty(t, pending, "unacked messages never redelivered")
	})
}

func TestAckStateDeadAfterMaxDeliveries(t *testing.T) {
	a := New(0)
	a.Delivered(0, 3, 10)
	a.Ack(0, 1)
	a.Ack(2, 3)
	require.Equal(t, int64(1), a.floor)
	now := int64(0)
	var deliveries []uint32
	for range 10 {
		now += 11
		a.Expire(now, nil)
		redo := map[uint32][]int64{}
		dead := a.Due(now, 3, nil, redo)
		if len(dead) > 0 {
			require.Equal(t, []int64{1}, dead)
			break
		}
		for attempt, offs := range redo {
			require.Equal(t, []int64{1}, offs)
			deliveries = append(deliveries, attempt)
			a.Redelivered(offs, attempt, now+10)
		}
	}
	require.Equal(t, []uint32{2, 3}, deliveries)
	// A failed dead-letter write retries later; success acks it.
	a.DeadLetterFailed([]int64{1}, now+50)
	require.Equal(t, now+50, a.NextWake())
	require.Equal(t, 1, a.Ack(1, 2))
	require.Equal(t, int64(3), a.floor)
	require.Zero(t, a.unacked)
}

func TestAckStateSkipTo(t *testing.T) {
	a := New(10)
	a.Delivered(10, 200, 5)
	a.Ack(100, 150)
	require.Equal(t, 90, a.SkipTo(100), "offsets 10..99 were unacked")
	require.Equal(t, int64(150), a.floor)
	require.Equal(t, 50, a.SkipTo(500))
	require.Equal(t, int64(500), a.floor)
	require.Equal(t, int64(500), a.next)
	a.Delivered(500, 510, 5)
	require.Equal(t, 10, a.unacked)
	require.Equal(t, 0, a.SkipTo(400), "never backwards")
}

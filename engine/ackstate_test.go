package engine

import (
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// TestAckStateModel drives an ackState with random deliveries, acks, nacks
// and expiries and compares it with a plain map model: the floor is the
// first unacked offset, unacked counts what is delivered and not acked,
// and every unacked message is either in flight or waiting for a retry.
func TestAckStateModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		start := rapid.Int64Range(0, 500).Draw(t, "start")
		a := newAckState(start)
		acked := map[int64]bool{}
		now := int64(0)
		for range rapid.IntRange(1, 200).Draw(t, "steps") {
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 0: // deliver a batch
				n := rapid.Int64Range(1, 150).Draw(t, "n")
				a.delivered(a.next, a.next+n, now+10)
			case 1: // ack a range
				if a.next == start {
					continue
				}
				from := rapid.Int64Range(start, a.next).Draw(t, "from")
				to := rapid.Int64Range(from, a.next+5).Draw(t, "to")
				before := a.unacked
				n := a.ack(from, to)
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
				require.Equal(t, !acked[o], a.nack(o, 0, "r", now, []int64{3}))
			case 3: // time passes; expired and due messages are redelivered
				now += rapid.Int64Range(1, 20).Draw(t, "dt")
				a.expire(now, nil)
				redo := map[uint32][]int64{}
				dead := a.due(now, 1000, nil, redo)
				require.Empty(t, dead)
				for attempt, offs := range redo {
					for _, o := range offs {
						require.False(t, acked[o], "redelivery of acked %d", o)
					}
					a.redelivered(offs, attempt, now+10)
				}
			case 4: // a new owner takes over
				a.takeover(now)
			}
			// The model's view.
			floor := start
			for floor < a.next && acked[floor] {
				floor++
			}
			require.Equal(t, floor, a.floor)
			unacked := 0
			for o := start; o < a.next; o++ {
				require.Equal(t, acked[o], a.acked(o), "offset %d", o)
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
			a.expire(now, nil)
			redo := map[uint32][]int64{}
			a.due(now, 1000, nil, redo)
			for attempt, offs := range redo {
				for _, o := range offs {
					delete(pending, o)
				}
				a.redelivered(offs, attempt, now+10)
			}
		}
		require.Empty(t, pending, "unacked messages never redelivered")
	})
}

func TestAckStateDeadAfterMaxDeliveries(t *testing.T) {
	a := newAckState(0)
	a.delivered(0, 3, 10)
	a.ack(0, 1)
	a.ack(2, 3)
	require.Equal(t, int64(1), a.floor)
	now := int64(0)
	var deliveries []uint32
	for range 10 {
		now += 11
		a.expire(now, nil)
		redo := map[uint32][]int64{}
		dead := a.due(now, 3, nil, redo)
		if len(dead) > 0 {
			require.Equal(t, []int64{1}, dead)
			break
		}
		for attempt, offs := range redo {
			require.Equal(t, []int64{1}, offs)
			deliveries = append(deliveries, attempt)
			a.redelivered(offs, attempt, now+10)
		}
	}
	require.Equal(t, []uint32{2, 3}, deliveries)
	// A failed dead-letter write retries later; success acks it.
	a.deadLetterFailed([]int64{1}, now+50)
	require.Equal(t, now+50, a.nextWake())
	require.Equal(t, 1, a.ack(1, 2))
	require.Equal(t, int64(3), a.floor)
	require.Zero(t, a.unacked)
}

func TestAckStateSkipTo(t *testing.T) {
	a := newAckState(10)
	a.delivered(10, 200, 5)
	a.ack(100, 150)
	require.Equal(t, 90, a.skipTo(100), "offsets 10..99 were unacked")
	require.Equal(t, int64(150), a.floor)
	require.Equal(t, 50, a.skipTo(500))
	require.Equal(t, int64(500), a.floor)
	require.Equal(t, int64(500), a.next)
	a.delivered(500, 510, 5)
	require.Equal(t, 10, a.unacked)
	require.Equal(t, 0, a.skipTo(400), "never backwards")
}

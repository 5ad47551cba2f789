package transport

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memCluster attaches nodes 1..n to a network closed at the test's end.
func memCluster(t *testing.T, seed int64, n int) (*MemNetwork, map[uint64]Transport, map[uint64]*sink) {
	t.Helper()
	net := NewMemNetwork(seed)
	t.Cleanup(func() { _ = net.Close() })
	nodes, sinks := map[uint64]Transport{}, map[uint64]*sink{}
	for id := uint64(1); id <= uint64(n); id++ {
		sinks[id] = newSink()
		nodes[id] = net.Node(id, sinks[id].handle)
	}
	return net, nodes, sinks
}

func sendN(tr Transport, from, to uint64, start, n int) {
	for i := start; i < start+n; i++ {
		tr.Send(to, []Envelope{{Group: uint64(i % 5), Msg: testMsg(from, to, uint64(i), 8)}})
	}
}

// TestMemDelivers: without faults every message arrives once, in order,
// as a copy of what was sent, and in batches of a link.
func TestMemDelivers(t *testing.T) {
	noLeaks(t)
	net, nodes, sinks := memCluster(t, 1, 3)
	sent := testMsg(1, 2, 0, 8)
	nodes[1].Send(2, []Envelope{{Group: 4, Msg: sent}})
	sendN(nodes[1], 1, 2, 1, 99)
	sendN(nodes[3], 3, 2, 0, 50)
	net.Flush()
	got := sinks[2].from(1)
	require.Len(t, got, 100)
	for i, e := range got {
		require.Equal(t, uint64(i), e.Msg.Index)
	}
	require.True(t, msgEqual(sent, got[0].Msg))
	require.NotSame(t, &sent.Entries[0].Data[0], &got[0].Msg.Entries[0].Data[0], "the receiver gets a copy")
	require.Equal(t, 50, sinks[2].count(3))
	require.Equal(t, MemStats{Sent: 150, Delivered: 150}, net.Stats())

	// The messages of one Send are queued together, so they come in one
	// call whatever the dispatcher's pace.
	calls := sinks[3].callCount()
	envs := make([]Envelope, 20)
	for i := range envs {
		envs[i] = Envelope{Group: 1, Msg: testMsg(1, 3, uint64(i), 1)}
	}
	nodes[1].Send(3, envs)
	net.Flush()
	require.Equal(t, calls+1, sinks[3].callCount())
	require.Equal(t, 20, sinks[3].count(1))
	require.False(t, nodes[1].Unreachable(2))
	require.True(t, nodes[1].Unreachable(9))
}

// TestMemDropAll: with every message dropped nothing arrives.
func TestMemDropAll(t *testing.T) {
	noLeaks(t)
	net, nodes, sinks := memCluster(t, 1, 2)
	net.SetFaults(Faults{Drop: 1})
	sendN(nodes[1], 1, 2, 0, 100)
	sendN(nodes[2], 2, 1, 0, 100)
	net.Flush()
	require.Zero(t, sinks[1].total()+sinks[2].total())
	require.Equal(t, MemStats{Sent: 200, Dropped: 200}, net.Stats())
}

// TestMemPartitionHeal: partitions, isolation and cuts block what they
// should, both ways or one, until Heal.
func TestMemPartitionHeal(t *testing.T) {
	noLeaks(t)
	net, nodes, sinks := memCluster(t, 1, 4)
	// reach reports which of the links from->to deliver a message now.
	reach := func(links ...[2]uint64) []bool {
		before := map[[2]uint64]int{}
		for _, l := range links {
			before[l] = sinks[l[1]].count(l[0])
			nodes[l[0]].Send(l[1], []Envelope{{Group: 1, Msg: testMsg(l[0], l[1], 0, 1)}})
		}
		net.Flush()
		out := make([]bool, len(links))
		for i, l := range links {
			out[i] = sinks[l[1]].count(l[0]) > before[l]
			require.Equal(t, !out[i], nodes[l[0]].Unreachable(l[1]), "link %v", l)
		}
		return out
	}
	l := func(a, b uint64) [2]uint64 { return [2]uint64{a, b} }

	net.Partition([]uint64{1, 2}, []uint64{3}) // 4 is alone
	require.Equal(t, []bool{true, true, false, false, false, false},
		reach(l(1, 2), l(2, 1), l(1, 3), l(3, 1), l(4, 1), l(3, 4)))
	net.Heal()
	require.Equal(t, []bool{true, true, true}, reach(l(1, 3), l(3, 1), l(4, 1)))

	net.Isolate(2)
	require.Equal(t, []bool{false, false, true}, reach(l(1, 2), l(2, 3), l(1, 3)))
	net.Heal()

	net.Cut(1, 2)
	net.CutOneWay(3, 4)
	require.Equal(t, []bool{false, false, false, true, true}, reach(l(1, 2), l(2, 1), l(3, 4), l(4, 3), l(1, 3)))
	net.Heal()
	require.Equal(t, []bool{true, true, true}, reach(l(1, 2), l(2, 1), l(3, 4)))
	require.NotZero(t, net.Stats().Blocked)
}

// TestMemDuplicate: with duplication certain every message arrives twice.
func TestMemDuplicate(t *testing.T) {
	noLeaks(t)
	net, nodes, sinks := memCluster(t, 1, 2)
	net.SetFaults(Faults{Duplicate: 1})
	sendN(nodes[1], 1, 2, 0, 50)
	net.Flush()
	got := sinks[2].from(1)
	require.Len(t, got, 100)
	for i := 0; i < 100; i += 2 {
		require.Equal(t, got[i].Msg.Index, got[i+1].Msg.Index)
		require.NotSame(t, &got[i].Msg.Entries[0].Data[0], &got[i+1].Msg.Entries[0].Data[0])
	}
	require.Equal(t, uint64(50), net.Stats().Duplicated)
}

// TestMemReorder: reordering changes the order, loses nothing.
func TestMemReorder(t *testing.T) {
	noLeaks(t)
	net, nodes, sinks := memCluster(t, 1, 2)
	net.SetFaults(Faults{Reorder: 0.3})
	sendN(nodes[1], 1, 2, 0, 200)
	net.Flush()
	got := sinks[2].from(1)
	require.Len(t, got, 200)
	seen := map[uint64]bool{}
	inversions := 0
	for i, e := range got {
		seen[e.Msg.Index] = true
		if i > 0 && e.Msg.Index < got[i-1].Msg.Index {
			inversions++
		}
	}
	require.Len(t, seen, 200)
	require.NotZero(t, inversions)
	require.NotZero(t, net.Stats().Reordered)
}

// TestMemDelay: delayed messages all arrive, and Flush waits for them.
func TestMemDelay(t *testing.T) {
	noLeaks(t)
	net, nodes, sinks := memCluster(t, 1, 2)
	net.SetFaults(Faults{Delay: time.Millisecond, Jitter: 5 * time.Millisecond})
	sendN(nodes[1], 1, 2, 0, 100)
	net.Flush()
	require.Equal(t, 100, sinks[2].count(1))
	require.Equal(t, uint64(100), net.Stats().Delayed)
}

// deliveryLog runs one scenario and returns what was delivered, in order.
func deliveryLog(t *testing.T, seed int64) []string {
	net := NewMemNetwork(seed)
	defer func() { _ = net.Close() }()
	var log []string // the handlers run on the dispatcher alone
	nodes := map[uint64]Transport{}
	for id := uint64(1); id <= 3; id++ {
		nodes[id] = net.Node(id, func(from uint64, envs []Envelope) {
			for _, e := range envs {
				log = append(log, fmt.Sprintf("%d>%d g%d i%d", from, id, e.Group, e.Msg.Index))
			}
		})
	}
	net.SetFaults(Faults{Drop: 0.2, Duplicate: 0.2, Reorder: 0.2})
	for round := range 20 {
		for from := uint64(1); from <= 3; from++ {
			for to := uint64(1); to <= 3; to++ {
				if to != from {
					sendN(nodes[from], from, to, round*10, 10)
				}
			}
		}
		if round%5 == 4 {
			net.Flush()
		}
	}
	net.Flush()
	require.NotEmpty(t, log)
	return log
}

// TestMemDeterministic: the same seed gives the same deliveries, in the
// same order; another seed other ones.
func TestMemDeterministic(t *testing.T) {
	noLeaks(t)
	a := deliveryLog(t, 42)
	require.Equal(t, a, deliveryLog(t, 42))
	require.NotEqual(t, a, deliveryLog(t, 43))
}

// TestMemNodeRestart: a closed node gets nothing, its id can be attached
// again, and the new node does not get its predecessor's messages.
func TestMemNodeRestart(t *testing.T) {
	noLeaks(t)
	net, nodes, sinks := memCluster(t, 1, 2)
	require.Panics(t, func() { net.Node(2, func(uint64, []Envelope) {}) }, "attached twice")
	require.NoError(t, nodes[2].Close())
	require.True(t, nodes[1].Unreachable(2))
	sendN(nodes[1], 1, 2, 0, 10)
	s := newSink()
	again := net.Node(2, s.handle)
	sendN(nodes[1], 1, 2, 10, 5)
	sendN(nodes[2], 2, 1, 0, 5) // the closed transport sends nothing
	net.Flush()
	require.Zero(t, sinks[2].total())
	require.Equal(t, 5, s.count(1))
	require.Equal(t, uint64(10), s.from(1)[0].Msg.Index)
	require.Zero(t, sinks[1].total())
	require.NoError(t, again.Close())
	require.NoError(t, net.Close())
	sendN(nodes[1], 1, 2, 0, 1) // after Close: dropped, no panic
	net.Flush()                 // returns at once
}

package cluster

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/cluster/transport"
)

// memCluster is three hosts on the transport's fault-injecting network,
// each with one replicated group whose log outlives the host (a crash
// loses what was not synced).
type memCluster struct {
	t     *testing.T
	net   *transport.MemNetwork
	ids   []uint64
	mu    sync.Mutex
	hosts map[uint64]*Host
	trs   map[uint64]transport.Transport
	logs  map[uint64]*testlog.Log
	metas map[uint64]*testlog.Meta
	// join marks nodes started as new replicas of the group (GroupConfig.Join);
	// replay makes every node re-apply its whole log on start, as the
	// controller does (GroupConfig.ApplyFromStart).
	join   map[uint64]bool
	replay bool
	retain atomic.Int64 // retention bound in bytes (0: none)
	// catchUp is the groups' catch-up window (GroupConfig.CatchUpBytes).
	catchUp int64
}

func newMemCluster(t *testing.T, seed int64) *memCluster {
	return newMemClusterCatchUp(t, seed, 0)
}

// newMemClusterCatchUp is newMemCluster with a catch-up window.
func newMemClusterCatchUp(t *testing.T, seed int64, catchUp int64) *memCluster {
	c := &memCluster{t: t, net: transport.NewMemNetwork(seed), ids: []uint64{1, 2, 3},
		hosts: map[uint64]*Host{}, trs: map[uint64]transport.Transport{},
		logs: map[uint64]*testlog.Log{}, metas: map[uint64]*testlog.Meta{}, catchUp: catchUp}
	for _, id := range c.ids {
		c.logs[id], c.metas[id] = &testlog.Log{}, &testlog.Meta{}
		c.start(id)
	}
	t.Cleanup(func() {
		for _, id := range c.ids {
			c.stop(id)
		}
		_ = c.net.Close()
	})
	return c
}

func (c *memCluster) start(id uint64) {
	var peers []uint64
	for _, o := range c.ids {
		if o != id {
			peers = append(peers, o)
		}
	}
	var hp atomic.Pointer[Host] // the network may deliver before the host exists
	tr := c.net.Node(id, func(from uint64, envs []transport.Envelope) {
		if h := hp.Load(); h != nil {
			h.Deliver(from, envs)
		}
	})
	h := NewHost(HostConfig{NodeID: id, Send: tr.Send, Peers: peers, TickInterval: 10 * time.Millisecond,
		RetentionTicks: 2, Logger: slog.New(slog.DiscardHandler)})
	hp.Store(h)
	h.Start()
	voters := c.ids
	if c.join[id] {
		voters = nil
	}
	require.NoError(c.t, h.AddGroup(GroupConfig{ID: testGroup, Voters: voters, Join: c.join[id], Log: c.logs[id], Meta: c.metas[id],
		Sync: true, ApplyFromStart: c.replay, CatchUpBytes: c.catchUp,
		Retention: func() (time.Duration, int64) { return 0, c.retain.Load() }}))
	c.mu.Lock()
	c.hosts[id], c.trs[id] = h, tr
	c.mu.Unlock()
}

func (c *memCluster) stop(id uint64) {
	c.mu.Lock()
	h, tr := c.hosts[id], c.trs[id]
	delete(c.hosts, id)
	delete(c.trs, id)
	c.mu.Unlock()
	if h != nil {
		_ = tr.Close()
		h.Stop()
	}
}

// crash stops a node and loses its unsynced writes, then restarts it.
func (c *memCluster) crashRestart(id uint64) {
	c.stop(id)
	c.logs[id].Crash()
	c.start(id)
}

func (c *memCluster) host(id uint64) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hosts[id]
}

// leader returns a node that believes it leads, or 0.
func (c *memCluster) leader() uint64 {
	c.mu.Lock()
	ids := slices.Sorted(maps.Keys(c.hosts))
	c.mu.Unlock()
	for _, id := range ids {
		if h := c.host(id); h != nil {
			if st, err := h.Status(testGroup); err == nil && st.State == "StateLeader" {
				return id
			}
		}
	}
	return 0
}

// TestFaultsOnMemNetwork runs producers through rounds of network faults
// (loss, duplication, reordering and delay together; the leader isolated;
// a 2/1 split with the leader in the minority; crashes of a node that lose
// its unsynced writes) and checks, once healed, that every acknowledged
// batch is at its acknowledged offset on every replica, that the replicas
// are identical, and that nothing is stored twice.
func TestFaultsOnMemNetwork(t *testing.T) {
	c := newMemCluster(t, 7)
	var amu sync.Mutex
	acked := map[string]int64{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				lead := c.leader()
				h := c.host(lead)
				if h == nil {
					time.Sleep(2 * time.Millisecond)
					continue
				}
				v := fmt.Sprintf("p%d-%d", p, i)
				ch := make(chan Result, 1)
				h.Propose(testGroup, (&testCluster{}).batch(v), func(r Result) { ch <- r })
				select {
				case r := <-ch:
					if r.Err == nil {
						amu.Lock()
						acked[v] = r.Base
						amu.Unlock()
					}
				case <-time.After(5 * time.Second): // a stale leader's proposal may never be answered until it steps down
				}
			}
		}()
	}
	ackedCount := func() int {
		amu.Lock()
		defer amu.Unlock()
		return len(acked)
	}
	// progress waits until n more batches were acked.
	progress := func(n int) {
		want := ackedCount() + n
		require.Eventually(t, func() bool { return ackedCount() >= want }, 60*time.Second, time.Millisecond)
	}
	progress(30)
	for round := range 8 {
		switch round % 4 {
		case 0:
			c.net.SetFaults(transport.Faults{Drop: 0.1, Duplicate: 0.1, Reorder: 0.1, Delay: time.Millisecond, Jitter: 3 * time.Millisecond})
			progress(30)
			c.net.SetFaults(transport.Faults{})
		case 1:
			if l := c.leader(); l != 0 {
				c.net.Isolate(l)
				require.Eventually(t, func() bool { nl := c.leader(); return nl != 0 && nl != l }, 60*time.Second, time.Millisecond)
				progress(20)
				c.net.Heal()
			}
		case 2:
			if l := c.leader(); l != 0 {
				var rest []uint64
				for _, id := range c.ids {
					if id != l {
						rest = append(rest, id)
					}
				}
				c.net.Partition([]uint64{l}, rest)
				progress(20)
				c.net.Heal()
			}
		case 3:
			victim := c.ids[round%3]
			c.crashRestart(victim)
			progress(20)
		}
	}
	close(stop)
	wg.Wait()
	c.net.Heal()
	c.net.SetFaults(transport.Faults{})
	// A last batch at the leader: once it commits everywhere, every
	// replica holds the same committed log up to it.
	var end int64
	require.Eventually(t, func() bool {
		h := c.host(c.leader())
		if h == nil {
			return false
		}
		ch := make(chan Result, 1)
		h.Propose(testGroup, (&testCluster{}).batch("end"), func(r Result) { ch <- r })
		r := <-ch
		end = r.Base + 1
		return r.Err == nil
	}, 60*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		for _, id := range c.ids {
			if _, vis := c.logs[id].Bounds(); vis < end {
				return false
			}
		}
		return true
	}, 60*time.Second, time.Millisecond)
	var first []string
	for i, id := range c.ids {
		recs := records(t, c.logs[id])[:end]
		if i == 0 {
			first = recs
			continue
		}
		require.Equal(t, first, recs, "replica %d differs from replica %d", id, c.ids[0])
	}
	seen := map[string]bool{}
	for _, v := range first {
		require.False(t, seen[v], "%s stored twice", v)
		seen[v] = true
	}
	amu.Lock()
	defer amu.Unlock()
	for v, off := range acked {
		require.Less(t, off, end)
		require.Equal(t, v, first[off], "acked %s at offset %d", v, off)
	}
	st := c.net.Stats()
	require.NotZero(t, st.Dropped)
	require.NotZero(t, st.Duplicated)
	require.NotZero(t, st.Reordered)
	t.Logf("%d batches acked; network: %+v", len(acked), st)
}

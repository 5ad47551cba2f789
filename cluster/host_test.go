package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// testNet connects hosts in one process; links can be cut and messages
// dropped at random, to test what Raft promises under faults.
type testNet struct {
	mu    sync.Mutex
	hosts map[uint64]*Host
	cut   map[[2]uint64]bool
	drop  float64
	rng   *rand.Rand
	// filter, if set, drops the envelopes it returns false for.
	filter func(from, to uint64, e Envelope) bool
}

func newTestNet() *testNet {
	return &testNet{hosts: map[uint64]*Host{}, cut: map[[2]uint64]bool{}, rng: rand.New(rand.NewPCG(1, 2))}
}

func (n *testNet) sender(from uint64) func(to uint64, envs []Envelope) {
	return func(to uint64, envs []Envelope) {
		n.mu.Lock()
		h := n.hosts[to]
		if h == nil || n.cut[[2]uint64{from, to}] {
			n.mu.Unlock()
			return
		}
		out := make([]Envelope, 0, len(envs))
		for _, e := range envs {
			if n.drop > 0 && n.rng.Float64() < n.drop {
				continue
			}
			if n.filter != nil && !n.filter(from, to, e) {
				continue
			}
			out = append(out, e)
		}
		n.mu.Unlock()
		h.Deliver(from, out)
	}
}

// isolate cuts node id off from every other node, both ways.
func (n *testNet) isolate(id uint64, ids []uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range ids {
		if o != id {
			n.cut[[2]uint64{id, o}] = true
			n.cut[[2]uint64{o, id}] = true
		}
	}
}

func (n *testNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
	n.drop = 0
}

// node is one host of a test cluster with its group's storage, which
// outlives the host across restarts.
type node struct {
	id   uint64
	host *Host
	log  *testlog.Log
	meta *testlog.Meta
}

type testCluster struct {
	t     *testing.T
	net   *testNet
	ids   []uint64
	nodes map[uint64]*node
	sync  bool

	forward bool
	catchUp int64        // GroupConfig.CatchUpBytes
	retain  atomic.Int64 // each group's retention bound in bytes (0: none)
	amu     sync.Mutex
	applied map[uint64][]string // per node: the first record value of each applied entry
	bases   map[uint64][]int64  // per node: the base offsets OnBatch was given
}

const testGroup = 7

func newTestCluster(t *testing.T, n int, sync bool) *testCluster {
	return buildTestCluster(t, n, sync, false, 0)
}

func buildTestCluster(t *testing.T, n int, sync, forward bool, catchUp int64) *testCluster {
	c := &testCluster{t: t, net: newTestNet(), nodes: map[uint64]*node{}, sync: sync, forward: forward,
		catchUp: catchUp}
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, uint64(i))
	}
	for _, id := range c.ids {
		c.nodes[id] = &node{id: id, log: &testlog.Log{}, meta: &testlog.Meta{}}
		c.start(id)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd.host != nil {
				nd.host.Stop()
			}
		}
	})
	return c
}

func (c *testCluster) start(id uint64) {
	nd := c.nodes[id]
	var peers []uint64
	for _, o := range c.ids {
		if o != id {
			peers = append(peers, o)
		}
	}
	h := NewHost(HostConfig{
		NodeID: id, Send: c.net.sender(id), Peers: peers,
		TickInterval: 20 * time.Millisecond, RetentionTicks: 2,
		Logger: slog.New(slog.DiscardHandler),
	})
	h.Start()
	require.NoError(c.t, h.AddGroup(GroupConfig{ID: testGroup, Voters: c.ids, Log: nd.log, Meta: nd.meta, Sync: c.sync,
		Forward: c.forward, CatchUpBytes: c.catchUp,
		OnBatch: func(base int64, _ []byte) {
			c.amu.Lock()
			if c.bases == nil {
				c.bases = map[uint64][]int64{}
			}
			c.bases[id] = append(c.bases[id], base)
			c.amu.Unlock()
		},
		Retention: func() (time.Duration, int64) { return 0, c.retain.Load() },
		OnApply: func(e raftpb.Entry) {
			it := wire.Batch(e.Data).Records()
			var r wire.Record
			if it.Next(&r) {
				c.amu.Lock()
				if c.applied == nil {
					c.applied = map[uint64][]string{}
				}
				c.applied[id] = append(c.applied[id], string(r.Value))
				c.amu.Unlock()
			}
		}}))
	c.net.mu.Lock()
	c.net.hosts[id] = h
	c.net.mu.Unlock()
	nd.host = h
}

// crash stops a node's host and loses what its log had not synced.
func (c *testCluster) crash(id uint64) {
	nd := c.nodes[id]
	c.net.mu.Lock()
	delete(c.net.hosts, id)
	c.net.mu.Unlock()
	nd.host.Stop()
	nd.host = nil
	nd.log.Crash()
}

// leader waits until some node other than except leads, and returns it.
func (c *testCluster) leader(except uint64) uint64 {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, id := range c.ids {
			nd := c.nodes[id]
			if nd.host == nil || id == except {
				continue
			}
			st, err := nd.host.Status(testGroup)
			if err == nil && st.State == "StateLeader" {
				return id
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatal("no leader elected")
	return 0
}

// propose sends a batch of values to node id and waits for the outcome.
func (c *testCluster) propose(id uint64, values ...string) Result {
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	for _, v := range values {
		bb.Append(1, nil, []byte(v), nil)
	}
	ch := make(chan Result, 1)
	h := c.nodes[id].host
	if h == nil {
		return Result{Err: ErrStopped}
	}
	h.Propose(testGroup, bb.Finish(), func(r Result) { ch <- r })
	return <-ch
}

// records reads a node's visible log: the value at each offset.
func records(t *testing.T, l *testlog.Log) []string {
	var out []string
	_, end := l.Bounds()
	require.NoError(t, l.Read(0, 1<<30, func(b wire.Batch) bool {
		require.Equal(t, int64(len(out)), b.BaseOffset(), "offsets are dense and in order")
		it := b.Records()
		var r wire.Record
		for it.Next(&r) {
			out = append(out, string(r.Value))
		}
		return true
	}))
	require.Len(t, out, int(end))
	return out
}

func TestThreeNodesReplicate(t *testing.T) {
	c := newTestCluster(t, 3, true)
	lead := c.leader(0)
	var want []string
	for i := range 50 {
		vals := []string{fmt.Sprintf("m%d-a", i), fmt.Sprintf("m%d-b", i)}
		r := c.propose(lead, vals...)
		require.NoError(t, r.Err)
		require.Equal(t, int64(len(want)), r.Base, "offsets are final and dense")
		want = append(want, vals...)
	}
	// A follower refuses, naming the leader.
	follower := c.ids[0]
	if follower == lead {
		follower = c.ids[1]
	}
	var nl *NotLeaderError
	require.ErrorAs(t, c.propose(follower, "x").Err, &nl)
	require.Equal(t, lead, nl.Leader)
	// Every replica ends with the same log.
	c.waitConverged(int64(len(want)))
	for _, id := range c.ids {
		require.Equal(t, want, records(t, c.nodes[id].log), "node %d", id)
	}
}

// waitConverged waits until every live node has end offsets committed.
func (c *testCluster) waitConverged(end int64) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, id := range c.ids {
			nd := c.nodes[id]
			if nd.host == nil {
				continue
			}
			if _, vis := nd.log.Bounds(); vis < end {
				ok = false
			}
		}
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("replicas did not converge to %d", end)
}

// TestFaultsLoseNothingAcked proposes through leader isolation, message
// loss and crashes of a minority (losing unsynced data), and checks that
// every acknowledged batch is in every replica at its acknowledged offset,
// that the replicas agree on every offset, and that no batch is stored
// twice.
func TestFaultsLoseNothingAcked(t *testing.T) {
	c := newTestCluster(t, 3, true)
	acked := map[string]int64{} // value → offset
	seq := 0
	proposeSome := func(n int) {
		for range n {
			lead := c.leader(0)
			v := fmt.Sprintf("v%d", seq)
			seq++
			r := c.propose(lead, v)
			if r.Err == nil {
				acked[v] = r.Base
			}
		}
	}
	proposeSome(20)
	for round := range 6 {
		lead := c.leader(0)
		switch round % 3 {
		case 0: // isolate the leader; a new one takes over
			c.net.isolate(lead, c.ids)
			// The old leader may accept proposals it can never commit.
			go c.propose(lead, fmt.Sprintf("stale%d", round))
			c.leader(lead)
			proposeSome(10)
			c.net.heal()
		case 1: // lose messages at random
			c.net.mu.Lock()
			c.net.drop = 0.2
			c.net.mu.Unlock()
			proposeSome(10)
			c.net.heal()
		case 2: // crash a follower, losing its unsynced tail, and restart it
			var f uint64
			for _, id := range c.ids {
				if id != lead {
					f = id
				}
			}
			c.crash(f)
			proposeSome(10)
			c.start(f)
		}
	}
	proposeSome(5)
	// Settle: commit an empty-ish marker so every replica learns the end.
	lead := c.leader(0)
	r := c.propose(lead, "end")
	require.NoError(t, r.Err)
	end := r.Base + 1
	c.waitConverged(end)
	var logs [][]string
	for _, id := range c.ids {
		recs := records(t, c.nodes[id].log)
		logs = append(logs, recs[:end])
	}
	for i := 1; i < len(logs); i++ {
		require.Equal(t, logs[0], logs[i], "replicas %d and %d differ", c.ids[0], c.ids[i])
	}
	seen := map[string]bool{}
	for _, v := range logs[0] {
		require.False(t, seen[v], "%s stored twice", v)
		seen[v] = true
	}
	for v, off := range acked {
		require.Equal(t, v, logs[0][off], "acked %s at %d", v, off)
	}
	require.NotEmpty(t, acked)
}

func TestProposeErrors(t *testing.T) {
	c := newTestCluster(t, 1, false)
	lead := c.leader(0)
	h := c.nodes[lead].host
	ch := make(chan Result, 3)
	h.Propose(testGroup, []byte{1, 2, 3}, func(r Result) { ch <- r })
	require.ErrorIs(t, (<-ch).Err, ErrBadBatch)
	h.Propose(99, c.batch("x"), func(r Result) { ch <- r })
	require.ErrorIs(t, (<-ch).Err, ErrNoGroup)
	h.Stop()
	h.Propose(testGroup, c.batch("x"), func(r Result) { ch <- r })
	require.ErrorIs(t, (<-ch).Err, ErrStopped)
	c.nodes[lead].host = nil
	require.ErrorIs(t, h.AddGroup(GroupConfig{ID: 3, Voters: []uint64{1}, Log: &testlog.Log{}, Meta: &testlog.Meta{}}), ErrStopped)
}

func (c *testCluster) batch(values ...string) []byte {
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	for _, v := range values {
		bb.Append(1, nil, []byte(v), nil)
	}
	return bb.Finish()
}

// TestQuiesce: an idle group stops ticking on every node, wakes on a
// proposal, and its followers elect a new leader when the leader's node
// goes silent.
func TestQuiesce(t *testing.T) {
	c := newTestCluster(t, 3, false)
	lead := c.leader(0)
	require.NoError(t, c.propose(lead, "a").Err)
	waitFor(t, "every replica quiesced", func() bool {
		for _, id := range c.ids {
			st, err := c.nodes[id].host.Status(testGroup)
			if err != nil || !st.Quiesced {
				return false
			}
		}
		return true
	})
	require.NoError(t, c.propose(lead, "b").Err, "a proposal wakes the group")
	waitFor(t, "quiesced again", func() bool {
		st, _ := c.nodes[lead].host.Status(testGroup)
		return st.Quiesced
	})
	c.crash(lead)
	next := c.leader(lead)
	require.NotEqual(t, lead, next)
	r := c.propose(next, "c")
	require.NoError(t, r.Err)
	require.Equal(t, int64(2), r.Base)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTransferLeader hands leadership over and keeps offsets going.
func TestTransferLeader(t *testing.T) {
	c := newTestCluster(t, 3, true)
	lead := c.leader(0)
	require.NoError(t, c.propose(lead, "a").Err)
	to := c.ids[0]
	if to == lead {
		to = c.ids[1]
	}
	require.NoError(t, c.nodes[lead].host.TransferLeader(testGroup, to))
	waitFor(t, "the transfer", func() bool {
		st, _ := c.nodes[to].host.Status(testGroup)
		return st.State == "StateLeader"
	})
	r := c.propose(to, "b")
	require.NoError(t, r.Err)
	require.Equal(t, int64(1), r.Base)
	var nl *NotLeaderError
	require.True(t, errors.As(c.propose(lead, "c").Err, &nl))
}

// TestProposeForward: a follower's proposal reaches the leader and is
// applied on every node, in the same order.
func TestProposeForward(t *testing.T) {
	c := buildTestCluster(t, 3, false, true, 0)
	lead := c.leader(0)
	var follower uint64
	for _, id := range c.ids {
		if id != lead {
			follower = id
		}
	}
	require.ErrorIs(t, c.nodes[follower].host.ProposeForward(testGroup, []byte{1}), ErrBadBatch)
	for i := range 5 {
		require.NoError(t, c.nodes[follower].host.ProposeForward(testGroup, c.batch(fmt.Sprint("f", i))))
	}
	waitFor(t, "applied everywhere", func() bool {
		c.amu.Lock()
		defer c.amu.Unlock()
		for _, id := range c.ids {
			if len(c.applied[id]) < 5 {
				return false
			}
		}
		return true
	})
	c.amu.Lock()
	defer c.amu.Unlock()
	for _, id := range c.ids {
		require.Equal(t, []string{"f0", "f1", "f2", "f3", "f4"}, c.applied[id])
	}
}

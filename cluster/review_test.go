package cluster

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// failingLog is a testlog.Log whose appends can be made to fail, as a
// disk that filled up or went bad does.
type failingLog struct {
	*testlog.Log
	fail atomic.Bool
}

func (f *failingLog) Append(b *storage.Buf, batch wire.Batch) error {
	if f.fail.Load() {
		return errors.New("disk full")
	}
	return f.Log.Append(b, batch)
}

// reviewCluster is three hosts on a testNet, one group each, with logs
// whose appends can fail.
type reviewCluster struct {
	t     *testing.T
	net   *testNet
	ids   []uint64
	hosts map[uint64]*Host
	logs  map[uint64]*failingLog
}

func newReviewCluster(t *testing.T) *reviewCluster {
	c := &reviewCluster{t: t, net: newTestNet(), ids: []uint64{1, 2, 3}, hosts: map[uint64]*Host{}, logs: map[uint64]*failingLog{}}
	for _, id := range c.ids {
		var peers []uint64
		for _, o := range c.ids {
			if o != id {
				peers = append(peers, o)
			}
		}
		h := NewHost(HostConfig{NodeID: id, Send: c.net.sender(id), Peers: peers, TickInterval: 10 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)})
		h.Start()
		c.logs[id] = &failingLog{Log: &testlog.Log{}}
		require.NoError(t, h.AddGroup(GroupConfig{ID: testGroup, Voters: c.ids, Log: c.logs[id], Meta: &testlog.Meta{}}))
		c.net.mu.Lock()
		c.net.hosts[id] = h
		c.net.mu.Unlock()
		c.hosts[id] = h
	}
	t.Cleanup(func() {
		for _, h := range c.hosts {
			h.Stop()
		}
	})
	return c
}

func (c *reviewCluster) status(id uint64) GroupStatus {
	st, err := c.hosts[id].Status(testGroup)
	require.NoError(c.t, err)
	return st
}

func (c *reviewCluster) leader() uint64 {
	var lead uint64
	waitFor(c.t, "a leader", func() bool {
		for _, id := range c.ids {
			if c.status(id).State == "StateLeader" {
				lead = id
				return true
			}
		}
		return false
	})
	return lead
}

func (c *reviewCluster) propose(id uint64, v string) Result {
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	bb.Append(1, nil, []byte(v), nil)
	ch := make(chan Result, 1)
	c.hosts[id].Propose(testGroup, bb.Finish(), func(r Result) { ch <- r })
	return <-ch
}

func (c *reviewCluster) quiesced() {
	waitFor(c.t, "every replica quiesced", func() bool {
		for _, id := range c.ids {
			if !c.status(id).Quiesced {
				return false
			}
		}
		return true
	})
}

// TestReviewFailedLeaderDoesNotStrandQuiescedFollowers: a leader whose
// group fails (a storage error: Group.fail) stops ticking and sending, as
// it should; without quiescence its followers would miss its heartbeats
// and elect another leader within an election timeout. Quiesced followers
// do not tick and wake only on a non-heartbeat message of the group or
// when the leader's node goes silent (its pings stop). If the appends the
// failing leader sent are lost, nothing wakes them: the node is alive and
// keeps pinging, so the partition has no working leader until that node
// restarts, although two healthy replicas of three remain.
func TestReviewFailedLeaderDoesNotStrandQuiescedFollowers(t *testing.T) {
	c := newReviewCluster(t)
	lead := c.leader()
	require.NoError(t, c.propose(lead, "a").Err)
	c.quiesced()
	c.logs[lead].fail.Store(true)
	// The appends the leader sends with its failing write are lost (the
	// transport drops what it cannot deliver: a full queue, a reconnect);
	// the link is back at once, well within an election timeout, so the
	// followers' liveness pings never miss the leader's node.
	c.net.mu.Lock()
	for _, id := range c.ids {
		c.net.cut[[2]uint64{lead, id}] = true
	}
	c.net.mu.Unlock()
	r := c.propose(lead, "b")
	require.ErrorIs(t, r.Err, ErrGroupFailed)
	c.net.heal()
	require.NotEmpty(t, c.status(lead).Failed)
	// Ten election timeouts (10 ticks of 10 ms each) are plenty.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, id := range c.ids {
			if id != lead && c.status(id).State == "StateLeader" {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, id := range c.ids {
		st := c.status(id)
		t.Logf("node %d: state %s leader %d quiesced %v failed %q", id, st.State, st.Leader, st.Quiesced, st.Failed)
	}
	t.Fatalf("no healthy replica took over from failed leader %d", lead)
}

// TestReviewIsolatedQuiescedLeaderStepsDown: a quiesced leader does not
// tick, so CheckQuorum never runs on it. Cut off from both followers, it
// sees their pings stop, but wakeLedBy wakes only the groups the silent
// node led, not the ones this node leads. The followers elect a new
// leader; the old one goes on calling itself leader for good (an engine
// node then serves subscriptions and fetches of the partition, stale,
// and names itself in NOT_LEADER answers), until something is proposed
// to it.
func TestReviewIsolatedQuiescedLeaderStepsDown(t *testing.T) {
	c := newReviewCluster(t)
	lead := c.leader()
	require.NoError(t, c.propose(lead, "a").Err)
	c.quiesced()
	c.net.isolate(lead, c.ids)
	var next uint64
	waitFor(t, "a new leader among the others", func() bool {
		for _, id := range c.ids {
			if id != lead && c.status(id).State == "StateLeader" {
				next = id
				return true
			}
		}
		return false
	})
	require.NoError(t, c.propose(next, "b").Err)
	// Without quiescence CheckQuorum steps it down within an election
	// timeout (10 ticks, 100 ms); give it ten.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if c.status(lead).State != "StateLeader" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := c.status(lead)
	t.Fatalf("isolated node %d still leads (quiesced %v) while node %d leads the others", lead, st.Quiesced, next)
}

// TestReviewStepDownAnswerSaysProposalMayBeStored: a leader that steps
// down fails its pending proposals with NotLeaderError, Unknown only for
// those whose entries it saw appended (index != 0). But a proposal is in
// Raft's log from the moment RawNode.Propose accepts it; if the step-down
// comes in the same pass, before the Ready that appends it, the Ready
// still appends it to this node's log, and it may commit (here the node,
// alone in its group, is elected again and commits it). The producer was
// told it was not stored (no "may have been stored"), and a plain
// producer's retry stores it twice.
func TestReviewStepDownAnswerSaysProposalMayBeStored(t *testing.T) {
	var armed atomic.Bool
	entered := make(chan struct{}, 1)
	gate := make(chan struct{})
	send := func(to uint64, envs []Envelope) {
		if armed.Load() {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-gate
		}
	}
	// Node 99 is a peer only so that the host pings it each tick: its Send
	// lets the test hold the host's goroutine between two passes.
	h := NewHost(HostConfig{NodeID: 1, Send: send, Peers: []uint64{99}, TickInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	h.Start()
	t.Cleanup(h.Stop)
	l := &testlog.Log{}
	require.NoError(t, h.AddGroup(GroupConfig{ID: testGroup, Voters: []uint64{1}, Log: l, Meta: &testlog.Meta{}}))
	var st GroupStatus
	waitFor(t, "leader", func() bool {
		st, _ = h.Status(testGroup)
		return st.State == "StateLeader"
	})
	// Hold the host in a pass, queue a proposal and a heartbeat of a later
	// term (the node learns another leader), and let both run in one pass.
	armed.Store(true)
	<-entered
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	bb.Append(1, nil, []byte("x"), nil)
	ch := make(chan Result, 1)
	h.Propose(testGroup, bb.Finish(), func(r Result) { ch <- r })
	h.Deliver(99, []Envelope{{Group: testGroup, Msg: raftpb.Message{Type: raftpb.MsgHeartbeat, From: 99, To: 1, Term: st.Term + 1}}})
	armed.Store(false)
	close(gate)
	r := <-ch
	var nl *NotLeaderError
	require.ErrorAs(t, r.Err, &nl)
	// The node campaigns again (its group's only voter) and commits what
	// its log holds.
	waitFor(t, "leader again", func() bool {
		st, _ := h.Status(testGroup)
		return st.State == "StateLeader" && st.EndOffset > 0
	})
	_, vis := l.Bounds()
	require.Equal(t, int64(1), vis, "the proposal was committed")
	require.True(t, nl.Unknown, "answered %q, as if it was not stored", r.Err)
}

// TestReviewTransferringLeaderDoesNotNameItself: while a leader hands its
// leadership over, Raft drops proposals though the node still leads; the
// refusal used to name the node itself as the leader, sending the client
// straight back. It names no leader instead (retry after a pause).
func TestReviewTransferringLeaderDoesNotNameItself(t *testing.T) {
	c := newTestCluster(t, 3, false)
	lead := c.leader(0)
	require.NoError(t, c.propose(lead, "a").Err)
	to := c.ids[0]
	if to == lead {
		to = c.ids[1]
	}
	// The target never hears from the leader, so the transfer hangs
	// (until Raft gives up on it after an election timeout).
	c.net.mu.Lock()
	c.net.cut[[2]uint64{lead, to}] = true
	c.net.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		require.True(t, time.Now().Before(deadline), "no proposal was refused during a transfer")
		require.NoError(t, c.nodes[lead].host.TransferLeader(testGroup, to))
		r := c.propose(lead, "b")
		var nl *NotLeaderError
		if errors.As(r.Err, &nl) {
			require.NotEqual(t, lead, nl.Leader, "the refusal names the refusing node: %v", nl)
			return
		}
		require.NoError(t, r.Err) // the transfer was given up before the proposal: try again
	}
}

// TestReviewTransferTargetIsReachableAndCaughtUp: a node that shuts down
// gracefully hands each leadership over (engine: clusterNode.handOver),
// and used to pick the first other voter, even one that was down or far
// behind: the transfer then stalls the group until Raft gives up on it,
// and the node leaves with no successor. TransferTarget skips a voter this
// node does not hear from, and prefers the one holding the whole log.
func TestReviewTransferTargetIsReachableAndCaughtUp(t *testing.T) {
	c := newTestCluster(t, 3, false)
	lead := c.leader(0)
	var a, b uint64 // the followers, a the lower id: the one a tie (or the old pick) goes to
	for _, id := range c.ids {
		if id != lead {
			if a == 0 {
				a = id
			} else {
				b = id
			}
		}
	}
	h := c.nodes[lead].host
	require.NoError(t, c.propose(lead, "a").Err)
	waitFor(t, "both followers caught up and reachable", func() bool {
		to, err := h.TransferTarget(testGroup)
		return err == nil && to == a
	})

	cut := func(from, to uint64, on bool) {
		c.net.mu.Lock()
		defer c.net.mu.Unlock()
		if on {
			c.net.cut[[2]uint64{from, to}] = true
		} else {
			delete(c.net.cut, [2]uint64{from, to})
		}
	}
	// a is down, as far as the leader can tell.
	cut(lead, a, true)
	cut(a, lead, true)
	waitFor(t, "a unreachable", func() bool { return !h.Reachable(a) })
	to, err := h.TransferTarget(testGroup)
	require.NoError(t, err)
	require.Equal(t, b, to, "the unreachable voter was picked")

	// a is back but gets none of the leader's appends: reachable, behind.
	cut(a, lead, false)
	waitFor(t, "a reachable again", func() bool { return h.Reachable(a) })
	require.NoError(t, c.propose(lead, "b").Err)
	to, err = h.TransferTarget(testGroup)
	require.NoError(t, err)
	require.Equal(t, b, to, "the voter behind the leader was picked")

	_, err = c.nodes[b].host.TransferTarget(testGroup)
	var nl *NotLeaderError
	require.ErrorAs(t, err, &nl, "a follower has nothing to hand over")
}

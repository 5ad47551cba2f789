package cluster

import (
	"fmt"
	"log/slog"
	"testing"
	"testing/cryptotest"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster/internal/testlog"
)

// drivenNet connects driven hosts (HostConfig.Driven) on the test's
// goroutine: what a host sends waits in a queue until settle delivers it.
type drivenNet struct {
	t     *testing.T
	ids   []uint64
	hosts map[uint64]*Host
	logs  map[uint64]map[uint64]*testlog.Log // node → group → log
	queue []drivenMsg
	// sent records every envelope handed to Send, in order.
	sent []string
}

type drivenMsg struct {
	from, to uint64
	envs     []Envelope
}

func newDrivenNet(t *testing.T, n int, groups int) *drivenNet {
	d := &drivenNet{t: t, hosts: map[uint64]*Host{}, logs: map[uint64]map[uint64]*testlog.Log{}}
	for i := 1; i <= n; i++ {
		d.ids = append(d.ids, uint64(i))
	}
	for _, id := range d.ids {
		var peers []uint64
		for _, o := range d.ids {
			if o != id {
				peers = append(peers, o)
			}
		}
		from := id
		h := NewHost(HostConfig{NodeID: id, Peers: peers, Driven: true, Logger: slog.New(slog.DiscardHandler),
			Send: func(to uint64, envs []Envelope) {
				for _, e := range envs {
					d.sent = append(d.sent, fmt.Sprintf("%d->%d g%d %v", from, to, e.Group, e.Msg.Type))
				}
				d.queue = append(d.queue, drivenMsg{from, to, envs})
			}})
		h.Start() // starts nothing
		d.hosts[id] = h
		d.logs[id] = map[uint64]*testlog.Log{}
		for g := 1; g <= groups; g++ {
			l := &testlog.Log{}
			d.logs[id][uint64(g)] = l
			require.NoError(t, h.AddGroup(GroupConfig{ID: uint64(g), Voters: d.ids, Log: l, Meta: &testlog.Meta{}, Sync: true}))
		}
	}
	return d
}

// settle runs a pass of every host, then delivers what is queued, each
// delivery followed by the receiver's pass, until nothing is left.
func (d *drivenNet) settle() {
	for _, id := range d.ids {
		d.hosts[id].Process()
	}
	for len(d.queue) > 0 {
		m := d.queue[0]
		d.queue = d.queue[1:]
		d.hosts[m.to].Deliver(m.from, m.envs)
		d.hosts[m.to].Process()
	}
}

func (d *drivenNet) state(id, group uint64) GroupStatus {
	st, err := d.hosts[id].Status(group)
	require.NoError(d.t, err)
	return st
}

// TestDrivenHosts: driven hosts elect, replicate and refuse on the
// caller's goroutine; calls that wait for the loop run at once; Stop
// fails what is pending.
func TestDrivenHosts(t *testing.T) {
	d := newDrivenNet(t, 3, 1)
	require.NoError(t, d.hosts[1].Campaign(1))
	d.settle()
	require.Equal(t, "StateLeader", d.state(1, 1).State)
	var got []Result
	for i := range 3 {
		d.hosts[1].Propose(1, testBatch(fmt.Sprint("m", i)), func(r Result) { got = append(got, r) })
	}
	require.Empty(t, got, "Propose queues its work for the next pass")
	d.settle()
	require.Equal(t, []Result{{Base: 0}, {Base: 1}, {Base: 2}}, got)
	// A heartbeat carries the commit index to the followers.
	d.hosts[1].Tick()
	d.settle()
	for _, id := range d.ids {
		require.Equal(t, []string{"m0", "m1", "m2"}, records(t, d.logs[id][1]), "node %d", id)
	}
	var refused Result
	d.hosts[2].Propose(1, testBatch("x"), func(r Result) { refused = r })
	d.hosts[2].Process()
	var nl *NotLeaderError
	require.ErrorAs(t, refused.Err, &nl)
	require.Equal(t, uint64(1), nl.Leader)

	var stopped Result
	d.hosts[1].Propose(1, testBatch("y"), func(r Result) { stopped = r })
	d.hosts[1].Process()
	d.hosts[1].Stop()
	require.ErrorIs(t, stopped.Err, ErrStopped)
	d.hosts[1].Process() // nothing: the host is stopped
	_, err := d.hosts[1].Status(1)
	require.ErrorIs(t, err, ErrStopped)

	require.Panics(t, func() { NewHost(HostConfig{NodeID: 9}).Tick() }, "only a driven host is ticked by its caller")
}

// TestStepDownWithQueuedProposal: a proposal Raft took in the pass in
// which the leader stepped down, before any Ready showed it appended, is
// in the leader's log all the same, and may commit later: it must be
// answered as Unknown, never as not stored. (The simulator found it: an
// idempotent producer told "not stored" would retry, and the batch be
// stored twice.)
func TestStepDownWithQueuedProposal(t *testing.T) {
	d := newDrivenNet(t, 3, 1)
	require.NoError(t, d.hosts[1].Campaign(1))
	d.settle()
	st := d.state(1, 1)
	require.Equal(t, "StateLeader", st.State)
	var res []Result
	d.hosts[1].Propose(1, testBatch("a"), func(r Result) { res = append(res, r) })
	// In the same pass, after the proposal: a leader of a later term.
	d.hosts[1].Deliver(2, []Envelope{{Group: 1, Msg: raftpb.Message{Type: raftpb.MsgHeartbeat, From: 2, To: 1, Term: st.Term + 1}}})
	d.hosts[1].Process()
	require.Len(t, res, 1)
	var nl *NotLeaderError
	require.ErrorAs(t, res[0].Err, &nl)
	require.True(t, nl.Unknown, "the proposal is in the log: its outcome is unknown")
	require.Equal(t, st.LastIndex+1, d.state(1, 1).LastIndex, "the step-down's Ready wrote the proposal")
}

// TestDrivenDeterministic: driven hosts with many groups send the same
// envelopes in the same order every run, whatever Go's map order: the
// host walks its groups and peers in an order of its own.
func TestDrivenDeterministic(t *testing.T) {
	run := func() []string {
		cryptotest.SetGlobalRandom(t, 1) // Raft's election timeouts
		d := newDrivenNet(t, 3, 16)
		for g := uint64(1); g <= 16; g++ {
			require.NoError(t, d.hosts[1+g%3].Campaign(g))
		}
		d.settle()
		for i := range 40 {
			g := uint64(1 + i%16)
			for _, id := range d.ids {
				d.hosts[id].Propose(g, testBatch(fmt.Sprint(i)), func(Result) {})
			}
			if i%5 == 0 {
				for _, id := range d.ids {
					d.hosts[id].Tick()
				}
			}
			d.settle()
		}
		return d.sent
	}
	first := run()
	require.NotEmpty(t, first)
	for range 3 {
		require.Equal(t, first, run())
	}
}

func testBatch(values ...string) []byte {
	var c testCluster
	return c.batch(values...)
}

package cluster

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"
)

// Host.ReadIndex (readindex.go): a leader confirms with a quorum that it
// still leads before a read is answered; a leader cut off from its
// quorum, or deposed without knowing it, never confirms.

// readCall is the outcome of one ReadIndex on a driven host.
type readCall struct {
	rs    ReadState
	err   error
	calls int
}

func readAt(h *Host, group uint64) *readCall {
	r := &readCall{}
	h.ReadIndex(group, func(rs ReadState, err error) {
		r.rs, r.err = rs, err
		r.calls++
	})
	return r
}

// settleDropping is settle, dropping the envelopes drop selects.
func (d *drivenNet) settleDropping(drop func(from, to uint64, e Envelope) bool) {
	for _, id := range d.ids {
		d.hosts[id].Process()
	}
	for len(d.queue) > 0 {
		m := d.queue[0]
		d.queue = d.queue[1:]
		var keep []Envelope
		for _, e := range m.envs {
			if !drop(m.from, m.to, e) {
				keep = append(keep, e)
			}
		}
		if len(keep) > 0 {
			d.hosts[m.to].Deliver(m.from, keep)
		}
		d.hosts[m.to].Process()
	}
}

// cutOff drops everything node id sends or receives.
func cutOff(id uint64) func(from, to uint64, _ Envelope) bool {
	return func(from, to uint64, _ Envelope) bool { return from == id || to == id }
}

// electOne makes node 1 the leader of group 1 and commits a batch.
func electOne(t *testing.T, d *drivenNet) {
	t.Helper()
	require.NoError(t, d.hosts[1].Campaign(1))
	d.settle()
	var res []Result
	d.hosts[1].Propose(1, testBatch("a"), func(r Result) { res = append(res, r) })
	d.settle()
	require.Equal(t, []Result{{Base: 0}}, res)
}

// TestReadIndexConfirmsLeader: a healthy leader's read is answered only
// after a round of heartbeats, with its commit index and term, and once
// what was committed before is applied; a follower is refused naming
// the leader; an unknown group and a stopped host are errors.
func TestReadIndexConfirmsLeader(t *testing.T) {
	d := newDrivenNet(t, 3, 1)
	electOne(t, d)
	st := d.state(1, 1)

	r := readAt(d.hosts[1], 1)
	d.hosts[1].Process()
	require.Zero(t, r.calls, "answered before a quorum confirmed the leadership")
	d.settle()
	require.Equal(t, 1, r.calls)
	require.NoError(t, r.err)
	require.Equal(t, ReadState{Index: st.Commit, Term: st.Term}, r.rs)
	require.Equal(t, []string{"a"}, records(t, d.logs[1][1]), "what was committed before the read is applied")

	f := readAt(d.hosts[2], 1)
	d.hosts[2].Process()
	require.Equal(t, 1, f.calls)
	var nl *NotLeaderError
	require.ErrorAs(t, f.err, &nl, "a follower does not forward a read")
	require.Equal(t, uint64(1), nl.Leader)

	u := readAt(d.hosts[1], 99)
	d.hosts[1].Process()
	require.ErrorIs(t, u.err, ErrNoGroup)

	p := readAt(d.hosts[1], 1)
	d.hosts[1].Process()
	d.hosts[1].Stop()
	require.Equal(t, 1, p.calls)
	require.ErrorIs(t, p.err, ErrStopped, "a pending read fails when the host stops")
	require.ErrorIs(t, readAt(d.hosts[1], 1).err, ErrStopped)
}

// TestReadIndexDeposedLeaderDoesNotConfirm: node 1 leads and is frozen
// (its clock stops, as a paused process's) while cut off; the two others
// elect a leader and commit more. Node 1 still believes it leads, and
// would serve a stale state: its read is never confirmed. Cut off, it
// fails once CheckQuorum steps it down; with the network back, once it
// hears of the new term.
func TestReadIndexDeposedLeaderDoesNotConfirm(t *testing.T) {
	for _, healed := range []bool{false, true} {
		name := map[bool]string{false: "cut-off", true: "healed"}[healed]
		t.Run(name, func(t *testing.T) {
			d := newDrivenNet(t, 3, 1)
			electOne(t, d)
			cut := cutOff(1)
			// Nodes 2 and 3 tick without hearing from node 1, and elect.
			var next uint64
			for i := 0; i < 10*DefaultElectionTicks && next == 0; i++ {
				d.hosts[2].Tick()
				d.hosts[3].Tick()
				d.settleDropping(cut)
				for _, id := range []uint64{2, 3} {
					if d.state(id, 1).State == "StateLeader" {
						next = id
					}
				}
			}
			require.NotZero(t, next, "nodes 2 and 3 elect a leader")
			var res []Result
			d.hosts[next].Propose(1, testBatch("b"), func(r Result) { res = append(res, r) })
			d.settleDropping(cut)
			require.Equal(t, []Result{{Base: 1}}, res)
			require.Equal(t, "StateLeader", d.state(1, 1).State, "node 1 does not know it was deposed")

			r := readAt(d.hosts[1], 1)
			drop := cut
			if healed {
				drop = func(uint64, uint64, Envelope) bool { return false }
			}
			for i := 0; i < 3*DefaultElectionTicks && r.calls == 0; i++ {
				d.hosts[1].Tick()
				d.settleDropping(drop)
			}
			require.Equal(t, 1, r.calls, "the read is answered")
			var nl *NotLeaderError
			require.ErrorAs(t, r.err, &nl, "a deposed leader does not confirm a read")
			require.NotEqual(t, "StateLeader", d.state(1, 1).State)
		})
	}
}

// TestReadIndexTimesOut: a leader whose followers keep acknowledging its
// appends (so CheckQuorum keeps it leading) but whose heartbeat answers
// are lost cannot confirm a read: it fails after two election timeouts.
func TestReadIndexTimesOut(t *testing.T) {
	d := newDrivenNet(t, 3, 1)
	electOne(t, d)
	lostBeats := func(_, to uint64, e Envelope) bool { return to == 1 && e.Msg.Type == raftpb.MsgHeartbeatResp }
	r := readAt(d.hosts[1], 1)
	for i := 0; i < 3*DefaultElectionTicks && r.calls == 0; i++ {
		d.hosts[1].Propose(1, testBatch("x"), func(Result) {})
		for _, id := range d.ids {
			d.hosts[id].Tick()
		}
		d.settleDropping(lostBeats)
	}
	require.Equal(t, 1, r.calls)
	require.ErrorIs(t, r.err, ErrReadTimeout)
	require.Equal(t, "StateLeader", d.state(1, 1).State, "the appends kept it leading")
}

// quiesceAll ticks the hosts until every replica of group 1 is quiesced.
func quiesceAll(t *testing.T, d *drivenNet) {
	t.Helper()
	for range 10 * DefaultQuiesceTicks {
		all := true
		for _, id := range d.ids {
			all = all && d.state(id, 1).Quiesced
		}
		if all {
			return
		}
		for _, id := range d.ids {
			d.hosts[id].Tick()
		}
		d.settle()
	}
	t.Fatal("the group never quiesced")
}

// TestReadIndexWakesQuiescedGroup: a read wakes a quiesced leader, which
// then ticks, so that the heartbeats that confirm the read are sent again
// when the first ones were lost; and the group quiesces again once the
// read is answered. A quiesced leader cut off fails the read.
func TestReadIndexWakesQuiescedGroup(t *testing.T) {
	d := newDrivenNet(t, 3, 1)
	electOne(t, d)
	quiesceAll(t, d)

	r := readAt(d.hosts[1], 1)
	d.settleDropping(cutOff(1)) // the read's first heartbeats are lost
	require.Zero(t, r.calls)
	require.False(t, d.state(1, 1).Quiesced, "a read wakes the group")
	for i := 0; i < DefaultElectionTicks && r.calls == 0; i++ {
		d.hosts[1].Tick()
		d.settle()
	}
	require.Equal(t, 1, r.calls, "the next heartbeats carry the read")
	require.NoError(t, r.err)
	quiesceAll(t, d)

	r = readAt(d.hosts[1], 1)
	for i := 0; i < 3*DefaultElectionTicks && r.calls == 0; i++ {
		d.hosts[1].Tick()
		d.settleDropping(cutOff(1))
	}
	require.Equal(t, 1, r.calls)
	var nl *NotLeaderError
	require.ErrorAs(t, r.err, &nl)
}

// TestReadIndexOnRunningHosts: the same on hosts that run their own
// loop, for the race detector: a leader confirms, a leader isolated from
// the others does not.
func TestReadIndexOnRunningHosts(t *testing.T) {
	c := newTestCluster(t, 3, false)
	lead := c.leader(0)
	require.NoError(t, c.propose(lead, "a").Err)
	read := func(id uint64) (ReadState, error) {
		type out struct {
			rs  ReadState
			err error
		}
		ch := make(chan out, 1)
		c.nodes[id].host.ReadIndex(testGroup, func(rs ReadState, err error) { ch <- out{rs, err} })
		select {
		case o := <-ch:
			return o.rs, o.err
		case <-time.After(60 * time.Second):
			t.Fatal("ReadIndex never answered")
			return ReadState{}, nil
		}
	}
	rs, err := read(lead)
	require.NoError(t, err)
	st, err := c.nodes[lead].host.Status(testGroup)
	require.NoError(t, err)
	require.LessOrEqual(t, rs.Index, st.Commit)
	require.Equal(t, st.Term, rs.Term)

	c.net.isolate(lead, c.ids)
	_, err = read(lead)
	var nl *NotLeaderError
	require.True(t, errors.As(err, &nl) || errors.Is(err, ErrReadTimeout), "an isolated leader confirmed a read: %v", err)
}

// TestCatchUpThroughLeader: a follower that missed a batch confirms it
// caught up only once its leader answered its forwarded read and it has
// applied the batch; one that knows no leader is refused at once, and a
// read the leader never hears of fails after two election timeouts.
func TestCatchUpThroughLeader(t *testing.T) {
	d := newDrivenNet(t, 3, 1)
	none := func(h *Host) *readCall {
		r := &readCall{}
		h.CatchUp(1, func(rs ReadState, err error) { r.rs, r.err = rs, err; r.calls++ })
		return r
	}
	early := none(d.hosts[2])
	d.hosts[2].Process()
	require.Equal(t, 1, early.calls)
	var nl *NotLeaderError
	require.ErrorAs(t, early.err, &nl, "no leader known: refused at once")

	electOne(t, d)
	var res []Result
	d.hosts[1].Propose(1, testBatch("b"), func(r Result) { res = append(res, r) })
	d.settleDropping(cutOff(3))
	require.Equal(t, []Result{{Base: 1}}, res)
	require.Equal(t, []string{"a"}, records(t, d.logs[3][1]), "node 3 missed b")

	lost := none(d.hosts[3])
	for i := 0; i < 3*DefaultElectionTicks && lost.calls == 0; i++ {
		for _, id := range d.ids {
			d.hosts[id].Tick()
		}
		d.settleDropping(func(from, to uint64, e Envelope) bool {
			return from == 3 && e.Msg.Type == raftpb.MsgReadIndex
		})
	}
	require.Equal(t, 1, lost.calls)
	require.ErrorIs(t, lost.err, ErrReadTimeout)

	r := none(d.hosts[3])
	d.hosts[3].Process()
	require.Zero(t, r.calls, "answered before the leader")
	d.settle()
	require.Equal(t, 1, r.calls)
	require.NoError(t, r.err)
	require.Equal(t, d.state(1, 1).Commit, r.rs.Index, "the leader's commit index")
	require.Equal(t, []string{"a", "b"}, records(t, d.logs[3][1]), "applied before it was answered")

	l := none(d.hosts[1])
	d.settle()
	require.Equal(t, 1, l.calls)
	require.NoError(t, l.err, "the leader reads for itself")
}

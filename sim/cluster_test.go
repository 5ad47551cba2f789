package sim

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"testing/cryptotest"

	"github.com/ratatoskr-mq/ratatoskr/cluster"
)

// driven is the cluster actor on a calm network (every packet due at
// once) with its steps chosen by a test: which node ticks, and when the
// packets in flight arrive.
type driven struct {
	t *testing.T
	w *World
	a *clusterActor
}

func newDriven(t *testing.T) *driven {
	t.Helper()
	cryptotest.SetGlobalRandom(t, 1) // raft's election timeouts
	var trace *os.File
	if *simTrace {
		trace = os.Stdout
	}
	w := newWorld(1, trace)
	act, err := newClusterActor(w)
	if err != nil {
		t.Fatal(err)
	}
	a := act.(*clusterActor)
	a.sky = clusterWeather{delay: 1} // calm, every packet due when sent
	a.fault, a.paused = math.MaxInt, math.MaxInt
	return &driven{t: t, w: w, a: a}
}

// tick ticks n, delivers everything in flight, and checks.
func (d *driven) tick(n *clusterNode) {
	d.t.Helper()
	n.host.Tick()
	n.ticks++
	n.calm++
	d.a.tracef(d.w, n, "tick")
	d.deliver()
	d.check()
}

// deliver delivers the packets in flight in the order they were sent,
// each followed by a pass of its receiver, until none is left.
func (d *driven) deliver() {
	for len(d.a.net) > 0 {
		p := d.a.net[0]
		d.a.net = d.a.net[1:]
		if to := d.a.nodes[p.to-1]; to.up && to.inc == p.inc {
			envs := p.decode()
			to.host.Deliver(p.from, envs)
			to.host.Process()
			d.w.Tracef("cluster deliver n%d->n%d %s", p.from, p.to, describe(envs))
		}
	}
}

func (d *driven) check() {
	d.t.Helper()
	if err := d.a.check(); err != nil {
		d.t.Fatalf("step %d: %v", d.w.Step, err)
	}
	d.w.Step++
}

func (d *driven) leader() *clusterNode {
	lead, _ := d.a.leading()
	if lead == 0 {
		return nil
	}
	return d.a.nodes[lead-1]
}

// TestClusterElectionOnDriftingClocks is what seed 13041729636281046183
// met at commit bf0532e. One node is down; the other two's clocks drift
// apart as the seed picks which one ticks. The leader's clock runs ahead
// of its follower's answers, and CheckQuorum steps it down; then it ticks
// eight times for each tick of the follower. The follower ignores its
// pre-votes as long as its own clock says it heard the leader within an
// election timeout (the lease), and campaigns itself when its randomized
// timeout runs out: the election takes up to two election timeouts of the
// follower's clock, eight times as many of the other's. The liveness check
// once measured the stretch without a leader on the fastest clock, and
// failed here; on every node's clock it passes, and a leader is elected.
func TestClusterElectionOnDriftingClocks(t *testing.T) {
	d := newDriven(t)
	a := d.a
	a.crashNode(d.w, a.nodes[1], math.MaxInt/2)
	up := []*clusterNode{a.nodes[0], a.nodes[2]}
	for i := 0; !a.calm; i++ {
		if i == 1000 {
			t.Fatal("no calm with a leader after 1000 ticks")
		}
		d.tick(up[i%2])
	}
	lead := d.leader()
	follower := up[0]
	if follower == lead {
		follower = up[1]
	}
	// The leader's ticks, with its follower's answers still in flight.
	held := len(a.net)
	for i := 0; lead.status().State == "StateLeader"; i++ {
		if i > 3*cluster.DefaultElectionTicks {
			t.Fatalf("node %d, unanswered for %d ticks, still leads", lead.id, i)
		}
		lead.host.Tick()
		lead.ticks++
		lead.calm++
		d.check()
	}
	t.Logf("node %d stepped down; %d packets were in flight", lead.id, len(a.net)-held)
	for d.leader() == nil {
		if follower.ticks-follower.lost > 4*cluster.DefaultElectionTicks {
			t.Fatalf("no leader after %d ticks of node %d and %d of node %d",
				follower.ticks-follower.lost, follower.id, lead.ticks-lead.lost, lead.id)
		}
		for range 8 {
			d.tick(lead)
		}
		d.tick(follower)
	}
	// The case this reproduces: more than clusterLeaderless ticks of the
	// fast clock without a leader.
	if fast := lead.ticks - lead.lost; fast <= clusterLeaderless {
		t.Fatalf("a leader was elected within %d ticks of the fast clock: not the drift this test is about", fast)
	}
	t.Logf("node %d leads after %d ticks of node %d and %d of node %d", d.leader().id,
		follower.ticks-follower.lost, follower.id, lead.ticks-lead.lost, lead.id)
}

// TestClusterLeaderlessCheck: the check fails once every node up ticked
// more than clusterLeaderless times without a leader, and not before,
// however far ahead one node's clock is.
func TestClusterLeaderlessCheck(t *testing.T) {
	d := newDriven(t)
	a := d.a
	a.crashNode(d.w, a.nodes[1], math.MaxInt/2)
	n1, n3 := a.nodes[0], a.nodes[2]
	if err := a.checkLeaderless(0, 5); err != nil || !a.leaderless {
		t.Fatalf("the stretch did not start: %v", err)
	}
	n1.ticks += 10 * clusterLeaderless
	n3.ticks += clusterLeaderless
	if err := a.checkLeaderless(0, 5); err != nil {
		t.Fatalf("node 3 ticked %d times: %v", clusterLeaderless, err)
	}
	n3.ticks++
	err := a.checkLeaderless(0, 5)
	want := fmt.Sprintf("no node has led the highest term (5) for %d ticks of every node up", clusterLeaderless+1)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("every node ticked more than %d times, the check says %v", clusterLeaderless, err)
	}
	if err := a.checkLeaderless(3, 5); err != nil || a.leaderless {
		t.Fatalf("node 3 leads: %v (leaderless %v)", err, a.leaderless)
	}
}

package sim

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/cluster/raftlog"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The cluster actor runs three nodes of a cluster, each a driven
// cluster.Host (HostConfig.Driven: no goroutine, no clock) with one
// replicated partition, a Raft group of three voters under fsync=always
// (GroupConfig.Sync), whose log is a storage.DiskLog on the node's own
// disk, a vfs.MemFS: a node's crash keeps what that disk made durable, as
// a power loss does, and the node's host is rebuilt from the recovered
// log and its meta file (raft.meta).
//
// Between the nodes is a simulated network that the seed controls. Each
// batch of envelopes a host sends to a peer (one per pass) is a packet,
// encoded as the transport would, held until a delivery time drawn from
// the weather: most arrive within milliseconds, some much later; in order
// on their link, as on a connection, or, when the weather says, any
// order; some are dropped, some duplicated. Links are cut (one node
// isolated, one link both ways, one direction only) and healed. A crash
// breaks the connections to the node: what was sent to it is lost; what
// it sent before is still delivered.
//
// Each step is one of: a random node's tick (Host.Tick), the delivery of
// due packets to a node (Host.Deliver, then usually a pass), a pass
// (Host.Process), proposals of batches at a node (the one that leads, or
// any: one that does not must refuse at once with a NotLeaderError naming
// the leader it knows), or, every few hundred steps, a fault: a change of
// weather or of the links, a leadership transfer, the producers pausing,
// a node's crash (restarted at once or after a while), or a calm spell.
// The machine's crash (World's) is a power loss of the whole cluster.
//
// Raft's election timeouts come from crypto/rand (go.etcd.io/raft/v3 has
// no seed of its own), which the test seeds (testing/cryptotest), so a
// seed replays the whole run.
const (
	clusterNodes    = 3
	clusterGroup    = 7
	clusterDir      = "data/cluster/groups/7"
	clusterSegBytes = 16 << 10 // small segments: rolls happen often
	// clusterCatchUp is the catch-up window: small, so that a replica
	// back from a crash or a cut often fetches batches whole.
	clusterCatchUp = 8 << 10
	// clusterRetainTicks is how often a host applies retention, in ticks.
	clusterRetainTicks = 5
	clusterInFlight    = 400 // packets the network holds; beyond, it drops
	clusterWindow      = 32  // batches proposed and not answered, at most
	// The actor's clock is its own steps, whatever share of the
	// scheduler's it gets: a node ticks when a step says so, so that
	// elections take as many steps in every run. Only the network's delays
	// are in simulated time.
	clusterFaultEvery = 300  // mean steps between faults
	clusterCalmSteps  = 1500 // a calm spell: no fault for this many steps
	clusterMaxDown    = 300  // a crashed node stays down this many steps, or up to 6 times as long
	clusterPause      = 300  // producers pause this many steps, or up to 5 times as long
)

type clusterActor struct {
	w      *World
	nodes  []*clusterNode
	net    []*clusterPacket
	cut    [clusterNodes + 1][clusterNodes + 1]bool  // cut[from][to]
	last   [clusterNodes + 1][clusterNodes + 1]int64 // the arrival of the last packet sent in order on each link
	sky    clusterWeather
	steps  int // the actor's clock
	fault  int // the step of the next fault
	paused int // the producers propose nothing until this step
	// retain is the group's retention bound in bytes (0: none), which a
	// fault changes: replicas remove their old segments, and one that
	// needs what its leader removed installs a snapshot.
	retain int64

	// The model. props are every proposal, by id (a batch's first
	// timestamp); truth is the committed log as the nodes show it, batch
	// by batch from offset 0, growing as any node shows more.
	props    []*clusterProp
	oldest   int           // props before it are answered, or never will be
	truth    []int         // proposal ids in offset order
	truthAt  map[int64]int // base offset → index in truth
	truthEnd int64
	ackedAt  map[int64]int // base offset → the proposal acked there, beyond truthEnd
	leaders  map[uint64]uint64
	dirty    bool // something may have changed since the last Check
	calm     bool // checkLive found the network calm long enough
	// leaderless says no node has been seen leading the highest term
	// since each node up had ticked its lost times (checkLeaderless).
	leaderless bool
	err        error // an invariant a callback found broken
	sent       int   // packets, for the trace
}

type clusterNode struct {
	id    uint64
	mem   *vfs.MemFS
	log   *storage.DiskLog
	host  *cluster.Host
	inc   int // incarnation: a crash breaks the connections to the previous one
	up    bool
	upAt  int // the step at which a crashed node restarts
	term  uint64
	votes map[uint64]uint64 // term → the node it voted for
	// visible is the log's visible end at the last check: it never goes
	// back but across a crash. checked is how far the log was compared
	// with the truth since the node (re)started. start is where the log
	// started at the last check: retention and snapshots only move it on,
	// but a crash may bring back segments whose removal was not durable.
	visible, checked, start int64
	snaps                   int // snapshots installed since it started
	// ticks counts its ticks; calm, those since the network last calmed;
	// lost, its ticks when no node was seen leading any more.
	ticks, calm, lost int
}

// clusterProp is one proposal: its batch, where it was proposed, and its
// outcome.
type clusterProp struct {
	id    int
	node  uint64
	inc   int    // the node's incarnation
	tick  int    // the node's ticks when it was proposed
	batch []byte // as proposed, base offset 0
	state propState
	base  int64 // acked: the base offset of the answer
	// at is where the batch is in the truth, -1 while it is not.
	at  int64
	err error // the answer's error
}

type propState uint8

const (
	propPending propState = iota // not answered (or never will be: its node crashed)
	propAcked                    // committed at base
	propRefused                  // answered as not stored
	propUnknown                  // answered as maybe stored
)

// clusterPacket is what one pass of a host sent to one peer.
type clusterPacket struct {
	from, to uint64
	inc      int   // the receiver's incarnation when it was sent
	at       int64 // when it arrives
	fifo     bool  // in order on its link
	groups   []uint64
	msgs     [][]byte // each envelope's message, encoded
}

// clusterWeather is the network's mood: the odds per thousand packets of
// a drop, a duplicate and a long delay, and the usual delay's bound.
type clusterWeather struct {
	drop, dup, slow int
	delay           int64
	// reorder lets packets overtake each other on a link; otherwise a link
	// is in order, as a connection is.
	reorder bool
}

func (s clusterWeather) String() string {
	return fmt.Sprintf("drop=%d‰ dup=%d‰ slow=%d‰ delay<%v reorder=%v", s.drop, s.dup, s.slow, time.Duration(s.delay), s.reorder)
}

func newClusterActor(w *World) (Actor, error) {
	a := &clusterActor{w: w, truthAt: map[int64]int{}, ackedAt: map[int64]int{}, leaders: map[uint64]uint64{},
		sky: clusterWeather{delay: int64(2 * time.Millisecond)}}
	for i := range clusterNodes {
		n := &clusterNode{id: uint64(i + 1), mem: vfs.NewMem(), votes: map[uint64]uint64{}}
		// The node's data directory as a broker leaves it at start
		// (engine.New, and the controller's log under data/cluster).
		if err := storage.MkdirDurable(n.mem, "data/cluster", 2); err != nil {
			return nil, err
		}
		a.nodes = append(a.nodes, n)
	}
	for _, n := range a.nodes {
		if err := a.start(w, n); err != nil {
			return nil, fmt.Errorf("node %d: %w", n.id, err)
		}
	}
	return a, nil
}

func (a *clusterActor) Name() string { return "cluster" }

// start builds a node's host from its disk.
func (a *clusterActor) start(w *World, n *clusterNode) error {
	l, rec, err := storage.OpenDiskLog(storage.DiskConfig{FS: n.mem, Dir: clusterDir, SegmentBytes: clusterSegBytes,
		IndexInterval: 256, Files: storage.NewFileCache(8), Logger: w.Log,
		SegmentAge: 365 * 24 * time.Hour}) // rolling by age reads the wall clock
	if err != nil {
		return fmt.Errorf("open the log: %w", err)
	}
	if len(rec.Corrupt) > 0 {
		return fmt.Errorf("recovery reports corruption %v; the simulator corrupts nothing", rec.Corrupt)
	}
	var peers []uint64
	voters := make([]uint64, 0, clusterNodes)
	for _, o := range a.nodes {
		voters = append(voters, o.id)
		if o != n {
			peers = append(peers, o.id)
		}
	}
	id := n.id
	h := cluster.NewHost(cluster.HostConfig{NodeID: id, Peers: peers, Driven: true, Logger: w.Log,
		RetentionTicks: clusterRetainTicks, Now: w.Time,
		Send: func(to uint64, envs []cluster.Envelope) { a.send(id, to, envs) }})
	err = h.AddGroup(cluster.GroupConfig{ID: clusterGroup, Voters: voters, Log: l, Meta: raftlog.SideMeta{L: l}, Sync: true,
		Retention:    func() (time.Duration, int64) { return 0, a.retain },
		CatchUpBytes: clusterCatchUp,
		OnLeader: func(leader, term uint64) {
			if leader != 0 {
				a.leader(term, leader, fmt.Sprintf("node %d was told", id))
			}
		}})
	if err != nil {
		return fmt.Errorf("add the group: %w", err)
	}
	n.log, n.host, n.up = l, h, true
	n.inc++
	n.visible, n.checked, n.start, n.snaps = 0, 0, 0, 0
	return nil
}

func (a *clusterActor) Step(w *World) (err error) {
	a.dirty = true
	a.steps++
	for _, n := range a.nodes {
		if !n.up && n.upAt <= a.steps {
			if err := a.restart(w, n); err != nil {
				return err
			}
		}
	}
	if a.steps >= a.fault {
		a.fault = a.steps + w.Rand.IntN(2*clusterFaultEvery)
		switch r := w.Rand.IntN(100); {
		case r < 20:
			a.calmSpell(w)
		case r < 45:
			a.weather(w)
		case r < 60:
			a.links(w)
		case r < 70:
			a.retention(w)
		case r < 75:
			a.transfer(w)
		case r < 85:
			a.pause(w, clusterPause+w.Rand.IntN(4*clusterPause))
		default:
			a.crash(w)
		}
		return a.err
	}
	switch r := w.Rand.IntN(100); {
	case r < 30:
		a.tick(w)
	case r < 70:
		a.deliver(w)
	case r < 76:
		a.process(w)
	case r < 83:
		a.proposeQueued(w)
	default:
		err = a.propose(w)
	}
	if err == nil {
		err = a.err
	}
	return err
}

// upNode returns a random node that is up, or nil.
func (a *clusterActor) upNode(w *World) *clusterNode {
	var up []*clusterNode
	for _, n := range a.nodes {
		if n.up {
			up = append(up, n)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[w.Rand.IntN(len(up))]
}

// tick ticks a random node: the nodes' clocks drift apart as the seed
// says.
func (a *clusterActor) tick(w *World) {
	if n := a.upNode(w); n != nil {
		n.host.Tick()
		n.ticks++
		n.calm++
		a.tracef(w, n, "tick")
	}
}

// deliver delivers a few of the packets due at one node, in an order
// the seed picks among those that may go (a packet sent in order waits
// for those sent before it on its link); the node then usually runs a
// pass.
func (a *clusterActor) deliver(w *World) {
	ready := a.deliverable(w, 0)
	if len(ready) == 0 {
		w.Tracef("cluster deliver: nothing due, %d in flight", len(a.net))
		return
	}
	to := a.nodes[a.net[ready[w.Rand.IntN(len(ready))]].to-1]
	delivered := 0
	for range 1 + w.Rand.IntN(16) {
		ready = a.deliverable(w, to.id)
		if len(ready) == 0 {
			break
		}
		k := ready[w.Rand.IntN(len(ready))]
		p := a.net[k]
		a.net = slices.Delete(a.net, k, k+1)
		envs := p.decode()
		why := "delivered"
		switch {
		case !to.up || to.inc != p.inc:
			why = "lost: the receiver crashed"
		case a.cut[p.from][p.to]:
			why = "lost: the link is cut"
		default:
			to.host.Deliver(p.from, envs)
			delivered++
		}
		w.Tracef("cluster deliver n%d->n%d %s: %s", p.from, p.to, describe(envs), why)
	}
	if delivered > 0 && w.Rand.IntN(4) != 0 {
		to.host.Process()
		a.tracef(w, to, "pass")
	}
}

// deliverable returns the indexes in a.net of the packets that may
// arrive now (at node to, unless 0): due, and sent out of order or the
// first in flight on their link.
func (a *clusterActor) deliverable(w *World, to uint64) []int {
	var seen [clusterNodes + 1][clusterNodes + 1]bool
	var out []int
	for i, p := range a.net {
		if p.at <= w.Now && (!p.fifo || !seen[p.from][p.to]) && (to == 0 || p.to == to) {
			out = append(out, i)
		}
		if p.fifo {
			seen[p.from][p.to] = true
		}
	}
	return out
}

// process runs a pass of a random node.
func (a *clusterActor) process(w *World) {
	if n := a.upNode(w); n != nil {
		n.host.Process()
		a.tracef(w, n, "pass")
	}
}

// send is a host's HostConfig.Send: the envelopes become a packet in
// flight, unless the weather or a cut link drops them.
func (a *clusterActor) send(from, to uint64, envs []cluster.Envelope) {
	w := a.w
	a.sent++
	if a.cut[from][to] || w.Rand.IntN(1000) < a.sky.drop || len(a.net) >= clusterInFlight {
		return
	}
	p := &clusterPacket{from: from, to: to, inc: a.nodes[to-1].inc, at: w.Now + a.delay(w), fifo: !a.sky.reorder}
	if p.fifo {
		// In order, as on a connection: no sooner than the one before.
		p.at = max(p.at, a.last[from][to])
		a.last[from][to] = p.at
	}
	for i := range envs {
		b, err := envs[i].Msg.Marshal()
		if err != nil {
			a.fail(fmt.Errorf("node %d: a message does not encode: %w", from, err))
			return
		}
		p.groups = append(p.groups, envs[i].Group)
		p.msgs = append(p.msgs, b)
	}
	a.net = append(a.net, p)
	if w.Rand.IntN(1000) < a.sky.dup {
		dup := *p
		dup.at = max(w.Now+a.delay(w), a.last[from][to])
		a.net = append(a.net, &dup)
	}
}

// delay is how long a packet takes.
func (a *clusterActor) delay(w *World) int64 {
	if w.Rand.IntN(1000) < a.sky.slow {
		return w.Rand.Int64N(int64(time.Second))
	}
	return w.Rand.Int64N(a.sky.delay)
}

// describe lists the envelopes' messages for the trace.
func describe(envs []cluster.Envelope) string {
	var b []byte
	for i, e := range envs {
		if i > 0 {
			b = append(b, ' ')
		}
		m := &e.Msg
		if e.Group == 0 {
			b = append(b, "ping"...)
			continue
		}
		b = fmt.Appendf(b, "%s(t%d i%d/%d n%d c%d", strings.TrimPrefix(m.Type.String(), "Msg"), m.Term, m.Index, m.LogTerm, len(m.Entries), m.Commit)
		if m.Reject {
			b = fmt.Appendf(b, " reject hint %d", m.RejectHint)
		}
		b = append(b, ')')
	}
	return string(b)
}

// decode rebuilds the envelopes, as the receiving transport would: every
// delivery gets its own copy.
func (p *clusterPacket) decode() []cluster.Envelope {
	envs := make([]cluster.Envelope, len(p.msgs))
	for i, b := range p.msgs {
		envs[i].Group = p.groups[i]
		if err := envs[i].Msg.Unmarshal(b); err != nil {
			panic(fmt.Sprintf("sim: a message encoded by Marshal does not decode: %v", err))
		}
	}
	return envs
}

// calmSpell heals the network and holds the faults off for a while:
// long enough for the liveness check (checkLive).
func (a *clusterActor) calmSpell(w *World) {
	a.cut = [clusterNodes + 1][clusterNodes + 1]bool{}
	a.sky = clusterWeather{delay: 1 + w.Rand.Int64N(clusterCalmDelay)}
	a.fault = a.steps + clusterCalmSteps
	w.Tracef("cluster calm spell: %v", a.sky)
	if w.Rand.IntN(2) == 0 {
		a.pause(w, clusterCalmSteps)
	}
	if w.Rand.IntN(3) == 0 {
		// A node lost for the whole spell, often the leader: the others
		// must elect one of them and go on, quiesced or not.
		n := a.upNode(w)
		for _, o := range a.nodes {
			if o.up && o.status().State == "StateLeader" && w.Rand.IntN(3) != 0 {
				n = o
			}
		}
		if n != nil {
			a.crashNode(w, n, clusterCalmSteps)
		}
	}
}

// pause stops the producers for a while: the group goes idle, and
// quiesces (HostConfig.QuiesceTicks), so that the faults meet it quiesced
// too.
func (a *clusterActor) pause(w *World, steps int) {
	a.paused = a.steps + steps
	w.Tracef("cluster producers pause for %d steps", steps)
}

// weather changes the network's mood.
func (a *clusterActor) weather(w *World) {
	pick := func(v ...int) int { return v[w.Rand.IntN(len(v))] }
	a.sky = clusterWeather{drop: pick(0, 0, 0, 10, 50, 200), dup: pick(0, 0, 20, 100), slow: pick(0, 0, 10, 50),
		delay: int64(pick(1, 2, 5, 20, 100)) * int64(time.Millisecond), reorder: w.Rand.IntN(3) == 0}
	w.Tracef("cluster weather: %v", a.sky)
}

// retention changes the group's retention bound: none, or a few
// segments' worth.
func (a *clusterActor) retention(w *World) {
	a.retain = []int64{0, 2 * clusterSegBytes, 5 * clusterSegBytes}[w.Rand.IntN(3)]
	w.Tracef("cluster retention: %d bytes", a.retain)
}

// links heals every link, then maybe cuts some: a node off (the two
// sides of a 2/1 split), one link both ways, or one direction only.
func (a *clusterActor) links(w *World) {
	a.cut = [clusterNodes + 1][clusterNodes + 1]bool{}
	x := uint64(1 + w.Rand.IntN(clusterNodes))
	y := x%clusterNodes + 1
	switch r := w.Rand.IntN(5); {
	case r < 2:
		w.Tracef("cluster links: healed")
	case r == 2:
		for o := uint64(1); o <= clusterNodes; o++ {
			if o != x {
				a.cut[x][o], a.cut[o][x] = true, true
			}
		}
		w.Tracef("cluster links: n%d isolated", x)
	case r == 3:
		a.cut[x][y], a.cut[y][x] = true, true
		w.Tracef("cluster links: n%d-n%d cut", x, y)
	default:
		a.cut[x][y] = true
		w.Tracef("cluster links: n%d->n%d cut", x, y)
	}
}

// crash crashes a node, losing what its disk had not made durable (torn
// tails half of the time): the node is down until upAt.
func (a *clusterActor) crash(w *World) {
	n := a.upNode(w)
	if n == nil {
		return
	}
	// Back at once, after a while, or after long enough for the others
	// to run on without it (and the liveness checks to see them do).
	down := 0
	switch r := w.Rand.IntN(10); {
	case r < 3:
		down = w.Rand.IntN(clusterMaxDown)
	case r < 5:
		down = clusterMaxDown + w.Rand.IntN(5*clusterMaxDown)
	}
	a.crashNode(w, n, down)
}

func (a *clusterActor) crashNode(w *World, n *clusterNode, down int) {
	torn := w.Rand.IntN(2) == 0
	if torn {
		n.mem = n.mem.CrashWith(w.Rand)
	} else {
		n.mem = n.mem.Crash()
	}
	// The host is dropped, not stopped: a crashed process runs nothing
	// more, and its pending proposals are never answered.
	n.host, n.log, n.up = nil, nil, false
	n.upAt = a.steps + down
	a.uncalm()
	w.Tracef("cluster crash n%d torn=%v, down for %d steps", n.id, torn, down)
}

// restart builds a crashed node's host from what its disk kept.
func (a *clusterActor) restart(w *World, n *clusterNode) error {
	if err := a.start(w, n); err != nil {
		return fmt.Errorf("node %d: restart: %w", n.id, err)
	}
	a.tracef(w, n, "restart")
	a.uncalm()
	return nil
}

// Crash is a power loss of the whole cluster: every node crashes and
// restarts. Under fsync=always nothing acked may be lost even so: a
// quorum fsynced it before it was acked.
func (a *clusterActor) Crash(w *World) error {
	a.dirty = true
	for _, n := range a.nodes {
		if n.up {
			a.crashNode(w, n, 0)
		}
	}
	for _, n := range a.nodes {
		if err := a.restart(w, n); err != nil {
			return err
		}
	}
	return a.check()
}

// propose proposes one to three batches at a node: the one that leads
// (as it believes) most of the time, else any. A node that does not lead
// must refuse each at once with a NotLeaderError naming the leader it
// knows.
func (a *clusterActor) propose(w *World) error {
	n := a.upNode(w)
	if n == nil || a.steps < a.paused || a.waiting(w) {
		return nil
	}
	if w.Rand.IntN(4) != 0 {
		for _, o := range a.nodes {
			if o.up && o.status().State == "StateLeader" {
				n = o
			}
		}
	}
	// A pass first, so that the status is what the proposals meet: the
	// work queued before them may change it.
	n.host.Process()
	st := n.status()
	var ps []*clusterProp
	for range 1 + w.Rand.IntN(3) {
		p := a.newProp(w, n.id)
		ps = append(ps, p)
		n.host.Propose(clusterGroup, p.batch, func(r cluster.Result) { a.answer(w, p, r) })
	}
	w.Tracef("cluster propose at n%d (%s, term %d, leader %d): batches %d-%d", n.id, st.State, st.Term, st.Leader, ps[0].id, ps[len(ps)-1].id)
	n.host.Process()
	if st.State == "StateLeader" {
		return nil
	}
	for _, p := range ps {
		var nl *cluster.NotLeaderError
		switch {
		case p.state == propPending:
			return fmt.Errorf("node %d, a %s, did not refuse batch %d at once", n.id, st.State, p.id)
		case !errors.As(p.err, &nl) || nl.Unknown || nl.Leader != st.Leader:
			return fmt.Errorf("node %d, a %s that knows leader %d, answered batch %d with %w, not a NotLeaderError naming it",
				n.id, st.State, st.Leader, p.id, p.err)
		}
	}
	return nil
}

// proposeQueued proposes one to three batches at a node and leaves them
// queued with whatever else is (deliveries): the node takes them in its
// next pass, in whatever state it is then.
func (a *clusterActor) proposeQueued(w *World) {
	n := a.upNode(w)
	if n == nil || a.steps < a.paused || a.waiting(w) {
		return
	}
	first := len(a.props)
	for range 1 + w.Rand.IntN(3) {
		p := a.newProp(w, n.id)
		n.host.Propose(clusterGroup, p.batch, func(r cluster.Result) { a.answer(w, p, r) })
	}
	w.Tracef("cluster propose at n%d, queued: batches %d-%d", n.id, first, len(a.props)-1)
}

// transfer has the leader hand its leadership to another node, as a
// node's graceful shutdown does.
func (a *clusterActor) transfer(w *World) {
	for _, n := range a.nodes {
		if n.up && n.status().State == "StateLeader" {
			to := uint64(1 + w.Rand.IntN(clusterNodes))
			err := n.host.TransferLeader(clusterGroup, to)
			w.Tracef("cluster transfer n%d -> n%d: %v", n.id, to, err)
			a.uncalm()
			if err != nil {
				a.fail(fmt.Errorf("node %d, the leader, could not transfer: %w", n.id, err))
			}
			return
		}
	}
}

// waiting says the producers wait: clusterWindow batches are in flight,
// proposed and not answered. Without that bound the simulated network
// falls behind, and answers take ever longer.
func (a *clusterActor) waiting(w *World) bool {
	a.skipAnswered()
	n := 0
	for _, p := range a.props[a.oldest:] {
		if a.alive(p) {
			n++
		}
	}
	if n >= clusterWindow {
		w.Tracef("cluster propose: %d batches in flight, the producers wait", n)
		return true
	}
	return false
}

// skipAnswered moves oldest past the proposals answered, or never to be
// (their node crashed).
func (a *clusterActor) skipAnswered() {
	for a.oldest < len(a.props) && !a.alive(a.props[a.oldest]) {
		a.oldest++
	}
}

// alive says p waits for its answer: its node's host is the one it was
// proposed to.
func (a *clusterActor) alive(p *clusterProp) bool {
	n := a.nodes[p.node-1]
	return p.state == propPending && n.up && p.inc == n.inc
}

// newProp builds a new batch of one to four records; its first timestamp
// is its id, which is how the model recognizes it in a log.
func (a *clusterActor) newProp(w *World, node uint64) *clusterProp {
	nd := a.nodes[node-1]
	p := &clusterProp{id: len(a.props), node: node, inc: nd.inc, tick: nd.ticks, at: -1}
	var bb wire.BatchBuilder
	bb.Start(nil, wire.NoProducer, -1)
	for i := range 1 + w.Rand.IntN(4) {
		v := fmt.Appendf(nil, "%d.%d.", p.id, i)
		v = append(v, bytes.Repeat([]byte{byte('a' + p.id%26)}, w.Rand.IntN(200))...)
		bb.Append(int64(p.id), nil, v, nil)
	}
	p.batch = bb.Finish()
	a.props = append(a.props, p)
	return p
}

// answer is a proposal's callback.
func (a *clusterActor) answer(w *World, p *clusterProp, r cluster.Result) {
	w.Tracef("cluster answer batch %d: base %d %v", p.id, r.Base, r.Err)
	if p.state != propPending {
		a.fail(fmt.Errorf("batch %d answered twice: %s (base %d), then %s (base %d)", p.id, errString(p.err), p.base, errString(r.Err), r.Base))
		return
	}
	p.err = r.Err
	var nl *cluster.NotLeaderError
	switch {
	case r.Err == nil:
		p.state, p.base = propAcked, r.Base
		a.acked(p)
	case errors.As(r.Err, &nl) && nl.Unknown:
		p.state = propUnknown
	case errors.As(r.Err, &nl), errors.Is(r.Err, cluster.ErrProposalLost):
		p.state = propRefused
		if p.at >= 0 {
			a.fail(fmt.Errorf("batch %d was answered %q (not stored), but it is committed at %d", p.id, r.Err.Error(), p.at))
		}
	default:
		a.fail(fmt.Errorf("batch %d failed with no fault injected: %w", p.id, r.Err))
	}
}

// errString is err's text, or "acked".
func errString(err error) string {
	if err == nil {
		return "acked"
	}
	return err.Error()
}

// acked checks an acknowledgement against the truth, or keeps it for
// when the truth gets that far.
func (a *clusterActor) acked(p *clusterProp) {
	switch {
	case p.at >= 0 && p.at != p.base:
		a.fail(fmt.Errorf("batch %d acked at %d, committed at %d", p.id, p.base, p.at))
	case p.at >= 0:
	case p.base < a.truthEnd:
		a.fail(fmt.Errorf("batch %d acked at %d, but the committed log holds batch %d there", p.id, p.base, a.idAt(p.base)))
	default:
		if other, ok := a.ackedAt[p.base]; ok {
			a.fail(fmt.Errorf("batches %d and %d both acked at %d", other, p.id, p.base))
		}
		a.ackedAt[p.base] = p.id
	}
}

// idAt is the id of the committed batch at off, or -1.
func (a *clusterActor) idAt(off int64) int {
	if k, ok := a.truthAt[off]; ok {
		return a.truth[k]
	}
	return -1
}

// leader records that node leads term, as seen by who: two leaders of
// one term break Raft.
func (a *clusterActor) leader(term, node uint64, who string) {
	if l, ok := a.leaders[term]; ok && l != node {
		a.fail(fmt.Errorf("two leaders in term %d: %d and %d (%s)", term, l, node, who))
		return
	}
	a.leaders[term] = node
}

func (a *clusterActor) fail(err error) {
	if a.err == nil {
		a.err = err
	}
}

func (n *clusterNode) status() cluster.GroupStatus {
	st, err := n.host.Status(clusterGroup)
	if err != nil {
		panic(fmt.Sprintf("sim: node %d: status: %v", n.id, err))
	}
	return st
}

// tracef traces what a node did, with its state after it.
func (a *clusterActor) tracef(w *World, n *clusterNode, what string) {
	st := n.status()
	_, end := n.log.Bounds()
	q := ""
	if st.Quiesced {
		q = " quiesced"
	}
	w.Tracef("cluster n%d %s: %s%s term=%d lead=%d commit=%d last=%d end=%d in-flight=%d sent=%d",
		n.id, what, st.State, q, st.Term, st.Leader, st.Commit, st.LastIndex, end, len(a.net), a.sent)
}

// Check verifies the invariants; nothing changes between the actor's own
// steps, so it checks only after those.
func (a *clusterActor) Check(w *World) error {
	if a.err != nil {
		return a.err
	}
	if !a.dirty {
		return nil
	}
	a.dirty = false
	return a.check()
}

func (a *clusterActor) check() error {
	for _, n := range a.nodes {
		if !n.up {
			continue
		}
		if err := a.checkNode(n); err != nil {
			return fmt.Errorf("node %d: %w", n.id, err)
		}
	}
	if a.err != nil {
		return a.err
	}
	return a.checkLive()
}

// Liveness, once the network has been calm (a majority of the nodes up,
// no link cut, every link in order, nothing dropped, duplicated or held
// long) for clusterCalmTicks of every node that is up: one of them leads
// the highest term among them, and no proposal waits at a node for more
// than clusterAnswerTicks. Raft promises no more than that; the
// quiescence of idle groups (which must wake when their leader's node
// goes silent) must not break it.
const (
	clusterCalmTicks   = 60 // three to six election timeouts
	clusterAnswerTicks = 30
	// clusterLeaderless counts ticks of every node up (checkLeaderless),
	// and follows from the election timeout (the hosts take the default,
	// 10 ticks). A follower whose leader stepped down ignores pre-votes
	// while its own clock says the leader's lease holds, and campaigns by
	// its longest randomized timeout, 2*ElectionTicks-1 = 19 of its
	// ticks; a pre-vote and a vote round trip later (a few ticks each) it
	// leads, unless its campaign crossed the other node's: each granted
	// the other's pre-vote and voted for itself, and the next try waits
	// up to another 19 ticks and two round trips. That is about 50 ticks
	// at worst; 60 leaves room for slow deliveries.
	clusterLeaderless = 6 * cluster.DefaultElectionTicks
	clusterCalmDelay  = int64(5 * time.Millisecond)
)

// inFlight describes the packets in flight, link by link, for an error.
func (a *clusterActor) inFlight() string {
	var b []byte
	for from := uint64(1); from <= clusterNodes; from++ {
		for to := uint64(1); to <= clusterNodes; to++ {
			n, first := 0, int64(-1)
			for _, p := range a.net {
				if p.from == from && p.to == to {
					if n == 0 {
						first = p.at - a.w.Now
					}
					n++
				}
			}
			if n > 0 {
				b = fmt.Appendf(b, "n%d->n%d %d (the first due in %v) ", from, to, n, time.Duration(first))
			}
		}
	}
	return string(b)
}

// uncalm restarts the count of calm ticks.
func (a *clusterActor) uncalm() {
	for _, n := range a.nodes {
		n.calm = 0
	}
	a.calm = false
	a.leaderless = false
}

func (a *clusterActor) checkLive() error {
	up := 0
	for _, n := range a.nodes {
		if n.up {
			up++
		}
	}
	held := false // a packet held long, which holds up its link
	for _, p := range a.net {
		held = held || p.at > a.w.Now+clusterCalmDelay
	}
	calm := a.sky.drop == 0 && a.sky.slow == 0 && a.sky.dup == 0 && !a.sky.reorder && a.sky.delay <= clusterCalmDelay &&
		a.cut == [clusterNodes + 1][clusterNodes + 1]bool{} && len(a.net) < clusterInFlight/2 && !held && 2*up > clusterNodes
	if !calm {
		a.uncalm()
		return nil
	}
	for _, n := range a.nodes {
		if n.up && n.calm < clusterCalmTicks {
			return nil
		}
	}
	lead, term := a.leading()
	if err := a.checkLeaderless(lead, term); err != nil {
		return err
	}
	if !a.calm && lead != 0 {
		a.calm = true
		a.w.Tracef("cluster calm for %d ticks: node %d leads term %d", clusterCalmTicks, lead, term)
	}
	a.skipAnswered()
	for _, p := range a.props[a.oldest:] {
		n := a.nodes[p.node-1]
		if a.alive(p) && n.ticks-p.tick > clusterAnswerTicks && n.calm > clusterAnswerTicks {
			return fmt.Errorf("batch %d, proposed at node %d %d ticks ago, is not answered after %d ticks of calm; in flight: %s",
				p.id, p.node, n.ticks-p.tick, n.calm, a.inFlight())
		}
	}
	return nil
}

// leading returns the highest term among the nodes up, and the node that
// leads it (0: none).
//
// A follower whose clock ran ahead of the leader's may be a pre-candidate
// for a moment (knowing no leader), but with PreVote and CheckQuorum it
// cannot disturb the leader of the highest term. A leader whose clock ran
// ahead of its followers' answers steps down (CheckQuorum), but another
// is elected within a few election timeouts (clusterLeaderless).
func (a *clusterActor) leading() (lead, term uint64) {
	for _, n := range a.nodes {
		if !n.up {
			continue
		}
		st := n.status()
		if st.Term > term {
			lead, term = 0, st.Term
		}
		if st.Term == term && st.State == "StateLeader" {
			lead = n.id
		}
	}
	return lead, term
}

// checkLeaderless fails once no node has led the highest term for
// clusterLeaderless ticks of every node up: a stretch is as long as the
// clock of the node that ticked least in it, whichever that is. The
// nodes' clocks drift apart as the seed picks which one ticks, and an
// election waits on the slowest that matters: a follower ignores
// pre-votes while its own clock says it heard its leader within an
// election timeout (CheckQuorum's lease), and campaigns when its own
// randomized timeout runs out. Measured on the fastest clock, a stretch
// in which the follower ticked 24 times and the leader that had stepped
// down 41 (seed 13041729636281046183 at bf0532e) failed while Raft did
// just what it must.
func (a *clusterActor) checkLeaderless(lead, term uint64) error {
	switch {
	case lead != 0:
		a.leaderless = false
		return nil
	case !a.leaderless:
		a.leaderless = true
		for _, n := range a.nodes {
			n.lost = n.ticks
		}
		a.w.Tracef("cluster leaderless: no node leads term %d", term)
		return nil
	}
	least := -1 // the fewest ticks of a node up since the stretch began
	var each []byte
	for _, n := range a.nodes {
		if n.up {
			if d := n.ticks - n.lost; least < 0 || d < least {
				least = d
			}
			each = fmt.Appendf(each, " n%d %d", n.id, n.ticks-n.lost)
		}
	}
	if least <= clusterLeaderless {
		return nil
	}
	return fmt.Errorf("%d ticks into a calm, no node has led the highest term (%d) for %d ticks of every node up (ticks:%s); in flight: %s",
		clusterCalmTicks, term, least, each, a.inFlight())
}

// checkNode checks a node's Raft state and compares what its log shows
// committed, from where it was last compared, with the truth.
func (a *clusterActor) checkNode(n *clusterNode) error {
	st := n.status()
	if st.Failed != "" {
		return fmt.Errorf("the group failed with no fault injected: %s", st.Failed)
	}
	if st.Term < n.term {
		return fmt.Errorf("its term went back from %d to %d", n.term, st.Term)
	}
	n.term = st.Term
	if st.Vote != 0 {
		if v, ok := n.votes[st.Term]; ok && v != st.Vote {
			return fmt.Errorf("it voted for %d and then %d in term %d", v, st.Vote, st.Term)
		}
		n.votes[st.Term] = st.Vote
	}
	if st.State == "StateLeader" {
		a.leader(st.Term, n.id, fmt.Sprintf("node %d's own state", n.id))
	}
	start, end := n.log.Bounds()
	if start < n.start {
		return fmt.Errorf("the log's start went back from %d to %d with no crash", n.start, start)
	}
	if start > a.truthEnd {
		// What retention removes was committed, and shown (and checked
		// here) before it was applied; a snapshot starts a log at its
		// leader's start, which is no further.
		return fmt.Errorf("the log starts at %d, past the committed log's end %d", start, a.truthEnd)
	}
	n.start = start
	if st.Snapshots > n.snaps {
		a.w.Tracef("cluster n%d installed a snapshot: its log starts at %d (first index %d)", n.id, start, st.FirstIndex)
	}
	n.snaps = st.Snapshots
	if end < n.visible {
		return fmt.Errorf("the committed end went back from %d to %d with no crash", n.visible, end)
	}
	n.visible = end
	if end != st.EndOffset {
		return fmt.Errorf("the log shows up to %d, the group says %d is committed", end, st.EndOffset)
	}
	for off := max(n.checked, start); off < end; {
		from := off
		var bad error
		err := n.log.Read(off, 64<<10, func(b wire.Batch) bool {
			if b.BaseOffset() != off {
				bad = fmt.Errorf("a batch at %d, expected one at %d", b.BaseOffset(), off)
				return false
			}
			if bad = a.compare(off, b); bad != nil {
				return false
			}
			off += int64(b.Count())
			return off < end
		})
		switch {
		case err != nil:
			return fmt.Errorf("read at %d: %w", from, err)
		case bad != nil:
			return bad
		case off == from:
			return fmt.Errorf("read at %d below the committed end %d: nothing", off, end)
		}
	}
	n.checked = end
	return nil
}

// compare checks a committed batch at off against the truth, and extends
// the truth when off is its end.
func (a *clusterActor) compare(off int64, b wire.Batch) error {
	id := int(b.FirstTimestamp())
	if id < 0 || id >= len(a.props) || !bytes.Equal(b[8:], a.props[id].batch[8:]) {
		return fmt.Errorf("the batch at %d is not one that was proposed (its id says %d)", off, id)
	}
	p := a.props[id]
	if off < a.truthEnd {
		if got := a.idAt(off); got != id {
			return fmt.Errorf("batch %d committed at %d, where another node committed batch %d", id, off, got)
		}
		return nil
	}
	switch {
	case off > a.truthEnd:
		return fmt.Errorf("batch %d at %d, past the end of the committed log %d", id, off, a.truthEnd)
	case p.at >= 0:
		return fmt.Errorf("batch %d committed twice: at %d and %d", id, p.at, off)
	case p.state == propRefused:
		return fmt.Errorf("batch %d committed at %d, but its proposal was refused (not stored)", id, off)
	case p.state == propAcked && p.base != off:
		return fmt.Errorf("batch %d acked at %d, committed at %d", id, p.base, off)
	}
	if other, ok := a.ackedAt[off]; ok && other != id {
		return fmt.Errorf("batch %d committed at %d, where batch %d was acked: an acknowledged batch lost", id, off, other)
	}
	delete(a.ackedAt, off)
	p.at = off
	a.truthAt[off] = len(a.truth)
	a.truth = append(a.truth, id)
	a.truthEnd = off + int64(b.Count())
	if len(a.ackedAt) > 0 {
		// An ack inside the new batch: no batch starts where it was acked.
		for _, k := range slices.Sorted(maps.Keys(a.ackedAt)) {
			if k < a.truthEnd {
				return fmt.Errorf("batch %d was acked at %d, but the committed log has no batch starting there", a.ackedAt[k], k)
			}
		}
	}
	return nil
}

package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/ratatoskr-mq/ratatoskr/cluster/raftlog"
	"github.com/ratatoskr-mq/ratatoskr/cluster/transport"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Envelope is one Raft message of one group, as nodes exchange them
// (package cluster/transport). Group 0 is the host's own liveness ping,
// never a Raft group.
type Envelope = transport.Envelope

// Defaults of HostConfig.
const (
	DefaultTickInterval   = 50 * time.Millisecond
	DefaultElectionTicks  = 10 // 0.5-1 s before a follower campaigns
	DefaultHeartbeatTicks = 1
	DefaultQuiesceTicks   = 20 // an idle group goes quiet after a second
	DefaultRetentionTicks = 100
)

// HostConfig configures a Host.
type HostConfig struct {
	NodeID uint64
	// Send hands envelopes to the transport. It must not block; it is
	// called on the host's goroutine.
	Send func(to uint64, envs []Envelope)
	// Peers lists the other nodes, for liveness pings; SetPeers changes
	// them as nodes join and leave.
	Peers []uint64

	TickInterval   time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// QuiesceTicks is how many ticks a leader's group must be idle, with
	// every follower caught up, before it stops ticking (and its followers
	// with it): idle partitions then cost no heartbeats. The host's own
	// ping per node pair stands in for them, as CockroachDB coalesces
	// heartbeats: when a node goes silent, the groups it leads wake up and
	// elect a new leader. Negative disables quiescence.
	QuiesceTicks int
	Logger       *slog.Logger
	// RetentionTicks is how many ticks pass between two applications of
	// the groups' retention (GroupConfig.Retention); 0 takes the default,
	// 100 (5 s at the default tick), as a single node's shards apply theirs.
	RetentionTicks int
	// Now is the clock retention ages records by (default time.Now); a
	// simulator gives its own.
	Now func() time.Time
	// Driven makes the caller the host's only goroutine, for a simulator
	// that owns time: Start starts nothing, and the caller runs the loop's
	// passes itself with Tick (a tick of the clock, then a pass) and
	// Process (a pass: the queued deliveries and proposals, every group's
	// Ready, the sends). Calls that wait for the loop in the normal mode
	// (AddGroup, Status, TransferLeader...) run at once on the caller's
	// goroutine; Deliver and Propose queue their work for the next pass,
	// as they do for the loop. TickInterval is then unused: the host reads
	// no clock.
	Driven bool
	// OnAsk, if set, takes another node's request (Host.Ask) of the given
	// kind, on the host's goroutine, so it must not block: it calls answer
	// (once, from any goroutine) with the answer's body.
	OnAsk func(from uint64, kind string, body []byte, answer func([]byte))
}

func (c *HostConfig) fill() {
	if c.TickInterval <= 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.HeartbeatTicks <= 0 {
		c.HeartbeatTicks = DefaultHeartbeatTicks
	}
	if c.QuiesceTicks == 0 {
		c.QuiesceTicks = DefaultQuiesceTicks
	}
	if c.RetentionTicks <= 0 {
		c.RetentionTicks = DefaultRetentionTicks
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// GroupConfig configures one Raft group on a host: a replicated partition,
// or the controller.
type GroupConfig struct {
	ID uint64 // not 0
	// Voters is the group's first configuration, for a group that has no
	// state yet; every replica must be given the same. Ignored when the
	// log's meta file already holds a configuration.
	Voters []uint64
	// Join starts a group that has no state yet with no configuration at
	// all: a new replica of an existing group, which its leader adds
	// (ChangeConf) and catches up from its log. It learns the group's
	// configuration from the first configuration change it applies, whose
	// context holds the configuration that change applies to.
	Join bool
	// Log and Meta are the partition log and its meta file, opened as a
	// Raft log by AddGroup; or Store is that Raft log, opened by the
	// caller (raftlog.Open), which then sees only what is committed.
	Log   raftlog.Log
	Meta  raftlog.MetaStore
	Store *raftlog.Storage
	// Sync makes every append durable (fsync) before this replica
	// acknowledges it to the leader, or counts it for itself: the
	// fsync=always policy. Without it a quorum holds acknowledged batches in
	// memory (the page cache) only.
	Sync bool
	// ApplyFromStart re-applies every committed entry after a restart (the
	// controller rebuilds its state in memory from its log); otherwise
	// what was committed before the restart counts as applied.
	ApplyFromStart bool
	// OnCommit, if set, is called on the host's goroutine when the
	// committed end offset advances, with the new end: the partition log's
	// visible end already moved, and subscribers can be given the batches.
	OnCommit func(end int64)
	// OnApply, if set, is called on the host's goroutine with each
	// committed normal entry that carries data, in order.
	OnApply func(e raftpb.Entry)
	// OnBatch, if set, is called on the host's goroutine with each
	// committed batch entry's base offset (as the log stamped it) and its
	// data (whose own base offset field is not meaningful), in order,
	// before the OnCommit that covers it. The data must not be kept.
	OnBatch func(base int64, batch []byte)
	// OnApplied, if set, is called on the host's goroutine after the
	// committed entries of a pass were applied (once for many OnApply).
	OnApplied func()
	// OnLeader, if set, is called on the host's goroutine when the group's
	// leader or term changes (leader 0: none known).
	OnLeader func(leader, term uint64)
	// Retention, if set, returns how long and how much of the partition
	// to keep (0: no bound). Every RetentionTicks the host applies it to
	// what the group has applied, and the Raft log's compaction point
	// follows the log's new start (raftlog.Storage.Retain): a replica that
	// needs an entry it removed is sent a snapshot, and starts its log
	// again at the leader's start. Each replica applies it to its own log.
	Retention func() (maxAge time.Duration, maxBytes int64)
	// Floor, if set, bounds retention further: nothing at or after the
	// offset it returns is removed (the offsets topic's last checkpoint).
	Floor func() int64
	// CatchUpBytes, if positive, is the catch-up window: a replica more
	// than this many bytes of batches behind what the leader applied is
	// sent a snapshot, and fetches the batches before it whole into its
	// partition's stage rather than as Raft entries (catchup.go). 0 sends
	// entries only (the controller, which applies every entry).
	CatchUpBytes int64
	// Forward lets followers forward proposals to the leader
	// (ProposeForward): the controller's way. Partitions leave it off, so
	// a publish at a follower is answered with the leader's address.
	Forward bool
}

// Errors of proposals.
var (
	ErrStopped     = errors.New("cluster: host stopped")
	ErrNoGroup     = errors.New("cluster: no such group on this node")
	ErrGroupFailed = errors.New("cluster: group failed (storage error); restart the node")
	ErrBadBatch    = errors.New("cluster: not a record batch")
	ErrGroupExists = errors.New("cluster: group already exists")
	// ErrConfPending: a configuration change of the group is under way
	// (proposed and not yet applied, or joint consensus not yet left);
	// Raft takes one at a time.
	ErrConfPending = errors.New("cluster: a configuration change is under way")
	// ErrProposalLost says the proposal's entry was replaced by another
	// leader's at its index before it committed: it was not stored.
	ErrProposalLost = errors.New("cluster: proposal dropped by raft")
)

// NotLeaderError says this node does not lead the group. Leader is the
// other node this node knows leads it (0: none yet, an election or a
// leadership transfer is under way). A
// proposal that got it when the node stepped down may still have been
// stored: a retry may duplicate it unless the producer is idempotent.
type NotLeaderError struct {
	Group  uint64
	Leader uint64
	// Unknown says Raft took the proposal before the node stepped down,
	// so its outcome is unknown (it may yet commit).
	Unknown bool
}

func (e *NotLeaderError) Error() string {
	s := fmt.Sprintf("cluster: not the leader of group %d", e.Group)
	if e.Leader != 0 {
		s += fmt.Sprintf(" (the leader is node %d)", e.Leader)
	} else {
		s += " (no leader yet)"
	}
	if e.Unknown {
		s += "; the message may have been stored"
	}
	return s
}

// Result is a proposal's outcome: the base offset of the committed batch,
// or an error.
type Result struct {
	Base int64
	Err  error
}

// Host runs Raft groups on one node: one goroutine steps, ticks and
// persists every group, batching each pass's messages per peer.
type Host struct {
	cfg HostConfig

	mu      sync.Mutex
	queue   []func()
	spare   []func()
	stopped bool
	wake    chan struct{}
	done    chan struct{}

	// Owned by the loop. Whatever the loop walks in an order that shows
	// (which group's Ready runs first, which peer is sent to first) is a
	// slice, so that a driven host does the same things in the same order
	// every run: map order is random.
	groups    map[uint64]*Group
	active    []*Group // ticking: not quiesced (Group.activeAt)
	ready     []*Group // may have a Ready (Group.inReady)
	spareRdy  []*Group
	out       map[uint64][]Envelope
	outTo     []uint64         // the peers out has envelopes for, in the order of their first
	heard     map[uint64]int64 // tick of the last envelope from each peer
	ticks     int64
	deadPeers map[uint64]bool
	peers     []uint64 // the other nodes, pinged every tick (SetPeers)
	readSeq   uint64   // the last ReadIndex's id (readindex.go)
	askSeq    uint64   // the last node request's id (ask.go)
	asks      map[uint64]pendingAsk
}

// NewHost returns a host; Start runs it.
func NewHost(cfg HostConfig) *Host {
	cfg.fill()
	h := &Host{
		cfg:       cfg,
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		groups:    map[uint64]*Group{},
		out:       map[uint64][]Envelope{},
		heard:     map[uint64]int64{},
		deadPeers: map[uint64]bool{},
		peers:     slices.Clone(cfg.Peers),
	}
	return h
}

// Start runs the host's goroutine; a driven host has none.
func (h *Host) Start() {
	if !h.cfg.Driven {
		go h.run()
	}
}

// Stop stops the host's goroutine and fails what is pending. It does not
// close the groups' logs. A driven host runs its last pass and fails
// what is pending on the caller's goroutine.
func (h *Host) Stop() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		<-h.done
		return
	}
	h.stopped = true
	h.mu.Unlock()
	if h.cfg.Driven {
		h.pass()
		h.shutdown()
		close(h.done)
		return
	}
	h.notify()
	<-h.done
	for _, g := range h.groups {
		g.runs.Wait() // reads of chunks for peers (serveChunk): the caller closes the logs next
	}
}

// do queues fn to run on the host's goroutine; false if the host stopped.
func (h *Host) do(fn func()) bool {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return false
	}
	h.queue = append(h.queue, fn)
	n := len(h.queue)
	h.mu.Unlock()
	if n == 1 {
		h.notify()
	}
	return true
}

func (h *Host) notify() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// call runs fn on the host's goroutine and waits for it; on a driven
// host, whose caller is the host's goroutine, it runs fn at once.
func (h *Host) call(fn func()) error {
	if h.cfg.Driven {
		h.mu.Lock()
		stopped := h.stopped
		h.mu.Unlock()
		if stopped {
			return ErrStopped
		}
		fn()
		return nil
	}
	ch := make(chan struct{})
	if !h.do(func() { fn(); close(ch) }) {
		return ErrStopped
	}
	select {
	case <-ch:
		return nil
	case <-h.done:
		return ErrStopped
	}
}

func (h *Host) run() {
	defer close(h.done)
	t := time.NewTicker(h.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-h.wake:
		case <-t.C:
			h.tick()
		}
		if h.pass() {
			h.shutdown()
			return
		}
	}
}

// pass is what the loop does each time it wakes: it runs the queued
// work (deliveries, proposals, calls), then handles every group that may
// have a Ready and sends what that produced. It reports whether the host
// was stopped when it took the queue.
func (h *Host) pass() (stopped bool) {
	h.mu.Lock()
	q := h.queue
	h.queue = h.spare[:0]
	stopped = h.stopped
	h.mu.Unlock()
	for i, fn := range q {
		fn()
		q[i] = nil
	}
	h.spare = q
	h.process()
	return stopped
}

// Tick is, for a driven host, what the loop does when its ticker fires:
// a tick of every active group's clock and of the peers' liveness, then a
// pass (see Process). It panics on a host that is not driven.
func (h *Host) Tick() {
	if h.drive() {
		h.tick()
		h.pass()
	}
}

// Process is, for a driven host, one pass of the loop: it runs what
// Deliver, Propose and the like queued, handles every group's Ready, and
// hands what that produced to HostConfig.Send. It panics on a host that
// is not driven.
func (h *Host) Process() {
	if h.drive() {
		h.pass()
	}
}

// drive reports whether a driven host may run a pass: not once stopped.
func (h *Host) drive() bool {
	if !h.cfg.Driven {
		panic("cluster: Tick or Process on a host that is not driven (HostConfig.Driven)")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.stopped
}

// shutdown fails every pending proposal.
func (h *Host) shutdown() {
	ids := h.groupIDs()
	for _, id := range ids {
		h.groups[id].failPending(ErrStopped)
	}
	h.mu.Lock()
	q := h.queue
	h.queue = nil
	h.mu.Unlock()
	for _, fn := range q {
		fn() // proposals queued after the last pass fail below, as the groups are stopped
	}
	for _, id := range h.groupIDs() {
		g := h.groups[id]
		g.failPending(ErrStopped)
		g.failed = ErrStopped
	}
	h.expireAsks(ErrStopped)
}

// groupIDs returns the ids of the host's groups in order, for the walks
// whose order shows.
func (h *Host) groupIDs() []uint64 {
	return slices.Sorted(maps.Keys(h.groups))
}

// markReady queues g for the next process: it may have a Ready.
func (h *Host) markReady(g *Group) {
	if !g.inReady {
		g.inReady = true
		h.ready = append(h.ready, g)
	}
}

// activate makes g tick.
func (h *Host) activate(g *Group) {
	if g.activeAt < 0 {
		g.activeAt = len(h.active)
		h.active = append(h.active, g)
	}
}

// deactivate stops g ticking: the last active group takes its place.
func (h *Host) deactivate(g *Group) {
	i := g.activeAt
	if i < 0 {
		return
	}
	last := len(h.active) - 1
	h.active[i] = h.active[last]
	h.active[i].activeAt = i
	h.active[last] = nil
	h.active = h.active[:last]
	g.activeAt = -1
}

// post queues an envelope for peer to, sent at the end of the pass.
func (h *Host) post(to uint64, e Envelope) {
	q := h.out[to]
	if len(q) == 0 {
		h.outTo = append(h.outTo, to)
	}
	h.out[to] = append(q, e)
}

// tick advances every active group's clock, quiesces idle ones, and pings
// the peers.
func (h *Host) tick() {
	h.ticks++
	// Backwards: a group that quiesces leaves its place to the last one,
	// which was ticked already.
	for i := len(h.active) - 1; i >= 0; i-- {
		g := h.active[i]
		g.rn.Tick()
		g.idle++
		h.markReady(g)
		if g.cfg.CatchUpBytes > 0 && g.isLeader() {
			g.store.SetHorizon(g.applied, g.cfg.CatchUpBytes)
		}
		h.retryChunks(g)
		if len(g.reads) > 0 {
			h.expireReads(g)
		}
		if h.cfg.QuiesceTicks > 0 && g.idle >= h.cfg.QuiesceTicks {
			h.maybeQuiesce(g)
		}
	}
	// A group that failed while it led is silent, but its node is not:
	// its followers, quiesced, would wait for it for good. It tells them
	// every tick, so they wake and elect another leader.
	for _, id := range h.groupIDs() {
		if g := h.groups[id]; g.failed != nil && g.isLeader() {
			g.rn.WithProgress(func(id uint64, _ raft.ProgressType, _ tracker.Progress) {
				if id != h.cfg.NodeID {
					h.out[id] = append(h.out[id], Envelope{Group: g.cfg.ID, Msg: raftpb.Message{
						Type: raftpb.MsgHeartbeat, To: id, From: h.cfg.NodeID, Context: failedCtx}})
				}
			})
		}
	}
	if h.ticks%int64(h.cfg.RetentionTicks) == 0 {
		h.retain()
	}
	if len(h.asks) > 0 {
		h.expireAsks(nil)
	}
	for _, g := range h.active {
		if len(g.snapSent) == 0 {
			continue
		}
		for _, to := range slices.Sorted(maps.Keys(g.snapSent)) { // in order: a driven host repeats itself
			if h.ticks-g.snapSent[to] > int64(h.cfg.ElectionTicks) {
				delete(g.snapSent, to)
				g.rn.ReportSnapshot(to, raft.SnapshotFailure) // a no-op unless still sending it
				h.markReady(g)
			}
		}
	}
	// Liveness: one ping per peer per tick stands in for the heartbeats
	// of every quiesced group.
	for _, p := range h.peers {
		h.post(p, Envelope{Msg: raftpb.Message{Type: raftpb.MsgHeartbeat, From: h.cfg.NodeID, To: p}})
		last, ok := h.heard[p]
		if !ok {
			h.heard[p] = h.ticks
			continue
		}
		dead := h.ticks-last > int64(h.cfg.ElectionTicks)
		if dead && !h.deadPeers[p] {
			h.deadPeers[p] = true
			h.wakeLedBy(p)
		} else if !dead && h.deadPeers[p] {
			delete(h.deadPeers, p)
		}
	}
}

// wakeLedBy unquiesces the groups whose leader is node p, which went
// silent: they tick again, and elect a new leader. It also wakes the
// groups this node leads with p among their voters: a quiesced leader
// does not tick, so CheckQuorum would never step it down if it lost its
// quorum, and it would go on serving as leader while the others elect
// another.
func (h *Host) wakeLedBy(p uint64) {
	for _, id := range h.groupIDs() {
		g := h.groups[id]
		if !g.quiesced || g.failed != nil {
			continue
		}
		if g.leader == p || g.isLeader() && h.hasVoter(g, p) {
			h.unquiesce(g)
		}
	}
}

func (h *Host) hasVoter(g *Group, p uint64) bool {
	found := false
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, _ tracker.Progress) {
		if id == p {
			found = true
		}
	})
	return found
}

var (
	quiesceCtx = []byte("q")
	failedCtx  = []byte("f") // the leader's group failed (never stepped into Raft)
)

// maybeQuiesce puts a leader's idle group to sleep when every follower
// holds everything and knows it is committed, and tells the followers.
func (h *Host) maybeQuiesce(g *Group) {
	if g.failed != nil || !g.isLeader() || len(g.pending) > 0 || len(g.reads) > 0 {
		return
	}
	st := g.rn.BasicStatus()
	if st.LeadTransferee != 0 || st.Commit != g.lastIndex() || st.Applied != st.Commit {
		return
	}
	caughtUp := true
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		// A follower on a silent node holds the group awake: the leader
		// must keep ticking for CheckQuorum to step it down.
		if pr.Match != st.Commit || h.deadPeers[id] {
			caughtUp = false
		}
	})
	if !caughtUp {
		return
	}
	g.quiesced = true
	h.deactivate(g)
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, _ tracker.Progress) {
		if id == h.cfg.NodeID {
			return
		}
		h.post(id, Envelope{Group: g.cfg.ID, Msg: raftpb.Message{
			Type: raftpb.MsgHeartbeat, To: id, From: h.cfg.NodeID, Term: st.Term,
			Commit: st.Commit, Context: quiesceCtx,
		}})
	})
}

func (h *Host) unquiesce(g *Group) {
	if !g.quiesced {
		return
	}
	g.quiesced = false
	g.idle = 0
	h.activate(g)
	if g.isLeader() {
		// Heartbeat at once, so the followers answer before the leader's
		// next quorum check.
		_ = g.rn.Step(raftpb.Message{Type: raftpb.MsgBeat, From: h.cfg.NodeID, To: h.cfg.NodeID})
	}
	h.markReady(g)
}

// Deliver hands envelopes a peer sent to the host: the transport's
// handler. It queues them and returns.
func (h *Host) Deliver(from uint64, envs []Envelope) {
	h.do(func() { h.step(from, envs) })
}

func (h *Host) step(from uint64, envs []Envelope) {
	h.heard[from] = h.ticks
	for i := range envs {
		e := &envs[i]
		if e.Group == 0 {
			h.nodeMsg(from, e.Msg) // a ping, or a node request or answer
			continue
		}
		g := h.groups[e.Group]
		if g == nil || g.failed != nil {
			continue
		}
		if e.Msg.Type == raftpb.MsgHeartbeat && bytes.Equal(e.Msg.Context, failedCtx) {
			if g.leader == from {
				h.unquiesce(g) // its leader failed: tick, and elect another
			}
			continue
		}
		if h.catchUpMsg(g, from, e.Msg) {
			continue
		}
		if e.Msg.Type == raftpb.MsgSnap && !h.interceptSnap(g, e.Msg) {
			g.idle = 0
			h.unquiesce(g)
			continue
		}
		quiesce := e.Msg.Type == raftpb.MsgHeartbeat && bytes.Equal(e.Msg.Context, quiesceCtx)
		if quiesce {
			e.Msg.Context = nil
		}
		if err := g.rn.Step(e.Msg); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
			h.cfg.Logger.Debug("raft step", "group", e.Group, "from", from, "err", err)
		}
		h.markReady(g)
		if quiesce {
			st := g.rn.BasicStatus()
			// A replica with a read pending (CatchUp) stays awake: its
			// clock expires the read if the leader never answers.
			if st.Lead == e.Msg.From && st.Term == e.Msg.Term && st.Commit == e.Msg.Commit && !g.quiesced && len(g.reads) == 0 {
				g.quiesced = true
				h.deactivate(g)
			}
			continue
		}
		if t := e.Msg.Type; t != raftpb.MsgHeartbeat && t != raftpb.MsgHeartbeatResp {
			// Heartbeats are an idle group's own noise: the answers to a
			// quiescing leader's last heartbeat must not wake it.
			g.idle = 0
			h.unquiesce(g)
		}
	}
}

// process handles every group that may have a Ready, then sends what the
// pass produced, one batch per peer.
func (h *Host) process() {
	rdy := h.ready
	h.ready = h.spareRdy[:0]
	for i, g := range rdy {
		rdy[i] = nil
		g.inReady = false
		if g.failed != nil {
			continue
		}
		for g.rn.HasReady() && g.failed == nil {
			h.handleReady(g)
		}
	}
	h.spareRdy = rdy[:0]
	h.flush()
}

func (h *Host) flush() {
	for _, to := range h.outTo {
		h.cfg.Send(to, h.out[to])
		h.out[to] = nil
	}
	h.outTo = h.outTo[:0]
}

func (h *Host) send(msgs []raftpb.Message, g *Group, late bool) {
	for _, m := range msgs {
		if isLate(m.Type) != late {
			continue
		}
		h.post(m.To, Envelope{Group: g.cfg.ID, Msg: m})
		if m.Type == raftpb.MsgSnap {
			g.snapshotsSent++
			if g.snapSent == nil {
				g.snapSent = map[uint64]int64{}
			}
			g.snapSent[m.To] = h.ticks
		}
	}
}

// isLate says a message acknowledges entries or votes and must wait until
// the Ready's entries are durable; the others (a leader's appends and
// heartbeats, vote requests) may go as soon as the hard state is, which
// lets the leader's fsync run alongside its followers' (raft's README:
// messages may be sent while the same Ready's entries are persisted).
func isLate(t raftpb.MessageType) bool {
	return t == raftpb.MsgAppResp || t == raftpb.MsgVoteResp || t == raftpb.MsgPreVoteResp
}

func (h *Host) handleReady(g *Group) {
	rd := g.rn.Ready()
	if rd.SoftState != nil {
		g.setState(rd.SoftState)
	}
	if err := g.store.SetHardState(rd.HardState); err != nil {
		g.fail(h, err)
		return
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		// A snapshot comes before the entries of its Ready, which follow
		// it: the replica's log starts again at the leader's start.
		if err := g.store.ApplySnapshot(rd.Snapshot); err != nil {
			g.fail(h, err)
			return
		}
		g.applied = rd.Snapshot.Metadata.Index
		g.snapshots++
		start, _ := g.store.Log().Bounds()
		h.cfg.Logger.Info("installed a snapshot", "group", g.cfg.ID, "index", g.applied,
			"log_start", start, "entries_from", g.store.OffsetEnd(g.applied))
		if g.cfg.OnBatch != nil {
			h.replayFetched(g)
		}
	}
	h.send(rd.Messages, g, false)
	if err := g.store.Append(rd.Entries); err != nil {
		g.fail(h, err)
		return
	}
	if g.cfg.Sync && len(rd.Entries) > 0 {
		// What may go before the entries are durable goes now, not at the
		// end of the pass: a leader's appends reach its followers while it
		// fsyncs, so the two fsyncs overlap instead of following each
		// other. (Late messages of groups handled earlier in the pass are
		// durable already.)
		h.flush()
		if err := g.store.Sync(); err != nil {
			g.fail(h, err)
			return
		}
	}
	if len(rd.Entries) > 0 {
		g.idle = 0
		g.assign(rd.Entries)
	}
	h.send(rd.Messages, g, true)
	if !raft.IsEmptySnap(rd.Snapshot) {
		end := g.store.OffsetEnd(g.applied)
		if g.cfg.OnCommit != nil && end != g.committedEnd {
			g.cfg.OnCommit(end)
		}
		g.committedEnd = end
	}
	if n := len(rd.CommittedEntries); n > 0 {
		g.idle = 0
		// The log shows the committed batches before anyone hears of them
		// (proposals answered, OnBatch, OnCommit): readers of an acked
		// batch find it, and the partition log's visible end only ever
		// moves here (the shard leaves a replicated partition's alone).
		end := g.store.Commit(rd.CommittedEntries[n-1].Index)
		for _, e := range rd.CommittedEntries {
			switch e.Type {
			case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
				if err := h.applyConf(g, e); err != nil {
					g.fail(h, err)
					return
				}
			case raftpb.EntryNormal:
				if len(e.Data) > 0 && g.cfg.OnApply != nil {
					g.cfg.OnApply(e)
				}
				if len(e.Data) > 0 && g.cfg.OnBatch != nil {
					g.cfg.OnBatch(g.store.BaseOffset(e.Index), e.Data)
				}
			}
			g.resolve(e)
		}
		g.applied = rd.CommittedEntries[n-1].Index
		if g.cfg.OnApplied != nil {
			g.cfg.OnApplied()
		}
		if g.cfg.OnCommit != nil && end != g.committedEnd {
			g.cfg.OnCommit(end)
		}
		g.committedEnd = end
	}
	g.rn.Advance(rd)
	if len(g.reads) > 0 {
		h.serveReads(g, rd.ReadStates)
	}
}

// retain applies each group's retention (GroupConfig.Retention).
func (h *Host) retain() {
	now := h.cfg.Now()
	for _, id := range h.groupIDs() {
		g := h.groups[id]
		if g.cfg.Retention == nil || g.failed != nil {
			continue
		}
		age, bytes := g.cfg.Retention()
		if age <= 0 && bytes <= 0 {
			continue
		}
		floor := int64(math.MaxInt64)
		if g.cfg.Floor != nil {
			floor = g.cfg.Floor()
		}
		n, err := g.store.Retain(now, age, bytes, g.applied, floor)
		switch {
		case errors.Is(err, raftlog.ErrNoConfHistory):
			if !g.noHistory {
				g.noHistory = true
				h.cfg.Logger.Warn("retention not applied", "group", id, "err", err)
			}
		case err != nil:
			h.cfg.Logger.Warn("retention", "group", id, "err", err)
		case n > 0:
			h.cfg.Logger.Debug("retention removed segments", "group", id, "segments", n)
		}
	}
}

// applyConf applies a committed configuration change entry through raft
// (ApplyConfChange) and saves the configuration it makes before anything
// else happens. A change the saved configuration already includes (the
// controller replays its whole log on start) is skipped. A joining
// replica (GroupConfig.Join) that has no configuration yet first takes
// the one the change applies to from its context, one member at a time,
// as raft allows an empty configuration to be built up.
func (h *Host) applyConf(g *Group, e raftpb.Entry) error {
	if e.Index <= g.store.ConfIndex() {
		return nil
	}
	var cc raftpb.ConfChangeI
	if e.Type == raftpb.EntryConfChange {
		var c1 raftpb.ConfChange
		if err := c1.Unmarshal(e.Data); err != nil {
			return err
		}
		cc = c1
	} else {
		var c2 raftpb.ConfChangeV2
		if err := c2.Unmarshal(e.Data); err != nil {
			return err
		}
		if err := h.bootstrapConf(g, c2.Context); err != nil {
			return err
		}
		cc = c2
	}
	cs := g.rn.ApplyConfChange(cc)
	return g.store.ApplyConfState(*cs, e.Index)
}

// bootstrapConf gives a joining replica with no configuration the one a
// change's context names (ChangeConf writes it).
func (h *Host) bootstrapConf(g *Group, ctx []byte) error {
	_, cs, _ := g.store.InitialState()
	if len(ctx) == 0 || len(cs.Voters) > 0 || len(cs.Learners) > 0 {
		return nil
	}
	var base raftpb.ConfState
	if err := base.Unmarshal(ctx); err != nil {
		return fmt.Errorf("cluster: group %d: configuration change context: %w", g.cfg.ID, err)
	}
	add := func(id uint64, t raftpb.ConfChangeType) {
		g.rn.ApplyConfChange(raftpb.ConfChangeV2{Changes: []raftpb.ConfChangeSingle{{Type: t, NodeID: id}}})
	}
	for _, id := range base.Voters {
		add(id, raftpb.ConfChangeAddNode)
	}
	for _, id := range base.Learners {
		add(id, raftpb.ConfChangeAddLearnerNode)
	}
	return nil
}

// ChangeConf proposes a change of the group's configuration through this
// node, which must lead it: raft's ConfChangeV2, one change entering and
// then, on its own, leaving joint consensus when it changes more than one
// member, so that until the new configuration is in place every commit
// needs a quorum of the old one and of the new one. Its context is the
// configuration it applies to, for replicas that join (GroupConfig.Join).
// It returns once the change is proposed; Status shows it applied.
// ErrConfPending if another change is under way.
func (h *Host) ChangeConf(group uint64, changes []raftpb.ConfChangeSingle) error {
	return h.onGroup(group, false, func(g *Group) error {
		switch {
		case g.failed != nil:
			return g.failed
		case !g.isLeader():
			return &NotLeaderError{Group: group, Leader: g.leader}
		}
		_, cs, _ := g.store.InitialState()
		// Raft itself turns a second change into an empty entry while one
		// is pending; refusing here tells the caller, and makes sure the
		// context below is the configuration the change applies to.
		if len(cs.VotersOutgoing) > 0 || g.store.ConfChangeAfter(g.rn.BasicStatus().Applied) {
			return ErrConfPending
		}
		ctx, err := cs.Marshal()
		if err != nil {
			return err
		}
		if err := g.rn.ProposeConfChange(raftpb.ConfChangeV2{Changes: changes, Context: ctx}); err != nil {
			return err
		}
		g.idle = 0
		h.unquiesce(g)
		h.markReady(g)
		return nil
	})
}

// SetPeers sets the other nodes the host pings (HostConfig.Peers), as
// nodes join and leave the cluster.
func (h *Host) SetPeers(peers []uint64) {
	peers = slices.Clone(peers)
	h.do(func() {
		for p := range h.heard {
			if !slices.Contains(peers, p) {
				delete(h.heard, p)
				delete(h.deadPeers, p)
			}
		}
		h.peers = peers
	})
}

// Propose proposes a record batch to the group, through this node, which
// must lead it. The host copies the batch; done is called on the host's
// goroutine once the batch is committed, with the base offset the log
// stamped on it, or failed. done must not block.
func (h *Host) Propose(group uint64, batch []byte, done func(Result)) {
	if len(batch) < wire.BatchHeaderSize || wire.BatchSize(batch) != len(batch) {
		done(Result{Err: ErrBadBatch})
		return
	}
	data := append([]byte(nil), batch...)
	if !h.do(func() { h.propose(group, data, done) }) {
		done(Result{Err: ErrStopped})
	}
}

func (h *Host) propose(group uint64, data []byte, done func(Result)) {
	g := h.groups[group]
	switch {
	case g == nil:
		done(Result{Err: ErrNoGroup})
		return
	case g.failed != nil:
		done(Result{Err: g.failed})
		return
	case !g.isLeader():
		done(Result{Err: &NotLeaderError{Group: group, Leader: g.otherLeader(h.cfg.NodeID)}})
		return
	}
	if err := g.rn.Propose(data); err != nil {
		if errors.Is(err, raft.ErrProposalDropped) {
			err = &NotLeaderError{Group: group, Leader: g.otherLeader(h.cfg.NodeID)}
		}
		done(Result{Err: err})
		return
	}
	g.pending = append(g.pending, proposal{data: data, done: done})
	g.idle = 0
	h.unquiesce(g)
	h.markReady(g)
}

// ProposeForward proposes a record batch to the group from any replica:
// a follower forwards it to the leader (GroupConfig.Forward must be set).
// Nobody is told its outcome: the caller learns it by seeing the entry
// applied (OnApply), as etcd matches requests by id, and retries after a
// timeout. It fails at once only when no leader is known or the group is
// not here.
func (h *Host) ProposeForward(group uint64, batch []byte) error {
	if len(batch) < wire.BatchHeaderSize || wire.BatchSize(batch) != len(batch) {
		return ErrBadBatch
	}
	data := append([]byte(nil), batch...)
	return h.onGroup(group, false, func(g *Group) error {
		if g.failed != nil {
			return g.failed
		}
		if err := g.rn.Propose(data); err != nil {
			return &NotLeaderError{Group: group, Leader: g.otherLeader(h.cfg.NodeID)}
		}
		g.idle = 0
		h.unquiesce(g)
		h.markReady(g)
		return nil
	})
}

// AddGroup creates a group on this host from cfg, recovering its state
// from the log and meta file.
func (h *Host) AddGroup(cfg GroupConfig) error {
	if cfg.ID == 0 {
		return errors.New("cluster: group id 0 is reserved")
	}
	store := cfg.Store
	if store == nil {
		var err error
		if store, err = raftlog.Open(cfg.Log, cfg.Meta); err != nil {
			return err
		}
	}
	hs, cs, _ := store.InitialState()
	if len(cs.Voters) == 0 && len(cs.Learners) == 0 && !cfg.Join {
		if len(cfg.Voters) == 0 {
			return fmt.Errorf("cluster: group %d has no configuration and no voters were given", cfg.ID)
		}
		if err := store.SetConfState(raftpb.ConfState{Voters: cfg.Voters}); err != nil {
			return err
		}
	}
	applied := hs.Commit
	if cfg.ApplyFromStart {
		applied = 0
	}
	var rerr error
	err := h.call(func() {
		if h.groups[cfg.ID] != nil {
			rerr = ErrGroupExists
			return
		}
		rn, err := raft.NewRawNode(&raft.Config{
			ID:                        h.cfg.NodeID,
			ElectionTick:              h.cfg.ElectionTicks,
			HeartbeatTick:             h.cfg.HeartbeatTicks,
			Storage:                   store,
			Applied:                   applied,
			MaxSizePerMsg:             1 << 20,
			MaxCommittedSizePerReady:  64 << 20,
			MaxUncommittedEntriesSize: 256 << 20,
			MaxInflightMsgs:           256,
			CheckQuorum:               true,
			PreVote:                   true,
			// A leader that a configuration change removes (or demotes)
			// hands over at once rather than lead a group it is not in.
			StepDownOnRemoval:         true,
			DisableProposalForwarding: !cfg.Forward,
			Logger:                    raftLogger{h.cfg.Logger.With("group", cfg.ID)},
		})
		if err != nil {
			rerr = err
			return
		}
		g := &Group{cfg: cfg, rn: rn, store: store, committedEnd: store.OffsetEnd(applied), activeAt: -1, applied: applied}
		h.groups[cfg.ID] = g
		h.activate(g)
		h.markReady(g)
	})
	if err != nil {
		return err
	}
	return rerr
}

// RemoveGroup stops a group on this host and fails what it has pending.
// It does not close the group's log.
func (h *Host) RemoveGroup(id uint64) error {
	var found *Group
	err := h.call(func() {
		g := h.groups[id]
		if g == nil {
			return
		}
		found = g
		g.failPending(ErrNoGroup)
		delete(h.groups, id)
		h.deactivate(g)
		if g.inReady {
			g.inReady = false
			h.ready = slices.DeleteFunc(h.ready, func(r *Group) bool { return r == g })
		}
	})
	if err == nil && found == nil {
		err = ErrNoGroup
	}
	if found != nil {
		found.runs.Wait() // no read of its log goes on once the caller closes it
	}
	return err
}

// TransferLeader asks the group's leader on this node to hand leadership
// to node to.
func (h *Host) TransferLeader(group, to uint64) error {
	return h.onGroup(group, true, func(g *Group) error {
		h.unquiesce(g)
		g.rn.TransferLeader(to)
		h.markReady(g)
		return nil
	})
}

// onGroup runs fn on the host's goroutine with the group's Group and
// returns its error: ErrNoGroup instead when the group is not on this
// host, a NotLeaderError when leader is set and this replica does not
// lead it, or the host's own (stopped).
func (h *Host) onGroup(group uint64, leader bool, fn func(g *Group) error) error {
	var rerr error
	err := h.call(func() {
		g := h.groups[group]
		switch {
		case g == nil:
			rerr = ErrNoGroup
		case leader && !g.isLeader():
			rerr = &NotLeaderError{Group: group, Leader: g.otherLeader(h.cfg.NodeID)}
		default:
			rerr = fn(g)
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// SetSync changes whether the group fsyncs its appends before
// acknowledging them (GroupConfig.Sync).
func (h *Host) SetSync(group uint64, sync bool) error {
	return h.onGroup(group, false, func(g *Group) error {
		g.cfg.Sync = sync
		return nil
	})
}

// Campaign makes this node's replica of the group start an election now.
func (h *Host) Campaign(group uint64) error {
	return h.onGroup(group, false, func(g *Group) error {
		h.unquiesce(g)
		err := g.rn.Campaign()
		h.markReady(g)
		return err
	})
}

// GroupStatus is what a host knows of one group.
type GroupStatus struct {
	ID        uint64
	Leader    uint64
	Term      uint64
	Vote      uint64 // the node this replica voted for in Term (0: none)
	State     string
	Commit    uint64
	LastIndex uint64
	EndOffset int64 // committed end offset
	Quiesced  bool
	Voters    []uint64
	Learners  []uint64
	// Outgoing are the voters of the configuration being left, during
	// joint consensus (empty otherwise).
	Outgoing []uint64
	// ConfPending says the log holds a configuration change this replica
	// has not applied yet: Voters, Learners and Outgoing are about to
	// change.
	ConfPending bool
	// Match is, on the leader, each replica's highest index known to be in
	// its log (nil elsewhere).
	Match  map[uint64]uint64
	Failed string
	// FirstIndex is the first entry the log holds (retention compacted
	// the ones before); Snapshots counts the snapshots this replica
	// installed, and SnapshotsSent those it sent as leader, since it
	// started.
	FirstIndex               uint64
	Snapshots, SnapshotsSent int
	// Fetched is the bytes of batches this replica fetched whole to
	// catch up (catchup.go), and ChunksServed the chunks it sent to
	// replicas that did, since it started; Fetching says a fetch is
	// under way.
	Fetched      int64
	ChunksServed int
	Fetching     bool
}

// Status reports on one group.
func (h *Host) Status(group uint64) (GroupStatus, error) {
	var st GroupStatus
	err := h.onGroup(group, false, func(g *Group) error {
		bs := g.rn.BasicStatus()
		st = GroupStatus{
			ID: group, Leader: bs.Lead, Term: bs.Term, Vote: bs.Vote, State: bs.RaftState.String(),
			Commit: bs.Commit, LastIndex: g.lastIndex(), EndOffset: g.committedEnd, Quiesced: g.quiesced,
			Snapshots: g.snapshots, SnapshotsSent: g.snapshotsSent,
			Fetched: g.fetchedBytes, ChunksServed: g.chunksServed, Fetching: g.catchUp != nil,
		}
		st.FirstIndex, _ = g.store.FirstIndex()
		_, cs, _ := g.store.InitialState()
		st.Voters = append(st.Voters, cs.Voters...)
		st.Learners = append(st.Learners, cs.Learners...)
		st.Outgoing = append(st.Outgoing, cs.VotersOutgoing...)
		st.ConfPending = g.store.ConfChangeAfter(g.applied)
		if g.isLeader() {
			st.Match = map[uint64]uint64{}
			g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) { st.Match[id] = pr.Match })
		}
		if g.failed != nil {
			st.Failed = g.failed.Error()
		}
		return nil
	})
	return st, err
}

// Reachable reports whether node id was heard from within an election
// timeout (its pings arrive).
func (h *Host) Reachable(id uint64) bool {
	var ok bool
	_ = h.call(func() { ok = h.reachable(id) })
	return ok
}

func (h *Host) reachable(id uint64) bool {
	last, heard := h.heard[id]
	return heard && h.ticks-last <= int64(h.cfg.ElectionTicks) && !h.deadPeers[id]
}

// TransferTarget picks the replica to hand the leadership of group,
// which this node must lead, to: among the other voters this node hears
// from (Reachable), one whose log holds all of the leader's (its match is
// the leader's last index), else the one whose log holds the most; the
// lower id on a tie. It is 0 when no other voter is reachable: a transfer
// to a node that is down would only stall the group's proposals until
// Raft gave up on it.
func (h *Host) TransferTarget(group uint64) (uint64, error) {
	var to uint64
	err := h.onGroup(group, true, func(g *Group) error {
		var best uint64
		g.rn.WithProgress(func(id uint64, typ raft.ProgressType, pr tracker.Progress) {
			if id == h.cfg.NodeID || typ != raft.ProgressTypePeer || pr.IsLearner || !h.reachable(id) {
				return
			}
			if to == 0 || pr.Match > best || pr.Match == best && id < to {
				to, best = id, pr.Match
			}
		})
		return nil
	})
	if err != nil {
		return 0, err
	}
	return to, nil
}

// Groups returns the ids of the groups on this host, in order.
func (h *Host) Groups() []uint64 {
	var ids []uint64
	_ = h.call(func() { ids = h.groupIDs() })
	return ids
}

// Group is one Raft group on a host. Only the host's goroutine touches it.
type Group struct {
	cfg   GroupConfig
	rn    *raft.RawNode
	store *raftlog.Storage

	leader       uint64
	state        raft.StateType
	committedEnd int64
	pending      []proposal    // in proposal order
	reads        []pendingRead // ReadIndex calls not answered yet, in order
	idle         int           // ticks without activity
	quiesced     bool
	failed       error
	activeAt     int  // index in Host.active, -1 when not ticking
	inReady      bool // in Host.ready
	applied      uint64
	// snapSent is, per follower sent a snapshot, the tick it was sent
	// at. A snapshot is whole in its message (raftlog.Storage.Snapshot):
	// the follower's answer takes raft out of sending it; if none came
	// within an election timeout (the message was lost, or the follower
	// could not install it), the host reports it failed, and raft sends
	// it again if it is still needed: at most once per election timeout.
	snapSent      map[uint64]int64
	snapshots     int // installed (GroupStatus)
	snapshotsSent int
	noHistory     bool // retention refused for want of history, logged once
	catchUp       *catchUp
	serving       map[uint64]bool // requesters whose run of chunks is being read (serveChunk)
	runs          sync.WaitGroup  // those reads, which RemoveGroup waits for
	fetchedBytes  int64
	chunksServed  int
}

type proposal struct {
	data  []byte
	done  func(Result)
	index uint64 // 0 until the entry is seen appended
	term  uint64
}

func (g *Group) isLeader() bool { return g.state == raft.StateLeader }

// otherLeader is the leader to name in a refusal: the one this replica
// knows, unless that is itself (a leader handing its leadership over
// drops proposals while it still leads), which NotLeaderError must not
// name.
func (g *Group) otherLeader(self uint64) uint64 {
	if g.leader == self {
		return 0
	}
	return g.leader
}

func (g *Group) lastIndex() uint64 {
	i, _ := g.store.LastIndex()
	return i
}

func (g *Group) setState(ss *raft.SoftState) {
	wasLeader := g.isLeader()
	changed := ss.Lead != g.leader
	g.leader, g.state = ss.Lead, ss.RaftState
	if wasLeader && !g.isLeader() {
		// Stepped down: what is pending may or may not commit. Every
		// pending proposal is in Raft's log since RawNode.Propose took it,
		// whether or not this node saw it appended yet (index 0: the
		// step-down came in the pass that proposed it, and this Ready
		// still appends it), so each one's outcome is unknown
		// (TestStepDownWithQueuedProposal).
		for _, p := range g.pending {
			p.done(Result{Err: &NotLeaderError{Group: g.cfg.ID, Leader: ss.Lead, Unknown: true}})
		}
		g.pending = g.pending[:0]
		// A read not confirmed yet never will be: raft forgets it.
		g.failReads(&NotLeaderError{Group: g.cfg.ID, Leader: ss.Lead})
	}
	if !wasLeader && g.isLeader() && g.cfg.CatchUpBytes > 0 {
		// The horizon at once, not at the next tick: a replica far behind
		// that the new leader probes before then would get the whole log
		// entry by entry.
		g.store.SetHorizon(g.applied, g.cfg.CatchUpBytes)
	}
	if changed && g.cfg.OnLeader != nil {
		g.cfg.OnLeader(ss.Lead, g.rn.BasicStatus().Term)
	}
}

// assign records the index and term of this leader's proposals as their
// entries are appended.
func (g *Group) assign(ents []raftpb.Entry) {
	k := 0
	for k < len(g.pending) && g.pending[k].index != 0 {
		k++
	}
	for _, e := range ents {
		if k >= len(g.pending) {
			return
		}
		if e.Type != raftpb.EntryNormal || len(e.Data) == 0 {
			continue
		}
		p := &g.pending[k]
		if &e.Data[0] == &p.data[0] {
			p.index, p.term = e.Index, e.Term
			k++
		}
	}
}

// resolve answers the proposals that entry e decides: the one it is, and
// any before it that never made it.
func (g *Group) resolve(e raftpb.Entry) {
	n := 0
	for n < len(g.pending) {
		p := g.pending[n]
		if p.index == 0 || p.index > e.Index {
			break
		}
		if p.index == e.Index && p.term == e.Term {
			p.done(Result{Base: g.store.BaseOffset(e.Index)})
		} else {
			p.done(Result{Err: ErrProposalLost})
		}
		n++
	}
	if n > 0 {
		g.pending = append(g.pending[:0], g.pending[n:]...)
	}
}

func (g *Group) failPending(err error) {
	for _, p := range g.pending {
		p.done(Result{Err: err})
	}
	g.pending = g.pending[:0]
	g.failReads(err)
}

// fail stops the group after a storage error: Raft's state can no longer
// be trusted to match the disk, so it neither votes nor acknowledges again
// until the node restarts and recovers the log.
func (g *Group) fail(h *Host, err error) {
	h.cfg.Logger.Error("raft group failed", "group", g.cfg.ID, "err", err)
	g.failed = fmt.Errorf("%w: %w", ErrGroupFailed, err)
	g.failPending(g.failed)
	h.deactivate(g)
}

package cluster

import (
	"encoding/binary"
	"errors"

	"go.etcd.io/raft/v3"
)

// Linearizable reads: Raft's ReadIndex (the Raft thesis, §6.4; etcd
// raft's RawNode.ReadIndex and Ready.ReadStates). A node that believes it
// leads a group may have been deposed without knowing it yet: a quorum
// elected another leader while it was cut off or paused, and it steps
// down only once it hears of the new term or its CheckQuorum notices the
// silence, up to an election timeout later. State it serves meanwhile may
// be stale. ReadIndex closes that window: the leader notes its commit
// index, confirms with one round of heartbeats that a quorum still
// follows it (so no other leader was elected since the read began), and
// the read is answered once the group has applied up to the noted index.

// ErrReadTimeout says a ReadIndex was not confirmed within two election
// timeouts: no quorum answered the leader's heartbeats. CheckQuorum
// usually steps such a leader down first (a NotLeaderError).
var ErrReadTimeout = errors.New("cluster: leadership not confirmed in time (no quorum answered)")

// ReadState is a confirmed ReadIndex.
type ReadState struct {
	// Index is the leader's commit index when it took the read; the group
	// had applied it when the read was answered.
	Index uint64
	// Term is the term this node was confirmed to lead the group in.
	Term uint64
}

// pendingRead is a ReadIndex not answered yet.
type pendingRead struct {
	id    uint64
	term  uint64
	index uint64 // the read index once raft confirmed it; 0 before
	ok    bool   // confirmed: index is set
	at    int64  // the host's tick when it was asked
	done  func(ReadState, error)
}

// readCtxTag starts a ReadIndex's request context, followed by its id
// (8 bytes): the heartbeats that confirm it carry it as their context,
// and it is never the 1-byte context of the host's quiescence markers.
const readCtxTag = 'r'

// ReadIndex confirms that this node still leads the group, for a read
// that must not be stale (a linearizable read): done gets the read's
// index and term once a quorum confirmed the leadership after ReadIndex
// was called and the group has applied every entry committed before, so
// that state the caller reads then reflects every entry committed before
// it called ReadIndex. done runs on the host's goroutine and must not
// block; it is called exactly once.
//
// A follower (or a candidate) is refused at once with a NotLeaderError
// naming the leader it knows: it does not forward the read, as the
// reader (a consumer-group coordinator) must lead the group itself. A
// leader that steps down before the quorum answers fails the read with
// a NotLeaderError; one that hears from no quorum fails it after two
// election timeouts at the latest (ErrReadTimeout). A quiesced group is
// woken (its leader ticks, and its heartbeats carry the read), and does
// not quiesce again while a read is pending.
func (h *Host) ReadIndex(group uint64, done func(ReadState, error)) {
	if !h.do(func() { h.read(group, false, done) }) {
		done(ReadState{}, ErrStopped)
	}
}

// CatchUp calls done once this node's replica of the group, leader,
// follower or learner, has applied every entry the group committed
// before CatchUp was called: a ReadIndex that a follower forwards to its
// leader (etcd raft answers it with the leader's commit index once a
// quorum confirmed the leadership), answered here once this replica
// applied that index. A replica that knows no leader is refused at once
// (a NotLeaderError naming none); a read the leader never answers (it
// lost its leadership, or the message) fails after two election
// timeouts (ErrReadTimeout). done runs on the host's goroutine, exactly
// once, and must not block.
func (h *Host) CatchUp(group uint64, done func(ReadState, error)) {
	if !h.do(func() { h.read(group, true, done) }) {
		done(ReadState{}, ErrStopped)
	}
}

// read takes a ReadIndex on the leader, or through it on any replica.
func (h *Host) read(group uint64, anyReplica bool, done func(ReadState, error)) {
	g := h.groups[group]
	switch {
	case g == nil:
		done(ReadState{}, ErrNoGroup)
		return
	case g.failed != nil:
		done(ReadState{}, g.failed)
		return
	case g.isLeader():
	case !anyReplica || g.leader == 0:
		done(ReadState{}, &NotLeaderError{Group: group, Leader: g.otherLeader(h.cfg.NodeID)})
		return
	}
	h.readSeq++
	g.reads = append(g.reads, pendingRead{id: h.readSeq, term: g.rn.BasicStatus().Term, at: h.ticks, done: done})
	h.unquiesce(g)
	g.rn.ReadIndex(binary.BigEndian.AppendUint64([]byte{readCtxTag}, h.readSeq))
	h.markReady(g)
}

// serveReads notes the reads raft confirmed (a Ready's ReadStates) and
// answers those whose index the group has applied.
func (h *Host) serveReads(g *Group, states []raft.ReadState) {
	for _, rs := range states {
		ctx := rs.RequestCtx
		if len(ctx) != 9 || ctx[0] != readCtxTag {
			continue
		}
		id := binary.BigEndian.Uint64(ctx[1:])
		for i := range g.reads {
			if r := &g.reads[i]; r.id == id {
				r.index, r.ok = rs.Index, true
				break
			}
		}
	}
	applied := g.rn.BasicStatus().Applied
	n := 0
	for _, r := range g.reads {
		if r.ok && r.index <= applied {
			r.done(ReadState{Index: r.index, Term: r.term}, nil)
			continue
		}
		g.reads[n] = r
		n++
	}
	clear(g.reads[n:])
	g.reads = g.reads[:n]
}

// expireReads fails the reads of g asked more than two election
// timeouts ago.
func (h *Host) expireReads(g *Group) {
	limit := int64(2 * h.cfg.ElectionTicks)
	n := 0
	for _, r := range g.reads {
		if h.ticks-r.at > limit {
			r.done(ReadState{}, ErrReadTimeout)
			continue
		}
		g.reads[n] = r
		n++
	}
	clear(g.reads[n:])
	g.reads = g.reads[:n]
}

// failReads fails every pending read of g with err.
func (g *Group) failReads(err error) {
	reads := g.reads
	g.reads = nil
	for _, r := range reads {
		r.done(ReadState{}, err)
	}
}

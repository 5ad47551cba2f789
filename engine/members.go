package engine

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Membership: the controller's metadata says which nodes are members of
// the cluster (meta.State.Members) and which nodes each partition's
// replicas are on (PartitionInfo.Replicas); the Raft groups' own
// configurations follow it. The leader of each group (the controller
// included) compares the two every memberInterval (a partition's only while
// it has not matched the same metadata in this term: settledConf) and takes one step of
// etcd raft's configuration changes (cluster.Host.ChangeConf) towards the
// metadata:
//
//  1. a node the metadata names that the group lacks is added as a
//     learner: it receives the log but counts for no quorum;
//  2. a leader the metadata no longer names hands its leadership to a
//     voter it does name (when there is none, as for a partition of one
//     replica, it makes the next change itself and steps down after);
//  3. once every learner holds the log up to memberCatchUp entries of the
//     leader's commit, one change promotes them and removes the voters the
//     metadata no longer names. Raft makes it a joint consensus change:
//     until the group has left it, on its own, every commit needs a quorum
//     of the old voters and one of the new, so no acknowledged batch can
//     be lost by the move.
//
// A node adds a group it holds a replica of in the metadata (starting it
// empty, to be caught up), and drops its replica's log once its group's
// configuration no longer has it (reconcileReplicas).

const (
	memberInterval = 250 * time.Millisecond
	// memberCatchUp is how far behind the leader's commit a learner may
	// be to be promoted. It keeps a busy group from waiting for a learner
	// to match an end that moves; safety does not depend on it (joint
	// consensus does that), only how soon the new voter counts.
	memberCatchUp = 256
)

// removedError is a refusal because the node was removed; errors.Is finds
// meta.ErrNodeRemoved in it.
type removedError struct{ err *wire.Error }

func (e removedError) Error() string   { return e.err.Error() }
func (e removedError) Unwrap() []error { return []error{e.err, meta.ErrNodeRemoved} }

// holds reports whether this node should hold a replica of the partition:
// the metadata names it, or its group's configuration here still does (a
// replica moving away serves until the change that removes it). It asks
// the host, so callers ask only for a group that runs here.
func (c *clusterNode) holds(pi meta.PartitionInfo) bool {
	if pi.Holds(c.id) {
		return true
	}
	st, err := c.host.Status(pi.Group)
	return err == nil && st.Failed == "" && inConf(st, c.id)
}

func inConf(st cluster.GroupStatus, id uint64) bool {
	return slices.Contains(st.Voters, id) || slices.Contains(st.Learners, id) || slices.Contains(st.Outgoing, id)
}

// members runs in the background: it moves the configurations of the
// groups this node leads towards the metadata, and wakes the applier when
// a replica here left its group.
func (c *clusterNode) members() {
	t := time.NewTicker(memberInterval)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		v := c.view.Load()
		if _, ok := v.Node(c.id); ok {
			c.converge(meta.ControllerGroup, c.controllerTarget(v), nil)
		}
		if c.readers != nil && c.e != nil && c.e.groups != nil {
			c.tendReaders(v)
		}
		stale := false
		c.replicas.Range(func(_, x any) bool {
			rep := x.(*replica)
			if !rep.local {
				return true
			}
			group, replicas, readers, ok := v.Placement(rep.topic, int(rep.part))
			if !ok || group != rep.group {
				return true
			}
			c.tendReplica(rep, replicas, readers)
			if !slices.Contains(replicas, c.id) && !slices.Contains(readers, c.id) {
				pi, _ := v.Partition(rep.topic, int(rep.part))
				if !c.holds(pi) {
					stale = true
				}
			}
			return true
		})
		if stale {
			c.wakeApplier()
		}
	}
}

func (c *clusterNode) wakeApplier() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// controllerTarget is the controller group's configuration as the
// metadata wants it: its members, and any voter the metadata has not
// heard of yet (an initial peer that has not registered) — only a node
// the metadata removed leaves it.
func (c *clusterNode) controllerTarget(v *meta.State) []uint64 {
	target := v.Members()
	st, err := c.host.Status(meta.ControllerGroup)
	if err != nil {
		return nil
	}
	for _, id := range st.Voters {
		if _, known := v.Node(id); !known && !slices.Contains(target, id) {
			target = append(target, id)
		}
	}
	slices.Sort(target)
	return target
}

// tendReplica converges the group of a replica here, if this node leads
// it, towards its replicas and readers in the metadata. A group whose
// configuration matched the same metadata in this leader's term, with no
// configuration change in its log still to apply, is not asked again:
// four host round trips a second for each of a thousand idle partitions
// were most of their cost.
func (c *clusterNode) tendReplica(rep *replica, replicas, readers []uint64) {
	if term := rep.term.Load(); rep.leader.Load() == c.id && (term != rep.settled.term ||
		!slices.Equal(replicas, rep.settled.voters) || !slices.Equal(readers, rep.settled.readers)) {
		if c.converge(rep.group, replicas, readers) {
			rep.settled = settledConf{term, replicas, readers}
		}
	}
}

// settledConf is the metadata a group's configuration last matched, in
// its leader's term (members).
type settledConf struct {
	term            uint64
	voters, readers []uint64
}

// converge takes one step of the group's configuration towards target
// (its voters) and readers (learners that stay learners), if this node
// leads the group (see the comment at the top). It reports whether the
// configuration already matches: nothing to do.
func (c *clusterNode) converge(group uint64, target, readers []uint64) (settled bool) {
	st, err := c.host.Status(group)
	if err != nil || st.Failed != "" || st.Leader != c.id || st.Match == nil || len(st.Outgoing) > 0 || len(target) == 0 {
		return false
	}
	if sameSet(st.Voters, target) && sameSet(st.Learners, readers) {
		// A change still to apply (proposed for metadata that changed
		// since) would move the configuration away from it after this:
		// not settled until it applied.
		return !st.ConfPending
	}
	var changes []raftpb.ConfChangeSingle
	for _, id := range append(slices.Clone(target), readers...) {
		if !slices.Contains(st.Voters, id) && !slices.Contains(st.Learners, id) {
			changes = append(changes, raftpb.ConfChangeSingle{Type: raftpb.ConfChangeAddLearnerNode, NodeID: id})
		}
	}
	if len(changes) > 0 {
		c.changeConf(group, changes)
		return false
	}
	if !slices.Contains(target, c.id) {
		for _, id := range target {
			if slices.Contains(st.Voters, id) && c.host.Reachable(id) {
				_ = c.host.TransferLeader(group, id)
				return false
			}
		}
		// No voter to hand over to (a one-replica partition moving): this
		// leader carries the change out itself, and steps down when it
		// leaves the joint configuration.
	}
	for _, id := range st.Learners {
		switch {
		case slices.Contains(readers, id) && !slices.Contains(target, id):
			// a reader: a learner for good
		case !slices.Contains(target, id):
			changes = append(changes, raftpb.ConfChangeSingle{Type: raftpb.ConfChangeRemoveNode, NodeID: id})
		case st.Match[id] == 0 || st.Match[id]+memberCatchUp < st.Commit:
			return false // not caught up yet (a learner that matched nothing has not been heard from)
		default:
			changes = append(changes, raftpb.ConfChangeSingle{Type: raftpb.ConfChangeAddNode, NodeID: id})
		}
	}
	for _, id := range st.Voters {
		switch {
		case slices.Contains(target, id):
		case slices.Contains(readers, id):
			changes = append(changes, raftpb.ConfChangeSingle{Type: raftpb.ConfChangeAddLearnerNode, NodeID: id}) // demoted
		default:
			changes = append(changes, raftpb.ConfChangeSingle{Type: raftpb.ConfChangeRemoveNode, NodeID: id})
		}
	}
	if len(changes) > 0 {
		c.changeConf(group, changes)
	}
	return false
}

// sameSet reports whether a and b hold the same ids, in any order.
func sameSet(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for _, id := range a {
		if !slices.Contains(b, id) {
			return false
		}
	}
	return true
}

func (c *clusterNode) changeConf(group uint64, changes []raftpb.ConfChangeSingle) {
	if err := c.host.ChangeConf(group, changes); err != nil {
		c.logger().Debug("raft configuration change not proposed", "group", group, "err", err)
		return
	}
	c.logger().Info("raft configuration change proposed", "group", group, "changes", raftpb.ConfChangesToString(changes))
}

// logger is the engine's logger (none for the review tests' nodes, which
// run without an engine).
func (c *clusterNode) logger() *slog.Logger {
	if c.e == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.e.log
}

// reconcileReplicas rebuilds the partitions whose replica here was added
// or left its group since they were built (registry.replacePartition).
func (c *clusterNode) reconcileReplicas(v *meta.State) {
	for _, name := range v.Topics() {
		ti, _ := v.Topic(name)
		t := c.e.topics.get([]byte(name))
		if t == nil {
			continue
		}
		for i := range ti.Partitions {
			pi, _ := v.Partition(name, i)
			rep, ok := t.Parts[i].Replica.(*replica)
			// Only a group running here can still have this node when the
			// metadata does not (a host round trip per partition is spared
			// the others).
			if !ok || rep.group != pi.Group || rep.local == (pi.Holds(c.id) || rep.local && c.holds(pi)) {
				continue
			}
			if err := c.e.topics.replacePartition(name, i); err != nil {
				c.e.log.Error("a partition whose replica here was added or moved away could not be rebuilt",
					"topic", name, "partition", i, "err", err)
				continue
			}
			c.e.log.Info("replica of a partition here "+map[bool]string{true: "added", false: "removed"}[!rep.local],
				"topic", name, "partition", i, "group", pi.Group, "reader", slices.Contains(pi.Readers, c.id))
			// The groups consuming the topic here read the old partition:
			// they start again over the new one, at once if it is offline
			// here now, else once it caught up (readers.go).
			if !rep.local {
				c.readers.added(name, pi.Group)
			} else if nt := c.e.topics.get([]byte(name)); nt != nil {
				c.e.groups.TopicReplaced(topic.Group{T: nt})
			}
		}
	}
}

// syncPeers gives the transport the members' addresses, the host the
// members to ping, and
// has them forget a removed node once no group here still has it. It
// notices when this node itself was removed.
func (c *clusterNode) syncPeers(v *meta.State) {
	var peers []uint64
	for id := range c.e.cfg.Peers { // the initial peers, until they register
		if _, known := v.Node(id); !known && id != c.id {
			peers = append(peers, id)
		}
	}
	for _, n := range v.Nodes() {
		if n.ID == c.id {
			if n.Status == meta.NodeRemoved {
				c.refuseRemoved()
			}
			continue
		}
		if n.Status != meta.NodeRemoved {
			peers = append(peers, n.ID)
			// A node of --peers is where the configuration (or SetPeer)
			// says: the metadata may hold an older address of it, and
			// following that could cut off a quorum that moved. Any other
			// node is where it last registered.
			set := c.tr.SetPeer
			if _, initial := c.e.cfg.Peers[n.ID]; initial {
				set = c.tr.AddPeer
			}
			if n.ClusterAddr != "" {
				if err := set(n.ID, n.ClusterAddr); err != nil {
					c.e.log.Warn("cluster peer address", "node", n.ID, "addr", n.ClusterAddr, "err", err)
				}
			}
			continue
		}
		if !c.hasMember(n.ID) {
			c.tr.RemovePeer(n.ID)
		}
	}
	slices.Sort(peers)
	c.host.SetPeers(peers)
}

// hasMember reports whether a group on this node may still need node id:
// its configuration has it, it knows id as its leader, or it has no
// configuration yet. The last is a replica just added here to take over
// from a node being removed (a partition of one replica moving): it
// learns its configuration from that node's log, and would never hear
// from it, nor answer it, if the node were dropped from the transport
// first (the move then hung: the old leader promoted the learner and
// stepped down, and neither could reach the other to finish).
func (c *clusterNode) hasMember(id uint64) bool {
	for _, g := range c.host.Groups() {
		st, err := c.host.Status(g)
		if err != nil {
			continue
		}
		if inConf(st, id) || st.Leader == id || len(st.Voters) == 0 && len(st.Learners) == 0 && len(st.Outgoing) == 0 {
			return true
		}
	}
	return false
}

// refuseRemoved says, once, that this node was removed and does not
// rejoin (its registration is refused too). Its groups are left to the
// moves: it leads until it hands over, and each replica is dropped once
// its group's configuration no longer has it.
func (c *clusterNode) refuseRemoved() {
	if c.removed.Swap(true) {
		return
	}
	c.e.log.Error("this node was removed from the cluster and does not rejoin it: node ids are never reused; "+
		"to bring this machine back, start it with a new --node-id and an empty data directory and add it "+
		"(ratatoskr cluster add-node)", "node", c.id)
}

// addNode records a new node, which an operator started with its own
// --node-id and --cluster-addr and the members' addresses as --peers:
// the controller's leader adds it to the controller group, and it
// registers once caught up.
func (c *clusterNode) addNode(ctx context.Context, id uint64, clusterAddr string) error {
	return c.propose(ctx, meta.JoinNode{ID: id, ClusterAddr: clusterAddr})
}

// removeNode removes a node for good: the metadata moves its replicas to
// other nodes at once, the groups' leaders carry the moves out, and the
// controller's leader removes it from the controller group.
func (c *clusterNode) removeNode(ctx context.Context, id uint64) error {
	if id == 0 {
		return wire.Errorf(wire.CodeInvalidArgument, "node id 0 is reserved")
	}
	if _, ok := c.view.Load().Node(id); !ok {
		return wire.Errorf(wire.CodeInvalidArgument, "no node "+strconv.FormatUint(id, 10)+" in the cluster")
	}
	return c.propose(ctx, meta.RemoveNode{ID: id})
}

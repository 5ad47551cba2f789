package meta

import (
	"maps"
	"slices"
)

// Raft group ids and bounds. They are part of the format: every node must
// agree on them to derive the same state from the same log.
const (
	// ControllerGroup is the Raft group of the metadata log itself.
	ControllerGroup uint64 = 1
	// FirstPartitionGroup is the group id of the first partition ever
	// created; the ids below it are reserved for the cluster's own groups.
	FirstPartitionGroup uint64 = 1000
	// MaxPartitions bounds one topic's partitions (the broker's own
	// configured limit is lower).
	MaxPartitions = 1 << 16
	// MaxReplicas bounds one partition's replicas.
	MaxReplicas = 7
)

// NodeStatus is a node's place in the cluster.
type NodeStatus string

// Node statuses.
const (
	// NodeActive: the node serves, and takes new replicas and leaderships.
	NodeActive NodeStatus = "active"
	// NodeDraining: the node keeps its replicas but takes no new ones and
	// leads nothing it can hand off: it is about to be removed.
	NodeDraining NodeStatus = "draining"
	// NodeRemoved: the node left for good; its id is never reused.
	NodeRemoved NodeStatus = "removed"
	// NodeJoining: an operator added the node (JoinNode); the controller
	// adds it to its Raft group, and it becomes active when it registers
	// (AddNode) through its caught-up replica of the controller.
	NodeJoining NodeStatus = "joining"
)

// Node is a member of the cluster.
type Node struct {
	ID          uint64     `json:"id"`
	ClientAddr  string     `json:"client_addr"`  // the native protocol, for clients
	ClusterAddr string     `json:"cluster_addr"` // the Raft transport, for peers
	HTTPAddr    string     `json:"http_addr,omitempty"`
	Status      NodeStatus `json:"status"`
}

// TopicInfo describes a topic.
type TopicInfo struct {
	Name       string
	Partitions int
	Replicas   int
	Config     map[string]string // a copy; opaque here, the broker parses it
	Created    uint64            // the index of the command that created it
}

// PartitionInfo describes one partition of a topic.
type PartitionInfo struct {
	Topic     string
	Partition int
	Group     uint64   // its Raft group
	Replicas  []uint64 // the first is the preferred leader; a copy
	// Initial are the replicas the group was created with, its first Raft
	// configuration: a replica in it starts with that configuration, any
	// other joins empty and learns the configuration from the group's log.
	Initial []uint64
	// Moved says the replica set changed since the partition was created
	// (as far as the metadata recorded it): a replica started now joins the
	// group, as its first configuration is no longer the one to start over.
	Moved bool
	// Readers are nodes that hold a non-voting replica (a Raft learner)
	// to read the partition locally: a consumer group's coordinator that
	// is not one of its Replicas (SetReader). Sorted; never a replica.
	Readers []uint64
	// Leader is the leader a node last reported (0: none known), a hint
	// for clients; LeaderTerm is the Raft term of that report.
	Leader     uint64
	LeaderTerm uint64
}

// State is the cluster's metadata: the state machine every node derives
// from the controller's log. The zero value is an empty state; New returns
// one too. A State is not safe for concurrent use: the broker applies on
// one goroutine and publishes Clones to readers.
type State struct {
	version   uint64
	nextGroup uint64 // 0 means FirstPartitionGroup
	nodes     map[uint64]Node
	topics    map[string]*topic
	groups    map[uint64]partRef // derived from topics
	security  map[string][]byte
}

// topic is a topic as the state keeps it, and as a snapshot writes it.
type topic struct {
	Name     string            `json:"name"`
	Replicas int               `json:"replicas"`
	Config   map[string]string `json:"config"` // never nil
	Created  uint64            `json:"created"`
	Parts    []partition       `json:"partitions"`
}

type partition struct {
	Group    uint64   `json:"group"`
	Replicas []uint64 `json:"replicas"`
	// Initial is the first replica set, sorted; empty for partitions
	// whose set never changed since before it was recorded (their
	// replicas, then, as a set).
	Initial    []uint64 `json:"initial,omitempty"`
	Readers    []uint64 `json:"readers,omitempty"` // sorted, none of Replicas
	Leader     uint64   `json:"leader,omitempty"`
	LeaderTerm uint64   `json:"leader_term,omitempty"`
}

type partRef struct {
	topic string
	index int
}

// New returns an empty state.
func New() *State {
	s := &State{}
	s.init()
	return s
}

func (s *State) init() {
	if s.nodes == nil {
		s.nodes = map[uint64]Node{}
		s.topics = map[string]*topic{}
		s.groups = map[uint64]partRef{}
		s.security = map[string][]byte{}
	}
	s.nextGroup = max(s.nextGroup, FirstPartitionGroup)
}

// DefaultReplicas is the replica count of a topic created without one: 3
// once the cluster has three or more active nodes, else 1 (2 would not
// survive a failure either, see CreateTopic).
func DefaultReplicas(activeNodes int) int {
	if activeNodes >= 3 {
		return 3
	}
	return 1
}

// Version is the index of the last entry applied.
func (s *State) Version() uint64 { return s.version }

// Node returns the node with the given id, whatever its status.
func (s *State) Node(id uint64) (Node, bool) {
	n, ok := s.nodes[id]
	return n, ok
}

// Nodes returns every node ever added, removed ones included, by id.
func (s *State) Nodes() []Node {
	out := make([]Node, 0, len(s.nodes))
	for _, id := range s.nodeIDs() {
		out = append(out, s.nodes[id])
	}
	return out
}

// Members returns the ids of the nodes that are not removed, sorted: the
// controller group's members.
func (s *State) Members() []uint64 {
	var out []uint64
	for _, id := range s.nodeIDs() {
		if s.nodes[id].Status != NodeRemoved {
			out = append(out, id)
		}
	}
	return out
}

// ActiveNodes returns the ids of the active nodes, sorted.
func (s *State) ActiveNodes() []uint64 {
	var out []uint64
	for _, id := range s.nodeIDs() {
		if s.nodes[id].Status == NodeActive {
			out = append(out, id)
		}
	}
	return out
}

func (s *State) nodeIDs() []uint64 { return slices.Sorted(maps.Keys(s.nodes)) }

// Topic describes the named topic.
func (s *State) Topic(name string) (TopicInfo, bool) {
	t := s.topics[name]
	if t == nil {
		return TopicInfo{}, false
	}
	return TopicInfo{Name: t.Name, Partitions: len(t.Parts), Replicas: t.Replicas,
		Config: maps.Clone(t.Config), Created: t.Created}, true
}

// Topics returns the topics' names, sorted.
func (s *State) Topics() []string { return slices.Sorted(maps.Keys(s.topics)) }

// Partition describes partition p of the named topic.
func (s *State) Partition(topic string, p int) (PartitionInfo, bool) {
	t := s.topics[topic]
	if t == nil || p < 0 || p >= len(t.Parts) {
		return PartitionInfo{}, false
	}
	return t.info(p), true
}

func (t *topic) info(p int) PartitionInfo {
	pt := &t.Parts[p]
	return PartitionInfo{Topic: t.Name, Partition: p, Group: pt.Group,
		Replicas: slices.Clone(pt.Replicas), Initial: pt.initial(), Moved: len(pt.Initial) > 0,
		Readers: slices.Clone(pt.Readers),
		Leader:  pt.Leader, LeaderTerm: pt.LeaderTerm}
}

// Placement is partition p of topic's group, replicas and readers, as
// Partition has them but without copies: for loops over every partition
// of a published state (never changed), which must not change them.
func (s *State) Placement(topic string, p int) (group uint64, replicas, readers []uint64, ok bool) {
	t := s.topics[topic]
	if t == nil || p < 0 || p >= len(t.Parts) {
		return 0, nil, nil, false
	}
	pt := &t.Parts[p]
	return pt.Group, pt.Replicas, pt.Readers, true
}

// ReadsOf returns, by topic, the partitions node id is a reader of (a
// scan of the partitions, with no copies of them).
func (s *State) ReadsOf(id uint64) map[string][]int {
	var out map[string][]int
	for name, t := range s.topics {
		for i := range t.Parts {
			if _, ok := slices.BinarySearch(t.Parts[i].Readers, id); ok {
				if out == nil {
					out = map[string][]int{}
				}
				out[name] = append(out[name], i)
			}
		}
	}
	return out
}

// Holds reports whether node id holds a replica of the partition, voting
// or reading.
func (p PartitionInfo) Holds(id uint64) bool {
	return slices.Contains(p.Replicas, id) || slices.Contains(p.Readers, id)
}

// initial returns the partition's first replica set, sorted.
func (p *partition) initial() []uint64 {
	if len(p.Initial) > 0 {
		return slices.Clone(p.Initial)
	}
	return slices.Sorted(slices.Values(p.Replicas))
}

// GroupOf names the partition whose Raft group is group.
func (s *State) GroupOf(group uint64) (topic string, partition int, ok bool) {
	r, ok := s.groups[group]
	return r.topic, r.index, ok
}

// Coordinator is the node that coordinates the named consumer group: of
// the active nodes, the one with the highest rendezvous hash of the name
// and its id. A function of the state, so every node agrees on it; and
// when a node joins or leaves, only the groups it wins or held move
// (where hash mod n would move nearly all). 0 when no node is active.
func (s *State) Coordinator(group string) uint64 {
	h := fnv1a(group)
	var best, bestScore uint64
	for id, n := range s.nodes {
		if n.Status != NodeActive {
			continue
		}
		score := mix64(h ^ mix64(id))
		if best == 0 || score > bestScore || score == bestScore && id < best {
			best, bestScore = id, score
		}
	}
	return best
}

// LeaderCounts returns how many partitions each node is the preferred
// leader (first replica) of: every active node, with 0 for none, and any
// draining node that still leads some.
func (s *State) LeaderCounts() map[uint64]int {
	counts := map[uint64]int{}
	for id, n := range s.nodes {
		if n.Status == NodeActive {
			counts[id] = 0
		}
	}
	for _, t := range s.topics {
		for i := range t.Parts {
			counts[t.Parts[i].Replicas[0]]++
		}
	}
	return counts
}

// replicaCounts returns how many replicas each active node holds.
func (s *State) replicaCounts() map[uint64]int {
	counts := map[uint64]int{}
	for id, n := range s.nodes {
		if n.Status == NodeActive {
			counts[id] = 0
		}
	}
	for _, t := range s.topics {
		for i := range t.Parts {
			for _, id := range t.Parts[i].Replicas {
				if _, ok := counts[id]; ok {
					counts[id]++
				}
			}
		}
	}
	return counts
}

// Security returns the security section's value for key (a user, an ACL,
// a tenant: the auth store's encoding, opaque here).
func (s *State) Security(key string) ([]byte, bool) {
	v, ok := s.security[key]
	return slices.Clone(v), ok
}

// SecurityKeys returns the security section's keys, sorted.
func (s *State) SecurityKeys() []string { return slices.Sorted(maps.Keys(s.security)) }

// Clone returns a deep copy, for readers on other goroutines.
func (s *State) Clone() *State {
	c := &State{version: s.version, nextGroup: s.nextGroup}
	c.init()
	maps.Copy(c.nodes, s.nodes)
	maps.Copy(c.groups, s.groups)
	for name, t := range s.topics {
		c.topics[name] = t.clone()
	}
	for k, v := range s.security {
		c.security[k] = slices.Clone(v)
	}
	return c
}

func (t *topic) clone() *topic {
	c := *t
	c.Config = maps.Clone(t.Config)
	c.Parts = slices.Clone(t.Parts)
	for i := range c.Parts {
		c.Parts[i].Replicas = slices.Clone(c.Parts[i].Replicas)
		c.Parts[i].Initial = slices.Clone(c.Parts[i].Initial)
		c.Parts[i].Readers = slices.Clone(c.Parts[i].Readers)
	}
	return &c
}

// partitions lists every partition, by topic name then index: the order
// of every decision that spans topics.
func (s *State) partitions() []partRef {
	var out []partRef
	for _, name := range s.Topics() {
		for i := range s.topics[name].Parts {
			out = append(out, partRef{name, i})
		}
	}
	return out
}

func (s *State) part(r partRef) *partition { return &s.topics[r.topic].Parts[r.index] }

package meta

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"slices"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Result is what one applied command changed, for the broker to act on:
// create or stop partitions and their groups, change groups' voters,
// transfer leaderships. Its slices are the caller's.
type Result struct {
	Index uint64
	Op    string // the command's "op"; "" if it did not decode
	// Unchanged: the command was valid but changed nothing (a stale leader
	// report, a node registering again with the same addresses).
	Unchanged bool
	Topic     string // CreateTopic, DeleteTopic, AlterTopic, MoveReplicas
	// Partitions are the partitions CreateTopic created or DeleteTopic
	// deleted (whose groups to start or stop), or the one ReportLeader
	// updated.
	Partitions []PartitionInfo
	Config     map[string]string // AlterTopic: the config after the merge
	Node       uint64            // AddNode, RemoveNode, DrainNode
	// Moves are the replica sets RemoveNode or MoveReplicas changed: the
	// broker adds and removes the groups' voters to match.
	Moves []Move
	// Leaders are the preferred leaderships DrainNode or Rebalance moved:
	// the broker transfers leadership to match.
	Leaders     []LeaderChange
	SecurityKey string // SetSecurity
}

// Move is one partition's change of replica set.
type Move struct {
	Topic     string
	Partition int
	Group     uint64
	Old, New  []uint64
}

// Added returns the replicas in New that were not in Old.
func (m Move) Added() []uint64 { return missing(m.New, m.Old) }

// Removed returns the replicas in Old that are not in New.
func (m Move) Removed() []uint64 { return missing(m.Old, m.New) }

func missing(from, in []uint64) []uint64 {
	var out []uint64
	for _, id := range from {
		if !slices.Contains(in, id) {
			out = append(out, id)
		}
	}
	return out
}

// LeaderChange is one partition's change of preferred leader.
type LeaderChange struct {
	Topic     string
	Partition int
	Group     uint64
	From, To  uint64
}

// Apply applies one committed entry of the controller log: it decodes the
// command, validates it against the state, and changes the state. A
// command that is invalid changes nothing but Version and returns an
// error (one of this package's, wrapped): every node rejects it alike, so
// a proposer learns it failed and the state stays the same everywhere.
//
// Entries must come in log order; one at or below Version was applied
// already (the log is replayed over a snapshot) and is skipped with
// ErrStaleIndex.
func (s *State) Apply(index uint64, data []byte) (Result, error) {
	s.init()
	if index <= s.version {
		return Result{Index: index}, fmt.Errorf("%w: index %d, applied up to %d", ErrStaleIndex, index, s.version)
	}
	s.version = index
	cmd, err := Decode(data)
	if err != nil {
		return Result{Index: index}, err
	}
	res := Result{Index: index, Op: cmd.op()}
	if err := cmd.apply(s, index, &res); err != nil {
		s.assertValid()
		return Result{Index: index, Op: cmd.op()}, err
	}
	switch cmd.(type) {
	case ReportLeader, SetReader, SetSecurity, AlterTopic, DrainNode:
		// These make no node a replica and remove none: the scan of every
		// partition is spared the frequent ones (ReportLeader).
	default:
		s.pruneReaders()
	}
	s.assertValid()
	return res, nil
}

func (s *State) assertValid() {
	if invariants {
		if err := s.check(); err != nil {
			panic(fmt.Sprintf("meta: invalid state after entry %d: %v", s.version, err))
		}
	}
}

// validReplicas reports whether n replicas make a sensible Raft group: an
// odd count up to MaxReplicas. An even count tolerates no more failures
// than the odd one below it (2 replicas survive none, as 1; 4 survive
// one, as 3) while it costs a replica more and needs a larger quorum for
// every write, so 2, 4 and 6 are refused.
func validReplicas(n int) bool { return n >= 1 && n <= MaxReplicas && n%2 == 1 }

func (c CreateTopic) apply(s *State, index uint64, r *Result) error {
	if err := wire.ValidateQualifiedName(c.Name); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrBadTopicName, c.Name, err)
	}
	if s.topics[c.Name] != nil {
		return fmt.Errorf("%w: %q", ErrTopicExists, c.Name)
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		return fmt.Errorf("%w: %d (1..%d)", ErrBadPartitions, c.Partitions, MaxPartitions)
	}
	active := s.ActiveNodes()
	replicas := c.Replicas
	if replicas == 0 {
		replicas = DefaultReplicas(len(active))
	}
	if !validReplicas(replicas) {
		return fmt.Errorf("%w: %d replicas (1, 3, 5 or 7)", ErrBadReplicas, replicas)
	}
	if replicas > len(active) {
		return fmt.Errorf("%w: %d replicas, %d active nodes", ErrNotEnoughNodes, replicas, len(active))
	}
	config := map[string]string{}
	for k, v := range c.Config {
		if k == "" {
			return fmt.Errorf("%w: empty key", ErrBadConfig)
		}
		if v != "" {
			config[k] = v
		}
	}
	t := &topic{Name: c.Name, Replicas: replicas, Config: config, Created: index}
	for _, set := range place(c.Name, c.Partitions, replicas, active) {
		s.groups[s.nextGroup] = partRef{c.Name, len(t.Parts)}
		t.Parts = append(t.Parts, partition{Group: s.nextGroup, Replicas: set})
		s.nextGroup++
	}
	s.topics[c.Name] = t
	r.Topic = c.Name
	r.Partitions = t.infos()
	return nil
}

func (t *topic) infos() []PartitionInfo {
	out := make([]PartitionInfo, len(t.Parts))
	for i := range t.Parts {
		out[i] = t.info(i)
	}
	return out
}

func (c DeleteTopic) apply(s *State, _ uint64, r *Result) error {
	t := s.topics[c.Name]
	if t == nil {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Name)
	}
	for _, p := range t.Parts {
		delete(s.groups, p.Group)
	}
	delete(s.topics, c.Name)
	r.Topic = c.Name
	r.Partitions = t.infos()
	return nil
}

func (c AlterTopic) apply(s *State, _ uint64, r *Result) error {
	t := s.topics[c.Name]
	if t == nil {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Name)
	}
	if _, ok := c.Config[""]; ok {
		return fmt.Errorf("%w: empty key", ErrBadConfig)
	}
	old := maps.Clone(t.Config)
	for k, v := range c.Config {
		if v == "" {
			delete(t.Config, k)
		} else {
			t.Config[k] = v
		}
	}
	r.Topic = c.Name
	r.Config = maps.Clone(t.Config)
	r.Unchanged = maps.Equal(old, t.Config)
	return nil
}

func (c AddNode) apply(s *State, _ uint64, r *Result) error {
	if c.ID == 0 {
		return ErrBadNodeID
	}
	if err := checkAddrs(c); err != nil {
		return err
	}
	old, known := s.nodes[c.ID]
	if known && old.Status == NodeRemoved {
		return fmt.Errorf("%w: node %d", ErrNodeRemoved, c.ID)
	}
	for _, id := range s.nodeIDs() {
		n := s.nodes[id]
		if id == c.ID || n.Status == NodeRemoved {
			continue
		}
		if theirs := []string{n.ClientAddr, n.ClusterAddr}; slices.Contains(theirs, c.ClientAddr) || slices.Contains(theirs, c.ClusterAddr) {
			return fmt.Errorf("%w: node %d has it", ErrAddrInUse, id)
		}
	}
	n := Node{ID: c.ID, ClientAddr: c.ClientAddr, ClusterAddr: c.ClusterAddr, HTTPAddr: c.HTTPAddr, Status: NodeActive}
	s.nodes[c.ID] = n
	r.Node = c.ID
	r.Unchanged = known && old == n
	return nil
}

// checkAddrs checks that the addresses are host:port with both parts
// (HTTP's may be empty): peers and clients dial them, so a typo or a bare
// ":port" would make the node unreachable.
func checkAddrs(c AddNode) error {
	for _, a := range []struct{ name, addr string }{
		{"client", c.ClientAddr}, {"cluster", c.ClusterAddr}, {"http", c.HTTPAddr},
	} {
		if a.addr == "" && a.name == "http" {
			continue
		}
		if host, port, err := net.SplitHostPort(a.addr); err != nil || host == "" || port == "" {
			return fmt.Errorf("%w: %s address %q is not host:port", ErrBadAddr, a.name, a.addr)
		}
	}
	if c.ClientAddr == c.ClusterAddr {
		return fmt.Errorf("%w: client and cluster addresses are both %q", ErrBadAddr, c.ClientAddr)
	}
	return nil
}

// member returns the node with the given id unless it is unknown or
// removed.
func (s *State) member(id uint64) (Node, error) {
	n, ok := s.nodes[id]
	switch {
	case !ok:
		return n, fmt.Errorf("%w: node %d", ErrUnknownNode, id)
	case n.Status == NodeRemoved:
		return n, fmt.Errorf("%w: node %d", ErrNodeRemoved, id)
	}
	return n, nil
}

func (c JoinNode) apply(s *State, _ uint64, r *Result) error {
	if c.ID == 0 {
		return ErrBadNodeID
	}
	if host, port, err := net.SplitHostPort(c.ClusterAddr); err != nil || host == "" || port == "" {
		return fmt.Errorf("%w: cluster address %q is not host:port", ErrBadAddr, c.ClusterAddr)
	}
	r.Node = c.ID
	if old, known := s.nodes[c.ID]; known {
		if old.Status == NodeRemoved {
			return fmt.Errorf("%w: node %d", ErrNodeRemoved, c.ID)
		}
		r.Unchanged = true
		return nil
	}
	for _, id := range s.nodeIDs() {
		if n := s.nodes[id]; n.Status != NodeRemoved && (n.ClientAddr == c.ClusterAddr || n.ClusterAddr == c.ClusterAddr) {
			return fmt.Errorf("%w: node %d has it", ErrAddrInUse, id)
		}
	}
	s.nodes[c.ID] = Node{ID: c.ID, ClusterAddr: c.ClusterAddr, Status: NodeJoining}
	return nil
}

func (c RemoveNode) apply(s *State, _ uint64, r *Result) error {
	n, err := s.member(c.ID)
	if err != nil {
		return err
	}
	moves, err := s.planRemoval(c.ID)
	if err != nil {
		return err
	}
	n.Status = NodeRemoved
	s.nodes[c.ID] = n
	for _, m := range moves {
		p := &s.topics[m.Topic].Parts[m.Partition]
		p.Initial = p.initial()
		p.Replicas = slices.Clone(m.New)
	}
	for _, ref := range s.partitions() {
		if p := s.part(ref); p.Leader == c.ID {
			p.Leader = 0 // the term stays: a report of it may not bring the node back
		}
	}
	r.Node = c.ID
	r.Moves = moves
	return nil
}

func (c DrainNode) apply(s *State, _ uint64, r *Result) error {
	n, err := s.member(c.ID)
	if err != nil {
		return err
	}
	r.Node = c.ID
	if n.Status == NodeDraining {
		r.Unchanged = true
		return nil
	}
	n.Status = NodeDraining
	s.nodes[c.ID] = n
	r.Leaders = s.leadAway(c.ID)
	return nil
}

func (c ReportLeader) apply(s *State, _ uint64, r *Result) error {
	ref, ok := s.groups[c.Group]
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownGroup, c.Group)
	}
	if c.Leader != 0 {
		if _, err := s.member(c.Leader); err != nil {
			return err
		}
	}
	p := s.part(ref)
	newer := c.Term > p.LeaderTerm || c.Term == p.LeaderTerm && p.Leader == 0 && c.Leader != 0
	if newer {
		p.Leader, p.LeaderTerm = c.Leader, c.Term
	}
	r.Unchanged = !newer
	r.Topic = ref.topic
	r.Partitions = []PartitionInfo{s.topics[ref.topic].info(ref.index)}
	return nil
}

func (c MoveReplicas) apply(s *State, _ uint64, r *Result) error {
	t := s.topics[c.Topic]
	if t == nil {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Topic)
	}
	if c.Partition < 0 || c.Partition >= len(t.Parts) {
		return fmt.Errorf("%w: %q has %d, not %d", ErrUnknownPartition, c.Topic, len(t.Parts), c.Partition)
	}
	if len(c.Replicas) != t.Replicas {
		return fmt.Errorf("%w: %d given, the topic has %d", ErrBadReplicas, len(c.Replicas), t.Replicas)
	}
	p := &t.Parts[c.Partition]
	for i, id := range c.Replicas {
		if slices.Contains(c.Replicas[:i], id) {
			return fmt.Errorf("%w: node %d twice", ErrBadReplicas, id)
		}
		n, err := s.member(id)
		if err != nil {
			return err
		}
		if n.Status != NodeActive && !slices.Contains(p.Replicas, id) {
			return fmt.Errorf("%w: node %d is %s", ErrNodeNotActive, id, n.Status)
		}
	}
	r.Topic = c.Topic
	if slices.Equal(p.Replicas, c.Replicas) {
		r.Unchanged = true
		return nil
	}
	r.Moves = []Move{{Topic: c.Topic, Partition: c.Partition, Group: p.Group,
		Old: p.Replicas, New: slices.Clone(c.Replicas)}}
	p.Initial = p.initial()
	p.Replicas = slices.Clone(c.Replicas)
	return nil
}

func (c Rebalance) apply(s *State, _ uint64, r *Result) error {
	if c.Replicas {
		r.Moves = s.spreadReplicas()
	}
	r.Leaders = s.rebalance()
	r.Unchanged = len(r.Leaders) == 0 && len(r.Moves) == 0
	return nil
}

func (c SetReader) apply(s *State, _ uint64, r *Result) error {
	t := s.topics[c.Topic]
	if t == nil {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, c.Topic)
	}
	if c.Partition < 0 || c.Partition >= len(t.Parts) {
		return fmt.Errorf("%w: %q has %d, not %d", ErrUnknownPartition, c.Topic, len(t.Parts), c.Partition)
	}
	p := &t.Parts[c.Partition]
	r.Topic = c.Topic
	r.Node = c.Node
	i, has := slices.BinarySearch(p.Readers, c.Node)
	switch {
	case !c.On:
		if has {
			p.Readers = slices.Delete(p.Readers, i, i+1)
		}
		r.Unchanged = !has
	case has || slices.Contains(p.Replicas, c.Node):
		r.Unchanged = true
	default:
		n, err := s.member(c.Node)
		if err != nil {
			return err
		}
		if n.Status != NodeActive {
			return fmt.Errorf("%w: node %d is %s", ErrNodeNotActive, c.Node, n.Status)
		}
		p.Readers = slices.Insert(p.Readers, i, c.Node)
	}
	return nil
}

// pruneReaders drops the readers a command made replicas, or removed:
// a node is a partition's reader only while it is a member and not one
// of the partition's replicas.
func (s *State) pruneReaders() {
	for _, t := range s.topics {
		for i := range t.Parts {
			p := &t.Parts[i]
			if len(p.Readers) == 0 {
				continue
			}
			p.Readers = slices.DeleteFunc(p.Readers, func(id uint64) bool {
				n, ok := s.nodes[id]
				return !ok || n.Status == NodeRemoved || slices.Contains(p.Replicas, id)
			})
			if len(p.Readers) == 0 {
				p.Readers = nil
			}
		}
	}
}

func (c SetSecurity) apply(s *State, _ uint64, r *Result) error {
	if c.Key == "" {
		return ErrBadSecurityKey
	}
	old, had := s.security[c.Key]
	r.SecurityKey = c.Key
	if len(c.Value) == 0 {
		delete(s.security, c.Key)
		r.Unchanged = !had
		return nil
	}
	s.security[c.Key] = slices.Clone(c.Value)
	r.Unchanged = had && bytes.Equal(old, c.Value)
	return nil
}

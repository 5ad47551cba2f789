package meta

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// SnapshotVersion is the snapshot format this package writes and reads.
const SnapshotVersion = 1

// snapshot is the whole state as JSON: nodes by id, topics by name, and
// map keys sorted (encoding/json sorts them), so equal states give equal
// bytes. The group index is derived, and rebuilt on reading.
type snapshot struct {
	V         int               `json:"v"`
	Version   uint64            `json:"version"`
	NextGroup uint64            `json:"next_group"`
	Nodes     []Node            `json:"nodes"`
	Topics    []*topic          `json:"topics"`
	Security  map[string][]byte `json:"security"`
}

// MarshalSnapshot returns the whole state as deterministic JSON: equal
// states give equal bytes.
func (s *State) MarshalSnapshot() ([]byte, error) {
	snap := snapshot{V: SnapshotVersion, Version: s.version, NextGroup: max(s.nextGroup, FirstPartitionGroup),
		Nodes: s.Nodes(), Topics: []*topic{}, Security: s.security}
	for _, name := range s.Topics() {
		snap.Topics = append(snap.Topics, s.topics[name])
	}
	if snap.Security == nil {
		snap.Security = map[string][]byte{}
	}
	return json.Marshal(snap)
}

// UnmarshalSnapshot reads a state MarshalSnapshot wrote, and checks it:
// a snapshot that does not hold a valid state is refused.
func UnmarshalSnapshot(data []byte) (*State, error) {
	var snap snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	if snap.V != SnapshotVersion {
		return nil, fmt.Errorf("%w: format version %d, this node reads %d", ErrBadSnapshot, snap.V, SnapshotVersion)
	}
	s := &State{version: snap.Version, nextGroup: snap.NextGroup}
	s.init()
	for _, n := range snap.Nodes {
		if _, dup := s.nodes[n.ID]; dup {
			return nil, fmt.Errorf("%w: node %d twice", ErrBadSnapshot, n.ID)
		}
		s.nodes[n.ID] = n
	}
	for _, t := range snap.Topics {
		if t == nil || s.topics[t.Name] != nil {
			return nil, fmt.Errorf("%w: a topic twice, or null", ErrBadSnapshot)
		}
		if t.Config == nil {
			t.Config = map[string]string{}
		}
		s.topics[t.Name] = t
		for i, p := range t.Parts {
			if _, dup := s.groups[p.Group]; dup {
				return nil, fmt.Errorf("%w: group %d twice", ErrBadSnapshot, p.Group)
			}
			s.groups[p.Group] = partRef{t.Name, i}
		}
	}
	for k, v := range snap.Security {
		s.security[k] = v
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSnapshot, err)
	}
	return s, nil
}

// check verifies what every state Apply leaves must satisfy: the
// invariants build checks it after every entry, UnmarshalSnapshot before
// it accepts a state, and the tests after every step.
func (s *State) check() error {
	if s.nextGroup < FirstPartitionGroup {
		return fmt.Errorf("next group %d is reserved", s.nextGroup)
	}
	for id, n := range s.nodes {
		if id == 0 || n.ID != id {
			return fmt.Errorf("node %d filed as %d", n.ID, id)
		}
		if n.Status != NodeActive && n.Status != NodeDraining && n.Status != NodeRemoved && n.Status != NodeJoining {
			return fmt.Errorf("node %d has status %q", id, n.Status)
		}
	}
	parts := 0
	for name, t := range s.topics {
		if err := s.checkTopic(name, t); err != nil {
			return fmt.Errorf("topic %q: %w", name, err)
		}
		parts += len(t.Parts)
	}
	if parts != len(s.groups) {
		return fmt.Errorf("%d partitions but %d groups indexed", parts, len(s.groups))
	}
	for k, v := range s.security {
		if k == "" || len(v) == 0 {
			return errors.New("empty security key or value")
		}
	}
	return nil
}

func (s *State) checkTopic(name string, t *topic) error {
	switch {
	case t.Name != name || wire.ValidateQualifiedName(name) != nil:
		return fmt.Errorf("filed as %q, or an invalid name", t.Name)
	case !validReplicas(t.Replicas):
		return fmt.Errorf("%d replicas", t.Replicas)
	case len(t.Parts) < 1 || len(t.Parts) > MaxPartitions:
		return fmt.Errorf("%d partitions", len(t.Parts))
	case t.Created == 0 || t.Created > s.version:
		return fmt.Errorf("created at %d, state at %d", t.Created, s.version)
	case t.Config == nil:
		return errors.New("nil config")
	}
	for k, v := range t.Config {
		if k == "" || v == "" {
			return fmt.Errorf("config %q=%q", k, v)
		}
	}
	for i := range t.Parts {
		if err := s.checkPartition(t, i); err != nil {
			return fmt.Errorf("partition %d: %w", i, err)
		}
	}
	return nil
}

func (s *State) checkPartition(t *topic, i int) error {
	p := &t.Parts[i]
	if p.Group < FirstPartitionGroup || p.Group >= s.nextGroup {
		return fmt.Errorf("group %d outside [%d, %d)", p.Group, FirstPartitionGroup, s.nextGroup)
	}
	if s.groups[p.Group] != (partRef{t.Name, i}) {
		return fmt.Errorf("group %d indexed as %v", p.Group, s.groups[p.Group])
	}
	if len(p.Replicas) != t.Replicas {
		return fmt.Errorf("%d replicas, the topic has %d", len(p.Replicas), t.Replicas)
	}
	for k, id := range p.Replicas {
		if slices.Contains(p.Replicas[:k], id) {
			return fmt.Errorf("replica %d twice in %v", id, p.Replicas)
		}
		if _, err := s.member(id); err != nil {
			return fmt.Errorf("replica: %w", err)
		}
	}
	if p.Leader != 0 {
		if _, err := s.member(p.Leader); err != nil {
			return fmt.Errorf("leader: %w", err)
		}
	}
	if !slices.IsSorted(p.Readers) || len(slices.Compact(slices.Clone(p.Readers))) != len(p.Readers) {
		return fmt.Errorf("readers %v not sorted, or twice", p.Readers)
	}
	for _, id := range p.Readers {
		if slices.Contains(p.Replicas, id) {
			return fmt.Errorf("reader %d is a replica", id)
		}
		if _, err := s.member(id); err != nil {
			return fmt.Errorf("reader: %w", err)
		}
	}
	return nil
}

package meta

import (
	"encoding/json"
	"fmt"
)

// FormatVersion is the command format this package writes and the newest
// it reads ("v" in every command).
const FormatVersion = 1

// Command is one change to the state: what a node proposes to the
// controller group, as Encode's bytes. The commands are this package's
// struct types; a composite literal builds one.
type Command interface {
	// Encode returns the command as the JSON an entry carries.
	Encode() []byte
	op() string
	apply(s *State, index uint64, r *Result) error
}

// CreateTopic creates a topic and places its partitions' replicas on the
// active nodes. Replicas 0 means DefaultReplicas of the active nodes when
// it is applied. Config values that are empty are left out.
type CreateTopic struct {
	Name       string            `json:"name"`
	Partitions int               `json:"partitions"`
	Replicas   int               `json:"replicas,omitempty"`
	Config     map[string]string `json:"config,omitempty"`
}

// DeleteTopic deletes a topic. Its partitions' group ids are not reused.
type DeleteTopic struct {
	Name string `json:"name"`
}

// AlterTopic merges Config into a topic's config: a key with an empty
// value is deleted, any other is set.
type AlterTopic struct {
	Name   string            `json:"name"`
	Config map[string]string `json:"config"`
}

// AddNode adds a node, active. For a node already known (not removed) it
// updates the addresses and makes it active again: a node registers on
// every start, and an AddNode undoes a DrainNode.
type AddNode struct {
	ID          uint64 `json:"id"`
	ClientAddr  string `json:"client_addr"`
	ClusterAddr string `json:"cluster_addr"`
	HTTPAddr    string `json:"http_addr,omitempty"`
}

// JoinNode adds a new node, joining: the controller's leader adds it to
// the controller group, and the node becomes active when it registers
// (AddNode). A node already known (not removed) is left as it is.
type JoinNode struct {
	ID          uint64 `json:"id"`
	ClusterAddr string `json:"cluster_addr"`
}

// RemoveNode removes a node for good: each replica it holds moves to the
// active node with the fewest replicas (ties to the lower id), and the
// moves are in the Result. It fails, changing nothing, when some partition
// has no active node left to move to.
type RemoveNode struct {
	ID uint64 `json:"id"`
}

// DrainNode marks a node draining: it takes no new replicas, and the
// partitions it is the preferred leader of prefer another active replica
// (the Result's Leaders).
type DrainNode struct {
	ID uint64 `json:"id"`
}

// ReportLeader records the leader a node sees for a Raft group, in a term.
// A report of an older term than the recorded one is ignored; in the same
// term, the first leader known stays (Raft elects one per term).
type ReportLeader struct {
	Group  uint64 `json:"group"`
	Leader uint64 `json:"leader"`
	Term   uint64 `json:"term"`
}

// MoveReplicas sets a partition's replicas, in order (the first is the
// preferred leader). The count is the topic's; nodes that are not
// already replicas must be active.
type MoveReplicas struct {
	Topic     string   `json:"topic"`
	Partition int      `json:"partition"`
	Replicas  []uint64 `json:"replicas"`
}

// Rebalance reorders replica sets so the preferred leaderships are as even
// over the active nodes as the replica sets allow (the broker transfers
// leadership to the new preferred leaders). With Replicas it first moves
// replicas from the active nodes that hold the most to those that hold the
// fewest until their counts are within one of each other, so a node just
// added gets its share (the Result's Moves, which the partitions' leaders
// carry out as Raft configuration changes).
type Rebalance struct {
	Replicas bool `json:"replicas,omitempty"`
}

// SetReader adds node Node to a partition's readers (On), or removes it:
// a reader holds a non-voting replica (a Raft learner) of the partition,
// so that it can read the partition locally, as a consumer group's
// coordinator that holds no replica of a partition it feeds does. A node
// that is a replica is not added; a reader must be an active node.
type SetReader struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Node      uint64 `json:"node"`
	On        bool   `json:"on,omitempty"`
}

// SetSecurity sets a key of the security section (users, ACLs, tenants,
// encoded by the auth store); an empty value deletes the key.
type SetSecurity struct {
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"` // base64 in JSON
}

// Command names, the "op" of the JSON.
const (
	opCreateTopic  = "create_topic"
	opDeleteTopic  = "delete_topic"
	opAlterTopic   = "alter_topic"
	opAddNode      = "add_node"
	opRemoveNode   = "remove_node"
	opJoinNode     = "join_node"
	opDrainNode    = "drain_node"
	opReportLeader = "report_leader"
	opMoveReplicas = "move_replicas"
	opRebalance    = "rebalance"
	opSetSecurity  = "set_security"
	opSetReader    = "set_reader"
)

var decoders = map[string]func([]byte) (Command, error){
	opCreateTopic:  decodeAs[CreateTopic],
	opDeleteTopic:  decodeAs[DeleteTopic],
	opAlterTopic:   decodeAs[AlterTopic],
	opAddNode:      decodeAs[AddNode],
	opRemoveNode:   decodeAs[RemoveNode],
	opJoinNode:     decodeAs[JoinNode],
	opDrainNode:    decodeAs[DrainNode],
	opReportLeader: decodeAs[ReportLeader],
	opMoveReplicas: decodeAs[MoveReplicas],
	opRebalance:    decodeAs[Rebalance],
	opSetSecurity:  decodeAs[SetSecurity],
	opSetReader:    decodeAs[SetReader],
}

func (c CreateTopic) op() string  { return opCreateTopic }
func (c DeleteTopic) op() string  { return opDeleteTopic }
func (c AlterTopic) op() string   { return opAlterTopic }
func (c AddNode) op() string      { return opAddNode }
func (c RemoveNode) op() string   { return opRemoveNode }
func (c JoinNode) op() string     { return opJoinNode }
func (c DrainNode) op() string    { return opDrainNode }
func (c ReportLeader) op() string { return opReportLeader }
func (c MoveReplicas) op() string { return opMoveReplicas }
func (c Rebalance) op() string    { return opRebalance }
func (c SetSecurity) op() string  { return opSetSecurity }
func (c SetReader) op() string    { return opSetReader }

// Encode returns the command's JSON.
func (c CreateTopic) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c DeleteTopic) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c AlterTopic) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c AddNode) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c RemoveNode) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c JoinNode) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c DrainNode) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c ReportLeader) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c MoveReplicas) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c Rebalance) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c SetSecurity) Encode() []byte { return encode(c) }

// Encode returns the command's JSON.
func (c SetReader) Encode() []byte { return encode(c) }

// encode writes {"v":1,"op":"…"} followed by the command's own fields.
func encode(c Command) []byte {
	body, err := json.Marshal(c)
	if err != nil {
		// Commands hold strings, integers, string maps and byte slices,
		// which always marshal.
		panic("meta: cannot encode command: " + err.Error())
	}
	b := make([]byte, 0, len(body)+32)
	b = fmt.Appendf(b, `{"v":%d,"op":%q`, FormatVersion, c.op())
	if len(body) > 2 { // not "{}"
		b = append(b, ',')
		b = append(b, body[1:]...)
	} else {
		b = append(b, '}')
	}
	return b
}

// Decode parses a command's JSON.
func Decode(data []byte) (Command, error) {
	var h struct {
		V  int    `json:"v"`
		Op string `json:"op"`
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	switch {
	case h.V > FormatVersion:
		return nil, fmt.Errorf("%w: version %d (this node reads %d)", ErrFutureVersion, h.V, FormatVersion)
	case h.V < 1:
		return nil, fmt.Errorf("%w: no version", ErrBadCommand)
	}
	dec := decoders[h.Op]
	if dec == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownOp, h.Op)
	}
	return dec(data)
}

func decodeAs[C Command](data []byte) (Command, error) {
	var c C
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return c, nil
}

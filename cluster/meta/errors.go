package meta

import "errors"

// Errors of Apply. Each is returned wrapped with the names it concerns;
// test with errors.Is. Every error leaves the state as it was, except
// Version, which moves to the entry's index (ErrStaleIndex excepted).
var (
	// ErrStaleIndex: the entry's index is not above Version, so it was
	// applied already (a log replayed over a snapshot). Version stays.
	ErrStaleIndex = errors.New("meta: entry already applied")
	// ErrBadCommand: the entry is not a command of this format (bad JSON,
	// a missing version, a field of the wrong type).
	ErrBadCommand = errors.New("meta: malformed command")
	// ErrFutureVersion: the command's format version is newer than this
	// node knows. It is fatal for the node: the nodes that know the
	// version applied the command, so one that goes on would diverge. The
	// broker must stop following the log until the node is upgraded (and
	// propose a new version's commands only once every node has it).
	ErrFutureVersion = errors.New("meta: command from a newer format version")
	// ErrUnknownOp: the command's op names no command.
	ErrUnknownOp = errors.New("meta: unknown command")

	ErrBadTopicName     = errors.New("meta: invalid topic name")
	ErrTopicExists      = errors.New("meta: topic already exists")
	ErrUnknownTopic     = errors.New("meta: no such topic")
	ErrUnknownPartition = errors.New("meta: no such partition")
	ErrBadPartitions    = errors.New("meta: partition count out of range")
	// ErrBadReplicas: a replica count other than 1, 3, 5 or 7, or a
	// replica list that repeats a node or has the wrong length.
	ErrBadReplicas = errors.New("meta: invalid replicas")
	// ErrNotEnoughNodes: there are too few active nodes to place the
	// replicas (CreateTopic), or to replace a removed node's (RemoveNode).
	ErrNotEnoughNodes = errors.New("meta: not enough active nodes")
	ErrBadConfig      = errors.New("meta: invalid topic config")

	ErrBadNodeID   = errors.New("meta: node id 0 is reserved")
	ErrUnknownNode = errors.New("meta: no such node")
	// ErrNodeRemoved: the node was removed. Node ids are never reused, as
	// Raft's are not: a removed id stays in every group's removed set.
	ErrNodeRemoved = errors.New("meta: node was removed")
	// ErrNodeNotActive: a node that is draining (or removed) cannot take
	// new replicas.
	ErrNodeNotActive = errors.New("meta: node is not active")
	ErrBadAddr       = errors.New("meta: invalid node address")
	ErrAddrInUse     = errors.New("meta: address used by another node")

	// ErrUnknownGroup: a leader report for a Raft group no partition has
	// (any more: its topic may have been deleted since).
	ErrUnknownGroup = errors.New("meta: no such raft group")

	ErrBadSecurityKey = errors.New("meta: empty security key")

	// ErrBadSnapshot: UnmarshalSnapshot was given bytes that are not a
	// valid state.
	ErrBadSnapshot = errors.New("meta: invalid snapshot")
)

// Package meta is the cluster's metadata state machine: nodes, topics and
// where their partitions' replicas live, leader hints, and an opaque
// security section. It is pure: no I/O, no clock, no goroutines.
//
// # The model
//
// As Kafka's KRaft, the cluster keeps its metadata in a log: the
// controller group (Raft group ControllerGroup) orders commands, and every
// node applies each committed one, in order, to its own State
// (State.Apply, from cluster.GroupConfig.OnApply). No node is told the
// outcome: each computes it, so the outcome must be a function of the log
// alone. Apply therefore has no clock, no randomness, and no order that
// depends on Go's map iteration: every decision that spans topics or nodes
// walks them sorted (topics by name, partitions by index, nodes by id),
// and every tie breaks on the lower node id. A command that is invalid
// fails alike on every node and changes nothing but Version.
//
// What changes (the replicas a new topic got, a removed node's moved
// replicas, new preferred leaders) comes back in the Result, so the
// broker can act on it (create partitions, start groups, change voters,
// transfer leaderships): what it does is its own, local I/O; the state
// says what should be.
//
// Validation, placement, the hashes (FNV-1a for placement, rendezvous
// hashing over splitmix64 for coordinators) and the tie-breaks are part of
// the format as much as the JSON is: a node that decided differently
// would silently diverge. Changing any of them means a new FormatVersion
// and an upgrade that finishes before the first command of that version
// is proposed. A node that meets a newer version anyway gets
// ErrFutureVersion, and must stop applying rather than skip the command
// the others applied.
//
// # Commands
//
// Commands are JSON objects, readable in the log and in tools, with a
// format version and an op:
//
//	{"v":1,"op":"create_topic","name":"orders","partitions":6,"replicas":3,"config":{"retention":"2h"}}
//	{"v":1,"op":"delete_topic","name":"orders"}
//	{"v":1,"op":"alter_topic","name":"orders","config":{"retention":"","fsync":"always"}}
//	{"v":1,"op":"add_node","id":1,"client_addr":"a:7400","cluster_addr":"a:7401","http_addr":"a:8080"}
//	{"v":1,"op":"remove_node","id":3}
//	{"v":1,"op":"drain_node","id":3}
//	{"v":1,"op":"report_leader","group":1002,"leader":2,"term":7}
//	{"v":1,"op":"move_replicas","topic":"orders","partition":0,"replicas":[2,1,4]}
//	{"v":1,"op":"rebalance"}
//	{"v":1,"op":"set_security","key":"user/alice","value":"base64…"}
//
// The command types (CreateTopic, …) build them: CreateTopic{…}.Encode().
//
// # Placement
//
// A topic's replicas go on the nodes active when it is created. Partition
// p's preferred leader (its first replica) is the ((h + p) mod n)-th of the
// n active nodes by id, h the topic name's hash, so each node leads n-th of
// the topic, give or take one; the followers go where they keep the
// nodes' counts of the topic's replicas within one of each other too.
// Each partition is a Raft group with its own id, from a counter that
// starts at FirstPartitionGroup and never goes back, so a deleted topic's
// group ids are never reused (a stray message of an old group cannot
// reach a new one).
//
// Replica counts are odd, 1 to 7: an even count survives no more failures
// than the odd count below it, for a larger quorum.
//
// Later changes keep replica sets valid (distinct nodes that are active or
// draining): RemoveNode replaces the node in each set with the active node
// holding the fewest replicas, or fails if a set has none to take; a
// draining node keeps its replicas but takes no new ones; Rebalance
// evens the preferred leaderships over the active nodes within the sets.
//
// # Snapshots
//
// MarshalSnapshot writes the whole state as JSON with nodes, topics and
// map keys sorted, so equal states give equal bytes, for the controller's
// Raft snapshots; UnmarshalSnapshot checks what it reads.
package meta

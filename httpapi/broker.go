package httpapi

import (
	"context"
	"io"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Broker is what the HTTP side needs of the broker, and all it may reach.
// Every method is called on net/http's goroutines, never on an event loop
// or a shard, so each must be safe from any goroutine: reads come from
// snapshots and atomics, and changes take the paths the native protocol
// takes, so they are validated, persisted and reported alike.
//
// Views are plain data, built per call; nothing returned aliases the
// broker's state.
type Broker interface {
	// Starting says why the broker has not finished starting (recovery
	// runs, the native listener is not up); "" once it has.
	Starting() string
	// Draining reports whether the broker is shutting down.
	Draining() bool
	// NotReady lists why the broker should get no traffic, none when it
	// is ready; probe also checks that the data directory is writable.
	NotReady(probe bool) []string
	// Dependencies lists the servers the broker depends on (the Redis
	// keeping storage=redis topics) and whether each answers.
	Dependencies() []Dependency
	// Uptime is the time since the broker started; 0 before.
	Uptime() time.Duration
	// ConnectionCount is the number of open client connections.
	ConnectionCount() int64

	// Topics lists every topic, by name.
	Topics() []Topic
	// Topic finds one topic.
	Topic(name string) (Topic, bool)
	// CreateTopic creates a topic; partitions 0 means the broker's
	// default, and config holds the topic config keys.
	CreateTopic(by Origin, name string, partitions uint32, config []wire.KV) (Topic, error)
	// UpdateTopic changes the config keys of changes, keeping the others.
	UpdateTopic(by Origin, name string, changes []wire.KV) (Topic, error)
	// DeleteTopic deletes a topic and, in the background, its data.
	DeleteTopic(by Origin, name string) error

	// Groups lists the consumer groups' names, sorted.
	Groups() []string
	// DescribeGroup reports a group's members, owners, offsets and lag.
	DescribeGroup(name string) (wire.GroupInfo, error)
	// ResetGroup moves a group without members to st and returns once the
	// new offsets are durable, or ctx ends.
	ResetGroup(ctx context.Context, by Origin, name string, st wire.Start) error

	// Connections lists the client connections.
	Connections() []Connection
	// Shards lists the shards, by ID.
	Shards() []Shard
	// WriteMetrics writes every metric in the Prometheus text format.
	WriteMetrics(w io.Writer)
	// Emit hands an event to the plugins (the audit log among them).
	Emit(ev telemetry.Event)
	// Cluster reports this node's view of its cluster; false on a single
	// node.
	Cluster() (Cluster, bool)
	// TransferLeader hands the leadership of a replicated partition this
	// node leads to node to (a NOT_LEADER wire error when it does not lead).
	TransferLeader(by Origin, topic string, partition int, to uint64) error
	// Rebalance spreads the partitions' preferred leaders evenly over the
	// active nodes; each leader then hands over to its preferred one.
	Rebalance(ctx context.Context, by Origin) error
	// AddNode records a new node (started with its own --node-id and
	// --cluster-addr, and the members' addresses as --peers): the
	// controller adds it to its Raft group, and it serves once caught up.
	AddNode(ctx context.Context, by Origin, id uint64, clusterAddr string) error
	// RemoveNode removes a node for good: its replicas move to other
	// nodes, its leaderships are handed over, and it leaves the
	// controller group. Its id is never reused.
	RemoveNode(ctx context.Context, by Origin, id uint64) error
}

// Cluster is a node's view of its cluster (docs/CLUSTER.md).
type Cluster struct {
	NodeID     uint64        `json:"node_id"`
	Controller RaftGroup     `json:"controller"`
	Nodes      []ClusterNode `json:"nodes"`
	Partitions []ClusterPart `json:"partitions"`
}

// ClusterNode is one node as the cluster's metadata knows it.
type ClusterNode struct {
	ID          uint64 `json:"id"`
	ClientAddr  string `json:"client_addr"`
	ClusterAddr string `json:"cluster_addr"`
	HTTPAddr    string `json:"http_addr,omitempty"`
	Status      string `json:"status"`
	// Reachable: this node has heard from it lately (itself: always).
	Reachable bool `json:"reachable"`
}

// RaftGroup is what this node knows of one Raft group.
type RaftGroup struct {
	Group     uint64   `json:"group"`
	Leader    uint64   `json:"leader"`
	Term      uint64   `json:"term"`
	State     string   `json:"state"` // this node's role in the group
	Commit    uint64   `json:"commit"`
	LastIndex uint64   `json:"last_index"`
	Voters    []uint64 `json:"voters"`
	// Learners receive the log but count for no quorum: replicas being
	// added, until they catch up.
	Learners []uint64 `json:"learners,omitempty"`
	// Outgoing are the voters of the configuration being left, while a
	// configuration change is in joint consensus.
	Outgoing []uint64 `json:"outgoing,omitempty"`
	Quiesced bool     `json:"quiesced"`
	Failed   string   `json:"failed,omitempty"`
	// FirstIndex is the first entry this replica's log holds: retention
	// compacted the ones before, and a snapshot replaces them for a
	// replica that needs them. Snapshots counts the snapshots this
	// replica installed, SnapshotsSent those it sent as leader, since
	// the node started.
	FirstIndex    uint64 `json:"first_index"`
	Snapshots     int    `json:"snapshots"`
	SnapshotsSent int    `json:"snapshots_sent"`
	// Fetched is the bytes of batches this replica fetched whole to catch
	// up, and ChunksServed the chunks it sent to replicas that did, since
	// the node started (docs/CLUSTER.md, "Catching up by whole batches").
	Fetched      int64 `json:"fetched"`
	ChunksServed int   `json:"chunks_served"`
}

// ClusterPart is one replicated partition: its replicas and, where this
// node holds one, its group as this node sees it.
type ClusterPart struct {
	Topic     string     `json:"topic"`
	Partition int        `json:"partition"`
	Replicas  []uint64   `json:"replicas"`
	Readers   []uint64   `json:"readers,omitempty"` // non-voting replicas, for consumer groups' coordinators
	Leader    uint64     `json:"leader"`
	Local     *RaftGroup `json:"local,omitempty"`
}

// Origin is who made a change, for the events it causes.
type Origin struct {
	Actor  string // "admin-token", or "user" (a user's password or a JWT of the admin role)
	Remote string // the peer's address
}

// Topic is a view of a topic.
type Topic struct {
	Name   string
	Config TopicConfig
	// Subscriptions counts the connection-level subscriptions (the ones
	// held against max-subscribers); Partition.Subscribers counts a
	// partition's subscribers of every kind.
	Subscriptions int64
	Parts         []Partition
}

// Partition is a view of one partition of a topic.
type Partition struct {
	ID          int32
	Shard       int
	Subscribers int
	Log         storage.LogStats
	// State is online, read-only or offline, and Reason why when not
	// online: the broker decides, from Log, for every report alike.
	State  wire.PartitionState
	Reason string
}

// Shard is a view of one shard.
type Shard struct {
	ID         int
	InboxDepth int
	InboxCap   int
	Partitions int
	Batches    uint64
	Messages   uint64
}

// Connection is one client connection, as GET /api/v1/connections lists it.
type Connection struct {
	Remote        string    `json:"remote"`
	Client        string    `json:"client"`
	ConnectedAt   time.Time `json:"connected_at"`
	Subscriptions int       `json:"subscriptions"`
	Groups        int       `json:"groups"`
	QueuedBytes   int64     `json:"queued_bytes"` // in the outbox and unsent in the socket buffer
	// Identity is the verified client certificate's subject CN and SANs on
	// a mutual-TLS connection.
	Identity string `json:"identity,omitempty"`
	// Via is the gateway ("grpc", "http", "ws") an in-process session
	// serves; absent for a native connection.
	Via string `json:"via,omitempty"`
}

// TopicConfig is a topic's config as typed JSON. Its keys are the config
// keys in the admin API's snake case (max_subscribers for the protocol's
// max-subscribers), the keys a POST or PATCH takes, so a GET's config can
// be sent back in a PATCH.
type TopicConfig struct {
	MaxSubscribers  int    `json:"max_subscribers"`
	Storage         string `json:"storage"`
	Fsync           string `json:"fsync"`
	Retention       string `json:"retention"`
	RetentionBytes  int64  `json:"retention_bytes"`
	DeadLetterTopic string `json:"dead_letter_topic"`
	MaxDeliveries   int    `json:"max_deliveries"`
	Encryption      string `json:"encryption"` // on | off
}

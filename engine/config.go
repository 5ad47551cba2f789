package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/server"
	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Config configures a broker. Start from DefaultConfig: the zero value is
// not a working configuration (it would refuse every topic).
type Config struct {
	// Addr is the native protocol's plaintext listener, host:port; port 0
	// picks one. Empty or "off": no plaintext listener (TLSAddr then).
	Addr string
	// TLSAddr is the native protocol's TLS listener, host:port; empty for
	// none. It needs TLSCertFile and TLSKeyFile.
	TLSAddr string
	// TLSCertFile and TLSKeyFile are the broker's certificate chain and
	// key (PEM), for TLSAddr and, with HTTPTLS, the HTTP listener. They are
	// reloaded when the files change (server.Certs).
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile makes TLSAddr require client certificates signed by
	// this CA (PEM): mutual TLS.
	TLSClientCAFile string
	// HTTPTLS serves HTTPAddr over HTTPS with TLSCertFile, when one is
	// given (the default); false keeps HTTP plaintext.
	HTTPTLS bool
	// HTTPAddr serves HTTP (httpapi): /healthz and /readyz; the dashboard's
	// files at /; and, behind the admin token, /metrics, /api/v1/health,
	// /api/v1/metrics/history, the admin API under /api/v1/ and, with
	// Pprof, /debug/pprof/. Empty disables HTTP.
	HTTPAddr string
	// GRPCAddr serves the gRPC front end (gateway/grpcgw, docs/GRPC.md),
	// host:port; empty or "off" (the default) serves none. It serves TLS
	// when TLSCertFile is set, with the native TLS listener's settings:
	// client certificates are required when TLSClientCAFile is set.
	GRPCAddr string
	// DataDir is where the broker keeps its files.
	DataDir string
	// Shards is the number of partition-owning shard goroutines.
	Shards int
	// EventLoops is the number of network event loops. gnet's own default
	// is NumCPU, not GOMAXPROCS, so it is always set explicitly.
	EventLoops int
	// PinShards locks each shard's thread to a CPU.
	PinShards bool
	// MaxConnections bounds the native protocol's open connections; one
	// more is answered with LIMIT_EXCEEDED and closed. The default is half
	// of what the file-descriptor limit leaves after a reserve (limits.go).
	MaxConnections int
	// MaxHandshakesPerAddr bounds, per source address, the connections
	// that have not finished their handshake: one more is refused with
	// LIMIT_EXCEEDED. A client's handshake takes a round trip, so honest
	// clients hold few at once; a flood of bare connections from one host
	// is held to this many.
	MaxHandshakesPerAddr int
	// HandshakeTimeout closes a connection that has not sent a whole Hello
	// this long after it was accepted.
	HandshakeTimeout time.Duration
	// MaxOpenFiles bounds the segment files the partitions hold open at
	// once; idle ones are closed, least recently used first, and reopened
	// when needed. The default is the other half of the descriptors.
	MaxOpenFiles int
	// MaxTopics bounds the number of topics (the seed's 1000).
	MaxTopics int
	// MaxSubscribers bounds the subscriptions per topic (the seed's 10000);
	// a topic may lower it with the max-subscribers config key.
	MaxSubscribers int
	// MaxMessageBytes bounds one record: key, value and headers.
	MaxMessageBytes int
	// MaxFrameBytes bounds one frame, and so one publish batch.
	MaxFrameBytes int
	// MaxPendingBytes bounds what the broker holds unsent for one
	// connection. A subscriber past it is a slow consumer: it gets an error
	// and is disconnected, and nobody else waits for it.
	MaxPendingBytes int
	// MaxInflightBytes bounds the inbound bytes the broker holds for all
	// connections together: what read buffers and half-read frames hold,
	// and each publish until its shard answers it. Past three quarters of
	// it connections take no new publish until it falls to half; past it
	// the connections holding the most unprocessed bytes are cut
	// (inflight.go).
	MaxInflightBytes int64
	// MaxAckDelay bounds how long a publish ack is held back while a
	// subscriber of the partition is past a quarter of its MaxPendingBytes: the
	// flow control that slows producers to their subscribers' pace.
	MaxAckDelay time.Duration
	// SlowConsumerTimeout disconnects a subscriber that stays past a quarter of its
	// MaxPendingBytes for this long.
	SlowConsumerTimeout time.Duration
	// StuckConsumerAfter is how long a subscriber's socket may take none of
	// what the broker holds for it before the subscriber counts as stuck:
	// flow control then stops holding its producers' acks for it. Shorter
	// frees producers sooner from a subscriber that stopped reading; too
	// short takes a reader that merely paused for a stuck one, and its
	// producers, no longer slowed, soon fill its MaxPendingBytes.
	StuckConsumerAfter time.Duration
	// MaxProducers bounds the idempotent producers each partition
	// remembers (their last batches, to answer retries); a new one evicts
	// the least recently used. 0 = shard.DefaultMaxProducers (1024).
	MaxProducers int
	// MaxOutboundBytes bounds what the broker holds unsent for all
	// connections together. When it is passed, the connections furthest
	// behind (holding the most) are disconnected as slow consumers until
	// the total is back within it.
	MaxOutboundBytes int64
	// MaxFetchesPerConn bounds the Fetches one connection has outstanding
	// (being read or waiting for data); one more is answered with
	// LIMIT_EXCEEDED. It is what keeps a client that pipelines long polls
	// from filling the broker's memory with waiting fetches.
	MaxFetchesPerConn int
	// MaxFetchWait caps a Fetch's max_wait_ms; a longer wait is cut to it.
	// A client may ask for 49 days, and a wait the broker has promised is
	// state it must keep.
	MaxFetchWait time.Duration
	// AutoCreateTopics creates a topic on first publish or subscribe, with
	// DefaultPartitions partitions, instead of failing with unknown topic.
	AutoCreateTopics bool
	// AutoCreateRate bounds topic auto-creation, in topics a second (in
	// bursts of as many); past it a publish or subscribe to a missing
	// topic is refused with LIMIT_EXCEEDED. Explicit creates are not
	// limited.
	AutoCreateRate float64
	// DefaultPartitions is the partition count of auto-created topics and
	// of creates that do not name one.
	DefaultPartitions int
	// MaxPartitions bounds the partition count of one topic.
	MaxPartitions int
	// DefaultStorage is the storage of topics created without one: "disk"
	// (a durable log), "memory" (kept in memory, lost on restart) or
	// "redis" (in the Redis server of RedisURL).
	DefaultStorage string
	// RedisURL is the Redis server that keeps the logs of topics created
	// with storage=redis (docs/REDIS.md): redis://[user:password@]host:port[/db],
	// or rediss:// for TLS. Empty: no Redis, and such topics are refused.
	RedisURL string
	// RedisPassword, when set, is the password sent with AUTH instead of
	// the URL's (so the URL can be shown).
	RedisPassword string
	// RedisPrefix starts every key the broker writes in Redis; brokers
	// sharing one Redis each need their own.
	RedisPrefix string
	// RedisTLSCAFile verifies the Redis server's certificate; with
	// RedisTLSCertFile and RedisTLSKeyFile the broker presents a client
	// certificate. Either turns TLS on.
	RedisTLSCAFile, RedisTLSCertFile, RedisTLSKeyFile string
	// RedisTimeout bounds each Redis operation; a write that gets no
	// answer in time fails with OUTCOME_UNKNOWN.
	RedisTimeout time.Duration
	// DefaultFsync is the fsync policy of durable topics created without
	// one: "always" (ack after fsync, with group commit), "interval=D", or
	// "never".
	DefaultFsync string
	// DefaultRetention is how long topics keep messages unless configured
	// otherwise (the seed's one hour); 0 keeps them forever.
	DefaultRetention time.Duration
	// DefaultRetentionBytes bounds each partition's log; 0 means no bound.
	DefaultRetentionBytes int64
	// MemoryTopicBytes bounds each partition of a memory topic.
	MemoryTopicBytes int64
	// SegmentBytes is the size at which a partition's active segment rolls.
	SegmentBytes int64
	// OffsetsSegmentBytes is the segment size of a cluster's internal
	// offsets topic: small, since retention removes what its checkpoints
	// made obsolete a segment at a time (docs/CLUSTER.md).
	OffsetsSegmentBytes int64
	// CatchUpBytes is a cluster's catch-up window: a replica further
	// behind its leader than this many bytes of batches fetches them whole
	// from the leader's segments rather than as Raft entries (0: entries
	// only; docs/CLUSTER.md).
	CatchUpBytes int64
	// SegmentAge rolls a segment once it is this old, so age retention
	// can delete it.
	SegmentAge time.Duration
	// CacheBytes sizes the read cache of log blocks shared by all
	// partitions; 0 disables it.
	CacheBytes int64
	// RetentionInterval is how often shards apply retention.
	RetentionInterval time.Duration
	// GroupRetention is how long a consumer group with no members and no
	// commit (nor ack-floor move) is kept, with its committed offsets,
	// before it is removed; 0 keeps groups forever. Without it every group
	// ever named stays in memory and on disk.
	GroupRetention time.Duration
	// FS is the file system the logs live on; nil means the OS. Tests set
	// an in-memory or fault-injecting one.
	FS vfs.FS
	// ShutdownTimeout bounds how long Shutdown waits for in-flight frames
	// to be written before it closes connections anyway.
	ShutdownTimeout time.Duration
	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP address.
	// Off by default: profiles reveal internals and cost CPU while taken.
	Pprof bool
	// AdminToken is the bearer token the admin API, /metrics and the
	// dashboard's data require. Empty: the broker makes one at start, keeps
	// it in DataDir/admin.token and logs the dashboard address with it.
	AdminToken string
	// AuditLog is where the built-in audit plugin writes one JSON line per
	// admin action, topic and group change and connection: a file path,
	// "stderr", or empty for no audit log.
	AuditLog string
	// EventLog is where the built-in event-log plugin writes one JSON line
	// per telemetry event of every kind, traffic included (a line per
	// stored publish batch): a file path, or "stderr"; empty: off.
	EventLog string
	// HistoryInterval is how often the metrics history (GET
	// /api/v1/metrics/history, and the rates of /api/v1/health) takes a
	// sample.
	HistoryInterval time.Duration
	// HistoryRetention is how much metrics history is kept.
	HistoryRetention time.Duration
	// Auth makes every client authenticate in its handshake
	// (SCRAM-SHA-256 with a user of DataDir/security.json, a TOKEN: a JWT
	// of the trusted issuer or the admin token, or EXTERNAL: a verified
	// client certificate) and checks what it does against its role and
	// the ACL rules, which deny what they do not allow. Off, every client
	// is anonymous and may do anything.
	Auth bool
	// AllowAnonymous lets a broker with Auth off listen on an address
	// other than loopback; without it such a broker refuses to start (as
	// Redis's protected mode does), since anyone who reaches the port
	// could read and delete every topic.
	AllowAnonymous bool
	// JWTIssuer and JWTKeyFile trust the signed tokens of an external
	// identity provider: its name (the tokens' iss claim) and its public
	// key (PEM: Ed25519 or RSA, or a certificate). JWTAudience, when set,
	// must be in the tokens' aud claim.
	JWTIssuer   string
	JWTKeyFile  string
	JWTAudience string
	// AuthFailureBurst failed authentications from one source address
	// are allowed, then one per AuthFailureInterval: the rest are refused
	// before their credentials are checked.
	AuthFailureBurst    int
	AuthFailureInterval time.Duration
	// EncryptAtRest encrypts the disk topics created without an
	// encryption setting (the topic config key "encryption"). A topic's
	// encryption is fixed at creation: changing this leaves existing
	// topics as they are. It needs MasterKey.
	EncryptAtRest bool
	// MasterKey wraps the data keys of encrypted topics (crypt.MasterKey
	// from a key file or the environment; a KMS could implement the
	// interface). Nil: no encryption at rest, and a data directory with
	// an encrypted topic refuses to start.
	MasterKey crypt.KeyProvider
	// Logger receives the broker's structured logs.
	Logger *slog.Logger

	// Clustering (cluster.go). With Peers empty the broker is one node,
	// as before: NodeID and ClusterAddr are ignored.
	//
	// NodeID is this node's id in the cluster, 1 or more, unique.
	NodeID uint64
	// ClusterAddr is where this node listens for the other nodes (Raft
	// messages), host:port.
	ClusterAddr string
	// Peers maps every node of the initial cluster, this one included, to
	// its ClusterAddr. A node that is not in it joins a running cluster of
	// those members (docs/CLUSTER.md, adding a node): its controller
	// replica starts empty, to be added by cluster add-node.
	Peers map[uint64]string
	// ClusterID names the cluster; nodes of another cluster are refused.
	ClusterID string
	// AdvertiseAddr is the native protocol address the other nodes give
	// clients for this node (NOT_LEADER answers, metadata); empty: the
	// address Addr bound.
	AdvertiseAddr string
	// RaftTick is the Raft clock's tick; elections take 10-20 ticks.
	// Zero: cluster.DefaultTickInterval (50 ms).
	RaftTick time.Duration
}

// DefaultConfig returns the configuration `ratatoskr serve` starts with.
func DefaultConfig() Config {
	n := runtime.GOMAXPROCS(0)
	return Config{
		Addr:                 "127.0.0.1:7070",
		HTTPTLS:              true,
		HTTPAddr:             "127.0.0.1:8080",
		DataDir:              "./data",
		Shards:               n,
		EventLoops:           n,
		PinShards:            true,
		MaxConnections:       server.FDShare(),
		MaxOpenFiles:         server.FDShare(),
		MaxHandshakesPerAddr: 256,
		HandshakeTimeout:     10 * time.Second,
		MaxTopics:            1000,
		MaxSubscribers:       10000,
		MaxMessageBytes:      wire.DefaultMaxMessageBytes,
		MaxFrameBytes:        wire.DefaultMaxFrameBytes,
		MaxPendingBytes:      64 << 20,
		MaxInflightBytes:     1 << 30,
		MaxAckDelay:          250 * time.Millisecond,
		SlowConsumerTimeout:  5 * time.Second,
		StuckConsumerAfter:   time.Second,
		MaxOutboundBytes:     1 << 30,
		MaxFetchesPerConn:    256,
		MaxFetchWait:         30 * time.Second,
		AutoCreateTopics:     true,
		AutoCreateRate:       100,
		DefaultPartitions:    1,
		MaxPartitions:        1024,
		DefaultStorage:       "disk",
		RedisPrefix:          "ratatoskr",
		RedisTimeout:         defaultRedisTimeout,
		DefaultFsync:         "always",
		DefaultRetention:     time.Hour,
		MemoryTopicBytes:     64 << 20,
		SegmentBytes:         128 << 20,
		OffsetsSegmentBytes:  4 << 20,
		CatchUpBytes:         cluster.DefaultCatchUpBytes,
		SegmentAge:           time.Hour,
		CacheBytes:           256 << 20,
		RetentionInterval:    5 * time.Second,
		GroupRetention:       7 * 24 * time.Hour,
		ShutdownTimeout:      10 * time.Second,
		HistoryInterval:      5 * time.Second,
		HistoryRetention:     time.Hour,
		AuthFailureBurst:     10,
		AuthFailureInterval:  time.Second,
	}
}

// frameOverhead is room for a frame header, a topic name and a batch header
// around a message of the maximum size.
const frameOverhead = server.FrameOverhead

// Validate checks every field and names the first bad one.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, v any, why string) {
		errs = append(errs, fmt.Errorf("engine: %s = %v: %s", field, v, why))
	}
	if c.Addr == "off" {
		c.Addr = ""
	}
	if c.Addr == "" && c.TLSAddr == "" {
		bad("Addr", c.Addr, "no listener: give Addr, TLSAddr or both")
	}
	if c.GRPCAddr == "off" {
		c.GRPCAddr = ""
	}
	if c.GRPCAddr != "" {
		if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
			bad("GRPCAddr", c.GRPCAddr, "not host:port: "+err.Error())
		} else if !c.Auth && !c.AllowAnonymous && !IsLoopback(c.GRPCAddr) {
			bad("GRPCAddr", c.GRPCAddr, "is not a loopback address and authentication is off; turn authentication "+
				"on (--auth on) or say that anonymous access is intended (--allow-anonymous)")
		}
	}
	if len(c.Peers) > 0 {
		switch {
		case c.NodeID == 0:
			bad("NodeID", c.NodeID, "a cluster node needs an id of 1 or more (--node-id)")
		case c.ClusterAddr == "":
			bad("ClusterAddr", c.ClusterAddr, "a cluster node needs an address for the other nodes (--cluster-addr)")
		case c.Peers[c.NodeID] != "" && c.Peers[c.NodeID] != c.ClusterAddr && !strings.HasSuffix(c.ClusterAddr, ":0"):
			bad("Peers", c.Peers[c.NodeID], "names this node ("+strconv.FormatUint(c.NodeID, 10)+") at another address than --cluster-addr "+c.ClusterAddr)
		}
		if _, ok := c.Peers[0]; ok {
			bad("Peers", c.Peers, "node ids start at 1")
		}
		if c.ClusterID == "" {
			c.ClusterID = "ratatoskr"
		}
	}
	switch {
	case c.TLSAddr != "" && (c.TLSCertFile == "" || c.TLSKeyFile == ""):
		bad("TLSAddr", c.TLSAddr, "needs a certificate and its key (TLSCertFile, TLSKeyFile; --tls-cert, --tls-key)")
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		bad("TLSCertFile", c.TLSCertFile, "TLSCertFile and TLSKeyFile go together (--tls-cert, --tls-key)")
	case c.TLSClientCAFile != "" && c.TLSAddr == "":
		bad("TLSClientCAFile", c.TLSClientCAFile, "client certificates are checked on TLSAddr, which is not set")
	}
	if !c.Auth && !c.AllowAnonymous && c.Addr != "" && !IsLoopback(c.Addr) {
		bad("Addr", c.Addr, "is not a loopback address and authentication is off: anyone who reaches it could read, "+
			"publish and delete every topic; turn authentication on (--auth on) or say that anonymous access is "+
			"intended (--allow-anonymous)")
	}
	if (c.JWTIssuer == "") != (c.JWTKeyFile == "") {
		bad("JWTIssuer", c.JWTIssuer, "JWTIssuer and JWTKeyFile go together")
	}
	if c.AuthFailureBurst < 1 {
		bad("AuthFailureBurst", c.AuthFailureBurst, "must be at least 1")
	}
	if c.AuthFailureInterval <= 0 {
		bad("AuthFailureInterval", c.AuthFailureInterval, "must be positive")
	}
	if c.Shards < 1 || c.Shards > 1024 {
		bad("Shards", c.Shards, "must be 1..1024")
	}
	if c.EventLoops < 1 || c.EventLoops > 1024 {
		bad("EventLoops", c.EventLoops, "must be 1..1024")
	}
	if c.MaxConnections < 1 {
		bad("MaxConnections", c.MaxConnections, "must be at least 1")
	}
	if c.MaxHandshakesPerAddr < 1 {
		bad("MaxHandshakesPerAddr", c.MaxHandshakesPerAddr, "must be at least 1")
	}
	if c.HandshakeTimeout <= 0 {
		bad("HandshakeTimeout", c.HandshakeTimeout, "must be positive")
	}
	if c.MaxOpenFiles < 16 {
		bad("MaxOpenFiles", c.MaxOpenFiles, "must be at least 16")
	}
	if c.MaxTopics < 1 {
		bad("MaxTopics", c.MaxTopics, "must be at least 1")
	}
	if c.MaxSubscribers < 1 {
		bad("MaxSubscribers", c.MaxSubscribers, "must be at least 1")
	}
	if c.MaxMessageBytes < 1 || c.MaxMessageBytes > 64<<20 {
		bad("MaxMessageBytes", c.MaxMessageBytes, "must be 1 B..64 MiB")
	}
	if c.MaxFrameBytes < c.MaxMessageBytes+frameOverhead || c.MaxFrameBytes > 256<<20 {
		bad("MaxFrameBytes", c.MaxFrameBytes, fmt.Sprintf("must be %d (MaxMessageBytes plus overhead) ..256 MiB", c.MaxMessageBytes+frameOverhead))
	}
	if c.MaxPendingBytes < c.MaxFrameBytes {
		bad("MaxPendingBytes", c.MaxPendingBytes, "must be at least MaxFrameBytes")
	}
	if c.MaxInflightBytes < 4*int64(c.MaxFrameBytes) {
		bad("MaxInflightBytes", c.MaxInflightBytes, "must be at least 4 times MaxFrameBytes")
	}
	if c.MaxAckDelay <= 0 {
		bad("MaxAckDelay", c.MaxAckDelay, "must be positive")
	}
	if c.SlowConsumerTimeout <= 0 {
		bad("SlowConsumerTimeout", c.SlowConsumerTimeout, "must be positive")
	}
	if c.StuckConsumerAfter <= 0 {
		bad("StuckConsumerAfter", c.StuckConsumerAfter, "must be positive")
	}
	if c.MaxOutboundBytes < int64(c.MaxPendingBytes) {
		bad("MaxOutboundBytes", c.MaxOutboundBytes, "must be at least MaxPendingBytes")
	}
	if !(c.AutoCreateRate > 0) {
		bad("AutoCreateRate", c.AutoCreateRate, "must be positive")
	}
	if c.MaxFetchesPerConn < 1 || c.MaxFetchesPerConn > 1<<20 {
		bad("MaxFetchesPerConn", c.MaxFetchesPerConn, "must be 1..1048576")
	}
	if c.MaxFetchWait < time.Millisecond || c.MaxFetchWait > math.MaxUint32*time.Millisecond {
		bad("MaxFetchWait", c.MaxFetchWait, "must be 1ms..1193h (the protocol's max_wait_ms)")
	}
	if c.MaxPartitions < 1 || c.MaxPartitions > 1<<16 {
		bad("MaxPartitions", c.MaxPartitions, "must be 1..65536")
	}
	if c.DefaultPartitions < 1 || c.DefaultPartitions > c.MaxPartitions {
		bad("DefaultPartitions", c.DefaultPartitions, "must be 1..MaxPartitions")
	}
	if c.DefaultStorage != "disk" && c.DefaultStorage != "memory" && c.DefaultStorage != redisStorage {
		bad("DefaultStorage", c.DefaultStorage, `must be "disk", "memory" or "redis"`)
	}
	if c.DefaultStorage == redisStorage && c.RedisURL == "" {
		bad("DefaultStorage", c.DefaultStorage, "needs RedisURL")
	}
	if c.RedisURL != "" {
		if _, err := c.redisConfig(); err != nil {
			bad("RedisURL", "(hidden)", err.Error())
		}
		if len(c.Peers) > 0 {
			bad("RedisURL", "(hidden)", "Redis-kept topics are not replicated: a cluster cannot use them yet")
		}
	}
	if (c.RedisTLSCertFile == "") != (c.RedisTLSKeyFile == "") {
		bad("RedisTLSCertFile", c.RedisTLSCertFile, "needs RedisTLSKeyFile, and the other way round")
	}
	if c.RedisTimeout <= 0 {
		bad("RedisTimeout", c.RedisTimeout, "must be positive")
	}
	if c.EncryptAtRest && c.MasterKey == nil {
		bad("EncryptAtRest", c.EncryptAtRest, "needs a MasterKey (serve --master-key-file or RATATOSKR_MASTER_KEY)")
	}
	if _, err := ParseFsync(c.DefaultFsync); err != nil {
		bad("DefaultFsync", c.DefaultFsync, err.Error())
	}
	if c.DefaultRetention < 0 || c.DefaultRetentionBytes < 0 {
		bad("DefaultRetention", c.DefaultRetention, "retention must not be negative")
	}
	if c.MemoryTopicBytes < 1<<20 {
		bad("MemoryTopicBytes", c.MemoryTopicBytes, "must be at least 1 MiB")
	}
	if c.SegmentBytes < 1<<20 || c.SegmentBytes > 1<<32-1 {
		bad("SegmentBytes", c.SegmentBytes, "must be 1 MiB..4 GiB")
	}
	if c.SegmentBytes < int64(c.MaxFrameBytes) {
		bad("SegmentBytes", c.SegmentBytes, "must be at least MaxFrameBytes")
	}
	if c.OffsetsSegmentBytes < 64<<10 || c.OffsetsSegmentBytes > 1<<32-1 {
		bad("OffsetsSegmentBytes", c.OffsetsSegmentBytes, "must be 64 KiB..4 GiB")
	}
	if c.CatchUpBytes < 0 {
		bad("CatchUpBytes", c.CatchUpBytes, "must not be negative")
	}
	if c.SegmentAge <= 0 || c.RetentionInterval <= 0 {
		bad("SegmentAge", c.SegmentAge, "segment age and retention interval must be positive")
	}
	if c.GroupRetention < 0 || (c.GroupRetention > 0 && c.GroupRetention < coord.RetentionPass) {
		bad("GroupRetention", c.GroupRetention, "must be 0 (keep groups forever) or at least "+coord.RetentionPass.String())
	}
	if c.CacheBytes < 0 {
		bad("CacheBytes", c.CacheBytes, "must not be negative")
	}
	if c.FS == nil {
		c.FS = vfs.Default()
	}
	if c.ShutdownTimeout < 0 {
		bad("ShutdownTimeout", c.ShutdownTimeout, "must not be negative")
	}
	if c.AuditLog != "" && c.AuditLog != AuditStderr {
		if err := checkAuditDir(c.AuditLog); err != nil {
			bad("AuditLog", c.AuditLog, err.Error())
		}
	}
	if c.EventLog != "" && c.EventLog != AuditStderr {
		if err := checkAuditDir(c.EventLog); err != nil {
			bad("EventLog", c.EventLog, err.Error())
		}
	}
	if c.HistoryInterval <= 0 {
		bad("HistoryInterval", c.HistoryInterval, "must be positive")
	}
	if c.HistoryRetention < c.HistoryInterval {
		bad("HistoryRetention", c.HistoryRetention, "must be at least HistoryInterval")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(errs...)
}

// checkAuditDir checks that the audit log's directory exists, so a typo
// fails at start rather than at the first line.
func checkAuditDir(path string) error {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("directory %s does not exist", dir)
	case err != nil:
		return err
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// IsLoopback reports whether addr (host:port) listens on loopback only:
// localhost or a loopback IP. An empty host listens on every interface.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// FDLimit is the process's limit on open files, after raising it
// (server.FDLimit: connections and segment files share it).
func FDLimit() int { return server.FDLimit() }

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/ratatoskr-mq/ratatoskr/engine"
	"github.com/ratatoskr-mq/ratatoskr/storage/crypt"
)

// serveCmd runs a broker. Each setting comes from its flag, else its
// RATATOSKR_* variable, else the --config file (keys are the flag names),
// else the default; config.go resolves the file and reports the sources.
type serveCmd struct {
	Config                  string    `env:"RATATOSKR_CONFIG" placeholder:"PATH" help:"TOML file of settings, keyed by flag name; flags and RATATOSKR_* variables override it."`
	PrintConfig             bool      `help:"Print every setting, its value and where it came from, then exit."`
	Addr                    string    `default:"127.0.0.1:7070" env:"RATATOSKR_ADDR" help:"Native protocol listen address, plaintext; \"off\" or empty for none (TLS only)."`
	TLSAddr                 string    `env:"RATATOSKR_TLS_ADDR" name:"tls-addr" placeholder:"HOST:PORT" help:"Native protocol listen address over TLS; needs --tls-cert and --tls-key."`
	TLSCert                 string    `env:"RATATOSKR_SERVER_TLS_CERT" name:"tls-cert" placeholder:"PATH" help:"The broker's certificate chain (PEM), for --tls-addr and HTTPS; reloaded when the file changes."`
	TLSKey                  string    `env:"RATATOSKR_SERVER_TLS_KEY" name:"tls-key" placeholder:"PATH" help:"The certificate's private key (PEM); reloaded when the file changes."`
	TLSClientCA             string    `env:"RATATOSKR_TLS_CLIENT_CA" name:"tls-client-ca" placeholder:"PATH" help:"Require client certificates signed by this CA (PEM) on --tls-addr: mutual TLS. Reloaded when the file changes."`
	HTTPTLS                 bool      `default:"true" negatable:"" env:"RATATOSKR_HTTP_TLS" name:"http-tls" help:"Serve --http-addr over HTTPS with --tls-cert when one is given; --no-http-tls keeps it plaintext."`
	HTTPAddr                string    `default:"127.0.0.1:8080" env:"RATATOSKR_HTTP_ADDR" name:"http-addr" help:"HTTP listen address (/healthz); empty disables."`
	GRPCAddr                string    `default:"off" env:"RATATOSKR_GRPC_ADDR" name:"grpc-addr" placeholder:"HOST:PORT" help:"gRPC front end listen address (docs/GRPC.md); TLS with --tls-cert when one is given, requiring client certificates with --tls-client-ca; \"off\" or empty for none."`
	Data                    string    `default:"./data" env:"RATATOSKR_DATA" help:"Data directory."`
	Shards                  int       `default:"0" env:"RATATOSKR_SHARDS" help:"Partition-owning shards; 0 means GOMAXPROCS."`
	EventLoops              int       `default:"0" env:"RATATOSKR_EVENT_LOOPS" help:"Network event loops; 0 means GOMAXPROCS."`
	PinShards               bool      `default:"true" negatable:"" env:"RATATOSKR_PIN_SHARDS" help:"Pin each shard's thread to a CPU."`
	MaxConnections          int       `default:"0" env:"RATATOSKR_MAX_CONNECTIONS" help:"Most native protocol connections open at once; 0 means half of what the open-file limit leaves after a reserve."`
	MaxHandshakesPerAddress int       `default:"256" env:"RATATOSKR_MAX_HANDSHAKES_PER_ADDRESS" help:"Connections from one address that may be waiting to finish their handshake at once; more are refused."`
	HandshakeTimeout        duration  `default:"10s" env:"RATATOSKR_HANDSHAKE_TIMEOUT" help:"Close a connection that has not sent a whole Hello this long after it was accepted."`
	MaxOpenFiles            int       `default:"0" env:"RATATOSKR_MAX_OPEN_FILES" help:"Most partition segment files held open at once (idle ones are closed and reopened); 0 means the other half of the open-file limit."`
	MaxTopics               int       `default:"1000" env:"RATATOSKR_MAX_TOPICS" help:"Maximum number of topics."`
	MaxSubscribers          int       `default:"10000" env:"RATATOSKR_MAX_SUBSCRIBERS" help:"Maximum subscriptions per topic."`
	MaxMessageBytes         byteSize  `default:"1MiB" env:"RATATOSKR_MAX_MESSAGE_BYTES" help:"Maximum size of one message (key, value, headers)."`
	MaxFrameBytes           byteSize  `default:"4MiB" env:"RATATOSKR_MAX_FRAME_BYTES" help:"Maximum size of one frame, and so of one publish batch."`
	MaxPendingBytes         byteSize  `default:"64MiB" env:"RATATOSKR_MAX_PENDING_BYTES" help:"Unsent bytes held for one connection before it is disconnected as a slow consumer."`
	MaxInflightBytes        byteSize  `default:"1GiB" env:"RATATOSKR_MAX_INFLIGHT_BYTES" help:"Inbound bytes held for all connections together (half-read frames, and publishes until answered); past 3/4 of it publishes wait, past it the biggest holders are cut."`
	MaxAckDelay             duration  `default:"250ms" env:"RATATOSKR_MAX_ACK_DELAY" help:"Longest a publish ack is held while a subscriber is behind (flow control)."`
	SlowConsumerTimeout     duration  `default:"5s" env:"RATATOSKR_SLOW_CONSUMER_TIMEOUT" help:"Disconnect a subscriber that stays behind this long."`
	StuckConsumerAfter      duration  `default:"1s" env:"RATATOSKR_STUCK_CONSUMER_AFTER" help:"A subscriber whose socket takes nothing for this long no longer slows its producers (their acks are not held for it)."`
	MaxOutboundBytes        byteSize  `default:"1GiB" env:"RATATOSKR_MAX_OUTBOUND_BYTES" help:"Unsent bytes held for all connections together; past it the connections furthest behind are disconnected as slow consumers."`
	MaxFetches              int       `default:"256" env:"RATATOSKR_MAX_FETCHES_PER_CONNECTION" name:"max-fetches-per-connection" help:"Most Fetches one connection may have outstanding (being read or waiting for data); one more gets LIMIT_EXCEEDED."`
	MaxFetchWait            duration  `default:"30s" env:"RATATOSKR_MAX_FETCH_WAIT" help:"Longest a Fetch waits for data; a longer max_wait_ms is cut to it."`
	AutoCreateTopics        bool      `default:"true" negatable:"" env:"RATATOSKR_AUTO_CREATE_TOPICS" help:"Create unknown topics on first publish or subscribe."`
	AutoCreateRate          float64   `default:"100" env:"RATATOSKR_AUTO_CREATE_RATE" help:"Topics auto-created per second at most (in bursts of as many); past it a publish or subscribe to a missing topic is refused with LIMIT_EXCEEDED."`
	DefaultPartitions       int       `default:"1" env:"RATATOSKR_DEFAULT_PARTITIONS" help:"Partitions of auto-created topics."`
	ShutdownTimeout         duration  `default:"10s" env:"RATATOSKR_SHUTDOWN_TIMEOUT" help:"Time allowed to flush in-flight frames on shutdown."`
	DefaultStorage          string    `default:"disk" env:"RATATOSKR_DEFAULT_STORAGE" enum:"disk,memory,redis" help:"Storage of topics created without one: disk, memory or redis (needs --redis-url)."`
	RedisURL                string    `env:"RATATOSKR_REDIS_URL" name:"redis-url" secret:"" placeholder:"URL" help:"Redis server for topics created with --storage redis (docs/REDIS.md): redis://[user:password@]host:port[/db], or rediss:// for TLS."`
	RedisPassword           string    `env:"RATATOSKR_REDIS_PASSWORD" name:"redis-password" secret:"" help:"Password for Redis's AUTH, instead of the URL's."`
	RedisPrefix             string    `default:"ratatoskr" env:"RATATOSKR_REDIS_PREFIX" name:"redis-prefix" help:"Start of every key the broker writes in Redis; brokers sharing one Redis need their own."`
	RedisTLSCA              string    `env:"RATATOSKR_REDIS_TLS_CA" name:"redis-tls-ca" placeholder:"PATH" help:"CA bundle (PEM) that verifies the Redis server's certificate; turns TLS on."`
	RedisTLSCert            string    `env:"RATATOSKR_REDIS_TLS_CERT" name:"redis-tls-cert" placeholder:"PATH" help:"Client certificate (PEM) presented to Redis, with --redis-tls-key; turns TLS on."`
	RedisTLSKey             string    `env:"RATATOSKR_REDIS_TLS_KEY" name:"redis-tls-key" placeholder:"PATH" help:"Key of --redis-tls-cert."`
	RedisTimeout            duration  `default:"5s" env:"RATATOSKR_REDIS_TIMEOUT" name:"redis-timeout" help:"Longest a Redis operation may take; a publish whose write gets no answer in time fails with OUTCOME_UNKNOWN."`
	DefaultFsync            string    `default:"always" env:"RATATOSKR_DEFAULT_FSYNC" help:"Fsync policy of durable topics created without one: always, interval=DURATION or never."`
	Retention               *duration `env:"RATATOSKR_RETENTION" help:"Default retention by age (default 1h, or RATATOSKR_RETENTION_MS milliseconds); 0 keeps forever."`
	RetentionBytes          byteSize  `default:"0" env:"RATATOSKR_RETENTION_BYTES" help:"Default retention by size per partition; 0 means no bound."`
	SegmentBytes            byteSize  `default:"128MiB" env:"RATATOSKR_SEGMENT_BYTES" help:"Size at which a partition's segment file rolls."`
	OffsetsSegmentBytes     byteSize  `default:"4MiB" env:"RATATOSKR_OFFSETS_SEGMENT_BYTES" help:"Segment size of a cluster's consumer offsets topic, whose checkpoints let retention remove old segments."`
	CatchUpBytes            byteSize  `default:"16MiB" env:"RATATOSKR_CATCHUP_BYTES" name:"catchup-bytes" help:"In a cluster, a replica further behind its leader than this fetches the batches whole from the leader's segments; 0 sends Raft entries only."`
	CacheBytes              byteSize  `default:"256MiB" env:"RATATOSKR_CACHE_BYTES" help:"Read cache of log blocks shared by all partitions; 0 disables."`
	MemoryTopicBytes        byteSize  `default:"64MiB" env:"RATATOSKR_MEMORY_TOPIC_BYTES" help:"Bytes kept per partition of a memory topic."`
	GroupRetention          duration  `default:"7d" env:"RATATOSKR_GROUP_RETENTION" help:"Remove a consumer group, and its committed offsets, once it has had no members and no commits for this long; 0 keeps groups forever."`
	Pprof                   bool      `env:"RATATOSKR_PPROF" help:"Serve Go's profiler under /debug/pprof/ on the HTTP address (with the admin token)."`
	AdminToken              string    `env:"RATATOSKR_ADMIN_TOKEN" secret:"" help:"Bearer token for the admin API, /metrics and the dashboard; empty: the broker generates one and stores it in <data>/admin.token."`
	Auth                    string    `default:"off" env:"RATATOSKR_AUTH" enum:"on,off" help:"on: clients authenticate (SCRAM-SHA-256 users, JWTs, the admin token, client certificates) and ACLs decide what they may do; off: every client may do anything."`
	AllowAnonymous          bool      `env:"RATATOSKR_ALLOW_ANONYMOUS" help:"Let a broker with --auth off listen on a non-loopback address; without it such a broker refuses to start."`
	JWTIssuer               string    `name:"jwt-issuer" env:"RATATOSKR_JWT_ISSUER" help:"Trust the tokens of this issuer (their iss claim); with --jwt-key."`
	JWTKey                  string    `name:"jwt-key" env:"RATATOSKR_JWT_KEY" placeholder:"PATH" help:"The token issuer's public key (PEM: Ed25519 or RSA, or a certificate)."`
	AuthFailureBurst        int       `default:"10" env:"RATATOSKR_AUTH_FAILURE_BURST" help:"Failed authentications one source address may make before it is held to one per --auth-failure-interval."`
	AuthFailureInterval     duration  `default:"1s" env:"RATATOSKR_AUTH_FAILURE_INTERVAL" help:"How often an address that used up its failures may try again."`
	JWTAudience             string    `name:"jwt-audience" env:"RATATOSKR_JWT_AUDIENCE" help:"When set, tokens must name it in their aud claim."`
	AuditLog                string    `env:"RATATOSKR_AUDIT_LOG" placeholder:"PATH" help:"File path, or \"stderr\", for the audit log; empty: off."`
	EventLog                string    `env:"RATATOSKR_EVENT_LOG" placeholder:"PATH" help:"File path, or \"stderr\", for a JSON line per telemetry event, a line per stored publish batch included; empty: off."`
	EncryptAtRest           string    `default:"off" env:"RATATOSKR_ENCRYPT_AT_REST" enum:"on,off" help:"Encrypt disk topics created without an encryption setting at rest (AES-256-GCM); needs a master key. Existing topics keep theirs."`
	MasterKeyFile           string    `env:"RATATOSKR_MASTER_KEY_FILE" placeholder:"PATH" help:"Master key that wraps encrypted topics' data keys: 64 hex digits or 32 raw bytes, mode 0600 (ratatoskr key generate). Or RATATOSKR_MASTER_KEY, the 64 hex digits."`
	NodeID                  uint64    `name:"node-id" env:"RATATOSKR_NODE_ID" help:"This node's id in a cluster (1 or more, unique); with --peers."`
	ClusterAddr             string    `name:"cluster-addr" env:"RATATOSKR_CLUSTER_ADDR" placeholder:"HOST:PORT" help:"Where this node listens for the other nodes of its cluster (Raft); with --peers."`
	Peers                   string    `env:"RATATOSKR_PEERS" placeholder:"ID=HOST:PORT,..." help:"The nodes of the cluster and their --cluster-addr, this one included, such as 1=10.0.0.1:7400,2=10.0.0.2:7400,3=10.0.0.3:7400. A new node joining a running cluster lists the members only, not itself, and is added with cluster add-node. Empty: a single node."`
	ClusterID               string    `name:"cluster-id" default:"ratatoskr" env:"RATATOSKR_CLUSTER_ID" help:"The cluster's name; nodes of another cluster are refused."`
	AdvertiseAddr           string    `name:"advertise-addr" env:"RATATOSKR_ADVERTISE_ADDR" placeholder:"HOST:PORT" help:"The native address other nodes give clients for this one (NOT_LEADER answers); empty: the address --addr bound."`
	LogLevel                string    `default:"info" env:"RATATOSKR_LOG_LEVEL" enum:"debug,info,warn,error" help:"Log level: debug, info, warn, error."`
	LogFormat               string    `default:"text" env:"RATATOSKR_LOG_FORMAT" enum:"text,json" help:"Log format: text or json."`

	peers map[uint64]string // Peers, parsed (Validate)
}

// Validate parses what kong cannot: the --peers list.
func (s *serveCmd) Validate() error {
	p, err := parsePeers(s.Peers)
	s.peers = p
	return err
}

func (s *serveCmd) config() engine.Config {
	cfg := engine.DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.DataDir = s.Addr, s.HTTPAddr, s.Data
	cfg.TLSAddr, cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSClientCAFile = s.TLSAddr, s.TLSCert, s.TLSKey, s.TLSClientCA
	cfg.HTTPTLS = s.HTTPTLS
	cfg.GRPCAddr = s.GRPCAddr
	// 0 means GOMAXPROCS, which DefaultConfig holds; a negative count is
	// passed on for Validate to reject.
	if s.Shards != 0 {
		cfg.Shards = s.Shards
	}
	if s.EventLoops != 0 {
		cfg.EventLoops = s.EventLoops
	}
	cfg.PinShards = s.PinShards
	// 0 means the share of the open-file limit that DefaultConfig holds.
	if s.MaxConnections != 0 {
		cfg.MaxConnections = s.MaxConnections
	}
	cfg.MaxHandshakesPerAddr, cfg.HandshakeTimeout = s.MaxHandshakesPerAddress, s.HandshakeTimeout.D()
	if s.MaxOpenFiles != 0 {
		cfg.MaxOpenFiles = s.MaxOpenFiles
	}
	cfg.MaxTopics, cfg.MaxSubscribers = s.MaxTopics, s.MaxSubscribers
	cfg.MaxMessageBytes, cfg.MaxFrameBytes = int(s.MaxMessageBytes), int(s.MaxFrameBytes)
	cfg.MaxPendingBytes = int(s.MaxPendingBytes)
	cfg.AutoCreateTopics, cfg.DefaultPartitions = s.AutoCreateTopics, s.DefaultPartitions
	cfg.AutoCreateRate = s.AutoCreateRate
	cfg.MaxInflightBytes = int64(s.MaxInflightBytes)
	cfg.ShutdownTimeout = s.ShutdownTimeout.D()
	cfg.MaxAckDelay, cfg.SlowConsumerTimeout = s.MaxAckDelay.D(), s.SlowConsumerTimeout.D()
	cfg.MaxFetchesPerConn, cfg.MaxFetchWait = s.MaxFetches, s.MaxFetchWait.D()
	cfg.MaxOutboundBytes, cfg.StuckConsumerAfter = int64(s.MaxOutboundBytes), s.StuckConsumerAfter.D()
	cfg.Pprof = s.Pprof
	cfg.DefaultStorage, cfg.DefaultFsync = s.DefaultStorage, s.DefaultFsync
	cfg.RedisURL, cfg.RedisPassword, cfg.RedisPrefix = s.RedisURL, s.RedisPassword, s.RedisPrefix
	cfg.RedisTLSCAFile, cfg.RedisTLSCertFile, cfg.RedisTLSKeyFile = s.RedisTLSCA, s.RedisTLSCert, s.RedisTLSKey
	cfg.RedisTimeout = s.RedisTimeout.D()
	cfg.DefaultRetentionBytes, cfg.SegmentBytes = int64(s.RetentionBytes), int64(s.SegmentBytes)
	cfg.OffsetsSegmentBytes, cfg.CatchUpBytes = int64(s.OffsetsSegmentBytes), int64(s.CatchUpBytes)
	cfg.CacheBytes, cfg.MemoryTopicBytes = int64(s.CacheBytes), int64(s.MemoryTopicBytes)
	cfg.GroupRetention = s.GroupRetention.D()
	if s.Retention != nil {
		cfg.DefaultRetention = s.Retention.D()
	}
	cfg.AdminToken, cfg.AuditLog, cfg.EventLog = s.AdminToken, s.AuditLog, s.EventLog
	cfg.Auth, cfg.AllowAnonymous = s.Auth == "on", s.AllowAnonymous
	cfg.AuthFailureBurst, cfg.AuthFailureInterval = s.AuthFailureBurst, s.AuthFailureInterval.D()
	cfg.JWTIssuer, cfg.JWTKeyFile, cfg.JWTAudience = s.JWTIssuer, s.JWTKey, s.JWTAudience
	cfg.EncryptAtRest = s.EncryptAtRest == "on"
	cfg.NodeID, cfg.ClusterAddr, cfg.ClusterID, cfg.AdvertiseAddr = s.NodeID, s.ClusterAddr, s.ClusterID, s.AdvertiseAddr
	cfg.Peers = s.peers
	cfg.Logger = newLogger(s.LogLevel, s.LogFormat)
	return cfg
}

// parsePeers reads --peers: ID=HOST:PORT pairs separated by commas.
func parsePeers(v string) (map[uint64]string, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	out := map[uint64]string{}
	for _, item := range strings.Split(v, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		n, err := strconv.ParseUint(id, 10, 64)
		if !ok || err != nil || n == 0 || addr == "" {
			return nil, fmt.Errorf("--peers: %q is not ID=HOST:PORT with an id of 1 or more", item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--peers: node %d: %w", n, err)
		}
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("--peers: node %d is listed twice", n)
		}
		out[n] = addr
	}
	return out, nil
}

// masterKeyEnv holds the master key itself, as 64 hex digits: for
// deployments that inject secrets as variables. It is no flag, so that
// the key never shows in a process listing.
const masterKeyEnv = "RATATOSKR_MASTER_KEY"

// masterKey loads the master key from --master-key-file or
// RATATOSKR_MASTER_KEY; nil when neither is given.
func (s *serveCmd) masterKey() (crypt.KeyProvider, error) {
	env, inEnv := os.LookupEnv(masterKeyEnv)
	switch {
	case s.MasterKeyFile != "" && inEnv:
		return nil, errors.New("both --master-key-file and " + masterKeyEnv + " are set: give one")
	case s.MasterKeyFile != "":
		return crypt.LoadMasterKeyFile(s.MasterKeyFile)
	case inEnv:
		k, err := crypt.ParseMasterKey([]byte(env))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", masterKeyEnv, err)
		}
		return k, nil
	}
	return nil, nil
}

func newLogger(level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func (s *serveCmd) Run(ctx context.Context, k *kong.Context) error {
	set, err := s.resolve(k)
	if err != nil {
		return err
	}
	cfg := s.config()
	mk, err := s.masterKey()
	if err != nil {
		return err
	}
	if mk != nil {
		cfg.MasterKey = mk
		cfg.Logger.Info("master key loaded", "id", mk.ID())
	}
	if s.PrintConfig {
		if err := set.print(os.Stdout, s.note); err != nil {
			return err
		}
	}
	check := cfg // Validate fills in FS and Logger; engine.New does it again.
	if err := check.Validate(); err != nil {
		return set.explain(cfg, err)
	}
	if s.PrintConfig {
		return nil
	}
	slog.SetDefault(cfg.Logger)
	e, err := engine.New(cfg)
	if err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	cfg.Logger.Debug("runtime", "gomaxprocs", runtime.GOMAXPROCS(0), "go", runtime.Version())
	var fatal error
	select {
	case <-ctx.Done():
		cfg.Logger.Info("shutting down", "reason", "signal")
	case fatal = <-e.Fatal():
		// A broker that can no longer accept connections exits non-zero,
		// so that its supervisor starts a fresh one.
		cfg.Logger.Error("shutting down", "reason", fatal)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout+5*time.Second)
	defer cancel()
	if err := e.Shutdown(stopCtx); err != nil {
		return errors.Join(fatal, fmt.Errorf("shutdown: %w", err))
	}
	return fatal
}

// retentionMS applies RATATOSKR_RETENTION_MS, the seed's name for the
// default retention in milliseconds, when --retention came from nowhere
// else; it ranks with the other variables, above the file.
func (s *serveCmd) retentionMS() (string, error) {
	const env = "RATATOSKR_RETENTION_MS"
	v, ok := os.LookupEnv(env)
	if !ok {
		return "", nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return "", fmt.Errorf("%s=%q: not a whole number of milliseconds", env, v)
	}
	d := duration(time.Duration(ms) * time.Millisecond)
	s.Retention = &d
	return env, nil
}

// note explains a value whose meaning is not plain, for --print-config.
func (s *serveCmd) note(name string) string {
	switch {
	case name == "shards" && s.Shards == 0, name == "event-loops" && s.EventLoops == 0:
		return fmt.Sprintf("(GOMAXPROCS: %d)", runtime.GOMAXPROCS(0))
	case name == "max-connections" && s.MaxConnections == 0, name == "max-open-files" && s.MaxOpenFiles == 0:
		return fmt.Sprintf("(from the open-file limit %d: %d)", engine.FDLimit(), engine.DefaultConfig().MaxConnections)
	case name == "http-addr" && s.HTTPAddr == "":
		return "(HTTP off)"
	case name == "grpc-addr" && (s.GRPCAddr == "" || s.GRPCAddr == "off"):
		return "(gRPC off)"
	case name == "grpc-addr" && s.TLSCert != "":
		return "(TLS with --tls-cert)"
	case name == "addr" && (s.Addr == "" || s.Addr == "off"):
		return "(plaintext off)"
	case name == "tls-addr" && s.TLSAddr == "":
		return "(TLS off)"
	case name == "http-tls" && s.HTTPTLS && s.TLSCert == "":
		return "(no --tls-cert: HTTP)"
	case name == "admin-token" && s.AdminToken == "":
		return "(generated into " + filepath.Join(s.Data, "admin.token") + ")"
	case name == "audit-log" && s.AuditLog == "", name == "event-log" && s.EventLog == "":
		return "(off)"
	case name == "config" && s.Config == "":
		return "(no file)"
	}
	return ""
}

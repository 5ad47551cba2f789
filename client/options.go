package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Option configures a Client at Dial.
type Option func(*options)

type options struct {
	name            string
	dialTimeout     time.Duration
	linger          time.Duration
	batchBytes      int
	maxPendingBytes int
	subPendingBytes int
	subStall        time.Duration
	errorHandler    func(error)
	ackHandler      func(BatchAck)
	logger          *slog.Logger

	servers           []string
	reconnect         bool
	reconnectMin      time.Duration
	reconnectMax      time.Duration
	reconnectAttempts int  // -1: no limit
	retryFirst        bool // WithRetryOnFailedConnect
	tls               *tls.Config
	user, password    string // WithCredentials
	token             string // WithToken
	external          bool   // WithCertificateIdentity
	stateHandler      func(State, error)
	idempotent        bool
	compression       Codec
	dialer            func(ctx context.Context, addr string) (net.Conn, error) // WithDialer

	rerouteTimeout time.Duration // a Cluster's (WithRerouteTimeout)
	cluster        *Cluster      // set on a Cluster's connection to one node
}

func defaultOptions() options {
	return options{
		name:            "ratatoskr-go",
		dialTimeout:     10 * time.Second,
		batchBytes:      256 << 10,
		maxPendingBytes: 8 << 20,
		subPendingBytes: 64 << 20,
		subStall:        time.Second,
		logger:          slog.Default(),

		reconnect:         true,
		reconnectMin:      50 * time.Millisecond,
		reconnectMax:      5 * time.Second,
		reconnectAttempts: -1,

		rerouteTimeout: 30 * time.Second,
	}
}

// WithName sets the client name the broker logs for this connection.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithDialTimeout bounds connecting and the handshake when ctx has no
// deadline of its own. Default 10s.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithLinger makes the writer wait up to d for a batch to fill before
// sending it. The default, 0, sends as soon as the connection is idle and
// batches only what accumulates while a write is in flight, which costs no
// latency at low rates and still batches at high ones; a linger trades
// latency for fewer, larger batches.
func WithLinger(d time.Duration) Option { return func(o *options) { o.linger = d } }

// WithBatchBytes seals a batch once it holds this many bytes. Default 256 KiB;
// it is capped by the broker's maximum frame size.
func WithBatchBytes(n int) Option { return func(o *options) { o.batchBytes = n } }

// WithMaxPendingBytes bounds the bytes of published messages not yet
// acknowledged. Publish and PublishAsync wait (honouring their context)
// while the bound is reached, so a fast producer is slowed to the broker's
// pace instead of growing memory, and the broker holds acks back while a
// subscriber falls behind, which makes this the producer's flow-control
// window. Default 8 MiB.
func WithMaxPendingBytes(n int) Option { return func(o *options) { o.maxPendingBytes = n } }

// WithSubscriptionPendingBytes bounds the delivered bytes a subscription
// holds before its handler has run. At the bound the client stops reading
// from the connection (see WithSubscriptionStall), so the broker's flow
// control slows the producers. Default 64 MiB.
func WithSubscriptionPendingBytes(n int) Option { return func(o *options) { o.subPendingBytes = n } }

// WithSubscriptionStall bounds how long the client stops reading for a
// subscription at its pending bound. Past it, the delivery is dropped and
// the error handler gets ErrSlowConsumer. Waiting without a bound could
// deadlock a handler that publishes on its own client and waits for the
// ack, since acks travel on the connection that is not being read; the
// bound turns that into a reported drop. Default 1s.
func WithSubscriptionStall(d time.Duration) Option { return func(o *options) { o.subStall = d } }

// WithErrorHandler receives errors that no call returns: a failed async
// publish, a subscription dropping deliveries, the connection failing.
// It runs on the client's internal goroutines and must not block.
func WithErrorHandler(f func(error)) Option { return func(o *options) { o.errorHandler = f } }

// BatchAck is a batch of published messages the broker acknowledged: its
// Count messages have offsets BaseOffset to BaseOffset+Count-1 of
// Partition.
type BatchAck struct {
	Topic      string
	Partition  int32
	BaseOffset int64
	Count      int
}

// WithAckHandler receives every acknowledged batch, synchronous and
// asynchronous publishes alike: a producer's account of what was stored
// where. It runs on the client's reader goroutine and must not block.
func WithAckHandler(f func(BatchAck)) Option { return func(o *options) { o.ackHandler = f } }

// WithIdempotence makes the client an idempotent producer: it gets a
// producer id from the broker and numbers its batches per partition, and
// the broker stores a batch the client sends again (after a lost
// connection) only once, answering the retry with the original offsets
// (see idempotence.go and docs/PROTOCOL.md §5.1). The client then keeps at
// most ProducerWindow batches in flight per partition, and picks the
// partition of unkeyed messages itself. With it, publishes written to a
// connection that is lost before their acks are sent again on the next one
// (reconnect.go) instead of failing with ErrConnectionLost.
//
// It is off by default: on a quiet machine it cost 8% of one producer's
// publish-only throughput to a memory topic and about 20% to a durable one
// (docs/PERFORMANCE.md, "Idempotent producers"), above the 5% the project
// allows a default.
func WithIdempotence() Option { return func(o *options) { o.idempotent = true } }

// WithoutIdempotence turns idempotence off, the default (see
// WithIdempotence): batches carry no producer id, unkeyed ones go to
// PartitionAny, and nothing bounds the batches in flight per partition
// but WithMaxPendingBytes.
func WithoutIdempotence() Option { return func(o *options) { o.idempotent = false } }

// WithLogger sets the logger for the client's own diagnostics.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithDialer makes the client connect with dial instead of over TCP: a
// broker's gateway connects to it in process this way (server.ConnectLocal).
// dial gets the address given to Dial; TLS, when set, runs over what it
// returns.
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dialer = dial }
}

// WithServers adds broker addresses to the ones given to Dial (or
// JoinGroup). The client connects to the first that answers and, after a
// lost connection, tries them all again, starting with the one that
// worked last.
func WithServers(addrs ...string) Option {
	return func(o *options) { o.servers = append(o.servers, addrs...) }
}

// WithReconnect sets the backoff between attempts to reconnect after a
// lost connection: it doubles from lo up to hi, and each wait is drawn at
// random from the upper half of the current step, so that the clients of
// a broker that restarted do not all come back at once. Defaults 50ms and
// 5s. Reconnecting is on by default; see WithoutReconnect.
func WithReconnect(lo, hi time.Duration) Option {
	return func(o *options) {
		o.reconnect = true
		o.reconnectMin, o.reconnectMax = max(lo, time.Millisecond), max(hi, lo, time.Millisecond)
	}
}

// WithReconnectAttempts gives up reconnecting after n failed attempts in
// a row; the client then stops (Done, Err). Default: no limit, so a client
// outlives any broker restart; n <= 0 restores that.
func WithReconnectAttempts(n int) Option {
	return func(o *options) {
		o.reconnectAttempts = n
		if n <= 0 {
			o.reconnectAttempts = -1
		}
	}
}

// WithTLS makes the client connect over TLS with cfg (cloned). A cfg
// without a ServerName verifies the broker's certificate for the host of
// the address dialled. Give cfg.Certificates for a broker that requires
// client certificates (mutual TLS). TLS 1.2 is the minimum unless cfg
// asks for more.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg.Clone() } }

// WithCredentials authenticates as user with password, by SCRAM-SHA-256
// (RFC 5802/7677): the password never crosses the network, and the
// client checks that the broker knows the user's keys before it trusts the
// connection. Each connection (and reconnection) runs the exchange; its
// PBKDF2 costs the client about a millisecond, the broker nothing. A
// refusal fails Dial with an *Error of code AUTH_FAILED, and is not
// retried: reconnecting with the same password would fail again.
func WithCredentials(user, password string) Option {
	return func(o *options) { o.user, o.password, o.token = user, password, "" }
}

// WithToken authenticates with a bearer token: a JWT from the identity
// provider the broker trusts (--jwt-issuer, --jwt-key), or the broker's
// admin token. Send tokens over TLS only: whoever reads one can use it
// until it expires.
func WithToken(token string) Option {
	return func(o *options) { o.token, o.user, o.password = token, "", "" }
}

// WithCertificateIdentity authenticates as the identity of the client
// certificate given in WithTLS (mechanism EXTERNAL). A broker with a
// client CA also takes a connection that names no mechanism as its
// certificate's identity; this option says so explicitly.
func WithCertificateIdentity() Option { return func(o *options) { o.external = true } }

// WithRerouteTimeout bounds how long a Cluster keeps re-routing a
// publish, a fetch or a new subscription while its partition has no
// leader it can reach: from a batch's first refusal (NOT_LEADER,
// SHUTTING_DOWN, its node lost) until it fails with the last answer, and
// how long a publish waits for a partition whose leader is not known. An
// election takes about a second, a node's restart a few. Default 30s.
// A subscription that is running follows its partitions for as long as
// it runs. No effect on a Client.
func WithRerouteTimeout(d time.Duration) Option {
	return func(o *options) { o.rerouteTimeout = max(d, time.Millisecond) }
}

// WithRetryOnFailedConnect makes Dial keep trying when no broker answers,
// with the backoff and attempts of WithReconnect and
// WithReconnectAttempts, until one does or ctx ends: for a service that
// may start before its broker. Without it Dial tries each address once.
// A broker that answers and refuses the handshake (an unsupported
// version, say) fails Dial at once either way.
func WithRetryOnFailedConnect() Option { return func(o *options) { o.retryFirst = true } }

// WithoutReconnect makes a lost connection stop the client, failing what
// is in flight with ErrConnectionLost, as a client did before it could
// reconnect.
func WithoutReconnect() Option { return func(o *options) { o.reconnect = false } }

// WithStateHandler is called as the connection changes state: connected
// (Dial succeeded), disconnected (with the cause), reconnected (the new
// connection took over; its resubscriptions are sent, not yet in place),
// closed
// (with the cause, ErrClosed after Close). It runs on the client's
// reader goroutine (connected: on Dial's; closed: on whichever stopped the
// client), so it must return quickly, and must not call the client and
// wait for an answer. With a state handler a lost connection is told to
// it, not to the error handler or the logger. A GroupConsumer calls it
// the same way for its membership's connection.
func WithStateHandler(f func(State, error)) Option {
	return func(o *options) { o.stateHandler = f }
}

// Codec is a batch compression codec (see WithCompression).
type Codec = wire.Codec

// Codecs.
const (
	NoCompression = wire.CodecNone
	LZ4           = wire.CodecLZ4
	Zstd          = wire.CodecZstd
	Snappy        = wire.CodecSnappy
)

// ParseCodec reads a codec name: none, lz4, zstd or snappy.
func ParseCodec(name string) (Codec, error) { return wire.ParseCodec(name) }

// WithCompression compresses the batches this client publishes with
// codec. A batch is compressed as it is sent, as a whole (so compression
// gains with batch size, see WithLinger), and only when that makes it
// smaller: a batch of records under 512 bytes (wire.MinCompressBytes) is
// sent as it is. The broker stores and forwards compressed batches as they
// are, and every consumer decompresses them, whatever its own setting.
// Zstd compresses text best, LZ4 and Snappy cost the least CPU; see
// docs/PERFORMANCE.md. Default NoCompression.
func WithCompression(codec Codec) Option { return func(o *options) { o.compression = codec } }

// validate refuses option values that Dial cannot use.
func (o *options) validate() error {
	if !wire.ValidAttributes(byte(o.compression)) {
		return fmt.Errorf("%w: WithCompression(%s): not a codec", ErrInvalidArgument, o.compression)
	}
	return nil
}

// PublishOption adjusts one publish. Options are plain values, so passing
// them allocates nothing on the publish path.
type PublishOption struct {
	partition int32 // partition+1; 0 means not set
}

// ToPartition sends the message to partition p, overriding the key.
func ToPartition(p int) PublishOption { return PublishOption{partition: int32(p) + 1} }

// SubscribeOption adjusts a subscription.
type SubscribeOption func(*subOptions)

type subOptions struct {
	partition int32
	inline    bool
	start     Position
	batchEnd  func()
}

// StartAt makes a subscription start at a position in the log: it replays
// what the log holds from there, then follows the live tail with no gap
// and no duplicate. The default is Latest: only what is published from now
// on.
func StartAt(p Position) SubscribeOption {
	return func(o *subOptions) { o.start = p }
}

// Position is a place in a partition's log.
type Position struct {
	kind  wire.StartKind
	value int64
}

// Positions.
var (
	// Latest is the live tail: what is published from now on.
	Latest = Position{kind: wire.StartLatest}
	// Earliest is the first message the log still holds.
	Earliest = Position{kind: wire.StartEarliest}
)

// AtOffset is a position at an offset.
func AtOffset(offset int64) Position { return Position{kind: wire.StartOffset, value: offset} }

// AtTime is the first message with a timestamp at or after t.
func AtTime(t time.Time) Position { return Position{kind: wire.StartTime, value: t.UnixNano()} }

func (p Position) wire() wire.Start { return wire.Start{Kind: p.kind, Value: p.value} }

// Start is the position as the protocol carries it: for code that
// forwards a subscription or a fetch over another protocol (a gateway, a
// load test of one).
func (p Position) Start() wire.Start { return p.wire() }

// PositionOf is the Position of a protocol start position.
func PositionOf(s wire.Start) Position { return Position{kind: s.Kind, value: s.Value} }

// SubscribeSettings are what a list of SubscribeOptions sets: for code
// that forwards a subscription over another protocol.
type SubscribeSettings struct {
	// Partition is the one partition subscribed, or -1 for all.
	Partition int
	Start     Position
	Inline    bool
	BatchEnd  func()
}

// SettingsOf returns what opts set.
func SettingsOf(opts ...SubscribeOption) SubscribeSettings {
	o := subOptions{partition: wire.PartitionAny}
	for _, f := range opts {
		f(&o)
	}
	return SubscribeSettings{Partition: int(o.partition), Start: o.start, Inline: o.inline, BatchEnd: o.batchEnd}
}

// Partition is the partition the option names, if it names one.
func (o PublishOption) Partition() (int, bool) { return int(o.partition) - 1, o.partition != 0 }

// String describes the position.
func (p Position) String() string {
	switch p.kind {
	case wire.StartEarliest:
		return "earliest"
	case wire.StartOffset:
		return "offset " + strconv.FormatInt(p.value, 10)
	case wire.StartTime:
		return time.Unix(0, p.value).UTC().Format(time.RFC3339Nano)
	}
	return "latest"
}

// DispatchInline runs the handler on the connection's reader goroutine as
// each delivery is read, instead of on the subscription's own goroutine.
// It saves a goroutine hand-off per read, which is most of the client's
// share of end-to-end latency at low rates. The price: while the handler
// runs, nothing else on the connection is read (acks, responses, other
// subscriptions), so the handler must be quick, must not block, and must
// not wait on this client (Publish, Flush, a full SubscribeChan channel).
func DispatchInline() SubscribeOption {
	return func(o *subOptions) { o.inline = true }
}

// OnBatchEnd calls f, on the goroutine that runs the handler, after the
// handler has had the last message of each batch the broker delivered: a
// gateway that forwards messages in frames of many ends a frame there, so
// that a frame is as large as what the broker had at hand and no message
// waits for the next batch.
func OnBatchEnd(f func()) SubscribeOption {
	return func(o *subOptions) { o.batchEnd = f }
}

// FromPartition subscribes to one partition instead of all of them.
func FromPartition(p int) SubscribeOption {
	return func(o *subOptions) { o.partition = int32(p) }
}

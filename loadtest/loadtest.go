// Package loadtest is the load generator behind `ratatoskr loadtest`.
//
// It runs producers and subscribers, each on a connection of its own,
// against a broker (or, given several addresses, each with a cluster
// client of its own, against a cluster: client.Cluster), and measures publish and delivery rates and the
// end-to-end latency from a message's intended send time to its handler
// call, in an HDR histogram. It verifies what arrives: every subscriber
// checks each producer's sequence numbers and counts lost, duplicated and
// reordered messages. With a group, the members together must receive
// every message once: loss and duplicates are counted over their union.
//
// On a two-core machine the tool shares the CPU with the broker, so it is
// written to cost little per message: one payload buffer per producer,
// rewritten in place; a clock read per message only where latency needs it
// (one per 64 messages for unpaced producers); no allocation per message.
//
// At a fixed rate, sends are scheduled on a timeline and each message is
// stamped with its intended time, so a stall in the broker or the tool
// shows up in the latency instead of silently delaying later sends
// (no coordinated omission). By default the timeline is one burst per
// millisecond (Config.BurstInterval), each message intended at its
// burst's start: spacing 100k messages a second evenly, 10 µs apart,
// makes batches of a few messages whose per-batch cost on a small
// machine, in the tool and the broker alike, became most of the measured
// tail (PERFORMANCE.md, issue 13). Each paced producer also measures its
// own lateness, how late it handed each message to the client against
// the message's intended time: the tool's share of the latency, reported
// beside it, so that a starved tool is told from a slow broker. The
// producer sleeps between sends with nanosleep on a thread whose timer
// slack is 1 µs; Go's own timers cannot wake in less than about a
// millisecond here.
package loadtest

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// Payload layout: every message starts with this header, then filler.
//
//	0      4        12          20
//	+------+--------+-----------+---------
//	| prod | seq    | sent (ns) | filler
//	+------+--------+-----------+---------
//
// prod is the producer index, seq its message number from 0, and sent the
// intended send time in nanoseconds on the tool's monotonic clock.
const (
	offProducer = 0
	offSeq      = 4
	offSent     = 12
	// MinSize is the smallest payload that holds the header.
	MinSize = 20
)

// Config describes a run. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Server is the broker's address; several, comma-separated, are a
	// cluster's nodes, and every producer and subscriber is then a
	// cluster client (client.DialCluster) that sends each partition to
	// its leader. A group's members (Group) take them as one broker's
	// addresses, tried in turn.
	Server string
	// Protocol is how producers and subscribers talk to the broker:
	// "native" (the default) or a gateway's ("grpc", "http", "ws"), with
	// Server that gateway's address.
	Protocol string
	Topic    string
	// Partitions of the topic; 0 takes an existing topic's count, or one
	// for a new topic.
	Partitions  int
	Producers   int
	Subscribers int
	Size        int           // payload bytes, at least MinSize
	Rate        int           // messages per second over all producers; 0 = as fast as possible
	Duration    time.Duration // run length when Count is 0
	Count       int           // messages over all producers; 0 = run for Duration
	BatchBytes  int           // producer batch size bound
	Linger      time.Duration // producer linger
	// Idempotence makes the producers idempotent (WithIdempotence); the
	// client's default, and false, runs them without.
	Idempotence bool
	// PerCall is how many messages an unpaced producer hands the client per
	// call: PublishBatchAsync with PerCall messages, or with 1
	// PublishAsync per message. 0 means DefaultPerCall.
	PerCall int
	// Drain bounds the wait for deliveries after the producers finish.
	Drain time.Duration
	// BurstInterval is the schedule of a paced producer: every interval
	// it sends the interval's share of the rate as one burst, and each
	// message of a burst is intended at the burst's start. Zero spreads
	// the messages evenly, each intended at its own time (start + n/rate).
	// Even spacing at tens of microseconds makes tiny batches, whose cost
	// on both sides of the connection, not the broker's latency, then
	// dominates on a small machine (PERFORMANCE.md, issue 13).
	BurstInterval time.Duration
	// PaceQuantum is the shortest sleep of a paced producer (see producer.paced).
	PaceQuantum time.Duration
	// Durable makes the topic a disk log with the Fsync policy ("always"
	// when empty); otherwise it is a memory topic. When Durable, Fsync or
	// Partitions is set, an existing topic must have these settings: the
	// run fails with ErrTopicMismatch otherwise, or with Recreate deletes
	// the topic and creates it as asked. When none is set, an existing
	// topic is used as it is, and the result reports what it is.
	Durable  bool
	Fsync    string
	Recreate bool
	// Storage "redis" makes the topic a Redis-kept log (the broker's
	// --redis-url; durable as Redis's persistence makes it); "disk" is
	// Durable. Empty: Durable decides.
	Storage string
	// Replay publishes first, then starts the subscribers from the run's
	// first message (by time, so a topic used before is no matter): the
	// delivery rate measures reading the log back.
	Replay bool
	// GoroutineDispatch runs subscriber handlers on the subscription's own
	// goroutine instead of inline on the connection reader
	// (client.DispatchInline), adding a hand-off to every read.
	GoroutineDispatch bool
	// Group makes the subscribers members of one consumer group: each
	// partition goes to one of them, so together they receive every message
	// once. Ack is the group's ack mode: "offset" (the default), "message"
	// or "none".
	Group string
	Ack   string
	// BrokerPID, when set, is sampled for the broker's CPU use.
	BrokerPID int
	// HistFile receives the latency distribution in HdrHistogram's
	// percentile text format.
	HistFile string
	// LatencyLog receives one line per message the first subscriber
	// received, in arrival order: the message's intended send time in
	// nanoseconds since the run started, a tab, and its latency in
	// nanoseconds. It shows when in a run the slow messages came (a stall,
	// a warm-up, a GC), which the histogram cannot. The lines are kept in
	// memory during the run, 16 bytes a message, up to MaxLatencyLog
	// messages; later ones are counted but not logged.
	LatencyLog string
	// Compression is the producers' batch compression (client.WithCompression).
	Compression client.Codec
	// TLS, when set, makes every connection of the run use it
	// (client.WithTLS).
	TLS *tls.Config
	// User and Password (client.WithCredentials), or Token
	// (client.WithToken), authenticate every connection of the run.
	User, Password, Token string
	// Payload is the filler after each payload's header: PayloadLetters
	// (the default) or PayloadJSON, text-like lines for measuring
	// compression.
	Payload string
}

// DefaultPerCall is Config.PerCall's default: enough messages per call
// that the client's per-call costs (a lock, a reservation) amount to
// little per message, few enough that a call's messages stay in cache.
const DefaultPerCall = 64

// MaxLatencyLog bounds the messages a LatencyLog holds (256 MiB).
const MaxLatencyLog = 16 << 20

// DefaultConfig returns the defaults of `ratatoskr loadtest`.
func DefaultConfig() Config {
	return Config{
		Server: "127.0.0.1:7070", Topic: "loadtest", Producers: 1,
		Subscribers: 1, Size: 128, Duration: 10 * time.Second, BatchBytes: 256 << 10,
		Drain: 10 * time.Second, BurstInterval: time.Millisecond, PaceQuantum: 20 * time.Microsecond,
		PerCall: DefaultPerCall,
	}
}

// Validate checks a config and names what is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(f string, v any, why string) { errs = append(errs, fmt.Errorf("loadtest: %s = %v: %s", f, v, why)) }
	if c.Producers < 1 {
		bad("producers", c.Producers, "need at least one producer")
	}
	if c.Subscribers < 0 {
		bad("subscribers", c.Subscribers, "must not be negative")
	}
	if c.Size < MinSize {
		bad("size", c.Size, fmt.Sprintf("must be at least %d bytes (the sequence and timestamp header)", MinSize))
	}
	if c.Rate < 0 {
		bad("rate", c.Rate, "must not be negative")
	}
	if c.BurstInterval < 0 {
		bad("burst interval", c.BurstInterval, "must not be negative")
	}
	if c.Count < 0 || (c.Count == 0 && c.Duration <= 0) {
		bad("count/duration", fmt.Sprint(c.Count, "/", c.Duration), "give a positive count or duration")
	}
	if c.Partitions < 0 {
		bad("partitions", c.Partitions, "must not be negative (0 takes the existing topic's count, or 1)")
	}
	switch c.Storage {
	case "", "memory", "disk", "redis":
	default:
		bad("storage", c.Storage, `must be "disk", "memory" or "redis"`)
	}
	if c.Storage == "disk" {
		c.Durable = true
	}
	if c.Durable && (c.Storage == "memory" || c.Storage == "redis") {
		bad("storage", c.Storage, "contradicts --durable (a disk topic)")
	}
	if c.Fsync != "" && !c.Durable {
		bad("fsync", c.Fsync, "applies to a durable topic only: add --durable")
	}
	if c.Group != "" {
		if c.Ack == "" {
			c.Ack = "offset"
		}
		if _, err := client.ParseAckMode(c.Ack); err != nil {
			bad("ack", c.Ack, err.Error())
		}
		if c.Subscribers < 1 {
			bad("subscribers", c.Subscribers, "a group needs at least one member")
		}
	}
	if c.Payload != "" && c.Payload != PayloadLetters && c.Payload != PayloadJSON {
		bad("payload", c.Payload, "must be letters or json")
	}
	if c.PerCall < 0 {
		bad("messages per call", c.PerCall, "must not be negative (0 takes the default)")
	}
	if c.PerCall == 0 {
		c.PerCall = DefaultPerCall
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	return errors.Join(errs...)
}

// putHeader writes a payload header in place.
func putHeader(p []byte, producer uint32, seq uint64, sent int64) {
	binary.LittleEndian.PutUint32(p[offProducer:], producer)
	binary.LittleEndian.PutUint64(p[offSeq:], seq)
	binary.LittleEndian.PutUint64(p[offSent:], uint64(sent))
}

func readHeader(p []byte) (producer uint32, seq uint64, sent int64, ok bool) {
	if len(p) < MinSize {
		return 0, 0, 0, false
	}
	return binary.LittleEndian.Uint32(p[offProducer:]), binary.LittleEndian.Uint64(p[offSeq:]),
		int64(binary.LittleEndian.Uint64(p[offSent:])), true
}

// epoch anchors the tool's clock: monotonic nanoseconds shared by every
// producer and subscriber of the process.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

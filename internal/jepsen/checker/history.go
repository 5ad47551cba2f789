// Package checker verifies the history of a fault-injection run against a
// replicated broker (the Jepsen-style suite in internal/jepsen). It is
// pure: a History in, a Result out, no I/O and no clock, so every property
// is unit-tested on histories written by hand.
//
// # What a history holds
//
//   - Publishes: every publish the producers attempted, each with a value
//     no other attempt used, and how it ended (Outcome): acknowledged at an
//     offset, refused for certain, or with an outcome the producer cannot
//     know (a timeout, a lost connection, a leader that stepped down with
//     the batch in flight).
//   - Reads: whole logs of a partition, one per source: each replica's
//     log read from its data directory after the run, and a full read
//     from the leader. Each starts where its log started (retention
//     removes a log's oldest segments, each replica its own). Final reads
//     were taken after the cluster healed and converged, and must hold
//     every acknowledged message from their start on.
//   - Deliveries: what consumers received during the run, in the order
//     they received it, per consumer and partition.
//   - GroupOffsets: committed consumer-group offsets: each commit a group
//     member had answered OK (the offsets it reports stored), and each
//     answer to a DescribeGroup asked of any node during the run, with
//     when it was invoked and answered. The suite runs a group per
//     offsets partition, whose members rejoin every few seconds.
//
// # What is checked
//
//	LostAck       an acknowledged message is not at its offset in a final read
//	              that starts at or below it
//	Conflict      two different values at one offset (acks, reads, deliveries)
//	Reordered     a value at different offsets in different places, so the
//	              partition's order differs between them
//	Duplicate     a value held more often in one log (or delivered more often
//	              to one consumer) than it was published
//	OutOfOrder    a log or a delivery stream whose offsets do not increase
//	Gap           a log that skips an offset or does not begin at its start,
//	              or a delivery stream that skips one other than by a Jump
//	FailedStored  a publish refused for certain (NOT_LEADER, nothing stored) is
//	              in a log
//	Phantom       a value nobody published
//	OffsetBackwards  a consumer group's committed offset went backwards
//	Unchecked     a final read in which no acknowledged message could be
//	              checked (none acked, or all below its start): it proves
//	              nothing, so a run must not pass on it
//
// What is legal is allowed: a publish whose outcome is unknown, or that
// never got an answer, may be in the logs or not (at most once per
// attempt); an acknowledged one must be exactly where its ack said. The
// offsets of this broker are dense (control entries take none), so a log
// or a sequential consumer that skips one lost something.
//
// Retention is legal too: what is below a read's start is gone from that
// read, and an acknowledged message there is not looked for in it (Stats
// counts these); where a read holds it, it is checked as any other. A
// consumer whose next offset was removed jumps to the start: its stream
// may skip from the offset it asked for to the start it was given, or
// along a chain of such jumps, and nowhere else (one that jumped from
// offset 0 began there: its first delivery is where its jumps lead).
// The history records
// each jump (Jumps): the offset asked for and the start the node
// reported.
//
// A swap of two messages between two replicas shows as a Conflict at
// each of the two offsets and a Reordered for each value: the kinds say
// what is wrong at each place, not which fault caused it.
package checker

import (
	"fmt"
	"strconv"
)

// Outcome is how a publish ended, as its producer saw it.
type Outcome uint8

// Outcomes.
const (
	// Pending: invoked, never answered (the run ended first). It may or
	// may not be stored.
	Pending Outcome = iota
	// Acked: acknowledged with an offset. It must be stored at that
	// offset on every replica, for good.
	Acked
	// Failed: refused for certain (NOT_LEADER without "it may have been
	// stored"). It must never be stored.
	Failed
	// Unknown: failed with an outcome the producer cannot know (a timeout,
	// a lost connection, NOT_LEADER "it may have been stored"). It may be
	// stored, once.
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Pending:
		return "pending"
	case Acked:
		return "acked"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Publish is one publish attempt of one message.
type Publish struct {
	Producer  int
	Topic     string
	Partition int32
	// Value identifies the attempt: no other attempt uses it. (A producer
	// that retries a message with its value makes two attempts of one
	// value; each may store it once.)
	Value   string
	Outcome Outcome
	Offset  int64 // where it was acknowledged (Acked only)
	// Node is the node the publish was sent to; Start and End are when it
	// was invoked and answered (any monotonic clock, for the report);
	// Err is the error it failed with.
	Node       int
	Start, End int64
	Err        string
}

// Record is one message of a log: its offset and value.
type Record struct {
	Offset int64
	Value  string
}

// Read is one source's whole log of one partition.
type Read struct {
	// Source names where it was read: "node 2 (data dir)", "leader fetch".
	Source    string
	Topic     string
	Partition int32
	Records   []Record // in the log's order
	// Start is the offset the log started at when read (retention
	// removed what was before it); the records must begin there (or
	// before it). 0: the partition's first offset.
	Start int64
	// Final: read after the cluster healed and converged. It must hold
	// every acknowledged message of the partition from its start on.
	Final bool
}

// Delivery is one message a consumer received.
type Delivery struct {
	Consumer  string
	Topic     string
	Partition int32
	Offset    int64
	Value     string
}

// Jump is a consumer moving past offsets retention removed: it asked for
// offset From, was told it is below the partition's start (a fetch's
// OFFSET_OUT_OF_RANGE), and went on from To, the start the node
// reported. Its stream may skip from From to To.
type Jump struct {
	Consumer  string
	Topic     string
	Partition int32
	From, To  int64
}

// GroupOffset is one observation of a consumer group's committed offset
// of a partition: a commit that was acknowledged, or a read of what is
// committed. Start and End are when it was invoked and answered, on one
// clock for the whole history.
type GroupOffset struct {
	Group      string
	Topic      string
	Partition  int32
	Offset     int64
	Commit     bool // an acknowledged commit; false: a read
	Start, End int64
}

// History is everything a run recorded.
type History struct {
	Publishes    []Publish
	Reads        []Read
	Deliveries   []Delivery
	GroupOffsets []GroupOffset
	Jumps        []Jump
}

// Kind is what a violation violates.
type Kind uint8

// Kinds of violations; see the package doc.
const (
	LostAck Kind = iota + 1
	Conflict
	Reordered
	Duplicate
	OutOfOrder
	Gap
	FailedStored
	Phantom
	OffsetBackwards
	Unchecked
)

var kindNames = [...]string{LostAck: "lost-ack", Conflict: "conflict", Reordered: "reordered",
	Duplicate: "duplicate", OutOfOrder: "out-of-order", Gap: "gap", FailedStored: "failed-stored",
	Phantom: "phantom", OffsetBackwards: "offset-backwards", Unchecked: "unchecked"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Kinds lists every kind, in order.
func Kinds() []Kind {
	return []Kind{LostAck, Conflict, Reordered, Duplicate, OutOfOrder, Gap, FailedStored, Phantom, OffsetBackwards, Unchecked}
}

// Violation is one place where the history breaks a property.
type Violation struct {
	Kind      Kind
	Topic     string
	Partition int32
	Offset    int64  // the offset concerned (-1: none)
	Value     string // the value concerned ("": none)
	Detail    string // what was seen, and where
}

func (v Violation) String() string {
	s := v.Kind.String() + " " + v.Topic + "/" + strconv.Itoa(int(v.Partition))
	if v.Offset >= 0 {
		s += " offset " + strconv.FormatInt(v.Offset, 10)
	}
	if v.Value != "" {
		s += " value " + strconv.Quote(v.Value)
	}
	return s + ": " + v.Detail
}

// part names one partition.
type part struct {
	topic string
	p     int32
}

func (p part) String() string { return fmt.Sprintf("%s/%d", p.topic, p.p) }

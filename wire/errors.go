package wire

import (
	"errors"
	"strconv"
	"strings"
)

// Code is the numeric error code carried by an Error frame. Codes are part of
// the protocol: a code keeps its meaning forever, new codes are only added.
type Code uint16

// Error codes. Each has a sentinel below for errors.Is.
const (
	CodeOK                 Code = 0
	CodeMalformed          Code = 1  // a frame or body could not be parsed
	CodeUnknownType        Code = 2  // the frame type is not defined for this direction
	CodeFrameTooLarge      Code = 3  // the frame is longer than the server's maximum (announced in HelloOK)
	CodeUnsupportedVersion Code = 4  // no common protocol version
	CodeHandshakeRequired  Code = 5  // a frame other than Hello came first
	CodeMessageTooLarge    Code = 6  // a record is larger than the maximum message size
	CodeUnknownTopic       Code = 7  // the topic does not exist and will not be created
	CodeTopicExists        Code = 8  // create of a topic that already exists
	CodeInvalidArgument    Code = 9  // a name, count or config value is out of range
	CodeTooManyTopics      Code = 10 // the broker's topic limit is reached
	CodeTooManySubscribers Code = 11 // the topic's subscriber limit is reached
	CodeUnknownPartition   Code = 12 // the partition number is out of range
	CodeSlowConsumer       Code = 13 // the subscriber fell behind its outbound limit
	CodeCorruptBatch       Code = 14 // the record batch failed its CRC or structure check
	CodeNotSubscribed      Code = 15 // unsubscribe of something never subscribed
	CodeAlreadySubscribed  Code = 16 // the connection already subscribes to that partition
	CodeShuttingDown       Code = 17 // the broker is stopping
	CodeInternal           Code = 18 // a broker bug; the message says more
	CodeAuthFailed         Code = 19 // credentials were refused
	CodeStorageFull        Code = 20 // the broker's disk is full: a publish, or a topic create/delete, was not done
	CodeStorageError       Code = 21 // an I/O error: a publish was not stored or synced, or a read or topic change failed
	CodeOffsetOutOfRange   Code = 22 // a fetch or subscribe offset outside the log's start and end
	CodeStaleGeneration    Code = 23 // a commit or ack from a generation the group has left behind
	CodeUnknownMember      Code = 24 // the group does not know the member (timed out, or never joined)
	CodeGroupActive        Code = 25 // the operation needs a group with no members
	CodeUnknownGroup       Code = 26 // no group of that name
	// CodeOutcomeUnknown: a publish was not acknowledged and may or may not
	// be in the log: its fsync failed after its bytes were written, so it
	// can reappear after a restart. Retrying it can duplicate it.
	CodeOutcomeUnknown Code = 27
	// CodeLimitExceeded: a broker limit refused the request: connections,
	// unfinished handshakes, waiting fetches, inbound memory, or the rate
	// of topic auto-creation. Nothing was done; retry after a pause.
	CodeLimitExceeded Code = 28
	// CodePartitionOffline: the partition could not be opened or read; it
	// serves neither reads nor writes until an operator repairs it and the
	// broker restarts. Other partitions are unaffected.
	CodePartitionOffline Code = 29
	// CodeOutOfOrderSequence: an idempotent producer's batch does not
	// follow its previous one in the partition (a gap: batches in between
	// were lost), or its sequence fits nothing the partition remembers.
	// Nothing was stored.
	CodeOutOfOrderSequence Code = 30
	// CodeDuplicateSequence: an idempotent producer's batch is older than
	// the batches the partition remembers for it: it was stored before,
	// and its offsets are no longer known. Nothing was stored again.
	CodeDuplicateSequence Code = 31
	// CodeNotAuthorized: the connection's principal may not do this (an
	// ACL, its role, or its tenant's bounds). Nothing was done; the
	// connection stays.
	CodeNotAuthorized Code = 32
	// CodeQuotaExceeded: the tenant's quota (topics, partitions, storage
	// bytes, connections) refused the request. Nothing was stored.
	CodeQuotaExceeded Code = 33
	// CodeNotLeader: this node does not lead the partition (a cluster:
	// publishes, subscriptions and fetches go to each partition's leader).
	// The message starts with "leader ID HOST:PORT" naming the leader the
	// node knows (NotLeader, LeaderOf), or "no leader" during an election;
	// retry there. Nothing was stored, unless the message also says the
	// outcome is unknown (the node stepped down with the batch in flight).
	CodeNotLeader Code = 34
	// CodeStorageUnavailable: the partition's storage server (Redis, for
	// a topic created with storage=redis) cannot be reached, or refused
	// the write for now (out of memory). Nothing was stored; retry after a
	// pause. Other topics are unaffected.
	CodeStorageUnavailable Code = 35
)

var codeNames = [...]string{
	CodeOK:                 "ok",
	CodeMalformed:          "malformed frame",
	CodeUnknownType:        "unknown frame type",
	CodeFrameTooLarge:      "frame too large",
	CodeUnsupportedVersion: "unsupported protocol version",
	CodeHandshakeRequired:  "handshake required",
	CodeMessageTooLarge:    "message too large",
	CodeUnknownTopic:       "unknown topic",
	CodeTopicExists:        "topic exists",
	CodeInvalidArgument:    "invalid argument",
	CodeTooManyTopics:      "too many topics",
	CodeTooManySubscribers: "too many subscribers",
	CodeUnknownPartition:   "unknown partition",
	CodeSlowConsumer:       "slow consumer",
	CodeCorruptBatch:       "corrupt batch",
	CodeNotSubscribed:      "not subscribed",
	CodeAlreadySubscribed:  "already subscribed",
	CodeShuttingDown:       "shutting down",
	CodeInternal:           "internal error",
	CodeAuthFailed:         "authentication failed",
	CodeStorageFull:        "storage full",
	CodeStorageError:       "storage error",
	CodeOffsetOutOfRange:   "offset out of range",
	CodeStaleGeneration:    "stale generation",
	CodeUnknownMember:      "unknown member",
	CodeGroupActive:        "group has members",
	CodeUnknownGroup:       "unknown group",
	CodeOutcomeUnknown:     "outcome unknown",
	CodeLimitExceeded:      "limit exceeded",
	CodePartitionOffline:   "partition offline",
	CodeOutOfOrderSequence: "out-of-order sequence",
	CodeDuplicateSequence:  "duplicate sequence",
	CodeNotAuthorized:      "not authorized",
	CodeQuotaExceeded:      "quota exceeded",
	CodeNotLeader:          "not leader",
	CodeStorageUnavailable: "storage unavailable",
}

// String names the code; unknown codes print as "code N" so a newer peer's
// codes stay readable.
func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return "code " + strconv.Itoa(int(c))
}

// Error is a protocol error: what an Error frame carries, and what decoders
// return for bad input. Two Errors match under errors.Is when their codes are
// equal, so callers compare against the sentinels whatever the message says.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" || e.Message == e.Code.String() {
		return "ratatoskr: " + e.Code.String()
	}
	return "ratatoskr: " + e.Code.String() + ": " + e.Message
}

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Errorf builds an *Error with a code and a message.
func Errorf(code Code, msg string) *Error { return &Error{Code: code, Message: msg} }

// CodeOf returns the protocol code of err: its own when it is an *Error,
// CodeInternal otherwise. Servers use it to turn any error into an Error frame.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Sentinels, one per code, for errors.Is.
var (
	ErrMalformed          = &Error{Code: CodeMalformed}
	ErrUnknownType        = &Error{Code: CodeUnknownType}
	ErrFrameTooLarge      = &Error{Code: CodeFrameTooLarge}
	ErrUnsupportedVersion = &Error{Code: CodeUnsupportedVersion}
	ErrHandshakeRequired  = &Error{Code: CodeHandshakeRequired}
	ErrMessageTooLarge    = &Error{Code: CodeMessageTooLarge}
	ErrUnknownTopic       = &Error{Code: CodeUnknownTopic}
	ErrTopicExists        = &Error{Code: CodeTopicExists}
	ErrInvalidArgument    = &Error{Code: CodeInvalidArgument}
	ErrTooManyTopics      = &Error{Code: CodeTooManyTopics}
	ErrTooManySubscribers = &Error{Code: CodeTooManySubscribers}
	ErrUnknownPartition   = &Error{Code: CodeUnknownPartition}
	ErrSlowConsumer       = &Error{Code: CodeSlowConsumer}
	ErrCorruptBatch       = &Error{Code: CodeCorruptBatch}
	ErrNotSubscribed      = &Error{Code: CodeNotSubscribed}
	ErrAlreadySubscribed  = &Error{Code: CodeAlreadySubscribed}
	ErrShuttingDown       = &Error{Code: CodeShuttingDown}
	ErrInternal           = &Error{Code: CodeInternal}
	ErrAuthFailed         = &Error{Code: CodeAuthFailed}
	ErrStorageFull        = &Error{Code: CodeStorageFull}
	ErrStorageError       = &Error{Code: CodeStorageError}
	ErrOffsetOutOfRange   = &Error{Code: CodeOffsetOutOfRange}
	ErrStaleGeneration    = &Error{Code: CodeStaleGeneration}
	ErrUnknownMember      = &Error{Code: CodeUnknownMember}
	ErrGroupActive        = &Error{Code: CodeGroupActive}
	ErrUnknownGroup       = &Error{Code: CodeUnknownGroup}
	ErrOutcomeUnknown     = &Error{Code: CodeOutcomeUnknown}
	ErrLimitExceeded      = &Error{Code: CodeLimitExceeded}
	ErrPartitionOffline   = &Error{Code: CodePartitionOffline}
	ErrOutOfOrderSequence = &Error{Code: CodeOutOfOrderSequence}
	ErrDuplicateSequence  = &Error{Code: CodeDuplicateSequence}
	ErrNotAuthorized      = &Error{Code: CodeNotAuthorized}
	ErrQuotaExceeded      = &Error{Code: CodeQuotaExceeded}
	ErrStorageUnavailable = &Error{Code: CodeStorageUnavailable}
)

// errShort is returned by decoders for a body that ends early. It is a
// package-level value so the decode path does not allocate.
var errShort = &Error{Code: CodeMalformed, Message: "body too short"}

// NotLeader is the NOT_LEADER error naming the leader (node id and its
// native protocol address; id 0: no leader known), with an explanation.
func NotLeader(node uint64, addr, why string) *Error {
	msg := "no leader"
	if node != 0 && addr != "" {
		msg = "leader " + strconv.FormatUint(node, 10) + " " + addr
	}
	if why != "" {
		msg += ": " + why
	}
	return &Error{Code: CodeNotLeader, Message: msg}
}

// LeaderOf returns the leader's node id and address a NOT_LEADER error
// names; ok is false for another error or when no leader is named.
func LeaderOf(err error) (node uint64, addr string, ok bool) {
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeNotLeader {
		return 0, "", false
	}
	rest, found := strings.CutPrefix(e.Message, "leader ")
	if !found {
		return 0, "", false
	}
	id, rest, _ := strings.Cut(rest, " ")
	addr, _, _ = strings.Cut(rest, ": ")
	n, err2 := strconv.ParseUint(id, 10, 64)
	if err2 != nil || n == 0 || addr == "" {
		return 0, "", false
	}
	return n, addr, true
}

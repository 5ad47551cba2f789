package client

import (
	"errors"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Errors of the client itself.
var (
	// ErrClosed is returned by calls on a client after Close.
	ErrClosed = errors.New("ratatoskr: client closed")
	// ErrConnectionLost wraps the cause when the connection fails; calls
	// waiting for a response get it, and so do unacknowledged publishes.
	ErrConnectionLost = errors.New("ratatoskr: connection lost")
	// ErrProtocol is a frame from the broker that the client cannot parse;
	// the client closes the connection.
	ErrProtocol = errors.New("ratatoskr: protocol error")
	// ErrNotSubscribed is returned by Unsubscribe of a finished subscription.
	ErrNotSubscribed = errors.New("ratatoskr: subscription is closed")
)

// Errors the broker returns, re-exported so callers need not import wire.
// Match them with errors.Is; the error's text carries the broker's detail.
var (
	ErrUnknownTopic       = wire.ErrUnknownTopic
	ErrTopicExists        = wire.ErrTopicExists
	ErrInvalidArgument    = wire.ErrInvalidArgument
	ErrTooManyTopics      = wire.ErrTooManyTopics
	ErrTooManySubscribers = wire.ErrTooManySubscribers
	ErrUnknownPartition   = wire.ErrUnknownPartition
	ErrMessageTooLarge    = wire.ErrMessageTooLarge
	ErrSlowConsumer       = wire.ErrSlowConsumer
	ErrCorruptBatch       = wire.ErrCorruptBatch
	ErrAlreadySubscribed  = wire.ErrAlreadySubscribed
	ErrShuttingDown       = wire.ErrShuttingDown
	ErrUnsupportedVersion = wire.ErrUnsupportedVersion
	ErrStorageFull        = wire.ErrStorageFull
	ErrStorageError       = wire.ErrStorageError
	ErrOffsetOutOfRange   = wire.ErrOffsetOutOfRange
	// ErrOutcomeUnknown: a publish was not acknowledged, but it may be in
	// the log (its fsync failed); republishing it may write a duplicate.
	ErrOutcomeUnknown = wire.ErrOutcomeUnknown
	// ErrLimitExceeded: a broker limit refused the request (connections,
	// waiting fetches, inbound memory, topic auto-creation rate); retry
	// after a pause.
	ErrLimitExceeded = wire.ErrLimitExceeded
	// ErrPartitionOffline: the partition cannot be read or written until
	// an operator repairs it.
	ErrPartitionOffline = wire.ErrPartitionOffline
	// ErrAuthFailed: the broker refused the credentials (or wants some:
	// see WithCredentials, WithToken), or closed the connection because
	// its user was deleted, disabled or given a new password.
	ErrAuthFailed = wire.ErrAuthFailed
	// ErrNotAuthorized: the principal may not do this (its ACLs, role or
	// tenant); nothing was done and the connection stays.
	ErrNotAuthorized = wire.ErrNotAuthorized
	// ErrQuotaExceeded: the tenant's quota refused the request; nothing
	// was stored.
	ErrQuotaExceeded = wire.ErrQuotaExceeded
	// ErrNotLeader: a cluster's node that does not lead the partition
	// refused a publish, subscription or fetch; the message names the
	// leader (wire.LeaderOf), or says there is none during an election. A
	// Cluster re-routes by itself and returns it only when no leader was
	// found in time.
	ErrNotLeader = &wire.Error{Code: wire.CodeNotLeader}
	// ErrStorageUnavailable: the partition's storage server (Redis) could
	// not be reached or refused the write for now; nothing was stored,
	// and a retry after a pause may succeed.
	ErrStorageUnavailable = wire.ErrStorageUnavailable
)

// IsRetryable reports whether an operation that failed with err may succeed
// if repeated, on this or a new connection: the broker was stopping, a
// broker limit refused it for now, the connection broke, or (a cluster)
// the node was not the partition's leader, or the partition's storage
// server (Redis) was unreachable, as opposed to a request that
// is wrong in itself. For a publish, see also MayHaveBeenStored: a retry
// of such a publish can write a duplicate.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrConnectionLost) || errors.Is(err, ErrShuttingDown) ||
		errors.Is(err, ErrLimitExceeded) || errors.Is(err, ErrOutcomeUnknown) ||
		errors.Is(err, ErrNotLeader) || errors.Is(err, ErrStorageUnavailable)
}

// MayHaveBeenStored reports whether a publish that failed with err may be
// in the log anyway: its fsync failed after it was written, or its failed
// write could not be cut off the file (the broker says so with
// ErrOutcomeUnknown), or the connection was lost before its answer came. Republishing it may then write a duplicate. Any other
// error means the publish was not stored.
//
// ErrDuplicateSequence (an idempotent batch stored before) is reported as
// stored too, and so is a cluster's NOT_LEADER that says the leader
// stepped down with the batch in flight (it may yet be committed).
func MayHaveBeenStored(err error) bool {
	return errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrConnectionLost) ||
		errors.Is(err, ErrDuplicateSequence) || leaderOutcomeUnknown(err)
}

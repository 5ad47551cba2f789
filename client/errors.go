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
)

// IsRetryable reports whether an operation that failed with err may succeed
// if repeated, on this or a new connection: the broker was stopping or the
// connection broke, as opposed to a request that is wrong in itself.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrConnectionLost) || errors.Is(err, ErrShuttingDown)
}

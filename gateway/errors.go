package gateway

import (
	"context"
	"errors"
	"net/http"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// ErrUnavailable is a session that could not be opened or was lost for a
// reason of the broker's own (it is stopping, or out of connections):
// retry.
var ErrUnavailable = errors.New("the broker is unavailable")

// Kind is what a front end's error says to its client, whatever the
// protocol: each front end maps it to its own status (HTTPStatus, the gRPC
// front end's codes, the WebSocket's close codes).
type Kind int

// Kinds of failure.
const (
	KindInternal        Kind = iota // a broker bug
	KindInvalid                     // the request is wrong in itself
	KindUnauthenticated             // no, or wrong, credentials
	KindDenied                      // the principal may not do this
	KindNotFound                    // unknown topic, partition or group
	KindExists                      // create of what exists
	KindTooLarge                    // a message or body too large
	KindRange                       // an offset outside the log
	KindExhausted                   // a limit or quota: retry later
	KindUnavailable                 // the broker is stopping, a partition is offline, the connection was lost: retry
	KindConflict                    // the state does not allow it (a group with members, a stale generation)
	KindCanceled                    // the client went away
	KindTimeout                     // the request's deadline passed
)

// KindOf classifies err, a session call's error.
func KindOf(err error) Kind {
	var we *wire.Error
	switch {
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, ErrUnavailable), errors.Is(err, client.ErrConnectionLost), errors.Is(err, client.ErrClosed):
		return KindUnavailable
	case !errors.As(err, &we):
		return KindInternal
	}
	switch we.Code {
	case wire.CodeMalformed, wire.CodeInvalidArgument, wire.CodeCorruptBatch, wire.CodeUnknownType,
		wire.CodeOutOfOrderSequence, wire.CodeNotSubscribed, wire.CodeAlreadySubscribed:
		return KindInvalid
	case wire.CodeAuthFailed, wire.CodeHandshakeRequired:
		return KindUnauthenticated
	case wire.CodeNotAuthorized:
		return KindDenied
	case wire.CodeUnknownTopic, wire.CodeUnknownPartition, wire.CodeUnknownGroup, wire.CodeUnknownMember:
		return KindNotFound
	case wire.CodeTopicExists:
		return KindExists
	case wire.CodeMessageTooLarge, wire.CodeFrameTooLarge:
		return KindTooLarge
	case wire.CodeOffsetOutOfRange:
		return KindRange
	case wire.CodeLimitExceeded, wire.CodeQuotaExceeded, wire.CodeTooManyTopics, wire.CodeTooManySubscribers,
		wire.CodeStorageFull, wire.CodeSlowConsumer:
		return KindExhausted
	case wire.CodeShuttingDown, wire.CodePartitionOffline, wire.CodeNotLeader, wire.CodeStorageError,
		wire.CodeOutcomeUnknown, wire.CodeStorageUnavailable:
		return KindUnavailable
	case wire.CodeGroupActive, wire.CodeStaleGeneration, wire.CodeDuplicateSequence:
		return KindConflict
	}
	return KindInternal
}

// Retryable reports whether a request that failed with err may succeed if
// repeated (client.IsRetryable, and the gateway's own ErrUnavailable).
func Retryable(err error) bool {
	return client.IsRetryable(err) || errors.Is(err, ErrUnavailable) || errors.Is(err, wire.ErrPartitionOffline)
}

// HTTPStatus is the HTTP status for a Kind.
func HTTPStatus(k Kind) int {
	switch k {
	case KindInvalid:
		return http.StatusBadRequest
	case KindUnauthenticated:
		return http.StatusUnauthorized
	case KindDenied:
		return http.StatusForbidden
	case KindNotFound:
		return http.StatusNotFound
	case KindExists, KindConflict:
		return http.StatusConflict
	case KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case KindRange:
		return http.StatusRequestedRangeNotSatisfiable
	case KindExhausted:
		return http.StatusTooManyRequests
	case KindUnavailable:
		return http.StatusServiceUnavailable
	case KindCanceled:
		return 499 // the client closed the request (nginx's convention); nobody reads it
	case KindTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// Code is the broker's error code in err, or CodeInternal for an error of
// no code (the client's own: a lost connection is CodeShuttingDown).
func Code(err error) wire.Code {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	if KindOf(err) == KindUnavailable {
		return wire.CodeShuttingDown
	}
	return wire.CodeInternal
}

package engine

import "github.com/ratatoskr-mq/ratatoskr/telemetry"

// The telemetry events and the built-in audit and event logs live in
// package telemetry, below engine, so that what emits or writes them need
// not import the broker. The names below are aliases, not copies: a plugin
// written against engine.Event, engine.EventKind and the engine.Event…
// kinds keeps compiling and means the same types and values.

// EventKind names what happened in a telemetry Event. It is an alias of
// telemetry.EventKind.
type EventKind = telemetry.EventKind

// Event is one telemetry event; only the fields that apply to its Kind are
// set. It is an alias of telemetry.Event.
type Event = telemetry.Event

// The events a plugin sees, aliases of telemetry's. Batch events come from
// the shards, one per stored publish batch; the rest from the engine.
const (
	EventTopicCreated      = telemetry.EventTopicCreated
	EventTopicUpdated      = telemetry.EventTopicUpdated
	EventTopicDeleted      = telemetry.EventTopicDeleted
	EventBatchPublished    = telemetry.EventBatchPublished
	EventSubscriberJoined  = telemetry.EventSubscriberJoined
	EventSubscriberLeft    = telemetry.EventSubscriberLeft
	EventSubscriberFailed  = telemetry.EventSubscriberFailed // disconnected as a slow consumer, or a failed replay
	EventMessageDeadLetter = telemetry.EventMessageDeadLetter
	EventGroupChanged      = telemetry.EventGroupChanged // joined, left, rebalanced, reset
	EventConnAccepted      = telemetry.EventConnAccepted
	EventConnRefused       = telemetry.EventConnRefused
	EventConnClosed        = telemetry.EventConnClosed
	EventAdminAction       = telemetry.EventAdminAction // a request to the admin API that changes state
	EventAuth              = telemetry.EventAuth        // an authentication that succeeded or failed
	EventAccessDenied      = telemetry.EventAccessDenied
	EventSecurityChanged   = telemetry.EventSecurityChanged
)

// AuditStderr is the Config.AuditLog (or Config.EventLog) value that
// writes the log to standard error. It is an alias of
// telemetry.AuditStderr.
const AuditStderr = telemetry.AuditStderr

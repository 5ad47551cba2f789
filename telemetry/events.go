// Package telemetry holds what the broker tells its observers: the events
// (Event, EventKind) that plugins receive, and the built-in plugins that
// write them out (the audit log and the event log). engine emits the events
// and runs the plugins, each on its own goroutine with a bounded queue
// (engine/plugin.go); engine re-exports Event, EventKind and the kinds as
// aliases, so a plugin written against engine's names keeps compiling.
// telemetry imports the standard library only, never engine or gnet.
package telemetry

import "time"

// EventKind names what happened in a telemetry Event.
type EventKind string

// The events a plugin sees. Batch events come from the shards, one per
// stored publish batch; the rest from the engine.
const (
	EventTopicCreated      EventKind = "topic.created"
	EventTopicUpdated      EventKind = "topic.updated"
	EventTopicDeleted      EventKind = "topic.deleted"
	EventBatchPublished    EventKind = "batch.published"
	EventSubscriberJoined  EventKind = "subscriber.joined"
	EventSubscriberLeft    EventKind = "subscriber.left"
	EventSubscriberFailed  EventKind = "subscriber.failed" // disconnected as a slow consumer, or a failed replay
	EventMessageDeadLetter EventKind = "message.dead_lettered"
	EventGroupChanged      EventKind = "group.changed" // joined, left, rebalanced, reset
	EventConnAccepted      EventKind = "connection.accepted"
	EventConnRefused       EventKind = "connection.refused"
	EventConnClosed        EventKind = "connection.closed"
	EventAdminAction       EventKind = "admin.action"     // a request to the admin API that changes state
	EventAuth              EventKind = "auth"             // an authentication that succeeded or failed (native protocol or HTTP)
	EventAccessDenied      EventKind = "access.denied"    // an operation the principal's rules or role refused
	EventSecurityChanged   EventKind = "security.changed" // a user, rule, tenant or quota created, changed or deleted
)

// Event is one telemetry event. Only the fields that apply to its Kind are
// set.
type Event struct {
	Time time.Time
	Kind EventKind

	Topic     string
	Partition int   // -1 when not about one partition
	Offset    int64 // first offset of a batch, or of a dead-lettered message
	Count     int   // messages in a batch, or dead-lettered
	Bytes     int64 // payload bytes of a batch
	Group     string

	Remote string // the peer's address
	// Principal and Tenant say who acted when the broker authenticates
	// clients: the user (or certificate identity) and its tenant.
	Principal string
	Tenant    string
	Actor     string // who acted: "admin-token", "client", "broker"
	Action    string // for admin, group and auth events: what was asked, e.g. "PATCH /api/v1/topics/orders"
	Target    string // what it was done to, e.g. "topic/orders"
	Err       error  // nil when it succeeded
}

// Outcome is "ok", or the error's text.
func (ev Event) Outcome() string {
	if ev.Err == nil {
		return "ok"
	}
	return ev.Err.Error()
}

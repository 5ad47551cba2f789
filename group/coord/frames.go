package coord

import (
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The coordinator queues Deliver and Error frames on members' outboxes
// itself, with outbox.Outbox's SendDelivery and SendError, as the
// sessions do, so a member cannot tell who sent one.

// invalid is an INVALID_ARGUMENT refusal.
func invalid(msg string) error { return wire.Errorf(wire.CodeInvalidArgument, msg) }

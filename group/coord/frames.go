package coord

import (
	"errors"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The frames the coordinator queues on members' outboxes itself. Deliver
// and Error are built exactly as the broker's sessions build them (engine
// sendDelivery and sendErrTo), so a member cannot tell who sent one.

// invalid is an INVALID_ARGUMENT refusal.
func invalid(msg string) error { return wire.Errorf(wire.CodeInvalidArgument, msg) }

// maxErrorMessage bounds an Error frame's message, as the sessions do.
const maxErrorMessage = 1024

// sendError queues an Error frame answering corr (0: unsolicited).
func sendError(out *outbox.Outbox, corr uint32, err error) {
	code, msg := wire.CodeOf(err), err.Error()
	var we *wire.Error
	if errors.As(err, &we) {
		msg = we.Message
	}
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	body := wire.AppendError(nil, code, msg)
	out.SendCopy(append(wire.AppendHeader(nil, wire.TypeError, 0, corr, len(body)), body...))
}

// sendDelivery queues one Deliver frame for a batch read from the log;
// prefix is the batch prefix of its topic and partition.
func sendDelivery(out *outbox.Outbox, prefix []byte, b wire.Batch) {
	n := wire.HeaderSize + len(prefix) + len(b)
	buf := storage.NewBuf(n)
	wire.AppendHeader(buf.B[:0], wire.TypeDeliver, 0, 0, len(prefix)+len(b))
	copy(buf.B[wire.HeaderSize:], prefix)
	copy(buf.B[wire.HeaderSize+len(prefix):], b)
	out.SendRef(buf, buf.B, 0)
	buf.Release()
}

package outbox

import (
	"errors"

	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The frames every sender queues the same way: the sessions, the shards'
// drivers and the group coordinator, so a client cannot tell who sent one.

// MaxErrorMessage bounds the message of an Error frame.
const MaxErrorMessage = 1024

// SendError queues an Error frame answering corr (0: unsolicited) with
// err's code and message (a *wire.Error's own message, without its
// "ratatoskr:" prefix), cut to MaxErrorMessage bytes.
func (o *Outbox) SendError(corr uint32, err error) {
	code, msg := wire.CodeOf(err), err.Error()
	var we *wire.Error
	if errors.As(err, &we) {
		msg = we.Message
	}
	if len(msg) > MaxErrorMessage {
		msg = msg[:MaxErrorMessage]
	}
	var buf [wire.HeaderSize + 8 + MaxErrorMessage]byte
	body := wire.AppendError(buf[wire.HeaderSize:wire.HeaderSize], code, msg)
	wire.AppendHeader(buf[:0], wire.TypeError, 0, corr, len(body))
	o.SendCopy(buf[:wire.HeaderSize+len(body)])
}

// SendDelivery queues one Deliver frame for a batch read from a log;
// prefix is the batch prefix of its topic and partition
// (wire.AppendBatchPrefix).
func (o *Outbox) SendDelivery(prefix []byte, b wire.Batch) {
	n := wire.HeaderSize + len(prefix) + len(b)
	buf := storage.NewBuf(n)
	wire.AppendHeader(buf.B[:0], wire.TypeDeliver, 0, 0, len(prefix)+len(b))
	copy(buf.B[wire.HeaderSize:], prefix)
	copy(buf.B[wire.HeaderSize+len(prefix):], b)
	o.SendRef(buf, buf.B, 0)
	buf.Release()
}

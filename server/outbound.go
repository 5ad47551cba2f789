package server

import (
	"strconv"
	"sync/atomic"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
)

// outbound is the broker-wide side of flow control: the bound on what all
// connections hold unsent together (outbox.Budget), and the slow-consumer
// disconnects by reason, for the metrics.
type outbound struct {
	budget *outbox.Budget
	cuts   [outbox.NumSlowReasons]atomic.Uint64
}

func newOutbound(cfg *Config) outbound {
	return outbound{budget: outbox.NewBudget(cfg.MaxOutboundBytes)}
}

// slowReason explains to a client, and to the log, why it was disconnected
// as a slow consumer.
func (c *Config) slowReason(why outbox.SlowReason) string {
	switch why {
	case outbox.SlowTimeout:
		return "stayed behind for longer than the slow-consumer timeout of " + c.SlowConsumerTimeout.String()
	case outbox.SlowBudget:
		return "the outbound bytes of all connections passed the broker-wide limit of " +
			strconv.FormatInt(c.MaxOutboundBytes, 10) + " (max-outbound-bytes), and this connection was among the furthest behind"
	}
	return "outbound bytes passed the limit of " + strconv.Itoa(c.MaxPendingBytes)
}

package transport

import "sync/atomic"

// Stats are a TCP transport's counters since it started, for the broker's
// metrics. Messages and bytes count what crossed the socket: bytes are
// whole frames, headers included, and exclude the handshake. The sending
// side counts a write when it returns, which can be after the peer
// handled it.
type Stats struct {
	FramesSent, FramesReceived     uint64
	MessagesSent, MessagesReceived uint64
	BytesSent, BytesReceived       uint64
	// Writes counts write calls on outbound connections: one per drained
	// queue, however many frames it held.
	Writes uint64

	// Messages dropped on the sending side, by reason: the peer's queue
	// was over MaxQueueBytes; the peer was unreachable (or its queue was
	// dropped when a connection failed); the message alone was over
	// MaxFrameBytes, or could not be encoded; no such peer.
	DroppedQueueFull   uint64
	DroppedUnreachable uint64
	DroppedTooLarge    uint64
	DroppedUnknownPeer uint64

	// Outbound connections: attempts that failed (dial, TLS, handshake),
	// connections made, and of those the ones made after an earlier
	// connection to the same peer was lost.
	DialFailures, Connects, Reconnects uint64
	// Inbound connections: handshakes refused or failed (wrong cluster,
	// magic, version or node; TLS; time-out), and connections closed for
	// a malformed, oversized or corrupt frame.
	Refused, BadFrames uint64
	// InboundConns is the number of inbound connections open now.
	InboundConns uint64
}

// Dropped is the number of messages dropped for any reason.
func (s Stats) Dropped() uint64 {
	return s.DroppedQueueFull + s.DroppedUnreachable + s.DroppedTooLarge + s.DroppedUnknownPeer
}

// counters are Stats as the goroutines update them.
type counters struct {
	framesSent, framesRecv             atomic.Uint64
	msgsSent, msgsRecv                 atomic.Uint64
	bytesSent, bytesRecv               atomic.Uint64
	writes                             atomic.Uint64
	dropFull, dropUnreachable          atomic.Uint64
	dropTooLarge, dropUnknown          atomic.Uint64
	dialFailures, connects, reconnects atomic.Uint64
	refused, badFrames                 atomic.Uint64
	inbound                            atomic.Int64
}

func (c *counters) snapshot() Stats {
	return Stats{
		FramesSent: c.framesSent.Load(), FramesReceived: c.framesRecv.Load(),
		MessagesSent: c.msgsSent.Load(), MessagesReceived: c.msgsRecv.Load(),
		BytesSent: c.bytesSent.Load(), BytesReceived: c.bytesRecv.Load(), Writes: c.writes.Load(),
		DroppedQueueFull: c.dropFull.Load(), DroppedUnreachable: c.dropUnreachable.Load(),
		DroppedTooLarge: c.dropTooLarge.Load(), DroppedUnknownPeer: c.dropUnknown.Load(),
		DialFailures: c.dialFailures.Load(), Connects: c.connects.Load(), Reconnects: c.reconnects.Load(),
		Refused: c.refused.Load(), BadFrames: c.badFrames.Load(),
		InboundConns: uint64(max(c.inbound.Load(), 0)),
	}
}

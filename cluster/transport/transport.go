package transport

import "go.etcd.io/raft/v3/raftpb"

// Envelope is one Raft message of one group.
//
// Msg is a value, as raft v3.6 (gogoproto) hands messages around
// (Ready.Messages); its slices are shared, not copied.
type Envelope struct {
	Group uint64
	Msg   raftpb.Message
}

// Handler receives the envelopes a peer sent, in the order that peer's
// connection delivered them. It is called from the transport's goroutines,
// one call at a time per connection (calls for different peers may run at
// once), and must not block long: it should queue. The handler owns envs
// and the messages in them.
type Handler func(from uint64, envs []Envelope)

// Transport carries envelopes between nodes. TCP is the real one;
// MemNetwork.Node makes in-memory ones with injected faults for tests.
type Transport interface {
	// Send queues envelopes for node to. It never blocks: when the peer's
	// queue is over its byte limit, or the peer is unreachable, messages are
	// dropped and counted (Raft retries). Envelopes passed are owned by the
	// transport after the call: neither the slice's messages nor their
	// entries may be changed afterwards.
	Send(to uint64, envs []Envelope)
	// Unreachable reports whether sends to `to` have been failing, for
	// raft's ReportUnreachable. An unknown node is unreachable.
	Unreachable(to uint64) bool
	// Close stops the transport's goroutines; the handler is not called
	// after it returns.
	Close() error
}

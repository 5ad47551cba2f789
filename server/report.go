package server

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// What the rest of the broker reads of the network side: its counters
// (for Stats and the metrics), its connections (for the admin API), and
// the reads the group coordinator shares with the sessions.

// Counters is a snapshot of the network side's counters.
type Counters struct {
	Connections   int64
	Accepted      uint64
	SlowConsumers uint64
	// SlowCuts counts the slow-consumer disconnects by reason.
	SlowCuts [outbox.NumSlowReasons]uint64
	// Resumed counts detached subscriptions resumed with a replay.
	Resumed uint64
	// OutboundBytes is what all connections hold unsent; OutboundLimit
	// bounds it (MaxOutboundBytes).
	OutboundBytes int64
	OutboundLimit int64
	DirectWrites  uint64
	DirectShort   uint64
	// FetchesWaiting are the fetches registered with a partition;
	// FetchesRefused those refused for the per-connection bound.
	FetchesWaiting int64
	FetchesRefused uint64
	// Errors counts the error frames sent, by wire.Code.
	Errors [40]uint64
	// InboundRead is what read buffers and half-read frames hold;
	// InboundPublish the publishes the shards hold (inflight.go).
	InboundRead    int64
	InboundPublish int64
	InboundPauses  uint64 // times a connection paused for memory
	InboundCuts    uint64 // connections cut at the inbound bound
	// The listener's refusals (listener.go).
	RefusedMax        uint64 // at MaxConnections
	RefusedPerAddr    uint64 // at MaxHandshakesPerAddr
	HandshakeTimeouts uint64
	// Enrolling are the admitted connections not yet registered with a
	// loop; they count against MaxConnections.
	Enrolling int64
	// HandshakesChecked are the connections whose handshake deadline
	// passed or was not needed.
	HandshakesChecked uint64
}

// Counters reads the counters.
func (srv *Server) Counters() Counters {
	c := Counters{Connections: srv.connections.Load(), Accepted: srv.accepted.Load(),
		SlowConsumers: srv.slowConsumers.Load(), Resumed: srv.resumed.Load(),
		OutboundBytes: srv.outbound.budget.Total(), OutboundLimit: srv.outbound.budget.Limit(),
		DirectWrites: srv.directWrites.Load(), DirectShort: srv.directShort.Load(),
		FetchesWaiting: srv.fetches.waiting.Load(), FetchesRefused: srv.fetches.refused.Load()}
	c.InboundRead, c.InboundPublish = srv.mem.read.Load(), srv.mem.inflight.Load()
	c.InboundPauses, c.InboundCuts = srv.mem.pauses.Load(), srv.mem.cuts.Load()
	a := &srv.adm
	c.RefusedMax, c.RefusedPerAddr = a.refusedMax.Load(), a.refusedPerAddr.Load()
	c.HandshakeTimeouts, c.HandshakesChecked = a.handshakeClosed.Load(), a.hs.checked.Load()
	c.Enrolling = srv.preConnections()
	for i := range c.SlowCuts {
		c.SlowCuts[i] = srv.outbound.cuts[i].Load()
	}
	for i := range c.Errors {
		c.Errors[i] = srv.errorsByCode[i].Load()
	}
	return c
}

// WriteMetrics writes the listener's and the inbound memory's metrics
// (docs/METRICS.md); the broker writes the Counters among its own.
func (srv *Server) WriteMetrics(w io.Writer) {
	srv.adm.writeMetrics(w)
	srv.writeAcceptMetrics(w)
	srv.writeTLSMetrics(w)
	srv.mem.writeMetrics(w)
}

// Conn is what the admin API shows of a connection.
type Conn struct {
	Remote        string
	Client        string // the name its Hello gave
	ConnectedAt   time.Time
	Subscriptions int
	Groups        int
	// QueuedBytes is what the broker holds unsent for it: its outbox and
	// what the transport has not written.
	QueuedBytes int64
	// Identity is its verified client certificate's (TLSIdentity.String),
	// on a mutual-TLS connection; "" otherwise.
	Identity string
	// Via is the gateway ("grpc", "http", "ws") an in-process connection
	// serves; "" for a native connection.
	Via string
}

// Connections lists the open connections.
func (srv *Server) Connections() []Conn {
	var out []Conn
	srv.sessions.Range(func(k, _ any) bool {
		s := k.(*session)
		c := Conn{Remote: s.t.remoteAddr(), ConnectedAt: s.info.since,
			Subscriptions: int(s.info.subs.Load()), Groups: int(s.info.groups.Load()),
			QueuedBytes: int64(s.out.Queued()) + s.t.unsentBytes(), Via: s.info.via}
		if id, ok := s.tlsIdentity(); ok {
			c.Identity = id.String()
		}
		if n := s.info.name.Load(); n != nil {
			c.Client = *n
		}
		out = append(out, c)
		return true
	})
	return out
}

// Replay replays p's log from offset into out on the replay pool, then
// makes out a live subscriber (a group member's feed); done, if not nil,
// is closed when it ends. cancel stops it.
func (srv *Server) Replay(out *outbox.Outbox, p *shard.Partition, offset int64, cancel *atomic.Bool, done chan struct{}) {
	j := srv.newReplay(out, p, offset, cancel)
	j.done, j.tail = done, p.Replica != nil
	srv.replays.start(j)
}

// ResolveStart turns a start position into an offset of p's log; an
// offline partition has none (PARTITION_OFFLINE). The group coordinator
// uses it too, so a member and a subscriber are told the same.
func ResolveStart(p *shard.Partition, st wire.Start) (int64, error) { return resolveStart(p, st) }

// ResolveStartLocal is ResolveStart on this node's replica of a
// replicated partition, whether or not it leads it: a group's feeds read
// the coordinator's replicas (a tailing Replay).
func ResolveStartLocal(p *shard.Partition, st wire.Start) (int64, error) { return resolveLocal(p, st) }

// SkipCorrupt moves offset past any corrupt range of p's log it falls in.
func SkipCorrupt(p *shard.Partition, offset int64) int64 { return skipCorrupt(p, offset) }

package engine

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/server"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/topic"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Consumer groups: the coordinator and its feeds are package group/coord,
// which reaches the broker only through coord.Broker. This file is the
// broker's side of that interface; the sessions' group requests are in
// session_groups.go.

// Dead-letter headers: where a message came from and why it ended here.
// Aliases of coord's, which writes them.
const (
	HeaderOriginalTopic     = coord.HeaderOriginalTopic
	HeaderOriginalPartition = coord.HeaderOriginalPartition
	HeaderOriginalOffset    = coord.HeaderOriginalOffset
	HeaderDeliveryCount     = coord.HeaderDeliveryCount
	HeaderLastNackReason    = coord.HeaderLastNackReason
)

// newCoordinator builds the broker's group coordinator, with the offsets
// store in the data directory; in a cluster, in the offsets topic
// (groupsrepl.go).
func newCoordinator(e *Engine) *coord.Coordinator {
	if len(e.cfg.Peers) > 0 {
		return newClusterCoordinator(e)
	}
	return coord.New(coord.Config{Broker: groupBroker{e}, Store: offsets.New(e.cfg.FS, e.cfg.DataDir, e.log),
		Log: e.log, Retention: e.cfg.GroupRetention})
}

// groupBroker is the broker as the group coordinator reaches it. A topic
// is handed over as a topic.Group, as the sessions hand it at a join.
type groupBroker struct{ e *Engine }

func (b groupBroker) Topic(name string) coord.Topic {
	if t := b.e.topics.get([]byte(name)); t != nil {
		return topic.Group{T: t}
	}
	return nil
}

func (groupBroker) ResolveStart(p *shard.Partition, st wire.Start) (int64, error) {
	return server.ResolveStartLocal(p, st)
}
func (groupBroker) OfflineReason(p *shard.Partition) string { return topic.OfflineReason(p) }
func (groupBroker) SkipCorrupt(p *shard.Partition, offset int64) int64 {
	return server.SkipCorrupt(p, offset)
}

func (b groupBroker) Replay(out *outbox.Outbox, p *shard.Partition, offset int64, cancel *atomic.Bool, done chan struct{}) {
	b.e.srv.Replay(out, p, offset, cancel, done)
}

func (b groupBroker) Publish(topic string, frame []byte, batchOff int) error {
	return b.e.publishInternal(topic, frame, batchOff)
}

func (b groupBroker) Observed() bool          { return b.e.observed() }
func (b groupBroker) Emit(ev telemetry.Event) { b.e.emit(ev) }

// netBroker is the broker as the network side reaches it (server.Broker).
type netBroker Engine

var _ server.Broker = (*netBroker)(nil)

func (b *netBroker) CreateTopic(by server.Origin, name string, partitions uint32, kvs []wire.KV, existOK bool) (*Topic, error) {
	return (*Engine)(b).createTopicBy(by, name, partitions, kvs, existOK)
}

func (b *netBroker) UpdateTopic(by server.Origin, name string, kvs []wire.KV) (*Topic, error) {
	return (*Engine)(b).updateTopicBy(by, name, kvs)
}

func (b *netBroker) DeleteTopic(by server.Origin, name string) error {
	return (*Engine)(b).deleteTopicBy(by, name)
}

func (b *netBroker) Observed() bool          { return (*Engine)(b).observed() }
func (b *netBroker) Emit(ev telemetry.Event) { (*Engine)(b).emit(ev) }

// internalFlusher lets a goroutine of the broker wait for the answer the
// shard sends to an internal publish.
type internalFlusher struct{ ch chan struct{} }

func (f *internalFlusher) ScheduleFlush() {
	select {
	case f.ch <- struct{}{}:
	default:
	}
}
func (f *internalFlusher) Owner() any { return f }
func (f *internalFlusher) FlushNow()  { f.ScheduleFlush() }

// internalPublishTimeout bounds the wait for an internal publish's ack.
const internalPublishTimeout = 30 * time.Second

// publishInternal publishes a whole Publish frame (partition any, batch at
// batchOff) from inside the broker and waits for its ack. The topic is
// created with the defaults when missing, whether or not auto-creation is
// on: it is the broker's own.
func (e *Engine) publishInternal(topic string, frame []byte, batchOff int) error {
	return e.publishInternalTo(topic, wire.PartitionAny, frame, batchOff)
}

// publishInternalTo is publishInternal to partition part (or any).
func (e *Engine) publishInternalTo(topic string, part int32, frame []byte, batchOff int) error {
	if e.srv.Draining() {
		return server.ErrShuttingDown
	}
	if _, err := wire.CheckBatch(frame[batchOff:], e.cfg.MaxMessageBytes, e.cfg.MaxFrameBytes); err != nil {
		return err
	}
	t := e.topics.get([]byte(topic))
	if t == nil {
		var err error
		if t, err = e.createTopicBy(byBroker, topic, 0, nil, true); err != nil {
			return err
		}
	}
	p, err := t.PickPartition(part)
	if err != nil {
		return err
	}
	buf := storage.NewBuf(len(frame))
	copy(buf.B, frame)
	wire.SetDeliverHeader(buf.B)
	binary.BigEndian.PutUint32(buf.B[batchOff-4:], uint32(p.ID))
	fl := &internalFlusher{ch: make(chan struct{}, 1)}
	out := outbox.NewOutbox(1<<20, len(e.shards), fl)
	defer out.Close()
	const corr = 1
	if err := p.Publish(out, corr, buf, batchOff); err != nil {
		return server.ErrShuttingDown
	}
	p.Shard.Wake()
	timeout := time.NewTimer(internalPublishTimeout)
	defer timeout.Stop()
	for {
		select {
		case <-fl.ch:
		case <-timeout.C:
			return wire.Errorf(wire.CodeInternal, "no ack for an internal publish to "+topic)
		}
		pending, _ := out.Take()
		var data []byte
		for _, b := range pending.IOV {
			data = append(data, b...)
		}
		out.Done(pending, 0)
		for len(data) > 0 {
			f, n, err := wire.ReadFrame(data, uint32(len(data)))
			if err != nil || n == 0 {
				return wire.Errorf(wire.CodeInternal, "bad answer to an internal publish")
			}
			data = data[n:]
			switch f.Type {
			case wire.TypePublishAck:
				return nil
			case wire.TypeError:
				we, derr := wire.DecodeError(f.Body)
				if derr != nil {
					return derr
				}
				return we
			}
		}
	}
}

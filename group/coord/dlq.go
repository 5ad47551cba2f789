package coord

import (
	"strconv"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Dead-letter headers: where a message came from and why it ended here.
const (
	HeaderOriginalTopic     = "x-original-topic"
	HeaderOriginalPartition = "x-original-partition"
	HeaderOriginalOffset    = "x-original-offset"
	HeaderDeliveryCount     = "x-delivery-count"
	HeaderLastNackReason    = "x-last-nack-reason"
)

// deadLetterRetry is how long a message waits before another attempt when
// writing it to the dead-letter topic failed.
const deadLetterRetry = time.Second

// deadLetter writes the messages at offs (sorted), each delivered
// max-deliveries times, to the group's dead-letter topic, and then counts
// them as acked. The write completes (durably, for a durable topic) before
// the ack, so a message is never lost between the two topics.
func (f *msgFeed) deadLetter(offs []int64) {
	gp := f.gp
	g := gp.g
	type letter struct {
		offset     int64
		deliveries uint32
		reason     string
	}
	letters := make([]letter, 0, len(offs))
	gp.mu.Lock()
	for _, o := range offs {
		l := letter{offset: o}
		l.deliveries, l.reason = gp.acks.Details(o)
		letters = append(letters, l)
	}
	gp.mu.Unlock()

	topic, part := gp.p.Topic, strconv.Itoa(int(gp.p.ID))
	dlq := g.deadLetterTopic()
	var bb wire.BatchBuilder
	buf, _ := wire.StartFrame(nil, wire.TypePublish, 0, 0)
	buf = wire.AppendBatchPrefix(buf, wire.Unqualified(dlq), wire.PartitionAny) // deliveries name it as its tenant does
	batchOff := len(buf)
	bb.Start(buf, -1, -1)
	var unreadable []int64
	var dec wire.Decompressor // the copies are written uncompressed
	i := 0
	for i < len(letters) {
		found := false
		var err error
		readErr := gp.p.Log.Read(letters[i].offset, 1, func(b wire.Batch) bool {
			var it wire.RecordIter
			if it, err = dec.Records(b, wire.MaxBatchBytes); err != nil {
				return false
			}
			var r wire.Record
			for it.Next(&r) && i < len(letters) {
				if r.Offset != letters[i].offset {
					continue
				}
				found = true
				l := letters[i]
				var hs []wire.RecordHeader
				r.Headers(func(k, v []byte) {
					hs = append(hs, wire.RecordHeader{Key: string(k), Value: append([]byte(nil), v...)})
				})
				hs = append(hs,
					wire.RecordHeader{Key: HeaderOriginalTopic, Value: []byte(wire.Unqualified(topic))},
					wire.RecordHeader{Key: HeaderOriginalPartition, Value: []byte(part)},
					wire.RecordHeader{Key: HeaderOriginalOffset, Value: strconv.AppendInt(nil, l.offset, 10)},
					wire.RecordHeader{Key: HeaderDeliveryCount, Value: strconv.AppendUint(nil, uint64(l.deliveries), 10)},
					wire.RecordHeader{Key: HeaderLastNackReason, Value: []byte(l.reason)})
				bb.Append(r.Timestamp, r.Key, r.Value, hs)
				i++
			}
			return false
		})
		if err == nil {
			err = readErr
		}
		if err != nil || !found {
			f.c.log.Error("a message to dead-letter cannot be read; dropping it", "group", g.name,
				"topic", topic, "partition", gp.p.ID, "offset", letters[i].offset, "err", err)
			unreadable = append(unreadable, letters[i].offset)
			i++
		}
	}
	if len(unreadable) > 0 {
		f.forget(unreadable)
	}
	if bb.Count() == 0 {
		return
	}
	frame := bb.Finish()
	wire.FinishFrame(frame, 0)
	err := f.c.broker.Publish(dlq, frame, batchOff)
	written := make([]int64, 0, len(letters))
	for _, l := range letters {
		if len(unreadable) == 0 || !containsOffset(unreadable, l.offset) {
			written = append(written, l.offset)
		}
	}
	switch code := wire.CodeOf(err); {
	case err == nil:
		f.forget(written)
		g.deadLettered.Add(uint64(len(written)))
		f.c.log.Debug("dead-lettered", "group", g.name, "topic", topic, "partition", gp.p.ID,
			"messages", len(written), "dlq", dlq)
		f.emitDeadLettered(dlq, written, nil)
	case code == wire.CodeMessageTooLarge || code == wire.CodeInvalidArgument || code == wire.CodeTooManyTopics:
		f.c.log.Error("messages cannot be written to the dead-letter topic; dropping them", "group", g.name,
			"topic", topic, "partition", gp.p.ID, "dlq", dlq, "messages", len(written), "err", err)
		f.forget(written)
		f.emitDeadLettered(dlq, written, err)
	default:
		f.c.log.Warn("writing to the dead-letter topic failed; will retry", "group", g.name,
			"dlq", dlq, "messages", len(written), "err", err)
		gp.mu.Lock()
		gp.acks.DeadLetterFailed(written, f.c.now()+int64(deadLetterRetry))
		gp.mu.Unlock()
	}
}

// emitDeadLettered emits EventMessageDeadLetter for messages written to
// the dead-letter topic dlq, or dropped because they could not be (err).
// Offset is the first of them.
func (f *msgFeed) emitDeadLettered(dlq string, offs []int64, err error) {
	if !f.c.broker.Observed() || len(offs) == 0 {
		return
	}
	f.c.broker.Emit(telemetry.Event{Kind: telemetry.EventMessageDeadLetter, Topic: f.gp.p.Topic,
		Partition: int(f.gp.p.ID), Offset: offs[0], Count: len(offs), Group: f.gp.g.name,
		Actor: "broker", Action: "dead-letter", Target: "topic/" + dlq, Err: err})
}

func containsOffset(s []int64, o int64) bool {
	for _, x := range s {
		if x == o {
			return true
		}
	}
	return false
}

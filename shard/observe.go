package shard

import (
	"sync/atomic"
	"time"
)

// Measurements for metrics. Nothing here runs per message: the counters
// are bumped once per batch by the token holder (atomics, so a scrape can
// read them from any goroutine), and the Observer is called once per batch,
// per ack and per fsync.

// Observer receives a shard's measurements for histograms. Its methods run
// on the shard's token holder (PublishBatch; Acked, from the driver) or on
// its driver's syncer (Fsynced), and must be quick and must not block.
type Observer interface {
	// PublishBatch reports a publish batch of messages appended to a log.
	PublishBatch(messages int)
	// Acked reports a publish acked, d after it was handed to the shard.
	// With fsync=always that includes the write and the fsync.
	Acked(d time.Duration)
	// Fsynced reports one fsync of a partition's log and how long it took.
	Fsynced(d time.Duration)
}

// Counters is a partition's cumulative traffic since it was opened.
type Counters struct {
	PublishedMessages uint64 // records appended
	PublishedBytes    uint64 // record-batch bytes appended
	DeliveredMessages uint64 // records pushed to live subscribers, once per subscriber
	DeliveredBytes    uint64 // Deliver-frame bytes pushed to live subscribers
}

// traffic holds a partition's Counters as atomics.
type traffic struct {
	pubMsgs, pubBytes, delMsgs, delBytes atomic.Uint64
}

// Counters reports the partition's traffic. Deliveries count live
// fan-out only, not replays from the log.
func (p *Partition) Counters() Counters {
	return Counters{PublishedMessages: p.traffic.pubMsgs.Load(), PublishedBytes: p.traffic.pubBytes.Load(),
		DeliveredMessages: p.traffic.delMsgs.Load(), DeliveredBytes: p.traffic.delBytes.Load()}
}

// countPublished records an appended batch.
func (s *Shard) countPublished(p *Partition, n int64, bytes int) {
	p.traffic.pubMsgs.Add(uint64(n))
	p.traffic.pubBytes.Add(uint64(bytes))
	if s.cfg.Observer != nil {
		s.cfg.Observer.PublishBatch(int(n))
	}
}

// countDelivered records a batch of n messages in a frame of bytes fanned
// out to reached subscribers.
func (p *Partition) countDelivered(n int64, bytes, reached int) {
	if reached > 0 {
		p.traffic.delMsgs.Add(uint64(n) * uint64(reached))
		p.traffic.delBytes.Add(uint64(bytes) * uint64(reached))
	}
}

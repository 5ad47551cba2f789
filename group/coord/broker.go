package coord

import (
	"sync/atomic"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The coordinator's view of the broker around it. The broker (engine)
// implements these; tests implement them with a few fields. Each is what
// the groups use today, nothing more, so the arrows point down only: the
// broker imports coord, coord never imports the broker.

// Broker is everything the coordinator asks of the broker.
type Broker interface {
	Topics
	Logs
	Replays
	Publisher
	Events
}

// Topic is a group's topic. Values of the same topic compare equal (the
// broker hands out comparable values, such as a struct holding a pointer),
// so a group can tell its topic from a newer one of the same name.
type Topic interface {
	Name() string
	// Partitions are the topic's partitions, by id; fixed at creation.
	Partitions() []*shard.Partition
	// DeadLetterTopic and MaxDeliveries are the topic's current settings
	// for message-mode groups: "" and 0 when it leaves them to the group
	// or the defaults.
	DeadLetterTopic() string
	MaxDeliveries() int
}

// Topics looks topics up by name.
type Topics interface {
	// Topic is the topic named name, or nil when there is none.
	Topic(name string) Topic
}

// Logs answers what a start position or a damaged log means, the broker's
// way, so that a group member and a subscriber are told the same.
type Logs interface {
	// ResolveStart turns a start position into an offset of p's log, or
	// the error a subscriber would get (PARTITION_OFFLINE, out of range).
	ResolveStart(p *shard.Partition, st wire.Start) (int64, error)
	// OfflineReason says why p is offline (its log could not be opened),
	// or "" when it is not.
	OfflineReason(p *shard.Partition) string
	// SkipCorrupt moves offset past any range of p's log found corrupt.
	SkipCorrupt(p *shard.Partition, offset int64) int64
}

// Replays runs the broker's replays: a none or offset mode feed is one.
type Replays interface {
	// Replay queues a replay of p from offset into out that then joins
	// the live fan-out with no gap and no duplicate (shard.CatchUp), as a
	// Subscribe with a start position does. cancel stops it at its next
	// step; done is closed when it has ended. It returns at once.
	Replay(out *outbox.Outbox, p *shard.Partition, offset int64, cancel *atomic.Bool, done chan struct{})
}

// Publisher writes dead letters.
type Publisher interface {
	// Publish publishes a whole Publish frame (partition any, its batch at
	// batchOff) to topic from inside the broker, creating the topic with
	// the defaults when it is missing, and returns once it is acked (for a
	// durable topic: durable), or with the error the shard answered.
	Publish(topic string, frame []byte, batchOff int) error
}

// Events hands telemetry events to the broker's plugins.
type Events interface {
	// Observed reports whether anyone listens: callers that would build
	// strings for an event check it first.
	Observed() bool
	// Emit hands ev on; it never blocks.
	Emit(ev telemetry.Event)
}

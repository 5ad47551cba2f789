package outbox

import "time"

// epoch anchors Clock.
var epoch = time.Now()

// Clock is the monotonic clock, in nanoseconds and never 0, by which
// outboxes time pressure and stalls. A shard's driver hands the same clock
// to its shard (shard.Shard.Tick), since the shard compares its own time
// with the stall times outboxes record.
func Clock() int64 { return int64(time.Since(epoch)) + 1 }

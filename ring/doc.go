// Package ring provides the bounded, lock-free queues that sit on the
// broker's hot path between the network event loops and the shards.
//
// # Why this package exists
//
// Every publish batch crosses a goroutine boundary at least once: an event
// loop decodes it and hands a reference to the shard that owns the topic.
// A buffered channel can do that, but every send and receive takes the
// channel's lock and, on a contended channel, goes through the scheduler.
// The queues here move values with one or two atomic operations, never
// allocate per item, move whole batches with a single publishing store, and
// keep producer-owned and consumer-owned indices on separate cache lines so
// the common case touches no line the other side is writing.
//
// Two shapes are provided:
//
//   - [SPSC]: exactly one producer and one consumer goroutine. Cheapest; used
//     where a single event loop feeds a single shard.
//   - [MPSC]: many producers, one consumer (Dmitry Vyukov's bounded queue,
//     one sequence number per slot). Used for a shard's inbox, which every
//     event loop may push into.
//
// Both are fixed-capacity rings: a full queue makes Push return false rather
// than block or grow, so back-pressure is the caller's explicit decision.
//
// # Memory ordering
//
// Go's sync/atomic operations are sequentially consistent, and an atomic
// load that observes an atomic store synchronizes with it (the store
// "happens before" everything after the load). The queues rely on three
// such pairings:
//
//  1. Publication. A producer writes a value into its slot with an ordinary
//     store and only then makes it visible with an atomic store (SPSC: the
//     tail index; MPSC: the slot's sequence number). The consumer reads the
//     value only after an atomic load has observed that store, so it sees
//     the complete value.
//  2. Reuse. The consumer copies a value out and zeroes the slot, then
//     releases it with an atomic store (SPSC: the head index; MPSC: the
//     slot's sequence number advanced by one lap). A producer writes into a
//     slot only after an atomic load has observed that release, so it never
//     overwrites a value that is still being read.
//  3. Parking (no lost wake-ups). The consumer stores "sleeping" and then
//     re-checks the queue; a producer publishes and then loads "sleeping".
//     This is the classic store-then-load (Dekker) pattern: because the
//     four operations are sequentially consistent, they fall into one total
//     order, and in any such order either the consumer's re-check comes
//     after the producer's publication (the consumer sees the item and does
//     not block) or the producer's load comes after the consumer's
//     announcement (the producer sees "sleeping" and sends a wake-up
//     token). The token goes into a channel with a buffer of one, so it is
//     not lost even if it is sent before the consumer reaches the receive.
//
// # Waiting: spin, then park
//
// The target machine has only two cores. A consumer that busy-waits for
// work burns one of them, which is the core the producers (the network
// event loops) need in order to produce that work. Wait therefore re-checks
// the queue a bounded number of times, yielding with runtime.Gosched
// between checks, which catches the common case of an item arriving within
// microseconds without a trip through the scheduler's sleep path, and then
// parks on a channel until a producer, a call to Wake, or a timeout wakes
// it. Producers pay for this only with one atomic load per push (per batch
// for PushBatch) while the consumer is awake.
package ring

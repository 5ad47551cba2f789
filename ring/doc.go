// Package ring provides the bounded, lock-free queue that sits on the
// broker's hot path between the network event loops and the shards: MPSC,
// each shard's inbox.
//
// # Why this package exists
//
// Every publish batch crosses into its shard through the inbox: an event
// loop decodes it and hands a reference to the shard that owns the topic.
// A buffered channel can do that, but every send and receive takes the
// channel's lock and, on a contended channel, goes through the scheduler.
// [MPSC] moves values with one or two atomic operations, never allocates
// per item, claims a whole batch with a single CAS, and keeps producer-owned
// and consumer-owned indices on separate cache lines so the common case
// touches no line the other side is writing.
//
// [MPSC] has many producers and one consumer (Dmitry Vyukov's bounded
// queue, one sequence number per slot): every event loop may push into a
// shard's inbox, and only the holder of the shard's run token pops. It is a
// fixed-capacity ring: a full queue makes Push return false rather than
// block or grow, so back-pressure is the caller's explicit decision.
//
// The queue has no way to wait. A consumer that finds it empty decides for
// itself how to wait; the shard sleeps on a channel that pushers kick (see
// package shard), which on a two-core machine costs nothing while idle.
//
// # Memory ordering
//
// Go's sync/atomic operations are sequentially consistent, and an atomic
// load that observes an atomic store synchronizes with it (the store
// "happens before" everything after the load). The queue relies on two
// such pairings:
//
//  1. Publication. A producer writes a value into its slot with an ordinary
//     store and only then makes it visible with an atomic store of the
//     slot's sequence number. The consumer reads the value only after an
//     atomic load has observed that store, so it sees the complete value.
//  2. Reuse. The consumer copies a value out and zeroes the slot, then
//     releases it with an atomic store of the slot's sequence number
//     advanced by one lap. A producer writes into a slot only after an
//     atomic load has observed that release, so it never overwrites a value
//     that is still being read.
package ring

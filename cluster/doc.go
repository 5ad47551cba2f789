// Package cluster replicates partitions across nodes on etcd raft
// (go.etcd.io/raft/v3): one Raft group per partition, whose Raft log is
// the partition's own segment log (package cluster/raftlog), and a
// controller group for the cluster's metadata.
//
// # Host
//
// A Host runs every group of one node on one goroutine, as etcd raft's
// RawNode expects: it steps the messages peers send (Deliver), ticks the
// groups, and handles each group's Ready in the order raft requires:
//
//  1. save a new term or vote (durably) before any message that depends
//     on it goes out;
//  2. send the leader's appends, heartbeats and vote requests, so the
//     followers write while the leader does;
//  3. append the entries to the partition log and, under fsync=always
//     (GroupConfig.Sync), fsync it;
//  4. send the acknowledgements (append and vote responses), which must
//     not leave before the entries they acknowledge are durable;
//  5. apply committed entries: move the partition log's visible end (what
//     readers and subscribers see is what a quorum holds), apply
//     configuration changes, and answer the proposals they decide.
//
// Each pass's messages are batched per peer and handed to the transport
// once (HostConfig.Send), so many partitions share one write per node
// pair.
//
// A host built with HostConfig.Driven has no goroutine and reads no
// clock: its caller runs the loop's passes (Tick, Process), as the
// deterministic simulator (package sim) does for three hosts on one
// goroutine. The host walks its groups and peers in an order of its own,
// never Go's map order, so that the same calls send the same envelopes in
// the same order. Raft itself draws election timeouts from crypto/rand.
//
// # Proposals and offsets
//
// Only a group's leader accepts a publish (Propose). It stamps the batch's
// base offset with the end of its Raft log, proposes it, and answers once
// the entry is committed: the offset in that answer is final, because Raft
// never changes a committed entry, and the leader's log is the one every
// replica's log will match. A node that is not the leader answers with a
// NotLeaderError naming the leader it knows. A leader that steps down
// fails what it has pending with a NotLeaderError marked Unknown: those
// batches may still commit under the new leader, so only an idempotent
// producer can retry them without a duplicate.
//
// # Linearizable reads
//
// A leader cut off from its quorum, or paused, goes on believing it leads
// until it hears of a new term or CheckQuorum notices the silence; what it
// serves from its own state meanwhile may be stale. ReadIndex confirms
// the leadership first, with Raft's ReadIndex: the leader notes its
// commit index, a round of heartbeats confirms that a quorum still
// follows it, and the read is answered once that index is applied. A
// follower refuses; a leader that steps down, or that hears from no
// quorum within two election timeouts, fails the read (readindex.go).
//
// # Quiescence
//
// A leader whose group has been idle for HostConfig.QuiesceTicks, with
// every follower holding every entry, stops ticking it and tells its
// followers with a last heartbeat marked "quiesce"; they stop ticking too.
// An idle partition then costs nothing. What replaces the heartbeats of
// every quiesced group is one ping per node pair per tick: when a node
// has been silent for an election timeout, the groups it led wake up and
// elect a new leader. Any proposal, ReadIndex or non-heartbeat message
// wakes a group, and a group with a read pending does not quiesce.
package cluster

// Package sim is a deterministic simulator of the broker's components,
// in the manner of FoundationDB's and TigerBeetle's: one goroutine, one
// seeded random source (a PCG from one uint64), a simulated clock, and a
// simulated disk, so a seed replays a run exactly, step by step.
//
// # World, actors, scheduler
//
// A [World] holds what the components share: the random source, the
// clock (int64 nanoseconds; nothing here reads the wall clock), and the
// machine's disk, a [vfs.MemFS] that tracks what is durable. Each
// component is an [Actor] with a model of what it must do:
//
//   - logs: storage.DiskLog, three partitions of an fsync=always topic
//     sharing a small FileCache, each through its own vfs.ErrorFS:
//     staged publishes, writes (disk full, short writes, cuts that fail),
//     syncs (failing fsyncs), reads, retention on the simulated clock,
//     clean restarts.
//   - assign: a group's membership around group/assign.Sticky: joins,
//     leaves, heartbeats and session timeouts, generations, and the
//     two-step hand-over of a moved partition.
//   - acks: group/ackstate.State as the message-mode feed drives it:
//     gated first deliveries, acks, nacks, expiries, retries,
//     dead-lettering after max-deliveries (whose write may fail),
//     takeovers, retention skipping messages, and drains.
//   - offsets: group/offsets.Store (data/groups.log) through an ErrorFS:
//     commits waited for or not, removals, clean restarts. Its writer
//     goroutine is never started; each change is written by Store.Flush.
//   - shard: a shard (package shard) run as its driver runs it, with the
//     scheduler choosing when: publishes from two producers to two
//     fsync=always partitions on DiskLogs, subscribes and unsubscribes of
//     two subscribers with small outboxes (so acks are held for their
//     pressure and they are cut as slow consumers), passes at the
//     simulated time (Tick, Step, Ready, Advance), the writes and fsyncs
//     Ready asks for carried out later, in any order across partitions,
//     now and then failing, and subscribers' writers draining when they
//     get to it (see shard.go).
//   - coord: group/coord.Coordinator itself, in offset mode, built with
//     Config.Driven, IDPrefix and NewFeed so that it starts no goroutine,
//     on a fake broker (partitions on memory logs, no shard) with fake
//     feeds that end when the seed says: the timer pass (Tick) at the
//     start of each of its steps, then members of two groups join, leave,
//     reconnect with their id, go silent and time out, read their
//     Assignments when they get to it (lazy ones seldom, so revocations
//     are forced), heartbeat the generation they read or an older one,
//     commit (Store.Flush after every call runs the callbacks), feeds
//     end, retention passes (ExpireIdle), the topic is deleted and
//     created again, and a crash rebuilds the coordinator from w.Mem and
//     the members rejoin (see coord.go).
//   - cluster: three nodes of a cluster, each a cluster.Host built with
//     HostConfig.Driven (no goroutine, no clock: the actor runs its passes
//     with Tick and Process), holding one replicated partition, a Raft
//     group of three voters under fsync=always whose log is a
//     storage.DiskLog on the node's own MemFS, and a simulated network
//     between them: every batch of envelopes a host sends is a packet,
//     encoded, held until a delivery time, in order on its link or (when
//     the weather says) overtaking others, now and then dropped,
//     duplicated or held a long time; links are cut (a node isolated, one
//     link both ways, one direction) and healed. Its steps are its clock:
//     a node's tick, the delivery of due packets to a node (then usually
//     its pass), a pass, proposals at the node that leads and at others
//     (passes around them, or left queued with the deliveries; at most a
//     window of them unanswered), and, every few hundred steps, a fault:
//     weather, links, a leadership transfer, the producers pausing (so the
//     group quiesces), a node's crash (its MemFS keeps what it synced, torn
//     tails half of the time, and its host is rebuilt from the log and
//     raft.meta, at once or after a while), or a calm spell without faults
//     (now and then with a node, often the leader, lost for all of it).
//     The machine's crash is a power loss of all three nodes (see
//     cluster.go).
//
// [Run] is the scheduler. Each step it advances the clock (up to 1 ms,
// now and then up to 200 ms), then either crashes the machine, which
// replaces the disk with its durable state (torn tails half of the time)
// and has every actor recover, or lets one actor, chosen at random, take
// one action. Then every actor checks its invariants. Each action adds a
// line to the trace, whose hash identifies the run.
//
// # Invariants
//
//   - logs: a batch Sync acknowledged survives every crash (the recovered
//     end is at or past the acked end); offsets are dense from the start;
//     every record reads back as published, in publish order; retention
//     only removes from the start (a crash may undo a removal not yet
//     synced in the directory, never go past it); after a failed fsync,
//     or a failed write that could not be cut off, the log accepts no
//     write and no Sync succeeds until it is reopened, and all a reopened
//     log holds survives every crash (opening synced it); a write fails
//     only when a fault was injected; recovery finds no corruption (the
//     simulator corrupts nothing), except a hole above everything acked
//     after a crash, which a torn write across a segment roll leaves;
//     bounds match the model; the open
//     descriptors stay within the FileCache's budget plus what it may not
//     close (pinned segments).
//   - assign: while there are members, every partition is owned by a
//     live member, the owners are balanced, and once a member confirmed a
//     generation it holds no partition that generation gave to another:
//     two members never feed one partition at once; with no members
//     nobody owns or holds anything.
//   - acks: Ack, Nack and SkipTo report what the model expects; the floor
//     is the first offset not acked; a message is delivered for the first
//     time once, redelivered only while not acked and at most
//     max-deliveries times in all, and dead-lettered only after exactly
//     max-deliveries; a drain (the consumer stops, the clock runs until
//     nothing is pending) ends with every message acked or dead-lettered,
//     so none is ever forgotten; the window and the unacked count stay
//     within their gates.
//   - offsets: after a crash each group is found as at its last answered
//     change or a later one, never earlier (committed offsets never go
//     back) and never in a state it was not given; after a clean restart,
//     exactly as at its last change; the log stays within its compaction
//     bound.
//   - coord, from the Assignments drained from each member's outbox and
//     from Describe: a partition is never given while another member holds
//     it (from its Assignment until it confirms one without it, leaves,
//     times out, or its revocation is forced after its session timeout),
//     and starts at the committed offset; each partition's owner is the
//     member whose last Assignment has it, and a member that left or timed
//     out owns nothing and is no member; no partition has two feeds that
//     have not ended; a commit is taken exactly when the member holds each
//     partition in a generation at or after the one that gave it, and
//     committed offsets never go back; after a crash each group has
//     exactly its last committed offsets (every commit was answered once
//     written); a group with members has every partition owned and
//     balanced once no revocation, stopping feed or retry is pending; a
//     group is removed by retention once idle for it, and not before.
//   - cluster, on a truth built from what the nodes show committed (the
//     longest committed log seen, batch by batch): every node's committed
//     log is a prefix of it, so no two nodes ever hold different batches at
//     one offset, and what a node shows at an offset never changes, across
//     its crashes too (after one it shows what its meta file says was
//     committed, possibly less, until its leader tells it more); every
//     batch in it was proposed, and is in it once; a batch acked at an
//     offset is there, forever, even after every node lost power; a batch
//     answered as not stored (NotLeaderError not marked Unknown,
//     ErrProposalLost) is never committed; every proposal is answered at
//     most once, and one at a node that does not lead is refused at once
//     with a NotLeaderError naming the leader it knows; at most one leader
//     per term, from the leaders' own state and every node's view; a
//     node's term never goes back and it never votes twice in a term,
//     across crashes too; a node's committed end never goes back but
//     across its crash, and matches its group's; no group fails without a
//     fault. Liveness, once the network has been calm (a majority up,
//     links in order, nothing cut, dropped, duplicated or held long) for 60
//     ticks of every node up: no stretch of 60 ticks of every node up
//     without a node leading the highest term (a leader whose clock runs
//     ahead of its followers' answers may step down, but another is
//     elected; a stretch is measured on each node's clock, since an
//     election waits on the slowest: a follower ignores pre-votes while
//     its own clock says its leader's lease holds; 60 is about three of
//     the longest randomized election timeouts: one for the lease, one
//     for a split vote, one for the round trips), and no
//     proposal waits more than 30 of its node's ticks for its answer.
//
// # Replaying
//
// A failure names its seed and step. make sim SEED=<seed> runs that seed
// again with every step of the trace printed; make sim runs fresh seeds
// for SIM_TIME and reports the steps per second; ACTORS=cluster (a list)
// runs only those actors, as a failure of such a run says. All are go
// test flags of this package (sim_test.go): -sim.seed, -sim.trace,
// -sim.duration, -sim.steps, -sim.actors.
//
// One source of chance is not w.Rand: etcd raft draws each election
// timeout from crypto/rand (go.etcd.io/raft/v3 has no seed), so the test
// seeds crypto/rand with the run's seed (testing/cryptotest) before each
// run; a run started some other way elects as it pleases, and its trace
// differs from run to run. TestSimDeterministic replays whole runs, the
// cluster's included, and checks that a different crypto/rand seed gives
// a different trace, so raft's draws are known to be covered.
//
// # Adding an actor
//
// A component joins the simulation as one more [NewActor] in [Actors]
// (or in Config.Actors). It must be driven only from Step and Crash, on
// the scheduler's goroutine, take its chances from w.Rand and its time
// from w.Now, and keep its files on w.Mem, registering its FileCache in
// w.Caches. The shard actor (shard.go) is the example of a state machine
// driven this way: its Step feeds it an operation or runs a pass, does
// what Ready asks (holding the writes and fsyncs back for later steps,
// which is how the simulator reorders I/O), and calls Advance; Check
// bounds what it holds; Crash builds a new shard from w.Mem and checks
// what the logs kept.
package sim

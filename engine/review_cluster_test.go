package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/cluster"
	"github.com/ratatoskr-mq/ratatoskr/cluster/meta"
	"github.com/ratatoskr-mq/ratatoskr/cluster/raftlog"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/shard/driver"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// rvNet connects hosts in this process. A directed link can drop
// everything, or hold back the MsgAppResp it carries (acknowledgements of
// appends) until released, while votes and heartbeats pass.
type rvNet struct {
	mu      sync.Mutex
	hosts   map[uint64]*cluster.Host
	drop    map[[2]uint64]bool
	holdAck map[[2]uint64]bool
	held    []rvHeld
}

type rvHeld struct {
	from, to uint64
	envs     []cluster.Envelope
}

func (n *rvNet) sender(from uint64) func(to uint64, envs []cluster.Envelope) {
	return func(to uint64, envs []cluster.Envelope) {
		k := [2]uint64{from, to}
		n.mu.Lock()
		h := n.hosts[to]
		if h == nil || n.drop[k] {
			n.mu.Unlock()
			return
		}
		var pass, hold []cluster.Envelope
		for _, e := range envs {
			if n.holdAck[k] && e.Msg.Type == raftpb.MsgAppResp {
				hold = append(hold, e)
				continue
			}
			pass = append(pass, e)
		}
		if len(hold) > 0 {
			n.held = append(n.held, rvHeld{from, to, hold})
		}
		n.mu.Unlock()
		if len(pass) > 0 {
			h.Deliver(from, pass)
		}
	}
}

func (n *rvNet) set(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f()
}

// release lets the held acknowledgements through and holds no more.
func (n *rvNet) release() {
	n.mu.Lock()
	held := n.held
	n.held = nil
	clear(n.holdAck)
	hosts := n.hosts
	n.mu.Unlock()
	for _, m := range held {
		hosts[m.to].Deliver(m.from, m.envs)
	}
}

type rvFlusher struct{}

func (rvFlusher) ScheduleFlush() {}
func (r rvFlusher) Owner() any   { return r }
func (rvFlusher) FlushNow()      {}

// rvNode is one node's replica of a partition, wired as engine's cluster
// code wires it (clusterNode.start, replica): its Raft group on a host,
// and its shard partition over the same log.
type rvNode struct {
	id    uint64
	host  *cluster.Host
	rep   *replica
	drv   *driver.Driver
	part  *shard.Partition
	log   *storage.MemLog
	out   *outbox.Outbox
	store *raftlog.Storage
}

func startReviewReplicas(t *testing.T) (*rvNet, map[uint64]*rvNode) {
	ids := []uint64{1, 2, 3}
	net := &rvNet{hosts: map[uint64]*cluster.Host{}, drop: map[[2]uint64]bool{}, holdAck: map[[2]uint64]bool{}}
	nodes := map[uint64]*rvNode{}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, id := range ids {
		var peers []uint64
		for _, o := range ids {
			if o != id {
				peers = append(peers, o)
			}
		}
		h := cluster.NewHost(cluster.HostConfig{NodeID: id, Send: net.sender(id), Peers: peers,
			TickInterval: 10 * time.Millisecond, QuiesceTicks: -1, Logger: logger})
		net.set(func() { net.hosts[id] = h })
		h.Start()
		c := &clusterNode{id: id, host: h, results: map[string]applied{}, quit: make(chan struct{})}
		c.view.Store(meta.New())
		ml := storage.NewMemLog(64 << 20)
		store, err := raftlog.Open(ml, &raftlog.MemMeta{})
		require.NoError(t, err)
		rep := &replica{c: c, group: 100, topic: "t", part: 0, voters: ids, local: true, store: store}
		d := driver.New(driver.Config{Shard: shard.Config{Shards: 1}})
		d.Start()
		p := shard.NewPartition("t", 0, d.Shard(), ml, shard.SyncPolicy{Mode: shard.SyncNever})
		p.Replica = rep
		require.NoError(t, c.start(p, TopicConfig{Fsync: shard.SyncPolicy{Mode: shard.SyncNever}}))
		nodes[id] = &rvNode{id: id, host: h, rep: rep, drv: d, part: p, log: ml,
			out: outbox.NewOutbox(1<<20, 1, rvFlusher{}), store: store}
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			close(n.rep.c.quit)
			n.host.Stop()
			n.drv.Stop()
			_ = n.log.Close()
		}
	})
	return net, nodes
}

// publishIdem publishes producer id's batch of count records from seq
// through node n and returns its answer (an ack's base offset, or the
// error frame's message).
func (n *rvNode) publishIdem(t *testing.T, corr uint32, id int64, seq int32, count int) (int64, string) {
	t.Helper()
	frame, start := wire.StartFrame(nil, wire.TypeDeliver, 0, 0)
	frame = wire.AppendBatchPrefix(frame, "t", 0)
	off := len(frame)
	var bb wire.BatchBuilder
	bb.Start(frame, id, seq)
	for i := range count {
		bb.Append(int64(i), nil, []byte("v"), nil)
	}
	frame = bb.Finish()
	wire.FinishFrame(frame, start)
	b := storage.NewBuf(len(frame))
	copy(b.B, frame)
	require.NoError(t, n.part.Publish(n.out, corr, b, off))
	n.drv.Wake()
	var all []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n.out.Queued() > 0 {
			p, _ := n.out.Take()
			for _, v := range p.IOV {
				all = append(all, v...)
			}
			n.out.Done(p, 0)
		}
		if f, sz, err := wire.ReadFrame(all, 1<<30); err == nil && sz > 0 {
			if f.Type == wire.TypePublishAck {
				a, err := wire.DecodePublishAck(f.Body)
				require.NoError(t, err)
				return a.BaseOffset, ""
			}
			return -1, string(f.Body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer from node %d", n.id)
		}
		time.Sleep(time.Millisecond)
	}
}

func (n *rvNode) leads() bool { return n.rep.Leads() == nil }

// stored counts the batches of producer id with sequence seq in n's
// committed log.
func (n *rvNode) stored(t *testing.T, id int64, seq int32) int {
	count := 0
	require.NoError(t, n.log.Read(0, 1<<30, func(b wire.Batch) bool {
		if b.ProducerID() == id && b.ProducerSeq() == seq {
			count++
		}
		return true
	}))
	return count
}

// TestReviewIdempotentRetryAfterLeaderChangeStoredOnce: docs/CLUSTER.md
// promises that an idempotent producer's retry of a batch answered
// NOT_LEADER "it may have been stored" is stored once. The leader's shard
// knows a producer's batches from its own proposals and from what its
// group commits (advance, setBase), never from what its log holds
// uncommitted. A new leader holds the old leader's uncommitted entries in
// its log and commits them with its own first entry; a retry that reaches
// it before that commit is unknown to its shard, so it is proposed again,
// and both commit: the batch is stored twice, at two offsets, on every
// replica.
func TestReviewIdempotentRetryAfterLeaderChangeStoredOnce(t *testing.T) {
	net, nodes := startReviewReplicas(t)
	var lead *rvNode
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			if n.leads() {
				lead = n
				return true
			}
		}
		return false
	}, 30*time.Second, 5*time.Millisecond)
	base, errMsg := lead.publishIdem(t, 1, 7, 0, 1)
	require.Empty(t, errMsg)
	require.Equal(t, int64(0), base)
	var followers []*rvNode
	for _, n := range nodes {
		if n != lead {
			followers = append(followers, n)
		}
	}
	last0, _ := lead.store.LastIndex()

	// The followers' answers stop reaching the leader: its next batch
	// (producer 7, seq 1) reaches their logs but never commits, and the
	// leader steps down (CheckQuorum) with it in flight.
	net.set(func() {
		for _, f := range followers {
			net.drop[[2]uint64{f.id, lead.id}] = true
		}
	})
	var answered atomic.Bool
	var firstErr string
	go func() {
		_, firstErr = lead.publishIdem(t, 2, 7, 1, 1)
		answered.Store(true)
	}()
	require.Eventually(t, func() bool {
		for _, f := range followers {
			if l, _ := f.store.LastIndex(); l <= last0 {
				return false
			}
		}
		return true
	}, 30*time.Second, time.Millisecond, "the batch reached both followers' logs")
	require.Eventually(t, answered.Load, 30*time.Second, time.Millisecond, "the leader stepped down")
	require.Contains(t, firstErr, "may have been stored")

	// The old leader is cut off; the followers elect one of themselves,
	// whose first entry is slow to be acknowledged (it will be).
	net.set(func() {
		for _, f := range followers {
			net.drop[[2]uint64{lead.id, f.id}] = true
			net.holdAck[[2]uint64{f.id, followers[0].id}] = true
			net.holdAck[[2]uint64{f.id, followers[1].id}] = true
		}
	})
	var next *rvNode
	require.Eventually(t, func() bool {
		for _, f := range followers {
			if f.leads() {
				next = f
				return true
			}
		}
		return false
	}, 30*time.Second, time.Millisecond)

	// The producer retries seq 1 at the new leader, as told, until it is
	// answered with an ack; the held acknowledgements go through 100 ms
	// after its first attempt.
	go func() {
		time.Sleep(100 * time.Millisecond)
		net.release()
	}()
	var retryBase int64
	for attempt := 0; ; attempt++ {
		base, errMsg := next.publishIdem(t, uint32(10+attempt), 7, 1, 1)
		if errMsg == "" {
			retryBase = base
			break
		}
		require.Less(t, attempt, 1000, "retry answered %q", errMsg)
		time.Sleep(10 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		_, vis := next.log.Bounds()
		return vis > retryBase
	}, 30*time.Second, time.Millisecond)
	require.Equal(t, 1, next.stored(t, 7, 1),
		"producer 7's seq 1 is stored once (the retry was acked at offset %d)", retryBase)
	require.Equal(t, int64(1), retryBase, "the retry is answered with the original's offset")
}

// TestReviewOnePartitionFailingToOpenKeepsTheOthers: in a cluster a
// node opens its replicated topics through registry.create (the applier's
// reconcile), that is build with no load summary: a partition whose log
// cannot be opened fails the whole topic, and build's error path
// (dropParts) Drops every partition opened before it — deleting this
// node's copy of their Raft logs, meta files (term, vote) included. A
// single node leaves such a partition offline and keeps the others; here
// one damaged partition costs the node every other partition's data, and
// the next reconcile opens them again empty: a replica that forgot what it
// acknowledged and whom it voted for, which Raft's safety does not allow
// (docs/CLUSTER.md: "Raft's safety assumes a node never forgets its
// vote").
func TestReviewOnePartitionFailingToOpenKeepsTheOthers(t *testing.T) {
	nodes := startTestCluster(t, 3)
	createReplicated(t, nodes[0], "dp", 2, 3)
	for _, e := range nodes {
		waitTopic(t, e, "dp")
	}
	ctx := testCtx(t)
	for p := range 2 {
		c := dial(t, leaderOf(t, nodes, "dp", p))
		for i := range 5 {
			_, err := c.Publish(ctx, "dp", client.Message{Value: []byte(fmt.Sprint("m", i))}, client.ToPartition(p))
			require.NoError(t, err)
		}
	}
	victim := nodes[2]
	groupDir := func(p int) string {
		pi, ok := victim.cluster.view.Load().Partition("dp", p)
		require.True(t, ok)
		return victim.cfg.DataDir + "/cluster/groups/" + strconv.FormatUint(pi.Group, 10)
	}
	dir0, dir1 := groupDir(0), groupDir(1)
	for _, e := range nodes {
		waitValues(t, e, "dp", 0, []string{"m0", "m1", "m2", "m3", "m4"})
	}
	cfg := victim.cfg
	shutdown(t, victim)
	before, err := os.ReadFile(dir0 + "/" + raftlog.MetaFile)
	require.NoError(t, err)
	require.Contains(t, string(before), `"hard"`)
	// Partition 1's meta file on the victim is damaged.
	require.NoError(t, os.WriteFile(dir1+"/"+raftlog.MetaFile, []byte("{damaged"), 0o600))

	cfg.Addr, cfg.HTTPAddr, cfg.ClusterAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	e, err := New(cfg)
	require.NoError(t, err)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	require.NoError(t, e.Start(sctx))
	cancel()
	t.Cleanup(func() { shutdown(t, e) })
	for i, o := range nodes[:2] {
		require.NoError(t, e.SetPeer(uint64(i+1), o.ClusterAddr().String()))
		require.NoError(t, o.SetPeer(cfg.NodeID, e.ClusterAddr().String()))
	}
	// Wait until the restarted node's controller applied the topic (its
	// applier then tried to open it), and a little more.
	require.Eventually(t, func() bool {
		_, ok := e.cluster.view.Load().Topic("dp")
		return ok
	}, 60*time.Second, 10*time.Millisecond)
	time.Sleep(time.Second)
	after, err := os.ReadFile(dir0 + "/" + raftlog.MetaFile)
	require.NoError(t, err, "partition 0's Raft meta file (hard state) on node %d was deleted", cfg.NodeID)
	require.Equal(t, string(before), string(after)[:min(len(after), len(before))],
		"partition 0's Raft state on node %d was replaced by a fresh one", cfg.NodeID)
}

// TestReviewFailedStartStopsTheClusterSide: Start starts the cluster side
// (transport listener, Raft host, controller group, applier, leader
// balance) before the native listener; when that listener cannot bind,
// Start stops the shards and closes the logs but leaves the cluster side
// running: the node goes on answering its peers and voting in Raft over
// closed logs, and its goroutines and listener leak.
func TestReviewFailedStartStopsTheClusterSide(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = taken.Close() }()
	cfg := DefaultConfig()
	cfg.Addr, cfg.HTTPAddr, cfg.ClusterAddr = taken.Addr().String(), "127.0.0.1:0", "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.NodeID, cfg.Peers = 1, map[uint64]string{1: "127.0.0.1:0", 2: "127.0.0.1:1"}
	cfg.RaftTick = 20 * time.Millisecond
	cfg.Shards, cfg.EventLoops = 1, 1
	e, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Error(t, e.Start(ctx), "the native address is taken")
	require.NotNil(t, e.ClusterAddr())
	conn, err := net.DialTimeout("tcp", e.ClusterAddr().String(), time.Second)
	if err == nil {
		_ = conn.Close()
	}
	require.Error(t, err, "the failed node's cluster listener still accepts connections")
}

// TestReviewControllerDuplicateKeepsFirstOutcome: clusterNode.propose
// proposes a command again every 2 s until it sees its nonce applied, so a
// slow controller (an election) can commit the command twice; the second
// application fails (the topic exists), and propose's comment says "only
// the first outcome is taken". But apply stores each outcome under the
// nonce, the second overwriting the first when both are applied before
// the proposer looks (one pass, or within its 5 ms poll): the client that
// created the topic is told TOPIC_EXISTS (a delete: UNKNOWN_TOPIC).
func TestReviewControllerDuplicateKeepsFirstOutcome(t *testing.T) {
	c := &clusterNode{id: 1, e: &Engine{log: slog.New(slog.NewTextHandler(io.Discard, nil))}, state: meta.New(),
		results: map[string]applied{}}
	entry := func(index uint64, key string, cmd meta.Command) raftpb.Entry {
		var bb wire.BatchBuilder
		bb.Start(nil, wire.NoProducer, -1)
		bb.Append(1, []byte(key), cmd.Encode(), nil)
		return raftpb.Entry{Index: index, Data: bb.Finish()}
	}
	c.apply(entry(1, "n1", meta.AddNode{ID: 1, ClientAddr: "127.0.0.1:1", ClusterAddr: "127.0.0.1:2"}))
	create := meta.CreateTopic{Name: "x", Partitions: 1, Replicas: 1}
	c.apply(entry(2, "1-7-abc", create))
	c.apply(entry(3, "1-7-abc", create)) // the proposer's retry, committed too
	res, ok := c.take("1-7-abc")
	require.True(t, ok)
	require.NoError(t, res.err, "the command was applied (at index 2); its duplicate's refusal is not its outcome")
	require.Equal(t, uint64(2), res.index)
}

// TestReviewShutdownAfterFailedStart: Shutdown of an engine whose Start
// failed (its native address taken) returns instead of panicking, for a
// single node and for a cluster node alike.
func TestReviewShutdownAfterFailedStart(t *testing.T) {
	for _, clustered := range []bool{false, true} {
		t.Run(fmt.Sprintf("cluster=%v", clustered), func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer func() { _ = taken.Close() }()
			cfg := DefaultConfig()
			cfg.Addr, cfg.HTTPAddr = taken.Addr().String(), "127.0.0.1:0"
			cfg.DataDir = t.TempDir()
			cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg.Shards, cfg.EventLoops = 1, 1
			if clustered {
				cfg.ClusterAddr = "127.0.0.1:0"
				cfg.NodeID, cfg.Peers = 1, map[uint64]string{1: "127.0.0.1:0", 2: "127.0.0.1:1"}
				cfg.RaftTick = 20 * time.Millisecond
			}
			e, err := New(cfg)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			require.Error(t, e.Start(ctx), "the native address is taken")
			require.NotPanics(t, func() { _ = e.Shutdown(ctx) })
		})
	}
}

// leaderOfReplicas waits until one of nodes leads, and returns it.
func leaderOfReplicas(t *testing.T, nodes map[uint64]*rvNode) *rvNode {
	t.Helper()
	var lead *rvNode
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			if n.leads() {
				lead = n
				return true
			}
		}
		return false
	}, 30*time.Second, 5*time.Millisecond)
	return lead
}

// errCode decodes the code of an Error frame's body as publishIdem returns it.
func errCode(t *testing.T, body string) wire.Code {
	t.Helper()
	e, err := wire.DecodeError([]byte(body))
	require.NoError(t, err)
	return e.Code
}

// TestReviewSteppedDownIdempotentPublishIsNotLeader: a node that no
// longer leads answers an idempotent producer's batch NOT_LEADER, whatever
// its sequence, so the producer goes to the new leader; the sequence
// check used to come first, and a batch whose predecessors the node had
// not seen (they went to the new leader) was refused OUT_OF_ORDER, which
// the producer takes as final.
func TestReviewSteppedDownIdempotentPublishIsNotLeader(t *testing.T) {
	_, nodes := startReviewReplicas(t)
	lead := leaderOfReplicas(t, nodes)
	_, errMsg := lead.publishIdem(t, 1, 7, 0, 1)
	require.Empty(t, errMsg)
	var to uint64
	for id := range nodes {
		if id != lead.id {
			to = id
			break
		}
	}
	require.NoError(t, lead.host.TransferLeader(100, to))
	require.Eventually(t, func() bool { return nodes[to].leads() && !lead.leads() }, 30*time.Second, time.Millisecond)

	for _, seq := range []int32{1, 3} { // the next batch, and one past a gap
		_, errMsg = lead.publishIdem(t, uint32(10+seq), 7, seq, 1)
		require.NotEmpty(t, errMsg, "seq %d was acked by a node that does not lead", seq)
		require.Equal(t, wire.CodeNotLeader, errCode(t, errMsg), "seq %d: %s", seq, errMsg)
	}
}

// TestReviewNotLeaderNamesOnlyAnotherLeader: a NOT_LEADER refusal names a
// leader only when the node knows another node leads. During an election
// a replica knows no leader, and the metadata's last report may name this
// very node (it led before); a leader that is handing its leadership over
// has Raft drop proposals while it still leads, and a new leader that
// first commits its predecessors' batches turns idempotent ones away:
// each used to name this node, sending the client straight back to it.
func TestReviewNotLeaderNamesOnlyAnotherLeader(t *testing.T) {
	c := &clusterNode{id: 1}
	st := meta.New()
	var idx uint64
	apply := func(cmd meta.Command) {
		idx++
		_, err := st.Apply(idx, cmd.Encode())
		require.NoError(t, err)
	}
	for id := uint64(1); id <= 3; id++ {
		apply(meta.AddNode{ID: id, ClientAddr: "127.0.0.1:" + strconv.Itoa(7070+int(id)), ClusterAddr: "127.0.0.1:" + strconv.Itoa(7400+int(id))})
	}
	apply(meta.CreateTopic{Name: "t", Partitions: 1, Replicas: 3})
	pi, ok := st.Partition("t", 0)
	require.True(t, ok)
	apply(meta.ReportLeader{Group: pi.Group, Leader: 1, Term: 1})
	c.view.Store(st)
	rep := &replica{c: c, group: pi.Group, topic: "t", part: 0, voters: pi.Replicas, local: true}

	named := func(err error) uint64 {
		t.Helper()
		require.Equal(t, wire.CodeNotLeader, wire.CodeOf(err), "%v", err)
		id, _, ok := wire.LeaderOf(err)
		if !ok {
			return 0
		}
		return id
	}
	require.Equal(t, uint64(0), named(rep.Leads()), "an election: no leader known, the metadata names this node")
	require.Equal(t, uint64(0), named(rep.wireError(&cluster.NotLeaderError{Group: pi.Group, Leader: 1})),
		"a proposal dropped during a transfer names this node")
	rep.leader.Store(2)
	require.Equal(t, uint64(2), named(rep.Leads()), "another node leads")
	require.Equal(t, uint64(3), named(rep.wireError(&cluster.NotLeaderError{Group: pi.Group, Leader: 3})))

	// A node without a replica names what the metadata says, never itself.
	far := &replica{c: c, group: pi.Group, topic: "t", part: 0, voters: []uint64{2, 3, 4}}
	require.Equal(t, uint64(0), named(far.Leads()))
}

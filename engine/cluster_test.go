package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/httpapi"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// startTestCluster runs n nodes in this process, every listener on
// 127.0.0.1 port 0; each learns the others' cluster addresses once all
// listen.
func startTestCluster(t *testing.T, n int) []*Engine {
	t.Helper()
	return startTestClusterWith(t, n, nil)
}

// startTestClusterWith is startTestCluster with each node's configuration
// changed by mutate.
func startTestClusterWith(t *testing.T, n int, mutate func(*Config)) []*Engine {
	t.Helper()
	peers := map[uint64]string{}
	for i := 1; i <= n; i++ {
		peers[uint64(i)] = "127.0.0.1:0"
	}
	var nodes []*Engine
	for i := 1; i <= n; i++ {
		cfg := DefaultConfig()
		cfg.Addr, cfg.HTTPAddr, cfg.ClusterAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.DataDir = t.TempDir()
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg.ShutdownTimeout = 5 * time.Second
		cfg.NodeID, cfg.Peers = uint64(i), peers
		cfg.RaftTick = 20 * time.Millisecond
		cfg.Shards, cfg.EventLoops = 1, 1
		if mutate != nil {
			mutate(&cfg)
		}
		e, err := New(cfg)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, e.Start(ctx))
		cancel()
		t.Cleanup(func() { shutdown(t, e) })
		nodes = append(nodes, e)
	}
	for _, e := range nodes {
		for j, o := range nodes {
			if o != e {
				require.NoError(t, e.SetPeer(uint64(j+1), o.ClusterAddr().String()))
			}
		}
	}
	return nodes
}

// createReplicated creates a topic through node e, retrying while the
// cluster forms (nodes still registering, no controller leader yet).
func createReplicated(t *testing.T, e *Engine, name string, partitions, replicas int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := e.createTopicBy(byBroker, name, uint32(partitions), []wire.KV{{Key: ConfigReplicas, Value: strconv.Itoa(replicas)}}, false)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("create %s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderOf waits until some node leads partition p of topic for good, and
// returns it: the partition's preferred leader, or, when that node is not
// among nodes (stopped), any. Nodes hand leadership to the preferred one
// (leaderBalance), so another leader may not last.
func leaderOf(t *testing.T, nodes []*Engine, topic string, p int) *Engine {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range nodes {
			if e.cluster == nil {
				continue
			}
			tp := e.topics.get([]byte(topic))
			if tp == nil || p >= len(tp.Parts) {
				continue
			}
			rep, ok := tp.Parts[p].Replica.(*replica)
			if !ok || rep.Leads() != nil {
				continue
			}
			pi, _ := e.cluster.view.Load().Partition(topic, p)
			preferredUp := slices.ContainsFunc(nodes, func(o *Engine) bool { return o.cfg.NodeID == pi.Replicas[0] })
			if !preferredUp || pi.Replicas[0] == e.cfg.NodeID {
				return e
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no leader for %s/%d", topic, p)
	return nil
}

// TestClusterReplicatesAndFailsOver: a topic created on one node exists on
// all three; publishes to each partition's leader are acked with final
// offsets and stored on every replica; a follower answers NOT_LEADER
// naming the leader; when the leader stops, another takes over and every
// acked message is still there.
func TestClusterReplicatesAndFailsOver(t *testing.T) {
	nodes := startTestCluster(t, 3)
	createReplicated(t, nodes[0], "orders", 1, 3)
	for _, e := range nodes {
		waitTopic(t, e, "orders")
	}
	lead := leaderOf(t, nodes, "orders", 0)
	c := dial(t, lead)
	ctx := testCtx(t)
	var want []string
	for i := range 20 {
		v := fmt.Sprint("m", i)
		ack, err := c.Publish(ctx, "orders", client.Message{Value: []byte(v)}, client.ToPartition(0))
		require.NoError(t, err)
		require.Equal(t, int64(i), ack.Offset)
		want = append(want, v)
	}
	// A follower refuses, naming the leader.
	var follower *Engine
	for _, e := range nodes {
		if e != lead {
			follower = e
			break
		}
	}
	// It names only the leader its Raft group knows: it may not have
	// heard from it yet.
	frep := follower.topics.get([]byte("orders")).Parts[0].Replica.(*replica)
	require.Eventually(t, func() bool { return frep.leader.Load() == lead.cfg.NodeID }, 60*time.Second, 10*time.Millisecond)
	fc := dial(t, follower)
	_, err := fc.Publish(ctx, "orders", client.Message{Value: []byte("x")}, client.ToPartition(0))
	_, addr, ok := wire.LeaderOf(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, lead.Addr().String(), addr)
	// Every replica holds the same messages.
	for _, e := range nodes {
		waitValues(t, e, "orders", 0, want)
	}
	// The admin API's view: three nodes, reachable, and the partition's
	// group on every node with the same leader.
	for _, e := range nodes {
		var rep httpapi.Cluster
		require.Eventually(t, func() bool {
			var ok bool
			rep, ok = (*httpBroker)(e).Cluster()
			if !ok || len(rep.Nodes) != 3 || len(rep.Partitions) != 1 || rep.Partitions[0].Local == nil {
				return false
			}
			for _, n := range rep.Nodes {
				if !n.Reachable {
					return false
				}
			}
			return rep.Partitions[0].Leader == lead.cfg.NodeID
		}, 60*time.Second, 10*time.Millisecond, "%+v", rep)
		require.Equal(t, []uint64{1, 2, 3}, rep.Controller.Voters)
	}
	// The leader stops; another takes over, with everything acked.
	shutdown(t, lead)
	var rest []*Engine
	for _, e := range nodes {
		if e != lead {
			rest = append(rest, e)
		}
	}
	next := leaderOf(t, rest, "orders", 0)
	nc := dial(t, next)
	ack, err := nc.Publish(ctx, "orders", client.Message{Value: []byte("after")}, client.ToPartition(0))
	require.NoError(t, err)
	require.Equal(t, int64(20), ack.Offset)
	want = append(want, "after")
	for _, e := range rest {
		waitValues(t, e, "orders", 0, want)
	}
}

func waitTopic(t *testing.T, e *Engine, name string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for e.topics.get([]byte(name)) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("topic %s never appeared on a node", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitValues waits until e's replica of topic/p holds exactly want,
// visible (committed), in order.
func waitValues(t *testing.T, e *Engine, topic string, p int, want []string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		got = got[:0]
		l := e.topics.get([]byte(topic)).Parts[p].Log
		_ = l.Read(0, 1<<30, func(b wire.Batch) bool {
			it := b.Records()
			var r wire.Record
			for it.Next(&r) {
				got = append(got, string(r.Value))
			}
			return true
		})
		if len(got) >= len(want) {
			require.Equal(t, want, got)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("replica holds %v, want %v", got, want)
}

// TestClusterLeadersSpread: the partitions' leaders settle on their
// preferred nodes, one per node for three partitions; a leader hands its
// partition over on request (the admin API's transfer-leader), and a
// rebalance is accepted.
func TestClusterLeadersSpread(t *testing.T) {
	nodes := startTestCluster(t, 3)
	createReplicated(t, nodes[0], "spread", 3, 3)
	leaders := map[uint64]bool{}
	for p := range 3 {
		lead := leaderOf(t, nodes, "spread", p)
		pi, _ := lead.cluster.view.Load().Partition("spread", p)
		require.Equal(t, pi.Replicas[0], lead.cfg.NodeID, "partition %d led by its preferred node", p)
		leaders[lead.cfg.NodeID] = true
	}
	require.Len(t, leaders, 3, "one partition led by each node")

	lead := leaderOf(t, nodes, "spread", 0)
	var to *Engine
	for _, e := range nodes {
		if e != lead {
			to = e
			break
		}
	}
	follower := (*httpBroker)(to)
	// A follower names only the leader its Raft group knows: it may not
	// have heard from the new one yet.
	toRep := to.topics.get([]byte("spread")).Parts[0].Replica.(*replica)
	require.Eventually(t, func() bool { return toRep.leader.Load() == lead.cfg.NodeID }, 60*time.Second, 10*time.Millisecond)
	_, _, ok := wire.LeaderOf(follower.TransferLeader(httpapi.Origin{}, "spread", 0, to.cfg.NodeID))
	require.True(t, ok, "a follower refuses, naming the leader")
	require.NoError(t, (*httpBroker)(lead).TransferLeader(httpapi.Origin{}, "spread", 0, to.cfg.NodeID))
	// It moves, and stays: the new leader is now the preferred one.
	require.Equal(t, to, leaderOf(t, nodes, "spread", 0))
	require.Error(t, (*httpBroker)(lead).TransferLeader(httpapi.Origin{}, "spread", 0, 99), "not a replica")

	// Over HTTP: the view, a transfer at a follower (421, naming the
	// leader), and a rebalance.
	a := newAdmin(t, nodes[2])
	var view httpapi.Cluster
	a.json("GET", "/api/v1/cluster", "", 200, &view)
	require.Equal(t, uint64(3), view.NodeID)
	require.Len(t, view.Partitions, 3)
	lead0 := leaderOf(t, nodes, "spread", 0)
	other := nodes[0]
	if other == lead0 {
		other = nodes[1]
	}
	newAdmin(t, other).fails("POST", "/api/v1/cluster/transfer-leader",
		fmt.Sprintf(`{"topic":"spread","partition":0,"to":%d}`, other.cfg.NodeID), 421, "not_leader", "leader")
	a.json("POST", "/api/v1/cluster/rebalance", "{}", 202, nil)

	// A config change through one node reaches every node; a bad one is
	// refused before it is proposed.
	_, err := nodes[1].updateTopicBy(byBroker, "spread", []wire.KV{{Key: ConfigMaxSubscribers, Value: "7"},
		{Key: ConfigFsync, Value: "never"}})
	require.NoError(t, err)
	for _, e := range nodes {
		require.Eventually(t, func() bool {
			tc := e.topics.get([]byte("spread")).Config()
			return tc.MaxSubscribers == 7 && tc.Fsync.Mode == shard.SyncNever
		}, 60*time.Second, 5*time.Millisecond, "node %d", e.cfg.NodeID)
	}
	_, err = nodes[0].updateTopicBy(byBroker, "spread", []wire.KV{{Key: ConfigMaxSubscribers, Value: "-1"}})
	require.ErrorIs(t, err, wire.ErrInvalidArgument)
	_, err = nodes[0].updateTopicBy(byBroker, "spread", []wire.KV{{Key: ConfigReplicas, Value: "1"}})
	require.ErrorIs(t, err, wire.ErrInvalidArgument)
	single := startBroker(t, nil)
	newAdmin(t, single).fails("GET", "/api/v1/cluster", "", 404, "not_clustered", "single node")
}

// TestClusterShutdownHandsOverToALiveReplica: a leader that stops hands
// its partitions over to a replica that is up, not to the first other
// voter of the partition when that one is down. Here the first is down
// and the third node, the only one left, can win no election on its own:
// it leads (its term moves on) only if the stopping leader hands over to
// it and votes for it.
func TestClusterShutdownHandsOverToALiveReplica(t *testing.T) {
	nodes := startTestCluster(t, 3)
	createReplicated(t, nodes[0], "ho", 1, 3)
	for _, e := range nodes {
		waitTopic(t, e, "ho")
	}
	lead := leaderOf(t, nodes, "ho", 0)
	rep := lead.topics.get([]byte("ho")).Parts[0].Replica.(*replica)
	byID := map[uint64]*Engine{}
	for _, e := range nodes {
		byID[e.cfg.NodeID] = e
	}
	var first, last uint64 // the voter the old pick went to, and the other one
	for _, id := range rep.voters {
		if id != lead.cfg.NodeID {
			if first == 0 {
				first = id
			} else {
				last = id
			}
		}
	}
	require.NotZero(t, last)
	survivor := byID[last].topics.get([]byte("ho")).Parts[0].Replica.(*replica)
	shutdown(t, byID[first])
	require.Eventually(t, func() bool { return !lead.cluster.host.Reachable(first) }, 60*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return rep.Leads() == nil }, 60*time.Second, 10*time.Millisecond,
		"the leader kept its leadership with one follower")
	st, err := byID[last].cluster.host.Status(survivor.group)
	require.NoError(t, err)
	term := st.Term

	shutdown(t, lead)
	require.Eventually(t, func() bool {
		st, err := byID[last].cluster.host.Status(survivor.group)
		return err == nil && st.Term > term
	}, 30*time.Second, 10*time.Millisecond, "the leadership was not handed to the live replica")
}

// TestClusterSubscriptionEndsWhenLeadershipMoves: a node that loses a
// partition's leadership while it keeps running used to stop feeding the
// partition's subscribers without a word. A subscriber that asked to be
// told (wire.FlagEndNotice) gets its Subscribe's correlation id answered
// again, with NOT_LEADER, and the subscription is gone: the connection may
// subscribe to the partition again (refused NOT_LEADER, not
// ALREADY_SUBSCRIBED), and an Unsubscribe finds nothing.
func TestClusterSubscriptionEndsWhenLeadershipMoves(t *testing.T) {
	nodes := startTestCluster(t, 3)
	createReplicated(t, nodes[0], "moving", 1, 3)
	for _, e := range nodes {
		waitTopic(t, e, "moving")
	}
	c := dialCluster(t, clusterAddrs(nodes, 0))
	ctx := testCtx(t)
	for i := range 3 {
		_, err := c.Publish(ctx, "moving", client.Message{Value: fmt.Appendf(nil, "m%d", i)}, client.ToPartition(0))
		require.NoError(t, err)
	}
	// On a loaded machine the leadership may move by itself (an election)
	// between finding the leader and asking it to transfer: then the test
	// starts again at the new leader.
	for attempt := 1; !subscriptionEndsOnTransfer(t, nodes); attempt++ {
		require.Less(t, attempt, 5, "the leadership kept moving by itself")
	}
}

// subscriptionEndsOnTransfer is one try of
// TestClusterSubscriptionEndsWhenLeadershipMoves; false when the leader
// had lost its leadership before it was asked to transfer it.
func subscriptionEndsOnTransfer(t *testing.T, nodes []*Engine) bool {
	lead := leaderOf(t, nodes, "moving", 0)
	next := nodes[(indexOf(nodes, lead)+1)%len(nodes)]
	r := dialRaw(t, lead)
	defer func() { _ = r.c.Close() }()
	r.sendFrame(wire.TypeHello, 1, (&wire.Hello{MinVersion: 3, MaxVersion: 3, ClientName: "raw"}).Append(nil))
	require.Equal(t, wire.TypeHelloOK, r.next().Type)
	sub := (&wire.Subscribe{Topic: "moving", Partition: 0, Start: wire.Start{Kind: wire.StartEarliest}}).Append(nil)
	r.send(append(wire.AppendHeader(nil, wire.TypeSubscribe, wire.FlagEndNotice, 5, len(sub)), sub...))
	if f := r.next(); f.Type == wire.TypeError {
		e, err := wire.DecodeError(f.Body)
		require.NoError(t, err)
		require.Equal(t, wire.CodeNotLeader, e.Code, "%v", e)
		t.Logf("the leadership moved before the subscribe: %v", e)
		return false
	} else if f.Type != wire.TypeSubscribeOK {
		t.Fatalf("subscribe answered %v", f.Type)
	}
	delivered := 0
	for delivered < 3 {
		f := r.next()
		require.Equal(t, wire.TypeDeliver, f.Type)
		v, err := wire.DecodeBatchView(f.Body)
		require.NoError(t, err)
		delivered += v.Batch.Count()
	}

	if err := lead.cluster.transferLeader("moving", 0, next.cfg.NodeID); err != nil {
		var we *wire.Error
		require.True(t, errors.As(err, &we) && we.Code == wire.CodeNotLeader, "transfer: %v", err)
		t.Logf("the leadership moved before the transfer: %v", err)
		return false
	}
	var end wire.Frame
	for {
		f, err := r.read(60 * time.Second)
		require.NoError(t, err, "the subscription was not ended")
		if f.Type == wire.TypeError {
			end = f
			break
		}
		require.Equal(t, wire.TypeDeliver, f.Type)
	}
	require.Equal(t, uint32(5), end.Corr, "the end answers the Subscribe's correlation id")
	e, err := wire.DecodeError(end.Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeNotLeader, e.Code, "%v", e)
	if _, addr, ok := wire.LeaderOf(e); ok {
		require.Equal(t, next.Addr().String(), addr, "the end names a node that does not lead")
	}

	r.sendFrame(wire.TypeSubscribe, 6, sub)
	f := r.next()
	require.Equal(t, uint32(6), f.Corr)
	require.Equal(t, wire.TypeError, f.Type)
	e, err = wire.DecodeError(f.Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeNotLeader, e.Code, "subscribing again: %v", e)
	r.sendFrame(wire.TypeUnsubscribe, 7, sub)
	f = r.next()
	require.Equal(t, uint32(7), f.Corr)
	e, err = wire.DecodeError(f.Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeNotSubscribed, e.Code, "%v", e)
	return true
}

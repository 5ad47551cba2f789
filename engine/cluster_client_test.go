package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The cluster client (client.Cluster) against three brokers in this
// process: publishes, subscriptions and fetches go to each partition's
// leader, and follow it when its node stops.

// clusterAddrs is the nodes' native addresses, first first.
func clusterAddrs(nodes []*Engine, first int) string {
	addrs := []string{nodes[first].Addr().String()}
	for i, e := range nodes {
		if i != first {
			addrs = append(addrs, e.Addr().String())
		}
	}
	return strings.Join(addrs, ",")
}

// dialCluster connects a cluster client through the address list (the
// first node first), closed when the test ends.
func dialCluster(t *testing.T, addrs string, opts ...client.Option) *client.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.DialCluster(ctx, addrs, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// startReplicatedTopic starts three nodes and a topic of partitions
// partitions on all three, and waits until each partition has a leader.
func startReplicatedTopic(t *testing.T, topic string, partitions int) []*Engine {
	t.Helper()
	nodes := startTestCluster(t, 3)
	createReplicated(t, nodes[0], topic, partitions, 3)
	for _, e := range nodes {
		waitTopic(t, e, topic)
	}
	for p := range partitions {
		leaderOf(t, nodes, topic, p)
	}
	return nodes
}

// record is a stored message: its offset and value.
type record struct {
	off int64
	val string
}

// committed returns what e's replica of topic/p holds up to its visible
// end.
func committed(t *testing.T, e *Engine, topic string, p int) []record {
	t.Helper()
	part := e.topics.get([]byte(topic)).Parts[p]
	end := part.EndOffset()
	var out []record
	err := part.Log.Read(0, 1<<30, func(b wire.Batch) bool {
		it := b.Records()
		var r wire.Record
		for it.Next(&r) {
			if r.Offset < end {
				out = append(out, record{r.Offset, string(r.Value)})
			}
		}
		return true
	})
	require.NoError(t, err)
	return out
}

// waitCommitted waits until each node's replica of topic/p shows at least
// n records, and returns the first node's; every node must hold the same.
func waitCommitted(t *testing.T, nodes []*Engine, topic string, p, n int) []record {
	t.Helper()
	var got [][]record
	require.Eventually(t, func() bool {
		got = got[:0]
		for _, e := range nodes {
			recs := committed(t, e, topic, p)
			if len(recs) < n || len(got) > 0 && len(recs) != len(got[0]) {
				return false // publishing is over: the replicas converge
			}
			got = append(got, recs)
		}
		return true
	}, 60*time.Second, 10*time.Millisecond, "partition %d never held %d records on every replica", p, n)
	for _, recs := range got[1:] {
		require.Equal(t, got[0], recs, "replicas of partition %d differ", p)
	}
	return got[0]
}

// TestClusterClientRoutesToLeaders: a cluster client dialled at one node
// (with the others' addresses) publishes to every partition through its
// leader; keyed messages land in their key's partition; Leader names the
// node that leads; a fetch and a subscription read from the leaders.
func TestClusterClientRoutesToLeaders(t *testing.T) {
	const topic, partitions = "routed", 3
	nodes := startReplicatedTopic(t, topic, partitions)
	cl := dialCluster(t, clusterAddrs(nodes, 0))
	ctx := testCtx(t)

	for p := range partitions {
		addr, err := cl.Leader(ctx, topic, p)
		require.NoError(t, err)
		require.Equal(t, leaderOf(t, nodes, topic, p).Addr().String(), addr, "partition %d", p)
	}
	want := map[int][]string{}
	for i := range 30 {
		v := fmt.Sprint("explicit-", i)
		ack, err := cl.Publish(ctx, topic, client.Message{Value: []byte(v)}, client.ToPartition(i%partitions))
		require.NoError(t, err)
		require.Equal(t, int32(i%partitions), ack.Partition)
		require.Equal(t, int64(len(want[i%partitions])), ack.Offset)
		want[i%partitions] = append(want[i%partitions], v)
	}
	for i := range 30 {
		key := fmt.Sprint("user-", i)
		v := "keyed-" + key
		ack, err := cl.Publish(ctx, topic, client.Message{Key: []byte(key), Value: []byte(v)})
		require.NoError(t, err)
		p := client.KeyPartition([]byte(key), partitions)
		require.Equal(t, int32(p), ack.Partition, "key %s", key)
		require.Equal(t, int64(len(want[p])), ack.Offset)
		want[p] = append(want[p], v)
	}
	for i := range 300 {
		require.NoError(t, cl.PublishAsync(ctx, topic, client.Message{Value: []byte(fmt.Sprint("unkeyed-", i))}))
	}
	require.NoError(t, cl.Flush(ctx))
	for p := range partitions {
		recs := waitCommitted(t, nodes, topic, p, len(want[p]))
		for i, v := range want[p] {
			require.Equal(t, record{int64(i), v}, recs[i])
		}
	}

	// A fetch and a subscription of every partition, from the start.
	f, err := cl.Fetch(ctx, topic, 1, client.Earliest)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(f.Messages), len(want[1]))
	require.Equal(t, want[1][0], string(f.Messages[0].Value))
	r := newPartitionLog()
	sub, err := cl.Subscribe(ctx, topic, r.handle, client.StartAt(client.Earliest))
	require.NoError(t, err)
	for p := range partitions {
		r.awaitLog(t, p, committed(t, nodes[0], topic, p))
	}
	_, err = cl.Subscribe(ctx, topic, r.handle, client.FromPartition(1))
	require.ErrorIs(t, err, client.ErrAlreadySubscribed)
	require.NoError(t, sub.Unsubscribe(ctx))
	<-sub.Done()
}

// partitionLog is what a subscription received, by partition, in order.
type partitionLog struct {
	mu    sync.Mutex
	parts map[int32][]record
	busy  bool // a handler call runs: calls must never overlap
	err   error
}

func newPartitionLog() *partitionLog { return &partitionLog{parts: map[int32][]record{}} }

func (l *partitionLog) handle(d *client.Delivery) {
	l.mu.Lock()
	if l.busy && l.err == nil {
		l.err = errors.New("two handler calls at once")
	}
	l.busy = true
	l.parts[d.Partition] = append(l.parts[d.Partition], record{d.Offset, string(d.Value)})
	l.busy = false
	l.mu.Unlock()
}

// awaitLog waits until partition p's deliveries are want, exactly.
func (l *partitionLog) awaitLog(t *testing.T, p int, want []record) {
	t.Helper()
	var got []record
	if !assert.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		got = append(got[:0], l.parts[int32(p)]...)
		return len(got) >= len(want)
	}, 60*time.Second, 10*time.Millisecond) {
		// Counted now: a message's arguments are taken when it is built.
		l.mu.Lock()
		n := len(l.parts[int32(p)])
		l.mu.Unlock()
		t.Fatalf("partition %d: %d of %d delivered", p, n, len(want))
	}
	require.Equal(t, want, got[:len(want)], "partition %d delivered out of order or twice", p)
	require.Len(t, got, len(want), "partition %d delivered more than its log holds", p)
	l.mu.Lock()
	defer l.mu.Unlock()
	require.NoError(t, l.err)
}

// TestClusterClientFollowsLeaderThatStops: publishers keep publishing while
// the node leading partition 0 shuts down. Every acknowledged message is
// on both surviving replicas at its acknowledged offset; an idempotent
// client's messages are all acknowledged and stored once; a plain
// client's fail only when they may have been stored (and then are stored
// at most once). A subscription to every partition, started before, sees
// each partition's log in order, each message once, across the change.
func TestClusterClientFollowsLeaderThatStops(t *testing.T) {
	for _, idem := range []bool{true, false} {
		t.Run(fmt.Sprint("idempotent=", idem), func(t *testing.T) { testLeaderStops(t, idem) })
	}
}

func testLeaderStops(t *testing.T, idem bool) {
	const topic, partitions, publishers, perPublisher = "failover", 3, 8, 150
	nodes := startReplicatedTopic(t, topic, partitions)
	lead := leaderOf(t, nodes, topic, 0)
	opts := []client.Option{client.WithErrorHandler(func(err error) { t.Logf("client: %v", err) })}
	if idem {
		opts = append(opts, client.WithIdempotence())
	}
	// Dialled through the node that is about to stop, first.
	cl := dialCluster(t, clusterAddrs(nodes, indexOf(nodes, lead)), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	r := newPartitionLog()
	sub, err := cl.Subscribe(ctx, topic, r.handle, client.StartAt(client.Earliest))
	require.NoError(t, err)

	type outcome struct {
		key, val string
		ack      client.Ack
		err      error
	}
	results := make(chan outcome, publishers*perPublisher)
	// The leader stops once a third of the messages are acknowledged.
	var n atomic.Int32
	third := make(chan struct{})
	var wg sync.WaitGroup
	for g := range publishers {
		wg.Go(func() {
			for i := range perPublisher {
				key := fmt.Sprintf("k-%d-%d", g, i)
				val := "v-" + key
				ack, err := cl.Publish(ctx, topic, client.Message{Key: []byte(key), Value: []byte(val)})
				results <- outcome{key, val, ack, err}
				if err == nil && n.Add(1) == publishers*perPublisher/3 {
					close(third)
				}
			}
		})
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-third:
		case <-ctx.Done():
		}
		shutdown(t, lead)
	}()
	wg.Wait()
	<-stopped
	close(results)

	var rest []*Engine
	for _, e := range nodes {
		if e != lead {
			rest = append(rest, e)
		}
	}
	byPart := map[int32]map[int64]string{}
	var failed []outcome
	for o := range results {
		if o.err != nil {
			failed = append(failed, o)
			continue
		}
		p := int32(client.KeyPartition([]byte(o.key), partitions))
		require.Equal(t, p, o.ack.Partition, "key %s", o.key)
		if byPart[p] == nil {
			byPart[p] = map[int64]string{}
		}
		require.NotContains(t, byPart[p], o.ack.Offset, "two messages acked at one offset")
		byPart[p][o.ack.Offset] = o.val
	}
	if idem {
		require.Empty(t, failed, "an idempotent cluster client lost messages")
	}
	for _, o := range failed {
		require.True(t, client.MayHaveBeenStored(o.err), "%s failed as not stored, yet was not re-routed: %v", o.key, o.err)
	}
	seen := map[string]int{}
	for p := range partitions {
		var maxOff int64 = -1
		for off := range byPart[int32(p)] {
			maxOff = max(maxOff, off)
		}
		recs := waitCommitted(t, rest, topic, p, int(maxOff+1))
		for off, v := range byPart[int32(p)] {
			require.Equal(t, v, recs[off].val, "partition %d offset %d", p, off)
		}
		for _, rec := range recs {
			seen[rec.val]++
		}
		r.awaitLog(t, p, recs)
	}
	for v, n := range seen {
		require.Equal(t, 1, n, "%s stored %d times", v, n)
	}
	if idem {
		require.Len(t, seen, publishers*perPublisher)
	}
	require.NoError(t, sub.Unsubscribe(ctx))
	t.Logf("acked %d, failed %d (may have been stored), stored %d; batches re-routed %d",
		publishers*perPublisher-len(failed), len(failed), len(seen), cl.Rerouted())
}

func indexOf(nodes []*Engine, e *Engine) int {
	for i, n := range nodes {
		if n == e {
			return i
		}
	}
	return -1
}

// TestClusterClientKeepsOrderAcrossLeaderChange: an asynchronous producer
// with many batches in flight to one partition while its leader shuts
// down. Idempotent, the partition ends up holding every message once, in
// publish order: the batches in flight at the old leader went on to the
// new one ahead of the later ones. Plain, what is stored is in order with
// no duplicate, and only messages reported as possibly stored are missing.
func TestClusterClientKeepsOrderAcrossLeaderChange(t *testing.T) {
	for _, idem := range []bool{true, false} {
		t.Run(fmt.Sprint("idempotent=", idem), func(t *testing.T) { testOrderAcrossChange(t, idem) })
	}
}

func testOrderAcrossChange(t *testing.T, idem bool) {
	const topic, total = "ordered", 20000
	nodes := startReplicatedTopic(t, topic, 1)
	lead := leaderOf(t, nodes, topic, 0)
	var acked atomic.Int64
	quarter := make(chan struct{})
	var emu sync.Mutex
	var errs []error
	opts := []client.Option{client.WithBatchBytes(4 << 10), // many small batches: several in flight
		client.WithAckHandler(func(a client.BatchAck) {
			if n := acked.Add(int64(a.Count)); n-int64(a.Count) < total/4 && n >= total/4 {
				close(quarter)
			}
		}),
		client.WithStateHandler(func(client.State, error) {}), // a node lost: not a failure
		client.WithErrorHandler(func(err error) {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
		})}
	if idem {
		opts = append(opts, client.WithIdempotence())
	}
	cl := dialCluster(t, clusterAddrs(nodes, 0), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-quarter:
		case <-ctx.Done():
		}
		shutdown(t, lead)
	}()
	for i := range total {
		require.NoError(t, cl.PublishAsync(ctx, topic, client.Message{Value: fmt.Appendf(nil, "%06d", i)}, client.ToPartition(0)))
	}
	flushErr := cl.Flush(ctx)
	<-stopped
	var rest []*Engine
	for _, e := range nodes {
		if e != lead {
			rest = append(rest, e)
		}
	}
	emu.Lock()
	defer emu.Unlock()
	if idem {
		require.NoError(t, flushErr)
		require.Empty(t, errs)
		recs := waitCommitted(t, rest, topic, 0, total)
		require.Len(t, recs, total, "messages stored twice")
		for i, r := range recs {
			require.Equal(t, record{int64(i), fmt.Sprintf("%06d", i)}, r, "the partition out of publish order")
		}
	} else {
		if flushErr != nil {
			require.True(t, client.MayHaveBeenStored(flushErr), "%v", flushErr)
		}
		for _, err := range errs {
			require.True(t, client.MayHaveBeenStored(err), "%v", err)
		}
		recs := waitCommitted(t, rest, topic, 0, int(acked.Load()))
		last := -1
		for _, r := range recs {
			var v int
			_, err := fmt.Sscanf(r.val, "%d", &v)
			require.NoError(t, err)
			require.Greater(t, v, last, "stored out of order or twice at offset %d", r.off)
			last = v
		}
		if len(errs) == 0 && flushErr == nil {
			require.Len(t, recs, total)
		}
	}
	t.Logf("acked %d of %d, errors %d, batches re-routed %d", acked.Load(), total, len(errs), cl.Rerouted())
}

// TestClusterClientFollowsLeadershipTransfer: the leadership of a
// partition moves to another node while every node keeps running. The
// producer's batches are refused NOT_LEADER by the old leader, naming the
// new one, and go there in order; the subscription, which the old leader
// ends with NOT_LEADER, goes on at the new leader from where it was,
// every message once, in order.
func TestClusterClientFollowsLeadershipTransfer(t *testing.T) {
	const topic, total = "transferred", 6000
	nodes := startReplicatedTopic(t, topic, 1)
	lead := leaderOf(t, nodes, topic, 0)
	var acked atomic.Int64
	third := make(chan struct{})
	var emu sync.Mutex
	var errs []error
	cl := dialCluster(t, clusterAddrs(nodes, 0), client.WithIdempotence(), client.WithBatchBytes(4<<10),
		client.WithAckHandler(func(a client.BatchAck) {
			if n := acked.Add(int64(a.Count)); n-int64(a.Count) < total/3 && n >= total/3 {
				close(third)
			}
		}),
		client.WithErrorHandler(func(err error) {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newPartitionLog()
	sub, err := cl.Subscribe(ctx, topic, r.handle, client.StartAt(client.Earliest))
	require.NoError(t, err)

	next := nodes[(indexOf(nodes, lead)+1)%len(nodes)]
	moved := make(chan struct{})
	go func() {
		defer close(moved)
		select {
		case <-third:
		case <-ctx.Done():
			return
		}
		// As the admin API does: next becomes the preferred leader too, so
		// the leader balance keeps it there.
		if err := lead.cluster.transferLeader(topic, 0, next.cfg.NodeID); err != nil {
			t.Errorf("transfer: %v", err)
		}
	}()
	for i := range total {
		require.NoError(t, cl.PublishAsync(ctx, topic, client.Message{Value: fmt.Appendf(nil, "%06d", i)}, client.ToPartition(0)))
	}
	require.NoError(t, cl.Flush(ctx))
	<-moved
	require.Equal(t, next, leaderOf(t, nodes, topic, 0), "the leadership did not move")
	// The old leader may not yet have heard of the election it lost (the
	// new leader needed only the third node's vote): the client settles on
	// the new leader once every node knows.
	for {
		addr, err := cl.Leader(ctx, topic, 0)
		require.NoError(t, err)
		if addr == next.Addr().String() {
			break
		}
		require.NoError(t, ctx.Err(), "the client names %s as the leader, not %s", addr, next.Addr())
		time.Sleep(10 * time.Millisecond)
	}
	recs := waitCommitted(t, nodes, topic, 0, total)
	require.Len(t, recs, total, "messages stored twice")
	for i, rec := range recs {
		require.Equal(t, record{int64(i), fmt.Sprintf("%06d", i)}, rec, "the partition out of publish order")
	}
	r.awaitLog(t, 0, recs)
	require.NoError(t, sub.Unsubscribe(ctx))
	emu.Lock()
	defer emu.Unlock()
	require.Empty(t, errs)
	t.Logf("batches re-routed %d", cl.Rerouted())
}

// TestClusterClientThroughRepeatedTransfers: the partition's leadership
// moves six times, each after another few thousand acknowledgements,
// under an idempotent asynchronous producer: nothing fails, and the
// partition holds every message once, in publish order.
func TestClusterClientThroughRepeatedTransfers(t *testing.T) {
	const topic, total, every = "churn", 28000, 4000
	nodes := startReplicatedTopic(t, topic, 1)
	var acked atomic.Int64
	due := make(chan struct{}, total/every)
	var emu sync.Mutex
	var errs []error
	cl := dialCluster(t, clusterAddrs(nodes, 0), client.WithIdempotence(), client.WithBatchBytes(2<<10),
		client.WithAckHandler(func(a client.BatchAck) {
			n := acked.Add(int64(a.Count))
			if (n-int64(a.Count))/every < n/every && n < total {
				due <- struct{}{}
			}
		}),
		client.WithErrorHandler(func(err error) {
			emu.Lock()
			errs = append(errs, err)
			emu.Unlock()
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	moved := make(chan int)
	go func() {
		n := 0
		defer func() { moved <- n }()
		for n < total/every-1 {
			select {
			case <-due:
			case <-ctx.Done():
				return
			}
			lead := leaderOf(t, nodes, topic, 0)
			next := nodes[(indexOf(nodes, lead)+1)%len(nodes)]
			rep := lead.topics.get([]byte(topic)).Parts[0].Replica.(*replica)
			if lead.cluster.host.TransferLeader(rep.group, uint64(indexOf(nodes, next)+1)) == nil {
				n++
			}
		}
	}()
	for i := range total {
		require.NoError(t, cl.PublishAsync(ctx, topic, client.Message{Value: fmt.Appendf(nil, "%06d", i)}, client.ToPartition(0)))
	}
	require.NoError(t, cl.Flush(ctx))
	cancel()
	transfers := <-moved
	recs := waitCommitted(t, nodes, topic, 0, total)
	require.Len(t, recs, total, "messages stored twice")
	for i, rec := range recs {
		require.Equal(t, record{int64(i), fmt.Sprintf("%06d", i)}, rec, "the partition out of publish order")
	}
	emu.Lock()
	defer emu.Unlock()
	require.Empty(t, errs)
	t.Logf("transfers %d, batches re-routed %d", transfers, cl.Rerouted())
}

// TestClusterClientSubscriptionEndedByOldLeader: the partition's
// leadership moves twice while every node keeps running, and the
// subscribing cluster client publishes nothing (so no refusal of its own
// tells it of the change, and it does not poll). Each old leader ends the
// subscription with NOT_LEADER, and the client subscribes again at the new
// leader from where it was: every message once, in order.
func TestClusterClientSubscriptionEndedByOldLeader(t *testing.T) {
	const topic, total = "handed", 6000
	nodes := startReplicatedTopic(t, topic, 1)
	var acked atomic.Int64
	due := make(chan struct{}, 2)
	var emu sync.Mutex
	var errs []error
	onErr := client.WithErrorHandler(func(err error) {
		emu.Lock()
		errs = append(errs, err)
		emu.Unlock()
	})
	prod := dialCluster(t, clusterAddrs(nodes, 0), client.WithIdempotence(), client.WithBatchBytes(4<<10), onErr,
		client.WithAckHandler(func(a client.BatchAck) {
			n := acked.Add(int64(a.Count))
			for _, at := range []int64{total / 3, 2 * total / 3} {
				if n-int64(a.Count) < at && n >= at {
					due <- struct{}{}
				}
			}
		}))
	subs := dialCluster(t, clusterAddrs(nodes, 1), onErr)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	r := newPartitionLog()
	sub, err := subs.Subscribe(ctx, topic, r.handle, client.StartAt(client.Earliest))
	require.NoError(t, err)

	moved := make(chan struct{})
	go func() {
		defer close(moved)
		for range 2 {
			select {
			case <-due:
			case <-ctx.Done():
				return
			}
			lead := leaderOf(t, nodes, topic, 0)
			next := nodes[(indexOf(nodes, lead)+1)%len(nodes)]
			// As the admin API does: next becomes the preferred leader
			// too, so the leader balance keeps it there.
			if err := lead.cluster.transferLeader(topic, 0, next.cfg.NodeID); err != nil {
				t.Errorf("transfer: %v", err)
				return
			}
			rep := next.topics.get([]byte(topic)).Parts[0].Replica.(*replica)
			for rep.Leads() != nil {
				if ctx.Err() != nil {
					t.Errorf("node %d did not take the leadership", next.cfg.NodeID)
					return
				}
				time.Sleep(10 * time.Millisecond) // polling a condition, as require.Eventually does
			}
		}
	}()
	for i := range total {
		require.NoError(t, prod.PublishAsync(ctx, topic, client.Message{Value: fmt.Appendf(nil, "%06d", i)}, client.ToPartition(0)))
	}
	require.NoError(t, prod.Flush(ctx))
	<-moved
	recs := waitCommitted(t, nodes, topic, 0, total)
	require.Len(t, recs, total, "messages stored twice")
	r.awaitLog(t, 0, recs)
	require.NoError(t, sub.Err())
	require.NoError(t, sub.Unsubscribe(ctx))
	emu.Lock()
	defer emu.Unlock()
	require.Empty(t, errs)
}

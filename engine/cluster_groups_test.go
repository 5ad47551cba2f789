package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Consumer groups in a cluster (groupsrepl.go): the committed offsets are
// in the replicated offsets topic, and a group's coordinator is the
// leader of its partition of that topic.

// coordinatorOf waits until one of nodes coordinates group for good (the
// preferred leader of the group's offsets partition, when it is among
// nodes: leadership goes back to it) and returns it.
func coordinatorOf(t *testing.T, nodes []*Engine, group string) *Engine {
	t.Helper()
	for _, e := range nodes {
		_ = e.grepl.Coordinates(group) // the first ask creates the offsets topic
	}
	lead := leaderOf(t, nodes, OffsetsTopic, OffsetsPartition(group, offsetsPartitions))
	require.Eventually(t, func() bool { return lead.grepl.Coordinates(group) == nil }, 60*time.Second,
		5*time.Millisecond, "node %d leads the offsets partition of %s but does not coordinate it", lead.cfg.NodeID, group)
	return lead
}

// groupLog records what a group consumer handled, and when.
type groupLog struct {
	mu    sync.Mutex
	seen  map[string]int // value → times handled
	after []delivery     // handled since mark
	mark  bool
	cond  *sync.Cond
}

type delivery struct {
	p   int32
	off int64
}

func newGroupLog() *groupLog {
	l := &groupLog{seen: map[string]int{}}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *groupLog) handle(m *client.GroupMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[string(m.Value)]++
	if l.mark {
		l.after = append(l.after, delivery{m.Partition, m.Offset})
	}
	l.cond.Broadcast()
	return nil
}

// await waits until every value of want was handled.
func (l *groupLog) await(t *testing.T, want []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		missing := 0
		for _, v := range want {
			if l.seen[v] == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d messages never handled", missing, len(want))
		}
		l.cond.Wait()
	}
}

// publishKeyed publishes n messages with keys prefix-i through cl and
// returns their values.
func publishKeyed(t *testing.T, cl *client.Cluster, topic, prefix string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var vals []string
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		_, err := cl.Publish(ctx, topic, client.Message{Key: []byte(key), Value: []byte("v-" + key)})
		require.NoError(t, err)
		vals = append(vals, "v-"+key)
	}
	return vals
}

// TestClusterGroupSurvivesCoordinatorLoss: a group consumes and commits
// through the cluster; its coordinator's node stops (gracefully), or
// vanishes without handing anything over (its cluster links cut first,
// as a killed process's are), or keeps running but hands the leadership
// of the group's offsets partition to another node; the consumer joins
// again at the new coordinator and carries on from the committed offsets:
// nothing it committed is delivered again, everything published is
// delivered, and the committed offsets never go back.
func TestClusterGroupSurvivesCoordinatorLoss(t *testing.T) {
	for _, how := range []string{"stop", "kill", "transfer"} {
		t.Run(how, func(t *testing.T) { testGroupCoordinatorLoss(t, how, client.AckOffset) })
	}
	// In message mode the committed offset is the ack floor, which the
	// coordinator records as acks move it.
	t.Run("kill-message-mode", func(t *testing.T) { testGroupCoordinatorLoss(t, "kill", client.AckMessage) })
}

func testGroupCoordinatorLoss(t *testing.T, how string, mode client.AckMode) {
	const topic, group, partitions = "orders", "billing", 3
	nodes := startReplicatedTopic(t, topic, partitions)
	coord := coordinatorOf(t, nodes, group)
	cl := dialCluster(t, clusterAddrs(nodes, indexOf(nodes, coord)),
		client.WithErrorHandler(func(err error) { t.Logf("client: %v", err) }))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l := newGroupLog()
	gc, err := cl.JoinGroup(ctx, client.GroupConfig{Group: group, Topic: topic, Start: client.Earliest,
		Handler: l.handle, AutoCommitInterval: -1, Mode: mode})
	require.NoError(t, err)
	defer func() { _ = gc.Close() }()

	first := publishKeyed(t, cl, topic, "a", 60)
	l.await(t, first)
	commitAll(t, ctx, gc, mode, nodes, group, len(first))
	before := describeGroup(t, coord, group)
	var total int64
	for _, p := range before.Partitions {
		total += p.Committed
	}
	require.Equal(t, int64(len(first)), total, "committed offsets before the loss: %+v", before.Partitions)

	// A client's write to the offsets topic is no group's record: the new
	// coordinator's replay skips it.
	k := OffsetsPartition(group, offsetsPartitions)
	_, err = cl.Publish(ctx, OffsetsTopic, client.Message{Key: []byte(group), Value: []byte("junk")}, client.ToPartition(k))
	require.NoError(t, err)

	l.mu.Lock()
	l.mark = true
	l.mu.Unlock()
	switch how {
	case "kill":
		require.NoError(t, coord.cluster.tr.Close()) // no leadership handed over, no goodbye to the peers
		shutdown(t, coord)
	case "stop":
		shutdown(t, coord)
	case "transfer":
		to := nodes[(indexOf(nodes, coord)+1)%len(nodes)]
		require.NoError(t, coord.cluster.transferLeader(OffsetsTopic, k, to.cfg.NodeID))
	}
	var rest []*Engine
	for _, e := range nodes {
		if e != coord {
			rest = append(rest, e)
		}
	}
	next := coordinatorOf(t, rest, group)
	require.NotSame(t, coord, next)
	// What is published once the consumer is a member at next goes to it
	// from there only. Before that, the deposed coordinator may still
	// hand it messages that it can no longer commit: those come again
	// from next (at least once), which this test does not count.
	awaitMember(t, next, group)

	second := publishKeyed(t, cl, topic, "b", 60)
	l.await(t, append(first, second...))
	commitAll(t, ctx, gc, mode, rest, group, len(first)+len(second))

	l.mu.Lock()
	for _, d := range l.after {
		require.GreaterOrEqual(t, d.off, before.Partitions[d.p].Committed,
			"partition %d offset %d was committed before the coordinator was lost, and delivered again", d.p, d.off)
	}
	for v, n := range l.seen {
		require.Equal(t, 1, n, "%s handled %d times", v, n)
	}
	l.mu.Unlock()

	after := describeGroup(t, next, group)
	total = 0
	for i, p := range after.Partitions {
		require.GreaterOrEqual(t, p.Committed, before.Partitions[i].Committed, "partition %d went back", i)
		total += p.Committed
	}
	require.Equal(t, int64(len(first)+len(second)), total, "committed offsets after the loss: %+v", after.Partitions)
	if how != "transfer" {
		return
	}

	// Back to the first node, which coordinated the group before: it must
	// take in what was committed meanwhile, not what it held then.
	require.NoError(t, next.cluster.transferLeader(OffsetsTopic, k, coord.cfg.NodeID))
	require.Same(t, coord, coordinatorOf(t, []*Engine{coord}, group))
	awaitMember(t, coord, group)
	back := describeGroup(t, coord, group)
	for i, p := range back.Partitions {
		require.Equal(t, after.Partitions[i].Committed, p.Committed, "partition %d", i)
	}
	third := publishKeyed(t, cl, topic, "c", 30)
	l.await(t, append(append(first, second...), third...))
	commitAll(t, ctx, gc, mode, nodes, group, len(first)+len(second)+len(third))
	l.mu.Lock()
	for v, n := range l.seen {
		require.Equal(t, 1, n, "%s handled %d times", v, n)
	}
	l.mu.Unlock()
}

// commitAll commits what gc handled (offset mode; in message mode its
// acks move the group's floor), and waits until the replicated offsets
// partition, as its coordinator among nodes replays it, holds n messages
// committed over all partitions.
func commitAll(t *testing.T, ctx context.Context, gc *client.GroupConsumer, mode client.AckMode, nodes []*Engine,
	group string, n int) {
	t.Helper()
	if mode == client.AckOffset {
		require.NoError(t, gc.Commit(ctx))
	}
	e := coordinatorOf(t, nodes, group)
	p, _ := e.grepl.replicaOf(OffsetsPartition(group, offsetsPartitions))
	require.NotNil(t, p)
	require.Eventually(t, func() bool {
		groups, err := replayOffsets(p, e.log)
		if err != nil || groups[group] == nil {
			return false
		}
		var sum int64
		for _, off := range groups[group].Offsets {
			sum += off
		}
		return sum == int64(n)
	}, 60*time.Second, 5*time.Millisecond, "the group's replicated offsets reach %d messages", n)
	// Describe shows what the coordinator's writes stored: an ack floor's
	// write (message mode) is answered a moment after it commits.
	require.Eventually(t, func() bool {
		info, err := e.groups.Describe(group)
		var sum int64
		for _, p := range info.Partitions {
			sum += max(p.Committed, 0)
		}
		return err == nil && sum == int64(n)
	}, 60*time.Second, 5*time.Millisecond, "node %d describes %d messages committed", e.cfg.NodeID, n)
}

// awaitMember waits until group, coordinated by e, has a member that
// owns every partition.
func awaitMember(t *testing.T, e *Engine, group string) {
	t.Helper()
	require.Eventually(t, func() bool {
		info, err := e.groups.Describe(group)
		if err != nil || len(info.Members) == 0 {
			return false
		}
		for _, p := range info.Partitions {
			if p.Owner == "" {
				return false
			}
		}
		return true
	}, 60*time.Second, 5*time.Millisecond, "a member of %s at node %d owns every partition", group, e.cfg.NodeID)
}

// describeGroup is e's description of group, once e coordinates it.
func describeGroup(t *testing.T, e *Engine, group string) wire.GroupInfo {
	t.Helper()
	info, err := e.groups.Describe(group)
	require.NoError(t, err)
	return info
}

// TestClusterGroupCommitsNeverGoBack: a group auto-commits while
// messages keep coming and its coordinator's node vanishes mid-stream.
// Every committed offset any coordinator reports is at or after every one
// reported before; every message is handled; a message handled twice lies
// at or after what was committed before the loss (it was in flight).
func TestClusterGroupCommitsNeverGoBack(t *testing.T) {
	const topic, group, partitions, total = "events", "audit", 3, 300
	nodes := startReplicatedTopic(t, topic, partitions)
	coord := coordinatorOf(t, nodes, group)
	cl := dialCluster(t, clusterAddrs(nodes, indexOf(nodes, coord)),
		client.WithErrorHandler(func(err error) { t.Logf("client: %v", err) }))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	type handled struct {
		p   int32
		off int64
	}
	var mu sync.Mutex
	seen := map[string][]handled{}
	gc, err := cl.JoinGroup(ctx, client.GroupConfig{Group: group, Topic: topic, Start: client.Earliest,
		AutoCommitInterval: 20 * time.Millisecond, Handler: func(m *client.GroupMessage) error {
			mu.Lock()
			seen[string(m.Value)] = append(seen[string(m.Value)], handled{m.Partition, m.Offset})
			mu.Unlock()
			return nil
		}})
	require.NoError(t, err)
	defer func() { _ = gc.Close() }()

	// The monitor samples the committed offsets at whichever node
	// coordinates the group, and checks that they never go back.
	var (
		mmu      sync.Mutex
		high     = map[int32]int64{}
		lost     = false
		atLoss   map[int32]int64
		samples  int
		monitorE error
	)
	live := slices.Clone(nodes)
	stopMonitor := make(chan struct{})
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopMonitor:
				return
			case <-tick.C:
			}
			mmu.Lock()
			for _, e := range live {
				if e.grepl.Coordinates(group) != nil {
					continue
				}
				info, err := e.groups.Describe(group)
				if err != nil {
					continue
				}
				samples++
				for _, p := range info.Partitions {
					prev, ok := high[p.Partition]
					if ok && p.Committed < prev && monitorE == nil {
						monitorE = fmt.Errorf("partition %d: committed %d after %d", p.Partition, p.Committed, prev)
					}
					if !ok || p.Committed > prev {
						high[p.Partition] = p.Committed
					}
				}
			}
			mmu.Unlock()
		}
	}()

	var published []string
	for i := range total {
		if i == total/3 {
			// Mid-stream, once a commit has been seen: the coordinator
			// vanishes.
			require.Eventually(t, func() bool {
				mmu.Lock()
				defer mmu.Unlock()
				var sum int64
				for _, c := range high {
					sum += max(c, 0)
				}
				return sum > 0
			}, 60*time.Second, 5*time.Millisecond)
			mmu.Lock()
			lost, atLoss = true, maps.Clone(high)
			live = slices.DeleteFunc(live, func(e *Engine) bool { return e == coord })
			mmu.Unlock()
			require.NoError(t, coord.cluster.tr.Close())
			shutdown(t, coord)
		}
		key := fmt.Sprintf("e-%d", i)
		_, err := cl.Publish(ctx, topic, client.Message{Key: []byte(key), Value: []byte(key)})
		require.NoError(t, err)
		published = append(published, key)
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == total
	}, 90*time.Second, 10*time.Millisecond, "every message handled")
	require.NoError(t, gc.Commit(ctx))
	close(stopMonitor)
	<-monitorDone

	mmu.Lock()
	defer mmu.Unlock()
	require.True(t, lost)
	require.NoError(t, monitorE)
	require.Positive(t, samples)
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, v := range published {
		hs := seen[v]
		require.NotEmpty(t, hs, "%s never handled", v)
		if len(hs) > 1 {
			dups++
			require.GreaterOrEqual(t, hs[0].off, atLoss[hs[0].p],
				"%s (partition %d offset %d) was committed before the loss and handled again", v, hs[0].p, hs[0].off)
		}
	}
	next := coordinatorOf(t, live, group)
	info := describeGroup(t, next, group)
	var sum int64
	for _, p := range info.Partitions {
		require.GreaterOrEqual(t, p.Committed, atLoss[p.Partition])
		sum += p.Committed
	}
	require.Equal(t, int64(total), sum)
	t.Logf("%d samples of the committed offsets; %d messages handled twice (in flight at the loss)", samples, dups)
}

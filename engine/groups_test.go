package engine

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
)

// handled records what every member of a group handled.
type handled struct {
	mu  sync.Mutex
	all map[[2]int64]int // (partition, offset) -> times handled
	// order: per member and partition, the offsets in the order handled
	order map[string]map[int32][]int64
}

func newHandled() *handled {
	return &handled{all: map[[2]int64]int{}, order: map[string]map[int32][]int64{}}
}

func (h *handled) add(member string, p int32, off int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.all[[2]int64{int64(p), off}]++
	if h.order[member] == nil {
		h.order[member] = map[int32][]int64{}
	}
	h.order[member][p] = append(h.order[member][p], off)
}

func (h *handled) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.all)
}

// check asserts that every offset below ends[p] was handled, at most
// maxDup times, and that each member saw each partition in order.
func (h *handled) check(t *testing.T, ends []int64, maxDup int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, end := range ends {
		for o := range end {
			n := h.all[[2]int64{int64(p), o}]
			require.NotZero(t, n, "partition %d offset %d was never handled", p, o)
			require.LessOrEqual(t, n, maxDup, "partition %d offset %d handled %d times", p, o, n)
		}
	}
	for m, parts := range h.order {
		for p, offs := range parts {
			require.True(t, slices.IsSorted(offs), "member %s saw partition %d out of order", m, p)
		}
	}
}

func joinGroup(t *testing.T, e *Engine, cfg client.GroupConfig) *client.GroupConsumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := client.JoinGroup(ctx, e.Addr().String(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// offsetMember is a group consumer in offset mode that records to h.
func offsetMember(t *testing.T, e *Engine, group, topic, name string, h *handled) *client.GroupConsumer {
	return joinGroup(t, e, client.GroupConfig{Group: group, Topic: topic, Mode: client.AckOffset,
		Start: client.Earliest, AutoCommitInterval: 50 * time.Millisecond,
		Handler: func(m *client.GroupMessage) error {
			h.add(name, m.Partition, m.Offset)
			return nil
		}})
}

func waitAssigned(t *testing.T, want []int, gs ...*client.GroupConsumer) {
	t.Helper()
	require.Eventually(t, func() bool {
		for i, g := range gs {
			if len(g.Assigned()) != want[i] {
				return false
			}
		}
		return true
	}, 15*time.Second, 5*time.Millisecond, "assignments did not settle to %v", want)
}

func publishN(t *testing.T, c *client.Client, topic string, from, n int) {
	t.Helper()
	ctx := testCtx(t)
	for i := from; i < from+n; i++ {
		key := []byte("key-" + strconv.Itoa(i%97))
		require.NoError(t, c.PublishAsync(ctx, topic, client.Message{Key: key, Value: []byte(strconv.Itoa(i))}))
	}
	require.NoError(t, c.Flush(ctx))
}

func topicEnds(t *testing.T, c *client.Client, topic string) []int64 {
	t.Helper()
	info, err := c.DescribeTopic(testCtx(t), topic)
	require.NoError(t, err)
	ends := make([]int64, len(info.Partitions))
	for i, p := range info.Partitions {
		ends[i] = p.EndOffset
	}
	return ends
}

// settle publishes one message to each partition of topic and waits until
// h has handled them all. A member gets a partition's messages in offset
// order, so whatever it still owed below them, a duplicate included, has
// been handled by then: the barrier stands in for waiting "long enough".
// It returns the barrier's offsets.
func settle(t *testing.T, c *client.Client, topic string, h *handled) []int64 {
	t.Helper()
	ctx := testCtx(t)
	marks := make([]int64, len(topicEnds(t, c, topic)))
	for p := range marks {
		ack, err := c.Publish(ctx, topic, client.Message{Value: []byte("barrier")}, client.ToPartition(p))
		require.NoError(t, err)
		marks[p] = ack.Offset
	}
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for p, off := range marks {
			if h.all[[2]int64{int64(p), off}] == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 5*time.Millisecond, "every partition's barrier handled")
	return marks
}

// waitAllAcked waits until no partition of a message-mode group has a
// delivery outstanding and everything is acked or dead-lettered: no
// message can then be delivered or dead-lettered again.
func waitAllAcked(t *testing.T, c *client.Client, group string) {
	t.Helper()
	require.Eventually(t, func() bool {
		info, err := c.DescribeGroup(testCtx(t), group)
		require.NoError(t, err)
		for _, p := range info.Partitions {
			if p.Pending != 0 || (p.Committed >= 0 && p.Lag != 0) || (p.Committed < 0 && p.End != 0) {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond, "everything acked or dead-lettered")
}

// progress waits until h has handled n more messages: traffic flowed.
func progress(t *testing.T, h *handled, n int) {
	t.Helper()
	from := h.count()
	require.Eventually(t, func() bool { return h.count() >= from+n }, 30*time.Second, time.Millisecond)
}

func total(ends []int64) int {
	n := 0
	for _, e := range ends {
		n += int(e)
	}
	return n
}

// TestGroupSteadyStateExactlyOnce: three members share six partitions two
// each, and every message is handled by exactly one of them.
func TestGroupSteadyStateExactlyOnce(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "orders", client.TopicConfig{Partitions: 6}))
	h := newHandled()
	var gs []*client.GroupConsumer
	for i := range 3 {
		gs = append(gs, offsetMember(t, e, "billing", "orders", fmt.Sprint("m", i), h))
	}
	waitAssigned(t, []int{2, 2, 2}, gs...)
	owned := map[int]bool{}
	for _, g := range gs {
		for _, p := range g.Assigned() {
			require.False(t, owned[p], "partition %d has two owners", p)
			owned[p] = true
		}
	}
	publishN(t, c, "orders", 0, 6000)
	ends := topicEnds(t, c, "orders")
	require.Eventually(t, func() bool { return h.count() == total(ends) }, 30*time.Second, 5*time.Millisecond)
	h.check(t, ends, 1)
	for m, parts := range h.order {
		require.Len(t, parts, 2, "member %s handled partitions %v", m, parts)
	}

	// Commits catch up with what was handled; lag is zero.
	require.Eventually(t, func() bool {
		info, err := c.DescribeGroup(ctx, "billing")
		require.NoError(t, err)
		return info.Lag() == 0 && len(info.Members) == 3 && info.Partitions[0].Committed >= 0
	}, 5*time.Second, 10*time.Millisecond)
	info, err := c.DescribeGroup(ctx, "billing")
	require.NoError(t, err)
	require.Equal(t, client.AckOffset, info.Mode)
	for _, p := range info.Partitions {
		require.Equal(t, ends[p.Partition], p.Committed)
		require.NotEmpty(t, p.Owner)
	}
	list, err := c.ListGroups(ctx)
	require.NoError(t, err)
	require.Equal(t, []client.GroupSummary{{Group: "billing", Topic: "orders", Members: 3}}, list)
}

// TestGroupRebalanceKeepsOrderAndLosesNothing: members join and leave
// while messages flow; with graceful moves (commit on revoke) nothing is
// lost or handled twice, and each member sees each partition in order.
func TestGroupRebalanceKeepsOrderAndLosesNothing(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "events", client.TopicConfig{Partitions: 6}))
	h := newHandled()
	g0 := offsetMember(t, e, "g", "events", "m0", h)
	waitAssigned(t, []int{6}, g0)

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i += 200 {
			select {
			case <-stop:
				return
			default:
			}
			publishN(t, c, "events", i, 200)
			time.Sleep(2 * time.Millisecond) // paces the producer: a steady flow, not a flood
		}
	}()
	// Between membership changes, messages flow: each assignment handles some.
	progress(t, h, 200)
	g1 := offsetMember(t, e, "g", "events", "m1", h)
	waitAssigned(t, []int{3, 3}, g0, g1)
	progress(t, h, 200)
	g2 := offsetMember(t, e, "g", "events", "m2", h)
	waitAssigned(t, []int{2, 2, 2}, g0, g1, g2)
	progress(t, h, 200)
	require.NoError(t, g0.Close())
	waitAssigned(t, []int{3, 3}, g1, g2)
	progress(t, h, 200)
	close(stop)
	<-done

	ends := topicEnds(t, c, "events")
	require.Eventually(t, func() bool { return h.count() == total(ends) }, 30*time.Second, 5*time.Millisecond)
	settle(t, c, "events", h) // any duplicate has arrived now
	h.check(t, ends, 1)
}

// TestGroupConsumerRejoinsAfterRestart: when the broker restarts, a group
// consumer loses its partitions (OnRevoke), reconnects, rejoins, gets them
// back (OnAssign) and resumes from its commits.
func TestGroupConsumerRejoinsAfterRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	dir := t.TempDir()
	cfg := func(c *Config) { c.Addr, c.DataDir = addr, dir }
	e := startBroker(t, cfg)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "rj", client.TopicConfig{Partitions: 2}))
	h := newHandled()
	var mu sync.Mutex
	var events []string
	note := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	g := joinGroup(t, e, client.GroupConfig{Group: "rg", Topic: "rj", Start: client.Earliest,
		AutoCommitInterval: 20 * time.Millisecond,
		OnAssign:           func(p []int) { note(fmt.Sprint("assign ", p)) },
		OnRevoke:           func(p []int) { note(fmt.Sprint("revoke ", p)) },
		Handler: func(m *client.GroupMessage) error {
			h.add("m", m.Partition, m.Offset)
			return nil
		}})
	waitAssigned(t, []int{2}, g)
	id := g.MemberID()
	publishN(t, c, "rj", 0, 100)
	require.Eventually(t, func() bool { return h.count() == 100 }, 30*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		info, err := c.DescribeGroup(ctx, "rg")
		return err == nil && info.Lag() == 0 && info.Partitions[0].Committed >= 0 && info.Partitions[1].Committed >= 0
	}, 5*time.Second, 5*time.Millisecond)
	_ = c.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(sctx))

	e = startBroker(t, cfg)
	c = dial(t, e)
	require.Eventually(t, func() bool { return g.MemberID() != id && len(g.Assigned()) == 2 }, 15*time.Second,
		5*time.Millisecond, "the restarted broker refused the old id, and issued a new one")
	publishN(t, c, "rj", 100, 50)
	ends := topicEnds(t, c, "rj")
	require.Eventually(t, func() bool { return h.count() == 150 }, 30*time.Second, 5*time.Millisecond)
	settle(t, c, "rj", h) // any duplicate has arrived now
	h.check(t, ends, 1)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"assign [0 1]", "revoke [0 1]", "assign [0 1]"}, events)
}

// TestAckNoneSharesWithoutCommits: at-most-once members share the
// partitions and get pushed messages, and nothing is ever committed (a
// commit is refused), so lag stays unknown.
func TestAckNoneSharesWithoutCommits(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "fire", client.TopicConfig{Partitions: 4}))
	h := newHandled()
	var gs []*client.GroupConsumer
	for i := range 2 {
		name := fmt.Sprint("m", i)
		gs = append(gs, joinGroup(t, e, client.GroupConfig{Group: "ng", Topic: "fire", Mode: client.AckNone,
			Handler: func(m *client.GroupMessage) error {
				h.add(name, m.Partition, m.Offset)
				return nil
			}}))
	}
	waitAssigned(t, []int{2, 2}, gs...)
	publishN(t, c, "fire", 0, 400)
	ends := topicEnds(t, c, "fire")
	require.Eventually(t, func() bool { return h.count() == total(ends) }, 30*time.Second, 5*time.Millisecond)
	h.check(t, ends, 1)
	require.ErrorIs(t, gs[0].Commit(ctx), client.ErrInvalidArgument)
	info, err := c.DescribeGroup(ctx, "ng")
	require.NoError(t, err)
	require.Equal(t, client.AckNone, info.Mode)
	for _, p := range info.Partitions {
		require.Equal(t, int64(-1), p.Committed)
		require.Equal(t, int64(-1), p.Lag)
	}
}

// TestGroupConsumerCommitted: Committed reports what the consumer's
// commits stored, per partition it owns: nothing before its first commit,
// then what DescribeGroup shows committed.
func TestGroupConsumerCommitted(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "ledger", client.TopicConfig{Partitions: 2}))
	h := newHandled()
	g := joinGroup(t, e, client.GroupConfig{Group: "books", Topic: "ledger", Start: client.Earliest,
		AutoCommitInterval: -1, Handler: func(m *client.GroupMessage) error {
			h.add("m", m.Partition, m.Offset)
			return nil
		}})
	waitAssigned(t, []int{2}, g)
	require.Empty(t, g.Committed())
	publishN(t, c, "ledger", 0, 40)
	ends := topicEnds(t, c, "ledger")
	require.Eventually(t, func() bool { return h.count() == total(ends) }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, g.Commit(ctx))
	want := map[int]int64{}
	for p, end := range ends {
		want[p] = end
	}
	require.Equal(t, want, g.Committed())
	info, err := c.DescribeGroup(ctx, "books")
	require.NoError(t, err)
	for _, p := range info.Partitions {
		require.Equal(t, want[int(p.Partition)], p.Committed)
	}
}

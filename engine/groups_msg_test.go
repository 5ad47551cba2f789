package engine

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// attempts records when each message value was handled.
type attempts struct {
	mu sync.Mutex
	at map[string][]time.Time
	n  map[string][]uint32
}

func newAttempts() *attempts {
	return &attempts{at: map[string][]time.Time{}, n: map[string][]uint32{}}
}

func (a *attempts) add(v string, attempt uint32) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at[v] = append(a.at[v], time.Now())
	a.n[v] = append(a.n[v], attempt)
	return len(a.at[v])
}

func (a *attempts) get(v string) ([]time.Time, []uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.at[v]...), append([]uint32(nil), a.n[v]...)
}

func (a *attempts) distinct() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.at)
}

// TestMessageModeDeadLetter: a message nacked max-deliveries times lands on
// the dead-letter topic once, with headers saying where it came from and
// why; the others are acked and the group ends with nothing pending.
func TestMessageModeDeadLetter(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "jobs", client.TopicConfig{Partitions: 2}))
	for i := range 100 {
		v := strconv.Itoa(i)
		if i == 42 {
			v = "poison"
		}
		require.NoError(t, c.PublishAsync(ctx, "jobs", client.Message{Key: []byte("k"), Value: []byte(v),
			Headers: []client.Header{{Key: "trace", Value: []byte("t-" + v)}}}))
	}
	require.NoError(t, c.Flush(ctx))
	poisonAck, err := c.Publish(ctx, "jobs", client.Message{Value: []byte("after")}, client.ToPartition(0))
	require.NoError(t, err)
	_ = poisonAck

	seen := newAttempts()
	joinGroup(t, e, client.GroupConfig{Group: "workers", Topic: "jobs", Mode: client.AckMessage,
		Start: client.Earliest, MaxDeliveries: 3, Handler: func(m *client.GroupMessage) error {
			seen.add(string(m.Value), m.Attempt)
			if string(m.Value) == "poison" {
				return errors.New("cannot parse")
			}
			return nil
		}})

	dlq := dial(t, e)
	letters := make(chan client.Delivery, 10)
	require.Eventually(t, func() bool {
		_, err := dlq.DescribeTopic(ctx, "jobs.dlq")
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the dead-letter topic is created on first use")
	_, err = dlq.Subscribe(ctx, "jobs.dlq", func(d *client.Delivery) { letters <- d.Clone() }, client.StartAt(client.Earliest))
	require.NoError(t, err)
	var l client.Delivery
	select {
	case l = <-letters:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing reached the dead-letter topic")
	}
	require.Equal(t, "poison", string(l.Value))
	require.Equal(t, []byte("k"), l.Key)
	hs := map[string]string{}
	for _, h := range l.Headers {
		hs[h.Key] = string(h.Value)
	}
	require.Equal(t, "t-poison", hs["trace"], "the message keeps its own headers")
	require.Equal(t, "jobs", hs[HeaderOriginalTopic])
	require.Equal(t, strconv.Itoa(client.KeyPartition([]byte("k"), 2)), hs[HeaderOriginalPartition])
	require.Equal(t, "42", hs[HeaderOriginalOffset])
	require.Equal(t, "3", hs[HeaderDeliveryCount])
	require.Equal(t, "cannot parse", hs[HeaderLastNackReason])

	_, n := seen.get("poison")
	require.Equal(t, []uint32{1, 2, 3}, n, "delivered max-deliveries times, then dead-lettered")
	require.Eventually(t, func() bool { return seen.distinct() == 101 }, 30*time.Second, 5*time.Millisecond)
	waitAllAcked(t, c, "workers")
	// Nothing is outstanding, so nothing can be dead-lettered from now on:
	// the dead-letter topic holds every letter there will be.
	require.Equal(t, 1, total(topicEnds(t, c, "jobs.dlq")), "one dead letter")
	select {
	case d := <-letters:
		t.Fatalf("a second dead letter: %q", d.Value)
	default:
	}
	_, n = seen.get("poison")
	require.Len(t, n, 3, "no delivery after dead-lettering")
	for i := range 100 {
		if i != 42 {
			_, n := seen.get(strconv.Itoa(i))
			require.Equal(t, []uint32{1}, n, "message %d", i)
		}
	}
}

// TestNackDelayAndBackoff: a nack's own delay holds, and so does the
// group's backoff list for plain nacks, step by step.
func TestNackDelayAndBackoff(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "retry", client.TopicConfig{Partitions: 1}))
	seen := newAttempts()
	joinGroup(t, e, client.GroupConfig{Group: "r", Topic: "retry", Mode: client.AckMessage, Start: client.Earliest,
		MaxDeliveries: 10, Backoff: []time.Duration{100 * time.Millisecond, 300 * time.Millisecond},
		Handler: func(m *client.GroupMessage) error {
			v := string(m.Value)
			n := seen.add(v, m.Attempt)
			switch {
			case v == "delayed" && n == 1:
				return client.RetryAfter(250*time.Millisecond, errors.New("not yet"))
			case v == "backoff" && n <= 3:
				return errors.New("again")
			}
			return nil
		}})
	for _, v := range []string{"delayed", "backoff"} {
		_, err := c.Publish(ctx, "retry", client.Message{Value: []byte(v)})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		_, a := seen.get("delayed")
		_, b := seen.get("backoff")
		return len(a) == 2 && len(b) == 4
	}, 10*time.Second, 5*time.Millisecond)
	at, n := seen.get("delayed")
	require.Equal(t, []uint32{1, 2}, n)
	require.GreaterOrEqual(t, at[1].Sub(at[0]), 250*time.Millisecond, "the nack's delay")
	at, n = seen.get("backoff")
	require.Equal(t, []uint32{1, 2, 3, 4}, n)
	require.GreaterOrEqual(t, at[1].Sub(at[0]), 100*time.Millisecond, "first backoff step")
	require.GreaterOrEqual(t, at[2].Sub(at[1]), 300*time.Millisecond, "second backoff step")
	require.GreaterOrEqual(t, at[3].Sub(at[2]), 300*time.Millisecond, "the last step repeats")
}

// rawMember is a group member speaking the protocol directly, for tests
// that need to withhold acks and heartbeats or send stale generations.
type rawMember struct {
	*rawConn
	group, id string
	corr      uint32
}

func joinRaw(t *testing.T, e *Engine, req wire.JoinGroup) *rawMember {
	t.Helper()
	r := dialRaw(t, e)
	r.hello()
	r.sendFrame(wire.TypeJoinGroup, 2, req.Append(nil))
	f := r.next()
	require.Equal(t, wire.TypeJoinResult, f.Type, "join: %s", errBody(f))
	res, err := wire.DecodeJoinResult(f.Body)
	require.NoError(t, err)
	return &rawMember{rawConn: r, group: req.Group, id: res.Member, corr: 10}
}

func errBody(f wire.Frame) string {
	if f.Type != wire.TypeError {
		return f.Type.String()
	}
	e, _ := wire.DecodeError(f.Body)
	return e.Error()
}

// nextOf reads frames until one of type typ, skipping deliveries.
func (m *rawMember) nextOf(typ wire.Type) wire.Frame {
	m.t.Helper()
	for {
		f := m.next()
		if f.Type == typ {
			return f
		}
		require.Contains(m.t, []wire.Type{wire.TypeDeliver, wire.TypeRedeliver, wire.TypeAssignment, wire.TypeOK},
			f.Type, "unexpected %s", errBody(f))
	}
}

func (m *rawMember) assignment() wire.Assignment {
	m.t.Helper()
	a, err := wire.DecodeAssignment(m.nextOf(wire.TypeAssignment).Body)
	require.NoError(m.t, err)
	return a
}

func (m *rawMember) ref(gen uint32) wire.MemberRef {
	return wire.MemberRef{Group: m.group, Member: m.id, Generation: gen}
}

// call sends a request and returns its answer, skipping unsolicited frames.
func (m *rawMember) call(t wire.Type, body []byte) wire.Frame {
	m.t.Helper()
	m.corr++
	corr := m.corr
	m.sendFrame(t, corr, body)
	for {
		f := m.next()
		if f.Corr == corr {
			return f
		}
	}
}

func (m *rawMember) commit(gen uint32, p int32, off int64) error {
	c := wire.Commit{MemberRef: m.ref(gen), Offsets: []wire.PartitionOffset{{Partition: p, Offset: off}}}
	f := m.call(wire.TypeCommit, c.Append(nil))
	if f.Type == wire.TypeOK {
		return nil
	}
	require.Equal(m.t, wire.TypeError, f.Type)
	we, err := wire.DecodeError(f.Body)
	require.NoError(m.t, err)
	return we
}

// TestStaleGenerationCommitRejected walks a partition from one member to
// another and checks which commits count: the old owner may commit until it
// confirms the move, and not after; a generation never assigned and an
// unknown member are refused.
func TestStaleGenerationCommitRejected(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "st", client.TopicConfig{Partitions: 2}))
	publishN(t, c, "st", 0, 20)
	join := wire.JoinGroup{Group: "sg", Topic: "st", Mode: wire.AckOffset, Start: wire.Start{Kind: wire.StartEarliest}}
	a := joinRaw(t, e, join)
	a1 := a.assignment()
	require.Len(t, a1.Partitions, 2)
	require.NoError(t, a.commit(a1.Generation, 1, 3))

	b := joinRaw(t, e, join)
	require.Empty(t, b.assignment().Partitions, "nothing for b until a gives something up")
	a2 := a.assignment()
	require.Greater(t, a2.Generation, a1.Generation)
	require.Len(t, a2.Partitions, 1)
	kept := a2.Partitions[0].Partition
	moved := 1 - kept
	// Before confirming, the old owner may still commit what it handled.
	require.NoError(t, a.commit(a2.Generation, moved, 5))
	// The partition is not given away until the old owner confirms.
	info, err := c.DescribeGroup(ctx, "sg")
	require.NoError(t, err)
	require.Empty(t, info.Partitions[moved].Owner)

	hb := a.call(wire.TypeHeartbeat, (&wire.MemberRef{Group: "sg", Member: a.id, Generation: a2.Generation}).Append(nil))
	require.Equal(t, wire.TypeOK, hb.Type)
	b1 := b.assignment()
	require.Equal(t, []wire.PartitionOffset{{Partition: moved, Offset: 5}}, b1.Partitions,
		"the new owner starts at the old owner's last commit")

	require.ErrorIs(t, a.commit(a1.Generation, moved, 6), wire.ErrStaleGeneration)
	require.ErrorIs(t, a.commit(a2.Generation, moved, 6), wire.ErrStaleGeneration)
	require.NoError(t, a.commit(a1.Generation, kept, 4), "owned continuously since generation 1")
	require.ErrorIs(t, a.commit(a2.Generation+5, kept, 4), wire.ErrStaleGeneration)
	require.NoError(t, b.commit(b1.Generation, moved, 7))
	require.ErrorIs(t, b.commit(b1.Generation, moved, 1000), wire.ErrInvalidArgument, "past the partition's end")

	ghost := &rawMember{rawConn: a.rawConn, group: "sg", id: "nobody", corr: 100}
	require.ErrorIs(t, ghost.commit(a2.Generation, kept, 1), wire.ErrUnknownMember)

	info, err = c.DescribeGroup(ctx, "sg")
	require.NoError(t, err)
	require.Equal(t, int64(7), info.Partitions[moved].Committed)
	require.Equal(t, int64(4), info.Partitions[kept].Committed)
	require.Equal(t, b.id, info.Partitions[moved].Owner)
}

// TestAckWaitExpiryRedelivers: a message not acked within ack-wait comes
// back as a Redeliver frame naming it, with the next attempt number; once
// acked it stops coming.
func TestAckWaitExpiryRedelivers(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "aw", client.TopicConfig{Partitions: 1}))
	m := joinRaw(t, e, wire.JoinGroup{Group: "ag", Topic: "aw", Mode: wire.AckMessage, AckWaitMs: 200,
		Start: wire.Start{Kind: wire.StartEarliest}})
	gen := m.assignment().Generation
	_, err := c.Publish(ctx, "aw", client.Message{Value: []byte("one")})
	require.NoError(t, err)
	d := m.nextOf(wire.TypeDeliver)
	delivered := time.Now()
	v, err := wire.DecodeBatchView(d.Body)
	require.NoError(t, err)
	require.Equal(t, int64(0), v.Batch.BaseOffset())

	f := m.nextOf(wire.TypeRedeliver)
	require.GreaterOrEqual(t, time.Since(delivered), 150*time.Millisecond, "not before ack-wait")
	pre, b, err := wire.DecodeRedeliver(f.Body)
	require.NoError(t, err)
	require.Equal(t, uint32(2), pre.Attempt)
	require.Equal(t, []int64{0}, pre.Offsets)
	require.Equal(t, int64(0), b.BaseOffset())

	ack := wire.Ack{MemberRef: m.ref(gen), Partition: 0, Ranges: []wire.OffsetRange{{From: 0, To: 1}}}
	m.sendFrame(wire.TypeAck, 99, ack.Append(nil))
	_, err = m.read(600 * time.Millisecond)
	require.Error(t, err, "nothing more once acked")
	info, err := c.DescribeGroup(ctx, "ag")
	require.NoError(t, err)
	require.Equal(t, int64(1), info.Partitions[0].Committed)
	require.Zero(t, info.Partitions[0].Pending)

	// An ack from a generation never assigned is refused, and answered.
	bad := wire.Ack{MemberRef: m.ref(gen + 3), Partition: 0, Ranges: []wire.OffsetRange{{From: 0, To: 1}}}
	m.sendFrame(wire.TypeAck, 100, bad.Append(nil))
	f = m.next()
	require.Equal(t, wire.TypeError, f.Type)
	require.Equal(t, uint32(100), f.Corr)
}

// TestSessionTimeoutRemovesSilentMember: a member that stops heartbeating
// loses its partitions after its session timeout, and its later frames
// are refused as from an unknown member.
func TestSessionTimeoutRemovesSilentMember(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "hb", client.TopicConfig{Partitions: 4}))
	silent := joinRaw(t, e, wire.JoinGroup{Group: "hg", Topic: "hb", Mode: wire.AckOffset, SessionTimeoutMs: 1000})
	silent.assignment()
	h := newHandled()
	g := offsetMember(t, e, "hg", "hb", "live", h)
	// The silent member never confirms its revocation, so the move waits
	// for its session timeout; then the live member owns everything.
	start := time.Now()
	waitAssigned(t, []int{4}, g)
	require.GreaterOrEqual(t, time.Since(start), 500*time.Millisecond)
	f := silent.call(wire.TypeHeartbeat, (&wire.MemberRef{Group: "hg", Member: silent.id}).Append(nil))
	require.Equal(t, wire.TypeError, f.Type)
	we, err := wire.DecodeError(f.Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeUnknownMember, we.Code)
	info, err := c.DescribeGroup(ctx, "hg")
	require.NoError(t, err)
	require.Equal(t, []string{g.MemberID()}, info.Members)
}

// TestCommittedOffsetsSurviveRestart: offsets committed before a restart
// are where the group resumes after it.
func TestCommittedOffsetsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *Config) { c.DataDir = dir }
	e := startBroker(t, cfg)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "dur", client.TopicConfig{Partitions: 3}))
	publishN(t, c, "dur", 0, 300)
	ends := topicEnds(t, c, "dur")
	h := newHandled()
	g := offsetMember(t, e, "dg", "dur", "first", h)
	require.Eventually(t, func() bool { return h.count() == 300 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, g.Close())
	require.NoError(t, c.Close())
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.Shutdown(sctx))

	e = startBroker(t, cfg)
	c = dial(t, e)
	info, err := c.DescribeGroup(ctx, "dg")
	require.NoError(t, err)
	require.Empty(t, info.Members)
	for _, p := range info.Partitions {
		require.Equal(t, ends[p.Partition], p.Committed, "partition %d", p.Partition)
		require.Zero(t, p.Lag)
	}
	publishN(t, c, "dur", 300, 30)
	h2 := newHandled()
	offsetMember(t, e, "dg", "dur", "second", h2)
	require.Eventually(t, func() bool { return h2.count() == 30 }, 30*time.Second, 5*time.Millisecond)
	marks := settle(t, c, "dur", h2) // anything more it was to get has arrived now
	h2.mu.Lock()
	defer h2.mu.Unlock()
	require.Len(t, h2.all, 30+len(marks), "only what was published after the commit, and the barrier")
	for k := range h2.all {
		require.GreaterOrEqual(t, k[1], ends[k[0]])
	}
}

// TestGroupAdminErrors covers describe and reset of missing and busy
// groups, a reset that moves offsets, and joins that conflict.
func TestGroupAdminErrors(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "adm", client.TopicConfig{Partitions: 2}))
	publishN(t, c, "adm", 0, 50)
	_, err := c.DescribeGroup(ctx, "none")
	require.ErrorIs(t, err, client.ErrUnknownGroup)
	require.ErrorIs(t, c.ResetGroup(ctx, "none", client.Earliest), client.ErrUnknownGroup)

	h := newHandled()
	g := offsetMember(t, e, "ag", "adm", "m", h)
	require.ErrorIs(t, c.ResetGroup(ctx, "ag", client.Earliest), client.ErrGroupActive)

	// A member asking for another mode, or another topic, is refused.
	jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = client.JoinGroup(jctx, e.Addr().String(), client.GroupConfig{Group: "ag", Topic: "adm", Mode: client.AckMessage,
		Handler: func(*client.GroupMessage) error { return nil }})
	require.ErrorIs(t, err, client.ErrInvalidArgument)
	_, err = client.JoinGroup(jctx, e.Addr().String(), client.GroupConfig{Group: "ag", Topic: "other",
		Handler: func(*client.GroupMessage) error { return nil }})
	require.ErrorIs(t, err, client.ErrInvalidArgument)
	_, err = client.JoinGroup(jctx, e.Addr().String(), client.GroupConfig{Group: "bad/name", Topic: "adm",
		Handler: func(*client.GroupMessage) error { return nil }})
	require.Error(t, err)

	require.Eventually(t, func() bool { return h.count() == 50 }, 30*time.Second, 5*time.Millisecond)
	require.NoError(t, g.Close())
	require.NoError(t, c.ResetGroup(ctx, "ag", client.Earliest))
	info, err := c.DescribeGroup(ctx, "ag")
	require.NoError(t, err)
	for _, p := range info.Partitions {
		require.Zero(t, p.Committed)
	}
	require.NoError(t, c.ResetGroup(ctx, "ag", client.Latest))
	info, err = c.DescribeGroup(ctx, "ag")
	require.NoError(t, err)
	require.Zero(t, info.Lag())

	// Deleting the topic forgets its groups.
	require.NoError(t, c.DeleteTopic(ctx, "adm"))
	_, err = c.DescribeGroup(ctx, "ag")
	require.ErrorIs(t, err, client.ErrUnknownGroup)
}

// TestMessageModeBacklogAcrossRebalance: members join while a backlog is
// being consumed in message mode with a small unacked bound; every
// message is handled exactly once, and acks on one partition make room for
// a member's other partitions.
func TestMessageModeBacklogAcrossRebalance(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.DefaultFsync = "never" })
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "backlog", client.TopicConfig{Partitions: 6}))
	for p := range 6 {
		for i := range 20000 {
			require.NoError(t, c.PublishAsync(ctx, "backlog", client.Message{Value: []byte(strconv.Itoa(i))}, client.ToPartition(p)))
		}
	}
	require.NoError(t, c.Flush(ctx))
	ends := topicEnds(t, c, "backlog")
	h := newHandled()
	for i := range 3 {
		name := "m" + strconv.Itoa(i)
		joinGroup(t, e, client.GroupConfig{Group: "bg", Topic: "backlog", Mode: client.AckMessage,
			Start: client.Earliest, MaxUnacked: 500,
			Handler: func(m *client.GroupMessage) error {
				h.add(name, m.Partition, m.Offset)
				return nil
			}})
	}
	require.Eventually(t, func() bool { return h.count() == total(ends) }, 30*time.Second, 10*time.Millisecond)
	// Every delivery acked: no redelivery, hence no duplicate, can follow.
	waitAllAcked(t, c, "bg")
	h.check(t, ends, 1)
}

// A message-mode feed waiting for data on an idle partition withdraws its
// wait when it stops: members that come and go leave nothing behind.
func TestStoppedFeedsLeaveNoWaiters(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "idle", client.TopicConfig{Partitions: 1}))
	p := e.topics.get([]byte("idle")).Parts[0]
	for range 5 {
		m := joinRaw(t, e, wire.JoinGroup{Group: "comers", Topic: "idle", Mode: wire.AckMessage, AckWaitMs: 60_000,
			Start: wire.Start{Kind: wire.StartEarliest}})
		m.assignment()
		require.Eventually(t, func() bool { return p.Waiters() == 1 }, 30*time.Second, time.Millisecond,
			"the feed waits for data")
		require.NoError(t, m.c.Close())
		require.Eventually(t, func() bool { return p.Waiters() == 0 }, 30*time.Second, time.Millisecond,
			"the stopped feed withdrew its wait")
	}
}

package coord

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// A cluster's coordinator (Config.Placement): it coordinates the groups
// its Placement says are its own, takes them in with the state a replay
// found (Adopt), and hands them over (Evict).

// testPlacement owns the groups in own; the others are refused naming
// node 2.
type testPlacement struct {
	mu  sync.Mutex
	own map[string]bool
	// deposed: Coordinates still says yes, but Confirm refuses (a node
	// deposed without knowing it yet).
	deposed bool
}

func (p *testPlacement) Coordinates(group string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.own[group] {
		return nil
	}
	return wire.NotLeader(2, "10.0.0.2:7070", "coordinator of group "+group)
}

// Confirm confirms what Coordinates says, at once, unless deposed.
func (p *testPlacement) Confirm(group string, done func(error)) {
	p.mu.Lock()
	deposed := p.deposed
	p.mu.Unlock()
	if deposed {
		done(wire.NotLeader(3, "10.0.0.3:7070", "coordinator of group "+group))
		return
	}
	done(p.Coordinates(group))
}

func (p *testPlacement) set(group string, own bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.own[group] = own
}

// memRepl is a Replicator whose log is a slice.
type memRepl struct {
	mu  sync.Mutex
	log [][]byte
}

func (r *memRepl) Write(recs []offsets.Record) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		r.log = append(r.log, rec.Data)
	}
	return make([]error, len(recs))
}

// last is the last record of group name in the log.
func (r *memRepl) last(t *testing.T, name string) *offsets.Group {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out *offsets.Group
	for _, b := range r.log {
		n, g, err := offsets.DecodeRecord(b)
		require.NoError(t, err)
		if n == name {
			out = g
		}
	}
	return out
}

// openPlaced replaces the harness's coordinator with a cluster's.
func (h *harness) openPlaced(pl *testPlacement, r *memRepl) {
	store := offsets.NewReplicated(r, pl.Coordinates, quiet)
	store.SetClock(func() time.Time { return h.wall })
	c := New(Config{Broker: h.b, Store: store, Log: quiet, Now: h.clock.Load, Placement: pl})
	c.newFeed = h.c.newFeed
	h.t.Cleanup(c.Close)
	h.c = c
	h.start()
}

func TestPlacementAdoptCommitEvict(t *testing.T) {
	h := newHarness(t, 2, 10)
	pl, r := &testPlacement{own: map[string]bool{}}, &memRepl{}
	h.openPlaced(pl, r)

	// Another node's group: refused, naming it.
	_, err := h.c.Join(newConn().out, client, 7, joinReq(wire.AckOffset), h.topic)
	requireCode(t, wire.CodeNotLeader, err)
	node, addr, ok := wire.LeaderOf(err)
	require.True(t, ok)
	require.Equal(t, uint64(2), node)
	require.Equal(t, "10.0.0.2:7070", addr)
	_, err = h.c.Describe("g")
	requireCode(t, wire.CodeNotLeader, err)

	// Taken in with what the replay found: a member starts there.
	pl.set("g", true)
	h.c.Adopt(map[string]*offsets.Group{"g": {Topic: "t", Offsets: map[int32]int64{0: 3, 1: 4}}})
	c := newConn()
	m, a := h.joined(c, joinReq(wire.AckOffset))
	require.Equal(t, []wire.PartitionOffset{{Partition: 0, Offset: 3}, {Partition: 1, Offset: 4}}, a.Partitions)
	require.NoError(t, h.commit(m, a.Generation, wire.PartitionOffset{Partition: 0, Offset: 6}))
	require.Equal(t, map[int32]int64{0: 6, 1: 4}, r.last(t, "g").Offsets)

	// Handed over: the member is told (its client closes the connection
	// on an error it did not ask for, and joins again), the group
	// and its stored state gone from this node, and a late commit writes
	// nothing.
	pl.set("g", false)
	h.c.Evict(func(name string) bool { return name == "g" })
	fs := c.frames(t)
	require.NotEmpty(t, fs)
	require.Equal(t, wire.TypeError, fs[len(fs)-1].Type)
	werr, err := wire.DecodeError(fs[len(fs)-1].Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeNotLeader, werr.Code)
	require.Error(t, m.Err())
	_, err = h.c.Describe("g")
	requireCode(t, wire.CodeNotLeader, err)
	_, stored := h.c.Store().Group("g")
	require.False(t, stored)
	n := len(r.log)
	require.Error(t, h.commit(m, a.Generation, wire.PartitionOffset{Partition: 0, Offset: 9}))
	require.Len(t, r.log, n)
}

// A group taken in before its topic was open here comes back from the
// store at its first join.
func TestPlacementAdoptBeforeTopic(t *testing.T) {
	h := newHarness(t, 1, 10)
	pl, r := &testPlacement{own: map[string]bool{"g": true}}, &memRepl{}
	h.openPlaced(pl, r)
	delete(h.b.topics, "t")
	h.c.Adopt(map[string]*offsets.Group{"g": {Topic: "t", Offsets: map[int32]int64{0: 5}}})
	h.b.topics["t"] = h.topic
	_, a := h.joined(newConn(), joinReq(wire.AckOffset))
	require.Equal(t, []wire.PartitionOffset{{Partition: 0, Offset: 5}}, a.Partitions)
}

// gatedRepl is a memRepl whose writes wait for the test: entered gets a
// value when a write starts, and it goes on once open is sent to.
type gatedRepl struct {
	memRepl
	entered, open chan struct{}
}

func (r *gatedRepl) Write(recs []offsets.Record) []error {
	select {
	case r.entered <- struct{}{}:
	default:
	}
	<-r.open
	return r.memRepl.Write(recs)
}

// In a cluster, Describe shows the committed offsets the replicated log
// holds: a commit once it is answered, not while its write is in flight
// (a crash, or a new coordinator, could still take it back). A confirmed
// describe is refused when the Placement cannot confirm, although
// Coordinates still says yes (a coordinator deposed without knowing it).
func TestPlacementDescribeShowsStoredOffsets(t *testing.T) {
	h := newHarness(t, 2, 10)
	pl := &testPlacement{own: map[string]bool{"g": true}}
	r := &gatedRepl{entered: make(chan struct{}, 1), open: make(chan struct{})}
	store := offsets.NewReplicated(r, pl.Coordinates, quiet)
	h.c = New(Config{Broker: h.b, Store: store, Log: quiet, Now: h.clock.Load, Placement: pl})
	h.c.newFeed = func(*gpart, *Member) feed { return &fakeFeed{} }
	h.t.Cleanup(func() {
		close(r.open)
		h.c.Close()
	})
	h.start()
	require.True(t, h.c.Confirms())
	committed := func() []int64 {
		t.Helper()
		info, err := h.c.Describe("g")
		require.NoError(t, err)
		var out []int64
		for _, p := range info.Partitions {
			out = append(out, p.Committed)
		}
		return out
	}

	h.c.Adopt(map[string]*offsets.Group{"g": {Topic: "t", Offsets: map[int32]int64{0: 3}}})
	require.Equal(t, []int64{3, -1}, committed())
	m, a := h.joined(newConn(), joinReq(wire.AckOffset))
	done := make(chan error, 1)
	h.c.Commit(m, &wire.Commit{MemberRef: wire.MemberRef{Group: "g", Member: m.ID(), Generation: a.Generation},
		Offsets: []wire.PartitionOffset{{Partition: 0, Offset: 6}, {Partition: 1, Offset: 2}}}, func(err error) { done <- err })
	<-r.entered
	require.Equal(t, []int64{3, -1}, committed(), "a commit being written is not shown")
	r.open <- struct{}{}
	require.NoError(t, <-done)
	require.Equal(t, []int64{6, 2}, committed())

	info, err := h.c.DescribeConfirmed("g")
	require.NoError(t, err)
	require.Equal(t, int64(6), info.Partitions[0].Committed)
	pl.mu.Lock()
	pl.deposed = true
	pl.mu.Unlock()
	_, err = h.c.DescribeConfirmed("g")
	requireCode(t, wire.CodeNotLeader, err)
	_, err = h.c.Describe("g")
	require.NoError(t, err, "unconfirmed, the deposed coordinator would answer")
}

// A single broker confirms nothing: every group is its own.
func TestConfirmOnSingleBroker(t *testing.T) {
	h := newHarness(t, 1, 10)
	require.False(t, h.c.Confirms())
	called := false
	h.c.Confirm("g", func(err error) {
		require.NoError(t, err)
		called = true
	})
	require.True(t, called, "at once")
}

// In a cluster this node's replica of the consumed partition may be
// behind what the group committed (a follower catching up, a node just
// restarted): a new owner starts at the committed offset all the same,
// never at the replica's end below it (which would hand it committed
// messages again and let it commit an offset below the group's), and may
// commit where it was started.
func TestPlacementStartsAtCommittedAboveReplicaEnd(t *testing.T) {
	h := newHarness(t, 2, 10)
	pl, r := &testPlacement{own: map[string]bool{"g": true}}, &memRepl{}
	h.openPlaced(pl, r)
	h.c.Adopt(map[string]*offsets.Group{"g": {Topic: "t", Offsets: map[int32]int64{0: 25, 1: 5}}})
	m, a := h.joined(newConn(), joinReq(wire.AckOffset))
	require.Equal(t, []wire.PartitionOffset{{Partition: 0, Offset: 25}, {Partition: 1, Offset: 5}}, a.Partitions,
		"partition 0's replica ends at 10")
	require.NoError(t, h.commit(m, a.Generation, wire.PartitionOffset{Partition: 0, Offset: 25},
		wire.PartitionOffset{Partition: 1, Offset: 7}))
	require.Equal(t, map[int32]int64{0: 25, 1: 7}, r.last(t, "g").Offsets)
	requireCode(t, wire.CodeInvalidArgument, h.commit(m, a.Generation, wire.PartitionOffset{Partition: 0, Offset: 26}))
}

// TestPlacementConfirmsBeforeGivingFreedPartitions: in a cluster, a
// partition freed by a member that confirmed a revocation or left goes to
// another member only once the coordinator confirmed it still coordinates
// the group. Deposed without knowing it, it leaves the partition free
// (the new coordinator hands it out from the offsets it holds, where this
// one would start it at its stale committed offset), and gives it once a
// confirmation succeeds.
func TestPlacementConfirmsBeforeGivingFreedPartitions(t *testing.T) {
	h := newHarness(t, 2, 10)
	pl, r := &testPlacement{own: map[string]bool{"g": true}}, &memRepl{}
	h.openPlaced(pl, r)
	a, b := newConn(), newConn()
	ma, first := h.joined(a, joinReq(wire.AckOffset))
	require.Len(t, first.Partitions, 2)
	mb := h.join(b, joinReq(wire.AckOffset))
	b.frames(t)
	revoked := a.assignment(t)
	require.Len(t, revoked.Partitions, 1, "a keeps one")
	require.NoError(t, h.c.Heartbeat(ma, revoked.Generation))
	h.endStopped()
	given := awaitAssignment(t, b)
	require.Len(t, given.Partitions, 1, "b gets the other once confirmed")

	pl.mu.Lock()
	pl.deposed = true
	pl.mu.Unlock()
	h.c.Leave(mb)
	h.endStopped()
	g := h.c.groups["g"]
	require.Eventually(t, func() bool {
		h.c.mu.Lock()
		defer h.c.mu.Unlock()
		return !g.confirming && g.retry
	}, 30*time.Second, time.Millisecond, "the confirmation is refused")
	require.Empty(t, a.frames(t), "a deposed coordinator gives nothing")
	info, err := h.c.Describe("g")
	require.NoError(t, err)
	require.Empty(t, info.Partitions[given.Partitions[0].Partition].Owner, "b's partition stays free")

	pl.mu.Lock()
	pl.deposed = false
	pl.mu.Unlock()
	h.c.Tick(h.clock.Load())
	all := awaitAssignment(t, a)
	require.Len(t, all.Partitions, 2, "confirmed again, a gets b's partition")
}

// awaitAssignment waits for the next Assignment queued for c, skipping
// nothing else: it requires that no other frame comes first.
func awaitAssignment(t *testing.T, c *conn) wire.Assignment {
	t.Helper()
	var fs []wire.Frame
	require.Eventually(t, func() bool {
		fs = append(fs, c.frames(t)...)
		return len(fs) > 0
	}, 30*time.Second, time.Millisecond, "an assignment")
	require.Len(t, fs, 1)
	require.Equal(t, wire.TypeAssignment, fs[0].Type)
	a, err := wire.DecodeAssignment(fs[0].Body)
	require.NoError(t, err)
	return a
}

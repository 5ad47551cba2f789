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
}

func (p *testPlacement) Coordinates(group string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.own[group] {
		return nil
	}
	return wire.NotLeader(2, "10.0.0.2:7070", "coordinator of group "+group)
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

package offsets

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// fakeRepl is a Replicator that keeps what it committed, in order, and
// fails the groups named in fail.
type fakeRepl struct {
	mu     sync.Mutex
	log    [][]byte
	cps    [][]string // per Write, the groups of the records marked Checkpoint
	fail   map[string]error
	writes int
	during func() // run inside Write, as if the write took that long
}

func (r *fakeRepl) Write(recs []Record) []error {
	if r.during != nil {
		r.during()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	var cp []string
	for _, rec := range recs {
		if rec.Checkpoint {
			cp = append(cp, rec.Group)
		}
	}
	r.cps = append(r.cps, cp)
	errs := make([]error, len(recs))
	for i, rec := range recs {
		if err := r.fail[rec.Group]; err != nil {
			errs[i] = err
			continue
		}
		r.log = append(r.log, rec.Data)
	}
	return errs
}

// replay is what a new coordinator rebuilds from the committed records.
func (r *fakeRepl) replay(t *testing.T) map[string]*Group {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]*Group{}
	for _, b := range r.log {
		name, g, err := DecodeRecord(b)
		require.NoError(t, err)
		if g == nil {
			delete(out, name)
		} else {
			out[name] = g
		}
	}
	return out
}

// owner says which groups the node coordinates.
type owner struct {
	mu  sync.Mutex
	not map[string]bool
}

var errNotOwned = wire.NotLeader(2, "10.0.0.2:7070", "coordinator of the group")

func (o *owner) owns(group string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.not[group] {
		return errNotOwned
	}
	return nil
}

func (o *owner) set(group string, not bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.not[group] = not
}

func newReplStore(r *fakeRepl, o *owner) *Store {
	s := NewReplicated(r, o.owns, slog.New(slog.NewTextHandler(io.Discard, nil)))
	groups, err := s.Load()
	if err != nil || len(groups) != 0 {
		panic("a replicated store loads nothing")
	}
	return s
}

func commit(s *Store, group string, p int32, off int64) error {
	var got error
	s.Set(group, "orders", []wire.PartitionOffset{{Partition: p, Offset: off}}, func(err error) { got = err })
	_ = s.Flush()
	return got
}

func TestRecordRoundTrip(t *testing.T) {
	g := &Group{Topic: "orders", Offsets: map[int32]int64{0: 7, 3: 12}, Active: 1234}
	name, got, err := DecodeRecord(EncodeRecord("billing", g))
	require.NoError(t, err)
	require.Equal(t, "billing", name)
	require.Equal(t, g, got)
	name, got, err = DecodeRecord(EncodeRecord("billing", nil))
	require.NoError(t, err)
	require.Equal(t, "billing", name)
	require.Nil(t, got)
	b := EncodeRecord("billing", g)
	b[len(b)-1] ^= 1
	_, _, err = DecodeRecord(b)
	require.ErrorIs(t, err, ErrBadRecord)
	_, _, err = DecodeRecord(append(EncodeRecord("billing", g), 0))
	require.ErrorIs(t, err, ErrBadRecord)
}

// A commit is answered once the Replicator committed its group's record,
// and a replay of those records is the state the store held.
func TestReplicatedCommitsReplay(t *testing.T) {
	r, o := &fakeRepl{}, &owner{not: map[string]bool{}}
	s := newReplStore(r, o)
	require.NoError(t, commit(s, "a", 0, 5))
	require.NoError(t, commit(s, "a", 1, 9))
	require.NoError(t, commit(s, "b", 0, 3))
	s.Remove("b", nil)
	require.NoError(t, s.Flush())
	got := r.replay(t)
	require.Len(t, got, 1)
	require.Equal(t, map[int32]int64{0: 5, 1: 9}, got["a"].Offsets)
}

// A group this node does not coordinate is refused with the owner's
// error and nothing is written; Put and Forget write nothing.
func TestReplicatedRefusesGroupsElsewhere(t *testing.T) {
	r, o := &fakeRepl{}, &owner{not: map[string]bool{"x": true}}
	s := newReplStore(r, o)
	require.ErrorIs(t, commit(s, "x", 0, 5), errNotOwned)
	var removed error
	s.Remove("x", func(err error) { removed = err })
	require.ErrorIs(t, removed, errNotOwned)
	s.Put(map[string]*Group{"y": {Topic: "orders", Offsets: map[int32]int64{0: 4}}})
	g, ok := s.Group("y")
	require.True(t, ok)
	require.Equal(t, int64(4), g.Offsets[0])
	s.Forget(func(name string) bool { return name == "y" })
	_, ok = s.Group("y")
	require.False(t, ok)
	require.NoError(t, s.Flush())
	require.Zero(t, r.writes)
}

// A failed write is retried while the group stays this node's; once it
// went elsewhere (Forget, or the owner says so), its stale state is never
// written again: that would move the new coordinator's offsets back.
func TestReplicatedRetryOnlyWhileOwned(t *testing.T) {
	r, o := &fakeRepl{fail: map[string]error{}}, &owner{not: map[string]bool{}}
	s := newReplStore(r, o)
	boom := errors.New("no quorum")
	r.fail["a"], r.fail["b"] = boom, boom
	require.ErrorIs(t, commit(s, "a", 0, 5), boom)
	require.ErrorIs(t, commit(s, "b", 0, 6), boom) // a's retry failed with it

	// Still a's: the next write carries a's record again.
	delete(r.fail, "a")
	require.NoError(t, commit(s, "c", 0, 1))
	require.Equal(t, int64(5), r.replay(t)["a"].Offsets[0])

	// b moved to another node: its pending record is dropped.
	o.set("b", true)
	delete(r.fail, "b")
	require.NoError(t, s.Flush())
	_, ok := r.replay(t)["b"]
	require.False(t, ok)

	// A write in flight when a Forget comes is not retried.
	r.fail["d"] = boom
	s.Set("d", "orders", []wire.PartitionOffset{{Partition: 0, Offset: 2}}, nil)
	r.during = func() { s.Forget(func(n string) bool { return n == "elsewhere" }) }
	require.ErrorIs(t, s.Flush(), boom)
	r.during = nil
	delete(r.fail, "d")
	require.NoError(t, s.Flush())
	_, ok = r.replay(t)["d"]
	require.False(t, ok, "a write that failed across a Forget was retried")
}

// A checkpoint rewrites every group it covers in one write, marked, and
// only when that write holds them all: a group gone elsewhere makes it a
// plain write.
func TestReplicatedCheckpoint(t *testing.T) {
	r, o := &fakeRepl{}, &owner{not: map[string]bool{}}
	s := newReplStore(r, o)
	for _, g := range []string{"a1", "a2", "b1"} {
		require.NoError(t, commit(s, g, 0, 5))
	}
	inA := func(g string) bool { return g[0] == 'a' }
	require.Equal(t, 2, s.Checkpoint(inA))
	require.NoError(t, s.Flush())
	require.Equal(t, []string{"a1", "a2"}, r.cps[len(r.cps)-1])
	require.Equal(t, map[int32]int64{0: 5}, r.replay(t)["a2"].Offsets)

	// A change of the moment goes in the same write; b1 is not marked.
	require.Equal(t, 2, s.Checkpoint(inA))
	s.Set("b1", "orders", []wire.PartitionOffset{{Partition: 0, Offset: 6}}, nil)
	require.NoError(t, s.Flush())
	require.Equal(t, []string{"a1", "a2"}, r.cps[len(r.cps)-1])
	require.Equal(t, int64(6), r.replay(t)["b1"].Offsets[0])

	// a2 moved to another node after the checkpoint was asked for: the
	// write cannot hold every group of the checkpoint, so none is marked.
	require.Equal(t, 2, s.Checkpoint(inA))
	o.set("a2", true)
	require.NoError(t, s.Flush())
	require.Empty(t, r.cps[len(r.cps)-1])
	require.Zero(t, s.Checkpoint(func(g string) bool { return g == "a2" }), "a group elsewhere is not checkpointed")
	require.Zero(t, s.Checkpoint(func(g string) bool { return g == "none" }))
}

// Stored reports what the replicated log holds: a change only once its
// write was answered as committed, nothing of a failed write, a replay
// handed to Put as it is, and nothing of a write that was in flight when
// Forget handed its group away (even if Put took the group in again
// meanwhile: that replay is newer than the write).
func TestReplicatedStored(t *testing.T) {
	r, o := &fakeRepl{fail: map[string]error{}}, &owner{not: map[string]bool{}}
	s := newReplStore(r, o)
	offsetOf := func(name string) int64 {
		g, ok := s.Stored(name)
		if !ok {
			return -1
		}
		return g.Offsets[0]
	}

	s.Put(map[string]*Group{"g": {Topic: "orders", Offsets: map[int32]int64{0: 3}}})
	require.Equal(t, int64(3), offsetOf("g"), "a replay is what the log holds")

	s.Set("g", "orders", []wire.PartitionOffset{{Partition: 0, Offset: 5}}, nil)
	require.Equal(t, int64(3), offsetOf("g"), "a change not yet written")
	g, _ := s.Group("g")
	require.Equal(t, int64(5), g.Offsets[0], "the store itself has it")
	require.NoError(t, s.Flush())
	require.Equal(t, int64(5), offsetOf("g"))

	r.fail["g"] = errors.New("no quorum")
	require.Error(t, commit(s, "g", 0, 7))
	require.Equal(t, int64(5), offsetOf("g"), "a failed write stored nothing")
	delete(r.fail, "g")

	// Handed away while its write is in flight, then taken in again with
	// a newer replay: the late answer does not take it back.
	r.during = func() {
		s.Forget(func(string) bool { return true })
		s.Put(map[string]*Group{"g": {Topic: "orders", Offsets: map[int32]int64{0: 9}}})
	}
	s.Set("g", "orders", []wire.PartitionOffset{{Partition: 0, Offset: 8}}, nil)
	require.NoError(t, s.Flush())
	require.Equal(t, int64(9), offsetOf("g"))
	r.during = nil

	s.Remove("g", nil)
	require.Equal(t, int64(9), offsetOf("g"), "a removal not yet written")
	require.NoError(t, s.Flush())
	require.Equal(t, int64(-1), offsetOf("g"))

	s.Put(map[string]*Group{"h": {Topic: "orders", Offsets: map[int32]int64{0: 1}}})
	s.Forget(func(name string) bool { return name == "h" })
	require.Equal(t, int64(-1), offsetOf("h"), "a group handed away")
}

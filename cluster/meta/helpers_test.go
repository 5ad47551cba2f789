package meta

import (
	"fmt"

	"github.com/stretchr/testify/require"
)

// applier applies entries to a state at increasing indexes, checking the
// state after each.
type applier struct {
	t     require.TestingT
	s     *State
	index uint64
}

func newApplier(t require.TestingT) *applier { return &applier{t: t, s: New()} }

// cluster returns an applier whose state has the given nodes, active.
func cluster(t require.TestingT, ids ...uint64) *applier {
	a := newApplier(t)
	for _, id := range ids {
		a.ok(addNode(id))
	}
	return a
}

func addNode(id uint64) AddNode {
	return AddNode{ID: id, ClientAddr: fmt.Sprintf("n%d:7400", id), ClusterAddr: fmt.Sprintf("n%d:7401", id),
		HTTPAddr: fmt.Sprintf("n%d:8080", id)}
}

func (a *applier) apply(data []byte) (Result, error) {
	a.index++
	res, err := a.s.Apply(a.index, data)
	require.NoError(a.t, a.s.check(), "state after %s", data)
	return res, err
}

// ok applies cmd and requires it to succeed.
func (a *applier) ok(cmd Command) Result {
	res, err := a.apply(cmd.Encode())
	require.NoError(a.t, err, "%s", cmd.Encode())
	require.Equal(a.t, a.index, res.Index)
	require.Equal(a.t, cmd.op(), res.Op)
	return res
}

// fail applies data and requires it to fail with want, changing nothing
// but Version.
func (a *applier) fail(data []byte, want error) {
	before := a.s.Clone()
	res, err := a.apply(data)
	require.ErrorIs(a.t, err, want, "%s", data)
	require.Equal(a.t, Result{Index: a.index, Op: res.Op}, res, "an error result carries no changes")
	require.Equal(a.t, a.index, a.s.Version())
	before.version = a.index
	requireSameState(a.t, before, a.s)
}

func requireSameState(t require.TestingT, want, got *State) {
	require.Equal(t, want, got)
	wb, err := want.MarshalSnapshot()
	require.NoError(t, err)
	gb, err := got.MarshalSnapshot()
	require.NoError(t, err)
	require.Equal(t, string(wb), string(gb))
}

// replicas returns partition p's replicas.
func (a *applier) replicas(topic string, p int) []uint64 {
	info, ok := a.s.Partition(topic, p)
	require.True(a.t, ok, "%s/%d", topic, p)
	return info.Replicas
}

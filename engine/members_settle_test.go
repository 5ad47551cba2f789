package engine

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReviewSettledWaitsForPendingConfChange: a configuration change the
// members loop proposed for one metadata can apply after the metadata
// changed back, while the configuration still matches it. The loop must
// not cache the group as settled then, or the change, once applied, would
// leave the group short of a replica the metadata names for as long as
// the leader's term lasts.
func TestReviewSettledWaitsForPendingConfChange(t *testing.T) {
	net, nodes := startReviewReplicas(t)
	lead := leaderOfReplicas(t, nodes)
	all := []uint64{1, 2, 3}
	var gone, kept uint64 // followers: the one the first metadata drops, and the other
	for _, id := range all {
		if id != lead.id {
			if gone == 0 {
				gone = id
			} else {
				kept = id
			}
		}
	}
	c, rep := lead.rep.c, lead.rep
	status := func() ([]uint64, []uint64, bool) {
		st, err := c.host.Status(rep.group)
		require.NoError(t, err)
		return slices.Sorted(slices.Values(st.Voters)), st.Learners, st.ConfPending
	}
	require.Eventually(t, func() bool {
		v, _, _ := status()
		return rep.leader.Load() == lead.id && slices.Equal(v, all)
	}, 30*time.Second, 5*time.Millisecond)

	// The followers' acknowledgements are held: what the leader proposes
	// now does not commit.
	net.set(func() {
		net.holdAck[[2]uint64{gone, lead.id}] = true
		net.holdAck[[2]uint64{kept, lead.id}] = true
	})
	without := slices.DeleteFunc(slices.Clone(all), func(id uint64) bool { return id == gone })
	c.tendReplica(rep, without, nil) // proposes the removal of gone
	require.Eventually(t, func() bool { _, _, p := status(); return p }, 30*time.Second, 5*time.Millisecond)

	// The metadata names gone again before the removal applied; the
	// configuration still has it.
	c.tendReplica(rep, all, nil)
	net.release()
	require.Eventually(t, func() bool { v, _, p := status(); return !p && !slices.Contains(v, gone) },
		30*time.Second, 5*time.Millisecond, "the removal applies")

	// The loop goes on with the same metadata in the same term: it must
	// put gone back.
	require.Eventually(t, func() bool {
		c.tendReplica(rep, all, nil)
		v, l, _ := status()
		return slices.Contains(v, gone) || slices.Contains(l, gone)
	}, 30*time.Second, 20*time.Millisecond, "the group never regains the replica the metadata names")
}

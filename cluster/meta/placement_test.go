package meta

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// drawCluster returns an applier with 1..maxNodes active nodes of random
// distinct ids, and the ids sorted.
func drawCluster(t *rapid.T, minNodes, maxNodes int) (*applier, []uint64) {
	ids := rapid.SliceOfNDistinct(rapid.Uint64Range(1, 100), minNodes, maxNodes, rapid.ID).Draw(t, "nodes")
	a := cluster(t, ids...)
	slices.Sort(ids)
	return a, ids
}

func spread(counts map[uint64]int) int {
	lo, hi := 1<<30, 0
	for _, c := range counts {
		lo, hi = min(lo, c), max(hi, c)
	}
	return hi - lo
}

// TestPlacementBalance: for any 1-7 active nodes and 1-64 partitions, a
// new topic's preferred leaders, and its replicas, are spread within one
// per node, each set has distinct active nodes, whatever other topics and
// draining nodes there are.
func TestPlacementBalance(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, ids := drawCluster(t, 1, 7)
		for i := range rapid.IntRange(0, 2).Draw(t, "others") {
			a.ok(CreateTopic{Name: "other" + string(rune('0'+i)), Partitions: rapid.IntRange(1, 9).Draw(t, "otherPartitions"), Replicas: 1})
		}
		if len(ids) > 1 && rapid.Bool().Draw(t, "drain") {
			a.ok(DrainNode{ID: ids[0]})
			ids = ids[1:]
		}
		name := "t" + rapid.StringMatching(`[a-zA-Z0-9._-]{0,20}`).Draw(t, "name")
		n := rapid.IntRange(1, 64).Draw(t, "partitions")
		r := rapid.SampledFrom([]int{1, 3, 5, 7}).Filter(func(r int) bool { return r <= len(ids) }).Draw(t, "replicas")
		res := a.ok(CreateTopic{Name: name, Partitions: n, Replicas: r})

		leaders, replicas := map[uint64]int{}, map[uint64]int{}
		for _, id := range ids {
			leaders[id], replicas[id] = 0, 0
		}
		for _, p := range res.Partitions {
			require.Len(t, p.Replicas, r)
			for k, id := range p.Replicas {
				require.NotContains(t, p.Replicas[:k], id, "distinct")
				require.Contains(t, leaders, id, "active")
				replicas[id]++
			}
			leaders[p.Replicas[0]]++
		}
		require.LessOrEqual(t, spread(leaders), 1, "leaders %v", leaders)
		require.LessOrEqual(t, spread(replicas), 1, "replicas %v", replicas)
	})
}

// TestPlacementFreshCluster: with one topic, the cluster's LeaderCounts
// are even too.
func TestPlacementFreshCluster(t *testing.T) {
	for m := 1; m <= 7; m++ {
		for n := 1; n <= 64; n++ {
			ids := make([]uint64, m)
			for i := range ids {
				ids[i] = uint64(10 * (i + 1))
			}
			a := cluster(t, ids...)
			a.ok(CreateTopic{Name: "t", Partitions: n, Replicas: DefaultReplicas(m)})
			counts := a.s.LeaderCounts()
			require.Len(t, counts, m)
			require.LessOrEqual(t, spread(counts), 1, "%d nodes, %d partitions: %v", m, n, counts)
		}
	}
}

// drawTopics creates a few topics on a's active nodes and shuffles some
// replica sets, so the sets are not the placement's.
func drawTopics(t *rapid.T, a *applier, ids []uint64, maxPartitions int) {
	for i := range rapid.IntRange(1, 3).Draw(t, "topics") {
		name := string(rune('a' + i))
		r := rapid.SampledFrom([]int{1, 3, 5}).Filter(func(r int) bool { return r <= len(ids) }).Draw(t, "replicas")
		n := rapid.IntRange(1, maxPartitions).Draw(t, "partitions")
		a.ok(CreateTopic{Name: name, Partitions: n, Replicas: r})
		for p := range n {
			if rapid.Bool().Draw(t, "move") {
				set := rapid.Permutation(ids).Draw(t, "set")[:r]
				if _, err := a.apply(MoveReplicas{Topic: name, Partition: p, Replicas: set}.Encode()); err != nil {
					t.Fatalf("move: %v", err)
				}
			}
		}
	}
}

// TestRemoveNodeProperty: removing a node keeps every replica set's size
// and distinct nodes, takes the node out of all of them, and changes only
// the sets the moves name, by one replica each. When it fails, some set
// holding the node really has every active node already.
func TestRemoveNodeProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, ids := drawCluster(t, 1, 8)
		drawTopics(t, a, ids, 8)
		if len(ids) > 2 && rapid.Bool().Draw(t, "drain") {
			a.ok(DrainNode{ID: rapid.SampledFrom(ids).Draw(t, "drained")})
		}
		gone := rapid.SampledFrom(ids).Draw(t, "removed")
		before := a.s.Clone()
		res, err := a.apply(RemoveNode{ID: gone}.Encode())
		if err != nil {
			require.ErrorIs(t, err, ErrNotEnoughNodes)
			active := before.ActiveNodes()
			stuck := false
			for _, ref := range before.partitions() {
				set := before.part(ref).Replicas
				if contains(set, gone) && len(missing(active, append(slices.Clone(set), gone))) == 0 {
					stuck = true
				}
			}
			require.True(t, stuck, "refused, but every set had a node to take the replica")
			return
		}
		moved := map[partRef]Move{}
		for _, m := range res.Moves {
			moved[partRef{m.Topic, m.Partition}] = m
		}
		for _, ref := range before.partitions() {
			old, now := before.part(ref).Replicas, a.s.part(ref).Replicas
			m, ok := moved[ref]
			if !contains(old, gone) {
				require.False(t, ok)
				require.Equal(t, old, now)
				continue
			}
			require.True(t, ok, "%v holds the removed node", ref)
			require.Equal(t, old, m.Old)
			require.Equal(t, now, m.New)
			require.Len(t, now, len(old))
			require.Equal(t, []uint64{gone}, m.Removed())
			require.Len(t, m.Added(), 1)
			n, _ := a.s.Node(m.Added()[0])
			require.Equal(t, NodeActive, n.Status)
		}
		require.Len(t, moved, len(res.Moves))
	})
}

// TestRebalanceOptimal checks Rebalance against brute force on small
// clusters: the preferred leaderships' spread over the active nodes is
// the best any choice within the replica sets gives (the least sum of
// squared counts), the sets keep their nodes, the changes are what the
// Result says, and a second Rebalance changes nothing.
func TestRebalanceOptimal(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, ids := drawCluster(t, 2, 6)
		drawTopics(t, a, ids, 3)
		if len(ids) > 2 && rapid.Bool().Draw(t, "drain") {
			a.ok(DrainNode{ID: rapid.SampledFrom(ids).Draw(t, "drained")})
		}
		before := a.s.Clone()
		res := a.ok(Rebalance{})

		var cands [][]uint64
		for _, ref := range before.partitions() {
			old, now := before.part(ref).Replicas, a.s.part(ref).Replicas
			require.ElementsMatch(t, old, now)
			var c []uint64
			for _, id := range old {
				if n, _ := a.s.Node(id); n.Status == NodeActive {
					c = append(c, id)
				}
			}
			if len(c) > 0 {
				cands = append(cands, c)
				n, _ := a.s.Node(now[0])
				require.Equal(t, NodeActive, n.Status, "an active replica leads where there is one")
			}
			if old[0] != now[0] {
				require.Contains(t, res.Leaders, LeaderChange{Topic: ref.topic, Partition: ref.index,
					Group: before.part(ref).Group, From: old[0], To: now[0]})
			}
		}
		changed := 0
		for _, ref := range before.partitions() {
			if before.part(ref).Replicas[0] != a.s.part(ref).Replicas[0] {
				changed++
			}
		}
		require.Len(t, res.Leaders, changed)
		require.Equal(t, bestSquares(cands, map[uint64]int{}, 0), squares(activeLeaderCounts(a.s)))
		require.True(t, a.ok(Rebalance{}).Unchanged)
	})
}

func activeLeaderCounts(s *State) map[uint64]int {
	counts := map[uint64]int{}
	for _, ref := range s.partitions() {
		if id := s.part(ref).Replicas[0]; s.nodes[id].Status == NodeActive {
			counts[id]++
		}
	}
	return counts
}

func squares(counts map[uint64]int) int {
	sum := 0
	for _, c := range counts {
		sum += c * c
	}
	return sum
}

// bestSquares is the least sum of squared leader counts over every choice
// of leader for partitions i.. among cands[i].
func bestSquares(cands [][]uint64, load map[uint64]int, i int) int {
	if i == len(cands) {
		return squares(load)
	}
	best := -1
	for _, id := range cands[i] {
		load[id]++
		if s := bestSquares(cands, load, i+1); best < 0 || s < best {
			best = s
		}
		load[id]--
	}
	return best
}

// TestRebalanceLarge: a cluster whose leaderships all sit on one node is
// evened out, and promptly (this runs on the controller's goroutine).
func TestRebalanceLarge(t *testing.T) {
	ids := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	a := cluster(t, ids...)
	a.ok(CreateTopic{Name: "big", Partitions: 4000, Replicas: 3})
	for p := range 4000 {
		set := a.replicas("big", p)
		if i := indexOf(set, 1); i > 0 {
			set[0], set[i] = set[i], set[0]
			a.ok(MoveReplicas{Topic: "big", Partition: p, Replicas: set})
		}
	}
	require.Equal(t, 1200, a.s.LeaderCounts()[1])
	res := a.ok(Rebalance{})
	require.LessOrEqual(t, spread(a.s.LeaderCounts()), 1, "%v", a.s.LeaderCounts())
	require.Len(t, res.Leaders, 1200-400, "only what must move moves")
}

package assign

import (
	"fmt"
	"math/bits"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// assignPool is every member id the property tests draw from.
var assignPool = []string{"m00", "m01", "m02", "m03", "m04", "m05", "m06", "m07", "m08", "m09", "m10", "m11"}

// assignMoves counts the partitions whose owner changed.
func assignMoves(prev, got []string) int {
	moves := 0
	for i := range got {
		if got[i] != prev[i] {
			moves++
		}
	}
	return moves
}

// assignMinMoves is the fewest moves any balanced assignment can make, by
// trying every choice of which members get the extra partition.
func assignMinMoves(n int, members, prev []string) int {
	m := len(members)
	prevCount := make([]int, m)
	for _, p := range prev {
		if i, ok := slices.BinarySearch(members, p); ok {
			prevCount[i]++
		}
	}
	best := 0
	for mask := 0; mask < 1<<m; mask++ {
		if bits.OnesCount(uint(mask)) != n%m {
			continue
		}
		kept := 0
		for i, c := range prevCount {
			kept += min(c, n/m+(mask>>i)&1)
		}
		best = max(best, kept)
	}
	return n - best
}

// checkAssign asserts got is a complete, balanced and minimally moving
// assignment of n partitions to members, and returns each member's count.
func checkAssign(t require.TestingT, n int, members, prev, got []string) map[string]int {
	require.Len(t, got, n)
	count := make(map[string]int, len(members))
	for _, id := range members {
		count[id] = 0
	}
	for i, o := range got {
		_, live := count[o]
		require.True(t, live, "partition %d owned by %q, not a live member", i, o)
		count[o]++
	}
	lo, hi := n, 0
	for _, c := range count {
		lo, hi = min(lo, c), max(hi, c)
	}
	require.LessOrEqual(t, hi-lo, 1, "unbalanced: %v", count)
	require.Equal(t, assignMinMoves(n, members, prev), assignMoves(prev, got),
		"not minimal: prev %v got %v", prev, got)
	return count
}

func TestAssignProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 64).Draw(rt, "n")
		members := rapid.SliceOfNDistinct(rapid.SampledFrom(assignPool), 1, len(assignPool), rapid.ID[string]).Draw(rt, "members")
		slices.Sort(members)
		owners := append([]string{""}, assignPool...)
		prev := rapid.SliceOfN(rapid.SampledFrom(owners), n, n).Draw(rt, "prev")

		got := Sticky(n, members, prev)
		checkAssign(rt, n, members, prev, got)
		require.Equal(rt, got, Sticky(n, members, prev), "not deterministic")
	})
}

// TestAssignRebalanceSequence joins and leaves members one at a time. Every
// state is a balanced assignment over the live members, so a join moves
// exactly what the newcomer receives and a leave exactly what the leaver had.
func TestAssignRebalanceSequence(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 64).Draw(rt, "n")
		members := rapid.SliceOfNDistinct(rapid.SampledFrom(assignPool), 1, len(assignPool), rapid.ID[string]).Draw(rt, "members")
		slices.Sort(members)
		prev := make([]string, n)
		cur := Sticky(n, members, prev)
		checkAssign(rt, n, members, prev, cur)

		steps := rapid.IntRange(1, 20).Draw(rt, "steps")
		for range steps {
			join := rapid.Bool().Draw(rt, "join")
			if len(members) == 1 {
				join = true
			} else if len(members) == len(assignPool) {
				join = false
			}
			prev = cur
			if join {
				members, cur = assignJoin(rt, n, members, prev)
			} else {
				members, cur = assignLeave(rt, n, members, prev)
			}
		}
	})
}

func assignJoin(rt *rapid.T, n int, members, prev []string) ([]string, []string) {
	var dead []string
	for _, id := range assignPool {
		if !slices.Contains(members, id) {
			dead = append(dead, id)
		}
	}
	id := rapid.SampledFrom(dead).Draw(rt, "joiner")
	i, _ := slices.BinarySearch(members, id)
	members = slices.Insert(slices.Clone(members), i, id)
	cur := Sticky(n, members, prev)
	count := checkAssign(rt, n, members, prev, cur)
	require.Contains(rt, []int{n / len(members), (n + len(members) - 1) / len(members)}, count[id])
	require.Equal(rt, count[id], assignMoves(prev, cur), "join of %s moved others' partitions", id)
	return members, cur
}

func assignLeave(rt *rapid.T, n int, members, prev []string) ([]string, []string) {
	id := rapid.SampledFrom(members).Draw(rt, "leaver")
	had := 0
	for _, o := range prev {
		if o == id {
			had++
		}
	}
	i, _ := slices.BinarySearch(members, id)
	members = slices.Delete(slices.Clone(members), i, i+1)
	cur := Sticky(n, members, prev)
	checkAssign(rt, n, members, prev, cur)
	require.Equal(rt, had, assignMoves(prev, cur), "leave of %s moved others' partitions", id)
	return members, cur
}

func TestAssignExamples(t *testing.T) {
	got := Sticky(6, []string{"a", "b", "c"}, make([]string, 6))
	require.Equal(t, []string{"a", "b", "c", "a", "b", "c"}, got)

	// d joins: a and b owned the most, so they keep 2 and c drops to 1.
	// Only c's last partition moves, to d.
	joined := Sticky(6, []string{"a", "b", "c", "d"}, got)
	require.Equal(t, []string{"a", "b", "c", "a", "b", "d"}, joined)
	require.Equal(t, 1, assignMoves(got, joined))

	// c leaves: its one partition goes to d, the only member below 2.
	left := Sticky(6, []string{"a", "b", "d"}, joined)
	require.Equal(t, []string{"a", "b", "d", "a", "b", "d"}, left)

	// Everyone is replaced: a fresh fill, fewest first, ties by id.
	replaced := Sticky(5, []string{"x", "y"}, []string{"a", "b", "", "c", "a"})
	require.Equal(t, []string{"x", "y", "x", "y", "x"}, replaced)

	// Over-quota owners keep their lowest partitions.
	skewed := Sticky(4, []string{"a", "b"}, []string{"a", "a", "a", "a"})
	require.Equal(t, []string{"a", "a", "b", "b"}, skewed)

	require.Empty(t, Sticky(0, []string{"a"}, nil))
}

func TestAssignFreshIsBalancedAndDeterministic(t *testing.T) {
	for _, tc := range []struct{ n, m int }{{1, 1}, {1, 5}, {7, 3}, {64, 12}, {1000, 7}} {
		t.Run(fmt.Sprintf("n%d_m%d", tc.n, tc.m), func(t *testing.T) {
			members := make([]string, tc.m)
			for i := range members {
				members[i] = fmt.Sprintf("m%02d", i)
			}
			prev := make([]string, tc.n)
			got := Sticky(tc.n, members, prev)
			checkAssign(t, tc.n, members, prev, got)
			require.Equal(t, got, Sticky(tc.n, members, prev))
		})
	}
}

func BenchmarkAssign(b *testing.B) {
	const n, m = 65536, 3000
	members := make([]string, m)
	for i := range members {
		members[i] = fmt.Sprintf("m%05d", i)
	}
	prev := Sticky(n, members[:m-1], make([]string, n))
	b.ReportAllocs()
	for b.Loop() {
		Sticky(n, members, prev)
	}
}

// Package assign decides which member of a consumer group owns each
// partition. It is a pure function of the group's members and the
// previous owners, with no clock, I/O or broker state, so the group
// coordinator (engine) calls it under its lock and the tests check it
// against a brute-force model. It imports the standard library only.
package assign

import (
	"cmp"
	"container/heap"
	"slices"
)

// Sticky returns, for each of n partitions, the member that owns it.
// members is the sorted list of live member ids (non-empty). prev[i] is
// partition i's previous owner ("" for none); it may name members that are
// no longer live, and len(prev) == n.
//
// It is a sticky assignor in the manner of Kafka's: balanced first, then as
// few moves as possible, then deterministic.
//
//  1. Quotas. Every member may own floor(n/m) partitions, and the n%m
//     members that owned the most before (ties by id) one more. A balanced
//     assignment keeps at most the sum over members of min(previous count,
//     quota) partitions where they were, and handing the spare slots to the
//     biggest previous owners makes that sum as large as it can be.
//  2. Keep. In ascending partition order, a partition stays with its
//     previous owner while that owner is live and under quota; this reaches
//     the sum above, so no other balanced assignment moves fewer.
//  3. Fill. The rest (orphaned or over quota), in ascending partition
//     order, each go to the member below quota that owns the fewest so far,
//     ties by id.
//
// Cost is O(n log m + m log m) time and O(n + m) space.
func Sticky(n int, members []string, prev []string) []string {
	if len(members) == 0 || len(prev) != n {
		panic("assign: Sticky needs live members and one previous owner per partition")
	}
	owner, prevCount := liveOwners(members, prev)
	quota := assignQuotas(n, prevCount)
	count := keepOwners(owner, quota)
	fillOwners(owner, count, quota)
	out := make([]string, n)
	for i, o := range owner {
		out[i] = members[o]
	}
	return out
}

// liveOwners maps each partition's previous owner to its index in members,
// -1 if it has none or is gone, and counts the partitions each member had.
func liveOwners(members, prev []string) (owner, prevCount []int) {
	index := make(map[string]int, len(members))
	for i, id := range members {
		index[id] = i
	}
	owner = make([]int, len(prev))
	prevCount = make([]int, len(members))
	for i, id := range prev {
		o, ok := index[id]
		if !ok {
			o = -1
		} else {
			prevCount[o]++
		}
		owner[i] = o
	}
	return owner, prevCount
}

// assignQuotas gives every member floor(n/m) and the n%m members with the
// largest previous counts one more; the stable sort breaks ties by id.
func assignQuotas(n int, prevCount []int) []int {
	m := len(prevCount)
	quota := make([]int, m)
	order := make([]int, m)
	for i := range quota {
		quota[i] = n / m
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Compare(prevCount[b], prevCount[a])
	})
	for _, i := range order[:n%m] {
		quota[i]++
	}
	return quota
}

// keepOwners leaves each partition with its previous owner while that owner
// is under quota and sets the rest to -1; it returns the members' counts.
func keepOwners(owner, quota []int) []int {
	count := make([]int, len(quota))
	for i, o := range owner {
		if o >= 0 && count[o] < quota[o] {
			count[o]++
		} else {
			owner[i] = -1
		}
	}
	return count
}

// fillOwners gives each unowned partition, in ascending order, to the member
// below quota that owns the fewest, ties by id.
func fillOwners(owner, count, quota []int) {
	h := &fillHeap{count: count}
	for i := range count {
		if count[i] < quota[i] {
			h.ids = append(h.ids, i)
		}
	}
	heap.Init(h)
	for i, o := range owner {
		if o >= 0 {
			continue
		}
		top := h.ids[0]
		owner[i] = top
		count[top]++
		if count[top] < quota[top] {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
}

// fillHeap orders member indices by current count, then by index, which is
// id order because members is sorted.
type fillHeap struct {
	ids   []int
	count []int
}

func (h *fillHeap) Len() int { return len(h.ids) }

func (h *fillHeap) Less(a, b int) bool {
	ca, cb := h.count[h.ids[a]], h.count[h.ids[b]]
	return ca < cb || (ca == cb && h.ids[a] < h.ids[b])
}

func (h *fillHeap) Swap(a, b int) { h.ids[a], h.ids[b] = h.ids[b], h.ids[a] }

func (h *fillHeap) Push(x any) { h.ids = append(h.ids, x.(int)) }

func (h *fillHeap) Pop() any {
	last := h.ids[len(h.ids)-1]
	h.ids = h.ids[:len(h.ids)-1]
	return last
}

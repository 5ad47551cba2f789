package meta

import (
	"cmp"
	"fmt"
	"slices"
)

// place returns the replica sets of a new topic's n partitions, r replicas
// each, over the sorted active nodes (r <= len(nodes)).
//
// Partition p's preferred leader is nodes[(start+p) mod m], where start is
// the topic name's hash: each node leads n/m partitions of the topic, give
// or take one, and topics start at different nodes. The followers are the
// nodes with the least load, ties going to the nearest after the leader in
// ring order; a node's load counts its replicas of the topic so far and
// the leaderships still ahead of it. Counting the leaderships ahead keeps
// the nodes' replica counts within one of each other as well (greedy on
// the replicas so far alone does not: 5 partitions of 3 replicas on 5
// nodes came out 4 and 2).
func place(name string, n, r int, nodes []uint64) [][]uint64 {
	m := len(nodes)
	start := int(fnv1a(name) % uint64(m))
	// load is each node's replicas of the topic so far plus the
	// leaderships still ahead of it, which it must take whatever happens.
	load := make([]int, m)
	for p := range n {
		load[(start+p)%m]++
	}
	out := make([][]uint64, n)
	for p := range n {
		lead := (start + p) % m
		idx := []int{lead}
		for len(idx) < r {
			best := -1
			for d := 1; d < m; d++ {
				i := (lead + d) % m
				if !slices.Contains(idx, i) && (best < 0 || load[i] < load[best]) {
					best = i
				}
			}
			idx = append(idx, best)
			load[best]++
		}
		set := make([]uint64, r)
		for k, i := range idx {
			set[k] = nodes[i]
		}
		out[p] = set
	}
	return out
}

// planRemoval returns the moves that take node id out of every replica
// set: the node's place goes to the active node with the fewest replicas
// (ties to the lower id) that is not in the set already, appended last, so
// the preferred leader is a replica that has the data. An error if some
// set has no such node.
func (s *State) planRemoval(id uint64) ([]Move, error) {
	counts := s.replicaCounts()
	delete(counts, id)
	candidates := sortedKeys(counts)
	var moves []Move
	for _, ref := range s.partitions() {
		p := s.part(ref)
		if !slices.Contains(p.Replicas, id) {
			continue
		}
		to := uint64(0)
		for _, c := range candidates {
			if !slices.Contains(p.Replicas, c) && (to == 0 || counts[c] < counts[to]) {
				to = c
			}
		}
		if to == 0 {
			return nil, fmt.Errorf("%w: partition %d of %q has no active node to replace node %d",
				ErrNotEnoughNodes, ref.index, ref.topic, id)
		}
		counts[to]++
		next := append(slices.DeleteFunc(slices.Clone(p.Replicas), func(r uint64) bool { return r == id }), to)
		moves = append(moves, Move{Topic: ref.topic, Partition: ref.index, Group: p.Group,
			Old: slices.Clone(p.Replicas), New: next})
	}
	return moves, nil
}

// spreadReplicas moves one replica at a time from the active node holding
// the most to the active node holding
// the fewest that is not in the partition's set, while that lowers the
// spread, partitions in order. The new replica takes the moved one's
// place in the set, except at the front: a preferred leader that has no
// data yet would be handed leaderships before it can take them, so it
// goes last.
func (s *State) spreadReplicas() []Move {
	counts := s.replicaCounts()
	active := sortedKeys(counts)
	if len(active) < 2 {
		return nil
	}
	refs := s.partitions()
	byNode := map[uint64][]partRef{}
	for _, ref := range refs {
		for _, id := range s.part(ref).Replicas {
			byNode[id] = append(byNode[id], ref)
		}
	}
	var moves []Move
	for {
		from, to, ref, ok := s.nextSpread(counts, active, byNode)
		if !ok {
			return moves
		}
		p := s.part(ref)
		old := slices.Clone(p.Replicas)
		next := slices.Clone(p.Replicas)
		if i := slices.Index(next, from); i == 0 {
			next = append(next[1:], to)
		} else {
			next[i] = to
		}
		p.Initial = p.initial()
		p.Replicas = next
		counts[from]--
		counts[to]++
		byNode[from] = slices.DeleteFunc(byNode[from], func(r partRef) bool { return r == ref })
		byNode[to] = append(byNode[to], ref)
		moves = append(moves, Move{Topic: ref.topic, Partition: ref.index, Group: p.Group, Old: old, New: slices.Clone(next)})
	}
}

// nextSpread picks the next replica move of spreadReplicas: from the most
// loaded active node (ties to the lower id) to the least loaded one that
// lacks one of its partitions, if that holds at least two fewer.
func (s *State) nextSpread(counts map[uint64]int, active []uint64, byNode map[uint64][]partRef) (from, to uint64, ref partRef, ok bool) {
	froms := slices.Clone(active)
	slices.SortStableFunc(froms, func(a, b uint64) int { return cmp.Compare(counts[b], counts[a]) })
	tos := slices.Clone(active)
	slices.SortStableFunc(tos, func(a, b uint64) int { return cmp.Compare(counts[a], counts[b]) })
	for _, from := range froms {
		for _, to := range tos {
			if counts[to] > counts[from]-2 {
				break
			}
			for _, ref := range byNode[from] {
				if !slices.Contains(s.part(ref).Replicas, to) {
					return from, to, ref, true
				}
			}
		}
	}
	return 0, 0, partRef{}, false
}

// leadAway makes another active replica, the one preferred leader of the
// fewest partitions (ties to the lower id), the preferred leader of each
// partition node id prefers, where there is one.
func (s *State) leadAway(id uint64) []LeaderChange {
	load := s.LeaderCounts()
	var out []LeaderChange
	for _, ref := range s.partitions() {
		p := s.part(ref)
		if p.Replicas[0] != id {
			continue
		}
		to := uint64(0)
		for _, c := range p.Replicas[1:] {
			if s.nodes[c].Status == NodeActive && (to == 0 || load[c] < load[to] || load[c] == load[to] && c < to) {
				to = c
			}
		}
		if to == 0 {
			continue
		}
		load[id]--
		load[to]++
		out = append(out, s.setPreferred(ref, to))
	}
	return out
}

// setPreferred moves node to to the front of a partition's replicas.
func (s *State) setPreferred(ref partRef, to uint64) LeaderChange {
	p := s.part(ref)
	ch := LeaderChange{Topic: ref.topic, Partition: ref.index, Group: p.Group, From: p.Replicas[0], To: to}
	i := slices.Index(p.Replicas, to)
	copy(p.Replicas[1:i+1], p.Replicas[:i])
	p.Replicas[0] = to
	return ch
}

// rebalance chooses each partition's preferred leader among its active
// replicas so the leaderships are as even as the replica sets allow, and
// reorders the sets to match.
//
// It starts from the current preferred leaders (the first active replica
// where the first is draining) and shifts leaderships along
// cost-reducing paths: a chain from a node leading L partitions, through
// partitions led by one node and replicated on the next, to a node
// leading at most L-2. Shifting along it moves one leadership from the
// first node to the last and leaves the others' counts as they were. With
// no such path left the assignment is optimal: it minimizes the largest
// count, and every other measure of spread (Harvey et al., "Semi-matchings
// for bipartite graphs and load balancing", 2006). Paths of one
// partition are taken first, from the most loaded node that has one;
// each shift ends at the least loaded node its source can reach. So few
// leaderships move (a leadership handed to a node at the mean would have
// to move on again), and a balanced cluster is left as it is.
func (s *State) rebalance() []LeaderChange {
	refs := s.partitions()
	active := s.ActiveNodes()
	pos := make(map[uint64]int, len(active))
	for i, id := range active {
		pos[id] = i
	}
	b := newBalancer(len(active), len(refs))
	for i, ref := range refs {
		for _, id := range s.part(ref).Replicas {
			if k, ok := pos[id]; ok {
				b.cands[i] = append(b.cands[i], k)
			}
		}
		if len(b.cands[i]) > 0 {
			b.setLead(i, b.cands[i][0])
		}
	}
	for b.step() {
	}
	var out []LeaderChange
	for i, ref := range refs {
		if k := b.lead[i]; k >= 0 && active[k] != s.part(ref).Replicas[0] {
			out = append(out, s.setPreferred(ref, active[k]))
		}
	}
	return out
}

// balancer is rebalance's working state, over the active nodes' positions
// in id order. Partition i may be led by any node of cands[i] (its active
// replicas) and is led by lead[i] (-1: none can). Paths are searched on
// the nodes, not the partitions: edge u->v exists when u leads
// edges[u][v] > 0 partitions v replicates, which are listed in
// parts[{u,v}] (lazily: a partition u no longer leads is dropped when
// met). A step costs O(m^2) for m nodes, whatever the partition count.
type balancer struct {
	load  []int
	lead  []int
	cands [][]int
	edges [][]int
	parts map[[2]int][]int
}

func newBalancer(m, n int) *balancer {
	b := &balancer{load: make([]int, m), lead: make([]int, n), cands: make([][]int, n),
		edges: make([][]int, m), parts: map[[2]int][]int{}}
	for i := range b.lead {
		b.lead[i] = -1
	}
	for k := range b.edges {
		b.edges[k] = make([]int, m)
	}
	return b
}

// setLead makes node to the leader of partition i.
func (b *balancer) setLead(i, to int) {
	if from := b.lead[i]; from >= 0 {
		b.load[from]--
		for _, c := range b.cands[i] {
			if c != from {
				b.edges[from][c]--
			}
		}
	}
	b.lead[i] = to
	b.load[to]++
	for _, c := range b.cands[i] {
		if c != to {
			b.edges[to][c]++
			b.parts[[2]int{to, c}] = append(b.parts[[2]int{to, c}], i)
		}
	}
}

// pick returns a partition u leads and v replicates (edges[u][v] > 0).
func (b *balancer) pick(u, v int) int {
	key := [2]int{u, v}
	l := b.parts[key]
	for b.lead[l[len(l)-1]] != u {
		l = l[:len(l)-1]
	}
	b.parts[key] = l[:len(l)-1]
	return l[len(l)-1]
}

// step shifts one leadership along a cost-reducing path, from the most
// loaded node that has one (ties to the lower id): a direct hop if any
// node has one, else the shortest path breadth first. False if there is
// no path.
func (b *balancer) step() bool {
	m := len(b.load)
	srcs := make([]int, m)
	for k := range srcs {
		srcs[k] = k
	}
	slices.SortStableFunc(srcs, func(x, y int) int { return cmp.Compare(b.load[y], b.load[x]) })
	if m == 0 || b.load[srcs[0]] < b.load[srcs[m-1]]+2 {
		return false
	}
	for _, src := range srcs {
		if b.hop(src) {
			return true
		}
	}
	parent := make([]int, m)
	for _, src := range srcs {
		if b.load[src] < b.load[srcs[m-1]]+2 {
			return false
		}
		if b.shiftFrom(src, parent) {
			return true
		}
	}
	return false
}

// hop moves one of src's leaderships straight to the least loaded node
// (ties to the lower id) that replicates one of src's partitions, if that
// leads at least two fewer.
func (b *balancer) hop(src int) bool {
	best := src
	for v, n := range b.edges[src] {
		if n > 0 && b.load[v] < b.load[best] {
			best = v
		}
	}
	if b.load[best] > b.load[src]-2 {
		return false
	}
	b.setLead(b.pick(src, best), best)
	return true
}

// shiftFrom searches breadth first from src for the least loaded node
// that can take a leadership off it, nearest first on ties, and shifts
// along the path to it if that node leads at most load(src)-2.
func (b *balancer) shiftFrom(src int, parent []int) bool {
	for k := range parent {
		parent[k] = -2 // unseen
	}
	parent[src] = -1
	queue := []int{src}
	best := src
	for len(queue) > 0 {
		u := queue[0]
		queue = queue[1:]
		for v, n := range b.edges[u] {
			if n > 0 && parent[v] == -2 {
				parent[v] = u
				queue = append(queue, v)
				if b.load[v] < b.load[best] {
					best = v
				}
			}
		}
	}
	if b.load[best] > b.load[src]-2 {
		return false
	}
	// From the end: each node takes one leadership from its parent, so
	// only src's count falls and best's rises.
	for w := best; w != src; w = parent[w] {
		b.setLead(b.pick(parent[w], w), w)
	}
	return true
}

func sortedKeys(m map[uint64]int) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// fnv1a is the 64-bit FNV-1a hash of s. Placement and coordinators depend
// on it, so it is part of the format.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is splitmix64's finalizer: it spreads every input bit over the
// output, so nearby node ids get unrelated rendezvous scores.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

package transport

import (
	"cmp"
	"container/heap"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// Faults are the random faults of a MemNetwork, applied to each message
// on Send. Probabilities are in [0, 1].
type Faults struct {
	// Drop is the probability that a message is lost.
	Drop float64
	// Duplicate is the probability that a message is delivered twice.
	Duplicate float64
	// Reorder is the probability that a message is held back and
	// delivered after the messages of the next Send on the same link (or
	// at Flush).
	Reorder float64
	// Delay is added to every message's delivery, plus a random part in
	// [0, Jitter). Delayed messages can overtake each other, and with a
	// delay the delivery order depends on the clock: it is no longer
	// determined by the seed.
	Delay, Jitter time.Duration
}

// MemStats are a MemNetwork's counters, in messages (a duplicate counts
// once more in Duplicated and again when delivered).
type MemStats struct {
	Sent       uint64 // passed to Send
	Delivered  uint64 // handed to a handler
	Dropped    uint64 // lost to Faults.Drop
	Blocked    uint64 // lost to a partition, isolation or cut, or sent from or to a closed or unknown node
	Duplicated uint64
	Reordered  uint64
	Delayed    uint64
}

// MemNetwork is an in-memory network between the nodes of one process,
// for tests: Node makes each node's Transport, and faults (Faults, and
// Partition, Isolate, Cut) can change at any time from any goroutine.
//
// Delivery runs on a single dispatcher goroutine from an ordered queue:
// Send decides each message's fate (all random draws come from one source
// seeded by NewMemNetwork, under the network's lock) and appends what
// survives to the queue; the dispatcher hands queued messages to the
// handlers one call at a time, consecutive messages of one link in one
// call. So when no delay is configured and Sends come in a given order
// (one goroutine, or goroutines that take turns), the same seed gives the
// same drops, duplicates, reorderings and delivery order. Topology faults
// apply at Send: a message already queued when a link is cut is still
// delivered. Every message is delivered as a copy (its encoding, decoded), so the
// receiver shares nothing with the sender, as over TCP.
//
// A slow handler holds up every delivery: handlers should queue, as with
// TCP.
type MemNetwork struct {
	mu     sync.Mutex
	cond   *sync.Cond // broadcast when a delivery finishes, for Flush and Close
	rng    *rand.Rand
	faults Faults
	nodes  map[uint64]*memNode

	side     map[uint64]int // a node's side of the partition; nil when none
	isolated map[uint64]bool
	cut      map[memLink]bool     // one-way cuts
	held     map[memLink][]memMsg // reordered messages held behind the link's next Send
	queue    []memMsg             // ready to deliver, in order
	delayed  memHeap              // delayed messages by due time
	epochs   map[uint64]int       // messages in flight by the Flush epoch they were sent in
	epoch    uint64               // the current Flush epoch
	busy     *memNode             // the node whose handler the dispatcher is calling
	closed   bool
	stats    MemStats

	wake chan struct{} // one token: the queue or the delayed heap changed
	done chan struct{} // closed by Close
	wg   sync.WaitGroup
}

type memLink struct{ from, to uint64 }

// memMsg is one message in flight.
type memMsg struct {
	link  memLink
	to    *memNode // the receiver when sent: a restarted node does not get its predecessor's messages
	env   Envelope
	epoch uint64
	due   time.Time // for delayed messages
	seq   uint64    // tie-break of equal due times, so the heap is stable
}

// NewMemNetwork returns a network without nodes or faults whose random
// faults are drawn from seed.
func NewMemNetwork(seed int64) *MemNetwork {
	n := &MemNetwork{
		rng:      rand.New(rand.NewPCG(uint64(seed), 0x5241544154)),
		nodes:    map[uint64]*memNode{},
		isolated: map[uint64]bool{},
		cut:      map[memLink]bool{},
		held:     map[memLink][]memMsg{},
		epochs:   map[uint64]int{},
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	n.cond = sync.NewCond(&n.mu)
	n.wg.Add(1)
	go n.dispatch()
	return n
}

// Node attaches node id with its handler and returns its transport. An id
// may be attached again once its earlier transport is closed (a restart);
// attaching an id that is attached panics, as a test's mistake.
func (n *MemNetwork) Node(id uint64, h Handler) Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[id] != nil {
		panic("transport: MemNetwork node attached twice")
	}
	nd := &memNode{net: n, id: id, h: h}
	if !n.closed {
		n.nodes[id] = nd
	} else {
		nd.closed = true
	}
	return nd
}

// SetFaults replaces the random faults.
func (n *MemNetwork) SetFaults(f Faults) {
	n.mu.Lock()
	n.faults = f
	n.mu.Unlock()
}

// Partition splits the nodes into sides that only talk within
// themselves; a node named in no group is alone on a side of its own.
// It replaces an earlier partition; isolations and cuts stay.
func (n *MemNetwork) Partition(groups ...[]uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.side = map[uint64]int{}
	for i, g := range groups {
		for _, id := range g {
			n.side[id] = i + 1
		}
	}
}

// Isolate cuts node id off from every other node, both ways.
func (n *MemNetwork) Isolate(id uint64) {
	n.mu.Lock()
	n.isolated[id] = true
	n.mu.Unlock()
}

// Cut cuts the link between a and b, both ways.
func (n *MemNetwork) Cut(a, b uint64) {
	n.mu.Lock()
	n.cut[memLink{a, b}], n.cut[memLink{b, a}] = true, true
	n.mu.Unlock()
}

// CutOneWay cuts the link from one node to another; the other way stays.
func (n *MemNetwork) CutOneWay(from, to uint64) {
	n.mu.Lock()
	n.cut[memLink{from, to}] = true
	n.mu.Unlock()
}

// Heal removes the partition, isolations and cuts; the random faults stay
// (SetFaults(Faults{}) clears them).
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	n.side = nil
	clear(n.isolated)
	clear(n.cut)
	n.mu.Unlock()
}

// Stats returns the network's counters.
func (n *MemNetwork) Stats() MemStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Flush releases the held-back (reordered) messages and waits until every
// message sent before the call was delivered or dropped, delayed ones
// included. It must not be called from a handler.
func (n *MemNetwork) Flush() {
	n.mu.Lock()
	defer n.mu.Unlock()
	// In link order, not the map's, so the seed decides the order.
	links := slices.SortedFunc(maps.Keys(n.held), func(a, b memLink) int {
		return cmp.Or(cmp.Compare(a.from, b.from), cmp.Compare(a.to, b.to))
	})
	for _, l := range links {
		n.enqueue(n.held[l]...)
		delete(n.held, l)
	}
	e := n.epoch
	n.epoch++
	for !n.closed && n.inFlightUpTo(e) {
		n.cond.Wait()
	}
}

func (n *MemNetwork) inFlightUpTo(e uint64) bool {
	for ep, c := range n.epochs {
		if ep <= e && c > 0 {
			return true
		}
	}
	return false
}

// Close stops the dispatcher and closes every node; what is in flight is
// dropped.
func (n *MemNetwork) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	for _, nd := range n.nodes {
		nd.closed = true
	}
	clear(n.nodes)
	n.queue, n.delayed = nil, nil
	clear(n.held)
	clear(n.epochs)
	close(n.done)
	n.cond.Broadcast()
	n.mu.Unlock()
	n.wg.Wait()
	return nil
}

// reaches reports whether the topology lets from talk to to.
func (n *MemNetwork) reaches(from, to uint64) bool {
	if n.isolated[from] || n.isolated[to] || n.cut[memLink{from, to}] {
		return false
	}
	return n.side == nil || (n.side[from] != 0 && n.side[from] == n.side[to])
}

// send is Send of node src.
func (n *MemNetwork) send(src *memNode, to uint64, envs []Envelope) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stats.Sent += uint64(len(envs))
	from := src.id
	l := memLink{from, to}
	dst := n.nodes[to]
	if n.closed || src.closed || dst == nil || !n.reaches(from, to) {
		n.stats.Blocked += uint64(len(envs))
		return
	}
	f := n.faults
	queued := false
	var hold []memMsg
	for _, e := range envs {
		if f.Drop > 0 && n.rng.Float64() < f.Drop {
			n.stats.Dropped++
			continue
		}
		copies := 1
		if f.Duplicate > 0 && n.rng.Float64() < f.Duplicate {
			copies = 2
			n.stats.Duplicated++
		}
		for range copies {
			m := memMsg{link: l, to: dst, env: Envelope{Group: e.Group, Msg: clone(e.Msg)}, epoch: n.epoch}
			n.epochs[m.epoch]++
			if f.Reorder > 0 && n.rng.Float64() < f.Reorder {
				n.stats.Reordered++
				hold = append(hold, m)
				continue
			}
			n.schedule(m, f)
			queued = true
		}
	}
	if queued {
		for _, m := range n.held[l] {
			n.schedule(m, f)
		}
		delete(n.held, l)
	}
	n.held[l] = append(n.held[l], hold...)
}

// clone deep-copies m through its encoding, as a real link would.
func clone(m raftpb.Message) raftpb.Message {
	b, err := m.Marshal()
	if err != nil {
		return m
	}
	var c raftpb.Message
	if c.Unmarshal(b) != nil {
		return m
	}
	return c
}

// schedule queues m now, or on the delayed heap when faults delay it.
func (n *MemNetwork) schedule(m memMsg, f Faults) {
	d := f.Delay
	if f.Jitter > 0 {
		d += time.Duration(n.rng.Int64N(int64(f.Jitter)))
	}
	if d <= 0 {
		n.enqueue(m)
		return
	}
	n.stats.Delayed++
	m.due = time.Now().Add(d)
	m.seq = n.stats.Delayed
	heap.Push(&n.delayed, m)
	n.poke()
}

func (n *MemNetwork) enqueue(msgs ...memMsg) {
	if len(msgs) == 0 {
		return
	}
	n.queue = append(n.queue, msgs...)
	n.poke()
}

func (n *MemNetwork) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// maxMemBatch bounds one handler call of the dispatcher.
const maxMemBatch = 256

// dispatch delivers queued messages until Close.
func (n *MemNetwork) dispatch() {
	defer n.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n.mu.Lock()
		n.releaseDue(time.Now())
		if n.closed {
			n.mu.Unlock()
			return
		}
		if len(n.queue) == 0 {
			var due <-chan time.Time
			if len(n.delayed) > 0 {
				timer.Reset(time.Until(n.delayed[0].due))
				due = timer.C
			}
			n.mu.Unlock()
			select {
			case <-n.wake:
			case <-due:
			case <-n.done:
				return
			}
			continue
		}
		n.deliverNext()
	}
}

// releaseDue moves the delayed messages that are due to the queue.
func (n *MemNetwork) releaseDue(now time.Time) {
	for len(n.delayed) > 0 && !n.delayed[0].due.After(now) {
		n.queue = append(n.queue, heap.Pop(&n.delayed).(memMsg))
	}
}

// deliverNext takes the queue's first run of one link and hands it to the
// receiver, unlocked. It is called locked and returns unlocked.
func (n *MemNetwork) deliverNext() {
	l, nd := n.queue[0].link, n.queue[0].to
	k := 1
	for k < len(n.queue) && k < maxMemBatch && n.queue[k].link == l && n.queue[k].to == nd {
		k++
	}
	run := n.queue[:k]
	envs := make([]Envelope, k)
	epochs := make([]uint64, k)
	for i, m := range run {
		envs[i], epochs[i] = m.env, m.epoch
	}
	clear(run)
	n.queue = n.queue[k:]
	if len(n.queue) == 0 {
		n.queue = n.queue[:0:0] // let the drained backing array go
	}
	if nd.closed {
		n.stats.Blocked += uint64(k)
	} else {
		n.busy = nd
		n.mu.Unlock()
		nd.h(l.from, envs)
		n.mu.Lock()
		n.busy = nil
		n.stats.Delivered += uint64(k)
	}
	// Only now are these messages done, for Flush.
	for _, e := range epochs {
		if n.epochs[e]--; n.epochs[e] <= 0 {
			delete(n.epochs, e)
		}
	}
	n.cond.Broadcast()
	n.mu.Unlock()
}

// memNode is one node's Transport on a MemNetwork.
type memNode struct {
	net    *MemNetwork
	id     uint64
	h      Handler
	closed bool // guarded by net.mu
}

func (nd *memNode) Send(to uint64, envs []Envelope) { nd.net.send(nd, to, envs) }

func (nd *memNode) Unreachable(to uint64) bool {
	n := nd.net
	n.mu.Lock()
	defer n.mu.Unlock()
	return nd.closed || n.nodes[to] == nil || !n.reaches(nd.id, to)
}

// Close detaches the node; messages in flight to it are dropped, and once
// Close returns its handler is not called. It must not be called from the
// node's own handler.
func (nd *memNode) Close() error {
	n := nd.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if nd.closed {
		return nil
	}
	nd.closed = true
	if n.nodes[nd.id] == nd {
		delete(n.nodes, nd.id)
	}
	for n.busy == nd && !n.closed {
		n.cond.Wait()
	}
	return nil
}

// memHeap orders delayed messages by due time, then by when they were
// delayed.
type memHeap []memMsg

func (h memHeap) Len() int { return len(h) }
func (h memHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h memHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *memHeap) Push(x any)   { *h = append(*h, x.(memMsg)) }
func (h *memHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	old[len(old)-1] = memMsg{}
	*h = old[:len(old)-1]
	return m
}

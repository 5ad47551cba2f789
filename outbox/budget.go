package outbox

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// Budget bounds the outbound bytes of all connections together: what their
// outboxes queue, what their writers are writing, and what the network
// layer holds unsent for them. Each connection is bounded on its own too
// (its outbox's limit), but a few thousand connections just under that
// limit would hold more memory than the machine has.
//
// Every outbox made by the budget adds each change of what it holds to one
// atomic total (an atomic add per frame queued and per write, nothing per
// message). When an addition takes the total past the limit, a goroutine
// of its own (one at a time) looks at every connection, off the hot path,
// and cuts the furthest behind, those holding the most, as slow consumers
// until the total is back within the limit.
//
// What a cut or closed connection still holds is counted apart (doomed)
// until its connection is gone: it is on its way out, and counting it as
// live would cut more connections while the first ones close.
type Budget struct {
	limit   int64
	live    atomic.Int64 // bytes held for connections that still deliver
	doomed  atomic.Int64 // bytes held for slow or closed connections, until freed
	reaping atomic.Bool  // a reap goroutine runs

	mu  sync.Mutex
	all map[*Outbox]struct{} // every open outbox made by the budget; guarded by mu
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget {
	return &Budget{limit: limit, all: map[*Outbox]struct{}{}}
}

// NewOutbox returns an outbox (see the package function) that counts
// against b until it is closed.
func (b *Budget) NewOutbox(limit, shards int, f Flusher) *Outbox {
	o := NewOutbox(limit, shards, f)
	o.budget = b
	b.mu.Lock()
	b.all[o] = struct{}{}
	b.mu.Unlock()
	return o
}

// Total reports the bytes held for all connections, including those of
// connections being cut or closed.
func (b *Budget) Total() int64 { return b.live.Load() + b.doomed.Load() }

// Limit reports the bound.
func (b *Budget) Limit() int64 { return b.limit }

// add records that an outbox holds d more bytes (d may be negative); dead
// says the outbox is slow or closed. Called with the outbox's mu held.
func (b *Budget) add(d int64, dead bool) {
	if dead {
		b.doomed.Add(d)
		return
	}
	if b.live.Add(d) > b.limit && d > 0 && b.reaping.CompareAndSwap(false, true) {
		go b.reap()
	}
}

// doom moves n bytes of an outbox that just turned slow or closed from
// live to doomed. Called with the outbox's mu held.
func (b *Budget) doom(n int64) {
	if b == nil || n == 0 {
		return
	}
	b.live.Add(-n)
	b.doomed.Add(n)
}

// forget drops a closed outbox from the budget's list.
func (b *Budget) forget(o *Outbox) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.all, o)
	b.mu.Unlock()
}

// reap cuts connections until the live total is within the limit. An
// addition that races with its end is caught by the check after it lets
// go of reaping.
func (b *Budget) reap() {
	for {
		cut := b.cutFurthestBehind()
		b.reaping.Store(false)
		if !cut || b.live.Load() <= b.limit || !b.reaping.CompareAndSwap(false, true) {
			return
		}
	}
}

// cutFurthestBehind cuts the outboxes holding the most first, until the
// live total is within the limit, and reports whether it cut any.
func (b *Budget) cutFurthestBehind() bool {
	type held struct {
		o *Outbox
		n int64
	}
	b.mu.Lock()
	list := make([]held, 0, len(b.all))
	for o := range b.all {
		list = append(list, held{o: o})
	}
	b.mu.Unlock()
	for i := range list {
		list[i].n = list[i].o.pending()
	}
	slices.SortFunc(list, func(x, y held) int { return cmp.Compare(y.n, x.n) })
	cut := false
	for _, h := range list {
		if b.live.Load() <= b.limit || h.n == 0 {
			break
		}
		cut = h.o.cut() || cut
	}
	return cut
}

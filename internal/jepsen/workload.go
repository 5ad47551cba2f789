package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/internal/jepsen/checker"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The workload: producers that publish unique values to explicit
// partitions, and a consumer per partition that fetches it from the
// start, both following each partition's leader on their own (a client
// per node; NOT_LEADER names the leader), and a recorder of everything
// they saw for the checker.

// opTimeout bounds one publish or fetch: past it the outcome is unknown
// and the next attempt tries another node.
const opTimeout = 3 * time.Second

// recorder is the history being written, and counters for the progress
// line.
type recorder struct {
	start time.Time

	mu sync.Mutex
	h  checker.History

	acked, failed, unknown, delivered, jumps atomic.Int64
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) publish(p checker.Publish) {
	switch p.Outcome {
	case checker.Acked:
		r.acked.Add(1)
	case checker.Failed:
		r.failed.Add(1)
	default:
		r.unknown.Add(1)
	}
	r.mu.Lock()
	r.h.Publishes = append(r.h.Publishes, p)
	r.mu.Unlock()
}

// jump records a consumer moving past offsets retention removed.
func (r *recorder) jump(j checker.Jump) {
	r.jumps.Add(1)
	r.mu.Lock()
	r.h.Jumps = append(r.h.Jumps, j)
	r.mu.Unlock()
}

func (r *recorder) deliver(ds []checker.Delivery) {
	r.delivered.Add(int64(len(ds)))
	r.mu.Lock()
	r.h.Deliveries = append(r.h.Deliveries, ds...)
	r.mu.Unlock()
}

// router knows a client per member node and which node leads each
// partition. The members change when a wiped node is replaced (learn the
// new node, forget the old one), under the producers and consumers.
type router struct {
	mu      sync.Mutex
	clients map[int]*client.Client // by node id: the members'
	ids     []int                  // the members, ascending: the order failures move through
	addrs   map[string]int         // a member's client address → its id
	leader  []int                  // by partition: the node believed to lead it
}

// dialAll connects to every node (they must be up).
func dialAll(ctx context.Context, nodes []*node, partitions int) (*router, error) {
	r := &router{clients: map[int]*client.Client{}, addrs: map[string]int{}, leader: make([]int, partitions)}
	for _, n := range nodes {
		if err := r.learn(ctx, n); err != nil {
			r.close()
			return nil, err
		}
	}
	for p := range r.leader {
		r.leader[p] = nodes[p%len(nodes)].id
	}
	return r, nil
}

// learn dials node n and adds it to the members.
func (r *router) learn(ctx context.Context, n *node) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := client.Dial(ctx, n.addr(), client.WithReconnect(20*time.Millisecond, 500*time.Millisecond),
		client.WithRetryOnFailedConnect(), client.WithLogger(quiet), client.WithErrorHandler(func(error) {}),
		client.WithName(fmt.Sprintf("jepsen-%d", n.id)))
	if err != nil {
		return fmt.Errorf("dial node %d: %w", n.id, err)
	}
	if old := r.add(n.id, n.addr(), c); old != nil {
		_ = old.Close()
	}
	return nil
}

// add makes node id at client address addr a member, reached by c; it
// returns the client c replaces, if any.
func (r *router) add(id int, addr string, c *client.Client) (old *client.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old = r.clients[id]
	r.clients[id], r.addrs[addr] = c, id
	if !slices.Contains(r.ids, id) {
		r.ids = append(r.ids, id)
		slices.Sort(r.ids)
	}
	return old
}

// forget drops node id from the members and closes its client (what is
// in flight on it fails, and its callers move on); the partitions routed
// to it go to the next member.
func (r *router) forget(id int) {
	r.mu.Lock()
	c := r.clients[id]
	delete(r.clients, id)
	maps.DeleteFunc(r.addrs, func(_ string, n int) bool { return n == id })
	r.ids = slices.DeleteFunc(r.ids, func(n int) bool { return n == id })
	for p, l := range r.leader {
		if l == id {
			r.leader[p] = r.nextLocked(id)
		}
	}
	r.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

func (r *router) close() {
	r.mu.Lock()
	cs := slices.Collect(maps.Values(r.clients))
	r.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
}

// route returns the node to try for partition p and its client; a nil
// client when there is no member.
func (r *router) route(p int) (int, *client.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := r.leader[p]
	if _, ok := r.clients[id]; !ok { // no member when it was forgotten (forget moves the partitions)
		id = r.nextLocked(id)
		r.leader[p] = id
	}
	return id, r.clients[id]
}

// nextLocked returns the member after node id, in id order and round
// again; id need not be a member (any more). 0 when there is none.
func (r *router) nextLocked(id int) int {
	if len(r.ids) == 0 {
		return 0
	}
	i, _ := slices.BinarySearch(r.ids, id+1)
	return r.ids[i%len(r.ids)]
}

// failed learns from the error of an attempt at node id for partition p:
// a NOT_LEADER naming a leader sends the next attempt there; any other
// failure (or a NOT_LEADER naming the node itself, or no leader, or a
// node the router does not know) to the next node. It reports whether
// the caller should pause before retrying.
func (r *router) failed(p, id int, err error) (pause bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.nextLocked(id)
	pause = true
	if _, addr, ok := wire.LeaderOf(err); ok {
		if l, known := r.addrs[addr]; known && l != id {
			next, pause = l, false
		}
	}
	if r.leader[p] == id {
		r.leader[p] = next
	}
	return pause
}

// outcome classifies a failed publish: refused for certain only when a
// node answered NOT_LEADER without saying the batch may have been stored
// (the broker has no classifier for that; the text is the contract,
// engine/cluster.go wireError). Anything else (timeouts, lost
// connections, other errors) may have been stored.
func outcome(err error) checker.Outcome {
	if wire.CodeOf(err) == wire.CodeNotLeader && !strings.Contains(err.Error(), "may have been stored") {
		return checker.Failed
	}
	return checker.Unknown
}

// producer publishes unique values to partition p until ctx ends.
func producer(ctx context.Context, id, p int, topic string, rt *router, rec *recorder) {
	for seq := 0; ctx.Err() == nil; seq++ {
		node, c := rt.route(p)
		if c == nil {
			pace(ctx, 50*time.Millisecond) // no member: nothing to publish to
			continue
		}
		value := fmt.Sprintf("w%d-%d", id, seq)
		pub := checker.Publish{Producer: id, Topic: topic, Partition: int32(p), Value: value, Node: node, Start: rec.now()}
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		ack, err := c.Publish(octx, topic, client.Message{Value: []byte(value)}, client.ToPartition(p))
		cancel()
		pub.End = rec.now()
		switch {
		case err == nil && ack.Partition != int32(p):
			pub.Outcome, pub.Err = checker.Unknown, fmt.Sprintf("acked in partition %d, not %d", ack.Partition, p)
		case err == nil:
			pub.Outcome, pub.Offset = checker.Acked, ack.Offset
		default:
			pub.Outcome, pub.Err = outcome(err), err.Error()
		}
		rec.publish(pub)
		if err != nil && rt.failed(p, node, err) {
			pace(ctx, 50*time.Millisecond)
		}
	}
}

// consumer fetches partition p from offset 0 on, in order, until ctx
// ends, recording every message as a delivery. When retention removed
// the offset it wants, it goes on from the partition's start, and
// records the jump.
func consumer(ctx context.Context, p int, topic string, rt *router, rec *recorder) {
	consume(ctx, fmt.Sprintf("fetch-%d", p), p, topic, rt, rec, 0)
}

// Laggards read for lagRead, then stall for lagStall, over and over: by
// then retention has usually removed where they were (the start moves
// once per segment, 20-60 s of load at 1 MiB), so they jump.
const (
	lagRead  = 20 * time.Second
	lagStall = 60 * time.Second
)

// laggard is a consumer of partition p that stalls (see lagRead).
func laggard(ctx context.Context, p int, topic string, rt *router, rec *recorder) {
	consume(ctx, fmt.Sprintf("lag-%d", p), p, topic, rt, rec, lagRead)
}

// consume is a consumer named name; one that reads for read (not 0)
// then stalls for lagStall, and again.
func consume(ctx context.Context, name string, p int, topic string, rt *router, rec *recorder, read time.Duration) {
	next := int64(0)
	stallAt := time.Now().Add(read)
	for ctx.Err() == nil {
		if read > 0 && time.Now().After(stallAt) {
			pace(ctx, lagStall)
			stallAt = time.Now().Add(read)
		}
		node, c := rt.route(p)
		if c == nil {
			pace(ctx, 50*time.Millisecond)
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, opTimeout)
		f, err := c.Fetch(fctx, topic, p, client.AtOffset(next),
			client.MaxWait(500*time.Millisecond), client.MaxBytes(256<<10))
		cancel()
		ds := make([]checker.Delivery, 0, len(f.Messages))
		for _, m := range f.Messages {
			ds = append(ds, checker.Delivery{Consumer: name, Topic: topic, Partition: int32(p),
				Offset: m.Offset, Value: string(m.Value)})
			next = m.Offset + 1
		}
		rec.deliver(ds)
		switch {
		case err == nil:
		case errors.Is(err, client.ErrOffsetOutOfRange):
			// Below the node's start (retention removed it), or past its
			// end (a new leader that has not committed up to here yet).
			start, serr := startOf(ctx, c, topic, p)
			switch {
			case serr == nil && start > next:
				rec.jump(checker.Jump{Consumer: name, Topic: topic, Partition: int32(p), From: next, To: start})
				next = start
			case serr == nil || errors.Is(serr, client.ErrOffsetOutOfRange): // the start moved meanwhile
				pace(ctx, 100*time.Millisecond)
			case rt.failed(p, node, serr):
				pace(ctx, 50*time.Millisecond)
			}
		case rt.failed(p, node, err):
			pace(ctx, 50*time.Millisecond)
		}
	}
}

// pace waits d or until ctx ends.
func pace(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// startOf asks the node c reaches where its log of partition p starts
// (a fetch of nothing at the earliest offset).
func startOf(ctx context.Context, c *client.Client, topic string, p int) (int64, error) {
	fctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	f, err := c.Fetch(fctx, topic, p, client.Earliest, client.MaxBytes(1))
	return f.Start, err
}

// readAll reads partition p whole from its leader, from the start of its
// log (retention removed what was before): the start the first answer
// reported, and the records.
func readAll(ctx context.Context, c *client.Client, topic string, p int) (int64, []checker.Record, error) {
	var recs []checker.Record
	from, start := client.Earliest, int64(-1)
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		f, err := c.Fetch(fctx, topic, p, from, client.MaxBytes(4<<20))
		cancel()
		if err != nil {
			return start, recs, err
		}
		if start < 0 {
			start = f.Start
		}
		for _, m := range f.Messages {
			recs = append(recs, checker.Record{Offset: m.Offset, Value: string(m.Value)})
		}
		if f.Next >= f.End || len(f.Messages) == 0 {
			return start, recs, nil
		}
		from = client.AtOffset(f.Next)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	acked, failed, unknown, delivered atomic.Int64
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

func (r *recorder) deliver(ds []checker.Delivery) {
	r.delivered.Add(int64(len(ds)))
	r.mu.Lock()
	r.h.Deliveries = append(r.h.Deliveries, ds...)
	r.mu.Unlock()
}

// router knows a client per node and which node leads each partition.
type router struct {
	clients []*client.Client // by node id - 1
	addrs   map[string]int   // a node's client address → its id

	mu     sync.Mutex
	leader []int // by partition: the node believed to lead it
}

// dialAll connects to every node (they must be up).
func dialAll(ctx context.Context, nodes []*node, partitions int) (*router, error) {
	r := &router{addrs: map[string]int{}, leader: make([]int, partitions)}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, n := range nodes {
		c, err := client.Dial(ctx, n.addr(), client.WithReconnect(20*time.Millisecond, 500*time.Millisecond),
			client.WithRetryOnFailedConnect(), client.WithLogger(quiet), client.WithErrorHandler(func(error) {}),
			client.WithName(fmt.Sprintf("jepsen-%d", n.id)))
		if err != nil {
			r.close()
			return nil, fmt.Errorf("dial node %d: %w", n.id, err)
		}
		r.clients = append(r.clients, c)
		r.addrs[n.addr()] = n.id
	}
	for p := range r.leader {
		r.leader[p] = 1 + p%len(nodes)
	}
	return r, nil
}

func (r *router) close() {
	for _, c := range r.clients {
		_ = c.Close()
	}
}

// route returns the node to try for partition p.
func (r *router) route(p int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leader[p]
}

// failed learns from the error of an attempt at node id for partition p:
// a NOT_LEADER naming a leader sends the next attempt there; any other
// failure (or a NOT_LEADER naming the node itself, or no leader) to the
// next node. It reports whether the caller should pause before retrying.
func (r *router) failed(p, id int, err error) (pause bool) {
	next := id%len(r.clients) + 1
	pause = true
	if _, addr, ok := wire.LeaderOf(err); ok {
		if l, known := r.addrs[addr]; known && l != id {
			next, pause = l, false
		}
	}
	r.mu.Lock()
	if r.leader[p] == id {
		r.leader[p] = next
	}
	r.mu.Unlock()
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
		node := rt.route(p)
		value := fmt.Sprintf("w%d-%d", id, seq)
		pub := checker.Publish{Producer: id, Topic: topic, Partition: int32(p), Value: value, Node: node, Start: rec.now()}
		octx, cancel := context.WithTimeout(context.Background(), opTimeout)
		ack, err := rt.clients[node-1].Publish(octx, topic, client.Message{Value: []byte(value)}, client.ToPartition(p))
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
// ends, recording every message as a delivery.
func consumer(ctx context.Context, p int, topic string, rt *router, rec *recorder) {
	name := fmt.Sprintf("fetch-%d", p)
	next := int64(0)
	for ctx.Err() == nil {
		node := rt.route(p)
		fctx, cancel := context.WithTimeout(ctx, opTimeout)
		f, err := rt.clients[node-1].Fetch(fctx, topic, p, client.AtOffset(next),
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
			// A new leader that has not committed up to here yet.
			pace(ctx, 100*time.Millisecond)
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

// readAll reads partition p whole from its leader, node id.
func readAll(ctx context.Context, c *client.Client, topic string, p int) ([]checker.Record, error) {
	var recs []checker.Record
	next := int64(0)
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		f, err := c.Fetch(fctx, topic, p, client.AtOffset(next), client.MaxBytes(4<<20))
		cancel()
		if err != nil {
			return recs, err
		}
		for _, m := range f.Messages {
			recs = append(recs, checker.Record{Offset: m.Offset, Value: string(m.Value)})
		}
		if f.Next >= f.End || len(f.Messages) == 0 {
			return recs, nil
		}
		next = f.Next
	}
}

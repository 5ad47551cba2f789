package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// ClusterSubscription is a Cluster's push subscription to a topic, or to
// one partition: for each partition, a subscription at the node that
// leads it. When the partition's leader changes, or its node's connection
// is lost, the partition is subscribed again at its new leader from the
// offset after the last message the handler got, so that it continues
// with no gap and no duplicate: every message of the partition once, in
// offset order (a replicated partition holds every committed message on
// every replica, so the new leader has them all). Where the new leader's
// log no longer holds that offset, Delivery.Missed and Missed count what
// was skipped.
//
// A node that loses a partition's leadership but keeps running ends its
// subscription with NOT_LEADER, naming the new leader when it knows it
// (the client asks it to, wire.FlagEndNotice), and the partition is
// subscribed again at once: at the node named, or at the one another
// node names, with backoff. A node too old to say stops delivering the
// partition without a word; a subscription also asks the nodes it is
// subscribed at whether they still lead whenever the Cluster's publishes
// to one of its partitions meet another leader.
//
// The handler runs one delivery at a time, as a Client's subscription's
// does: calls never overlap, and a partition's come in offset order. With
// DispatchInline it runs on the node connections' readers, so a slow
// handler holds back every node's connection.
//
// A Cluster holds at most one subscription covering a partition at a time:
// a second Subscribe that overlaps fails with ErrAlreadySubscribed.
type ClusterSubscription struct {
	cl      *Cluster
	topic   string
	handler func(*Delivery) // the caller's; called under hmu
	inline  bool
	hmu     sync.Mutex
	parts   []*partSub
	keys    []batchKey
	check   chan struct{} // wakes the leadership check; capacity 1

	ctx      context.Context // cancelled by Unsubscribe (and Close)
	cancel   context.CancelFunc
	stopOnce sync.Once
	wg       sync.WaitGroup
	done     chan struct{}
	err      atomic.Pointer[error]
	unsubErr atomic.Pointer[error]
	dropped  atomic.Uint64 // of the node subscriptions that ended
	missed   atomic.Int64
}

// partSub is one partition of a ClusterSubscription.
type partSub struct {
	s     *ClusterSubscription
	p     int32
	start Position
	move  chan struct{} // the check found that its node no longer leads it; capacity 1

	// Guarded by the subscription's hmu: the node subscription whose
	// deliveries count (gen), and where the partition resumes: the
	// offset after the last message handled, or where the current node
	// subscription started.
	gen    uint64
	next   int64
	resume bool

	mu  sync.Mutex
	cur *Subscription // at the partition's leader
	// notLeading is the node subscription that the check (move) found at
	// a node that no longer leads: follow moves only that one, for a
	// check that raced with follow's own move to the new leader found
	// the old node, and moving the new subscription at once would just
	// unsubscribe and subscribe again there.
	notLeading *Subscription
}

func (ps *partSub) get() *Subscription {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.cur
}

// Subscribe subscribes handler to topic (with FromPartition, one
// partition) at each partition's leader, from the StartAt position (Latest
// by default), and keeps each partition subscribed as its leader changes:
// see ClusterSubscription. It returns once every partition is subscribed,
// or fails (ctx, WithRerouteTimeout) with nothing subscribed.
func (cl *Cluster) Subscribe(ctx context.Context, topic string, handler func(*Delivery), opts ...SubscribeOption) (*ClusterSubscription, error) {
	if err := wire.ValidateTopicName(topic); err != nil {
		return nil, err
	}
	o := subOptions{partition: wire.PartitionAny}
	for _, f := range opts {
		f(&o)
	}
	tr, err := cl.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	s := &ClusterSubscription{cl: cl, topic: topic, handler: handler, inline: o.inline,
		check: make(chan struct{}, 1), done: make(chan struct{})}
	if o.partition == wire.PartitionAny {
		for p := range tr.n {
			s.parts = append(s.parts, &partSub{s: s, p: int32(p), start: o.start, move: make(chan struct{}, 1)})
		}
	} else {
		if _, err := cl.lane(ctx, tr, o.partition); err != nil {
			return nil, err
		}
		s.parts = []*partSub{{s: s, p: o.partition, start: o.start, move: make(chan struct{}, 1)}}
	}
	if err := cl.claim(s); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(cl.ctx)
	deadline := time.Now().Add(cl.opts.rerouteTimeout)
	for i, ps := range s.parts {
		if err := s.subscribe(ctx, ps, deadline, "", ""); err != nil {
			s.cancel()
			for _, q := range s.parts[:i] {
				s.unsubscribeNode(q.get())
			}
			cl.release(s)
			return nil, err
		}
	}
	for _, ps := range s.parts {
		s.wg.Add(1)
		go s.follow(ps)
	}
	s.wg.Add(1)
	go s.checkLeaders()
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		s.wg.Wait()
		cl.release(s)
		close(s.done)
	}()
	return s, nil
}

// claim records the partitions s covers, refusing an overlap.
func (cl *Cluster) claim(s *ClusterSubscription) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return ErrClosed
	}
	for _, ps := range s.parts {
		if k := (batchKey{s.topic, ps.p}); cl.subbed[k] != nil {
			return fmt.Errorf("%w: this cluster client already subscribes to partition %d of %s; "+
				"another subscription needs a cluster client of its own", ErrAlreadySubscribed, ps.p, s.topic)
		}
	}
	for _, ps := range s.parts {
		k := batchKey{s.topic, ps.p}
		cl.subbed[k] = s
		s.keys = append(s.keys, k)
	}
	return nil
}

func (cl *Cluster) release(s *ClusterSubscription) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, k := range s.keys {
		if cl.subbed[k] == s {
			delete(cl.subbed, k)
		}
	}
}

// nudge makes the subscription check its leaders now: the Cluster met
// another leader of one of its partitions.
func (s *ClusterSubscription) nudge() {
	select {
	case s.check <- struct{}{}:
	default:
	}
}

// subscribe subscribes ps at its partition's leader (hint, when a node
// named it; not avoid, which said it no longer leads): from its start, or
// resuming where it stopped. It tries again while the partition has no
// leader or its node is lost, until ctx or deadline.
func (s *ClusterSubscription) subscribe(ctx context.Context, ps *partSub, deadline time.Time, hint, avoid string) error {
	return s.cl.withLeaderFrom(ctx, batchKey{s.topic, ps.p}, deadline, hint, avoid, func(c *Client) error {
		ns := c.newSubscription(s.topic, []SubscribeOption{FromPartition(int(ps.p)), StartAt(ps.start)})
		s.hmu.Lock()
		ps.gen++
		ns.handler = s.deliverer(ps, ps.gen)
		next, resume := ps.next, ps.resume
		s.hmu.Unlock()
		if s.inline {
			ns.inline = &Delivery{Topic: s.topic}
		}
		start, err := c.subscribeNode(ctx, ns, next, resume)
		if err != nil {
			return err
		}
		s.started(ps, start)
		ps.mu.Lock()
		ps.cur = ns
		ps.mu.Unlock()
		return nil
	})
}

// deliverer is the handler of ps's node subscription of generation gen: it
// passes on a delivery only while that subscription is ps's current one,
// and only past what was handled (a node subscription being replaced may
// still deliver), and moves ps's resume point past it.
func (s *ClusterSubscription) deliverer(ps *partSub, gen uint64) func(*Delivery) {
	return func(d *Delivery) {
		s.hmu.Lock()
		defer s.hmu.Unlock()
		if ps.gen != gen || ps.resume && d.Offset < ps.next {
			return
		}
		s.handler(d)
		ps.next, ps.resume = d.Offset+1, true
	}
}

// started records where a node subscription of ps starts, unless its
// deliveries are past it already.
func (s *ClusterSubscription) started(ps *partSub, start int64) {
	if start < 0 {
		return // a broker too old to say: resumes from Latest
	}
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if !ps.resume || start > ps.next {
		ps.next, ps.resume = start, true
	}
}

// follow subscribes ps again, at its new leader, each time its node
// subscription ends (its node no longer leads the partition, or the
// node's connection was lost) or the leadership check finds another
// leader, until Unsubscribe or Close. A partition that
// cannot be subscribed again for good (its topic deleted, say) ends, with
// the reason (Err).
func (s *ClusterSubscription) follow(ps *partSub) {
	defer s.wg.Done()
	for {
		cur := ps.get()
		select {
		case <-cur.Done():
		case <-ps.move:
			ps.mu.Lock()
			stale := ps.notLeading != cur
			ps.notLeading = nil
			ps.mu.Unlock()
			if stale {
				continue
			}
			s.unsubscribeNode(cur)
			<-cur.Done()
		case <-s.ctx.Done():
			s.unsubscribeNode(cur)
			return
		}
		s.hmu.Lock()
		ps.gen++ // whatever cur still delivers is dropped
		s.hmu.Unlock()
		s.dropped.Add(cur.Dropped())
		s.missed.Add(cur.Missed())
		if s.ctx.Err() != nil {
			return
		}
		hint, avoid := "", ""
		if e := cur.ended.Load(); e != nil { // the node ended it: it no longer leads
			hint, avoid = leaderHint(e, cur.c), cur.c.addr()
		}
		never := time.Now().Add(100 * 365 * 24 * time.Hour)
		if err := s.subscribe(s.ctx, ps, never, hint, avoid); err != nil {
			if s.ctx.Err() == nil {
				err = fmt.Errorf("subscription to %s, partition %d, ended: subscribing again at its leader failed: %w",
					s.topic, ps.p, err)
				s.err.CompareAndSwap(nil, &err)
				s.cl.report(err)
			}
			return
		}
	}
}

// checkLeaders asks each node the subscription is subscribed at whether it
// still leads the partition when nudged (the Cluster's publishes met
// another leader), and moves a partition whose node names another leader
// (follow). Nodes end a subscription they stop leading themselves; this
// covers a node too old to.
func (s *ClusterSubscription) checkLeaders() {
	defer s.wg.Done()
	for {
		select {
		case <-s.check:
		case <-s.ctx.Done():
			return
		}
		for _, ps := range s.parts {
			cur := ps.get()
			if cur == nil || cur.c.Err() != nil {
				continue // follow sees it end
			}
			ctx, cancel := context.WithTimeout(s.ctx, s.cl.opts.dialTimeout)
			_, err := cur.c.Fetch(ctx, s.topic, int(ps.p), Latest, MaxBytes(1))
			cancel()
			if errors.Is(err, ErrNotLeader) {
				ps.mu.Lock()
				ps.notLeading = cur
				ps.mu.Unlock()
				select {
				case ps.move <- struct{}{}:
				default:
				}
			}
		}
	}
}

// unsubscribeNode ends a node subscription, telling its node unless the
// connection is gone.
func (s *ClusterSubscription) unsubscribeNode(ns *Subscription) {
	if ns == nil {
		return
	}
	if ns.c.Err() != nil {
		ns.c.removeSub(ns)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cl.opts.dialTimeout)
	defer cancel()
	// A node that is stopping or no longer leads (or lost) has let go of
	// the subscription anyway; one that ended it itself, its end notice
	// crossing the Unsubscribe, answers NOT_SUBSCRIBED.
	if err := ns.Unsubscribe(ctx); err != nil && !errors.Is(err, ErrNotSubscribed) &&
		!errors.Is(err, wire.ErrNotSubscribed) && ns.c.Err() == nil && !reroutable(err) {
		s.unsubErr.CompareAndSwap(nil, &err)
	}
}

// Topic is the subscribed topic.
func (s *ClusterSubscription) Topic() string { return s.topic }

// Done is closed when the subscription has ended (Unsubscribe, Close, or
// every partition's failure to subscribe again) and no handler runs.
func (s *ClusterSubscription) Done() <-chan struct{} { return s.done }

// Err says why the subscription ended, or ended for some partition,
// other than Unsubscribe; nil while every partition is followed.
func (s *ClusterSubscription) Err() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	if s.cl.isClosed() {
		return ErrClosed
	}
	return nil
}

// Dropped counts messages dropped because the handler stayed behind its
// pending bound for longer than the stall bound (WithSubscriptionStall).
func (s *ClusterSubscription) Dropped() uint64 {
	n := s.dropped.Load()
	for _, ps := range s.parts {
		if cur := ps.get(); cur != nil {
			n += cur.Dropped()
		}
	}
	return n
}

// Missed counts messages the subscription may never get because a new
// leader's log did not hold where a partition stopped.
func (s *ClusterSubscription) Missed() int64 {
	n := s.missed.Load()
	for _, ps := range s.parts {
		if cur := ps.get(); cur != nil {
			n += cur.Missed()
		}
	}
	return n
}

// Unsubscribe stops the subscription at every partition's leader and
// waits until no handler runs.
func (s *ClusterSubscription) Unsubscribe(ctx context.Context) error {
	first := false
	s.stopOnce.Do(func() {
		first = true
		s.cancel()
	})
	if !first {
		return ErrNotSubscribed
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if p := s.unsubErr.Load(); p != nil {
		return *p
	}
	return nil
}

// leaderClient returns the client of the node leading key's partition:
// hint, when a refusal named it; the node the partition's publishes go
// to; or the one a node (not avoid, if another answers) names when asked.
func (cl *Cluster) leaderClient(ctx context.Context, key batchKey, hint, avoid string) (*Client, error) {
	addr := hint
	if addr == "" {
		if tr := (*cl.routes.Load())[key.topic]; tr != nil && int(key.partition) < len(tr.lanes) && key.partition >= 0 {
			if c := tr.lanes[key.partition].cur.Load(); c != nil && c.Err() == nil && c.addr() != avoid {
				return c, nil
			}
		}
		via, err := cl.anyClientBut(ctx, avoid)
		if err != nil {
			return nil, err
		}
		if addr, err = cl.probe(ctx, via, key); addr == "" {
			return nil, err
		}
	}
	return cl.clientFor(ctx, addr)
}

// Fetch pulls messages of one partition from its leader, as Client.Fetch
// does, asking again at the new leader when the node asked no longer
// leads it or is lost (within ctx and WithRerouteTimeout).
func (cl *Cluster) Fetch(ctx context.Context, topic string, partition int, from Position, opts ...FetchOption) (Fetched, error) {
	if err := wire.ValidateTopicName(topic); err != nil {
		return Fetched{}, err
	}
	var f Fetched
	err := cl.withLeader(ctx, batchKey{topic, int32(partition)}, time.Now().Add(cl.opts.rerouteTimeout), func(c *Client) error {
		var err error
		f, err = c.Fetch(ctx, topic, partition, from, opts...)
		return err
	})
	return f, err
}

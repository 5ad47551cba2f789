package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Cluster is a client of a Ratatoskr cluster (docs/CLUSTER.md): it sends
// each partition's publishes, subscriptions and fetches to the node that
// leads the partition, and follows the leader when it changes. It keeps
// one Client per node it talks to, dialled when first needed, and learns
// who leads what from the nodes themselves: a node asked about a
// partition it does not lead answers NOT_LEADER naming the leader.
//
//	cl, err := client.DialCluster(ctx, "10.0.0.1:7070,10.0.0.2:7070,10.0.0.3:7070")
//	ack, err := cl.Publish(ctx, "orders", client.Message{Key: []byte("user-42"), Value: v})
//	sub, err := cl.Subscribe(ctx, "orders", func(d *client.Delivery) { ... })
//
// Partitions. A message with a key goes to its key's partition
// (KeyPartition over the partition count, which any node tells); one with
// ToPartition to that partition; one with neither to a partition the
// Cluster picks, staying on one for a batch's worth of bytes
// (WithBatchBytes) before moving on to the next that has a leader.
//
// Leaders. Each partition has a lane: the node client its batches go to.
// A lane starts by asking a node which node leads the partition (a Fetch
// at the live end, which the leader answers and any other node refuses
// with NOT_LEADER naming the leader). When the leader answers NOT_LEADER
// or SHUTTING_DOWN for a batch, or its connection is lost, the lane is
// held: what it had not written is taken back from the old node, the
// batches written there come back as they are answered, and once all are
// back they go, in their original order, to the new leader (named by the
// refusal, or found by asking the other nodes, with backoff while an
// election runs), ahead of anything published since. A batch is
// re-routed for at most WithRerouteTimeout (30 s) after its first
// refusal; then it fails with the last answer.
//
// What a retry may store. An idempotent Cluster (WithIdempotence) numbers
// each partition's batches in one sequence under one producer id, which
// moves with the partition from node to node, so a batch sent again to
// the new leader that the old one had already stored is answered with its
// original offsets instead of being stored twice (the partitions' replicas
// record the idempotent batches they commit). Without idempotence a batch
// is sent again only when the refusal says it was not stored; one whose
// leader stepped down with it in flight, or that was written to a
// connection that was lost, fails, and MayHaveBeenStored reports it.
//
// Subscriptions follow their partitions' leaders too, resuming each
// partition where its deliveries stopped: see ClusterSubscription.
//
// Options are those of Dial, applied to each node's client, except that a
// node's client never reconnects on its own (the Cluster re-routes
// instead), WithMaxPendingBytes bounds each node's client, and
// WithStateHandler is told StateDisconnected when a node's connection is
// lost (the error names the node) and StateReconnected when a lost node
// is dialled again. A Cluster is safe for concurrent use.
type Cluster struct {
	opts  options
	uopts []Option // the caller's options, for every node's client
	seeds []string

	// mu guards the nodes, the lanes' routing state and the batches lanes
	// hold. Lock order: mu before a node client's wconn, wmu and pmu.
	mu       sync.Mutex
	nodes    map[string]*node // by address
	order    []string         // node addresses, seeds first: the order to ask them in
	ids      map[string]uint64
	pending  map[*lane]struct{}                // lanes held: without a route
	subbed   map[batchKey]*ClusterSubscription // partitions a subscription covers
	asyncErr error                             // first async publish failure since the last Flush
	via      int                               // round robin over nodes to ask
	closed   bool

	rerouted atomic.Uint64                          // batches sent back to their lanes
	routes   atomic.Pointer[map[string]*topicRoute] // copied on change, under mu
	maxMsg   atomic.Int64                           // the first node's message limit
	wake     chan struct{}                          // signals the router; capacity 1
	closing  chan struct{}
	ctx      context.Context // cancelled by Close: the Cluster's own requests
	cancel   context.CancelFunc
	closeErr sync.Once
	wg       sync.WaitGroup // the router, dials, probes, subscriptions
}

// node is one node's address and, once dialled, its client.
type node struct {
	addr      string
	c         *Client       // nil until dialled and after it stopped
	dialed    chan struct{} // non-nil while a dial runs; closed when it ends
	err       error         // the last dial's failure
	fails     int           // failed dials in a row
	notBefore time.Time     // no dial before (backoff after failures)
	draining  bool          // it answered SHUTTING_DOWN: routed to no more
	lost      bool          // it had a client that stopped
}

// DialCluster connects to a cluster through the first of addrs (host:port,
// comma-separated; WithServers adds more) that answers, and returns a
// client that routes to each partition's leader. It dials other nodes as
// partitions lead it to them. Without WithRetryOnFailedConnect it tries
// each address once.
func DialCluster(ctx context.Context, addrs string, opts ...Option) (*Cluster, error) {
	o := defaultOptions()
	for _, f := range opts {
		f(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	seeds := splitAddrs(addrs, o.servers)
	if len(seeds) == 0 {
		return nil, fmt.Errorf("%w: no broker address to dial", ErrInvalidArgument)
	}
	cl := &Cluster{opts: o, uopts: slices.Clone(opts), seeds: seeds, nodes: map[string]*node{},
		ids: map[string]uint64{}, pending: map[*lane]struct{}{}, subbed: map[batchKey]*ClusterSubscription{},
		wake: make(chan struct{}, 1), closing: make(chan struct{})}
	cl.ctx, cl.cancel = context.WithCancel(context.Background())
	routes := map[string]*topicRoute{}
	cl.routes.Store(&routes)
	for _, a := range seeds {
		cl.nodeLocked(a)
	}
	first, err := cl.dialFirst(ctx)
	if err != nil {
		_ = cl.Close()
		return nil, err
	}
	cl.maxMsg.Store(int64(first.MaxMessageBytes()))
	cl.wg.Add(1)
	go cl.router()
	return cl, nil
}

// dialFirst connects to the first seed that answers; with
// WithRetryOnFailedConnect, in rounds with backoff until one does.
func (cl *Cluster) dialFirst(ctx context.Context) (*Client, error) {
	c, err := cl.anyClient(ctx)
	for n := 0; err != nil && cl.opts.retryFirst && (cl.opts.reconnectAttempts < 0 || n < cl.opts.reconnectAttempts); n++ {
		var we *wire.Error
		if errors.As(err, &we) && !IsRetryable(we) {
			return nil, err
		}
		t := time.NewTimer(backoff(n, cl.opts.reconnectMin, cl.opts.reconnectMax))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w; the last attempt: %w", ctx.Err(), err)
		}
		c, err = cl.anyClient(ctx)
	}
	return c, err
}

// nodeOptions are the options of a node's client: the caller's, less
// reconnecting and other addresses, with the Cluster's hooks.
func (cl *Cluster) nodeOptions() []Option {
	return append(slices.Clone(cl.uopts), func(o *options) {
		o.servers, o.reconnect, o.retryFirst = nil, false, false
		o.stateHandler = nil
		o.errorHandler = cl.nodeReport
		o.cluster = cl
	})
}

// nodeReport receives what a node's client reports: failed async
// publishes, slow subscriptions.
func (cl *Cluster) nodeReport(err error) { cl.report(err) }

// nodeLost tells of a node's lost connection: a state change of the
// Cluster's (the node's partitions move on), told to the state handler
// when there is one, else to the error handler.
func (cl *Cluster) nodeLost(c *Client, cause error) {
	err := fmt.Errorf("node %s: %w; its partitions go to their next leaders", c.addr(), cause)
	if cl.opts.stateHandler != nil {
		cl.opts.stateHandler(StateDisconnected, err)
		return
	}
	cl.report(err)
}

func (cl *Cluster) report(err error) {
	if cl.opts.errorHandler != nil {
		cl.opts.errorHandler(err)
	} else {
		cl.opts.logger.Warn("ratatoskr cluster client", "err", err)
	}
}

// nodeLocked returns the node of addr, adding it. mu held.
func (cl *Cluster) nodeLocked(addr string) *node {
	n := cl.nodes[addr]
	if n == nil {
		n = &node{addr: addr}
		cl.nodes[addr] = n
		cl.order = append(cl.order, addr)
	}
	return n
}

// live is n's client if it runs.
func (n *node) live() *Client {
	if n.c != nil && n.c.Err() == nil {
		return n.c
	}
	return nil
}

// dialLocked starts dialling n unless a dial runs, and returns the
// channel closed when the dial ends. mu held.
func (cl *Cluster) dialLocked(n *node) <-chan struct{} {
	if n.dialed != nil {
		return n.dialed
	}
	ch := make(chan struct{})
	n.dialed = ch
	cl.wg.Add(1)
	go cl.dial(n, ch)
	return ch
}

// dial connects to n and records the outcome; lanes waiting for n look
// again (the router).
func (cl *Cluster) dial(n *node, done chan struct{}) {
	defer cl.wg.Done()
	defer close(done)
	ctx, cancel := cl.opContext()
	defer cancel()
	c, err := Dial(ctx, n.addr, cl.nodeOptions()...)
	cl.mu.Lock()
	n.dialed = nil
	if cl.closed {
		cl.mu.Unlock()
		if c != nil {
			_ = c.Close()
		}
		return
	}
	reconnected := false
	if err != nil {
		n.err, n.fails = err, n.fails+1
		n.notBefore = time.Now().Add(backoff(n.fails, cl.opts.reconnectMin, cl.retryMax()))
		for ln := range cl.pending {
			if ln.target == n.addr {
				ln.target, ln.avoid, ln.lastErr = "", n.addr, err
			}
		}
	} else {
		n.c, n.err, n.fails, n.draining = c, nil, 0, false
		reconnected, n.lost = n.lost, false
	}
	cl.mu.Unlock()
	if reconnected && cl.opts.stateHandler != nil {
		cl.opts.stateHandler(StateReconnected, nil)
	}
	cl.kick()
}

// retryMax is the longest backoff between attempts to find a leader: an
// election takes about a second, so waiting longer only adds latency.
func (cl *Cluster) retryMax() time.Duration { return min(cl.opts.reconnectMax, time.Second) }

// opContext bounds one of the Cluster's own requests (a dial, a question
// about a leader) by the dial timeout and by Close.
func (cl *Cluster) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(cl.ctx, cl.opts.dialTimeout)
}

// clientFor returns the running client of the node at addr, dialling it
// if need be, within ctx.
func (cl *Cluster) clientFor(ctx context.Context, addr string) (*Client, error) {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil, ErrClosed
	}
	n := cl.nodeLocked(addr)
	if c := n.live(); c != nil {
		cl.mu.Unlock()
		return c, nil
	}
	ch := cl.dialLocked(n)
	cl.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if c := n.live(); c != nil {
		return c, nil
	}
	if n.err != nil {
		return nil, n.err
	}
	return nil, fmt.Errorf("%w: node %s", ErrConnectionLost, addr)
}

// viaLocked picks a running node client to ask, round robin, avoiding the
// node at avoid and nodes that are stopping; nil when none runs. mu held.
func (cl *Cluster) viaLocked(avoid string) *Client {
	for range cl.order {
		cl.via = (cl.via + 1) % len(cl.order)
		n := cl.nodes[cl.order[cl.via]]
		if c := n.live(); c != nil && n.addr != avoid && !n.draining {
			return c
		}
	}
	return nil
}

// anyClient returns a running node client, dialling the known addresses
// in turn (seeds first) when none runs.
func (cl *Cluster) anyClient(ctx context.Context) (*Client, error) { return cl.anyClientBut(ctx, "") }

// anyClientBut is anyClient avoiding the node at avoid (which just
// refused, or failed) unless no other answers.
func (cl *Cluster) anyClientBut(ctx context.Context, avoid string) (*Client, error) {
	cl.mu.Lock()
	if c := cl.viaLocked(avoid); c != nil {
		cl.mu.Unlock()
		return c, nil
	}
	var addrs []string
	for _, a := range cl.order {
		if a != avoid {
			addrs = append(addrs, a)
		}
	}
	if avoid != "" {
		addrs = append(addrs, avoid)
	}
	cl.mu.Unlock()
	var errs []error
	for _, a := range addrs {
		c, err := cl.clientFor(ctx, a)
		if err == nil {
			return c, nil
		}
		var we *wire.Error
		if errors.As(err, &we) && !IsRetryable(we) {
			return nil, err // the broker refused the handshake itself
		}
		errs = append(errs, err)
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// leaderHint is the address of the leader a refusal from c names, unless
// it names c itself (a node that is stopping names the leader its
// metadata last recorded, which may be itself): "" for none.
func leaderHint(err error, c *Client) string {
	if _, addr, ok := wire.LeaderOf(err); ok && (c == nil || addr != c.addr()) {
		return addr
	}
	return ""
}

// learn records a node's id from a NOT_LEADER answer.
func (cl *Cluster) learn(id uint64, addr string) {
	cl.mu.Lock()
	cl.ids[addr] = id
	cl.mu.Unlock()
}

// kick wakes the router.
func (cl *Cluster) kick() {
	select {
	case cl.wake <- struct{}{}:
	default:
	}
}

// Rerouted counts the batches taken back from a node to go to their
// partition's next leader: refused with NOT_LEADER or SHUTTING_DOWN, not
// yet written when their partition moved, or held by a node whose
// connection was lost.
func (cl *Cluster) Rerouted() uint64 { return cl.rerouted.Load() }

// MaxMessageBytes is the limit on one message (key, value, headers) of the
// first node the Cluster connected to.
func (cl *Cluster) MaxMessageBytes() int { return int(cl.maxMsg.Load()) }

// Close closes every node's connection at once. Publishes not yet
// acknowledged fail with ErrClosed and subscriptions end; call Flush
// first to wait for acknowledgements.
func (cl *Cluster) Close() error {
	cl.closeErr.Do(func() {
		cl.mu.Lock()
		cl.closed = true
		var clients []*Client
		for _, n := range cl.nodes {
			if n.c != nil {
				clients = append(clients, n.c)
			}
		}
		var failed []*batch
		for ln := range cl.pending {
			failed = append(append(failed, ln.sent...), ln.unsent...)
			ln.sent, ln.unsent = nil, nil
		}
		cl.mu.Unlock()
		close(cl.closing)
		cl.cancel()
		for _, c := range clients {
			_ = c.Close()
		}
		for _, b := range failed {
			b.complete(wire.PublishAck{}, ErrClosed)
		}
	})
	cl.wg.Wait()
	return nil
}

// Done is closed once Close has been called.
func (cl *Cluster) Done() <-chan struct{} { return cl.closing }

// Topic administration goes through any node.

// CreateTopic creates a topic (TopicConfig.Replicas sets how many nodes
// hold each partition); ErrTopicExists if it exists.
func (cl *Cluster) CreateTopic(ctx context.Context, name string, cfg TopicConfig) error {
	c, err := cl.anyClient(ctx)
	if err != nil {
		return err
	}
	return c.CreateTopic(ctx, name, cfg)
}

// DeleteTopic deletes a topic; ErrUnknownTopic if there is none.
func (cl *Cluster) DeleteTopic(ctx context.Context, name string) error {
	c, err := cl.anyClient(ctx)
	if err != nil {
		return err
	}
	cl.forgetTopic(name)
	return c.DeleteTopic(ctx, name)
}

// DescribeTopic returns a topic's configuration and partitions as the node
// asked sees them. A node that does not lead a partition reports what its
// own replica holds, which may lag the leader's.
func (cl *Cluster) DescribeTopic(ctx context.Context, name string) (TopicInfo, error) {
	return retryAny(ctx, cl, func(c *Client) (TopicInfo, error) { return c.DescribeTopic(ctx, name) })
}

// ListTopics lists the cluster's topics, sorted by name.
func (cl *Cluster) ListTopics(ctx context.Context) ([]TopicSummary, error) {
	return retryAny(ctx, cl, func(c *Client) ([]TopicSummary, error) { return c.ListTopics(ctx) })
}

// retryAny runs a read-only call on any node, once more on another when
// the first one's connection is lost.
func retryAny[T any](ctx context.Context, cl *Cluster, call func(*Client) (T, error)) (T, error) {
	var zero T
	for try := 0; ; try++ {
		c, err := cl.anyClient(ctx)
		if err != nil {
			return zero, err
		}
		v, err := call(c)
		if try == 0 && errors.Is(err, ErrConnectionLost) {
			continue
		}
		return v, err
	}
}

// Leader returns the address of the node that leads partition of topic:
// a node that, asked itself, answers as the leader. A node that does not
// lead names the leader it knows, which may be stale (a follower that has
// not yet heard of an election): Leader then asks the node named, and
// follows what it names in turn. During an election it waits (with
// backoff, within ctx and WithRerouteTimeout) for one.
func (cl *Cluster) Leader(ctx context.Context, topic string, partition int) (string, error) {
	tr, err := cl.topic(ctx, topic)
	if err != nil {
		return "", err
	}
	if partition < 0 || partition >= len(tr.lanes) {
		return "", unknownPartition(topic, partition, len(tr.lanes))
	}
	key := batchKey{topic, int32(partition)}
	deadline := time.Now().Add(cl.opts.rerouteTimeout)
	avoid := ""
	for n := 0; ; n++ {
		via, err := cl.anyClientBut(ctx, avoid)
		for hop := 0; err == nil && hop < maxLeaderHops; hop++ {
			var addr string
			if addr, err = cl.probe(ctx, via, key); addr == via.addr() {
				return addr, nil // it answered as the leader
			}
			avoid = via.addr()
			if addr == "" {
				break
			}
			via, err = cl.clientFor(ctx, addr) // ask the node named
		}
		if !cl.waitRetry(ctx, n, deadline) {
			return "", cl.noRoute(key, err, ctx.Err())
		}
	}
}

// maxLeaderHops bounds how many named leaders Leader follows before it
// backs off: names that go round mean an election is under way.
const maxLeaderHops = 4

// withLeader runs op at the client of key's partition's leader, finding
// the leader first (and again, following the leader a refusal names,
// while op fails for a reason of routing: reroutable), with backoff,
// until op succeeds or fails otherwise, ctx ends or deadline passes.
func (cl *Cluster) withLeader(ctx context.Context, key batchKey, deadline time.Time, op func(*Client) error) error {
	return cl.withLeaderFrom(ctx, key, deadline, "", "", op)
}

// withLeaderFrom is withLeader starting at the node hint (a refusal named
// it), or, with none, at a leader other than the node avoid (it refused).
func (cl *Cluster) withLeaderFrom(ctx context.Context, key batchKey, deadline time.Time, hint, avoid string, op func(*Client) error) error {
	for n := 0; ; n++ {
		c, err := cl.leaderClient(ctx, key, hint, avoid)
		hint = ""
		switch {
		case err == nil:
			if err = op(c); err == nil || !reroutable(err) {
				return err
			}
			avoid = c.addr()
			if hint = leaderHint(err, c); hint != "" && n == 0 {
				continue // straight to the leader named
			}
		case ctx.Err() != nil:
		default:
			var we *wire.Error
			if errors.As(err, &we) && !reroutable(we) {
				return err // a node refused the handshake, say
			}
		}
		if cl.isClosed() {
			return ErrClosed
		}
		if !cl.waitRetry(ctx, n, deadline) {
			return cl.noRoute(key, err, ctx.Err())
		}
	}
}

// reroutable reports whether a request refused with err may succeed at
// the partition's leader, or after a pause: not the leader, a node lost
// or stopping, a limit, or a subscription of the node's connection still
// being removed.
func reroutable(err error) bool {
	return errors.Is(err, ErrNotLeader) || IsRetryable(err) || errors.Is(err, ErrClosed) ||
		errors.Is(err, ErrAlreadySubscribed)
}

// waitRetry waits before attempt n+1 to find a leader; false when ctx,
// the deadline or Close comes first.
func (cl *Cluster) waitRetry(ctx context.Context, n int, deadline time.Time) bool {
	d := backoff(n, cl.opts.reconnectMin, cl.retryMax())
	if time.Now().Add(d).After(deadline) {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-cl.closing:
	}
	return false
}

// noRoute is the error of an operation on key that found no leader.
func (cl *Cluster) noRoute(key batchKey, last, ctxErr error) error {
	if ctxErr != nil {
		if last != nil {
			return fmt.Errorf("%w; the last answer: %w", ctxErr, last)
		}
		return ctxErr
	}
	select {
	case <-cl.closing:
		return ErrClosed
	default:
	}
	why := fmt.Sprintf("partition %d of %s: no leader reachable within %s", key.partition, key.topic, cl.opts.rerouteTimeout)
	if last != nil {
		return fmt.Errorf("ratatoskr: %s: %w", why, last)
	}
	return wire.NotLeader(0, "", why)
}

func unknownPartition(topic string, p, n int) error {
	return wire.Errorf(wire.CodeUnknownPartition, fmt.Sprintf("topic %s has no partition %d (it has %d)", topic, p, n))
}

// Topics and partitions.

// topicRoute is a topic's partition count and lanes, one per partition
// (more after the topic was created again with fewer: lanes are never
// dropped, as batches may refer to them), and where its unkeyed messages
// go.
type topicRoute struct {
	name  string
	n     int // the partition count; 0 until a node told it
	lanes []*lane
	// stale: an answer said the count may have changed (the topic deleted,
	// a partition unknown): the next publish asks again.
	stale atomic.Bool
	// Unkeyed messages go to lanes[stick] until fill passes a batch's
	// worth of bytes; then to the next lane that routes.
	stick atomic.Uint32
	fill  atomic.Int64
}

// lane is one partition's route: the node client its batches go to, or,
// while it is held, what it waits for and the batches it holds.
type lane struct {
	key batchKey
	// cur is where publishes go; nil while held. It changes under the
	// Cluster's mu and the wmu of the client it leaves or joins.
	cur atomic.Pointer[Client]

	// Guarded by the Cluster's mu.
	held      chan struct{} // closed when cur is set; nil while it routes
	heldAt    time.Time     // when the hold began, or a publisher last waited on it
	from      *Client       // the client whose written batches are still to be answered
	draining  int           // how many
	sent      []*batch      // taken back, released before (in that client's send order)
	unsent    []*batch      // taken back, never released, in order
	ps        *partSeq      // the partition's numbering (idempotent), between clients
	target    string        // the leader to go to; "" while unknown
	avoid     string        // the node that refused last: asked last
	probing   bool          // a node is being asked who leads
	attempt   int           // failed attempts to find the leader (backoff)
	notBefore time.Time     // no attempt before
	lastErr   error         // the last refusal or failure
}

// topic returns name's route, asking a node for its partition count (and
// creating the topic where the cluster auto-creates) the first time, and
// after an answer made it stale.
func (cl *Cluster) topic(ctx context.Context, name string) (*topicRoute, error) {
	if tr := (*cl.routes.Load())[name]; tr != nil && tr.n > 0 && !tr.stale.Load() {
		return tr, nil
	}
	info, err := retryAny(ctx, cl, func(c *Client) (TopicInfo, error) { return c.describe(ctx, name, wire.FlagAutoCreate) })
	if err != nil {
		return nil, err
	}
	if len(info.Partitions) == 0 {
		return nil, fmt.Errorf("%w: topic %s has no partitions", ErrProtocol, name)
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.routeLocked(name, len(info.Partitions), true), nil
}

// routeLocked returns name's route with at least n lanes; with count, n
// is its partition count. It makes a new route when either changes (a
// copy: publishers read routes without a lock), keeping the lanes. mu
// held.
func (cl *Cluster) routeLocked(name string, n int, count bool) *topicRoute {
	old := *cl.routes.Load()
	tr := old[name]
	if tr != nil && len(tr.lanes) >= n && (!count || tr.n == n && !tr.stale.Load()) {
		return tr
	}
	next := &topicRoute{name: name}
	if tr != nil {
		next.n, next.lanes = tr.n, tr.lanes
		next.stick.Store(tr.stick.Load() % uint32(max(n, 1)))
	} else {
		next.stick.Store(uint32(rand.N(max(n, 1))))
	}
	if count {
		next.n = n
	}
	for p := len(next.lanes); p < n; p++ {
		next.lanes = append(next.lanes, &lane{key: batchKey{name, int32(p)}})
	}
	m := make(map[string]*topicRoute, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = next
	cl.routes.Store(&m)
	return next
}

// laneLocked returns k's lane, making it if need be. mu held.
func (cl *Cluster) laneLocked(k batchKey) *lane {
	return cl.routeLocked(k.topic, int(k.partition)+1, false).lanes[k.partition]
}

// forgetTopic makes name's partition count stale: the next publish asks
// a node again (the topic may have been deleted and created anew).
func (cl *Cluster) forgetTopic(name string) {
	if tr := (*cl.routes.Load())[name]; tr != nil {
		tr.stale.Store(true)
	}
}

// choose is the partition msg goes to: the one opts name, its key's, or
// for an unkeyed message the topic's current one.
func (cl *Cluster) choose(tr *topicRoute, key []byte, size int, opts []PublishOption) int32 {
	if p := explicitPartition(opts); p != wire.PartitionAny {
		return p
	}
	if key != nil {
		return int32(KeyPartition(key, tr.n))
	}
	at := tr.stick.Load()
	if tr.fill.Add(int64(size+recordOverhead)) < int64(cl.opts.batchBytes) {
		return int32(at)
	}
	n := uint32(tr.n)
	next := (at + 1) % n
	for i := range n {
		if p := (at + 1 + i) % n; tr.lanes[p].cur.Load() != nil {
			next = p
			break
		}
	}
	if tr.stick.CompareAndSwap(at, next) {
		tr.fill.Store(0)
	}
	return int32(tr.stick.Load())
}

// lane returns the lane of partition p of tr, refusing a partition the
// topic does not have (after asking again, in case it grew).
func (cl *Cluster) lane(ctx context.Context, tr *topicRoute, p int32) (*lane, error) {
	if p >= 0 && int(p) < tr.n {
		return tr.lanes[p], nil
	}
	if p >= 0 {
		cl.forgetTopic(tr.name)
		if fresh, err := cl.topic(ctx, tr.name); err == nil && int(p) < fresh.n {
			return fresh.lanes[p], nil
		}
	}
	return nil, unknownPartition(tr.name, int(p), tr.n)
}

package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// AckMode says how a group consumer confirms what it processed.
type AckMode uint8

// Ack modes. The zero value is AckOffset, the default.
const (
	// AckOffset is at-least-once, Kafka style: the consumer commits the
	// offset after the last message it handled (every AutoCommitInterval,
	// on Commit, when a partition is revoked and on Close), and a new owner
	// starts there.
	AckOffset AckMode = iota
	// AckMessage is queue semantics: every message is acked or nacked on
	// its own. A message not acked within AckWait, or nacked, is delivered
	// again (to whichever member then owns its partition) until
	// MaxDeliveries, and then written to the dead-letter topic.
	AckMessage
	// AckNone is at-most-once: messages are pushed and nothing is
	// confirmed. A new owner of a partition starts at the group's start
	// position.
	AckNone
)

func (m AckMode) wire() wire.AckMode {
	switch m {
	case AckMessage:
		return wire.AckMessage
	case AckNone:
		return wire.AckNone
	}
	return wire.AckOffset
}

func ackModeOf(w wire.AckMode) AckMode {
	switch w {
	case wire.AckMessage:
		return AckMessage
	case wire.AckNone:
		return AckNone
	case wire.AckOffset:
		return AckOffset
	}
	return AckMode(100 + w) // unknown to this client; prints as such
}

func (m AckMode) String() string {
	switch m {
	case AckNone:
		return "none"
	case AckOffset:
		return "offset"
	case AckMessage:
		return "message"
	}
	return fmt.Sprintf("AckMode(%d)", uint8(m))
}

// ParseAckMode parses "none", "offset" or "message".
func ParseAckMode(s string) (AckMode, error) {
	for _, m := range []AckMode{AckNone, AckOffset, AckMessage} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("%w: ack mode %q: want none, offset or message", ErrInvalidArgument, s)
}

// Errors of group consumers.
var (
	ErrStaleGeneration = wire.ErrStaleGeneration
	ErrUnknownMember   = wire.ErrUnknownMember
	ErrGroupActive     = wire.ErrGroupActive
	ErrUnknownGroup    = wire.ErrUnknownGroup
)

// GroupConfig configures a group consumer. Group, Topic and Handler are
// required; zero values elsewhere take the defaults.
type GroupConfig struct {
	Group string
	Topic string
	// Mode is the ack mode; the first member to join an empty group sets
	// it, and later members must ask for the same. Default AckOffset.
	Mode AckMode
	// Start is where a partition the group never committed starts.
	// Default Latest.
	Start Position
	// Handler handles one message. In message mode, returning nil acks it
	// and an error nacks it (RetryAfter sets the delay before it comes
	// back). In offset mode the message counts as handled either way, and
	// an error goes to the client's error handler. The message and the
	// slices in it are valid only until Handler returns. Handler runs on
	// the consumer's goroutine, one message at a time, in partition order
	// (redeliveries excepted); it must not call Close.
	Handler func(*GroupMessage) error
	// OnAssign and OnRevoke run on the handler's goroutine when partitions
	// are given to the consumer or taken from it. In offset mode the
	// revoked partitions' offsets are committed before OnRevoke. After a
	// lost connection OnRevoke gets every partition, and nothing could be
	// committed: their new owners start at the last commit.
	OnAssign, OnRevoke func(partitions []int)
	// SessionTimeout: the broker gives the consumer's partitions to others
	// when it has not heard from it for this long. Default 10s; 1s..5m.
	SessionTimeout time.Duration
	// AutoCommitInterval is how often offset mode commits; negative turns
	// auto-commit off (commit with Commit). Default 1s.
	AutoCommitInterval time.Duration
	// AckWait is how long a delivered message may stay unacked before it is
	// delivered again (message mode). Default 30s.
	AckWait time.Duration
	// MaxDeliveries is how often a message is delivered before it goes to
	// the dead-letter topic (message mode). Default 5.
	MaxDeliveries int
	// MaxUnacked bounds the messages delivered to this consumer and not yet
	// acked (message mode). Default 10000.
	MaxUnacked int
	// Backoff is the delay before each redelivery: the n-th entry before
	// the n-th, the last entry after that (message mode). Default none.
	Backoff []time.Duration
	// DeadLetterTopic receives messages that were delivered MaxDeliveries
	// times (message mode). Default "<Topic>.dlq".
	DeadLetterTopic string
	// MemberID takes over the membership of the group's live member with
	// this id, an id the broker issued (another consumer's MemberID): that
	// member loses its partitions to this one. JoinGroup fails with
	// ErrUnknownMember when the group has no such member. Default: the
	// broker issues a new id.
	MemberID string
	// BeforeCommit, if set, runs on the handler's goroutine just before
	// the consumer commits offsets on its own (auto-commit, revocation,
	// Close): flush there whatever the handler buffered, so that no
	// committed message is lost in a buffer.
	BeforeCommit func()
}

// GroupMessage is a message delivered to a group consumer.
type GroupMessage struct {
	Delivery
	// Attempt is 1 for a first delivery and counts the redeliveries after.
	Attempt uint32
}

type retryAfter struct {
	d   time.Duration
	err error
}

func (r *retryAfter) Error() string { return r.err.Error() }
func (r *retryAfter) Unwrap() error { return r.err }

// RetryAfter wraps a handler's error so that, in message mode, the message
// is redelivered no sooner than d from now.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry")
	}
	return &retryAfter{d: d, err: err}
}

// GroupConsumer is a member of a consumer group: it gets a share of the
// topic's partitions, which the broker rebalances as members come and go.
// It has a connection of its own, which it re-establishes (and rejoins)
// when it breaks.
type GroupConsumer struct {
	cfg  GroupConfig
	addr string // the node it joins at; in a cluster, the group's coordinator as last named
	// addrs, in a cluster (Cluster.JoinGroup), are the nodes to try when
	// addr does not answer or names no coordinator; nil for one broker.
	addrs []string
	opts  []Option
	o     options // opts applied: reconnection settings and the state handler

	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{}
	joined    chan error

	// Guarded by mu: what Commit and Assigned read.
	mu        sync.Mutex
	c         *Client
	member    string
	gen       uint32
	pos       map[int32]int64 // assigned partition -> next offset to handle
	committed map[int32]int64
	confirmed atomic.Uint32 // the last generation whose Assignment was handled
	errs      func(error)

	// Owned by the consumer's goroutine.
	sink    *groupSink
	backlog []*bytebufferpool.ByteBuffer
	acks    map[int32][]wire.OffsetRange
	msg     GroupMessage
	dec     wire.Decompressor // the consumer goroutine's, as msg is
}

// JoinGroup connects to the broker at addr and joins cfg.Group. It returns
// once the broker accepted the member; partitions arrive in the
// background (OnAssign). opts configure the connection as for Dial.
func JoinGroup(ctx context.Context, addr string, cfg GroupConfig, opts ...Option) (*GroupConsumer, error) {
	return joinGroup(ctx, addr, nil, cfg, opts)
}

// joinGroup is JoinGroup; addrs, for a cluster, are every node to try.
func joinGroup(ctx context.Context, addr string, addrs []string, cfg GroupConfig, opts []Option) (*GroupConsumer, error) {
	if cfg.Handler == nil {
		return nil, fmt.Errorf("%w: a group consumer needs a Handler", ErrInvalidArgument)
	}
	if err := wire.ValidateTopicName(cfg.Group); err != nil {
		return nil, fmt.Errorf("group name %q: %w", cfg.Group, err)
	}
	if err := wire.ValidateTopicName(cfg.Topic); err != nil {
		return nil, fmt.Errorf("topic %q: %w", cfg.Topic, err)
	}
	if cfg.AutoCommitInterval == 0 {
		cfg.AutoCommitInterval = time.Second
	}
	if cfg.Start == (Position{}) {
		cfg.Start = Latest
	}
	o := defaultOptions()
	for _, f := range opts {
		f(&o)
	}
	// Each membership has a connection of its own, which must not
	// reconnect by itself: membership is bound to the connection, so the
	// consumer joins again over a new one (run).
	sessionOpts := append(slices.Clone(opts), WithoutReconnect(), WithStateHandler(nil))
	g := &GroupConsumer{cfg: cfg, addr: addr, addrs: addrs, opts: sessionOpts, o: o, closing: make(chan struct{}), done: make(chan struct{}),
		joined: make(chan error, 1), member: cfg.MemberID, pos: map[int32]int64{}, committed: map[int32]int64{},
		acks: map[int32][]wire.OffsetRange{}}
	g.errs = o.errorHandler
	if g.errs == nil {
		g.errs = func(err error) { o.logger.Warn("ratatoskr group consumer", "group", cfg.Group, "err", err) }
	}
	g.msg.Topic = cfg.Topic
	go g.run(ctx)
	select {
	case err := <-g.joined:
		if err != nil {
			<-g.done
			return nil, err
		}
		return g, nil
	case <-ctx.Done():
		_ = g.Close()
		return nil, ctx.Err()
	}
}

// MemberID is the id the broker knows this consumer by.
func (g *GroupConsumer) MemberID() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.member
}

// Assigned lists the partitions the consumer owns now.
func (g *GroupConsumer) Assigned() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]int, 0, len(g.pos))
	for p := range g.pos {
		out = append(out, int(p))
	}
	slices.Sort(out)
	return out
}

// Committed returns, by partition the consumer owns, the offset it last
// committed there that the broker answered as stored (offset mode):
// what Commit, auto-commit or Close committed since the partition was
// assigned. A partition it has not committed since is absent.
func (g *GroupConsumer) Committed() map[int]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[int]int64, len(g.committed))
	for p, off := range g.committed {
		out[int(p)] = off
	}
	return out
}

// Done is closed once the consumer has stopped.
func (g *GroupConsumer) Done() <-chan struct{} { return g.done }

// Close commits (offset mode), leaves the group so its partitions move at
// once, and closes the connection. It waits for a handler that is running.
func (g *GroupConsumer) Close() error {
	g.closeOnce.Do(func() { close(g.closing) })
	<-g.done
	return nil
}

// Commit commits the offsets after the messages handled so far (offset
// mode) and waits until the broker has stored them.
func (g *GroupConsumer) Commit(ctx context.Context) error {
	if g.cfg.Mode != AckOffset {
		return fmt.Errorf("%w: commits are for offset mode; this consumer is in %s mode", ErrInvalidArgument, g.cfg.Mode)
	}
	c, body, offs := g.commitBody(false)
	if c == nil {
		return ErrConnectionLost
	}
	if body == nil {
		return nil
	}
	r, err := c.call(ctx, wire.TypeCommit, 0, body)
	if err == nil {
		err = expect(r, wire.TypeOK)
	}
	if err == nil {
		g.markCommitted(offs)
	}
	return err
}

// commitBody builds a Commit of the positions that moved since the last
// commit (all positions when all is set).
func (g *GroupConsumer) commitBody(all bool) (*Client, []byte, []wire.PartitionOffset) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var offs []wire.PartitionOffset
	for p, off := range g.pos {
		if c, ok := g.committed[p]; all || !ok || c != off {
			offs = append(offs, wire.PartitionOffset{Partition: p, Offset: off})
		}
	}
	if len(offs) == 0 {
		return g.c, nil, nil
	}
	req := wire.Commit{MemberRef: wire.MemberRef{Group: g.cfg.Group, Member: g.member, Generation: g.gen}, Offsets: offs}
	return g.c, req.Append(nil), offs
}

func (g *GroupConsumer) markCommitted(offs []wire.PartitionOffset) {
	g.mu.Lock()
	for _, o := range offs {
		if _, ok := g.pos[o.Partition]; ok {
			g.committed[o.Partition] = o.Offset
		}
	}
	g.mu.Unlock()
}

func (g *GroupConsumer) ref() wire.MemberRef {
	g.mu.Lock()
	defer g.mu.Unlock()
	return wire.MemberRef{Group: g.cfg.Group, Member: g.member, Generation: g.gen}
}

// run keeps the consumer in its group: it connects, joins, handles what
// arrives, and after a lost connection does it again, with the client's
// reconnection backoff (WithReconnect, WithReconnectAttempts).
func (g *GroupConsumer) run(ctx context.Context) {
	defer close(g.done)
	first := true
	failures := 0
	closeErr := ErrClosed
	defer func() { g.setState(StateClosed, closeErr) }()
	for {
		joined, err := g.session(ctx, first)
		if first && !joined && g.redirect(err) && ctx.Err() == nil {
			// A cluster whose coordinator for the group is elsewhere or
			// being elected: try where the refusal pointed, within ctx.
			failures++
			if !g.pause(ctx, backoff(failures, g.o.reconnectMin, g.o.reconnectMax)) {
				closeErr = ctx.Err()
				g.joined <- closeErr
				return
			}
			continue
		}
		if first {
			if !joined {
				closeErr = err
				g.joined <- err
				return
			}
			first, ctx = false, context.Background()
		}
		select {
		case <-g.closing:
			return
		default:
		}
		if joined {
			failures = 0
			g.setState(StateDisconnected, err)
		} else {
			failures++
		}
		if !g.o.reconnect || (g.o.reconnectAttempts > 0 && failures >= g.o.reconnectAttempts) {
			closeErr = fmt.Errorf("group %s: %w: not rejoining: %w", g.cfg.Group, ErrConnectionLost, err)
			g.errs(closeErr)
			return
		}
		g.redirect(err)
		wait := backoff(failures, g.o.reconnectMin, g.o.reconnectMax)
		if err != nil {
			g.errs(fmt.Errorf("group %s: %w; rejoining in %s", g.cfg.Group, err, wait.Round(time.Millisecond)))
		}
		t := time.NewTimer(wait)
		select {
		case <-g.closing:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// redirect is, for a consumer of a cluster, whether a session that
// ended with err should be tried at another node, and moves addr there:
// to the coordinator a NOT_LEADER refusal names, else (no coordinator
// named, the node unreachable or stopping) to the next node.
func (g *GroupConsumer) redirect(err error) bool {
	if g.addrs == nil || err == nil {
		return false
	}
	if _, addr, ok := wire.LeaderOf(err); ok && addr != "" {
		if !slices.Contains(g.addrs, addr) {
			g.addrs = append(g.addrs, addr)
		}
		g.addr = addr // the node itself, when it is still taking the group over
		return true
	}
	var we *wire.Error
	if errors.As(err, &we) && we.Code != wire.CodeNotLeader && we.Code != wire.CodeShuttingDown {
		return false // refused for another reason: the same anywhere
	}
	if i := slices.Index(g.addrs, g.addr); i >= 0 {
		g.addr = g.addrs[(i+1)%len(g.addrs)]
	} else if len(g.addrs) > 0 {
		g.addr = g.addrs[0]
	}
	return true
}

// pause waits d, and reports false if ctx ended or the consumer closed
// first.
func (g *GroupConsumer) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-g.closing:
		return false
	}
}

// setState tells the state handler, if any.
func (g *GroupConsumer) setState(s State, err error) {
	if g.o.stateHandler != nil {
		g.o.stateHandler(s, err)
	}
}

// session is one connection's membership. It reports whether the join
// succeeded, and why the session ended (nil for Close).
func (g *GroupConsumer) session(ctx context.Context, first bool) (bool, error) {
	c, err := Dial(ctx, g.addr, g.opts...)
	if err != nil {
		return false, err
	}
	sink := &groupSink{topic: g.cfg.Topic, queue: make(chan *bytebufferpool.ByteBuffer, subQueueLen),
		space: make(chan struct{}, 1), stop: make(chan struct{}), limit: int64(c.opts.subPendingBytes)}
	c.group.Store(sink)
	g.sink = sink
	defer func() {
		close(sink.stop)
		_ = c.Close()
		for _, b := range g.backlog {
			bytebufferpool.Put(b)
		}
		g.backlog = g.backlog[:0]
	}()
	res, err := g.join(ctx, c)
	if errors.Is(err, ErrUnknownMember) && !first {
		// The id it rejoined with is gone (the broker saw the old
		// connection close, or restarted): it gets a new one.
		g.forgetMember(g.MemberID())
		res, err = g.join(ctx, c)
	}
	if err != nil {
		return false, err
	}
	g.mu.Lock()
	g.c, g.member, g.gen = c, res.Member, 0
	g.mu.Unlock()
	g.confirmed.Store(0)
	if first {
		g.setState(StateConnected, nil)
		g.joined <- nil
	} else {
		g.setState(StateReconnected, nil)
	}
	hbStop := make(chan struct{})
	defer close(hbStop)
	every := time.Duration(res.SessionTimeoutMs) * time.Millisecond / 3
	go g.heartbeats(c, every, hbStop)
	var commitTick <-chan time.Time
	if g.cfg.Mode == AckOffset && g.cfg.AutoCommitInterval > 0 {
		t := time.NewTicker(g.cfg.AutoCommitInterval)
		defer t.Stop()
		commitTick = t.C
	}
	for {
		if len(g.backlog) > 0 {
			b := g.backlog[0]
			g.backlog = g.backlog[1:]
			g.process(c, b)
			continue
		}
		select {
		case b, ok := <-sink.queue:
			if !ok {
				g.lose()
				return true, c.stopped()
			}
			sink.taken(b)
			g.process(c, b)
		case <-commitTick:
			g.autoCommit(c)
		case <-g.closing:
			g.leave(c)
			return true, nil
		}
	}
}

func (g *GroupConsumer) join(ctx context.Context, c *Client) (wire.JoinResult, error) {
	cfg := &g.cfg
	req := wire.JoinGroup{Group: cfg.Group, Topic: cfg.Topic, Member: g.MemberID(),
		SessionTimeoutMs: uint32(cfg.SessionTimeout / time.Millisecond), Mode: cfg.Mode.wire(),
		Start: cfg.Start.wire(), AckWaitMs: uint32(cfg.AckWait / time.Millisecond),
		MaxDeliveries: uint32(max(cfg.MaxDeliveries, 0)), MaxUnacked: uint32(max(cfg.MaxUnacked, 0)),
		DLQ: cfg.DeadLetterTopic}
	for _, b := range cfg.Backoff {
		req.BackoffMs = append(req.BackoffMs, uint32(b/time.Millisecond))
	}
	r, err := c.call(ctx, wire.TypeJoinGroup, 0, req.Append(nil))
	if err == nil {
		err = expect(r, wire.TypeJoinResult)
	}
	if err != nil {
		return wire.JoinResult{}, err
	}
	res, err := wire.DecodeJoinResult(r.body)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return res, nil
}

// heartbeats keeps the membership alive. The generation it sends is the
// last one whose Assignment was handled, which tells the broker that the
// partitions it revoked are committed and may move.
func (g *GroupConsumer) heartbeats(c *Client, every time.Duration, stop chan struct{}) {
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		case <-c.Done():
			return
		}
		g.heartbeat(c, every)
	}
}

func (g *GroupConsumer) heartbeat(c *Client, timeout time.Duration) {
	ref := g.ref()
	ref.Generation = g.confirmed.Load()
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, time.Second))
	defer cancel()
	_, err := c.call(ctx, wire.TypeHeartbeat, 0, ref.Append(nil))
	select {
	case <-g.closing:
		return // leaving: the membership may be gone already
	default:
	}
	if errors.Is(err, ErrUnknownMember) {
		// The broker dropped the membership (session timeout, or another
		// connection took the id over): start over on a new connection,
		// with a new id so as not to take it back.
		g.mu.Lock()
		if g.c == c {
			g.forgetMemberLocked(ref.Member)
		}
		g.mu.Unlock()
		c.shutdown(fmt.Errorf("%w: %w", ErrConnectionLost, err))
	}
}

// forgetMember drops the member id id, so that the next join asks the
// broker for a new one. A consumer rejoins with its id after a lost
// connection: the broker accepts it while the old connection's membership
// lives (taking it over), and refuses it once it has ended.
func (g *GroupConsumer) forgetMember(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forgetMemberLocked(id)
}

func (g *GroupConsumer) forgetMemberLocked(id string) {
	if g.member == id {
		g.member = ""
	}
}

// callDraining makes a call from the consumer's goroutine. Deliveries
// keep arriving meanwhile; they are set aside (unbounded, but only for the
// call's duration) so the reader never blocks on a full queue while the
// answer waits behind it.
func (g *GroupConsumer) callDraining(c *Client, t wire.Type, body []byte) error {
	type result struct {
		r   response
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := c.call(ctx, t, 0, body)
		ch <- result{r, err}
	}()
	queue := g.sink.queue
	for {
		select {
		case res := <-ch:
			if res.err != nil {
				return res.err
			}
			return expect(res.r, wire.TypeOK)
		case b, ok := <-queue:
			if !ok {
				queue = nil
				continue
			}
			g.sink.taken(b)
			g.backlog = append(g.backlog, b)
		}
	}
}

func (g *GroupConsumer) beforeCommit() {
	if g.cfg.BeforeCommit != nil {
		g.cfg.BeforeCommit()
	}
}

// autoCommit commits moved positions in the background.
func (g *GroupConsumer) autoCommit(c *Client) {
	g.beforeCommit()
	_, body, offs := g.commitBody(false)
	if body == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := c.call(ctx, wire.TypeCommit, 0, body)
		if err == nil {
			err = expect(r, wire.TypeOK)
		}
		if err != nil {
			if !errors.Is(err, ErrStaleGeneration) && !IsRetryable(err) && !errors.Is(err, ErrClosed) {
				g.errs(fmt.Errorf("group %s: auto-commit: %w", g.cfg.Group, err))
			}
			return
		}
		g.markCommitted(offs)
	}()
}

// leave ends the membership for Close: commit, leave, revoke.
func (g *GroupConsumer) leave(c *Client) {
	g.flushAcks(c)
	if g.cfg.Mode == AckOffset {
		g.beforeCommit()
		if _, body, offs := g.commitBody(false); body != nil {
			if err := g.callDraining(c, wire.TypeCommit, body); err != nil {
				g.errs(fmt.Errorf("group %s: commit on close: %w", g.cfg.Group, err))
			} else {
				g.markCommitted(offs)
			}
		}
	}
	ref := g.ref()
	if err := g.callDraining(c, wire.TypeLeaveGroup, ref.Append(nil)); err != nil && !IsRetryable(err) {
		g.errs(fmt.Errorf("group %s: leave: %w", g.cfg.Group, err))
	}
	g.lose()
}

// lose drops every partition: the connection is gone (or the consumer
// left), so nothing more can be committed for them.
func (g *GroupConsumer) lose() {
	g.mu.Lock()
	parts := make([]int, 0, len(g.pos))
	for p := range g.pos {
		parts = append(parts, int(p))
	}
	clear(g.pos)
	clear(g.committed)
	g.c = nil
	g.mu.Unlock()
	clear(g.acks)
	slices.Sort(parts)
	if len(parts) > 0 && g.cfg.OnRevoke != nil {
		g.cfg.OnRevoke(parts)
	}
}

// Events staged by the reader for the consumer's goroutine, in the order
// the frames arrived: [kind u8][length u32][payload].
const (
	evDeliver    = 1 // payload: partition u32, batch
	evAssignment = 2 // payload: Assignment body
	evRedeliver  = 3 // payload: Redeliver body
)

// process handles one chunk of events.
func (g *GroupConsumer) process(c *Client, b *bytebufferpool.ByteBuffer) {
	chunk := b.B
	for len(chunk) >= 5 {
		kind, n := chunk[0], int(binary.BigEndian.Uint32(chunk[1:]))
		payload := chunk[5 : 5+n]
		chunk = chunk[5+n:]
		switch kind {
		case evDeliver:
			g.deliver(c, int32(binary.BigEndian.Uint32(payload)), wire.Batch(payload[4:]))
		case evRedeliver:
			g.redeliver(c, payload)
		case evAssignment:
			g.flushAcks(c)
			g.assignment(c, payload)
		}
	}
	bytebufferpool.Put(b)
	g.flushAcks(c)
}

// deliver handles a first delivery: the records at or past the partition's
// position (the first batch after an assignment may start earlier).
func (g *GroupConsumer) deliver(c *Client, p int32, batch wire.Batch) {
	g.mu.Lock()
	pos, ok := g.pos[p]
	g.mu.Unlock()
	if !ok {
		return // a partition this consumer no longer owns
	}
	next := g.dispatch(c, p, batch, pos, nil, 1)
	if next != pos {
		g.mu.Lock()
		if _, ok := g.pos[p]; ok {
			g.pos[p] = next
		}
		g.mu.Unlock()
	}
}

func (g *GroupConsumer) redeliver(c *Client, body []byte) {
	pre, batch, err := wire.DecodeRedeliver(body)
	if err != nil {
		g.errs(fmt.Errorf("%w: redeliver: %w", ErrProtocol, err))
		return
	}
	g.mu.Lock()
	_, ok := g.pos[pre.Partition]
	g.mu.Unlock()
	if ok {
		g.dispatch(c, pre.Partition, batch, 0, pre.Offsets, pre.Attempt)
	}
}

// dispatch calls the handler for the records of batch at or past from, or
// (when only is not nil) for the listed offsets. It returns the offset
// after the last record handled, and in message mode gathers the acks and
// sends the nacks.
func (g *GroupConsumer) dispatch(c *Client, p int32, batch wire.Batch, from int64, only []int64, attempt uint32) int64 {
	m := &g.msg
	m.Partition, m.Attempt = p, attempt
	message := g.cfg.Mode == AckMessage
	var run wire.OffsetRange // acks being gathered: a run of consecutive offsets
	it, err := g.dec.Records(batch, wire.MaxBatchBytes)
	if err != nil {
		g.errs(fmt.Errorf("%w: delivered batch of %s: %w", ErrProtocol, g.cfg.Topic, err))
		return from
	}
	var r wire.Record
	for it.Next(&r) {
		if only != nil {
			i, found := slices.BinarySearch(only, r.Offset)
			if !found {
				if i == len(only) {
					break
				}
				continue
			}
		} else if r.Offset < from {
			continue
		}
		m.Offset, m.Key, m.Value = r.Offset, r.Key, r.Value
		m.Timestamp = time.Unix(0, r.Timestamp)
		m.Headers = m.Headers[:0]
		if r.HeaderCount() > 0 {
			r.Headers(func(k, v []byte) { m.Headers = append(m.Headers, Header{Key: string(k), Value: v}) })
		}
		err := g.cfg.Handler(m)
		from = r.Offset + 1
		switch {
		case !message:
			if err != nil {
				g.errs(fmt.Errorf("group %s: handler, %s/%d offset %d: %w", g.cfg.Group, g.cfg.Topic, p, r.Offset, err))
			}
		case err == nil:
			if run.To == r.Offset && run.To > run.From {
				run.To++
			} else {
				g.addAck(p, run)
				run = wire.OffsetRange{From: r.Offset, To: r.Offset + 1}
			}
		default:
			g.nack(c, p, r.Offset, err)
		}
	}
	if it.Err() != nil {
		g.errs(fmt.Errorf("%w: delivered batch of %s: %w", ErrProtocol, g.cfg.Topic, it.Err()))
	}
	g.addAck(p, run)
	return from
}

func (g *GroupConsumer) addAck(p int32, r wire.OffsetRange) {
	if r.To <= r.From {
		return
	}
	l := g.acks[p]
	if n := len(l); n > 0 && l[n-1].To == r.From {
		l[n-1].To = r.To
	} else {
		l = append(l, r)
	}
	g.acks[p] = l
}

// flushAcks sends the gathered acks, one frame per partition.
func (g *GroupConsumer) flushAcks(c *Client) {
	if len(g.acks) == 0 {
		return
	}
	ref := g.ref()
	for p, l := range g.acks {
		for len(l) > 0 {
			n := min(len(l), 1<<16-1)
			a := wire.Ack{MemberRef: ref, Partition: p, Ranges: l[:n]}
			c.sendOneWay(wire.TypeAck, a.Append(nil))
			l = l[n:]
		}
		delete(g.acks, p)
	}
}

func (g *GroupConsumer) nack(c *Client, p int32, offset int64, err error) {
	n := wire.Nack{MemberRef: g.ref(), Partition: p, Offset: offset, Reason: err.Error()}
	var ra *retryAfter
	if errors.As(err, &ra) {
		n.DelayMs = uint32(min(ra.d/time.Millisecond, 1<<32-1))
	}
	if len(n.Reason) > 1024 {
		n.Reason = strings.ToValidUTF8(n.Reason[:1024], "")
	}
	c.sendOneWay(wire.TypeNack, n.Append(nil))
}

// assignment applies a new Assignment: revoked partitions are committed
// (offset mode) and handed back, new ones start at the broker's offset.
// Then the generation is confirmed at once with a heartbeat.
func (g *GroupConsumer) assignment(c *Client, body []byte) {
	a, err := wire.DecodeAssignment(body)
	if err != nil {
		g.errs(fmt.Errorf("%w: assignment: %w", ErrProtocol, err))
		return
	}
	now := map[int32]int64{}
	for _, po := range a.Partitions {
		now[po.Partition] = po.Offset
	}
	if g.cfg.Mode == AckOffset {
		g.beforeCommit()
	}
	g.mu.Lock()
	g.gen = a.Generation
	var revoked []int
	var revokedOffs []wire.PartitionOffset
	for p, pos := range g.pos {
		if _, keep := now[p]; !keep {
			revoked = append(revoked, int(p))
			if c, ok := g.committed[p]; !ok || c != pos {
				revokedOffs = append(revokedOffs, wire.PartitionOffset{Partition: p, Offset: pos})
			}
		}
	}
	g.mu.Unlock()
	if len(revoked) > 0 {
		slices.Sort(revoked)
		if g.cfg.Mode == AckOffset && len(revokedOffs) > 0 {
			req := wire.Commit{MemberRef: g.ref(), Offsets: revokedOffs}
			if err := g.callDraining(c, wire.TypeCommit, req.Append(nil)); err != nil {
				g.errs(fmt.Errorf("group %s: commit of revoked partitions %v: %w", g.cfg.Group, revoked, err))
			}
		}
		g.mu.Lock()
		for _, p := range revoked {
			delete(g.pos, int32(p))
			delete(g.committed, int32(p))
		}
		g.mu.Unlock()
		if g.cfg.OnRevoke != nil {
			g.cfg.OnRevoke(revoked)
		}
	}
	var added []int
	g.mu.Lock()
	for p, off := range now {
		if _, ok := g.pos[p]; !ok {
			g.pos[p] = off
			added = append(added, int(p))
		}
	}
	g.mu.Unlock()
	g.confirmed.Store(a.Generation)
	go g.heartbeat(c, 5*time.Second)
	if len(added) > 0 && g.cfg.OnAssign != nil {
		slices.Sort(added)
		g.cfg.OnAssign(added)
	}
}

// groupSink receives a group consumer's frames on the client's reader and
// queues them, in arrival order, for the consumer's goroutine. Unlike a
// subscription it never drops: at its bound the reader waits, and the
// broker's flow control (and at worst its slow-consumer timeout, after
// which the consumer rejoins from its commits) takes over.
type groupSink struct {
	topic   string
	staged  *bytebufferpool.ByteBuffer // reader-owned
	queue   chan *bytebufferpool.ByteBuffer
	pending atomic.Int64
	limit   int64
	space   chan struct{}
	stop    chan struct{}
}

// stage appends an event; the reader calls it.
func (s *groupSink) stage(kind byte, parts ...[]byte) {
	if s.staged == nil {
		s.staged = bytebufferpool.Get()
	}
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	s.staged.B = append(s.staged.B, kind)
	s.staged.B = binary.BigEndian.AppendUint32(s.staged.B, uint32(n))
	for _, p := range parts {
		s.staged.B = append(s.staged.B, p...)
	}
}

// flush queues what the reader staged during one read, waiting for room.
func (s *groupSink) flush() {
	b := s.staged
	if b == nil {
		return
	}
	s.staged = nil
	n := int64(len(b.B))
	for {
		p := s.pending.Load()
		if (p == 0 || p+n <= s.limit) && len(s.queue) < cap(s.queue) {
			break
		}
		select {
		case <-s.space:
		case <-s.stop:
			bytebufferpool.Put(b)
			return
		}
	}
	s.pending.Add(n)
	s.queue <- b
}

// taken releases a chunk's bytes from the bound.
func (s *groupSink) taken(b *bytebufferpool.ByteBuffer) {
	s.pending.Add(-int64(len(b.B)))
	select {
	case s.space <- struct{}{}:
	default:
	}
}

// sendOneWay queues a frame that is answered only when it fails (Ack,
// Nack); such an error reaches the error handler.
func (c *Client) sendOneWay(t wire.Type, body []byte) {
	frame := append(wire.AppendHeader(make([]byte, 0, wire.HeaderSize+len(body)), t, 0, c.nextCorr(), len(body)), body...)
	c.wmu.Lock()
	c.outq = append(c.outq, outFrame{frame: frame})
	c.wmu.Unlock()
	c.kick(clock())
}

// JoinGroup joins cfg.Group through the cluster: the consumer joins at
// the group's coordinator, the node that leads the group's partition of
// the cluster's offsets topic, which any node names when it refuses the
// join (NOT_LEADER). When the coordinator changes (its node stops or
// dies, or the leadership moves), the consumer joins again at the new
// one, which starts each partition from the group's committed offset. The
// consumer has a connection of its own, with the Cluster's options; it
// tries the nodes the Cluster knows when the one it knew does not answer.
func (c *Cluster) JoinGroup(ctx context.Context, cfg GroupConfig) (*GroupConsumer, error) {
	c.mu.Lock()
	addrs := slices.Clone(c.order)
	c.mu.Unlock()
	if len(addrs) == 0 {
		addrs = slices.Clone(c.seeds)
	}
	return joinGroup(ctx, addrs[0], addrs, cfg, c.uopts)
}

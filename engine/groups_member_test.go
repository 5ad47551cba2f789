package engine

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/client"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Membership rules of docs/PROTOCOL.md §9, checked with raw frames (what a
// client written from the spec sends) and with the Go client.

// answer sends a request on r and returns its answer, skipping the frames
// the broker sends on its own (corr 0).
func answer(t *testing.T, r *rawConn, typ wire.Type, corr uint32, body []byte) wire.Frame {
	t.Helper()
	r.sendFrame(typ, corr, body)
	for {
		f := r.next()
		if f.Corr == corr {
			return f
		}
		require.Zero(t, f.Corr, "an answer to another request: %s", errBody(f))
	}
}

// codeOf is the code of an Error frame, CodeOK for any other frame.
func codeOf(t *testing.T, f wire.Frame) wire.Code {
	t.Helper()
	if f.Type != wire.TypeError {
		return wire.CodeOK
	}
	e, err := wire.DecodeError(f.Body)
	require.NoError(t, err)
	return e.Code
}

// rawJoin sends a JoinGroup on r and returns its answer.
func rawJoin(t *testing.T, r *rawConn, corr uint32, req wire.JoinGroup) wire.Frame {
	t.Helper()
	return answer(t, r, wire.TypeJoinGroup, corr, req.Append(nil))
}

// joinedOn joins on an open connection, which must be accepted, and
// returns the member's id and first Assignment.
func joinedOn(t *testing.T, r *rawConn, corr uint32, req wire.JoinGroup) (string, wire.Assignment) {
	t.Helper()
	f := rawJoin(t, r, corr, req)
	require.Equal(t, wire.TypeJoinResult, f.Type, "join: %s", errBody(f))
	res, err := wire.DecodeJoinResult(f.Body)
	require.NoError(t, err)
	m := &rawMember{rawConn: r}
	return res.Member, m.assignment()
}

func hbBody(group, member string, gen uint32) []byte {
	return (&wire.MemberRef{Group: group, Member: member, Generation: gen}).Append(nil)
}

// TestJoinGroupRefusals: each refusal §9.2 lists, on one connection that
// stays open through all of them, and the rules that bind a membership to
// its connection, a group to its topic and ack mode, and a topic to one
// consumer per connection (ALREADY_SUBSCRIBED both ways).
func TestJoinGroupRefusals(t *testing.T) {
	e := startBroker(t, func(c *Config) { c.DefaultPartitions = 3 })
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "jr", client.TopicConfig{Partitions: 2}))
	publishN(t, c, "jr", 0, 4)
	r := dialRaw(t, e)
	r.hello()
	base := wire.JoinGroup{Group: "jg", Topic: "jr", Mode: wire.AckOffset, Start: wire.Start{Kind: wire.StartEarliest}}
	corr := uint32(10)
	refused := func(code wire.Code, change func(*wire.JoinGroup)) {
		t.Helper()
		req := base
		change(&req)
		corr++
		require.Equal(t, code, codeOf(t, rawJoin(t, r, corr, req)), "%+v", req)
	}
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.SessionTimeoutMs = 999 })
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.SessionTimeoutMs = 300_001 })
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.Group = "" })
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.Group = "a/b" })
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.AckWaitMs = 9 }) // in every mode
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.BackoffMs = make([]uint32, 65) })
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.DLQ = "jr" })
	refused(wire.CodeInvalidArgument, func(j *wire.JoinGroup) { j.DLQ = "a/b" })
	refused(wire.CodeUnknownMember, func(j *wire.JoinGroup) { j.Member = "never-issued" })
	_, err := c.DescribeGroup(ctx, "jg")
	require.ErrorIs(t, err, client.ErrUnknownGroup, "no refused join made the group")

	req := base
	req.SessionTimeoutMs = 300_000
	id, first := joinedOn(t, r, 30, req)
	require.Len(t, first.Partitions, 2)
	refused(wire.CodeInvalidArgument, func(*wire.JoinGroup) {})                       // already a member of jg
	refused(wire.CodeAlreadySubscribed, func(j *wire.JoinGroup) { j.Group = "jg-2" }) // jr has a consumer here
	sub := (&wire.Subscribe{Topic: "jr", Partition: wire.PartitionAny}).Append(nil)
	require.Equal(t, wire.CodeAlreadySubscribed, codeOf(t, answer(t, r, wire.TypeSubscribe, 40, sub)))
	// Another group of another topic, auto-created with the defaults.
	other, _ := joinedOn(t, r, 41, wire.JoinGroup{Group: "og", Topic: "fresh", Mode: wire.AckNone})
	require.NotEqual(t, id, other)
	info, err := c.DescribeTopic(ctx, "fresh")
	require.NoError(t, err)
	require.Len(t, info.Partitions, 3)

	// A subscriber's connection may not join a group of that topic; a
	// group keeps its topic and, while it has members, its ack mode.
	r2 := dialRaw(t, e)
	r2.hello()
	sub0 := (&wire.Subscribe{Topic: "jr", Partition: 0}).Append(nil)
	require.Equal(t, wire.TypeSubscribeOK, answer(t, r2, wire.TypeSubscribe, 2, sub0).Type)
	req = base
	req.Group = "jg-3"
	require.Equal(t, wire.CodeAlreadySubscribed, codeOf(t, rawJoin(t, r2, 3, req)))
	req = base
	req.Topic = "fresh"
	require.Equal(t, wire.CodeInvalidArgument, codeOf(t, rawJoin(t, r2, 4, req)))
	r4 := dialRaw(t, e)
	r4.hello()
	req = base
	req.Mode = wire.AckMessage
	require.Equal(t, wire.CodeInvalidArgument, codeOf(t, rawJoin(t, r4, 5, req)))

	// A membership is its connection's: another one cannot name it.
	require.Equal(t, wire.CodeUnknownMember, codeOf(t, answer(t, r2, wire.TypeHeartbeat, 6, hbBody("jg", id, 0))))
	commit := wire.Commit{MemberRef: wire.MemberRef{Group: "jg", Member: id, Generation: first.Generation},
		Offsets: []wire.PartitionOffset{{Partition: 0, Offset: 1}}}
	require.Equal(t, wire.CodeUnknownMember, codeOf(t, answer(t, r2, wire.TypeCommit, 7, commit.Append(nil))))

	// Commit and Ack refusals on the member's own connection.
	commitCode := func(corr uint32, gen uint32, p int32, off int64) wire.Code {
		c := wire.Commit{MemberRef: wire.MemberRef{Group: "jg", Member: id, Generation: gen},
			Offsets: []wire.PartitionOffset{{Partition: p, Offset: off}}}
		return codeOf(t, answer(t, r, wire.TypeCommit, corr, c.Append(nil)))
	}
	require.Equal(t, wire.CodeUnknownPartition, commitCode(50, first.Generation, 2, 0))
	require.Equal(t, wire.CodeInvalidArgument, commitCode(51, first.Generation, 0, 100), "past the end")
	require.Equal(t, wire.CodeStaleGeneration, commitCode(52, first.Generation+1, 0, 1), "never assigned")
	require.Equal(t, wire.CodeOK, commitCode(53, first.Generation, 0, 1))
	ack := wire.Ack{MemberRef: wire.MemberRef{Group: "jg", Member: id, Generation: first.Generation},
		Ranges: []wire.OffsetRange{{From: 0, To: 1}}}
	require.Equal(t, wire.CodeInvalidArgument, codeOf(t, answer(t, r, wire.TypeAck, 54, ack.Append(nil))), "offset mode")
	nc := wire.Commit{MemberRef: wire.MemberRef{Group: "og", Member: other}}
	require.Equal(t, wire.CodeInvalidArgument, codeOf(t, answer(t, r, wire.TypeCommit, 55, nc.Append(nil))), "none mode")

	// With auto-creation off, a missing topic is UNKNOWN_TOPIC.
	off := startBroker(t, func(c *Config) { c.AutoCreateTopics = false })
	r3 := dialRaw(t, off)
	r3.hello()
	require.Equal(t, wire.CodeUnknownTopic, codeOf(t, rawJoin(t, r3, 2, base)))
}

// TestMemberWithoutPartitionsGetsAnEmptyAssignment: every JoinResult is
// followed by an Assignment; a member that gets no partition gets one
// with none, in the group's current generation. Generation 0 is a valid
// heartbeat before (or after) it; only the last Assignment's confirms.
func TestMemberWithoutPartitionsGetsAnEmptyAssignment(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "one", client.TopicConfig{Partitions: 1}))
	join := wire.JoinGroup{Group: "eg", Topic: "one", Mode: wire.AckOffset}
	a := joinRaw(t, e, join)
	got := a.assignment()
	require.Len(t, got.Partitions, 1)
	b := joinRaw(t, e, join)
	empty := b.assignment()
	require.Empty(t, empty.Partitions)
	require.Equal(t, got.Generation, empty.Generation, "nothing moved")
	require.Equal(t, wire.TypeOK, b.call(wire.TypeHeartbeat, hbBody("eg", b.id, 0)).Type)
	require.Equal(t, wire.TypeOK, b.call(wire.TypeHeartbeat, hbBody("eg", b.id, empty.Generation)).Type)

	require.Equal(t, wire.TypeOK, a.call(wire.TypeLeaveGroup, hbBody("eg", a.id, got.Generation)).Type)
	moved := b.assignment()
	require.Greater(t, moved.Generation, empty.Generation)
	require.Len(t, moved.Partitions, 1)
}

// TestEmptyGroupDisappears: a group whose last member is gone is forgotten
// unless it has committed offsets; one that has is kept (for the group
// retention).
func TestEmptyGroupDisappears(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "eg", client.TopicConfig{Partitions: 2}))
	publishN(t, c, "eg", 0, 10)
	for _, committed := range []bool{false, true} {
		name := "never"
		if committed {
			name = "kept"
		}
		m := joinRaw(t, e, wire.JoinGroup{Group: name, Topic: "eg", Mode: wire.AckOffset, Start: wire.Start{Kind: wire.StartEarliest}})
		gen := m.assignment().Generation
		if committed {
			require.NoError(t, m.commit(gen, 0, 1))
		}
		require.NoError(t, m.c.Close()) // the membership ends with its connection
		require.Eventually(t, func() bool {
			info, err := c.DescribeGroup(ctx, name)
			if committed {
				require.NoError(t, err)
				return len(info.Members) == 0
			}
			return errors.Is(err, client.ErrUnknownGroup)
		}, 15*time.Second, 5*time.Millisecond)
	}
	info, err := c.DescribeGroup(ctx, "kept")
	require.NoError(t, err)
	require.Equal(t, int64(1), info.Partitions[0].Committed)
}

// TestMaxUnackedCountsWholeBatches: the broker delivers whole batches,
// and sends the next while fewer than max_unacked messages are unacked, so
// one batch may take the count past the bound.
func TestMaxUnackedCountsWholeBatches(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "wb", client.TopicConfig{Partitions: 1}))
	p := dialRaw(t, e)
	p.hello()
	ten := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	p.send(publishFrame("wb", 0, 2, ten...))
	require.Equal(t, wire.TypePublishAck, p.next().Type)
	m := joinRaw(t, e, wire.JoinGroup{Group: "wg", Topic: "wb", Mode: wire.AckMessage, MaxUnacked: 3,
		Start: wire.Start{Kind: wire.StartEarliest}})
	gen := m.assignment().Generation
	count := func(f wire.Frame) int {
		v, err := wire.DecodeBatchView(f.Body)
		require.NoError(t, err)
		return v.Batch.Count()
	}
	require.Equal(t, 10, count(m.nextOf(wire.TypeDeliver)), "the whole batch, past max_unacked")
	info, err := c.DescribeGroup(ctx, "wg")
	require.NoError(t, err)
	require.Equal(t, uint32(10), info.Partitions[0].Pending)

	p.send(publishFrame("wb", 0, 3, ten...))
	require.Equal(t, wire.TypePublishAck, p.next().Type)
	ack := func(corr uint32, from, to int64) {
		a := wire.Ack{MemberRef: m.ref(gen), Ranges: []wire.OffsetRange{{From: from, To: to}}}
		m.sendFrame(wire.TypeAck, corr, a.Append(nil))
	}
	// Offsets it cannot act on are ignored, unanswered: the Heartbeat
	// behind these is the next answer.
	ack(18, 100, 200) // not delivered
	ack(19, 5, 2)     // reversed
	m.sendFrame(wire.TypeNack, 17, (&wire.Nack{MemberRef: m.ref(gen), Offset: 500}).Append(nil))
	m.sendFrame(wire.TypeHeartbeat, 22, hbBody("wg", m.id, gen))
	f := m.next()
	require.Equal(t, uint32(22), f.Corr, "%s before the Heartbeat's answer", errBody(f))
	require.Equal(t, wire.TypeOK, f.Type)
	ack(20, 0, 7) // 3 unacked: still at the bound
	_, err = m.read(300 * time.Millisecond)
	require.Error(t, err, "nothing while 3 are unacked")
	ack(21, 7, 8) // 2 unacked: room for a batch, which comes whole
	require.Equal(t, 10, count(m.nextOf(wire.TypeDeliver)))
}

// TestJoinTakesOverALiveMembership: a JoinGroup naming a live member's id
// from another connection takes the membership over. The new connection's
// member gets the partitions, heartbeats, and is the member DescribeGroup
// shows; the old connection gets nothing more, its next request is
// UNKNOWN_MEMBER, and the ended membership holds it back from nothing (a
// Subscribe of the topic, a new join of the group).
func TestJoinTakesOverALiveMembership(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "tk", client.TopicConfig{Partitions: 2}))
	join := wire.JoinGroup{Group: "tg", Topic: "tk", Mode: wire.AckOffset, SessionTimeoutMs: 300_000}
	a := joinRaw(t, e, join)
	first := a.assignment()
	require.Len(t, first.Partitions, 2)

	b := dialRaw(t, e)
	b.hello()
	join.Member = a.id
	id, as := joinedOn(t, b, 2, join)
	require.Equal(t, a.id, id, "the id it named")
	for len(as.Partitions) < 2 { // each comes once its old feed has stopped
		as = (&rawMember{rawConn: b}).assignment()
	}
	require.Len(t, as.Partitions, 2)
	require.Equal(t, wire.TypeOK, answer(t, b, wire.TypeHeartbeat, 3, hbBody("tg", id, as.Generation)).Type)
	info, err := c.DescribeGroup(ctx, "tg")
	require.NoError(t, err)
	require.Equal(t, []string{id}, info.Members)
	require.Equal(t, id, info.Partitions[0].Owner)
	require.Equal(t, id, info.Partitions[1].Owner)

	// Published after the takeover: for the new connection only.
	publishN(t, c, "tk", 0, 20)
	got := 0
	for got < 20 {
		f := b.next()
		require.Equal(t, wire.TypeDeliver, f.Type, errBody(f))
		v, err := wire.DecodeBatchView(f.Body)
		require.NoError(t, err)
		got += v.Batch.Count()
	}
	a.sendFrame(wire.TypeHeartbeat, 50, hbBody("tg", a.id, first.Generation))
	hb := a.next()
	require.Equal(t, uint32(50), hb.Corr, "the old connection got %s before the answer", hb.Type)
	require.Equal(t, wire.CodeUnknownMember, codeOf(t, hb))
	require.Contains(t, errBody(hb), "took its id over")

	// The old connection may consume the topic again, by either way.
	sub := (&wire.Subscribe{Topic: "tk", Partition: wire.PartitionAny}).Append(nil)
	require.Equal(t, wire.TypeSubscribeOK, answer(t, a.rawConn, wire.TypeSubscribe, 60, sub).Type)
	require.Equal(t, wire.TypeOK, answer(t, a.rawConn, wire.TypeUnsubscribe, 61, sub).Type)
	join.Member = ""
	again, _ := joinedOn(t, a.rawConn, 62, join)
	require.NotEqual(t, id, again, "a new id")
	require.Eventually(t, func() bool {
		info, err := c.DescribeGroup(ctx, "tg")
		require.NoError(t, err)
		return len(info.Members) == 2
	}, 15*time.Second, 5*time.Millisecond)
}

// TestJoinWithAnIDNoMemberHas: a JoinGroup may name only the id of a
// member in the group now; an id never issued, or one whose member left
// or lost its connection, is UNKNOWN_MEMBER, and the connection stays
// usable: it joins with an empty id.
func TestJoinWithAnIDNoMemberHas(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "uk", client.TopicConfig{Partitions: 2}))
	join := wire.JoinGroup{Group: "ug", Topic: "uk", Mode: wire.AckOffset}
	r := dialRaw(t, e)
	r.hello()
	named := join
	named.Member = "never-issued"
	f := rawJoin(t, r, 2, named)
	require.Equal(t, wire.CodeUnknownMember, codeOf(t, f))
	require.Contains(t, errBody(f), "join with an empty member id")
	_, err := c.DescribeGroup(ctx, "ug")
	require.ErrorIs(t, err, client.ErrUnknownGroup)

	left := joinRaw(t, e, join)
	gen := left.assignment().Generation
	require.Equal(t, wire.TypeOK, left.call(wire.TypeLeaveGroup, hbBody("ug", left.id, gen)).Type)
	named.Member = left.id
	require.Equal(t, wire.CodeUnknownMember, codeOf(t, rawJoin(t, r, 3, named)))

	closed := joinRaw(t, e, join)
	closed.assignment()
	require.NoError(t, closed.c.Close())
	require.Eventually(t, func() bool {
		_, err := c.DescribeGroup(ctx, "ug")
		return errors.Is(err, client.ErrUnknownGroup)
	}, 15*time.Second, 5*time.Millisecond)
	named.Member = closed.id
	require.Equal(t, wire.CodeUnknownMember, codeOf(t, rawJoin(t, r, 4, named)))

	id, as := joinedOn(t, r, 5, join)
	require.NotEmpty(t, id)
	require.Len(t, as.Partitions, 2)
}

// TestGroupConsumerMemberID: a Go consumer given another's MemberID takes
// its membership over; the consumer that lost it rejoins with a new id
// (not the old one, which would take it back), and the two share the
// partitions. A MemberID no member has fails JoinGroup.
func TestGroupConsumerMemberID(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "mi", client.TopicConfig{Partitions: 2}))
	cfg := client.GroupConfig{Group: "mg", Topic: "mi", SessionTimeout: time.Second,
		Handler: func(*client.GroupMessage) error { return nil }}
	first := joinGroup(t, e, cfg)
	waitAssigned(t, []int{2}, first)
	old := first.MemberID()

	cfg.MemberID = old
	second := joinGroup(t, e, cfg)
	require.Equal(t, old, second.MemberID())
	waitAssigned(t, []int{1, 1}, first, second)
	require.NotEqual(t, old, first.MemberID())
	require.Equal(t, old, second.MemberID())
	info, err := c.DescribeGroup(ctx, "mg")
	require.NoError(t, err)
	require.ElementsMatch(t, []string{old, first.MemberID()}, info.Members)

	cfg.MemberID = "never-issued"
	jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = client.JoinGroup(jctx, e.Addr().String(), cfg)
	require.ErrorIs(t, err, client.ErrUnknownMember)
}

// halfOpenProxy forwards connections to a broker, and can cut the client
// side of each while the broker side stays open and silent, as a NAT or
// firewall that forgets a connection does: the broker sees nothing.
type halfOpenProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   []net.Conn // client sides, to cut
	up     []net.Conn // broker sides, closed only at the end
	wg     sync.WaitGroup
}

func newHalfOpenProxy(t *testing.T, target string) *halfOpenProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &halfOpenProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *halfOpenProxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = down.Close()
			continue
		}
		p.mu.Lock()
		p.down, p.up = append(p.down, down), append(p.up, up)
		p.mu.Unlock()
		p.wg.Add(2)
		// Neither copy closes the broker side when the client side ends.
		go func() { defer p.wg.Done(); _, _ = io.Copy(up, down) }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(down, up) }()
	}
}

// cut closes the client side of every connection so far.
func (p *halfOpenProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.down {
		_ = c.Close()
	}
	p.down = nil
}

func (p *halfOpenProxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.mu.Lock()
	for _, c := range p.up {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestGroupConsumerRejoinsOverAHalfOpenConnection: a consumer whose
// connection broke without the broker noticing rejoins with the id it was
// issued, takes over its old membership, and has its partitions back at
// once, long before the old membership's session timeout (5 minutes)
// would have freed them.
func TestGroupConsumerRejoinsOverAHalfOpenConnection(t *testing.T) {
	e := startBroker(t, nil)
	c := dial(t, e)
	ctx := testCtx(t)
	require.NoError(t, c.CreateTopic(ctx, "ho", client.TopicConfig{Partitions: 2}))
	proxy := newHalfOpenProxy(t, e.Addr().String())
	h := newHandled()
	jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	g, err := client.JoinGroup(jctx, proxy.ln.Addr().String(), client.GroupConfig{Group: "hg", Topic: "ho",
		Start: client.Earliest, SessionTimeout: 5 * time.Minute, AutoCommitInterval: 20 * time.Millisecond,
		Handler: func(m *client.GroupMessage) error {
			h.add("m", m.Partition, m.Offset)
			return nil
		}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = g.Close() })
	waitAssigned(t, []int{2}, g)
	id := g.MemberID()
	publishN(t, c, "ho", 0, 20)
	require.Eventually(t, func() bool { return h.count() == 20 }, 30*time.Second, 5*time.Millisecond)

	proxy.cut()
	publishN(t, c, "ho", 20, 20)
	require.Eventually(t, func() bool { return h.count() == 40 }, 30*time.Second, 5*time.Millisecond,
		"the partitions came back before the old session's timeout")
	require.Equal(t, id, g.MemberID(), "it kept its id")
	info, err := c.DescribeGroup(ctx, "hg")
	require.NoError(t, err)
	require.Equal(t, []string{id}, info.Members)
}

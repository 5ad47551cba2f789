package coord

import (
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/storage/vfs"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// These tests drive the coordinator alone: a fake broker, partitions on
// memory logs without shards, fake feeds that end when the test says so,
// and a logical clock that moves only when the test moves it. Nothing
// runs in the background but the offsets store, whose callbacks the tests
// wait for; the timers' pass is the test calling Tick.

// fakeTopic is a topic of the fake broker; *fakeTopic is comparable.
type fakeTopic struct {
	name   string
	parts  []*shard.Partition
	dlq    string
	maxDel int
}

func (t *fakeTopic) Name() string                   { return t.name }
func (t *fakeTopic) Partitions() []*shard.Partition { return t.parts }
func (t *fakeTopic) DeadLetterTopic() string        { return t.dlq }
func (t *fakeTopic) MaxDeliveries() int             { return t.maxDel }

// newTopic makes a topic of n partitions on memory logs holding msgs
// messages each, one batch per message.
func newTopic(name string, n, msgs int) *fakeTopic {
	t := &fakeTopic{name: name}
	for i := range n {
		log := storage.NewMemLog(1 << 20)
		for o := range msgs {
			var bb wire.BatchBuilder
			bb.Start(nil, -1, -1)
			bb.Append(int64(o), nil, []byte("m"+strconv.Itoa(o)), nil)
			b := wire.Batch(bb.Finish())
			b.SetBaseOffset(int64(o))
			buf := storage.NewBuf(len(b))
			copy(buf.B, b)
			if err := log.Append(buf, wire.Batch(buf.B)); err != nil {
				panic(err)
			}
			buf.Release()
		}
		t.parts = append(t.parts, shard.NewPartition(name, int32(i), nil, log, shard.SyncPolicy{}))
	}
	return t
}

// fakeBroker records what the coordinator asks of it.
type fakeBroker struct {
	mu     sync.Mutex
	topics map[string]*fakeTopic
	events []telemetry.Event
}

func (b *fakeBroker) Topic(name string) Topic {
	if t := b.topics[name]; t != nil {
		return t
	}
	return nil
}

func (b *fakeBroker) ResolveStart(p *shard.Partition, st wire.Start) (int64, error) {
	lo, hi := p.Log.Bounds()
	switch st.Kind {
	case wire.StartEarliest:
		return lo, nil
	case wire.StartLatest:
		return hi, nil
	case wire.StartOffset:
		if st.Value < lo || st.Value > hi {
			return 0, wire.Errorf(wire.CodeOffsetOutOfRange, "out of range")
		}
		return st.Value, nil
	}
	return 0, wire.Errorf(wire.CodeInvalidArgument, "no times in these tests")
}

func (b *fakeBroker) OfflineReason(*shard.Partition) string              { return "" }
func (b *fakeBroker) SkipCorrupt(_ *shard.Partition, offset int64) int64 { return offset }

func (b *fakeBroker) Replay(*outbox.Outbox, *shard.Partition, int64, *atomic.Bool, chan struct{}) {
	panic("coord tests use fake feeds")
}

func (b *fakeBroker) Publish(string, []byte, int) error {
	panic("coord tests use fake feeds")
}

func (b *fakeBroker) Observed() bool { return true }

func (b *fakeBroker) Emit(ev telemetry.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, ev)
}

// actions are the Action of the events emitted so far, which it forgets.
func (b *fakeBroker) actions() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, ev := range b.events {
		out = append(out, ev.Action)
	}
	b.events = nil
	return out
}

// fakeFeed stands for a partition's feed: stop asks it to end, and it has
// ended once the test says so.
type fakeFeed struct {
	stopping bool
	ended    bool
}

func (f *fakeFeed) stop()         { f.stopping = true }
func (f *fakeFeed) stopped() bool { return f.ended }

// harness is a coordinator with one topic "t" on a fake broker.
type harness struct {
	t     *testing.T
	c     *Coordinator
	b     *fakeBroker
	topic *fakeTopic
	clock atomic.Int64 // logical, ns
	wall  time.Time    // the offsets store's clock
	fsys  *vfs.MemFS
	feeds []*fakeFeed
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newHarness(t *testing.T, parts, msgs int) *harness {
	t.Helper()
	h := &harness{t: t, topic: newTopic("t", parts, msgs), wall: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h.b = &fakeBroker{topics: map[string]*fakeTopic{"t": h.topic}}
	h.fsys = vfs.NewMem()
	require.NoError(t, h.fsys.MkdirAll("data", 0o755))
	require.NoError(t, h.fsys.SyncDir("/"))
	h.c = h.open()
	return h
}

// open builds a coordinator on the harness's broker, store and clocks,
// with fake feeds; it is closed when the test ends.
func (h *harness) open() *Coordinator {
	store := offsets.New(h.fsys, "data", quiet)
	store.SetClock(func() time.Time { return h.wall })
	c := New(Config{Broker: h.b, Store: store, Log: quiet, Retention: 7 * 24 * time.Hour, Now: h.clock.Load})
	c.newFeed = func(*gpart, *Member) feed {
		f := &fakeFeed{}
		h.feeds = append(h.feeds, f)
		return f
	}
	h.t.Cleanup(c.Close)
	return c
}

// start loads the offsets store without the coordinator's timers: the
// tests tick themselves.
func (h *harness) start() {
	_, err := h.c.store.Load()
	require.NoError(h.t, err)
	h.c.store.Start()
}

// endStopped lets every feed asked to stop end, and runs a timer pass, as
// the feeds' poke would.
func (h *harness) endStopped() {
	for _, f := range h.feeds {
		if f.stopping {
			f.ended = true
		}
	}
	h.c.Tick(h.clock.Load())
}

// advance moves the logical clock and runs a timer pass.
func (h *harness) advance(d time.Duration) {
	h.clock.Add(int64(d))
	h.c.Tick(h.clock.Load())
}

// conn is a member's connection: its outbox.
type conn struct{ out *outbox.Outbox }

type nopFlusher struct{}

func (nopFlusher) ScheduleFlush() {}
func (f nopFlusher) Owner() any   { return f }
func (nopFlusher) FlushNow()      {}

func newConn() *conn { return &conn{out: outbox.NewOutbox(1<<20, 1, nopFlusher{})} }

// frames takes the frames queued for c since the last call.
func (c *conn) frames(t *testing.T) []wire.Frame {
	t.Helper()
	p, _ := c.out.Take()
	var data []byte
	for _, b := range p.IOV {
		data = append(data, b...)
	}
	c.out.Done(p, 0)
	var out []wire.Frame
	for len(data) > 0 {
		f, n, err := wire.ReadFrame(data, uint32(len(data)))
		require.NoError(t, err)
		require.Positive(t, n)
		out = append(out, f)
		data = data[n:]
	}
	return out
}

// assignment is the one frame queued for c, an Assignment.
func (c *conn) assignment(t *testing.T) wire.Assignment {
	t.Helper()
	fs := c.frames(t)
	require.Len(t, fs, 1)
	require.Equal(t, wire.TypeAssignment, fs[0].Type)
	a, err := wire.DecodeAssignment(fs[0].Body)
	require.NoError(t, err)
	return a
}

func partitions(a wire.Assignment) []int32 {
	var ps []int32
	for _, po := range a.Partitions {
		ps = append(ps, po.Partition)
	}
	return ps
}

var client = Origin{Actor: "client", Remote: "192.0.2.1:4000"}

func joinReq(mode wire.AckMode) *wire.JoinGroup {
	return &wire.JoinGroup{Group: "g", Topic: "t", Mode: mode, Start: wire.Start{Kind: wire.StartEarliest}}
}

// join adds a member on c and takes its JoinResult.
func (h *harness) join(c *conn, req *wire.JoinGroup) *Member {
	h.t.Helper()
	m, err := h.c.Join(c.out, client, 7, req, h.topic)
	require.NoError(h.t, err)
	return m
}

// joined is join of a member that gets a first Assignment at once.
func (h *harness) joined(c *conn, req *wire.JoinGroup) (*Member, wire.Assignment) {
	h.t.Helper()
	m := h.join(c, req)
	fs := c.frames(h.t)
	require.Len(h.t, fs, 2, "JoinResult, then Assignment")
	require.Equal(h.t, wire.TypeAssignment, fs[1].Type)
	a, err := wire.DecodeAssignment(fs[1].Body)
	require.NoError(h.t, err)
	return m, a
}

// joinedEmpty is join of a member that gets nothing yet: its first
// Assignment has no partitions. It returns that Assignment's generation.
func (h *harness) joinedEmpty(c *conn, req *wire.JoinGroup) (*Member, uint32) {
	h.t.Helper()
	m, a := h.joined(c, req)
	require.Empty(h.t, a.Partitions)
	return m, a.Generation
}

func requireCode(t *testing.T, code wire.Code, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, wire.CodeOf(err), "%v", err)
}

// commit commits offs for m in generation gen and waits for the answer.
func (h *harness) commit(m *Member, gen uint32, offs ...wire.PartitionOffset) error {
	done := make(chan error, 1)
	h.c.Commit(m, &wire.Commit{MemberRef: wire.MemberRef{Group: "g", Member: m.ID(), Generation: gen}, Offsets: offs},
		func(err error) { done <- err })
	return <-done
}

func (h *harness) reset(name string, st wire.Start) error {
	done := make(chan error, 1)
	h.c.Reset(Origin{Actor: "admin"}, name, st, func(err error) { done <- err })
	return <-done
}

// TestJoinAnswersBeforeTheFirstAssignment: the JoinResult answers the
// join's corr and comes before the Assignment, which gives the only member
// every partition from where the group starts.
func TestJoinAnswersBeforeTheFirstAssignment(t *testing.T) {
	h := newHarness(t, 3, 5)
	h.start()
	a := newConn()
	m := h.join(a, joinReq(wire.AckOffset))
	fs := a.frames(t)
	require.Len(t, fs, 2)
	require.Equal(t, wire.TypeJoinResult, fs[0].Type)
	require.Equal(t, uint32(7), fs[0].Corr)
	res, err := wire.DecodeJoinResult(fs[0].Body)
	require.NoError(t, err)
	require.Equal(t, m.ID(), res.Member)
	require.Equal(t, uint32(10000), res.SessionTimeoutMs)
	require.Equal(t, wire.TypeAssignment, fs[1].Type)
	as, err := wire.DecodeAssignment(fs[1].Body)
	require.NoError(t, err)
	require.Equal(t, wire.Assignment{Group: "g", Generation: 1, Partitions: []wire.PartitionOffset{
		{Partition: 0, Offset: 0}, {Partition: 1, Offset: 0}, {Partition: 2, Offset: 0}}}, as)
	require.Equal(t, []string{"join", "rebalance"}, h.b.actions())
	require.Len(t, h.feeds, 3)
	require.Equal(t, "g", m.Group())
	require.Equal(t, Topic(h.topic), m.Topic())
	require.NoError(t, m.Err())
}

// TestRevokeThenGiveOnConfirmation: a partition moves from a live member
// in two steps: revoked first, given to the new member only once the old
// one confirms with a heartbeat of the new generation and the partition's
// old feed has ended.
func TestRevokeThenGiveOnConfirmation(t *testing.T) {
	h := newHarness(t, 4, 0)
	h.start()
	a, b := newConn(), newConn()
	ma, first := h.joined(a, joinReq(wire.AckOffset))
	require.Len(t, first.Partitions, 4)
	mb, gen := h.joinedEmpty(b, joinReq(wire.AckOffset)) // what b gets is still a's
	require.Equal(t, uint32(2), gen, "the generation that revoked it from a")

	revoked := a.assignment(t)
	require.Equal(t, uint32(2), revoked.Generation)
	require.Len(t, revoked.Partitions, 2, "a keeps half")

	// A heartbeat of the old generation does not confirm.
	require.NoError(t, h.c.Heartbeat(ma, 1))
	require.Empty(t, b.frames(t))

	// Confirmed, but the revoked partitions' feeds are still stopping.
	require.NoError(t, h.c.Heartbeat(ma, 2))
	require.Empty(t, b.frames(t))

	h.endStopped()
	given := b.assignment(t)
	require.Equal(t, uint32(3), given.Generation)
	all := append(partitions(revoked), partitions(given)...)
	slices.Sort(all)
	require.Equal(t, []int32{0, 1, 2, 3}, all)
	require.Empty(t, a.frames(t), "a's partitions did not change")

	// Only the owner of a generation may commit its partitions.
	po := wire.PartitionOffset{Partition: given.Partitions[0].Partition}
	requireCode(t, wire.CodeStaleGeneration, h.commit(ma, 2, po))
	require.NoError(t, h.commit(mb, 3, po))
	requireCode(t, wire.CodeStaleGeneration, h.commit(mb, 4, po))
}

// TestUnconfirmedRevocationIsForcedAtTheSessionTimeout: a member that
// heartbeats but never confirms a revocation loses the partitions once its
// session timeout has passed since the revocation.
func TestUnconfirmedRevocationIsForcedAtTheSessionTimeout(t *testing.T) {
	h := newHarness(t, 2, 0)
	h.start()
	a, b := newConn(), newConn()
	ma, _ := h.joined(a, joinReq(wire.AckOffset))
	mb := h.join(b, joinReq(wire.AckOffset))
	b.frames(t)
	require.Len(t, a.assignment(t).Partitions, 1)
	h.endStopped()
	for range 2 {
		h.clock.Add(int64(5 * time.Second))
		require.NoError(t, h.c.Heartbeat(ma, 1)) // alive, but the old generation
		require.NoError(t, h.c.Heartbeat(mb, 0))
		h.c.Tick(h.clock.Load())
		require.Empty(t, b.frames(t), "the revocation waits for the session timeout")
	}
	h.advance(1)
	require.Len(t, b.assignment(t).Partitions, 1)
}

// TestSilentMemberExpires: a member that stops heartbeating for its
// session timeout is removed, with its partitions; it hears so on its next
// request, and the other member gets them.
func TestSilentMemberExpires(t *testing.T) {
	h := newHarness(t, 2, 0)
	h.start()
	a, b := newConn(), newConn()
	ma, _ := h.joined(a, joinReq(wire.AckOffset))
	mb := h.join(b, joinReq(wire.AckOffset))
	b.frames(t)
	require.Len(t, a.assignment(t).Partitions, 1)
	h.endStopped()
	require.NoError(t, h.c.Heartbeat(ma, 2))
	require.Len(t, b.assignment(t).Partitions, 1)
	h.b.actions()

	h.clock.Add(int64(10 * time.Second))
	require.NoError(t, h.c.Heartbeat(ma, 2))
	h.advance(1) // b was last seen when it joined
	requireCode(t, wire.CodeUnknownMember, mb.Err())
	requireCode(t, wire.CodeUnknownMember, h.c.Heartbeat(mb, 3))
	require.Equal(t, []string{"expire"}, h.b.actions(), "b's partition waits for its feed")

	h.endStopped()
	got := a.assignment(t)
	require.Equal(t, []int32{0, 1}, partitions(got))
	info, err := h.c.Describe("g")
	require.NoError(t, err)
	require.Equal(t, []string{ma.ID()}, info.Members)
	require.Equal(t, got.Generation, info.Generation)
}

// TestCommitsAndAcksKeepTheSessionAlive: a Commit, an Ack or a Heartbeat
// of any generation counts as hearing from the member; silence for the
// session timeout removes it.
func TestCommitsAndAcksKeepTheSessionAlive(t *testing.T) {
	for _, mode := range []wire.AckMode{wire.AckOffset, wire.AckMessage} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, 1, 10)
			h.start()
			m, a := h.joined(newConn(), joinReq(mode))
			step := 8 * time.Second // of the default 10 s
			h.advance(step)
			if mode == wire.AckOffset {
				require.NoError(t, h.commit(m, a.Generation, wire.PartitionOffset{Partition: 0, Offset: 1}))
			} else {
				require.NoError(t, h.c.Ack(m, &wire.Ack{MemberRef: wire.MemberRef{Group: "g", Member: m.ID(),
					Generation: a.Generation}, Ranges: []wire.OffsetRange{{From: 0, To: 1}}}))
			}
			h.advance(step)
			require.NoError(t, m.Err())
			require.NoError(t, h.c.Heartbeat(m, a.Generation+7), "any generation")
			h.advance(step)
			require.NoError(t, m.Err())
			h.advance(step)
			requireCode(t, wire.CodeUnknownMember, m.Err())
		})
	}
}

// TestJoinRefusals: what a join may not ask for, and the error it gets.
func TestJoinRefusals(t *testing.T) {
	h := newHarness(t, 1, 0)
	h.start()
	a := newConn()
	ma, _ := h.joined(a, joinReq(wire.AckOffset))

	other := newTopic("u", 1, 0)
	h.b.topics["u"] = other
	for _, tc := range []struct {
		name  string
		req   func(*wire.JoinGroup)
		topic Topic
		out   *outbox.Outbox
		code  wire.Code
	}{
		{"session timeout too short", func(r *wire.JoinGroup) { r.SessionTimeoutMs = 999 }, h.topic, nil, wire.CodeInvalidArgument},
		{"session timeout too long", func(r *wire.JoinGroup) { r.SessionTimeoutMs = 301000 }, h.topic, nil, wire.CodeInvalidArgument},
		{"ack wait too short", func(r *wire.JoinGroup) { r.AckWaitMs = 9 }, h.topic, nil, wire.CodeInvalidArgument},
		{"too many backoff steps", func(r *wire.JoinGroup) { r.BackoffMs = make([]uint32, 65) }, h.topic, nil, wire.CodeInvalidArgument},
		{"dead letters to its own topic", func(r *wire.JoinGroup) { r.DLQ = "t" }, h.topic, nil, wire.CodeInvalidArgument},
		{"another ack mode", func(r *wire.JoinGroup) { r.Mode = wire.AckNone }, h.topic, nil, wire.CodeInvalidArgument},
		{"another topic", func(r *wire.JoinGroup) { r.Topic = "u" }, other, nil, wire.CodeInvalidArgument},
		{"the same member on its own connection", func(r *wire.JoinGroup) { r.Member = ma.ID() }, h.topic, a.out, wire.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := joinReq(wire.AckOffset)
			tc.req(req)
			out := tc.out
			if out == nil {
				out = newConn().out
			}
			_, err := h.c.Join(out, client, 1, req, tc.topic)
			requireCode(t, tc.code, err)
		})
	}
	require.Empty(t, a.frames(t), "no refused join moved anything")
}

// TestJoinTakesOverALiveMember: a join naming the id of a live member of
// another connection takes the membership over: the old member is gone at
// once (its next request is UNKNOWN_MEMBER, saying why), the new one gets
// the partitions once the old feeds stopped, heartbeats, commits, and is
// the group's member in List and Describe. The group stays the
// coordinator's even when the replaced member was its only one and it has
// no offsets: it used to be forgotten then, its new member left in a
// group no timer pass saw, whose partitions never came.
func TestJoinTakesOverALiveMember(t *testing.T) {
	h := newHarness(t, 2, 10)
	h.start()
	a, b := newConn(), newConn()
	ma, first := h.joined(a, joinReq(wire.AckOffset))
	require.Len(t, first.Partitions, 2)
	req := joinReq(wire.AckOffset)
	req.Member = ma.ID()
	mb, gen := h.joinedEmpty(b, req) // a's feeds are still stopping
	require.Equal(t, ma.ID(), mb.ID())
	require.Equal(t, first.Generation, gen)
	err := h.c.Heartbeat(ma, first.Generation)
	requireCode(t, wire.CodeUnknownMember, err)
	require.ErrorContains(t, err, "another connection took its id over")
	requireCode(t, wire.CodeUnknownMember, h.commit(ma, first.Generation, wire.PartitionOffset{Partition: 0, Offset: 1}))
	require.Equal(t, []string{"join", "rebalance", "replace", "join"}, h.b.actions()[:4])
	require.Equal(t, []wire.GroupSummary{{Group: "g", Topic: "t", Members: 1}}, h.c.List())

	h.endStopped()
	given := b.assignment(t)
	require.Greater(t, given.Generation, gen)
	require.Equal(t, []int32{0, 1}, partitions(given))
	require.NoError(t, h.c.Heartbeat(mb, given.Generation))
	require.NoError(t, h.commit(mb, given.Generation, wire.PartitionOffset{Partition: 1, Offset: 3}))
	info, err := h.c.Describe("g")
	require.NoError(t, err)
	require.Equal(t, []string{mb.ID()}, info.Members)
	require.Equal(t, mb.ID(), info.Partitions[0].Owner)
	require.Equal(t, mb.ID(), info.Partitions[1].Owner)
	require.Empty(t, a.frames(t), "nothing more for the old connection")
}

// TestJoinWithAnUnknownMemberID: a join may name only the id of a member
// in the group now. An id the coordinator never issued, the id of a
// member that left, one of another group and one from before a restart
// are UNKNOWN_MEMBER, and the refused join changes nothing: no group is
// made, no member is moved.
func TestJoinWithAnUnknownMemberID(t *testing.T) {
	h := newHarness(t, 2, 10)
	h.start()
	a, b := newConn(), newConn()
	named := func(group, id string) *wire.JoinGroup {
		req := joinReq(wire.AckOffset)
		req.Group, req.Member = group, id
		return req
	}
	refused := func(req *wire.JoinGroup) {
		t.Helper()
		_, err := h.c.Join(b.out, client, 9, req, h.topic)
		requireCode(t, wire.CodeUnknownMember, err)
		require.ErrorContains(t, err, "join with an empty member id")
		require.Empty(t, b.frames(t))
	}
	refused(named("g", "made-up"))
	require.Empty(t, h.c.List(), "no group made by a refused join")

	ma, _ := h.joined(a, named("g", ""))
	mc, _ := h.joined(newConn(), named("other", ""))
	refused(named("g", "made-up"))
	refused(named("g", mc.ID()))
	require.NoError(t, h.commit(ma, 1, wire.PartitionOffset{Partition: 0, Offset: 2}))
	h.c.Leave(ma)
	refused(named("g", ma.ID()))
	require.Empty(t, a.frames(t))

	h.c.Close()
	h.c = h.open()
	require.NoError(t, h.c.Load())
	info, err := h.c.Describe("g")
	require.NoError(t, err, "kept for its offsets")
	require.Empty(t, info.Members)
	refused(named("g", ma.ID()))
}

// TestCommit: commits are checked against the group's mode, the
// partition, the log's end and the member's generation; a good one is
// answered once durable, and Describe shows it with the lag.
func TestCommit(t *testing.T) {
	h := newHarness(t, 2, 10)
	h.start()
	a := newConn()
	m, _ := h.joined(a, joinReq(wire.AckOffset))

	requireCode(t, wire.CodeStaleGeneration, h.commit(m, 2, wire.PartitionOffset{Partition: 0, Offset: 1}))
	requireCode(t, wire.CodeUnknownPartition, h.commit(m, 1, wire.PartitionOffset{Partition: 2, Offset: 1}))
	requireCode(t, wire.CodeInvalidArgument, h.commit(m, 1, wire.PartitionOffset{Partition: 0, Offset: 11}))
	require.NoError(t, h.commit(m, 1, wire.PartitionOffset{Partition: 0, Offset: 4}))

	info, err := h.c.Describe("g")
	require.NoError(t, err)
	require.Equal(t, wire.GroupInfo{Group: "g", Topic: "t", Generation: 1, Mode: wire.AckOffset, Members: []string{m.ID()},
		Partitions: []wire.GroupPartition{
			{Partition: 0, Owner: m.ID(), Committed: 4, End: 10, Lag: 6},
			{Partition: 1, Owner: m.ID(), Committed: -1, End: 10, Lag: -1},
		}}, info)
	require.Equal(t, []wire.GroupSummary{{Group: "g", Topic: "t", Members: 1}}, h.c.List())
	_, err = h.c.Describe("nope")
	requireCode(t, wire.CodeUnknownGroup, err)

	// Acks are message mode's.
	requireCode(t, wire.CodeInvalidArgument, h.c.Ack(m, &wire.Ack{MemberRef: wire.MemberRef{Generation: 1},
		Ranges: []wire.OffsetRange{{From: 0, To: 1}}}))
}

// TestMessageModeAcks: acks move the partition's floor, which is the
// committed offset; they take messages off the member's unacked count and
// wake its feeds when that makes room; a nack is refused from a member
// that does not own the partition.
func TestMessageModeAcks(t *testing.T) {
	h := newHarness(t, 1, 10)
	h.start()
	a := newConn()
	req := joinReq(wire.AckMessage)
	req.MaxUnacked = 5
	m, as := h.joined(a, req)
	require.Equal(t, []wire.PartitionOffset{{Partition: 0, Offset: 0}}, as.Partitions)

	// What a feed does when it delivers offsets 0..5.
	gp := m.g.parts[0]
	gp.mu.Lock()
	gp.acks.Delivered(0, 5, h.clock.Load()+int64(defaultAckWait))
	gp.mu.Unlock()
	m.unacked.Add(5)
	room := m.roomSignal()

	ack := func(gen uint32, from, to int64) error {
		return h.c.Ack(m, &wire.Ack{MemberRef: wire.MemberRef{Group: "g", Member: m.ID(), Generation: gen},
			Partition: 0, Ranges: []wire.OffsetRange{{From: from, To: to}}})
	}
	requireCode(t, wire.CodeStaleGeneration, ack(2, 0, 1))
	require.NoError(t, ack(1, 1, 3)) // above the floor: no commit yet
	select {
	case <-room:
	default:
		t.Fatal("acks that bring the member below max-unacked make room")
	}
	info, err := h.c.Describe("g")
	require.NoError(t, err)
	require.Equal(t, int64(-1), info.Partitions[0].Committed)
	require.Equal(t, uint32(3), info.Partitions[0].Pending)

	require.NoError(t, ack(1, 0, 1))
	info, err = h.c.Describe("g")
	require.NoError(t, err)
	require.Equal(t, int64(3), info.Partitions[0].Committed, "the floor moved past the acked 0..3")
	require.Equal(t, int64(2), m.unacked.Load())

	nack := &wire.Nack{MemberRef: wire.MemberRef{Group: "g", Member: m.ID(), Generation: 1}, Partition: 0, Offset: 3}
	require.NoError(t, h.c.Nack(m, nack))
	nack.Partition = 1
	requireCode(t, wire.CodeUnknownPartition, h.c.Nack(m, nack))

	// Commits are offset mode's.
	requireCode(t, wire.CodeInvalidArgument, h.commit(m, 1, wire.PartitionOffset{Partition: 0, Offset: 1}))
}

// TestResetAndRetention: a reset needs a group without members; a group
// without members is removed once it has been idle for the retention, and
// not before.
func TestResetAndRetention(t *testing.T) {
	h := newHarness(t, 2, 10)
	h.start()
	a := newConn()
	m, _ := h.joined(a, joinReq(wire.AckOffset))
	require.NoError(t, h.commit(m, 1, wire.PartitionOffset{Partition: 0, Offset: 4}))
	requireCode(t, wire.CodeGroupActive, h.reset("g", wire.Start{Kind: wire.StartLatest}))
	requireCode(t, wire.CodeUnknownGroup, h.reset("nope", wire.Start{Kind: wire.StartLatest}))

	h.c.Leave(m)
	requireCode(t, wire.CodeUnknownMember, m.Err())
	require.False(t, h.c.Idle("g"), "its feeds are still stopping")
	h.endStopped()
	require.True(t, h.c.Idle("g"))
	h.b.actions()
	require.NoError(t, h.reset("g", wire.Start{Kind: wire.StartLatest}))
	require.Equal(t, []string{"reset"}, h.b.actions())
	info, err := h.c.Describe("g")
	require.NoError(t, err)
	require.Equal(t, int64(10), info.Partitions[1].Committed)

	// The reset was activity: retention counts from it.
	h.c.ExpireIdle(h.wall.Add(7*24*time.Hour - time.Nanosecond))
	require.Len(t, h.c.List(), 1)
	h.c.ExpireIdle(h.wall.Add(7 * 24 * time.Hour))
	require.Empty(t, h.c.List())
	require.Equal(t, []string{"retention"}, h.b.actions())
	_, stored := h.c.Store().ActiveAt("g")
	require.False(t, stored)
}

// TestTopicRemoved: deleting a topic forgets its groups; their members are
// told with an unsolicited UNKNOWN_TOPIC error. Another topic of the same
// name (created after the delete) is not the group's.
func TestTopicRemoved(t *testing.T) {
	h := newHarness(t, 1, 0)
	h.start()
	a := newConn()
	m, _ := h.joined(a, joinReq(wire.AckOffset))
	h.c.TopicRemoved(newTopic("t", 1, 0))
	require.Len(t, h.c.List(), 1)
	require.NoError(t, m.Err())

	h.b.actions()
	h.c.TopicRemoved(h.topic)
	require.Empty(t, h.c.List())
	requireCode(t, wire.CodeUnknownMember, m.Err())
	require.Equal(t, []string{"delete"}, h.b.actions())
	fs := a.frames(t)
	require.Len(t, fs, 1)
	require.Equal(t, wire.TypeError, fs[0].Type)
	require.Zero(t, fs[0].Corr)
	we, err := wire.DecodeError(fs[0].Body)
	require.NoError(t, err)
	require.Equal(t, wire.CodeUnknownTopic, we.Code)
	require.Equal(t, "topic t of group g was deleted", we.Message)
}

// TestLoadRestoresCommittedGroups: a coordinator of the next run has the
// groups with committed offsets, and forgets those whose topic is gone.
func TestLoadRestoresCommittedGroups(t *testing.T) {
	h := newHarness(t, 1, 10)
	h.start()
	a := newConn()
	m, _ := h.joined(a, joinReq(wire.AckOffset))
	require.NoError(t, h.commit(m, 1, wire.PartitionOffset{Partition: 0, Offset: 6}))
	h.topic2(t)
	h.c.Close()

	h.c = h.open()
	delete(h.b.topics, "u")
	require.NoError(t, h.c.Load())
	info, err := h.c.Describe("g")
	require.NoError(t, err)
	require.Equal(t, int64(6), info.Partitions[0].Committed)
	require.Empty(t, info.Members)
	require.Equal(t, []wire.GroupSummary{{Group: "g", Topic: "t"}}, h.c.List(), "the group of the gone topic is forgotten")
}

// topic2 adds a group "h" on a second topic "u", with a commit.
func (h *harness) topic2(t *testing.T) {
	u := newTopic("u", 1, 3)
	h.b.topics["u"] = u
	req := joinReq(wire.AckOffset)
	req.Group, req.Topic = "h", "u"
	c := newConn()
	m, err := h.c.Join(c.out, client, 1, req, u)
	require.NoError(t, err)
	done := make(chan error, 1)
	h.c.Commit(m, &wire.Commit{MemberRef: wire.MemberRef{Group: "h", Member: m.ID(), Generation: 1},
		Offsets: []wire.PartitionOffset{{Partition: 0, Offset: 2}}}, func(err error) { done <- err })
	require.NoError(t, <-done)
}

// TestGroupWithoutOffsetsWaitsForItsFeeds: a group without offsets whose
// last member left is forgotten only once its feeds have stopped, so a
// member joining meanwhile gets the partitions after those feeds stopped,
// not alongside them. It used to be forgotten at once, and the new member
// given every partition while the feeds of the one that left still ran
// (found by the simulator, sim/coord.go).
func TestGroupWithoutOffsetsWaitsForItsFeeds(t *testing.T) {
	h := newHarness(t, 2, 0)
	h.start()
	a, b := newConn(), newConn()
	ma, _ := h.joined(a, joinReq(wire.AckOffset))
	h.c.Leave(ma)
	require.Equal(t, []wire.GroupSummary{{Group: "g", Topic: "t"}}, h.c.List(), "kept while a's feeds stop")
	mb, _ := h.joinedEmpty(b, joinReq(wire.AckOffset)) // a's feeds are still stopping
	h.endStopped()
	require.Len(t, b.assignment(t).Partitions, 2)

	h.c.Leave(mb)
	h.c.Tick(h.clock.Load())
	require.Len(t, h.c.List(), 1, "b's feeds are still stopping")
	h.endStopped()
	require.Empty(t, h.c.List(), "forgotten at the pass after its feeds stopped")
}

package sim

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/group/coord"
	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// The coord actor drives group/coord.Coordinator itself, in offset mode,
// as a Config.Driven coordinator: no goroutine, member ids from the
// actor's prefix, fake feeds that deliver nothing and end when the seed
// says, the timer pass (Tick) at the start of each of its steps and the
// retention pass (ExpireIdle) when the seed says, and the offsets store
// (coord/groups.log on the machine's disk) written by Store.Flush after
// every call, which runs the commits' callbacks. The broker is a fake: one
// topic whose partitions are memory logs without a shard.
//
// Members of two groups join, leave, reconnect (a join with their id from
// a new connection takes their membership over), go silent until their
// session times out, read the frames the coordinator queued on their outbox when they
// get to it (a lazy member seldom does, so its revocations are forced),
// heartbeat with the generation they read or an older one, and commit,
// forward from where they were assigned, the partitions they read they
// own, now and then one they do not. Now and then a join names an id
// that is no member's (one never issued, or one whose member has left):
// it is refused, and changes nothing. The topic is now and then deleted
// and created again. A crash builds a new coordinator from the disk; the
// members that were not silent join again, first with their ids, which
// the new coordinator refuses, then with new ones.
//
// The model reads what the coordinator tells each member: the
// Assignments drained from its outbox after every call. A member holds a
// partition from the Assignment that gives it until it confirms (a
// heartbeat of its last Assignment's generation) one that takes it away,
// or its session timeout since the first unconfirmed revocation passes
// (then Tick frees it), or it leaves or times out.
const (
	coordDir       = "coord"
	coordTopicName = "t"
	coordParts     = 6
	coordMsgs      = 40
	coordGroups    = 2
	coordMembers   = 4                  // per group, at most
	coordSession   = int64(time.Second) // the shortest session timeout a join may ask for
	coordRetention = time.Second
	coordFilesOpen = 1 // the store keeps its log open
)

type coordActor struct {
	broker *coordBroker
	c      *coord.Coordinator
	store  *offsets.Store
	runs   int // coordinators built, for the member-id prefix
	corr   uint32
	groups []*coordGroup
	feeds  []*coordFeed // started by this coordinator, not yet ended
	// failed is what the feed factory found wrong, seen after the call.
	failed error
}

type coordGroup struct {
	name    string
	members []*coordMember  // live, in join order
	offs    map[int32]int64 // committed offsets; a group without any is not stored
	// The group's last activity (a commit, its last member leaving) is
	// between activeLo and activeHi: a crash leaves it unknown between the
	// last one the model saw and the crash, when the coordinator touched a
	// group with members.
	activeLo, activeHi int64
	needTick           bool // a feed ended since the last Tick
	// pausedTo is when members may join again after the group stopped, so
	// that it can idle past its retention.
	pausedTo int64
	// departed are ids whose member is gone (left, timed out, its topic
	// deleted, or a crash): a join naming one is refused.
	departed []string
}

type coordMember struct {
	id   string
	m    *coord.Member
	out  *outbox.Outbox
	seen int64 // the last join, heartbeat or commit
	lazy bool  // reads its frames seldom
	// silent members stopped talking: they time out.
	silent bool

	// What the coordinator told it: its last Assignment, and what it
	// holds (partition → the generation that gave it), which is more than
	// it owns while a revocation waits for its confirmation until
	// revokeBy.
	gen      uint32
	owned    map[int32]int64
	held     map[int32]uint32
	revokeBy int64

	// What the member read: Assignments queued but not read, the last
	// one's generation and partitions, and where it commits each partition
	// from.
	inbox   []wire.Assignment
	viewGen uint32
	view    map[int32]bool
	pos     map[int32]int64
}

// coordFeed stands for a partition's feed: Stop asks it to end, and it
// ends when the seed says.
type coordFeed struct {
	group    string
	part     int32
	member   string
	stopping bool
	ended    bool
}

func (f *coordFeed) Stop()         { f.stopping = true }
func (f *coordFeed) Stopped() bool { return f.ended }

func newCoordActor(w *World) (Actor, error) {
	if err := w.Mem.MkdirAll(coordDir, 0o700); err != nil {
		return nil, err
	}
	if err := w.Mem.SyncDir("/"); err != nil {
		return nil, err
	}
	a := &coordActor{broker: &coordBroker{topic: newCoordTopic()}}
	for g := range coordGroups {
		a.groups = append(a.groups, &coordGroup{name: "cg" + strconv.Itoa(g), offs: map[int32]int64{}})
	}
	return a, a.open(w)
}

func (a *coordActor) Name() string { return "coord" }

// open builds a coordinator on w.Mem and loads it.
func (a *coordActor) open(w *World) error {
	a.runs++
	a.feeds, a.failed = nil, nil
	a.store = offsets.New(w.Mem, coordDir, w.Log)
	a.store.SetClock(w.Time)
	a.c = coord.New(coord.Config{Broker: a.broker, Store: a.store, Log: w.Log, Retention: coordRetention,
		Now: func() int64 { return w.Now }, IDPrefix: "c" + strconv.Itoa(a.runs), NewFeed: a.newFeed, Driven: true})
	return a.c.Load()
}

// newFeed is the coordinator's feed factory: no partition of a group has
// two feeds that have not ended.
func (a *coordActor) newFeed(m *coord.Member, p *shard.Partition, _ int64) coord.Feed {
	for _, f := range a.feeds {
		if f.group == m.Group() && f.part == p.ID && a.failed == nil {
			a.failed = fmt.Errorf("%s partition %d: a feed starts for %s while the one of %s has not ended",
				m.Group(), p.ID, m.ID(), f.member)
		}
	}
	f := &coordFeed{group: m.Group(), part: p.ID, member: m.ID()}
	a.feeds = append(a.feeds, f)
	return f
}

func (a *coordActor) Step(w *World) error {
	if err := a.tick(w); err != nil {
		return err
	}
	g := a.groups[w.Rand.IntN(len(a.groups))]
	talking := slices.DeleteFunc(slices.Clone(g.members), func(x *coordMember) bool { return x.silent })
	var x *coordMember
	if len(talking) > 0 {
		x = talking[w.Rand.IntN(len(talking))]
	}
	var err error
	switch r := w.Rand.IntN(1000); {
	case r < 120 && len(g.members) < coordMembers && w.Now >= g.pausedTo:
		err = a.join(w, g, "")
	case r < 125 && x != nil:
		err = a.stop(w, g)
	case r < 160 && x != nil:
		err = a.leave(w, g, x)
	case r < 180 && x != nil:
		err = a.reconnect(w, g, x)
	case r < 185:
		err = a.joinUnknown(w, g, g.unknownID(w))
	case r < 200 && x != nil:
		x.silent = true
		w.Tracef("coord %s %s goes silent", g.name, x.id)
	case r < 350 && x != nil:
		x.read(w)
		w.Tracef("coord %s %s reads: gen=%d owns %v", g.name, x.id, x.viewGen, slices.Sorted(maps.Keys(x.view)))
	case r < 550 && x != nil:
		err = a.heartbeat(w, g, x)
	case r < 800 && x != nil:
		err = a.commit(w, g, x)
	case r < 900:
		a.endFeed(w)
	case r < 950:
		err = a.expire(w)
	case r < 951:
		err = a.deleteTopic(w)
	default:
		w.Tracef("coord idle")
	}
	if err == nil {
		err = a.failed
	}
	return err
}

// settle is what follows every call of the coordinator: the store writes
// what changed (running the callbacks), and the frames queued for each
// member are drained and applied to the model.
func (a *coordActor) settle(w *World) error {
	if err := a.store.Flush(); err != nil {
		return fmt.Errorf("the offsets store failed with no fault injected: %w", err)
	}
	for _, g := range a.groups {
		for _, x := range g.members {
			if err := a.drain(w, g, x); err != nil {
				return err
			}
		}
	}
	return a.failed
}

// drain takes the frames queued on x's outbox.
func (a *coordActor) drain(w *World, g *coordGroup, x *coordMember) error {
	p, _ := x.out.Take()
	var data []byte
	for _, b := range p.IOV {
		data = append(data, b...)
	}
	x.out.Done(p, 0)
	for len(data) > 0 {
		f, n, err := wire.ReadFrame(data, uint32(len(data)))
		if err != nil || n <= 0 {
			return fmt.Errorf("%s %s: a frame that does not decode (%d bytes): %w", g.name, x.id, n, err)
		}
		data = data[n:]
		switch f.Type {
		case wire.TypeJoinResult:
			res, err := wire.DecodeJoinResult(f.Body)
			if err != nil {
				return fmt.Errorf("%s %s: JoinResult: %w", g.name, x.id, err)
			}
			if res.Member != x.m.ID() || int64(res.SessionTimeoutMs)*int64(time.Millisecond) != coordSession {
				return fmt.Errorf("%s %s: JoinResult %+v", g.name, x.m.ID(), res)
			}
		case wire.TypeAssignment:
			as, err := wire.DecodeAssignment(f.Body)
			if err != nil {
				return fmt.Errorf("%s %s: Assignment: %w", g.name, x.id, err)
			}
			if err := a.assigned(w, g, x, as); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s %s: a live member got a frame of type %d", g.name, x.id, f.Type)
		}
	}
	return nil
}

// assigned applies an Assignment sent to x: a partition it gives must
// not be held by another member, and starts at the committed offset.
func (a *coordActor) assigned(w *World, g *coordGroup, x *coordMember, as wire.Assignment) error {
	if as.Group != g.name || as.Generation <= x.gen {
		return fmt.Errorf("%s %s: Assignment of group %s generation %d after generation %d", g.name, x.id, as.Group, as.Generation, x.gen)
	}
	owned := map[int32]int64{}
	for _, po := range as.Partitions {
		p := po.Partition
		owned[p] = po.Offset
		if start, ok := x.owned[p]; ok {
			if po.Offset != start {
				return fmt.Errorf("%s %s gen %d: partition %d it owns moved its start from %d to %d", g.name, x.id, as.Generation, p, start, po.Offset)
			}
			continue
		}
		if _, ok := x.held[p]; ok {
			return fmt.Errorf("%s %s gen %d: partition %d given back while its revocation waits", g.name, x.id, as.Generation, p)
		}
		for _, y := range g.members {
			if _, ok := y.held[p]; ok && y != x {
				return fmt.Errorf("%s gen %d: partition %d given to %s while %s still holds it (its gen %d, revoke by %d)",
					g.name, as.Generation, p, x.id, y.id, y.gen, y.revokeBy)
			}
		}
		if want := g.start(p); po.Offset != want {
			return fmt.Errorf("%s gen %d: partition %d given to %s from %d; its committed offset is %d", g.name, as.Generation, p, x.id, po.Offset, want)
		}
		x.held[p] = as.Generation
	}
	for p := range x.held {
		if _, ok := owned[p]; !ok && x.revokeBy == 0 {
			x.revokeBy = w.Now + coordSession
		}
	}
	x.owned, x.gen = owned, as.Generation
	x.inbox = append(x.inbox, as)
	w.Tracef("coord %s %s assigned gen=%d %v", g.name, x.id, as.Generation, as.Partitions)
	return nil
}

// start is where a partition's new owner starts: the committed offset,
// else the earliest.
func (g *coordGroup) start(p int32) int64 {
	if off, ok := g.offs[p]; ok {
		return off
	}
	return 0
}

// read makes x read the Assignments queued for it.
func (x *coordMember) read(w *World) {
	if x.lazy && w.Rand.IntN(10) != 0 {
		return
	}
	for _, as := range x.inbox {
		view := map[int32]bool{}
		for _, po := range as.Partitions {
			view[po.Partition] = true
			if !x.view[po.Partition] {
				x.pos[po.Partition] = po.Offset
			}
		}
		x.view, x.viewGen = view, as.Generation
	}
	x.inbox = x.inbox[:0]
}

// free is x confirming its revocations: it holds what it owns.
func (x *coordMember) free() {
	for p := range x.held {
		if _, ok := x.owned[p]; !ok {
			delete(x.held, p)
		}
	}
	x.revokeBy = 0
}

// tick is the timer pass at the start of each step: the members whose
// session timed out are gone, the revocations not confirmed in time
// freed.
func (a *coordActor) tick(w *World) error {
	var gone []*coordMember
	for _, g := range a.groups {
		for _, x := range slices.Clone(g.members) {
			switch {
			case w.Now-x.seen > coordSession:
				w.Tracef("coord %s %s times out", g.name, x.id)
				g.remove(w, x)
				g.depart(x.id)
				gone = append(gone, x)
			case x.revokeBy != 0 && w.Now > x.revokeBy:
				w.Tracef("coord %s %s revocation forced", g.name, x.id)
				x.free()
			}
		}
	}
	a.c.Tick(w.Now)
	for _, g := range a.groups {
		g.needTick = false
	}
	for _, x := range gone {
		if x.m.Err() == nil {
			return fmt.Errorf("%s timed out, but is still a member", x.id)
		}
	}
	return a.settle(w)
}

// remove takes x out of the group's members.
func (g *coordGroup) remove(w *World, x *coordMember) {
	g.members = slices.DeleteFunc(g.members, func(y *coordMember) bool { return y == x })
	if len(g.members) == 0 {
		g.activeLo, g.activeHi = w.Now, w.Now
	}
}

func (a *coordActor) newMember(w *World, id string) *coordMember {
	return &coordMember{id: id, out: outbox.NewOutbox(1<<20, 1, nopFlusher{}), seen: w.Now, lazy: w.Rand.IntN(4) == 0,
		owned: map[int32]int64{}, held: map[int32]uint32{}, view: map[int32]bool{}, pos: map[int32]int64{}}
}

// join adds a member, with id when not empty (one that was a member
// before a crash, or one reconnecting).
func (a *coordActor) join(w *World, g *coordGroup, id string) error {
	x := a.newMember(w, id)
	a.corr++
	req := &wire.JoinGroup{Group: g.name, Topic: coordTopicName, Member: id, Mode: wire.AckOffset,
		Start: wire.Start{Kind: wire.StartEarliest}, SessionTimeoutMs: uint32(coordSession / int64(time.Millisecond))}
	m, err := a.c.Join(x.out, coord.Origin{Actor: "client", Remote: "sim"}, a.corr, req, a.broker.topic)
	if err != nil {
		return fmt.Errorf("%s: join %q refused: %w", g.name, id, err)
	}
	x.m, x.id = m, m.ID()
	g.members = append(g.members, x)
	w.Tracef("coord %s join %s lazy=%v", g.name, x.id, x.lazy)
	return a.settle(w)
}

// joinUnknown joins with an id that is no member's: the coordinator
// refuses it as UNKNOWN_MEMBER, queues nothing, and changes nothing (Check
// compares the groups with the model after the step).
func (a *coordActor) joinUnknown(w *World, g *coordGroup, id string) error {
	x := a.newMember(w, id)
	a.corr++
	req := &wire.JoinGroup{Group: g.name, Topic: coordTopicName, Member: id, Mode: wire.AckOffset,
		Start: wire.Start{Kind: wire.StartEarliest}, SessionTimeoutMs: uint32(coordSession / int64(time.Millisecond))}
	_, err := a.c.Join(x.out, coord.Origin{Actor: "client", Remote: "sim"}, a.corr, req, a.broker.topic)
	w.Tracef("coord %s join with unknown id %s: %v", g.name, id, err)
	if wire.CodeOf(err) != wire.CodeUnknownMember {
		return fmt.Errorf("%s: a join naming %q, no member's id, answered %s; want UNKNOWN_MEMBER", g.name, id, fmt.Sprint(err))
	}
	if p, _ := x.out.Take(); len(p.IOV) > 0 {
		return fmt.Errorf("%s: a refused join naming %q queued frames", g.name, id)
	}
	return a.settle(w)
}

// unknownID is an id no member of g has: one whose member is gone, or one
// never issued.
func (g *coordGroup) unknownID(w *World) string {
	if len(g.departed) > 0 && w.Rand.IntN(2) == 0 {
		return g.departed[w.Rand.IntN(len(g.departed))]
	}
	return "never-issued"
}

// depart notes that id's member is gone, keeping the last few.
func (g *coordGroup) depart(id string) {
	g.departed = append(g.departed, id)
	if len(g.departed) > 8 {
		g.departed = slices.Delete(g.departed, 0, 1)
	}
}

func (a *coordActor) leave(w *World, g *coordGroup, x *coordMember) error {
	g.remove(w, x)
	g.depart(x.id)
	a.c.Leave(x.m)
	w.Tracef("coord %s leave %s", g.name, x.id)
	if x.m.Err() == nil {
		return fmt.Errorf("%s left, but is still a member", x.id)
	}
	return a.settle(w)
}

// stop makes every member that is not silent leave, and none join for
// longer than the retention.
func (a *coordActor) stop(w *World, g *coordGroup) error {
	g.pausedTo = w.Now + int64(coordRetention) + int64(coordRetention)/2
	w.Tracef("coord %s stops until %d", g.name, g.pausedTo)
	for _, x := range slices.Clone(g.members) {
		if !x.silent {
			if err := a.leave(w, g, x); err != nil {
				return err
			}
		}
	}
	return nil
}

// reconnect joins again with x's id from a new connection: x's
// membership is taken over, and it loses its partitions at once.
func (a *coordActor) reconnect(w *World, g *coordGroup, x *coordMember) error {
	g.remove(w, x)
	w.Tracef("coord %s reconnect %s", g.name, x.id)
	if err := a.join(w, g, x.id); err != nil {
		return err
	}
	if x.m.Err() == nil {
		return fmt.Errorf("%s was replaced, but is still a member", x.id)
	}
	return nil
}

// heartbeat sends the generation x read, now and then an older one: it
// confirms x's revocations when it is the last generation sent to x.
func (a *coordActor) heartbeat(w *World, g *coordGroup, x *coordMember) error {
	gen := x.viewGen
	if gen > 0 && w.Rand.IntN(5) == 0 {
		gen--
	}
	x.seen = w.Now
	if gen == x.gen && x.revokeBy != 0 {
		x.free()
	}
	err := a.c.Heartbeat(x.m, gen)
	w.Tracef("coord %s heartbeat %s gen=%d (sent %d): %v", g.name, x.id, gen, x.gen, err)
	if err != nil {
		return fmt.Errorf("%s: heartbeat of a live member: %w", x.id, err)
	}
	return a.settle(w)
}

// commit commits, forward, one or two partitions x read it owns, now and
// then one it does not, or a generation it was never sent; the model
// expects the commit taken exactly when x holds every partition from a
// generation at or before the commit's.
func (a *coordActor) commit(w *World, g *coordGroup, x *coordMember) error {
	gen := x.viewGen
	if w.Rand.IntN(20) == 0 {
		gen = x.gen + 1 // never sent
	}
	parts := slices.Sorted(maps.Keys(x.view))
	if len(parts) == 0 || w.Rand.IntN(10) == 0 {
		parts = append(parts, int32(w.Rand.IntN(coordParts)))
	}
	var offs []wire.PartitionOffset
	ok := gen <= x.gen
	for range 1 + w.Rand.IntN(2) {
		p := parts[w.Rand.IntN(len(parts))]
		if slices.ContainsFunc(offs, func(po wire.PartitionOffset) bool { return po.Partition == p }) {
			continue
		}
		from, known := x.pos[p]
		if !known {
			from = w.Rand.Int64N(coordMsgs)
		}
		offs = append(offs, wire.PartitionOffset{Partition: p, Offset: from + w.Rand.Int64N(coordMsgs-from+1)})
		since, held := x.held[p]
		ok = ok && held && since <= gen
	}
	x.seen = w.Now
	var got error
	answered := false
	a.c.Commit(x.m, &wire.Commit{MemberRef: wire.MemberRef{Group: g.name, Member: x.id, Generation: gen}, Offsets: offs},
		func(err error) { got, answered = err, true })
	if err := a.settle(w); err != nil {
		return err
	}
	w.Tracef("coord %s commit %s gen=%d %v: %v", g.name, x.id, gen, offs, got)
	if !answered {
		return fmt.Errorf("%s: a commit not answered after the store's write", x.id)
	}
	if ok != (got == nil) {
		return fmt.Errorf("%s (sent gen %d, holds %v): commit gen %d %v answered %s; the model expected it taken: %v",
			x.id, x.gen, x.held, gen, offs, fmt.Sprint(got), ok)
	}
	if !ok {
		return nil // refused, as expected
	}
	for _, po := range offs {
		if prev, ok := g.offs[po.Partition]; ok && po.Offset < prev {
			return fmt.Errorf("%s partition %d: committed offset went back from %d to %d (by %s)", g.name, po.Partition, prev, po.Offset, x.id)
		}
		g.offs[po.Partition], x.pos[po.Partition] = po.Offset, po.Offset
	}
	g.activeLo, g.activeHi = w.Now, w.Now
	return nil
}

// endFeed ends a feed that was asked to stop.
func (a *coordActor) endFeed(w *World) {
	var stopping []*coordFeed
	for _, f := range a.feeds {
		if f.stopping {
			stopping = append(stopping, f)
		}
	}
	if len(stopping) == 0 {
		w.Tracef("coord no feed to end")
		return
	}
	// In an order of their own: a Tick starts the feeds of the groups in
	// the coordinator's map order.
	slices.SortFunc(stopping, func(e, f *coordFeed) int {
		return cmp.Or(strings.Compare(e.group, f.group), cmp.Compare(e.part, f.part), strings.Compare(e.member, f.member))
	})
	f := stopping[w.Rand.IntN(len(stopping))]
	f.ended = true
	a.feeds = slices.DeleteFunc(a.feeds, func(e *coordFeed) bool { return e == f })
	for _, g := range a.groups {
		if g.name == f.group {
			g.needTick = true
		}
	}
	w.Tracef("coord %s feed of partition %d (%s) ended", f.group, f.part, f.member)
}

// feedsEnded reports whether every feed of g has ended.
func (a *coordActor) feedsEnded(g *coordGroup) bool {
	return !slices.ContainsFunc(a.feeds, func(f *coordFeed) bool { return f.group == g.name })
}

// expire runs a retention pass: a group without members, whose feeds all
// ended, is removed once idle for the retention, and not before.
func (a *coordActor) expire(w *World) error {
	idle := make([]bool, len(a.groups))
	for i, g := range a.groups {
		idle[i] = len(g.members) == 0 && len(g.offs) > 0 && a.feedsEnded(g)
	}
	a.c.ExpireIdle(w.Time())
	if err := a.settle(w); err != nil {
		return err
	}
	keep := int64(coordRetention)
	for i, g := range a.groups {
		if len(g.offs) == 0 {
			continue
		}
		_, err := a.c.Describe(g.name)
		gone := err != nil
		w.Tracef("coord %s retention pass: idle=%v since %d..%d, removed=%v", g.name, idle[i], g.activeLo, g.activeHi, gone)
		switch {
		case gone && (!idle[i] || w.Now-g.activeLo <= keep-int64(time.Millisecond)):
			return fmt.Errorf("%s removed by retention, active at %d, with %d members", g.name, g.activeLo, len(g.members))
		case !gone && idle[i] && w.Now-g.activeHi >= keep:
			return fmt.Errorf("%s kept past its retention: idle since %d", g.name, g.activeHi)
		case gone:
			clear(g.offs)
		}
	}
	return nil
}

// deleteTopic deletes the topic and creates it again: its groups are
// forgotten, their members told.
func (a *coordActor) deleteTopic(w *World) error {
	a.c.TopicRemoved(a.broker.topic)
	a.broker.topic = newCoordTopic()
	a.feeds = nil // of groups that are gone, on partitions that are gone
	w.Tracef("coord topic deleted and created again")
	for _, g := range a.groups {
		for _, x := range g.members {
			if x.m.Err() == nil {
				return fmt.Errorf("%s: %s is still a member of a group whose topic was deleted", g.name, x.id)
			}
		}
		for _, x := range g.members {
			g.depart(x.id)
		}
		g.members, g.needTick = nil, false
		clear(g.offs)
	}
	return a.settle(w)
}

// Check: the coordinator's groups are the model's: the groups that exist
// (those with members or offsets), their members, their committed
// offsets, and each partition's owner, which is the member whose last
// Assignment has it; and once nothing is pending (no revocation waits, no
// feed is stopping, a Tick ran since one ended) every partition is owned
// and the owners are balanced.
func (a *coordActor) Check(*World) error {
	for _, g := range a.groups {
		if err := a.check(g); err != nil {
			return err
		}
	}
	return nil
}

func (a *coordActor) check(g *coordGroup) error {
	info, err := a.c.Describe(g.name)
	// A group without members or offsets is kept until its feeds have
	// ended, and forgotten by the Tick after that.
	exists := len(g.members) > 0 || len(g.offs) > 0 || !a.feedsEnded(g)
	found := err == nil
	if found != exists && (!found || !g.needTick) {
		return fmt.Errorf("%s: Describe found it %v (%s); the model has %d members, offsets %v, feeds ended %v",
			g.name, found, fmt.Sprint(err), len(g.members), g.offs, a.feedsEnded(g))
	}
	if !found {
		return nil // it is gone, as expected
	}
	ids := make([]string, 0, len(g.members))
	byID := map[string]*coordMember{}
	for _, x := range g.members {
		ids = append(ids, x.id)
		byID[x.id] = x
	}
	slices.Sort(ids)
	if !slices.Equal(ids, info.Members) {
		return fmt.Errorf("%s: members %v, the model's %v", g.name, info.Members, ids)
	}
	count := map[string]int{}
	for _, pi := range info.Partitions {
		if want, ok := g.offs[pi.Partition]; (ok && pi.Committed != want) || (!ok && pi.Committed != -1) {
			return fmt.Errorf("%s partition %d: committed %d, the model's %v", g.name, pi.Partition, pi.Committed, g.offs)
		}
		if pi.Owner == "" {
			continue
		}
		x := byID[pi.Owner]
		if x == nil {
			return fmt.Errorf("%s partition %d is owned by %s, not a live member", g.name, pi.Partition, pi.Owner)
		}
		if _, ok := x.owned[pi.Partition]; !ok {
			return fmt.Errorf("%s partition %d is owned by %s, whose last Assignment (gen %d) does not have it", g.name, pi.Partition, x.id, x.gen)
		}
		count[x.id]++
	}
	for _, x := range g.members {
		if count[x.id] != len(x.owned) {
			return fmt.Errorf("%s: %s's last Assignment (gen %d) has %d partitions; it owns %d", g.name, x.id, x.gen, len(x.owned), count[x.id])
		}
	}
	return a.checkSettled(g, count)
}

// checkSettled: once nothing is pending, every partition is owned, and
// the owners are balanced.
func (a *coordActor) checkSettled(g *coordGroup, count map[string]int) error {
	stopping := slices.ContainsFunc(a.feeds, func(f *coordFeed) bool { return f.group == g.name && f.stopping })
	revoking := slices.ContainsFunc(g.members, func(x *coordMember) bool { return x.revokeBy != 0 })
	if len(g.members) == 0 || g.needTick || stopping || revoking {
		return nil
	}
	lo, hi := coordParts/len(g.members), (coordParts+len(g.members)-1)/len(g.members)
	owned := 0
	for _, x := range g.members {
		if c := count[x.id]; c < lo || c > hi {
			return fmt.Errorf("%s settled: %s owns %d partitions, not %d..%d", g.name, x.id, c, lo, hi)
		}
		owned += count[x.id]
	}
	if owned != coordParts {
		return fmt.Errorf("%s settled: %d of %d partitions owned", g.name, owned, coordParts)
	}
	return nil
}

// Crash builds a coordinator from the crashed disk: every group with
// offsets is found with the offsets last committed (each commit was
// answered once written), and no members; the members that were not
// silent join again, with their ids (refused: the new coordinator never
// issued them), then with new ones.
func (a *coordActor) Crash(w *World) error {
	back := make([][]string, 0, len(a.groups))
	for _, g := range a.groups {
		var ids []string
		for _, x := range g.members {
			if !x.silent {
				ids = append(ids, x.id)
			}
		}
		back = append(back, ids)
		for _, x := range g.members {
			g.depart(x.id)
		}
		if len(g.members) > 0 {
			g.activeHi = w.Now // the coordinator may have touched it since
		}
		g.members, g.needTick = nil, false
	}
	if err := a.open(w); err != nil {
		return fmt.Errorf("load after a crash: %w", err)
	}
	w.Tracef("coord recover: %d groups", len(a.c.List()))
	if err := a.Check(w); err != nil {
		return err
	}
	for i, g := range a.groups {
		for _, id := range back[i] {
			if err := a.joinUnknown(w, g, id); err != nil {
				return err
			}
			if err := a.join(w, g, ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// coordBroker is the coordinator's broker: one topic, no replays (the
// feeds are fakes), no dead letters (offset mode), no listeners.
type coordBroker struct{ topic *coordTopic }

// coordTopic is the topic; *coordTopic is comparable, as coord.Topic
// values must be.
type coordTopic struct{ parts []*shard.Partition }

func (t *coordTopic) Name() string                   { return coordTopicName }
func (t *coordTopic) Partitions() []*shard.Partition { return t.parts }
func (t *coordTopic) DeadLetterTopic() string        { return "" }
func (t *coordTopic) MaxDeliveries() int             { return 0 }

// newCoordTopic makes the topic: partitions on memory logs of coordMsgs
// one-message batches, without a shard (the fake feeds read nothing).
func newCoordTopic() *coordTopic {
	t := &coordTopic{}
	for i := range coordParts {
		log := storage.NewMemLog(1 << 20)
		for o := range coordMsgs {
			var bb wire.BatchBuilder
			bb.Start(nil, -1, -1)
			bb.Append(int64(o), nil, []byte("m"), nil)
			b := wire.Batch(bb.Finish())
			b.SetBaseOffset(int64(o))
			buf := storage.NewBuf(len(b))
			copy(buf.B, b)
			if err := log.Append(buf, wire.Batch(buf.B)); err != nil {
				panic(err)
			}
			buf.Release()
		}
		t.parts = append(t.parts, shard.NewPartition(coordTopicName, int32(i), nil, log, shard.SyncPolicy{}))
	}
	return t
}

func (b *coordBroker) Topic(name string) coord.Topic {
	if name == coordTopicName {
		return b.topic
	}
	return nil
}

func (b *coordBroker) ResolveStart(p *shard.Partition, st wire.Start) (int64, error) {
	lo, hi := p.Log.Bounds()
	switch st.Kind {
	case wire.StartEarliest:
		return lo, nil
	case wire.StartLatest:
		return hi, nil
	}
	return 0, wire.Errorf(wire.CodeInvalidArgument, "the simulator's groups start at the earliest")
}

func (b *coordBroker) OfflineReason(*shard.Partition) string              { return "" }
func (b *coordBroker) SkipCorrupt(_ *shard.Partition, offset int64) int64 { return offset }

func (b *coordBroker) Replay(*outbox.Outbox, *shard.Partition, int64, *atomic.Bool, chan struct{}) {
	panic("sim: the coord actor's feeds are fakes; nothing replays")
}

func (b *coordBroker) Publish(string, []byte, int) error {
	panic("sim: the coord actor's groups are in offset mode; nothing is dead-lettered")
}

func (b *coordBroker) Observed() bool       { return false }
func (b *coordBroker) Emit(telemetry.Event) {}

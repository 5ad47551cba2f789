// Package coord is the consumer-group coordinator: members, generations,
// rebalances and revocations, commits, message-mode acks and their
// redeliveries, dead letters, and the feeds that push each partition to
// the member that owns it (docs/DESIGN.md, "Consumer groups").
//
// It sits below the broker and reaches it only through Broker (broker.go):
// topics, the log questions a subscriber asks too, the replay pool, the
// internal publish of dead letters, and telemetry events. Members are
// connections seen as their outbox (outbox.Outbox) and remote address, so
// the coordinator sends frames without knowing sessions. It imports shard,
// storage, wire, telemetry and the group leaves; never engine or gnet.
//
// The coordinator is not on the publish path: joins, leaves, heartbeats and
// rebalances take one mutex. A member is a connection's membership; its
// partitions are fed to its outbox by a feed per partition: in none and
// offset mode a replay that turns into a live subscription (the same path
// as Subscribe with a start position), in message mode a reader goroutine
// that delivers at most max-unacked messages ahead of the acks and
// redelivers what is not acked in time.
//
// Moving a partition from a live member takes two steps, so that the
// member can commit what it processed: it is first revoked (its feed stops
// and the member gets an Assignment without it), and given to its new
// owner only once the member confirms with a Heartbeat of the new
// generation, or its session timeout passes. A member that leaves, times
// out or disconnects loses its partitions at once.
//
// A group without members is kept while it has committed offsets, until
// it has been idle (no member, commit or ack-floor move) for the group
// retention; a pass every RetentionPass removes the idle ones.
//
// Time: session timeouts, ack waits and backoffs read Config.Now, a
// monotonic clock in nanoseconds, so tests drive them with a logical
// clock; retention counts in wall-clock time, as the stored activity does.
// A driver that owns time and goroutines (the simulator) sets
// Config.Driven, IDPrefix and NewFeed, and runs the timer pass itself with
// Tick and ExpireIdle: the coordinator then starts no goroutine and reads
// neither crypto/rand nor any clock but Config.Now and the store's.
//
// Lock order: Coordinator.mu, then gpart.mu; Coordinator.mu, then
// offsets.Store's mu. An ack takes gpart.mu, and only after releasing it
// Coordinator.mu to store a moved floor (as Commit stores under it).
package coord

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/group/ackstate"
	"github.com/ratatoskr-mq/ratatoskr/group/assign"
	"github.com/ratatoskr-mq/ratatoskr/group/offsets"
	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/telemetry"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Group defaults and bounds.
const (
	defaultSessionTimeout = 10 * time.Second
	minSessionTimeout     = time.Second
	maxSessionTimeout     = 5 * time.Minute
	defaultAckWait        = 30 * time.Second
	minAckWait            = 10 * time.Millisecond
	defaultMaxDeliveries  = wire.DefaultMaxDeliveries
	defaultMaxUnacked     = 10000
	maxBackoffSteps       = 64
	// maxAckWindow bounds delivered-but-not-floored offsets of a partition
	// in message mode (the ack bitset), whatever max-unacked says.
	maxAckWindow = 1 << 22
	// groupTick is how often sessions and revocations are checked.
	groupTick = 100 * time.Millisecond
)

// RetentionPass is how often idle groups are looked for: group retention
// is counted in days, and a pass reads every group. A retention shorter
// than a pass could not be kept, so the broker's config refuses it.
const RetentionPass = time.Minute

var coordEpoch = time.Now()

// nowNS is the coordinator's default clock: monotonic, in nanoseconds.
func nowNS() int64 { return int64(time.Since(coordEpoch)) }

// Config is what a Coordinator is built from.
type Config struct {
	Broker Broker
	// Store keeps the committed offsets; the coordinator starts it in
	// Load and closes it in Close.
	Store *offsets.Store
	Log   *slog.Logger
	// Retention is how long a group with no member and no activity is
	// kept; 0 keeps groups forever.
	Retention time.Duration
	// Placement, in a cluster, says which groups this node coordinates;
	// nil on a single broker, which coordinates every group.
	Placement Placement
	// Now is the clock of session timeouts, ack waits and backoffs, in
	// monotonic nanoseconds; nil: the process's monotonic clock.
	Now func() int64

	// The fields below let a driver that owns time, I/O and goroutines
	// run the coordinator as a state machine, as the simulator (package
	// sim) does; the broker leaves them zero.

	// IDPrefix starts the member ids the coordinator makes up ("<prefix>-<n>");
	// empty: 8 random hex digits, so that ids differ between broker runs.
	IDPrefix string
	// NewFeed, if not nil, stands in for the feeds that deliver a
	// partition to its owner (a replay through the broker in none and
	// offset mode, a reader goroutine in message mode): it is called when
	// member m is given partition p, whose deliveries start at offset
	// start, after m's Assignment is queued, with the coordinator's locks
	// held, and returns the feed, which the coordinator stops when m loses
	// p. A partition moves on only once its previous feed has stopped (the
	// next Tick, or rebalance, sees it). Nil: the real feeds.
	NewFeed func(m *Member, p *shard.Partition, start int64) Feed
	// Driven makes the caller the coordinator's only goroutine: Load
	// starts neither the timer pass (the caller calls Tick, and ExpireIdle
	// every RetentionPass) nor the offsets store's writer (the caller
	// writes with Store().Flush, which runs the commits' callbacks).
	Driven bool
}

// Placement says which groups a coordinator coordinates. In a cluster a
// group's coordinator is the node that leads the offsets partition the
// group's name hashes to; the others refuse its joins, naming that node,
// and a node that stops leading a partition hands its groups over
// (Evict), as one that starts leading it takes them in (Adopt).
type Placement interface {
	// Coordinates is nil when this node coordinates the group named
	// group, else the error that refuses a request for it (NOT_LEADER
	// naming the coordinator). It is called with the coordinator's mutex
	// held, so it must not call back into the coordinator.
	Coordinates(group string) error
	// Confirm calls done once this node has confirmed, after Confirm was
	// called, that it still coordinates the group named group (in a
	// cluster: a Raft ReadIndex of the group's offsets partition), with
	// nil, or with the refusal. Coordinates alone may be stale: a node
	// deposed while cut off from the others coordinates until it learns
	// it, up to an election timeout later. It is called without the
	// coordinator's locks; done may run on any goroutine, must not block,
	// and must not call back into the Placement.
	Confirm(group string, done func(error))
}

// Feed is a partition's feed as Config.NewFeed makes it.
type Feed interface {
	// Stop asks the feed to end; called with the coordinator's locks
	// held, so it must not call the coordinator.
	Stop()
	// Stopped reports whether it has ended and will deliver nothing more.
	Stopped() bool
}

// extFeed is a Feed from Config.NewFeed as the coordinator's feed.
type extFeed struct{ f Feed }

func (e extFeed) stop()         { e.f.Stop() }
func (e extFeed) stopped() bool { return e.f.Stopped() }

// Origin is who asked for a change, as telemetry events name it: Actor
// "client", "admin" or "broker", and the remote address when there is one.
type Origin struct{ Actor, Remote string }

var byBroker = Origin{Actor: "broker"}

// groupSettings are fixed by the member that joins an empty group.
type groupSettings struct {
	mode          wire.AckMode
	start         wire.Start
	ackWait       int64  // ns
	maxDeliveries uint32 // 0: the topic's, else the default
	maxUnacked    int64
	backoff       []int64 // ns
	dlq           string  // empty: the topic's, else "<topic>.dlq"
}

type group struct {
	name    string
	topic   Topic
	set     groupSettings
	gen     uint32
	members map[string]*Member
	parts   []*gpart
	desired []string // the assignor's last answer, member ids
	retry   bool     // a partition waits for its previous feed to stop
	// In a cluster, a partition freed by a member leaving, timing out or
	// confirming a revocation is given again only once the coordinator
	// confirmed it still coordinates the group, after it was freed
	// (confirmGives): a deposed coordinator that has not noticed yet
	// would start the next owner at its stale committed offset.
	freed      uint64 // partitions freed so, ever
	confirmed  uint64 // freed when the last confirmation was asked
	confirming bool

	deadLettered atomic.Uint64
}

// Member is one connection's membership of a group. The session that
// joined holds it and hands it back with each request; the coordinator
// may drop it at any time (session timeout, taken over, topic deleted), and
// Err then says so.
type Member struct {
	id      string
	remote  string // the member's connection, for telemetry events
	g       *group
	out     *outbox.Outbox
	timeout time.Duration
	seen    atomic.Int64  // nowNS of the last heartbeat, commit or ack
	gen     atomic.Uint32 // generation of the last Assignment sent to it
	gone    atomic.Bool
	// takenOver: a join from another connection named its id (takeOver).
	takenOver atomic.Bool
	// assigned: it has been sent an Assignment; Coordinator.mu.
	assigned bool
	revokeBy int64        // nowNS by which pending revocations are forced; 0: none; Coordinator.mu
	unacked  atomic.Int64 // message mode: unacked messages over its partitions

	// room is closed (and replaced) whenever unacked falls below the
	// group's max-unacked, waking every feed of the member that stopped at
	// the bound: acks of one partition make room for all of them.
	roomMu sync.Mutex
	room   chan struct{}
}

// ID is the member id, the broker's or the one the member asked for.
func (m *Member) ID() string { return m.id }

// Group is the name of the member's group.
func (m *Member) Group() string { return m.g.name }

// Topic is the topic the member's group consumes.
func (m *Member) Topic() Topic { return m.g.topic }

// Err is nil while m is in its group, and UNKNOWN_MEMBER once it is not.
func (m *Member) Err() error {
	if m.gone.Load() {
		return errGoneMember(m)
	}
	return nil
}

// roomSignal returns the channel closed when the member next gets room.
func (m *Member) roomSignal() <-chan struct{} {
	m.roomMu.Lock()
	defer m.roomMu.Unlock()
	if m.room == nil {
		m.room = make(chan struct{})
	}
	return m.room
}

// settle takes n acked (or no longer owned) messages off the member's
// count, and wakes its feeds if that made room.
func (m *Member) settle(n, maxUnacked int64) {
	if n <= 0 {
		return
	}
	after := m.unacked.Add(-n)
	if after < maxUnacked && after+n >= maxUnacked {
		m.roomMu.Lock()
		if m.room != nil {
			close(m.room)
			m.room = nil
		}
		m.roomMu.Unlock()
	}
}

// gpart is a group's view of one partition.
type gpart struct {
	g *group
	p *shard.Partition

	mu            sync.Mutex
	owner         *Member
	since         uint32  // generation owner got it in
	revoking      *Member // the previous owner, until it confirms the revocation
	revokingSince uint32
	committed     int64 // next offset to consume; -1: none
	start         int64 // where the current owner's deliveries started
	feed          feed
	acks          *ackstate.State // message mode
}

// feed delivers a partition to its owner.
type feed interface {
	// stop asks the feed to end; called with gpart.mu held.
	stop()
	// stopped reports whether it has ended and will send nothing more.
	stopped() bool
}

// Coordinator runs the consumer groups of a broker.
type Coordinator struct {
	broker    Broker
	log       *slog.Logger
	retention time.Duration
	now       func() int64

	mu     sync.Mutex
	groups map[string]*group
	store  *offsets.Store
	place  Placement // nil: every group is this coordinator's
	ids    atomic.Uint64
	prefix string // for member ids: differs between broker runs

	// newFeed starts the feed of a partition given to a member: startFeed,
	// which tests replace to see the coordinator's decisions alone.
	newFeed func(*gpart, *Member) feed

	driven  bool // Config.Driven: Load starts no goroutine
	running bool // Load started run; set and read by the broker's start and shutdown
	poke    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

// New returns a coordinator with no groups; Load restores them.
func New(cfg Config) *Coordinator {
	prefix := cfg.IDPrefix
	if prefix == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		prefix = hex.EncodeToString(b[:])
	}
	now := cfg.Now
	if now == nil {
		now = nowNS
	}
	c := &Coordinator{broker: cfg.Broker, log: cfg.Log, retention: cfg.Retention, now: now,
		groups: map[string]*group{}, store: cfg.Store, place: cfg.Placement, prefix: prefix, driven: cfg.Driven,
		poke: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	c.newFeed = c.startFeed
	if cfg.NewFeed != nil {
		c.newFeed = func(gp *gpart, m *Member) feed { return extFeed{cfg.NewFeed(m, gp.p, gp.start)} }
	}
	return c
}

// Load restores the groups recorded with committed offsets, then starts
// the offsets store and the timers (unless Config.Driven). Groups of
// topics that no longer exist are forgotten.
func (c *Coordinator) Load() error {
	stored, err := c.store.Load()
	if err != nil {
		return err
	}
	for name, sg := range stored {
		t := c.broker.Topic(sg.Topic)
		if t == nil {
			c.log.Info("forgetting the offsets of a group whose topic is gone", "group", name, "topic", sg.Topic)
			c.store.Remove(name, nil)
			continue
		}
		c.groups[name] = c.storedGroup(name, t, sg)
	}
	if c.driven {
		return nil
	}
	c.store.Start()
	c.running = true
	go c.run()
	return nil
}

// Close stops the timers and the feeds, and writes the offsets still
// pending.
func (c *Coordinator) Close() {
	select {
	case <-c.quit:
		return
	default:
	}
	close(c.quit)
	if c.running {
		<-c.done
	}
	c.mu.Lock()
	for _, g := range c.groups {
		for _, gp := range g.parts {
			gp.mu.Lock()
			if gp.feed != nil {
				gp.feed.stop()
			}
			gp.mu.Unlock()
		}
	}
	c.mu.Unlock()
	c.store.Close()
}

// storedGroup is the group name restored from its stored state sg, with
// no members.
func (c *Coordinator) storedGroup(name string, t Topic, sg *offsets.Group) *group {
	g := c.newGroup(name, t, groupSettings{})
	for p, off := range sg.Offsets {
		if int(p) >= 0 && int(p) < len(g.parts) {
			g.parts[p].committed = off
		}
	}
	return g
}

// coordinates is nil when this coordinator coordinates the group named
// name, else the error that refuses a request for it; mu held.
func (c *Coordinator) coordinates(name string) error {
	if c.place == nil {
		return nil
	}
	return c.place.Coordinates(name)
}

// Confirms reports whether a read of a group's state must be confirmed
// first (Confirm): in a cluster, where a coordinator may have been
// deposed without knowing it yet.
func (c *Coordinator) Confirms() bool { return c.place != nil }

// Confirm calls done once state of the group named name that is read
// from now on reflects every change of it stored before Confirm was
// called (Placement.Confirm), or with the refusal; at once with nil on a
// single broker. A JoinGroup (whose Assignment starts partitions at the
// committed offsets) and a DescribeGroup of a client are confirmed so
// before they are answered. done may run on any goroutine and must not
// block.
func (c *Coordinator) Confirm(name string, done func(error)) {
	if c.place == nil {
		done(nil)
		return
	}
	c.place.Confirm(name, done)
}

// DescribeConfirmed is Describe once Confirm confirmed that this node
// coordinates the group, for a caller that may wait (the admin API): it
// waits for the confirmation, which in a cluster comes or fails within
// two election timeouts.
func (c *Coordinator) DescribeConfirmed(name string) (wire.GroupInfo, error) {
	confirmed := make(chan error, 1)
	c.Confirm(name, func(err error) { confirmed <- err })
	if err := <-confirmed; err != nil {
		return wire.GroupInfo{}, err
	}
	return c.Describe(name)
}

func (c *Coordinator) newGroup(name string, t Topic, set groupSettings) *group {
	g := &group{name: name, topic: t, set: set, members: map[string]*Member{}}
	parts := t.Partitions()
	g.parts = make([]*gpart, len(parts))
	for i, p := range parts {
		g.parts[i] = &gpart{g: g, p: p, committed: -1}
	}
	return g
}

// settings validates a join's settings and fills in the defaults.
func (c *Coordinator) settings(req *wire.JoinGroup) (groupSettings, time.Duration, error) {
	timeout := time.Duration(req.SessionTimeoutMs) * time.Millisecond
	if timeout == 0 {
		timeout = defaultSessionTimeout
	}
	if timeout < minSessionTimeout || timeout > maxSessionTimeout {
		return groupSettings{}, 0, invalid("session timeout must be " + minSessionTimeout.String() + ".." + maxSessionTimeout.String())
	}
	set := groupSettings{mode: req.Mode, start: req.Start, ackWait: int64(req.AckWaitMs) * int64(time.Millisecond),
		maxDeliveries: req.MaxDeliveries, maxUnacked: int64(req.MaxUnacked), dlq: req.DLQ}
	if set.ackWait == 0 {
		set.ackWait = int64(defaultAckWait)
	}
	if set.ackWait < int64(minAckWait) {
		return set, 0, invalid("ack wait must be at least " + minAckWait.String())
	}
	if set.maxUnacked <= 0 {
		set.maxUnacked = defaultMaxUnacked
	}
	if len(req.BackoffMs) > maxBackoffSteps {
		return set, 0, invalid("at most " + strconv.Itoa(maxBackoffSteps) + " backoff steps")
	}
	for _, b := range req.BackoffMs {
		set.backoff = append(set.backoff, int64(b)*int64(time.Millisecond))
	}
	if set.dlq != "" && wire.ValidateQualifiedName(set.dlq) != nil {
		return set, 0, invalid("dead-letter topic " + strconv.Quote(set.dlq) + " is not a valid topic name")
	}
	if set.dlq == req.Topic {
		return set, 0, invalid("the dead-letter topic must differ from the topic")
	}
	return set, timeout, nil
}

// maxDeliveries is the group's, else its topic's, else the default.
func (g *group) maxDeliveries() uint32 {
	if g.set.maxDeliveries > 0 {
		return g.set.maxDeliveries
	}
	if n := g.topic.MaxDeliveries(); n > 0 {
		return uint32(n)
	}
	return defaultMaxDeliveries
}

// deadLetterTopic is the group's, else its topic's, else "<topic>.dlq".
func (g *group) deadLetterTopic() string {
	if g.set.dlq != "" {
		return g.set.dlq
	}
	if d := g.topic.DeadLetterTopic(); d != "" {
		return d
	}
	return g.topic.Name() + ".dlq"
}

// Join adds a member for the connection whose outbox is out, and answers
// its JoinGroup (corr) with a JoinResult; the member then gets its first
// Assignment. by names the connection (Actor "client" and its address).
// An error is the answer the session should send instead.
func (c *Coordinator) Join(out *outbox.Outbox, by Origin, corr uint32, req *wire.JoinGroup, t Topic) (*Member, error) {
	set, timeout, err := c.settings(req)
	if err != nil {
		return nil, err
	}
	if set.mode == wire.AckMessage && set.dlq == "" && t.DeadLetterTopic() == "" &&
		wire.ValidateQualifiedName(t.Name()+".dlq") != nil {
		return nil, invalid("the default dead-letter topic " + strconv.Quote(t.Name()+".dlq") +
			" is not a valid topic name (too long); set the topic's dead-letter-topic or the group's")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.coordinates(req.Group); err != nil {
		return nil, err
	}
	g := c.groups[req.Group]
	if g == nil && c.place != nil {
		// A group this node came to coordinate whose topic it did not
		// have open when it took the group in (Adopt).
		if sg, ok := c.store.Group(req.Group); ok && sg.Topic == t.Name() {
			g = c.storedGroup(req.Group, t, sg)
			c.groups[req.Group] = g
		}
	}
	if g != nil {
		if err := g.admits(t, set); err != nil {
			return nil, err
		}
	}
	old, err := holder(g, req.Group, req.Member, out)
	if err != nil {
		return nil, err
	}
	switch {
	case g == nil:
		g = c.newGroup(req.Group, t, set)
		c.groups[req.Group] = g
	case len(g.members) == 0:
		g.set = set
	}
	id := req.Member
	if id == "" {
		id = c.prefix + "-" + strconv.FormatUint(c.ids.Add(1), 10)
	}
	if old != nil {
		c.takeOver(g, old, by)
	}
	m := &Member{id: id, remote: by.Remote, g: g, out: out, timeout: timeout}
	m.seen.Store(c.now())
	g.members[id] = m
	res := wire.JoinResult{Member: id, SessionTimeoutMs: uint32(timeout / time.Millisecond)}
	body := res.Append(nil)
	out.SendCopy(append(wire.AppendHeader(nil, wire.TypeJoinResult, 0, corr, len(body)), body...))
	c.log.Debug("group member joined", "group", g.name, "member", id, "members", len(g.members))
	c.emitGroup(g, m, len(g.members), "join", by, nil)
	c.rebalance(g)
	if !m.assigned {
		// Nothing to give it yet (more members than partitions, or its
		// partitions are still being revoked or their feeds stopping): it
		// is told so, so that every JoinResult is followed by an
		// Assignment and the member knows its generation.
		m.gen.Store(g.gen)
		c.sendAssignment(m)
	}
	return m, nil
}

// admits checks that a join may enter g: a group consumes one topic for
// as long as it exists, and its members share one ack mode (the member
// that joins an empty group sets it, with the other settings); mu held.
func (g *group) admits(t Topic, set groupSettings) error {
	switch {
	case g.topic.Name() != t.Name():
		return invalid("group " + strconv.Quote(g.name) + " consumes topic " + strconv.Quote(g.topic.Name()))
	case len(g.members) > 0 && g.set.mode != set.mode:
		return invalid("group " + strconv.Quote(g.name) + " consumes in " + g.set.mode.String() +
			" ack mode; this member asked for " + set.mode.String())
	}
	return nil
}

// holder is the live member a join naming id takes over from: nil for an
// empty id (the join gets a new one). Member ids are the coordinator's:
// an id is valid only while its member is in the group, so an id the
// coordinator never issued, one whose member has left, timed out or lost
// its connection, or one from before a restart, is UNKNOWN_MEMBER, and the
// client joins with an empty id instead. g is
// the group named name, nil when there is none; mu held.
func holder(g *group, name, id string, out *outbox.Outbox) (*Member, error) {
	if id == "" {
		return nil, nil
	}
	var m *Member
	if g != nil {
		m = g.members[id]
	}
	switch {
	case m == nil:
		return nil, wire.Errorf(wire.CodeUnknownMember, "group "+strconv.Quote(name)+" has no member "+
			strconv.Quote(id)+" (member ids are the broker's, valid while their member is in the group); "+
			"join with an empty member id")
	case m.out == out:
		return nil, invalid("this connection is already member " + strconv.Quote(id) + " of group " + g.name)
	}
	return m, nil
}

// takeOver removes old, a live member whose id a join from another
// connection names, so that the joining member replaces it; mu held.
//
// The newer connection wins, as with Kafka's static membership (a join
// with a group.instance.id fences the member that held it): a client
// whose connection broke without the broker noticing (a half-open TCP
// connection, a NAT or firewall timeout) rejoins at once with the id it
// was issued and gets its partitions back now, rather than being refused
// until its old membership's session timeout passes. Only the member, or
// someone who read the id from DescribeGroup, knows it; the broker has no
// authentication to hold it against. The old connection's feeds stop at
// once, and its next group request gets UNKNOWN_MEMBER (the connection
// itself stays open); its partitions go to the new member once their
// feeds have stopped, so no partition has two owners.
func (c *Coordinator) takeOver(g *group, old *Member, by Origin) {
	c.log.Info("group member taken over by a join from another connection", "group", g.name, "member", old.id,
		"old_remote", old.remote, "new_remote", by.Remote)
	c.emitGroup(g, old, len(g.members)-1, "replace", Origin{Actor: "client", Remote: by.Remote}, nil)
	old.takenOver.Store(true)
	c.removeMember(old)
	// Removing the last member of a group without offsets forgets the
	// group; the member replacing it keeps it.
	c.groups[g.name] = g
}

// Leave removes m (LeaveGroup, or its connection closed).
func (c *Coordinator) Leave(m *Member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !m.gone.Load() {
		c.emitGroup(m.g, m, len(m.g.members)-1, "leave", Origin{Actor: "client", Remote: m.remote}, nil)
		c.removeMember(m)
	}
}

// emitGroup emits EventGroupChanged about g, and m when not nil, with the
// number of members after the change as its Count.
func (c *Coordinator) emitGroup(g *group, m *Member, members int, action string, by Origin, err error) {
	if !c.broker.Observed() {
		return
	}
	target := "group/" + g.name
	if m != nil {
		target += "/member/" + m.id
	}
	c.broker.Emit(telemetry.Event{Kind: telemetry.EventGroupChanged, Topic: g.topic.Name(), Partition: -1, Group: g.name,
		Count: members, Actor: by.Actor, Remote: by.Remote, Action: action, Target: target, Err: err})
}

// removeMember takes m's partitions away at once and rebalances; mu held.
func (c *Coordinator) removeMember(m *Member) {
	g := m.g
	m.gone.Store(true)
	delete(g.members, m.id)
	g.freed++
	for _, gp := range g.parts {
		gp.mu.Lock()
		if gp.owner == m {
			gp.release()
		}
		if gp.revoking == m {
			gp.revoking = nil
		}
		gp.mu.Unlock()
	}
	c.rebalance(g)
	switch {
	case len(g.members) > 0:
	case !g.hasOffsets():
		c.forgetIfDone(g)
	default:
		// Idle from now: retention counts from the last member leaving.
		c.store.Touch(g.name, c.store.Clock())
	}
}

// release stops the owner's feed and frees the partition; gp.mu held.
func (gp *gpart) release() {
	if gp.feed != nil {
		gp.feed.stop()
	}
	if gp.acks != nil {
		gp.owner.settle(int64(gp.acks.Unacked()), gp.g.set.maxUnacked)
	}
	gp.owner = nil
}

func (g *group) hasOffsets() bool {
	for _, gp := range g.parts {
		if gp.committed >= 0 {
			return true
		}
	}
	return false
}

// pendingStart is a feed to start once the Assignments are queued, so a
// member never gets a delivery for a partition before it knows it owns it.
type pendingStart struct {
	gp *gpart
	m  *Member
}

// rebalance brings the group towards the assignor's answer; mu held. Free
// partitions go to their new owner at once; partitions a live member must
// give up are revoked first (see the top of this file).
func (c *Coordinator) rebalance(g *group) {
	g.retry = false
	if len(g.members) == 0 {
		g.desired = nil
		return
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range g.members {
			if !yield(id) {
				return
			}
		}
	})
	prev := g.desired
	if len(prev) != len(g.parts) {
		prev = make([]string, len(g.parts))
	}
	g.desired = assign.Sticky(len(g.parts), ids, prev)
	gen := g.gen + 1
	changed := map[*Member]bool{}
	var starts []pendingStart
	now := c.now()
	for i, gp := range g.parts {
		want := g.members[g.desired[i]]
		gp.mu.Lock()
		switch {
		case gp.owner == want:
		case gp.owner != nil:
			old := gp.owner
			gp.revoking, gp.revokingSince = old, gp.since
			gp.release()
			changed[old] = true
			if old.revokeBy == 0 {
				old.revokeBy = now + int64(old.timeout)
			}
		case gp.revoking != nil:
			// waiting for the previous owner to confirm
		case gp.feed != nil && !gp.feed.stopped():
			g.retry = true // its previous feed is still winding down
		case g.confirmed != g.freed && c.place != nil:
			c.confirmGives(g)
		default:
			c.give(gp, want, gen, now)
			changed[want] = true
			starts = append(starts, pendingStart{gp, want})
		}
		gp.mu.Unlock()
	}
	if len(changed) == 0 {
		return
	}
	g.gen = gen
	c.emitGroup(g, nil, len(g.members), "rebalance", byBroker, nil)
	for m := range changed {
		m.gen.Store(gen)
		c.sendAssignment(m)
	}
	for _, ps := range starts {
		ps.gp.mu.Lock()
		if ps.gp.owner == ps.m {
			ps.gp.feed = c.newFeed(ps.gp, ps.m)
		}
		ps.gp.mu.Unlock()
	}
}

// confirmGives asks the Placement to confirm that this node still
// coordinates g, and rebalances g again once it did; mu held. A refusal
// leaves the partitions free: the node was deposed, and hands the group
// over (Evict), or the timer pass asks again.
func (c *Coordinator) confirmGives(g *group) {
	if g.confirming {
		return
	}
	g.confirming = true
	asked := g.freed
	go c.place.Confirm(g.name, func(err error) {
		go func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			g.confirming = false
			if c.groups[g.name] != g {
				return
			}
			if err != nil {
				c.log.Info("group coordination not confirmed; partitions stay free", "group", g.name, "err", err)
				g.retry = true
				return
			}
			g.confirmed = max(g.confirmed, asked)
			c.rebalance(g)
		}()
	})
}

// give makes m the owner of gp from generation gen and decides where its
// deliveries start; gp.mu held.
func (c *Coordinator) give(gp *gpart, m *Member, gen uint32, now int64) {
	gp.owner, gp.since, gp.feed = m, gen, nil
	if gp.g.set.mode == wire.AckMessage {
		if gp.acks == nil {
			gp.acks = ackstate.New(c.startOffset(gp))
		} else {
			gp.acks.Takeover(now)
		}
		m.unacked.Add(int64(gp.acks.Unacked()))
		gp.start = gp.acks.Next()
		return
	}
	gp.start = c.startOffset(gp)
}

// startOffset is where a new owner starts: the committed offset, else the
// group's start position, within what the log holds. An offline partition
// holds nothing to judge by, and its committed offset must survive until a
// restart brings it back, so it starts there. In a cluster, this node's
// replica of the partition (which the feed reads, leader or follower) may
// not have caught up with the committed offset yet: a follower catching
// up, or a node just restarted, which shows what its meta file says is
// committed until its leader tells it more. The owner starts at the
// committed offset all the same, and its feed waits there for the
// replica: started at the replica's end, it would be handed again what
// the group committed, and commit an offset below it.
func (c *Coordinator) startOffset(gp *gpart) int64 {
	if c.broker.OfflineReason(gp.p) != "" {
		return max(gp.committed, 0)
	}
	lo, hi := gp.p.Log.Bounds()
	off := gp.committed
	if off >= 0 && c.place != nil {
		return max(off, lo)
	}
	if off < 0 {
		var err error
		if off, err = c.broker.ResolveStart(gp.p, gp.g.set.start); err != nil {
			off = gp.g.set.start.Value // an offset out of range: clamped below
		}
	}
	return min(max(off, lo), hi)
}

func (c *Coordinator) startFeed(gp *gpart, m *Member) feed {
	if gp.g.set.mode == wire.AckMessage {
		f := newMsgFeed(c, gp, m)
		go f.run()
		return f
	}
	f := &offsetFeed{c: c, g: gp.g, p: gp.p, out: m.out, exited: make(chan struct{}), done: make(chan struct{})}
	f.start(gp.start)
	return f
}

// sendAssignment tells m its partitions; mu held.
func (c *Coordinator) sendAssignment(m *Member) {
	a := wire.Assignment{Group: wire.Unqualified(m.g.name), Generation: m.gen.Load()}
	for _, gp := range m.g.parts {
		gp.mu.Lock()
		if gp.owner == m {
			a.Partitions = append(a.Partitions, wire.PartitionOffset{Partition: gp.p.ID, Offset: gp.start})
		}
		gp.mu.Unlock()
	}
	m.assigned = true
	body := a.Append(nil)
	m.out.SendCopy(append(wire.AppendHeader(nil, wire.TypeAssignment, 0, 0, len(body)), body...))
	m.out.Kick()
}

// Heartbeat keeps m alive; a heartbeat of m's current generation also
// confirms that m is done with the partitions it was told to give up.
func (c *Coordinator) Heartbeat(m *Member, gen uint32) error {
	if m.gone.Load() {
		return errGoneMember(m)
	}
	m.seen.Store(c.now())
	if gen != m.gen.Load() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Check the generation again under the lock: a rebalance may have
	// revoked more from m (and moved its generation on) while this waited,
	// and this heartbeat does not confirm that.
	if m.revokeBy != 0 && !m.gone.Load() && gen == m.gen.Load() {
		c.finishRevokes(m)
	}
	return nil
}

// finishRevokes frees the partitions m was giving up; mu held.
func (c *Coordinator) finishRevokes(m *Member) {
	m.revokeBy = 0
	m.g.freed++
	for _, gp := range m.g.parts {
		gp.mu.Lock()
		if gp.revoking == m {
			gp.revoking = nil
		}
		gp.mu.Unlock()
	}
	c.rebalance(m.g)
}

func errGoneMember(m *Member) error {
	why := " (it left, its session timed out, or its topic was deleted)"
	if m.takenOver.Load() {
		why = ": a join from another connection took its id over"
	}
	return wire.Errorf(wire.CodeUnknownMember, "member "+strconv.Quote(m.id)+" is no longer in group "+m.g.name+
		why+"; join again with an empty member id")
}

// run expires members that stopped heartbeating and revocations that were
// never confirmed, and retries partitions whose old feed was still
// stopping.
func (c *Coordinator) run() {
	defer close(c.done)
	t := time.NewTicker(groupTick)
	defer t.Stop()
	nextPass := time.Now().Add(RetentionPass)
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		case <-c.poke:
		}
		c.Tick(c.now())
		if now := time.Now(); !now.Before(nextPass) {
			c.ExpireIdle(now)
			nextPass = now.Add(RetentionPass)
		}
	}
}

// ExpireIdle removes the groups that have had no member and no activity
// for the group retention as of now (wall clock, as the stored activity
// is). A group with members is active: its stored activity is refreshed
// once it is a quarter of the retention old, so that after a crash the
// group counts from about when it was last seen.
func (c *Coordinator) ExpireIdle(now time.Time) {
	keep := c.retention
	if keep <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, g := range c.groups {
		active, stored := c.store.ActiveAt(name)
		switch {
		case !stored:
		case len(g.members) > 0:
			if now.Sub(active) > keep/4 {
				c.store.Touch(name, now)
			}
		case now.Sub(active) >= keep && g.feedsStopped():
			c.expireGroup(g, now.Sub(active))
		}
	}
}

// expireGroup forgets an idle group and its offsets; mu held.
func (c *Coordinator) expireGroup(g *group, idle time.Duration) {
	delete(c.groups, g.name)
	c.store.Remove(g.name, nil)
	c.log.Info("consumer group removed: no members and no commits for the group retention", "group", g.name,
		"topic", g.topic.Name(), "idle", idle.Round(time.Second), "group_retention", c.retention)
	c.emitGroup(g, nil, 0, "retention", byBroker, nil)
}

// Idle reports whether group name exists with no member and no feed still
// winding down, so that a retention pass may remove it once its activity
// is old enough.
func (c *Coordinator) Idle(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	return g != nil && len(g.members) == 0 && g.feedsStopped()
}

// Store is the offsets store the coordinator was given.
func (c *Coordinator) Store() *offsets.Store { return c.store }

// feedsStopped reports whether no feed of g is still winding down, so
// nothing can move its offsets any more.
func (g *group) feedsStopped() bool {
	for _, gp := range g.parts {
		gp.mu.Lock()
		f := gp.feed
		gp.mu.Unlock()
		if f != nil && !f.stopped() {
			return false
		}
	}
	return true
}

// Tick is the timer pass at now (Config.Now's clock): it expires the
// members whose session timed out, frees the partitions whose revocation
// was not confirmed in time, and retries the partitions that waited for
// their previous feed to stop. The coordinator's timer goroutine runs it
// every 100 ms and whenever a feed stops; a driver of a Config.Driven
// coordinator calls it itself.
func (c *Coordinator) Tick(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.groups {
		for _, m := range g.due(now) {
			switch {
			case now-m.seen.Load() > int64(m.timeout):
				c.log.Info("group member timed out", "group", g.name, "member", m.id, "session_timeout", m.timeout)
				c.emitGroup(g, m, len(g.members)-1, "expire", byBroker, nil)
				c.removeMember(m)
			case m.revokeBy != 0 && now > m.revokeBy:
				c.log.Info("group member did not confirm a revocation in time", "group", g.name, "member", m.id)
				c.finishRevokes(m)
			}
		}
		if g.retry {
			c.rebalance(g)
		}
		if len(g.members) == 0 && !g.hasOffsets() {
			c.forgetIfDone(g)
		}
	}
}

// forgetIfDone forgets a group without members or offsets once its feeds
// have stopped; until then it is kept, so that a member joining meanwhile
// gets each partition only after its previous feed stopped, as in a group
// that is kept (the simulator found a new member fed alongside the feeds
// of the member that left). A stopping feed pokes the timer pass, which
// calls it again; mu held.
func (c *Coordinator) forgetIfDone(g *group) {
	if g.feedsStopped() {
		delete(c.groups, g.name)
	}
}

// due are the members of g whose session or revocation timed out by now,
// by id: each removal or freeing rebalances, and the assignor's answer
// depends on the one before, so they go in an order that does not depend
// on the map's; mu held.
func (g *group) due(now int64) []*Member {
	var due []*Member
	for _, m := range g.members {
		if now-m.seen.Load() > int64(m.timeout) || (m.revokeBy != 0 && now > m.revokeBy) {
			due = append(due, m)
		}
	}
	slices.SortFunc(due, func(a, b *Member) int { return strings.Compare(a.id, b.id) })
	return due
}

// feedStopped runs when a feed ends, so a partition waiting for it moves on.
func (c *Coordinator) feedStopped() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// owns checks that m may commit or ack gp in generation gen; gp.mu held.
func (gp *gpart) owns(m *Member, gen uint32) error {
	if gen > m.gen.Load() {
		return wire.Errorf(wire.CodeStaleGeneration, "generation "+strconv.FormatUint(uint64(gen), 10)+
			" was never assigned to member "+m.id)
	}
	if (gp.owner == m && gen >= gp.since) || (gp.revoking == m && gen >= gp.revokingSince) {
		return nil
	}
	return wire.Errorf(wire.CodeStaleGeneration, "member "+m.id+" does not own partition "+
		strconv.Itoa(int(gp.p.ID))+" of group "+gp.g.name+" in generation "+strconv.FormatUint(uint64(gen), 10))
}

// Commit records offsets of m's partitions; done runs once they are
// durable, or with why they were refused.
func (c *Coordinator) Commit(m *Member, req *wire.Commit, done func(error)) {
	if m.gone.Load() {
		done(errGoneMember(m))
		return
	}
	g := m.g
	if g.set.mode != wire.AckOffset {
		done(invalid("group " + g.name + " is in " + g.set.mode.String() + " ack mode; commits need offset mode"))
		return
	}
	m.seen.Store(c.now())
	for _, po := range req.Offsets {
		if po.Partition < 0 || int(po.Partition) >= len(g.parts) {
			done(wire.Errorf(wire.CodeUnknownPartition, "partition "+strconv.Itoa(int(po.Partition))+" of group "+g.name))
			return
		}
		gp := g.parts[po.Partition]
		_, end := gp.p.Log.Bounds()
		switch {
		case c.broker.OfflineReason(gp.p) != "":
			gp.mu.Lock()
			end = max(gp.committed, 0) // what its owner was assigned; it can have read nothing since
			gp.mu.Unlock()
		case c.place != nil:
			// This node's replica may not have caught up with where the
			// owner was started (startOffset).
			gp.mu.Lock()
			end = max(end, gp.start, gp.committed)
			gp.mu.Unlock()
		}
		if po.Offset < 0 || po.Offset > end {
			done(invalid("offset " + strconv.FormatInt(po.Offset, 10) + " of partition " +
				strconv.Itoa(int(po.Partition)) + " is past its end " + strconv.FormatInt(end, 10)))
			return
		}
	}
	// Ownership is checked, and the offsets stored, under the coordinator's
	// lock, and only while m is a member: a forced revocation cannot slip in
	// between, and a group rebuilt meanwhile (TopicReplaced) takes its state
	// from the store, and must not miss a commit stored after it looked,
	// which a member of the rebuilt group could then take back.
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.gone.Load() {
		done(errGoneMember(m))
		return
	}
	for _, po := range req.Offsets {
		gp := g.parts[po.Partition]
		gp.mu.Lock()
		err := gp.owns(m, req.Generation)
		gp.mu.Unlock()
		if err != nil {
			done(err)
			return
		}
	}
	for _, po := range req.Offsets {
		gp := g.parts[po.Partition]
		gp.mu.Lock()
		gp.committed = po.Offset
		gp.mu.Unlock()
	}
	c.store.Set(g.name, g.topic.Name(), req.Offsets, done)
}

// Ack marks messages of m's partition acked (message mode). An error is
// the answer to send; a successful ack has none.
func (c *Coordinator) Ack(m *Member, req *wire.Ack) error {
	gp, err := c.ownedMsgPartition(m, req.Partition, req.Generation)
	if err != nil {
		return err
	}
	a := gp.acks
	floor, n := a.Floor(), 0
	for _, r := range req.Ranges {
		if r.To > r.From {
			n += a.Ack(r.From, r.To)
		}
	}
	if n > 0 && gp.owner != nil {
		gp.owner.settle(int64(n), gp.g.set.maxUnacked)
	}
	moved := a.Floor() != floor
	if moved {
		gp.committed = a.Floor()
	}
	f, _ := gp.feed.(*msgFeed)
	gp.mu.Unlock()
	if moved {
		c.mu.Lock() // as in Commit
		if !m.gone.Load() {
			gp.mu.Lock()
			newFloor := a.Floor() // the latest: another ack may have moved it further meanwhile
			gp.mu.Unlock()
			c.store.Set(gp.g.name, gp.g.topic.Name(), []wire.PartitionOffset{{Partition: gp.p.ID, Offset: newFloor}}, nil)
		}
		c.mu.Unlock()
	}
	if f != nil && n > 0 {
		f.wakeUp()
	}
	return nil
}

// Nack asks for a message to be redelivered (message mode). An error is
// the answer to send; a successful nack has none.
func (c *Coordinator) Nack(m *Member, req *wire.Nack) error {
	gp, err := c.ownedMsgPartition(m, req.Partition, req.Generation)
	if err != nil {
		return err
	}
	gp.acks.Nack(req.Offset, int64(req.DelayMs)*int64(time.Millisecond), req.Reason, c.now(), gp.g.set.backoff)
	f, _ := gp.feed.(*msgFeed)
	gp.mu.Unlock()
	if f != nil {
		f.wakeUp()
	}
	return nil
}

func (c *Coordinator) msgPartition(m *Member, p int32) (*gpart, error) {
	if m.gone.Load() {
		return nil, errGoneMember(m)
	}
	g := m.g
	if g.set.mode != wire.AckMessage {
		return nil, invalid("group " + g.name + " is in " + g.set.mode.String() + " ack mode; acks need message mode")
	}
	if p < 0 || int(p) >= len(g.parts) {
		return nil, wire.Errorf(wire.CodeUnknownPartition, "partition "+strconv.Itoa(int(p))+" of group "+g.name)
	}
	m.seen.Store(c.now())
	return g.parts[p], nil
}

// ownedMsgPartition is msgPartition for a member that must own it in
// generation gen; it returns with the partition's lock held.
func (c *Coordinator) ownedMsgPartition(m *Member, p int32, gen uint32) (*gpart, error) {
	gp, err := c.msgPartition(m, p)
	if err != nil {
		return nil, err
	}
	gp.mu.Lock()
	if err := gp.owns(m, gen); err != nil {
		gp.mu.Unlock()
		return nil, err
	}
	return gp, nil
}

// List summarises every group, by name.
func (c *Coordinator) List() []wire.GroupSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]wire.GroupSummary, 0, len(c.groups))
	for _, g := range c.groups {
		out = append(out, wire.GroupSummary{Group: g.name, Topic: g.topic.Name(), Members: uint32(len(g.members))})
	}
	slices.SortFunc(out, func(a, b wire.GroupSummary) int {
		if a.Group < b.Group {
			return -1
		}
		if a.Group > b.Group {
			return 1
		}
		return 0
	})
	return out
}

// Lister is a Placement that can list the groups the other nodes
// coordinate (a cluster's).
type Lister interface {
	// ListOthers calls done, once, from any goroutine, with the groups
	// the other nodes it could reach coordinate. It is called without the
	// coordinator's locks, and done must not block.
	ListOthers(done func([]wire.GroupSummary))
}

// ListAll calls done with every group: this coordinator's, and in a
// cluster those of the other nodes it could reach (Lister). A group two
// nodes list (it is moving) is listed once, with the most members. done
// may run on any goroutine and must not block.
func (c *Coordinator) ListAll(done func([]wire.GroupSummary)) {
	local := c.List()
	l, ok := c.place.(Lister)
	if !ok {
		done(local)
		return
	}
	l.ListOthers(func(others []wire.GroupSummary) {
		byName := map[string]wire.GroupSummary{}
		for _, g := range append(local, others...) {
			if had, ok := byName[g.Group]; !ok || g.Members > had.Members {
				byName[g.Group] = g
			}
		}
		out := make([]wire.GroupSummary, 0, len(byName))
		for _, name := range slices.Sorted(maps.Keys(byName)) {
			out = append(out, byName[name])
		}
		done(out)
	})
}

// Describe reports a group's members, owners, committed offsets and lag.
// In a cluster the committed offsets are those the offsets partition
// holds (offsets.Store.Stored): a commit is in them once it is answered
// OK, never before, so that a reader is never shown offsets a crash
// could take back. A client's DescribeGroup is confirmed first
// (Confirm); Describe alone may be stale on a deposed coordinator.
func (c *Coordinator) Describe(name string) (wire.GroupInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	if g == nil {
		if err := c.coordinates(name); err != nil {
			return wire.GroupInfo{}, err
		}
		return wire.GroupInfo{}, wire.Errorf(wire.CodeUnknownGroup, "no group named "+strconv.Quote(name))
	}
	if c.place != nil {
		// A group of an offsets partition this node no longer
		// coordinates, not evicted yet (Evict follows the Placement).
		if err := c.coordinates(name); err != nil {
			return wire.GroupInfo{}, err
		}
	}
	var stored *offsets.Group
	if c.place != nil {
		if sg, ok := c.store.Stored(name); ok && sg.Topic == g.topic.Name() {
			stored = sg
		}
	}
	info := wire.GroupInfo{Group: g.name, Topic: g.topic.Name(), Generation: g.gen, Mode: g.set.mode}
	for id := range g.members {
		info.Members = append(info.Members, id)
	}
	slices.Sort(info.Members)
	for _, gp := range g.parts {
		_, end := gp.p.Log.Bounds()
		gp.mu.Lock()
		committed := gp.committed
		if c.place != nil {
			committed = -1
			if stored != nil {
				if off, ok := stored.Offsets[gp.p.ID]; ok {
					committed = off
				}
			}
		}
		pi := wire.GroupPartition{Partition: gp.p.ID, Committed: committed, End: end, Lag: -1}
		if gp.owner != nil {
			pi.Owner = gp.owner.id
		}
		if committed >= 0 {
			pi.Lag = max(0, end-committed)
		}
		if gp.acks != nil {
			pi.Pending = uint32(gp.acks.Unacked())
		}
		gp.mu.Unlock()
		info.Partitions = append(info.Partitions, pi)
	}
	return info, nil
}

// Reset moves the committed offsets of a group without members to st in
// every partition, on behalf of by; done runs once they are durable, or
// with why they were refused. It emits EventGroupChanged with the
// outcome, for a group that exists.
func (c *Coordinator) Reset(by Origin, name string, st wire.Start, done func(error)) {
	c.reset(by, name, nil, st, done)
}

// ResetPartitions is Reset of the listed partitions only, each to its own
// start; the others keep their committed offsets. A partition the topic
// does not have is UNKNOWN_PARTITION, one listed twice INVALID_ARGUMENT;
// either way nothing moves.
func (c *Coordinator) ResetPartitions(by Origin, name string, targets []wire.PartitionTarget, done func(error)) {
	c.reset(by, name, targets, wire.Start{}, done)
}

// reset moves the partitions of targets, or all of them to st when
// targets is empty.
func (c *Coordinator) reset(by Origin, name string, targets []wire.PartitionTarget, st wire.Start, done func(error)) {
	c.mu.Lock()
	g := c.groups[name]
	if g == nil {
		err := c.coordinates(name)
		c.mu.Unlock()
		if err == nil {
			err = wire.Errorf(wire.CodeUnknownGroup, "no group named "+strconv.Quote(name))
		}
		done(err)
		return
	}
	if c.broker.Observed() {
		inner := done
		done = func(err error) {
			c.emitGroup(g, nil, 0, "reset", by, err) // a reset needs a group without members
			inner(err)
		}
	}
	if n := len(g.members); n > 0 {
		c.mu.Unlock()
		done(wire.Errorf(wire.CodeGroupActive, "group "+name+" has "+strconv.Itoa(n)+
			" members; stop them before a reset"))
		return
	}
	starts, err := resetStarts(g, targets, st)
	if err != nil {
		c.mu.Unlock()
		done(err)
		return
	}
	offs := make([]wire.PartitionOffset, 0, len(starts))
	moved := make([]*gpart, 0, len(starts))
	for i, gp := range g.parts {
		if starts[i] == nil {
			continue
		}
		off, err := c.broker.ResolveStart(gp.p, *starts[i])
		if err != nil {
			c.mu.Unlock()
			done(err)
			return
		}
		offs = append(offs, wire.PartitionOffset{Partition: gp.p.ID, Offset: off})
		moved = append(moved, gp)
	}
	for i, gp := range moved {
		gp.mu.Lock()
		gp.committed, gp.acks = offs[i].Offset, nil
		gp.mu.Unlock()
	}
	// Under mu, so a retention pass cannot remove the group between the
	// two and leave its offsets stored for a group that is gone.
	c.store.Set(name, g.topic.Name(), offs, done)
	c.mu.Unlock()
}

// resetStarts is the start of each of g's partitions a reset moves, by
// index; nil for one that keeps its offset.
func resetStarts(g *group, targets []wire.PartitionTarget, st wire.Start) ([]*wire.Start, error) {
	starts := make([]*wire.Start, len(g.parts))
	if len(targets) == 0 {
		for i := range starts {
			starts[i] = &st
		}
		return starts, nil
	}
	for i := range targets {
		p := targets[i].Partition
		if p < 0 || int(p) >= len(g.parts) {
			return nil, wire.Errorf(wire.CodeUnknownPartition, "partition "+strconv.Itoa(int(p))+" of topic "+
				g.topic.Name()+" with "+strconv.Itoa(len(g.parts))+" partitions")
		}
		if starts[p] != nil {
			return nil, invalid("partition " + strconv.Itoa(int(p)) + " is listed twice")
		}
		starts[p] = &targets[i].Start
	}
	return starts, nil
}

// TopicRemoved forgets the groups of the deleted topic t; their members are
// told, and the connection of each is closed by its client.
func (c *Coordinator) TopicRemoved(t Topic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, g := range c.groups {
		if g.topic != t {
			continue
		}
		c.dropGroup(name, g, wire.Errorf(wire.CodeUnknownTopic, "topic "+t.Name()+" of group "+name+" was deleted"), "delete")
		c.store.Remove(name, nil)
	}
}

// TopicReplaced rebuilds the groups of t's topic over t, a new build of
// it whose partitions may be other objects (a cluster: a replica of one
// was added on this node, or moved away). Each such group starts again
// from its stored state, as after a handover: its members are sent
// NOT_LEADER with corr 0 and join again, their feeds reading the new
// partitions from the committed offsets (what was in flight comes again).
func (c *Coordinator) TopicReplaced(t Topic) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, g := range c.groups {
		if g.topic == t || g.topic.Name() != t.Name() {
			continue
		}
		why := wire.Errorf(wire.CodeNotLeader, "no leader: the partitions of group "+name+
			" changed on its coordinator; join again")
		c.dropGroup(name, g, why, "rebuilt")
		if sg, ok := c.store.Group(name); ok && sg.Topic == t.Name() {
			c.groups[name] = c.storedGroup(name, t, sg)
		}
	}
}

// dropGroup forgets group g: each member is sent why as an Error with
// corr 0 (on which a client closes the connection, and joins again where
// it may) and its membership ends, and every feed stops; mu held.
func (c *Coordinator) dropGroup(name string, g *group, why error, action string) {
	for _, m := range g.members {
		m.gone.Store(true)
		m.out.SendError(0, why)
		m.out.Kick()
	}
	for _, gp := range g.parts {
		gp.mu.Lock()
		if gp.feed != nil {
			gp.feed.stop()
		}
		gp.owner, gp.revoking = nil, nil
		gp.mu.Unlock()
	}
	delete(c.groups, name)
	c.emitGroup(g, nil, 0, action, byBroker, nil)
}

// Adopt takes in the groups this node has come to coordinate (a cluster:
// it leads their offsets partition now), with the state its replay of
// that partition found; the store keeps them, and those whose topic is
// open here become groups without members. The Placement must still
// refuse them while Adopt runs.
func (c *Coordinator) Adopt(stored map[string]*offsets.Group) {
	c.store.Put(stored)
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, sg := range stored {
		if c.groups[name] != nil {
			continue
		}
		if t := c.broker.Topic(sg.Topic); t != nil {
			c.groups[name] = c.storedGroup(name, t, sg)
		}
	}
}

// Evict hands over the groups match selects: another node coordinates
// them now (a cluster: this node no longer leads their offsets
// partition). Their members are sent the Placement's refusal as an
// Error with corr 0, on which a client closes the connection and joins
// again at the new coordinator, which starts from the offsets the
// replicated log holds; the store forgets the groups without writing. The
// Placement must refuse them before Evict is called.
func (c *Coordinator) Evict(match func(group string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, g := range c.groups {
		if !match(name) {
			continue
		}
		why := c.coordinates(name)
		if why == nil {
			why = wire.Errorf(wire.CodeNotLeader, "no leader: group "+name+" moved to another coordinator")
		}
		c.dropGroup(name, g, why, "moved")
	}
	c.store.Forget(match)
}

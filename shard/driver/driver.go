// Package driver runs a shard (package shard): it owns everything the
// shard's state machine does not do itself. A Driver holds the shard's
// inbox ring and run token, its goroutine (locked to an OS thread and
// pinned to a CPU when configured), its syncer (which writes and fsyncs
// disk logs on a goroutine of its own), its clock and timers (held acks,
// watched subscribers, retention), and it carries out each pass's Ready:
// encodes publish acks and errors into their connections' outboxes and
// gets every touched outbox written once.
//
// Whoever holds the run token (an atomic flag taken by compare-and-swap)
// runs passes: Tick, a Step per operation popped from the inbox, Ready,
// carry it out, Advance. The holder is not always the same goroutine. It
// is one of:
//
//   - the driver's own goroutine, woken by a kick channel or by its timer
//     (retention, held acks, watched outboxes);
//   - an event loop that pushed operations and runs the shard inline
//     (RunInline), which saves two thread hand-offs at low rates;
//   - the syncer, which writes and fsyncs disk logs without the token, and
//     then runs the shard inline to deliver and ack what became durable;
//   - a goroutine whose push found the inbox full, which runs a pass to
//     make room.
//
// So a pass may do network I/O: at the end of each pass every outbox the
// pass touched is flushed once, so each connection gets one coalesced
// write per pass however many batches were fanned out to it. An event
// loop holding the token writes its own connections' outboxes to their
// sockets at once; an event loop or the syncer holding it writes other
// connections directly when they allow it (outbox.DirectFlusher); every
// other outbox is kicked, to be written by its own event loop. The
// driver's goroutine never writes a socket. Memory logs are appended by
// the shard; disk logs only stage batches there, for the syncer to write
// (except at Stop, when the driver's goroutine writes and syncs what is
// left).
//
//	any goroutine ──ops──▶ [inbox ring] ──▶ token holder: shard.Step … Ready ──▶ Outboxes
//	Outboxes ──▶ written by the holder (its own loop's, or direct) or kicked to their event loop
package driver

import (
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/outbox"
	"github.com/ratatoskr-mq/ratatoskr/ring"
	"github.com/ratatoskr-mq/ratatoskr/shard"
	"github.com/ratatoskr-mq/ratatoskr/storage"
	"github.com/ratatoskr-mq/ratatoskr/wire"
)

// Config configures a driver and its shard. Zero fields take defaults.
type Config struct {
	// Shard configures the state machine.
	Shard shard.Config
	// InboxSize bounds the inbox ring. A full inbox makes event loops wait
	// (back-pressure to producers through TCP), it never grows.
	InboxSize int
	// PassSize caps the operations handled per pass before the touched
	// outboxes are flushed, bounding the latency a burst adds to a write.
	PassSize int
	// RetentionInterval is how often the driver applies the shard's
	// partitions' retention. Default 5s.
	RetentionInterval time.Duration
	// Pin, when set, binds the driver goroutine's OS thread (locked to it
	// for the purpose) to a CPU chosen by the shard's ID, and says which.
	// Refusal is logged and ignored.
	Pin    func(id int) (cpu int, err error)
	Logger *slog.Logger
}

func (c *Config) fill() {
	if c.InboxSize <= 0 {
		c.InboxSize = 8192
	}
	if c.PassSize <= 0 {
		c.PassSize = 256
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Driver runs one shard.
type Driver struct {
	cfg      Config
	s        *shard.Shard
	inbox    *ring.MPSC[shard.Op]
	token    atomic.Bool   // held by whoever runs the shard
	kick     chan struct{} // wakes the driver goroutine; capacity 1
	pushing  atomic.Int32  // pushes in progress, so Stop loses none
	stalled  atomic.Bool   // some ack is held for a subscriber's pressure: run on a timer
	watching atomic.Int64  // how often watched outboxes are checked, 0 when none (Ready.WatchEvery)
	stop     atomic.Bool   // Stop was called
	stopOnce sync.Once
	stopped  atomic.Bool // the goroutine has finished; pushes fail
	done     chan struct{}

	// Owned by the token holder.
	ops     []shard.Op
	owner   any  // the event loop running the shard inline, or nil
	inline  bool // an event loop or the syncer runs the shard, not the goroutine
	touched []*outbox.Outbox

	syncer *syncer
	// remote writes the logs kept on a server (storage.Remote) and runs
	// their retention: apart from the syncer, so that a server that stops
	// answering delays only its own partitions, never a disk log's fsync.
	remote *syncer

	busy    atomic.Int64 // nanoseconds spent in passes
	retains atomic.Uint64
}

// New returns a driver and its shard, not running yet; call Start.
func New(cfg Config) *Driver {
	cfg.fill()
	d := &Driver{cfg: cfg, inbox: ring.NewMPSC[shard.Op](cfg.InboxSize), kick: make(chan struct{}, 1),
		done: make(chan struct{}), ops: make([]shard.Op, cfg.PassSize)}
	d.s = shard.New(cfg.Shard, d)
	d.syncer = newSyncer(d)
	d.remote = newSyncer(d)
	return d
}

// Shard returns the driven shard.
func (d *Driver) Shard() *shard.Shard { return d.s }

// Start runs the driver's goroutine and its syncer.
func (d *Driver) Start() {
	go d.run()
	go d.syncer.run()
	go d.remote.run()
}

// Stop processes what is already queued, fails anything that races in, and
// waits for the driver goroutine to end. Later calls return at once.
func (d *Driver) Stop() {
	d.stopOnce.Do(func() {
		d.stop.Store(true)
		d.Wake()
		<-d.done
		close(d.syncer.stop)
		close(d.remote.stop)
		<-d.syncer.done
		<-d.remote.done
	})
}

// InboxLen reports how many operations are waiting, for metrics.
func (d *Driver) InboxLen() int { return d.inbox.Len() }

// InboxCap is the inbox ring's capacity, against which InboxLen is judged.
func (d *Driver) InboxCap() int { return d.cfg.InboxSize }

// BusyTime is how long the shard has spent running passes (on the driver's
// goroutine or inline on an event loop) since it started; its rate is the
// shard's busy ratio.
func (d *Driver) BusyTime() time.Duration { return time.Duration(d.busy.Load()) }

// RetentionPasses reports how many times the driver has applied its
// partitions' retention.
func (d *Driver) RetentionPasses() uint64 { return d.retains.Load() }

// Wake gets the driver goroutine to run what is queued.
func (d *Driver) Wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// RunInline runs one pass of the shard on the calling goroutine if no one
// else is running it; owner identifies the caller's event loop, so outboxes
// of connections on that loop are written at once instead of scheduled.
// Operations that arrive during the pass get up to inlineRetries more
// passes here; whatever is left then, the driver goroutine takes over.
func (d *Driver) RunInline(owner any) {
	for range inlineRetries + 1 {
		if !d.token.CompareAndSwap(false, true) {
			return // the holder will see our operations
		}
		d.owner, d.inline = owner, true
		d.runPass()
		d.owner, d.inline = nil, false
		d.token.Store(false)
		if d.inbox.Len() == 0 {
			break
		}
	}
	// As release, without the token: it is no longer ours.
	if d.inbox.Len() > 0 || d.stop.Load() || d.stalled.Load() {
		d.Wake()
	}
}

// inlineRetries is how many more passes an inline runner makes for work
// that arrived while it ran (typically a syncer's report racing with an
// event loop's publish) before it leaves the rest to the driver goroutine.
// Waking the goroutine costs a thread wake-up; when the shard is pinned to
// a CPU that the load tool keeps busy, that wake-up waited milliseconds,
// the p99 of durable 1→1 at 100k msg/s (1.5-2.4 ms unpinned, 9-14 ms
// pinned, before this).
const inlineRetries = 3

// release gives up the run token. An operation pushed while we held it was
// seen by the pass, or its pusher failed to take the token after we took
// it; it is then in the inbox now, and the goroutine is woken for it. The
// goroutine is also woken when acks are held, to time their release, and
// when Stop is waiting for it (its own wake-up may have found the token
// taken).
func (d *Driver) release(fromGoroutine bool) {
	d.token.Store(false)
	if d.inbox.Len() > 0 || d.stop.Load() || d.stalled.Load() && !fromGoroutine {
		d.Wake()
	}
}

var pinOnce sync.Once

func (d *Driver) run() {
	defer close(d.done)
	if d.cfg.Pin != nil {
		// Locked and never unlocked: the pinned thread ends with this
		// goroutine. Unlocked, it went back to the scheduler still bound
		// to one CPU, and whatever goroutine ran on it next was too (an
		// engine stopped and started in one process left such threads
		// behind, and a later test read one CPU as the process's mask).
		runtime.LockOSThread()
		if cpu, err := d.cfg.Pin(d.s.ID()); err != nil {
			pinOnce.Do(func() { d.cfg.Logger.Warn("shard CPU pinning refused; running unpinned", "err", err) })
		} else {
			d.cfg.Logger.Debug("shard pinned", "shard", d.s.ID(), "cpu", cpu)
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	nextRetain := time.Now().Add(d.cfg.RetentionInterval)
	for {
		wait := time.Until(nextRetain)
		switch {
		case d.stalled.Load():
			// Held acks: poll at the timer's resolution until they go.
			wait = min(wait, time.Millisecond)
		case d.watching.Load() > 0:
			wait = min(wait, time.Duration(d.watching.Load()))
		}
		timer.Reset(max(wait, 0))
		select {
		case <-d.kick:
		case <-timer.C:
		}
		if !d.token.CompareAndSwap(false, true) {
			continue // an inline runner holds it and wakes us if it leaves work
		}
		for d.runPass() > 0 {
		}
		if now := time.Now(); !now.Before(nextRetain) {
			d.retain(now)
			d.retains.Add(1)
			nextRetain = now.Add(d.cfg.RetentionInterval)
		}
		if d.stop.Load() {
			d.finish()
			return
		}
		d.release(true)
	}
}

// runPass runs one pass of up to PassSize operations and carries out its
// Ready. It returns how many operations it handled. The caller holds the
// token.
func (d *Driver) runPass() int {
	n := d.inbox.PopBatch(d.ops)
	now := outbox.Clock()
	if n == 0 && !d.s.Due(now) {
		return 0
	}
	d.s.Tick(now)
	for i := range d.ops[:n] {
		d.s.Step(&d.ops[i])
		d.ops[i] = shard.Op{}
	}
	d.carryOut(d.s.Ready())
	d.s.Advance()
	d.busy.Add(outbox.Clock() - now)
	return n
}

// carryOut does what a pass's Ready asks: sync requests go to the syncer,
// answers are encoded into their outboxes, writers are asked for fresh
// backlogs, and every touched outbox is flushed once. It publishes the
// timer the shard needs to its goroutine.
func (d *Driver) carryOut(rd *shard.Ready) {
	for _, r := range rd.Intervals {
		d.syncer.track(r.P, r.Every)
	}
	for _, r := range rd.Syncs {
		if _, ok := r.P.Log.(storage.Remote); ok {
			d.remote.request(r)
		} else {
			d.syncer.request(r)
		}
	}
	d.touched = append(d.touched, rd.Touched...)
	if len(rd.Answers) > 0 {
		d.answer(rd)
	}
	for _, out := range rd.Refresh {
		out.Refresh()
	}
	d.stalled.Store(rd.HeldForPressure)
	// An inline runner that starts the watch wakes the goroutine, which
	// may be asleep on a long timer.
	if w := int64(rd.WatchEvery); d.watching.Swap(w) == 0 && w > 0 && d.inline {
		d.Wake()
	}
	d.flushTouched()
}

// answer encodes the pass's publish acks and errors into their outboxes,
// takes each publish's bytes off its connection's inflight count, and
// reports each ack's latency.
func (d *Driver) answer(rd *shard.Ready) {
	id, obs := d.s.ID(), d.cfg.Shard.Observer
	var now int64
	if obs != nil {
		now = outbox.Clock()
	}
	for i := range rd.Answers {
		a := &rd.Answers[i]
		if f := a.Out.Inflight; f != nil {
			f.Done(int64(a.Bytes))
		}
		if a.Err != nil {
			a.Out.SendError(a.Corr, a.Err)
		} else {
			if obs != nil && a.Recv > 0 {
				obs.Acked(time.Duration(now - a.Recv))
			}
			var buf [wire.PublishAckSize]byte
			a.Out.SendCopy(wire.AppendPublishAck(buf[:0], a.Corr, a.Ack))
		}
		if a.Out.Mark(id, rd.Pass) {
			d.touched = append(d.touched, a.Out)
		}
	}
}

// finish ends the shard for Stop: new pushes fail from now on, pushes
// already past that check are waited for, and what they queued is failed,
// so no producer waits for an ack that never comes and no buffer leaks.
// Held acks are sent. The caller holds the token for good.
func (d *Driver) finish() {
	d.stopped.Store(true)
	for d.pushing.Load() > 0 {
		runtime.Gosched()
	}
	// What was queued before the stop is handled as usual; then every
	// staged batch is written and synced here, so that what can be acked
	// is, before the broker closes its connections.
	for d.runPass() > 0 {
	}
	d.s.Tick(outbox.Clock())
	for _, r := range d.s.Unwritten() {
		o := d.syncer.writeAndSync(r)
		d.s.Step(&o)
	}
	d.s.Shutdown()
	d.carryOut(d.s.Ready())
	d.s.Advance()
}

// retain applies each adopted partition's retention; the driver goroutine
// calls it on its retention tick, holding the token.
func (d *Driver) retain(now time.Time) {
	for _, p := range d.s.Adopted() {
		if p.Replica != nil {
			continue // its Raft group applies it (cluster.GroupConfig.Retention)
		}
		age, bytes := p.Retention()
		if age <= 0 && bytes <= 0 {
			continue
		}
		if _, ok := p.Log.(storage.Remote); ok {
			d.remote.retain(p, now, age, bytes) // it waits for the server
			continue
		}
		if n, err := p.Log.Retain(now, age, bytes); err != nil {
			d.cfg.Logger.Warn("retention", "topic", p.Topic, "partition", p.ID, "err", err)
		} else if n > 0 {
			d.cfg.Logger.Debug("retention removed segments", "topic", p.Topic, "partition", p.ID, "segments", n)
		}
	}
}

// Push enqueues an operation, stamped with the driver's clock. When the
// inbox is full the pusher helps drain it if it can take the run token,
// and otherwise yields, then sleeps: that wait is the back-pressure that
// slows an event loop, and through TCP its producers.
func (d *Driver) Push(o shard.Op) error {
	d.pushing.Add(1)
	defer d.pushing.Add(-1)
	if d.stopped.Load() {
		return shard.ErrStopped
	}
	o = o.Stamped(outbox.Clock())
	for spins := 0; !d.inbox.Push(o); spins++ {
		if d.stopped.Load() {
			return shard.ErrStopped
		}
		switch {
		case d.token.CompareAndSwap(false, true):
			d.runPass()
			d.release(false)
		case spins < 64:
			runtime.Gosched()
		default:
			time.Sleep(50 * time.Microsecond)
		}
	}
	return nil
}

// TryPush enqueues an operation unless the inbox is full. It serves
// operations that must never wait, such as the unsubscribes of a
// connection closing on a thread that may hold this shard's token.
func (d *Driver) TryPush(o shard.Op) bool {
	d.pushing.Add(1)
	defer d.pushing.Add(-1)
	if d.stopped.Load() || !d.inbox.Push(o) {
		return false
	}
	d.Wake()
	return true
}

// flushDirect asks out's connection to write it from this thread.
func flushDirect(out *outbox.Outbox) bool {
	f, ok := out.Flusher().(outbox.DirectFlusher)
	return ok && f.FlushDirect()
}

// flushTouched writes, or gets written, every outbox touched this pass:
// those on the inline runner's own event loop at once; the others, when an
// event loop or the syncer runs the shard inline, directly if their
// connection can take it now, and otherwise by scheduling a flush on their
// loop. The driver goroutine never writes a socket itself: it runs when
// the shard is busy, and a busy shard's writes belong on the network
// threads.
func (d *Driver) flushTouched() {
	for i, out := range d.touched {
		switch {
		case d.owner != nil && out.Flusher().Owner() == d.owner:
			out.Flusher().FlushNow()
		case d.inline && flushDirect(out):
		default:
			out.Kick()
		}
		d.touched[i] = nil
	}
	d.touched = d.touched[:0]
}

// ID returns the shard's index.
func (d *Driver) ID() int { return d.s.ID() }

// Stats reports the batches and messages the shard has appended.
func (d *Driver) Stats() (batches, messages uint64) { return d.s.Stats() }

// Detached reports how many live subscriptions the shard detached from
// stuck subscribers.
func (d *Driver) Detached() uint64 { return d.s.Detached() }

// Package shard owns partitions. A broker runs a fixed number of shards;
// each holds the mutable state of its partitions (next offsets, subscriber
// lists, held acks) and changes it only by handling operations (publish,
// subscribe, catch-up, unsubscribe, wait, delete, ...) from its inbox ring,
// in inbox order. Any goroutine may push into the inbox.
//
// Whoever holds the shard's run token (an atomic flag taken by
// compare-and-swap) drains the inbox and is the only one touching the
// partitions' state, which is why the publish path takes no locks. The
// holder is not always the same goroutine. It is one of:
//
//   - the shard's own goroutine, locked to its OS thread and pinned to a
//     CPU when configured, woken by a kick channel or by its timer
//     (retention, held acks, watched outboxes);
//   - an event loop that pushed operations and runs the shard inline
//     (RunInline), which saves two thread hand-offs at low rates;
//   - the shard's syncer, which writes and fsyncs disk logs on a goroutine
//     of its own, without the token, and then runs the shard inline to
//     deliver and ack what became durable;
//   - a goroutine whose push found the inbox full, which runs a pass to
//     make room.
//
// So a pass may do network I/O. The holder queues acks and deliveries into
// connection Outboxes and, at the end of each pass, flushes every outbox it
// touched once, so each connection gets one coalesced write per pass
// however many batches were fanned out to it. An event loop holding the
// token writes its own connections' outboxes to their sockets at once; an
// event loop or the syncer holding it writes other connections directly
// when they allow it (DirectFlusher); every other outbox is kicked, to be
// written by its own event loop. The shard goroutine never writes a
// socket. Memory logs are appended by the holder; disk logs only stage
// batches there, for the syncer to write (except at Stop, when the shard
// goroutine writes and syncs what is left).
//
//	any goroutine ──ops──▶ [inbox ring] ──▶ token holder ──frames──▶ Outboxes
//	Outboxes ──▶ written by the holder (its own loop's, or direct) or kicked to their event loop
package shard

import (
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ratatoskr-mq/ratatoskr/ring"
)

// ErrStopped is returned for operations sent to a shard that has stopped.
var ErrStopped = errors.New("shard: stopped")

// Config configures one shard. Zero fields take defaults.
type Config struct {
	ID     int // index among the broker's shards
	Shards int // how many shards the broker runs (sizes per-connection state)
	// InboxSize bounds the inbox ring. A full inbox makes event loops wait
	// (back-pressure to producers through TCP), it never grows.
	InboxSize int
	// PassSize caps the operations handled per pass before the touched
	// outboxes are flushed, bounding the latency a burst adds to a write.
	PassSize int
	// MaxAckDelay bounds how long a publish ack is held back while a
	// subscriber of its partition is under pressure (see flow.go).
	MaxAckDelay time.Duration
	// SlowConsumerTimeout disconnects a subscriber that stays under
	// pressure this long.
	SlowConsumerTimeout time.Duration
	// StuckAfter is how long a subscriber's network layer may hold a
	// backlog without taking any of it, as far as its writer saw, before
	// the subscriber counts as stuck and no longer holds acks (see
	// flow.go; the broker's --stuck-consumer-after). Default 1s.
	StuckAfter time.Duration
	// RetentionInterval is how often the shard applies its partitions'
	// retention. Default 5s.
	RetentionInterval time.Duration
	// Pin, when set, binds the shard goroutine's OS thread (locked to it
	// for the purpose) to a CPU chosen by the shard's ID, and says which:
	// the driver's business (engine), not the shard's. Refusal is logged
	// and ignored.
	Pin    func(id int) (cpu int, err error)
	Logger *slog.Logger
	// OnBatch, when set, is called on the shard's thread once per stored
	// publish batch, right after the batch became visible to readers and
	// subscribers: its partition, first offset, message count and size in
	// bytes. It runs on the hot path and must return at once; nil costs one
	// check per batch.
	OnBatch func(p *Partition, base int64, count int, bytes int)
	// Observer, if not nil, receives per-batch and per-fsync measurements
	// for the broker's histograms (see observe.go).
	Observer Observer

	watchEvery time.Duration // how often watched outboxes are checked (flow.go)
	stall      stall         // when a stalled subscriber is quiet, and stuck
}

func (c *Config) fill() {
	if c.Shards <= 0 {
		c.Shards = 1
	}
	if c.InboxSize <= 0 {
		c.InboxSize = 8192
	}
	if c.PassSize <= 0 {
		c.PassSize = 256
	}
	if c.MaxAckDelay <= 0 {
		c.MaxAckDelay = 250 * time.Millisecond
	}
	if c.SlowConsumerTimeout <= 0 {
		c.SlowConsumerTimeout = 5 * time.Second
	}
	if c.StuckAfter <= 0 {
		c.StuckAfter = time.Second
	}
	c.watchEvery = max(min(maxWatchEvery, c.StuckAfter/4), time.Millisecond)
	c.stall = stall{quiet: int64(min(quietTicks*c.watchEvery, c.StuckAfter)), stuck: int64(c.StuckAfter)}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Shard owns partitions and processes operations on them in inbox order.
//
// Whoever holds the shard's run token owns its state: the shard's own
// goroutine, or an event loop that runs the shard inline (RunInline) right
// after pushing operations into it. Running inline saves the two thread
// hand-offs of waking the shard goroutine and then the loop again, which at
// low rates is most of the broker's latency and CPU; the shard goroutine
// takes over when an inline runner leaves work behind (it runs one pass and
// returns to its own sockets) and for timers. Either way one thread at a
// time touches the partitions, so the publish path still takes no locks.
type Shard struct {
	cfg      Config
	inbox    *ring.MPSC[op]
	token    atomic.Bool   // held by whoever runs the shard
	kick     chan struct{} // wakes the shard goroutine; capacity 1
	pushing  atomic.Int32  // pushes in progress, so Stop loses none
	stalled  atomic.Bool   // some ack is held for a subscriber's pressure: run on a timer
	watching atomic.Bool   // some outbox is watched: run on a timer (flow.go)
	stop     atomic.Bool   // Stop was called
	stopOnce sync.Once
	stopped  atomic.Bool // the goroutine has finished; pushes fail
	done     chan struct{}

	// Owned by the token holder.
	ops            []op
	pass           uint64
	now            int64 // clock() at the start of the pass
	owner          any   // the event loop running the shard inline, or nil
	inline         bool  // an event loop or the syncer runs the shard, not its goroutine
	touched        []*Outbox
	held           []*Partition // partitions holding acks
	watch          []*Outbox    // subscribers behind or stuck (flow.go)
	watched        int64        // clock of the last check of watch
	stuckRefreshed int64        // clock when stuck watched outboxes were last asked for a report
	watchSlow      atomic.Bool  // every watched outbox is stuck: check them less often
	parts          []*Partition // adopted partitions, for retention

	syncer *syncer

	// Stats, readable from any goroutine.
	detached atomic.Uint64 // live subscriptions detached from stuck subscribers
	batches  atomic.Uint64
	messages atomic.Uint64
	busy     atomic.Int64 // nanoseconds spent in passes
	// heldChecks and retains count the looks at held acks and the
	// retention passes, off the publish path: tests wait on them ("it
	// ran, and did nothing") instead of sleeping.
	heldChecks atomic.Uint64
	retains    atomic.Uint64
}

// New returns a shard that is not running yet; call Start.
func New(cfg Config) *Shard {
	cfg.fill()
	s := &Shard{cfg: cfg, inbox: ring.NewMPSC[op](cfg.InboxSize), kick: make(chan struct{}, 1),
		done: make(chan struct{}), ops: make([]op, cfg.PassSize)}
	s.syncer = newSyncer(s)
	return s
}

// ID returns the shard's index.
func (s *Shard) ID() int { return s.cfg.ID }

// Start runs the shard's goroutine and its syncer.
func (s *Shard) Start() {
	go s.run()
	go s.syncer.run()
}

// Stop processes what is already queued, fails anything that races in, and
// waits for the shard goroutine to end. Later calls return at once.
func (s *Shard) Stop() {
	s.stopOnce.Do(func() {
		s.stop.Store(true)
		s.wake()
		<-s.done
		close(s.syncer.stop)
		<-s.syncer.done
	})
}

// InboxLen reports how many operations are waiting, for metrics.
func (s *Shard) InboxLen() int { return s.inbox.Len() }

// Detached reports how many live subscriptions the shard detached from
// stuck subscribers (see Outbox.deliver).
func (s *Shard) Detached() uint64 { return s.detached.Load() }

// Stats reports the batches and messages the shard has appended.
func (s *Shard) Stats() (batches, messages uint64) { return s.batches.Load(), s.messages.Load() }

// RetentionPasses reports how many times the shard has applied its
// partitions' retention.
func (s *Shard) RetentionPasses() uint64 { return s.retains.Load() }

func (s *Shard) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// RunInline runs one pass of the shard on the calling goroutine if no one
// else is running it; owner identifies the caller's event loop, so outboxes
// of connections on that loop are written at once instead of scheduled.
// Operations that arrive during the pass get up to inlineRetries more
// passes here; whatever is left then, the shard goroutine takes over.
func (s *Shard) RunInline(owner any) {
	for range inlineRetries + 1 {
		if !s.token.CompareAndSwap(false, true) {
			return // the holder will see our operations
		}
		s.owner, s.inline = owner, true
		s.runPass()
		s.owner, s.inline = nil, false
		s.token.Store(false)
		if s.inbox.Len() == 0 {
			break
		}
	}
	// As release, without the token: it is no longer ours.
	if s.inbox.Len() > 0 || s.stop.Load() || s.stalled.Load() {
		s.wake()
	}
}

// inlineRetries is how many more passes an inline runner makes for work
// that arrived while it ran (typically a syncer's report racing with an
// event loop's publish) before it leaves the rest to the shard goroutine.
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
func (s *Shard) release(fromGoroutine bool) {
	s.token.Store(false)
	if s.inbox.Len() > 0 || s.stop.Load() || s.stalled.Load() && !fromGoroutine {
		s.wake()
	}
}

// Wake gets the shard goroutine to run what is queued. Callers that pushed
// operations and will not run the shard inline call it.
func (s *Shard) Wake() { s.wake() }

var pinOnce sync.Once

func (s *Shard) run() {
	defer close(s.done)
	if s.cfg.Pin != nil {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if cpu, err := s.cfg.Pin(s.cfg.ID); err != nil {
			pinOnce.Do(func() { s.cfg.Logger.Warn("shard CPU pinning refused; running unpinned", "err", err) })
		} else {
			s.cfg.Logger.Debug("shard pinned", "shard", s.cfg.ID, "cpu", cpu)
		}
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	nextRetain := time.Now().Add(s.cfg.RetentionInterval)
	for {
		wait := time.Until(nextRetain)
		switch {
		case s.stalled.Load():
			// Held acks: poll at the timer's resolution until they go.
			wait = min(wait, time.Millisecond)
		case s.watching.Load():
			wait = min(wait, s.watchInterval())
		}
		timer.Reset(max(wait, 0))
		select {
		case <-s.kick:
		case <-timer.C:
		}
		if !s.token.CompareAndSwap(false, true) {
			continue // an inline runner holds it and wakes us if it leaves work
		}
		for s.runPass() > 0 {
		}
		if now := time.Now(); !now.Before(nextRetain) {
			s.retain(now)
			s.retains.Add(1)
			nextRetain = now.Add(s.cfg.RetentionInterval)
		}
		if s.stop.Load() {
			s.finish()
			return
		}
		s.release(true)
	}
}

// runPass handles up to PassSize operations, releases held acks that are
// due, and flushes every outbox it touched. It returns how many operations
// it handled. The caller holds the token.
func (s *Shard) runPass() int {
	n := s.inbox.PopBatch(s.ops)
	if n == 0 && len(s.held) == 0 && !s.watchDue(clock()) {
		return 0
	}
	s.pass++
	s.now = clock()
	for i := range s.ops[:n] {
		s.handle(&s.ops[i])
		s.ops[i] = op{}
	}
	if len(s.held) > 0 {
		s.releaseHeld()
	}
	if s.watchDue(s.now) {
		s.checkWatched()
	}
	s.stalled.Store(s.heldForPressure())
	s.noteWatching()
	s.flushTouched()
	s.busy.Add(clock() - s.now)
	return n
}

// finish ends the shard for Stop: new pushes fail from now on, pushes
// already past that check are waited for, and what they queued is failed,
// so no producer waits for an ack that never comes and no buffer leaks.
// Held acks are sent. The caller holds the token for good.
func (s *Shard) finish() {
	s.stopped.Store(true)
	for s.pushing.Load() > 0 {
		runtime.Gosched()
	}
	// What was queued before the stop is handled as usual; then every
	// staged batch is written and synced here, so that what can be acked
	// is, before the broker closes its connections.
	for s.runPass() > 0 {
	}
	s.pass++
	for _, p := range slices.Clone(s.held) {
		// A read-only partition's staged batches were answered as never
		// stored; writing them now would make that untrue.
		if !p.deleted && p.failed == nil {
			o := s.syncer.writeAndSync(p, p.sync.Mode == SyncAlways)
			s.synced(p, o.n, o.n2, o.err, o.err2)
		}
	}
	if len(s.held) > 0 {
		s.releaseHeld()
	}
	for _, p := range s.held {
		s.releaseAll(p)
	}
	s.held = nil
	s.flushTouched()
}

// push enqueues an operation. When the inbox is full the pusher helps
// drain it if it can take the run token, and otherwise yields, then
// sleeps: that wait is the back-pressure that slows an event loop, and
// through TCP its producers.
func (s *Shard) push(o op) error {
	s.pushing.Add(1)
	defer s.pushing.Add(-1)
	if s.stopped.Load() {
		return ErrStopped
	}
	for spins := 0; !s.inbox.Push(o); spins++ {
		if s.stopped.Load() {
			return ErrStopped
		}
		switch {
		case s.token.CompareAndSwap(false, true):
			s.runPass()
			s.release(false)
		case spins < 64:
			runtime.Gosched()
		default:
			time.Sleep(50 * time.Microsecond)
		}
	}
	return nil
}

// tryPush enqueues an operation unless the inbox is full. It serves
// operations that must never wait, such as the unsubscribes of a
// connection closing on a thread that may hold this shard's token.
func (s *Shard) tryPush(o op) bool {
	s.pushing.Add(1)
	defer s.pushing.Add(-1)
	if s.stopped.Load() || !s.inbox.Push(o) {
		return false
	}
	s.wake()
	return true
}

// flushDirect asks out's connection to write it from this thread.
func (s *Shard) flushDirect(out *Outbox) bool {
	d, ok := out.flusher.(DirectFlusher)
	return ok && d.FlushDirect()
}

// touch records that out needs a flush at the end of this pass.
func (s *Shard) touch(out *Outbox) {
	if out.passMark[s.cfg.ID] != s.pass {
		out.passMark[s.cfg.ID] = s.pass
		s.touched = append(s.touched, out)
	}
}

// flushTouched writes, or gets written, every outbox touched this pass:
// those on the inline runner's own event loop at once; the others, when an
// event loop or the syncer runs the shard inline, directly if their
// connection can take it now, and otherwise by scheduling a flush on their
// loop. The shard goroutine never
// writes a socket itself: it runs when the shard is busy, and a busy shard's
// writes belong on the network threads.
func (s *Shard) flushTouched() {
	for i, out := range s.touched {
		switch {
		case s.owner != nil && out.flusher.Owner() == s.owner:
			out.flusher.FlushNow()
		case s.inline && s.flushDirect(out):
		default:
			out.Kick()
		}
		s.touched[i] = nil
	}
	s.touched = s.touched[:0]
}
